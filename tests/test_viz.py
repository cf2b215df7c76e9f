"""viz: grid layout, PNG frames and the scrubber's widget wiring."""

import io

import ipywidgets as widgets
import matplotlib

matplotlib.use("Agg")

import matplotlib.image
import matplotlib.pyplot as plt
import numpy as np
import pytest
import torch
from ipywidgets.embed import embed_data

from diffusion_core import make_schedule, viz
from diffusion_core.models import UNet, UNetConfig


def _decode_png(data: bytes) -> np.ndarray:
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    return matplotlib.image.imread(io.BytesIO(data), format="png")  # (H, W, 4) in [0, 1]


def _distinct_batch(n=5, c=3, h=4, w=3) -> np.ndarray:
    """Images whose every pixel value is different, so a misplaced pixel shows."""
    values = np.linspace(-1.0, 1.0, n * c * h * w)
    return values.reshape(n, c, h, w)


def test_image_grid_places_every_pixel():
    x = _distinct_batch(n=5, c=3, h=4, w=3)
    nrow, pad = 2, 1
    grid = viz.image_grid(x, nrow=nrow, padding=pad, pad_value=0.25)
    # 5 images, 2 per row -> 3 rows, 2 columns; one pixel of padding around each
    assert grid.shape == (3 * 4 + 4 * pad, 2 * 3 + 3 * pad, 3)
    filled = np.zeros(grid.shape[:2], dtype=bool)
    for i in range(5):
        row, col = divmod(i, nrow)
        for y in range(4):
            for xx in range(3):
                gy, gx = pad + row * (4 + pad) + y, pad + col * (3 + pad) + xx
                expected = (x[i, :, y, xx] + 1) / 2
                np.testing.assert_allclose(grid[gy, gx], expected, rtol=0, atol=1e-6)
                filled[gy, gx] = True
    # everything that is not an image pixel is padding, including the empty 6th slot
    assert np.all(grid[~filled] == np.float32(0.25))


def test_image_grid_accepts_tensors_and_clips_noise():
    x = torch.tensor([[[[-3.0, 0.0], [0.5, 3.0]]]])  # (1, 1, 2, 2), outside [-1, 1]
    grid = viz.image_grid(x, nrow=4, padding=0)
    assert grid.shape == (2, 2, 1)
    np.testing.assert_allclose(grid[..., 0], [[0.0, 0.5], [0.75, 1.0]])


@pytest.mark.parametrize("bad, match", [
    (np.zeros((2, 2, 4, 4)), r"\(N, C, H, W\)"),
    (np.zeros((4, 4)), r"\(N, C, H, W\)"),
    (np.zeros((0, 1, 4, 4)), r"N >= 1"),
])
def test_image_grid_rejects_bad_shapes(bad, match):
    with pytest.raises(ValueError, match=match):
        viz.image_grid(bad)


def test_image_grid_rejects_bad_nrow():
    with pytest.raises(ValueError, match="nrow"):
        viz.image_grid(np.zeros((2, 1, 4, 4)), nrow=0)


def test_save_grid_png_round_trips(tmp_path):
    x = _distinct_batch(n=3, c=1, h=5, w=6)
    path = viz.save_grid_png(x, tmp_path / "grid.png", nrow=3)
    saved = matplotlib.image.imread(path)
    grid = viz.image_grid(x, nrow=3)
    assert saved.shape[:2] == grid.shape[:2]  # one pixel per pixel
    # grey saved as RGB(A): all three channels equal the grid, to one 8-bit level
    np.testing.assert_allclose(saved[..., 0], grid[..., 0], atol=1 / 255 + 1e-6)
    np.testing.assert_allclose(saved[..., 1], grid[..., 0], atol=1 / 255 + 1e-6)


def test_show_images_draws_the_grid_on_given_axes():
    fig, ax = plt.subplots()
    x = _distinct_batch(n=4, c=3, h=4, w=4)
    returned = viz.show_images(x, nrow=2, title="samples", ax=ax)
    assert returned is ax
    assert ax.get_title() == "samples"
    shown = ax.get_images()[0].get_array()
    np.testing.assert_array_equal(np.asarray(shown), viz.image_grid(x, nrow=2))
    plt.close(fig)


