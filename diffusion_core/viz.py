"""Figures for the book: image grids, schedule plots, the t-scrubber and diagrams.

Images arrive as the library stores them, (N, C, H, W) in [-1, 1], as numpy
arrays or torch tensors. Everything here is display only: values outside
[-1, 1] (noisy x_t) are clipped, never rescaled per image, so that two
pictures of different noise levels stay comparable.

The scrubber is built from ipywidgets whose links run in the browser
(`widgets.jslink`), so it works live in Jupyter and in the static HTML book,
where no kernel is running.
"""

from __future__ import annotations

import io
import itertools
import math
from collections.abc import Mapping, Sequence
from pathlib import Path

import ipywidgets as widgets
import matplotlib.image
import matplotlib.pyplot as plt
import numpy as np
import torch
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.patches import Circle, FancyArrowPatch, Rectangle

from .distributions import mixture_cdf, mixture_moments, point_mass_marginal, point_mass_reverse
from .models.unet import UNetConfig
from .schedules import Schedule, respace


def _to_numpy(x, name: str) -> np.ndarray:
    """A float64 numpy copy of an array or tensor (on any device)."""
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().double().numpy()
    try:
        return np.asarray(x, dtype=np.float64)
    except (TypeError, ValueError) as err:
        raise TypeError(f"{name} must be a numpy array or torch tensor, got {type(x)}") from err


def _check_positive_int(value, name: str) -> None:
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")


def image_grid(x, nrow: int = 8, padding: int = 2, pad_value: float = 1.0) -> np.ndarray:
    """Tile a batch of images into one picture.

    x: (N, C, H, W) with C in {1, 3}, values in [-1, 1] (clipped outside).
    nrow: images per row, as in torchvision's make_grid.
    Returns (H', W', C) float32 in [0, 1] with `padding` pixels of `pad_value`
    between and around the images; image i sits in row i // nrow, column i % nrow.
    """
    x = _to_numpy(x, "x")
    if x.ndim != 4 or x.shape[1] not in (1, 3) or x.shape[0] == 0:
        raise ValueError(f"x must have shape (N, C, H, W) with N >= 1 and C in {{1, 3}}, "
                         f"got {tuple(x.shape)}")
    _check_positive_int(nrow, "nrow")
    if isinstance(padding, bool) or not isinstance(padding, int | np.integer) or padding < 0:
        raise ValueError(f"padding must be a non-negative integer, got {padding!r}")
    if not 0.0 <= pad_value <= 1.0:
        raise ValueError(f"pad_value must be in [0, 1], got {pad_value}")

    n, c, h, w = x.shape
    cols = min(nrow, n)
    rows = math.ceil(n / nrow)
    images = (np.clip(x, -1.0, 1.0) + 1.0) / 2.0  # (N, C, H, W) in [0, 1]
    images = images.transpose(0, 2, 3, 1)  # (N, H, W, C)

    grid = np.full((rows * (h + padding) + padding, cols * (w + padding) + padding, c),
                   pad_value, dtype=np.float32)
    for i, image in enumerate(images):
        top = padding + (i // nrow) * (h + padding)
        left = padding + (i % nrow) * (w + padding)
        grid[top:top + h, left:left + w] = image
    return grid


def _imshow_unit(ax: Axes, image: np.ndarray) -> None:
    """Show an (H, W, C) image in [0, 1]: grey when C == 1, colour when C == 3."""
    if image.shape[-1] == 1:
        ax.imshow(image[..., 0], cmap="gray", vmin=0.0, vmax=1.0, interpolation="nearest")
    else:
        ax.imshow(image, interpolation="nearest")
    ax.set_axis_off()


def show_images(x, nrow: int = 8, title: str | None = None, ax: Axes | None = None) -> Axes:
    """Draw a batch x: (N, C, H, W) in [-1, 1] as a grid on `ax` (a new figure if None)."""
    grid = image_grid(x, nrow)
    if ax is None:
        rows, cols = grid.shape[:2]
        scale = 6.0 / max(rows, cols)  # the longer side of the figure is 6 inches
        _, ax = plt.subplots(figsize=(max(cols * scale, 1.5), max(rows * scale, 1.5)))
    _imshow_unit(ax, grid)
    if title is not None:
        ax.set_title(title)
    return ax


def save_grid_png(x, path: str | Path, nrow: int = 8) -> Path:
    """Write x: (N, C, H, W) in [-1, 1] as one PNG grid, one pixel per pixel."""
    grid = image_grid(x, nrow)
    if grid.shape[-1] == 1:
        grid = np.repeat(grid, 3, axis=-1)  # grey as RGB: exact levels, no colormap lookup
    path = Path(path)
    matplotlib.image.imsave(path, grid, format="png")
    return path


def frames_to_png(images: Sequence, titles: Sequence[str] | None = None, size_px: int = 160,
                  dpi: int = 80, vmin: float = -1.0, vmax: float = 1.0) -> list[bytes]:
    """Render each image as a small square PNG of size_px x size_px pixels.

    images: a list of (C, H, W) with C in {1, 3}, or (H, W), arrays or tensors.
    titles: one caption per image (e.g. "t = 250"), or None.
    vmin, vmax: one fixed display range for every frame, so the growing noise
    of x_t is visible rather than normalised away; values outside are clipped.
    """
    if len(images) == 0:
        raise ValueError("images must hold at least one image, got an empty list")
    if titles is not None and len(titles) != len(images):
        raise ValueError(f"titles must have one entry per image: got {len(titles)} titles "
                         f"for {len(images)} images")
    _check_positive_int(size_px, "size_px")
    _check_positive_int(dpi, "dpi")
    if not vmin < vmax:
        raise ValueError(f"vmin must be smaller than vmax, got vmin={vmin}, vmax={vmax}")

    title_px = 16 if titles is not None else 0
    frames = []
    for i, image in enumerate(images):
        image = _to_numpy(image, f"images[{i}]")
        if image.ndim == 3 and image.shape[0] in (1, 3):
            image = image.transpose(1, 2, 0)  # (C, H, W) -> (H, W, C)
        elif image.ndim != 2:
            raise ValueError(f"images[{i}] must have shape (C, H, W) with C in {{1, 3}} or "
                             f"(H, W), got {tuple(image.shape)}")
        unit = (np.clip(image, vmin, vmax) - vmin) / (vmax - vmin)  # [vmin, vmax] -> [0, 1]
        if unit.ndim == 2:
            unit = unit[..., None]  # (H, W, 1)

        # A bare Figure (no pyplot): nothing is left open in the notebook.
        fig = Figure(figsize=(size_px / dpi, size_px / dpi), dpi=dpi)
        FigureCanvasAgg(fig)
        ax = fig.add_axes((0.0, 0.0, 1.0, 1.0 - title_px / size_px))
        _imshow_unit(ax, unit)
        if titles is not None:
            fig.suptitle(titles[i], y=1.0, va="top", fontsize=9)
        buffer = io.BytesIO()
        fig.savefig(buffer, format="png", dpi=dpi)
        frames.append(buffer.getvalue())
    return frames


def rows_to_png(rows: Sequence, labels: Sequence[str], title: str | None = None,
                cell_px: int = 84, dpi: int = 80) -> bytes:
    """One scrubber frame: labelled rows of images at `cell_px` pixels per image.

    rows: R batches (N, C, H, W) in [-1, 1] (clipped), the same N in each; labels: one
    caption per row, written to its left (e.g. "x_t", "x̂_0"). Returns PNG bytes.
    """
    if len(rows) == 0 or len(labels) != len(rows):
        raise ValueError(f"rows and labels must be non-empty and of equal length, got "
                         f"{len(rows)} rows and {len(labels)} labels")
    _check_positive_int(cell_px, "cell_px")
    grids = [image_grid(row, nrow=len(row), padding=1) for row in rows]  # (h, w, C) each
    if len({g.shape for g in grids}) != 1:
        raise ValueError(f"every row must hold the same number of images of one shape, got "
                         f"grids of shapes {[g.shape for g in grids]}")
    n = len(rows[0])
    label_px, title_px = 56, 20 if title else 0
    width, height = label_px + n * cell_px, title_px + len(rows) * cell_px
    fig = Figure(figsize=(width / dpi, height / dpi), dpi=dpi)
    FigureCanvasAgg(fig)
    for r, (grid, label) in enumerate(zip(grids, labels, strict=True)):
        bottom = (len(rows) - 1 - r) * cell_px / height
        ax = fig.add_axes((label_px / width, bottom, n * cell_px / width, cell_px / height))
        _imshow_unit(ax, grid)
        fig.text(label_px / 2 / width, bottom + cell_px / 2 / height, label, ha="center",
                 va="center", fontsize=12)
    if title:
        fig.suptitle(title, y=1.0, va="top", fontsize=11)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi)
    return buffer.getvalue()


