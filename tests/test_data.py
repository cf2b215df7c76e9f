"""Tests for diffusion_core.data: toy sets, digits, MNIST IDX files, photos."""

import gzip
import math
import os
import struct
from pathlib import Path

import numpy as np
import pytest
import torch

from diffusion_core.data import (
    DIGITS_LEVELS,
    MNIST_LEVELS,
    PHOTOS,
    TOY_DATASETS,
    digits_split_indices,
    load_digits,
    load_mnist,
    load_photo,
    split_mnist_test,
    to_levels,
    to_unit_range,
    toy_2d,
)

# The MNIST test split shipped in the checkout (data/mnist), or where MNIST_TEST_DIR says.
MNIST_DIR = Path(os.environ.get("MNIST_TEST_DIR",
                                Path(__file__).resolve().parents[1] / "data" / "mnist"))
T10K = ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")

# -----------------------------------------------------------------------------
# level transforms


@pytest.mark.parametrize("num_levels", [2, DIGITS_LEVELS, MNIST_LEVELS])
def test_levels_round_trip_and_even_spacing(num_levels):
    v = torch.arange(num_levels)
    x = to_unit_range(v, num_levels)
    assert x.dtype == torch.float32
    assert x[0] == -1 and x[-1] == 1
    assert torch.allclose(x.diff(), torch.full((num_levels - 1,), 2 / (num_levels - 1)))
    assert torch.equal(to_levels(x, num_levels), v)
    # anything within a third of a step still rounds to the same level
    jitter = (torch.rand(num_levels) - 0.5) * (2 / 3) * (2 / (num_levels - 1))
    assert torch.equal(to_levels(x + jitter, num_levels), v)


def test_to_levels_clamps_and_returns_int64():
    out = to_levels(torch.tensor([-5.0, -1.0, 0.0, 1.0, 7.0]), 17)
    assert out.dtype == torch.int64
    assert out.tolist() == [0, 0, 8, 16, 16]


def test_level_transforms_validate():
    with pytest.raises(TypeError, match="integers"):
        to_unit_range(torch.zeros(3), 256)
    with pytest.raises(ValueError, match="0..16"):
        to_unit_range(torch.tensor([0, 17]), 17)
    with pytest.raises(ValueError, match="num_levels"):
        to_unit_range(torch.tensor([0]), 1)
    with pytest.raises(TypeError, match="floating"):
        to_levels(torch.tensor([0, 1]), 17)
    with pytest.raises(ValueError, match="NaN"):
        to_levels(torch.tensor([0.0, float("nan")]), 17)


# -----------------------------------------------------------------------------
# toy 2-D sets


@pytest.mark.parametrize("name", TOY_DATASETS)
def test_toy_shape_seed_and_bounds(name, seed):
    n = 20000
    x = toy_2d(name, n, seed=seed)
    assert x.shape == (n, 2) and x.dtype == torch.float32
    assert torch.equal(x, toy_2d(name, n, seed=seed))
    assert not torch.allclose(x[:100], toy_2d(name, 100, seed=seed + 1))
    # The documented scaling, each claim failing only on 5 standard errors of evidence against
    # it. Inside [-1.5, 1.5]^2: leaving it takes a 5-sigma draw of the Gaussian noise (for the
    # eight Gaussians 20000 * 1/2 * P(z > 5) = 0.003 points expected; 3 or more: p < 1e-8).
    assert (x.abs() > 1.5).any(dim=1).sum() <= 2
    # Each coordinate's mean within 0.2 of 0 (swiss roll: 0.177, 5 SE below 0.2) and its
    # standard deviation between 0.35 and 0.95.
    xd = x.double()
    mean, std = xd.mean(0), xd.std(0)
    se_mean = std / math.sqrt(n)
    se_std = (((xd - mean) ** 4).mean(0) - std ** 4).sqrt() / (2 * std * math.sqrt(n))  # delta method
    assert ((mean.abs() - 0.2) / se_mean).max() < 5, mean
    assert ((0.35 - std) / se_std).max() < 5 and ((std - 0.95) / se_std).max() < 5, std


