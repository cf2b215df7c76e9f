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

from diffusion_core import viz


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
            {"sampler": "DDIM", "steps": 10, "fd": 4.0}, {"sampler": "ancestral", "steps": 1000, "fd": 1.0}]
    (ax,) = viz.plot_sampler_sweep(rows, {"fd": 0.5}, {"fd": "distance"})
    lines = {line.get_label(): line for line in ax.get_lines()}
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