def scrubber(frames_png: Sequence[bytes], values: Sequence[int], description: str = r"\(t\)",
             interval_ms: int = 200) -> widgets.VBox:
    """A Play button and a slider over `values` that flip through `frames_png`.

    frames_png: one PNG per frame (see frames_to_png); values: the t of each
    frame, shown as the slider's readout. The Play button, the slider's index
    and the Stack of images are tied with widgets.jslink, which runs in the
    browser: the scrubber keeps working in the static book, without a kernel.
    Write the description as MathJax inline math, \\(t\\), not $t$.
    """
    if len(frames_png) == 0:
        raise ValueError("frames_png must hold at least one PNG, got an empty list")
    if not all(isinstance(f, bytes) for f in frames_png):
        raise TypeError("frames_png must be a list of PNG bytes (see frames_to_png)")
    if len(values) != len(frames_png):
        raise ValueError(f"values must have one entry per frame: got {len(values)} values "
                         f"for {len(frames_png)} frames")
    if not all(isinstance(v, int | np.integer) and not isinstance(v, bool) for v in values):
        raise TypeError(f"values must be integers (the t of each frame), got {list(values)}")
    if len(set(values)) != len(values):
        raise ValueError(f"values must be distinct, got {list(values)}")
    _check_positive_int(interval_ms, "interval_ms")

    last = len(frames_png) - 1
    images = [widgets.Image(value=png, format="png") for png in frames_png]
    stack = widgets.Stack(images, selected_index=0)
    # The readout shows t itself; the links move the frame index.
    slider = widgets.SelectionSlider(options=[(str(int(v)), int(v)) for v in values],
                                     index=0, description=description)
    play = widgets.Play(value=0, min=0, max=last, step=1, interval=interval_ms)
    widgets.jslink((play, "value"), (slider, "index"))
    widgets.jslink((slider, "index"), (stack, "selected_index"))
    return widgets.VBox([widgets.HBox([play, slider]), stack])


def plot_schedule(schedules: Mapping[str, object], ax: Axes | None = None,
                  ylabel: str | None = None, log: bool = False) -> Axes:
    """Plot named 1-D tables over t, e.g. {"alphas_cumprod": ..., "betas": ...}."""
    if len(schedules) == 0:
        raise ValueError("schedules must name at least one array")
    if ax is None:
        _, ax = plt.subplots(figsize=(5, 3))
    for name, values in schedules.items():
        values = _to_numpy(values, f"schedules[{name!r}]")
        if values.ndim != 1:
            raise ValueError(f"schedules[{name!r}] must be 1-D (one value per t), "
                             f"got shape {tuple(values.shape)}")
        ax.plot(np.arange(len(values)), values, label=name)
    ax.set_xlabel("t")
    if ylabel is not None:
        ax.set_ylabel(ylabel)
    if log:
        ax.set_yscale("log")
    ax.legend()
    return ax