@pytest.mark.parametrize("size_px, dpi", [(160, 80), (96, 48)])
def test_frames_to_png_decodes_to_requested_size(size_px, dpi):
    images = [np.zeros((1, 8, 8)), torch.zeros(3, 8, 8), np.zeros((8, 8))]
    frames = viz.frames_to_png(images, titles=["a", "b", "c"], size_px=size_px, dpi=dpi)
    assert len(frames) == 3
    for png in frames:
        assert _decode_png(png).shape[:2] == (size_px, size_px)


def test_frames_to_png_uses_one_fixed_range():
    # a frame at -1 must render black, one at +1 white, and one at +5 the same
    # white (clipped), rather than each frame being normalised on its own
    images = [np.full((4, 4), v) for v in (-1.0, 1.0, 5.0)]
    centres = [_decode_png(p)[40:120, 40:120, :3].mean() for p in viz.frames_to_png(images)]
    assert centres[0] == pytest.approx(0.0, abs=0.02)
    assert centres[1] == pytest.approx(1.0, abs=0.02)
    assert centres[2] == pytest.approx(centres[1], abs=1e-6)


def test_frames_to_png_rejects_mismatched_titles_and_shapes():
    with pytest.raises(ValueError, match="titles"):
        viz.frames_to_png([np.zeros((4, 4))], titles=["a", "b"])
    with pytest.raises(ValueError, match=r"images\[0\]"):
        viz.frames_to_png([np.zeros((2, 4, 4))])
    with pytest.raises(ValueError, match="at least one"):
        viz.frames_to_png([])


def _embedded_links(box: widgets.Widget) -> set[tuple[str, str, str, str]]:
    """The links that the static book would embed with `box`, as (source id, trait,
    target id, trait): embed_data gathers the same state that the HTML page gets."""
    state = embed_data(views=[box])["manager_state"]["state"]
    ids = lambda ref: ref.removeprefix("IPY_MODEL_")
    return {(ids(m["state"]["source"][0]), m["state"]["source"][1],
             ids(m["state"]["target"][0]), m["state"]["target"][1])
            for m in state.values() if m["model_name"] == "LinkModel"}


def test_scrubber_structure_and_links():
    values = [0, 250, 500, 750, 999]
    frames = viz.frames_to_png([np.zeros((4, 4))] * len(values), size_px=32, dpi=32)
    box = viz.scrubber(frames, values, interval_ms=150)

    (controls, stack) = box.children
    play, slider = controls.children
    assert isinstance(play, widgets.Play) and isinstance(stack, widgets.Stack)
    assert [img.value for img in stack.children] == frames
    assert play.min == 0 and play.max == len(values) - 1 and play.interval == 150
    # the readout shows t, the index walks over the frames
    assert [label for label, _ in slider.options] == ["0", "250", "500", "750", "999"]
    assert len(slider.options) == len(frames)
    assert slider.description == r"\(t\)"

    # browser-side links (jslink, a LinkModel), so they work without a kernel
    links = _embedded_links(box)
    assert (play.model_id, "value", slider.model_id, "index") in links
    assert (slider.model_id, "index", stack.model_id, "selected_index") in links


def test_scrubber_python_side_follows_the_slider():
    # in a live kernel the model state moves together; check the slider-to-value map
    frames = viz.frames_to_png([np.zeros((4, 4))] * 3, size_px=32, dpi=32)
    box = viz.scrubber(frames, [0, 50, 100])
    slider = box.children[0].children[1]
    slider.index = 2
    assert slider.value == 100


def test_scrubber_rejects_bad_input():
    frames = viz.frames_to_png([np.zeros((4, 4))] * 2, size_px=32, dpi=32)
    with pytest.raises(ValueError, match="one entry per frame"):
        viz.scrubber(frames, [0])
    with pytest.raises(ValueError, match="distinct"):
        viz.scrubber(frames, [5, 5])
    with pytest.raises(TypeError, match="integers"):
        viz.scrubber(frames, [0.0, 1.5])
    with pytest.raises(TypeError, match="PNG bytes"):
        viz.scrubber(["not png", "x"], [0, 1])