def test_eight_gaussians_has_eight_equal_clusters_on_the_unit_circle(seed):
    from sklearn.cluster import KMeans

    n = 4000
    x = toy_2d("eight_gaussians", n, seed=seed + 3).numpy()
    km = KMeans(n_clusters=8, n_init=3, random_state=seed).fit(x)
    counts = np.bincount(km.labels_, minlength=8)
    assert (np.abs(counts - n / 8) / math.sqrt(n * (1 / 8) * (7 / 8))).max() < 5, counts
    # A centre is the mean of its cluster's points: standard error std/√count per coordinate,
    # the documented std 0.1 (radially, and tangentially in radians at radius 1).
    order = np.argsort(np.arctan2(km.cluster_centers_[:, 1], km.cluster_centers_[:, 0]))
    centres, se = km.cluster_centers_[order], 0.1 / np.sqrt(counts[order])
    radii = np.linalg.norm(centres, axis=1)
    assert (np.abs(radii - 1) / se).max() < 5, radii
    gaps = np.diff(np.arctan2(centres[:, 1], centres[:, 0]))
    assert (np.abs(gaps - math.pi / 4) / np.hypot(se[1:], se[:-1])).max() < 5, gaps


def test_checkerboard_fills_only_alternating_cells(seed):
    n = 8000
    x = toy_2d("checkerboard", n, seed=seed + 4).numpy()
    cells = np.clip(np.floor((x + 1.5) / 0.75), 0, 3).astype(int)  # (n, 2) cell (i, j)
    assert ((cells[:, 0] + cells[:, 1]) % 2 == 0).all()
    counts = np.bincount(cells[:, 0] * 4 + cells[:, 1], minlength=16)
    occupied = counts[counts > 0]
    assert len(occupied) == 8
    assert (np.abs(occupied - n / 8) / math.sqrt(n * (1 / 8) * (7 / 8))).max() < 5, counts


def test_toy_validation():
    with pytest.raises(ValueError, match="two_moons"):
        toy_2d("spiral", 10)
    with pytest.raises(ValueError, match="n must be"):
        toy_2d("two_moons", 0)
    with pytest.raises(ValueError, match="n must be"):
        toy_2d("two_moons", 2.5)


# -----------------------------------------------------------------------------
# scikit-learn digits


def test_digits_on_the_17_level_grid_and_round_trip_to_sklearn():
    from sklearn.datasets import load_digits as sklearn_load_digits

    x, y = load_digits("all")
    assert x.shape == (1797, 1, 8, 8) and x.dtype == torch.float32
    assert y.dtype == torch.int64
    assert x.min() == -1 and x.max() == 1
    v = (x + 1) / 2 * 16  # exact in float32 for this grid
    assert torch.equal(v, v.round())
    raw = sklearn_load_digits()
    assert np.array_equal(to_levels(x, DIGITS_LEVELS)[:, 0].numpy(), raw.images.astype(int))
    assert np.array_equal(y.numpy(), raw.target)


def test_digits_split_sizes_disjoint_and_stratified():
    train_idx, test_idx = digits_split_indices("train"), digits_split_indices("test")
    assert len(train_idx) == 1497 and len(test_idx) == 300
    assert len(np.intersect1d(train_idx, test_idx)) == 0
    assert np.array_equal(np.union1d(train_idx, test_idx), np.arange(1797))
    assert np.array_equal(test_idx, digits_split_indices("test"))  # fixed, not re-drawn

    x_all, y_all = load_digits("all")
    for split, idx in (("train", train_idx), ("test", test_idx)):
        x, y = load_digits(split)
        assert torch.equal(x, x_all[idx]) and torch.equal(y, y_all[idx])
        assert set(y.tolist()) == set(range(10))
    # stratified: each class keeps its share of the test set
    assert (torch.bincount(load_digits("test")[1]) == 30).all()


def test_digits_bad_split():
    with pytest.raises(ValueError, match="train"):
        load_digits("validation")


# -----------------------------------------------------------------------------
# MNIST IDX files


@pytest.fixture(scope="module")
def mnist_gz_bytes():
    paths = [MNIST_DIR / f"{base}.gz" for base in T10K]
    missing = [p.name for p in paths if not p.is_file()]
    if missing:
        pytest.skip(f"MNIST test split not found: {missing} absent from {MNIST_DIR}")
    return {base: p.read_bytes() for base, p in zip(T10K, paths, strict=True)}


@pytest.fixture(scope="module")
def mnist_test(mnist_gz_bytes):
    return load_mnist(MNIST_DIR, split="test")


def _write_plain(root, mnist_gz_bytes, images=None):
    """Write the gunzipped t10k files into root, optionally replacing the image bytes."""
    root.mkdir(exist_ok=True)
    img_base, lbl_base = T10K
    (root / img_base).write_bytes(images or gzip.decompress(mnist_gz_bytes[img_base]))
    (root / lbl_base).write_bytes(gzip.decompress(mnist_gz_bytes[lbl_base]))