def plot_sampler_sweep(rows: Sequence[Mapping], real: Mapping, panels: Mapping[str, str],
                       axes: Sequence[Axes] | None = None, real_label: str = "real digits"
                       ) -> Sequence[Axes]:
    """Sample quality against the number of sampling steps, one panel per yardstick.

    rows: one mapping per run, with "sampler" (e.g. "ancestral", "strided", "DDIM"), "steps"
        and a number for every key of `panels` (and optionally "<key>_se", its standard
        error, drawn as an error bar); each sampler is drawn as a curve over its step counts,
        except "ancestral" (all T steps), drawn as stars. real: the same numbers for real data (a dashed line, with
        a grey band of ±1 SE when "<key>_se" is given). panels: yardstick key -> panel
        title, e.g. {"frechet": "Fréchet distance"}.
    """
    if len(panels) == 0:
        raise ValueError("panels must name at least one yardstick")
    if axes is None:
        _, axes = plt.subplots(1, len(panels), figsize=(4 * len(panels), 3))
        axes = np.atleast_1d(axes)
    if len(axes) != len(panels):
        raise ValueError(f"axes must hold one Axes per panel ({len(panels)}), got {len(axes)}")
    for ax, (key, title) in zip(axes, panels.items(), strict=True):
        curves = dict.fromkeys(r["sampler"] for r in rows if r["sampler"] != "ancestral")
        for name, marker in zip(curves, itertools.cycle(("o-", "s-", "^-", "v-", "D-")), strict=False):
            runs = sorted((r["steps"], r[key], r.get(f"{key}_se")) for r in rows if r["sampler"] == name)
            if runs:
                steps, values, errors = zip(*runs, strict=True)
                (line,) = ax.plot(steps, values, marker, ms=4, label=name)
                if None not in errors:
                    ax.errorbar(steps, values, yerr=errors, fmt="none", ecolor=line.get_color(), capsize=2)
        for r in rows:
            if r["sampler"] == "ancestral":
                ax.plot([r["steps"]], [r[key]], "k*", ms=10, label=f"ancestral, {r['steps']}")
        ax.set_xscale("log")
        ax.axhline(real[key], color="0.5", ls="--", label=real_label)
        if f"{key}_se" in real:
            ax.axhspan(real[key] - real[f"{key}_se"], real[key] + real[f"{key}_se"], color="0.5", alpha=0.2)
        ax.set_xlabel("number of sampling steps")
        ax.set_title(title, fontsize=9)
    axes[0].legend(fontsize=7)
    return axes


def scatter_png(points, title: str, density=None, size_px: int = 160, dpi: int = 80,
                lim: float = 2.5) -> bytes:
    """A small scatter plot of 2-D points as PNG bytes of size_px x size_px: a scrubber frame.

    points: (N, 2), drawn in the square [-lim, lim]^2, the same view for every frame.
    density: optionally (G, G) values of a density on the regular G x G grid over that square
    (row j is y_j, column i is x_i, as `torch.meshgrid(grid, grid, indexing="xy")` lays them
    out), drawn as grey contours under the points.
    """
    points = _to_numpy(points, "points")
    if points.ndim != 2 or points.shape[1] != 2:
        raise ValueError(f"points must have shape (N, 2), got {tuple(points.shape)}")
    if not (isinstance(lim, int | float) and math.isfinite(lim) and lim > 0):
        raise ValueError(f"lim must be a positive number (the half-width of the view), got {lim!r}")
    if density is not None:
        density = _to_numpy(density, "density")
        if density.ndim != 2 or density.shape[0] != density.shape[1] or density.shape[0] < 2:
            raise ValueError(f"density must have shape (G, G) with G >= 2 (values on a G x G "
                             f"grid over [-lim, lim]^2), got {tuple(density.shape)}")
    _check_positive_int(size_px, "size_px")
    _check_positive_int(dpi, "dpi")

    fig = Figure(figsize=(size_px / dpi, size_px / dpi), dpi=dpi)
    FigureCanvasAgg(fig)  # a bare Figure, so no pyplot window is left open
    ax = fig.add_axes((0.02, 0.02, 0.96, 0.84))
    if density is not None:
        grid = np.linspace(-lim, lim, density.shape[0])
        ax.contour(grid, grid, density, levels=6, colors="0.6", linewidths=0.5)
    # a little more transparent over a density, so that its contours show through
    ax.scatter(points[:, 0], points[:, 1], s=0.3, alpha=0.5 if density is None else 0.4,
               color="C0")
    ax.set_xlim(-lim, lim)
    ax.set_ylim(-lim, lim)
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_title(title, fontsize=9)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi)
    return buffer.getvalue()


# -----------------------------------------------------------------------------
# Diagrams, drawn from the objects they describe

_FORWARD, _REVERSE, _POSTERIOR = "C0", "C1", "C3"