def test_plot_schedule_draws_one_line_per_table():
    fig, ax = plt.subplots()
    betas = torch.linspace(1e-4, 0.02, 50, dtype=torch.float64)
    tables = {"betas": betas, "alphas_cumprod": torch.cumprod(1 - betas, 0)}
    viz.plot_schedule(tables, ax=ax)
    lines = ax.get_lines()
    assert [line.get_label() for line in lines] == ["betas", "alphas_cumprod"]
    np.testing.assert_allclose(lines[1].get_ydata(), tables["alphas_cumprod"].numpy())
    plt.close(fig)


def test_plot_sampler_sweep_draws_each_run_and_the_real_line():
    rows = [{"sampler": "strided", "steps": 50, "fd": 2.0}, {"sampler": "strided", "steps": 10, "fd": 3.0},
            {"sampler": "DDIM", "steps": 10, "fd": 4.0}, {"sampler": "ancestral", "steps": 1000, "fd": 1.0},
            {"sampler": "DPM-Solver++", "steps": 20, "fd": 1.5}, {"sampler": "DPM-Solver++", "steps": 5, "fd": 2.5}]
    (ax,) = viz.plot_sampler_sweep(rows, {"fd": 0.5}, {"fd": "distance"})
    lines = {line.get_label(): line for line in ax.get_lines()}
    assert list(lines["DPM-Solver++"].get_xdata()) == [5, 20]  # any sampler gets its curve
    assert list(lines["strided"].get_xdata()) == [10, 50]  # sorted by steps
    assert list(lines["strided"].get_ydata()) == [3.0, 2.0]
    assert list(lines["DDIM"].get_ydata()) == [4.0]
    assert list(lines["ancestral, 1000"].get_xdata()) == [1000]
    assert list(lines["real digits"].get_ydata()) == [0.5, 0.5]
    plt.close("all")
    with pytest.raises(ValueError, match="panels"):
        viz.plot_sampler_sweep(rows, {}, {})
    _, axes = plt.subplots(1, 2)
    with pytest.raises(ValueError, match="one Axes per panel"):
        viz.plot_sampler_sweep(rows, {"fd": 0.5}, {"fd": "distance"}, axes=axes)
    plt.close("all")


def test_plot_sampler_sweep_error_bars():
    rows = [{"sampler": "strided", "steps": 50, "fd": 2.0, "fd_se": 0.1},
            {"sampler": "strided", "steps": 10, "fd": 3.0, "fd_se": 0.3}]
    (ax,) = viz.plot_sampler_sweep(rows, {"fd": 0.5, "fd_se": 0.05}, {"fd": "distance"})
    (bars,) = ax.containers
    lower, upper = bars.lines[1][0].get_ydata(), bars.lines[1][1].get_ydata()  # caps, sorted by steps
    assert list(lower) == pytest.approx([2.7, 1.9]) and list(upper) == pytest.approx([3.3, 2.1])
    band = [p for p in ax.patches][0].get_extents()
    assert band.height > 0
    plt.close("all")


def test_rows_to_png_lays_out_labelled_rows_at_the_asked_size():
    white, black = torch.ones(5, 1, 28, 28), -torch.ones(5, 1, 28, 28)
    png = viz.rows_to_png([white, black], ["x_t", "x̂_0"], title="t = 10", cell_px=84, dpi=80)
    image = matplotlib.image.imread(io.BytesIO(png))  # (H, W, 4) in [0, 1]
    assert image.shape[:2] == (20 + 2 * 84, 56 + 5 * 84)  # title + rows, labels + images
    grey = image[..., :3].mean(axis=2)
    for i in range(5):  # the centre of every cell: white in the top row, black below
        x = 56 + i * 84 + 42
        assert grey[20 + 42, x] > 0.95 and grey[20 + 84 + 42, x] < 0.05
    with pytest.raises(ValueError, match="rows and labels"):
        viz.rows_to_png([white], ["a", "b"])
    with pytest.raises(ValueError, match="same number of images"):
        viz.rows_to_png([white, black[:3]], ["a", "b"])


# -----------------------------------------------------------------------------
# Diagrams

def _texts(ax) -> list[str]:
    return [t.get_text() for t in ax.texts]


def _by_gid(ax, gid: str):
    (text,) = [t for t in ax.texts if t.get_gid() == gid]
    return text.get_text()