def test_mnist_test_split_contents(mnist_test, mnist_gz_bytes):
    x, y = mnist_test
    assert x.shape == (10000, 1, 28, 28) and x.dtype == torch.float32
    assert y.shape == (10000,) and y.dtype == torch.int64
    assert x.min() == -1 and x.max() == 1
    v = (x.double() + 1) * 255 / 2  # multiples of 2/255 -> whole numbers
    assert (v - v.round()).abs().max() < 1e-4
    counts = torch.bincount(y, minlength=10)
    assert len(counts) == 10 and (counts >= 800).all() and (counts <= 1200).all()
    assert y[0] == 7  # the first test digit of MNIST is a 7
    # independent decode: the pixels start after a 16-byte header, labels after 8
    raw_images = np.frombuffer(gzip.decompress(mnist_gz_bytes[T10K[0]]), np.uint8, offset=16)
    raw_labels = np.frombuffer(gzip.decompress(mnist_gz_bytes[T10K[1]]), np.uint8, offset=8)
    assert np.array_equal(to_levels(x, MNIST_LEVELS).numpy().ravel(), raw_images)
    assert np.array_equal(y.numpy(), raw_labels)


def test_mnist9k_is_the_test_split_cut_at_9000(mnist_test, mnist_gz_bytes, monkeypatch):
    from diffusion_core.data import load_mnist9k, mnist_dir

    x, y = mnist_test
    (xa, ya), (xb, yb) = load_mnist9k(MNIST_DIR, "train"), load_mnist9k(MNIST_DIR, "test")
    assert xa.shape == (9000, 1, 28, 28) and xb.shape == (1000, 1, 28, 28)
    assert torch.equal(torch.cat([xa, xb]), x) and torch.equal(torch.cat([ya, yb]), y)
    with pytest.raises(ValueError, match="split must be one of"):
        load_mnist9k(MNIST_DIR, "val")
    monkeypatch.setenv("MNIST_DIR", str(MNIST_DIR))
    assert mnist_dir(download=False) == MNIST_DIR


def test_mnist_plain_files_equal_gz(tmp_path, mnist_test, mnist_gz_bytes):
    _write_plain(tmp_path, mnist_gz_bytes)
    x, y = load_mnist(tmp_path)
    assert torch.equal(x, mnist_test[0]) and torch.equal(y, mnist_test[1])