def _chain_thumbnails(images, count: int, num_steps_shown: int) -> list[np.ndarray]:
    """images -> `count` arrays (H, W) or (H, W, 3) in [0, 1], from [-1, 1] (clipped)."""
    if isinstance(images, str | bytes) or not hasattr(images, "__len__"):
        raise TypeError(f"images must be a sequence of images, got {type(images).__name__}")
    if len(images) != count:
        raise ValueError(f"images must hold one image per node ({count} with "
                         f"num_steps_shown={num_steps_shown}), got {len(images)}")
    thumbs = []
    for i, image in enumerate(images):
        image = _to_numpy(image, f"images[{i}]")
        if image.ndim == 3 and image.shape[0] in (1, 3):
            image = image.transpose(1, 2, 0)  # (C, H, W) -> (H, W, C)
            image = image[..., 0] if image.shape[-1] == 1 else image
        elif image.ndim != 2:
            raise ValueError(f"images[{i}] must have shape (C, H, W) with C in {{1, 3}} or "
                             f"(H, W), got {tuple(image.shape)}")
        thumbs.append((np.clip(image, -1.0, 1.0) + 1.0) / 2.0)
    return thumbs


def draw_chain(num_steps_shown: int = 2, images: Sequence | None = None,
               ax: Axes | None = None) -> Axes:
    """The two Markov chains of DDPM, from data x_0 (left) to noise x_T (right).

    Nodes x_0, ..., x_{n-1}, ..., x_{t-1}, x_t, ..., x_T with n = num_steps_shown (1 to 4).
    Above them the forward steps q(x_t | x_{t-1}), below them the reverse steps
    p_θ(x_{t-1} | x_t), and, dashed, the posterior q(x_{t-1} | x_t, x_0): the reverse step
    made tractable by knowing x_0, which each p_θ step is trained to match.
    images: optionally one image per node (num_steps_shown + 3 of them), each (C, H, W) with
    C in {1, 3} or (H, W), values in [-1, 1] (clipped), drawn as a thumbnail above its node.
    """
    _check_positive_int(num_steps_shown, "num_steps_shown")
    if num_steps_shown > 4:
        raise ValueError(f"num_steps_shown must be in 1..4 (the nodes x_0 .. x_n-1 before the "
                         f"first ellipsis), got {num_steps_shown}")
    labels = [f"x_{i}" for i in range(num_steps_shown)] + [None, "x_{t-1}", "x_t", None, "x_T"]
    nodes = [k for k, label in enumerate(labels) if label is not None]
    thumbs = None if images is None else _chain_thumbnails(images, len(nodes), num_steps_shown)

    # Unit gaps between slots, a wider one for the step x_{t-1} -> x_t that carries the labels.
    step = labels.index("x_{t-1}")
    gap = 2.3
    xs = np.cumsum([0.0] + [gap if k == step else 1.0 for k in range(len(labels) - 1)])
    radius, size = 0.28, 0.85  # node radius, thumbnail side
    top = 0.85 + size if thumbs is not None else 0.75
    bottom = -1.45
    width = xs[-1] + 1.2
    if ax is None:
        _, ax = plt.subplots(figsize=(8, min(3.5, 8 * (top - bottom) / width + 0.1)))

    circles = []
    for x, label in zip(xs, labels, strict=True):
        if label is None:  # an ellipsis: an invisible circle that the arrows stop at
            circle = Circle((x, 0), radius * 0.7, fill=False, edgecolor="none")
            ax.text(x, 0, r"$\cdots$", ha="center", va="center", fontsize=12)
        else:
            circle = Circle((x, 0), radius, facecolor="white", edgecolor="0.25", lw=1.2)
            ax.text(x, 0, f"${label}$", ha="center", va="center", fontsize=11, zorder=3)
        ax.add_patch(circle)
        circles.append(circle)

    def arrow(a: Circle, b: Circle, colour: str, connection: str, **style) -> None:
        ax.add_patch(FancyArrowPatch(a.center, b.center, patchA=a, patchB=b, color=colour,
                                     connectionstyle=connection, arrowstyle="-|>",
                                     mutation_scale=11, lw=1.2, **style))

    for k, (a, b) in enumerate(zip(circles[:-1], circles[1:], strict=True)):
        rad = -0.35 if k == step else -0.5  # arcs bulge 0.175 * gap (labelled step) or 0.25
        arrow(a, b, _FORWARD, f"arc3,rad={rad}")  # left to right: bends up
        arrow(b, a, _REVERSE, f"arc3,rad={rad}")  # right to left: bends down
    # The posterior: a bracket under the reverse step, down from x_t and up into x_{t-1}.
    arrow(circles[step + 1], circles[step], _POSTERIOR, f"bar,fraction={-0.95 / gap}",
          linestyle="--")

    mid = (xs[step] + xs[step + 1]) / 2
    depth = 0.175 * gap + 0.04  # just beyond the labelled arcs
    ax.text(mid, depth, r"forward $q(x_t \mid x_{t-1})$", color=_FORWARD,
            ha="center", va="bottom", fontsize=10)
    ax.text(mid, -depth, r"reverse $p_\theta(x_{t-1} \mid x_t)$", color=_REVERSE,
            ha="center", va="top", fontsize=10)
    # The posterior's label, tied to x_0 by a dashed link (it is conditioned on x_0).
    ax.annotate(r"posterior $q(x_{t-1} \mid x_t, x_0)$", xy=(xs[0], -radius),
                xytext=(mid, -1.22), color=_POSTERIOR, ha="center", va="center", fontsize=10,
                arrowprops=dict(arrowstyle="-", linestyle="--", color=_POSTERIOR, lw=1.0,
                                relpos=(0.0, 0.5), connectionstyle="angle,angleA=0,angleB=90,rad=0"))

    if thumbs is not None:
        for k, thumb in zip(nodes, thumbs, strict=True):
            h, w = thumb.shape[:2]
            half_w, tall = size * w / max(h, w) / 2, size * h / max(h, w)
            extent = (xs[k] - half_w, xs[k] + half_w, top - tall, top)
            ax.imshow(thumb, cmap="gray", vmin=0.0, vmax=1.0, extent=extent,
                      interpolation="nearest")
            ax.add_patch(Rectangle((extent[0], extent[2]), 2 * half_w, tall, fill=False,
                                   edgecolor="0.5", lw=0.8))
    ax.set_xlim(-0.6, xs[-1] + 0.6)
    ax.set_ylim(bottom, top + 0.05)
    ax.set_aspect("equal")
    ax.set_axis_off()
    return ax