UNET_CONFIGS = [
    UNetConfig.digits(),  # 8x8, channel_mult (1, 2), attention at 4
    UNetConfig.cifar10(),  # 32x32, (1, 2, 2, 2), attention at 16
    UNetConfig.mnist(learn_sigma=True),  # 28 -> 14 -> 7 (odd sizes), 2C outputs
    UNetConfig(image_size=16, in_channels=3, base_channels=16, channel_mult=(2, 3),
               num_res_blocks=1, attention_resolutions=(16, 8), num_groups=8),  # base not a level
]


@pytest.mark.parametrize("config", UNET_CONFIGS, ids=["digits", "cifar10", "mnist", "custom"])
def test_draw_unet_names_every_level_of_its_config(config):
    ax = viz.draw_unet(config)
    ax.figure.canvas.draw()  # lays out the arrows between the boxes
    texts = _texts(ax)
    for count in config.channel_counts:  # conv_in's channels too
        assert any(f"{count} ch" in t for t in texts), count
    for i, (res, mult) in enumerate(zip(config.resolutions, config.channel_mult, strict=True)):
        attn = res in config.attention_resolutions
        for side, blocks in (("down", config.num_res_blocks), ("up", config.num_res_blocks + 1)):
            text = _by_gid(ax, f"{side}-{i}")
            assert f"{res}×{res}, {config.base_channels * mult} ch" in text
            assert f"{blocks}× ResBlock" in text
            assert ("attn" in text) == attn, (side, i, text)
    assert sum("attn" in t for t in texts) == 2 * len(config.attention_resolutions)
    assert sum(t.get_gid() == "skip" for t in ax.texts) == len(config.channel_mult)
    size = config.image_size
    assert f"{config.in_channels}×{size}×{size}" in _by_gid(ax, "input")
    assert f"{config.out_channels}×{size}×{size}" in _by_gid(ax, "output")
    assert ("$v$" in _by_gid(ax, "output")) == config.learn_sigma
    assert "Attention" in _by_gid(ax, "mid") and "sinusoidal" in _by_gid(ax, "time")
    width, height = ax.figure.get_size_inches()
    assert width <= 8 and height <= 3.5
    plt.close("all")


@pytest.mark.parametrize("config", [UNET_CONFIGS[0], UNET_CONFIGS[3]], ids=["digits", "custom"])
def test_draw_unet_matches_the_network_the_config_builds(config):
    from diffusion_core.models.unet import AttentionBlock

    model = UNet(config)
    ax = viz.draw_unet(config)
    levels = len(config.channel_mult)
    for i in range(levels):
        up = model.up[levels - 1 - i]  # the up path runs from the lowest resolution
        for side, blocks in (("down", model.down[i]), ("up", up)):
            text = _by_gid(ax, f"{side}-{i}")
            assert f"{len(blocks)}× ResBlock" in text
            has_attn = any(isinstance(b.attn, AttentionBlock) for b in blocks)
            assert ("attn" in text) == has_attn
    assert f"{model.conv_out.out_channels}×" in _by_gid(ax, "output")
    plt.close("all")


def test_draw_unet_rejects_what_is_not_a_config():
    with pytest.raises(TypeError, match="config must be a UNetConfig"):
        viz.draw_unet({"image_size": 8})


@pytest.mark.parametrize("n", [1, 2, 4])
def test_draw_chain_labels_both_chains_and_the_posterior(n):
    from matplotlib.patches import FancyArrowPatch

    ax = viz.draw_chain(num_steps_shown=n)
    ax.figure.canvas.draw()
    texts = _texts(ax)
    nodes = [f"$x_{i}$" for i in range(n)] + ["$x_{t-1}$", "$x_t$", "$x_T$"]
    assert [t for t in texts if t.startswith("$x_")] == nodes
    assert sum(t == r"$\cdots$" for t in texts) == 2
    assert any(r"q(x_t \mid x_{t-1})" in t for t in texts)
    assert any(r"p_\theta(x_{t-1} \mid x_t)" in t for t in texts)
    (posterior,) = [t for t in ax.texts if r"q(x_{t-1} \mid x_t, x_0)" in t.get_text()]
    # the posterior is tied to x_0 by a dashed link
    assert posterior.arrow_patch is not None and posterior.arrow_patch.get_linestyle() == "--"
    arrows = [p for p in ax.patches if isinstance(p, FancyArrowPatch)]
    dashed = [p for p in arrows if p.get_linestyle() == "--"]
    steps = len(nodes) + 1  # slots (nodes and two ellipses) minus one
    assert len(arrows) == 2 * steps + 1 and len(dashed) == 1  # forward, reverse, posterior
    colours = {tuple(p.get_edgecolor()) for p in arrows}
    assert len(colours) == 3  # three kinds of step, three colours
    width, height = ax.figure.get_size_inches()
    assert width <= 8 and height <= 3.5
    plt.close("all")