def test_mnist_flipped_byte_in_gz_fails_md5(tmp_path, mnist_gz_bytes):
    for base, data in mnist_gz_bytes.items():
        (tmp_path / f"{base}.gz").write_bytes(data)
    bad = bytearray(mnist_gz_bytes[T10K[0]])
    bad[len(bad) // 2] ^= 0xFF
    (tmp_path / f"{T10K[0]}.gz").write_bytes(bytes(bad))
    with pytest.raises(ValueError, match=rf"{T10K[0]}\.gz.*md5"):
        load_mnist(tmp_path)


def test_mnist_truncated_plain_file(tmp_path, mnist_gz_bytes):
    images = gzip.decompress(mnist_gz_bytes[T10K[0]])
    _write_plain(tmp_path, mnist_gz_bytes, images=images[:-100])
    with pytest.raises(ValueError, match=rf"{T10K[0]}.*truncated"):
        load_mnist(tmp_path)


def test_mnist_wrong_magic(tmp_path, mnist_gz_bytes):
    images = bytearray(gzip.decompress(mnist_gz_bytes[T10K[0]]))
    images[3] = 1  # claims a 1-D file
    _write_plain(tmp_path, mnist_gz_bytes, images=bytes(images))
    with pytest.raises(ValueError, match=rf"{T10K[0]}.*magic"):
        load_mnist(tmp_path)


def test_mnist_wrong_image_count(tmp_path, mnist_gz_bytes):
    images = gzip.decompress(mnist_gz_bytes[T10K[0]])
    # a self-consistent IDX file with one image too few
    short = struct.pack(">4I", 0x00000803, 9999, 28, 28) + images[16 : 16 + 9999 * 784]
    _write_plain(tmp_path, mnist_gz_bytes, images=short)
    with pytest.raises(ValueError, match=rf"{T10K[0]}.*10000"):
        load_mnist(tmp_path)


def test_mnist_missing_files_named(tmp_path, mnist_gz_bytes):
    with pytest.raises(FileNotFoundError) as info:
        load_mnist(tmp_path, download=False)
    message = str(info.value)
    assert all(base in message for base in T10K)
    assert str(tmp_path) in message and "download=True" in message
    # with only the labels present, only the images are reported missing
    (tmp_path / f"{T10K[1]}.gz").write_bytes(mnist_gz_bytes[T10K[1]])
    with pytest.raises(FileNotFoundError) as info:
        load_mnist(tmp_path)
    assert T10K[0] in str(info.value) and T10K[1] not in str(info.value)


def test_mnist_download_from_local_mirror(tmp_path, mnist_test, mnist_gz_bytes):
    # a file:// mirror exercises the download path without touching the network
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    for base, data in mnist_gz_bytes.items():
        (mirror / f"{base}.gz").write_bytes(data)
    root = tmp_path / "data" / "mnist"
    dead = (tmp_path / "nowhere").as_uri() + "/"
    x, y = load_mnist(root, download=True, mirrors=[dead, mirror.as_uri() + "/"])
    assert torch.equal(x, mnist_test[0]) and torch.equal(y, mnist_test[1])
    assert sorted(p.name for p in root.iterdir()) == sorted(f"{b}.gz" for b in T10K)


def test_mnist_download_rejects_corrupt_mirror(tmp_path, mnist_gz_bytes):
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    for base, data in mnist_gz_bytes.items():
        (mirror / f"{base}.gz").write_bytes(data[:-10])  # every file cut short
    root = tmp_path / "root"
    with pytest.raises(FileNotFoundError, match="md5"):
        load_mnist(root, download=True, mirrors=[mirror.as_uri() + "/"])
    assert list(root.iterdir()) == []  # no partial or temp files left behind


def test_mnist_bad_split():
    with pytest.raises(ValueError, match="split"):
        load_mnist(MNIST_DIR, split="val")


def test_split_mnist_test_is_a_seeded_partition(seed):
    images = torch.arange(100, dtype=torch.float32).view(100, 1, 1, 1)  # unique ids
    labels = torch.arange(100) % 10
    (x_tr, y_tr), (x_ho, y_ho) = split_mnist_test(images, labels, n_heldout=20, seed=seed + 1)
    assert x_tr.shape == (80, 1, 1, 1) and x_ho.shape == (20, 1, 1, 1)
    ids = torch.cat([x_tr, x_ho]).flatten().long()
    assert torch.equal(ids.sort().values, torch.arange(100))  # disjoint and complete
    assert torch.equal(torch.cat([y_tr, y_ho]), ids % 10)  # labels follow their images
    (x_tr2, _), _ = split_mnist_test(images, labels, n_heldout=20, seed=seed + 1)
    (x_tr3, _), _ = split_mnist_test(images, labels, n_heldout=20, seed=seed + 2)
    assert torch.equal(x_tr, x_tr2) and not torch.equal(x_tr, x_tr3)
    with pytest.raises(ValueError, match="n_heldout"):
        split_mnist_test(images, labels, n_heldout=100)


# -----------------------------------------------------------------------------
# photos


def test_photo_shapes_and_range():
    for name in PHOTOS:
        img = load_photo(name, size=32)
        assert img.dtype == torch.float32 and img.shape[1:] == (32, 32)
        assert img.shape[0] in (1, 3)
        assert img.min() >= -1 and img.max() <= 1
    assert load_photo("camera").shape == (1, 64, 64)
    assert load_photo("astronaut").shape == (3, 64, 64)


def test_photo_area_resize_is_block_mean():
    import skimage.data

    cam = skimage.data.camera().astype(np.float64) / 255  # (512, 512)
    blocks = cam.reshape(64, 8, 64, 8).mean(axis=(1, 3)) * 2 - 1
    assert np.allclose(load_photo("camera", size=64)[0].numpy(), blocks, atol=1e-5)


def test_photo_centre_crop():
    import skimage.data

    coffee = skimage.data.coffee()  # (400, 600, 3): the square is columns 100..499
    expected = coffee[:, 100:500].transpose(2, 0, 1) / 255 * 2 - 1
    assert np.allclose(load_photo("coffee", size=400).numpy(), expected, atol=1e-5)


def test_photo_grayscale_option():
    import skimage.data
    from skimage.color import rgb2gray

    gray = load_photo("astronaut", size=64, grayscale=True)
    assert gray.shape == (1, 64, 64)
    expected = rgb2gray(skimage.data.astronaut()).reshape(64, 8, 64, 8).mean(axis=(1, 3))
    assert np.allclose(gray[0].numpy(), expected * 2 - 1, atol=1e-4)
    rgb_camera = load_photo("camera", size=16, grayscale=False)
    assert rgb_camera.shape == (3, 16, 16)
    assert torch.equal(rgb_camera[0], rgb_camera[1]) and torch.equal(rgb_camera[1], rgb_camera[2])


def test_photo_validation():
    with pytest.raises(ValueError, match="astronaut"):
        load_photo("lena")
    with pytest.raises(ValueError, match="size"):
        load_photo("camera", size=0)