def draw_unet(config: UNetConfig, ax: Axes | None = None) -> Axes:
    """The UNet that `config` builds (models/unet.py), drawn as a U.

    Down the left: one box per level (resolution, channels, num_res_blocks ResBlocks, "+ attn"
    at the attention_resolutions); along the bottom the middle block; up the right one box per
    level with num_res_blocks + 1 ResBlocks; a skip arrow per level from down to up; the input
    x_t, the output ε̂ (and v when learn_sigma), and the timestep embedding that every ResBlock
    receives. Every number on the picture is read from `config`.
    """
    if not isinstance(config, UNetConfig):
        raise TypeError(f"config must be a UNetConfig, got {type(config).__name__}")
    resolutions, counts = config.resolutions, config.channel_counts[1:]
    levels = len(resolutions)
    if ax is None:
        fig = plt.figure(figsize=(8, min(3.5, 1.5 + 0.5 * levels)))
        ax = fig.add_axes((0.0, 0.0, 1.0, 1.0))
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_axis_off()

    # Rows from the top: input, output and time embedding; level 0, ..., level L-1; middle.
    dy = 0.84 / (levels + 1)
    y_top, rows, y_mid = 0.92, [0.92 - dy * (i + 1) for i in range(levels)], 0.08
    x_down, x_up = 0.16, 0.84

    def box(x: float, y: float, text: str, colour: str, gid: str | None = None, **kw):
        return ax.text(x, y, text, ha="center", va="center", fontsize=8, gid=gid,
                       bbox=dict(boxstyle="round,pad=0.3", facecolor=colour, edgecolor="0.4"), **kw)

    def arrow(a, b, rel_a=(0.5, 0.0), rel_b=(0.5, 1.0), gid=None, **style):
        style = {"arrowstyle": "-|>", "color": "0.3", "lw": 1.0, "shrinkA": 0, "shrinkB": 0,
                 "patchA": a.get_bbox_patch(), "patchB": b.get_bbox_patch(), **style}
        return ax.annotate("", xy=rel_b, xycoords=b, xytext=rel_a, textcoords=a,
                           arrowprops=style, gid=gid)

    def level_text(i: int, blocks: int) -> str:
        attn = " + attn" if resolutions[i] in config.attention_resolutions else ""
        return (f"{resolutions[i]}×{resolutions[i]}, {counts[i]} ch\n"
                f"{blocks}× ResBlock{attn}")

    down = [box(x_down, y, level_text(i, config.num_res_blocks), "#dbe8f5", f"down-{i}")
            for i, y in enumerate(rows)]
    up = [box(x_up, y, level_text(i, config.num_res_blocks + 1), "#fbe3cf", f"up-{i}")
          for i, y in enumerate(rows)]
    r, c = resolutions[-1], counts[-1]
    mid = box(0.5, y_mid, f"{r}×{r}, {c} ch\nResBlock, Attention, ResBlock", "#e3e3e3", "mid")

    n, size = config.in_channels, config.image_size
    inp = box(x_down, y_top, f"$x_t$: {n}×{size}×{size}", "white", "input")
    out_text = r"$\hat\epsilon$" if not config.learn_sigma else r"$\hat\epsilon$ and $v$"
    out = box(x_up, y_top, f"{out_text}: {config.out_channels}×{size}×{size}", "white", "output")
    temb = box(0.5, y_top, "$t$ → sinusoidal embedding → MLP\ninto every ResBlock", "#eeeeee",
               "time", fontstyle="italic")

    arrow(inp, down[0])
    ax.text(x_down - 0.01, (y_top + rows[0]) / 2, f"conv → {config.channel_counts[0]} ch",
            ha="right", va="center", fontsize=7, color="0.3")
    arrow(up[0], out, rel_a=(0.5, 1.0), rel_b=(0.5, 0.0))
    for i in range(levels - 1):
        arrow(down[i], down[i + 1])  # downsample: stride-2 conv
        arrow(up[i + 1], up[i], rel_a=(0.5, 1.0), rel_b=(0.5, 0.0))  # upsample
    arrow(down[-1], mid, rel_b=(0.0, 0.5))
    arrow(mid, up[-1], rel_a=(1.0, 0.5), rel_b=(0.5, 0.0))
    for i in range(levels):
        arrow(down[i], up[i], rel_a=(1.0, 0.5), rel_b=(0.0, 0.5), gid="skip", color="0.55",
              linestyle="--")
    ax.text(0.5, rows[0] - 0.012, "skip (concatenated)", ha="center", va="top", fontsize=7,
            color="0.45")
    for target in (down[0], up[0]):
        arrow(temb, target, rel_a=(0.5, 0.0), rel_b=(0.5, 1.0), color="0.5", linestyle=":")
    return ax


# -----------------------------------------------------------------------------
# The whole process in 1-D, and how a trained model's error spreads over the losses


def _png(fig: Figure, dpi: int) -> bytes:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi)
    return buffer.getvalue()


