"""Figures for the book: image grids, schedule plots and the t-scrubber.

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

    rows: one mapping per run, with "sampler" ("ancestral", "strided" or "DDIM"), "steps"
        and a number for every key of `panels` (and optionally "<key>_se", its standard
        error, drawn as an error bar); the strided and DDIM runs are drawn as curves, the
        ancestral ones as stars. real: the same numbers for real data (a dashed line, with
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
        for name, marker in (("strided", "o-"), ("DDIM", "s-")):
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