def test_draw_chain_draws_one_clipped_thumbnail_per_node():
    images = [torch.full((1, 8, 8), 3.0), np.zeros((8, 8)), -5 * torch.ones(1, 8, 8),
              np.zeros((3, 6, 6)), torch.zeros(8, 8)]
    ax = viz.draw_chain(num_steps_shown=2, images=images)
    assert len(ax.images) == 5
    first, second = ax.images[0].get_array(), ax.images[2].get_array()
    assert np.all(first == 1.0) and np.all(second == 0.0)  # clipped to [-1, 1], shown in [0, 1]
    assert ax.images[3].get_array().shape == (6, 6, 3)
    width, height = ax.figure.get_size_inches()
    assert width <= 8 and height <= 3.5
    plt.close("all")


def test_draw_chain_rejects_bad_input():
    with pytest.raises(ValueError, match=r"images must hold one image per node \(6 with "
                                         r"num_steps_shown=3\), got 5"):
        viz.draw_chain(num_steps_shown=3, images=[np.zeros((8, 8))] * 5)
    bad = [np.zeros((8, 8))] * 4 + [np.zeros((2, 8, 8))]
    with pytest.raises(ValueError, match=r"images\[4\] must have shape \(C, H, W\)"):
        viz.draw_chain(images=bad)
    with pytest.raises(ValueError, match=r"images\[0\]"):
        viz.draw_chain(images=[np.zeros(8)] * 5)
    for n in (0, 5, 2.0, True):
        with pytest.raises(ValueError, match="num_steps_shown"):
            viz.draw_chain(num_steps_shown=n)
    plt.close("all")


@pytest.mark.parametrize("size_px, dpi", [(160, 80), (97, 50)])
def test_scatter_png_is_a_square_png_of_the_asked_size(size_px, dpi, generator):
    points = torch.randn(200, 2, generator=generator(0))
    grid = torch.linspace(-2.5, 2.5, 41)
    gx, gy = torch.meshgrid(grid, grid, indexing="xy")
    density = torch.exp(-(gx**2 + gy**2) / 2)
    plain = viz.scatter_png(points, "t = 3", size_px=size_px, dpi=dpi)
    with_density = viz.scatter_png(points, "t = 3", density, size_px=size_px, dpi=dpi)
    for png in (plain, with_density):
        assert _decode_png(png).shape[:2] == (size_px, size_px)
    assert plain != with_density  # the contours are drawn


def test_scatter_png_keeps_one_view_and_rejects_bad_input():
    # The view is [-lim, lim]^2 whatever the points: a point outside it leaves no mark.
    inside = viz.scatter_png(np.zeros((1, 2)), "")
    outside = viz.scatter_png(np.full((1, 2), 3.0), "")
    empty = viz.scatter_png(np.zeros((0, 2)), "")
    assert outside == empty and inside != empty
    assert viz.scatter_png(np.full((1, 2), 3.0), "", lim=4.0) != empty
    with pytest.raises(ValueError, match=r"points must have shape \(N, 2\)"):
        viz.scatter_png(np.zeros((5, 3)), "")
    with pytest.raises(ValueError, match=r"density must have shape \(G, G\)"):
        viz.scatter_png(np.zeros((5, 2)), "", density=np.zeros((4, 5)))
    with pytest.raises(ValueError, match="lim must be a positive number"):
        viz.scatter_png(np.zeros((5, 2)), "", lim=0.0)


# -----------------------------------------------------------------------------
# The whole process in 1-D, and the losses' shares over t

LEVELS, PROBS = [-1.0, 0.2, 1.0], [0.3, 0.3, 0.4]