def _check_frame_size(size_px, name: str = "size_px") -> tuple[int, int]:
    if (not isinstance(size_px, tuple | list) or len(size_px) != 2
            or not all(isinstance(v, int | np.integer) and not isinstance(v, bool) for v in size_px)
            or min(size_px) < 100):
        raise ValueError(f"{name} must be (width, height) in pixels, each an int >= 100, got {size_px!r}")
    return int(size_px[0]), int(size_px[1])


def _check_frame_ts(ts, low: int, high: int) -> list[int]:
    if isinstance(ts, str | bytes) or not hasattr(ts, "__len__") or len(ts) == 0:
        raise ValueError(f"ts must be a non-empty sequence of timesteps, got {ts!r}")
    if not all(isinstance(t, int | np.integer) and not isinstance(t, bool) for t in ts):
        raise TypeError(f"ts must hold integers (the paper's t of each frame), got {list(ts)}")
    if min(ts) < low or max(ts) > high:
        raise ValueError(f"ts must lie in {low}..{high}, got values in {min(ts)}..{max(ts)}")
    return [int(t) for t in ts]


def draw_marginal_heatmap(ax: Axes, schedule: Schedule, levels, weights, paths=None,
                          t: int | None = None, x_t: float | None = None, x_lim: float = 3.0,
                          num_t: int = 200, num_x: int = 120):
    """The density of q(x_t) over (t, x) for 1-D data on point masses, as a heat map.

    levels, weights: (K,) the values c_k of x_0 and their probabilities. Horizontal: the
    paper's t = 1..T; vertical: x in [-x_lim, x_lim]; colour: log10 of q(x_t) averaged over
    each pixel (the probability of the pixel's bin over its width, from `mixture_cdf`, exact
    even where the density is far narrower than a pixel). The t axis has a √t scale, which
    gives the early steps, where the levels still stand apart, more room. paths: optionally
    (P, T + 1) forward sample paths x_0..x_T, drawn as thin white lines. t, x_t: a dashed line
    at the paper's t and, when x_t is given, a dot at (t, x_t). Returns the QuadMesh (for a
    colour bar).
    """
    if not isinstance(schedule, Schedule):
        raise TypeError(f"schedule must be a Schedule (see make_schedule), got {type(schedule).__name__}")
    levels = torch.as_tensor(_to_numpy(levels, "levels"))
    weights = torch.as_tensor(_to_numpy(weights, "weights"))
    if not (isinstance(x_lim, int | float) and math.isfinite(x_lim) and x_lim > 0):
        raise ValueError(f"x_lim must be a positive number (the half-height of the view), got {x_lim!r}")
    _check_positive_int(num_t, "num_t")
    _check_positive_int(num_x, "num_x")
    T = schedule.T
    if paths is not None:
        paths = _to_numpy(paths, "paths")
        if paths.ndim != 2 or paths.shape[1] != T + 1:
            raise ValueError(f"paths must have shape (P, T + 1) = (P, {T + 1}): x_0..x_T of each "
                             f"path, got {tuple(paths.shape)}")
    if t is not None and not (isinstance(t, int | np.integer) and 1 <= t <= T):
        raise ValueError(f"t must be the paper's timestep, an int in 1..T = 1..{T}, got {t!r}")

    # Columns evenly spaced in √t, like the axis: t from 0 to T, each column drawn at the
    # density of the paper's t at its centre.
    t_edges = np.linspace(0.0, math.sqrt(T), min(num_t, T) + 1) ** 2  # (num_t + 1,)
    centres = np.clip(np.round((t_edges[1:] + t_edges[:-1]) / 2), 1, T).astype(int)  # paper t
    q = point_mass_marginal(schedule, torch.from_numpy(centres - 1), levels, weights)  # (num_t,)
    edges = torch.linspace(-x_lim, x_lim, num_x + 1, dtype=torch.float64)
    cdf = mixture_cdf(q, edges.expand(len(centres), -1))  # (num_t, num_x + 1)
    density = (cdf.diff(dim=1) / edges.diff()).T.numpy()  # (num_x, num_t): rows are x
    image = ax.pcolormesh(t_edges, edges.numpy(), np.log10(np.maximum(density, 1e-4)), cmap=plt.get_cmap("magma", 18),
                          vmin=-3, vmax=1.5, shading="flat", rasterized=True)
    ax.set_xscale("function", functions=(np.sqrt, np.square))  # more room for small t
    if paths is not None:
        for path in paths:
            ax.plot(np.arange(T + 1), path, color="white", lw=0.6, alpha=0.75)
    if t is not None:
        ax.axvline(t, color="C9", ls="--", lw=1.0)
        if x_t is not None:
            ax.plot([t], [x_t], "o", ms=5, mec="black", mfc="C9")
    ax.set_xlim(0, T)
    ax.set_ylim(-x_lim, x_lim)
    ticks = [t for t in (0, 10, 50, 100, 200, 400, 700, 1000) if t <= T]
    ax.set_xticks(ticks if T >= 100 else [0, T])
    ax.set_xlabel(r"$t$ ($\sqrt{t}$ scale)")
    ax.set_ylabel("x")
    return image


def draw_reverse_step(ax: Axes, schedule: Schedule, levels, weights, t: int, x_t: float,
                      jump_to: int | None = None, z_lim: float = 4.0, num_z: int = 240) -> Axes:
    """The exact reverse step q(x_{t-1} | x_t) at one x_t next to the best single Gaussian.

    Each density is drawn in units of its own best Gaussian (moment-matched, `mixture_moments`):
    z = (x_{t-1} - mean) / sd, so that Gaussian is always the dashed N(0, 1) and what is left
    to see is the shape of the exact step. t is the paper's step (2..T): one step t -> t-1 in
    blue; jump_to: optionally an earlier step s (1 <= s < t - 1), drawn in orange, the exact
    q(x_s | x_t) of a sampler that jumps from t to s in one go (`respace`). Densities are
    averaged over bins of width 2 z_lim / num_z, so spikes narrower than a bin stay visible;
    the vertical range is fixed, so tall spikes are cut at the top.
    """
    if not isinstance(schedule, Schedule):
        raise TypeError(f"schedule must be a Schedule (see make_schedule), got {type(schedule).__name__}")
    T = schedule.T
    if not (isinstance(x_t, int | float) and math.isfinite(x_t)):
        raise ValueError(f"x_t must be a finite number, got {x_t!r}")
    if not (isinstance(t, int | np.integer) and 2 <= t <= T):
        raise ValueError(f"t must be the paper's timestep of the step's start, an int in 2..T = "
                         f"2..{T}, got {t!r}")
    if jump_to is not None and not (isinstance(jump_to, int | np.integer) and 1 <= jump_to < t - 1):
        raise ValueError(f"jump_to must be an int in 1..t-2 = 1..{t - 2} (an earlier step), got {jump_to!r}")
    levels = torch.as_tensor(_to_numpy(levels, "levels"))
    weights = torch.as_tensor(_to_numpy(weights, "weights"))
    x = torch.tensor([float(x_t)], dtype=torch.float64)
    steps = [(f"one step (β = {float(schedule.betas[t - 1]):.2g})", schedule, t - 1, "C0")]
    if jump_to is not None:  # a schedule of two steps: x_0 -> x_s -> x_t, index 1 is the jump
        jump = respace(schedule, torch.tensor([jump_to - 1, t - 1]))
        steps.append((f"jump to t = {jump_to} (β = {float(jump.betas[1]):.2g})", jump, 1, "C1"))
    edges = torch.linspace(-z_lim, z_lim, num_z + 1, dtype=torch.float64)
    centres = ((edges[1:] + edges[:-1]) / 2).numpy()
    for label, sched, index, colour in steps:
        step = point_mass_reverse(sched, index, x, levels, weights)  # batch (1,)
        mean, var = mixture_moments(step)
        sd = var.sqrt()
        cdf = mixture_cdf(step, mean[:, None] + sd[:, None] * edges)  # (1, num_z + 1)
        ax.plot(centres, (cdf.diff(dim=1) / edges.diff())[0].numpy(), color=colour, lw=1.3, label=label)
    grid = np.linspace(-z_lim, z_lim, 200)
    ax.plot(grid, np.exp(-grid**2 / 2) / math.sqrt(2 * math.pi), "k--", lw=1.0, label="best Gaussian")
    ax.set_xlim(-z_lim, z_lim)
    ax.set_ylim(0, 1.0)
    ax.set_yticks([])
    ax.set_xlabel(r"$(x_{t-1} - m)\,/\,s$")
    return ax


def reverse_step_frames(schedule: Schedule, levels, weights, ts: Sequence[int], x_signal: float,
                        jump: int | None = None, paths=None, x_lim: float = 3.0,
                        size_px: tuple[int, int] = (600, 260), dpi: int = 80) -> list[bytes]:
    """Scrubber frames over t: the heat map of q(x_t) and, at each t, the exact reverse step.

    One PNG of size_px = (width, height) pixels per t of `ts` (the paper's t, 2..T): left,
    `draw_marginal_heatmap` with a line at t and a dot at x_t = √ᾱ_t · x_signal, the noisy
    image of the data value x_signal (e.g. the midpoint of two levels, where the reverse
    step is most ambiguous); right, `draw_reverse_step` there, with the jump t -> max(t - jump, 1)
    when `jump` is given. levels, weights, paths: as for `draw_marginal_heatmap`.
    Pass the frames and ts to `scrubber`.
    """
    if not isinstance(schedule, Schedule):
        raise TypeError(f"schedule must be a Schedule (see make_schedule), got {type(schedule).__name__}")
    width, height = _check_frame_size(size_px)
    _check_positive_int(dpi, "dpi")
    ts = _check_frame_ts(ts, 2, schedule.T)
    if jump is not None:
        _check_positive_int(jump, "jump")
    if not (isinstance(x_signal, int | float) and math.isfinite(x_signal)):
        raise ValueError(f"x_signal must be a finite number (a value of x_0), got {x_signal!r}")
    frames = []
    for t in ts:
        fig = Figure(figsize=(width / dpi, height / dpi), dpi=dpi)
        FigureCanvasAgg(fig)  # a bare Figure: nothing is left open in the notebook
        heat = fig.add_axes((0.08, 0.17, 0.50, 0.72))
        step = fig.add_axes((0.64, 0.17, 0.34, 0.72))
        x_t = math.sqrt(float(schedule.alphas_cumprod[t - 1])) * x_signal
        draw_marginal_heatmap(heat, schedule, levels, weights, paths, t=t, x_t=x_t, x_lim=x_lim)
        beta = float(schedule.betas[t - 1])
        heat.set_title(rf"$q(x_t)$ over $(t, x)$; $t$ = {t}, $\beta_t$ = {beta:.2g}", fontsize=9)
        jump_to = None if jump is None else max(t - jump, 1)
        if jump_to is not None and jump_to >= t - 1:  # no jump left to show: one step
            jump_to = None
        draw_reverse_step(step, schedule, levels, weights, t, x_t, jump_to=jump_to)
        step.set_title(rf"$q(x_{{t-1}} \mid x_t = {x_t:.2f})$ (dot)", fontsize=9)
        step.legend(fontsize=7, loc="upper left", frameon=False)
        for ax in (heat, step):
            ax.tick_params(labelsize=7)
            ax.xaxis.label.set_size(8)
            ax.yaxis.label.set_size(8)
        frames.append(_png(fig, dpi))
    return frames