def test_marginal_heatmap_shows_the_probability_of_each_pixel():
    schedule = make_schedule("linear", 200)
    fig, ax = plt.subplots()
    mesh = viz.draw_marginal_heatmap(ax, schedule, LEVELS, PROBS, paths=np.zeros((2, 201)), t=50,
                                     x_t=0.1, x_lim=4.0, num_t=40, num_x=80)
    density = 10 ** np.asarray(mesh.get_array()).reshape(80, 40)  # rows x, columns t
    # each column holds a whole distribution: bin probabilities sum to ~1 (floored at 1e-4)
    assert np.allclose(density.sum(0) * 8.0 / 80, 1.0, atol=0.01)
    assert len(ax.lines) == 2 + 2  # the paths, the marker line and the dot
    plt.close(fig)


def test_reverse_step_is_drawn_in_units_of_its_best_gaussian():
    schedule = make_schedule("linear", 1000)
    fig, ax = plt.subplots()
    viz.draw_reverse_step(ax, schedule, LEVELS, PROBS, t=900, x_t=0.1, jump_to=800)
    one, jump, gauss = ax.lines
    # late in the chain both steps are Gaussian: they lie on the dashed N(0, 1)
    for line in (one, jump):
        z, y = line.get_data()
        assert np.abs(y - np.exp(-z**2 / 2) / np.sqrt(2 * np.pi)).max() < 0.01
    plt.close(fig)
    with pytest.raises(ValueError, match="jump_to"):
        viz.draw_reverse_step(plt.gca(), schedule, LEVELS, PROBS, t=10, x_t=0.0, jump_to=9)
    plt.close("all")


def test_reverse_step_frames_are_small_pngs_of_the_asked_size():
    schedule = make_schedule("linear", 100)
    ts = [2, 10, 50, 100]
    frames = viz.reverse_step_frames(schedule, LEVELS, PROBS, ts, x_signal=-0.4, jump=20,
                                     paths=np.zeros((3, 101)), size_px=(400, 200), dpi=80)
    assert len(frames) == len(ts)
    for png in frames:
        assert png[:8] == b"\x89PNG\r\n\x1a\n"
        assert _decode_png(png).shape[:2] == (200, 400)
        assert len(png) < 100_000
    viz.scrubber(frames, ts)  # frames and ts fit the scrubber


@pytest.mark.parametrize("kwargs, match", [
    (dict(ts=[1, 5]), r"2\.\.100"),
    (dict(ts=[]), "non-empty"),
    (dict(paths=np.zeros((2, 100))), r"\(P, T \+ 1\)"),
    (dict(size_px=(600,)), "width, height"),
    (dict(x_signal=float("nan")), "x_signal"),
    (dict(jump=0), "jump"),
])
def test_reverse_step_frames_reject_bad_input(kwargs, match):
    args = dict(ts=[5], x_signal=0.0) | kwargs
    with pytest.raises((ValueError, TypeError), match=match):
        viz.reverse_step_frames(make_schedule("linear", 100), LEVELS, PROBS, **args)


def test_loss_share_frames_sizes_and_checks():
    t_values = np.arange(2, 101)
    mse, lam = np.linspace(1.0, 0.01, 99), np.geomspace(1.0, 0.01, 99)
    thumbs = [[torch.zeros(3, 1, 8, 8)] * 3 for _ in range(2)]
    frames = viz.loss_share_frames([2, 50], t_values, mse, lam, images=thumbs, size_px=(600, 260))
    assert len(frames) == 2
    for png in frames:
        assert png[:8] == b"\x89PNG\r\n\x1a\n"
        assert _decode_png(png).shape[:2] == (260, 600)
    assert len(viz.loss_share_frames([100], t_values, mse, lam)) == 1  # thumbnails are optional
    with pytest.raises(ValueError, match="one of t_values"):
        viz.loss_share_frames([2, 3], t_values[::2], mse[::2], lam[::2])
    with pytest.raises(ValueError, match="one shape"):
        viz.loss_share_frames([2], t_values, mse[:-1], lam)
    with pytest.raises(ValueError, match="lam finite and > 0"):
        viz.loss_share_frames([2], t_values, mse, -lam)
    with pytest.raises(ValueError, match="one entry"):
        viz.loss_share_frames([2, 50], t_values, mse, lam, images=thumbs[:1])
    with pytest.raises(ValueError, match="one row per label"):
        viz.loss_share_frames([2], t_values, mse, lam, images=[thumbs[0][:2]])