def loss_share_frames(ts: Sequence[int], t_values, mse, lam, images: Sequence | None = None,
                      labels: Sequence[str] = (r"$x_t$", r"$\varepsilon$", r"$\hat\varepsilon$"),
                      size_px: tuple[int, int] = (600, 260),
                      dpi: int = 80) -> list[bytes]:
    """Scrubber frames over t: a trained ε-model's error at t, and t's share of each loss.

    t_values (K,): the paper's t of the terms; mse (K,): the model's mean squared error
    ‖ε - ε̂‖² / d at each; lam (K,): the bound's weight λ_t of each (eq. 12), so that term t
    is λ_t · mse_t in the bound L_vlb and mse_t in L_simple (up to constant factors). Shares:
    mse_t / Σ mse and λ_t mse_t / Σ λ mse over the K terms. One PNG per t of `ts` (each in
    t_values): left, optionally `images[i]`, rows of thumbnails (N, C, H, W) in [-1, 1], one
    per entry of `labels`; middle, mse over t with the frame's t marked; right, the two
    shares of term t as bars on a log scale, against 1/K (every term alike).
    """
    width, height = _check_frame_size(size_px)
    _check_positive_int(dpi, "dpi")
    t_values, mse, lam = (_to_numpy(v, n) for v, n in ((t_values, "t_values"), (mse, "mse"), (lam, "lam")))
    if t_values.ndim != 1 or mse.shape != t_values.shape or lam.shape != t_values.shape:
        raise ValueError(f"t_values, mse and lam must have one shape (K,), got {t_values.shape}, "
                         f"{mse.shape} and {lam.shape}")
    if not (np.all(np.isfinite(mse)) and np.all(np.isfinite(lam)) and mse.min() >= 0 and lam.min() > 0):
        raise ValueError("mse must be finite and >= 0, lam finite and > 0 (the weight of each term)")
    ts = _check_frame_ts(ts, int(t_values.min()), int(t_values.max()))
    where = {int(t): k for k, t in enumerate(t_values)}
    if any(t not in where for t in ts):
        raise ValueError(f"every t of ts must be one of t_values, got {[t for t in ts if t not in where]}")
    if images is not None and len(images) != len(ts):
        raise ValueError(f"images must hold one entry (a list of rows) per frame: {len(ts)}, got {len(images)}")
    share_simple = mse / mse.sum()
    share_vlb = lam * mse / (lam * mse).sum()
    label_px, cell_px = 26, 60  # thumbnails: labels on the left, at most 60 pixels per image
    frames = []
    for i, t in enumerate(ts):
        k = where[t]
        fig = Figure(figsize=(width / dpi, height / dpi), dpi=dpi)
        FigureCanvasAgg(fig)
        left_px = 10
        if images is not None:
            rows = images[i]
            if len(rows) != len(labels):
                raise ValueError(f"images[{i}] must hold one row per label ({len(labels)}), got {len(rows)}")
            grids = [image_grid(row, nrow=len(row), padding=1) for row in rows]  # (h, w, C) each
            if len({g.shape for g in grids}) != 1:
                raise ValueError(f"images[{i}] must hold rows of the same number of images of one "
                                 f"shape, got grids of shapes {[g.shape for g in grids]}")
            row_h = min(cell_px, (height - 30) // len(grids))  # pixels per row
            row_w = row_h * grids[0].shape[1] / grids[0].shape[0]
            top = height - 22  # below the caption
            for r, (grid, label) in enumerate(zip(grids, labels, strict=True)):
                bottom = top - (r + 1) * row_h
                ax = fig.add_axes((label_px / width, bottom / height, row_w / width, 0.95 * row_h / height))
                _imshow_unit(ax, grid)
                fig.text(label_px / 2 / width, (bottom + row_h / 2) / height, label, ha="center",
                         va="center", fontsize=10)
            fig.text((label_px + row_w / 2) / width, 1 - 4 / height, f"t = {t}", ha="center",
                     va="top", fontsize=10)
            left_px = label_px + row_w + 10
        x0 = (left_px + 42) / width  # room for the tick labels
        curve = fig.add_axes((x0, 0.2, 0.63 - x0, 0.66))
        curve.plot(t_values, mse, color="0.3", lw=0.8)
        curve.plot([t], [mse[k]], "o", color="C3", ms=5)
        curve.set(xscale="log", yscale="log", xlabel="t")
        curve.set_title(rf"$\|\varepsilon - \hat\varepsilon\|^2/d$ = {mse[k]:.2g}", fontsize=9)
        bars = fig.add_axes((0.72, 0.2, 0.2, 0.66))
        bars.bar([0, 1], [share_simple[k], share_vlb[k]], color=["C0", "C1"], width=0.6)
        bars.axhline(1 / len(t_values), color="k", ls=":", lw=0.8)
        bars.text(1.55, 1 / len(t_values), "1/K:\nall\nalike", fontsize=7, va="center", ha="left")
        bars.set_yscale("log")
        bars.set_ylim(min(share_simple.min(), share_vlb.min()) / 2, 1.0)
        bars.set_xlim(-0.5, 1.5)
        bars.set_xticks([0, 1], [r"$L_\mathrm{simple}$", r"$L_\mathrm{vlb}$"])
        bars.set_title(rf"share of term $t$; $\lambda_t$ = {lam[k]:.3g}", fontsize=9)
        for ax in (curve, bars):
            ax.tick_params(labelsize=7)
            ax.xaxis.label.set_size(8)
        bars.tick_params(axis="x", labelsize=9)
        frames.append(_png(fig, dpi))
    return frames
