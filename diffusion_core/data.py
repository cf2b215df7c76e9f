"""Datasets for the book, all returned as torch tensors in [-1, 1].

Four families, from smallest to largest:

* ``toy_2d``: 2-D point clouds (two moons, swiss roll, eight Gaussians, checkerboard),
  shape (n, 2), where a diffusion model can be watched point by point.
* ``load_digits``: scikit-learn's 8x8 handwritten digits, 17 grey levels, (N, 1, 8, 8).
* ``load_mnist``: MNIST read from the standard IDX files, 256 levels, (N, 1, 28, 28).
* ``load_photo``: one photograph from ``skimage.data``, (C, size, size).

Images are discrete: an integer level v in 0..L-1 maps to ``x = v / (L - 1) * 2 - 1``
(``to_unit_range``), and ``to_levels`` maps back. The bound in bits/dim needs L, so each
image source exports its number of levels (``DIGITS_LEVELS``, ``MNIST_LEVELS``).
"""

from __future__ import annotations

import gzip
import hashlib
import math
import os
import struct
import tempfile
import urllib.request
from collections.abc import Sequence
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ._checks import check_finite, check_tensor

# -----------------------------------------------------------------------------
# level <-> [-1, 1] transforms


def _check_num_levels(num_levels: int) -> None:
    if isinstance(num_levels, bool) or not isinstance(num_levels, int) or num_levels < 2:
        raise ValueError(f"num_levels must be an integer >= 2, got {num_levels!r}")


def to_unit_range(x_uint8: torch.Tensor | np.ndarray, num_levels: int) -> torch.Tensor:
    """Map integer levels v in 0..L-1 to ``v / (L - 1) * 2 - 1`` in [-1, 1], float32.

    Any shape; the output has the input's shape. For L = 17 or 256 the levels land on
    exactly representable float32 values for 0 and L-1 (-1 and 1).
    """
    _check_num_levels(num_levels)
    x = torch.as_tensor(x_uint8)
    if x.dtype.is_floating_point or x.dtype.is_complex or x.dtype == torch.bool:
        raise TypeError(f"x_uint8 must hold integers (levels 0..{num_levels - 1}), got {x.dtype}")
    if x.numel() > 0 and (int(x.min()) < 0 or int(x.max()) > num_levels - 1):
        raise ValueError(
            f"x_uint8 must hold levels in 0..{num_levels - 1}, "
            f"got min {int(x.min())} and max {int(x.max())}"
        )
    return x.to(torch.float32) / (num_levels - 1) * 2 - 1


def to_levels(x: torch.Tensor, num_levels: int) -> torch.Tensor:
    """Inverse of ``to_unit_range``: round ``(x + 1) / 2 * (L - 1)`` to the nearest level.

    Values outside [-1, 1] (e.g. model samples) are clamped to 0..L-1. Returns int64,
    same shape as ``x``.
    """
    _check_num_levels(num_levels)
    x = torch.as_tensor(x)
    if not x.dtype.is_floating_point:
        raise TypeError(f"x must be a floating-point tensor in [-1, 1], got {x.dtype}")
    check_finite(x, "x")
    levels = torch.round((x.double() + 1) / 2 * (num_levels - 1))
    return levels.clamp(0, num_levels - 1).to(torch.int64)


# -----------------------------------------------------------------------------
# toy 2-D data

TOY_DATASETS = ("two_moons", "swiss_roll", "eight_gaussians", "checkerboard")


def _two_moons(rng: np.random.Generator, n: int) -> np.ndarray:
    # two interleaved half circles of radius 1; raw extent x in [-1, 2], y in [-0.5, 1]
    theta = rng.uniform(0, math.pi, n)
    upper = rng.random(n) < 0.5
    x = np.where(upper, np.cos(theta), 1 - np.cos(theta))
    y = np.where(upper, np.sin(theta), 0.5 - np.sin(theta))
    points = np.stack([x - 0.5, y - 0.25], axis=1)  # centre the raw extent on 0
    return 0.8 * points + rng.normal(0, 0.05, (n, 2))


def _swiss_roll(rng: np.random.Generator, n: int) -> np.ndarray:
    # the classic spiral r = t for t in [1.5 pi, 4.5 pi], rescaled to radius <= 1.25
    t = rng.uniform(1.5 * math.pi, 4.5 * math.pi, n)
    points = np.stack([t * np.cos(t), t * np.sin(t)], axis=1) * (1.25 / (4.5 * math.pi))
    return points + rng.normal(0, 0.05, (n, 2))


def _eight_gaussians(rng: np.random.Generator, n: int) -> np.ndarray:
    # equal-weight mixture, centres on the unit circle at angles k * pi/4, std 0.1
    angles = rng.integers(0, 8, n) * (math.pi / 4)
    centres = np.stack([np.cos(angles), np.sin(angles)], axis=1)
    return centres + rng.normal(0, 0.1, (n, 2))


def _checkerboard(rng: np.random.Generator, n: int) -> np.ndarray:
    # 4x4 board of 0.75-wide cells on [-1.5, 1.5]^2; uniform on the 8 cells (i, j) with
    # i + j even, where i = floor((x + 1.5) / 0.75) and j likewise for y
    i = rng.integers(0, 4, n)
    j = 2 * rng.integers(0, 2, n) + (i % 2)  # same parity as i
    corner = np.stack([i, j], axis=1) * 0.75 - 1.5
    return corner + rng.uniform(0, 0.75, (n, 2))


_TOY_SAMPLERS = {
    "two_moons": _two_moons,
    "swiss_roll": _swiss_roll,
    "eight_gaussians": _eight_gaussians,
    "checkerboard": _checkerboard,
}


def toy_2d(name: str, n: int, seed: int = 0) -> torch.Tensor:
    """Sample ``n`` points of a 2-D toy distribution, returned as (n, 2) float32.

    Scaling (so the same network and schedule suit all four): each coordinate has mean
    within 0.2 of 0 and standard deviation between about 0.4 and 0.9, and the points lie
    in [-1.5, 1.5]^2.
    ``checkerboard`` is uniform on 8 of the 16 cells of a 4x4 board covering exactly
    [-1.5, 1.5]^2 (cells (i, j) with i + j even, counting from the lower left). The other
    three have a noise-free shape inside [-1.25, 1.25]^2 (two moons scaled by 0.8, swiss
    roll of radius <= 1.25, eight centres on the unit circle) plus Gaussian noise of std
    0.05 (moons, roll) or 0.1 (Gaussians), so leaving [-1.5, 1.5]^2 needs a 5-sigma draw.

    Sampling uses ``numpy.random.default_rng(seed)``: the same seed gives identical data.
    """
    if name not in _TOY_SAMPLERS:
        raise ValueError(f"name must be one of {TOY_DATASETS}, got {name!r}")
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"n must be an integer >= 1, got {n!r}")
    rng = np.random.default_rng(seed)
    points = _TOY_SAMPLERS[name](rng, n)  # (n, 2) float64
    return torch.from_numpy(points.astype(np.float32))


# -----------------------------------------------------------------------------
# scikit-learn digits (8x8, 17 levels)

DIGITS_LEVELS = 17  # sklearn's digits hold integer counts 0..16
DIGITS_SPLITS = ("train", "test", "all")
_DIGITS_TEST_PER_CLASS = 30  # 10 classes x 30 = 300 test images, 1497 train
_DIGITS_SPLIT_SEED = 0


@lru_cache(maxsize=1)
def _digits_raw() -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits as sklearn_load_digits

    bunch = sklearn_load_digits()
    levels = bunch.images.astype(np.int64)  # (1797, 8, 8), exact: values are whole numbers
    levels.flags.writeable = False
    labels = bunch.target.astype(np.int64)
    labels.flags.writeable = False
    return levels, labels


def digits_split_indices(split: str) -> np.ndarray:
    """Indices into the full 1797-image digits set for ``split``, sorted ascending.

    The split is fixed and stratified: ``test`` holds 30 images of each class (300),
    chosen once per class with ``numpy.random.default_rng(0)``; ``train`` the other 1497;
    ``all`` is 0..1796.
    """
    if split not in DIGITS_SPLITS:
        raise ValueError(f"split must be one of {DIGITS_SPLITS}, got {split!r}")
    _, labels = _digits_raw()
    if split == "all":
        return np.arange(len(labels))
    rng = np.random.default_rng(_DIGITS_SPLIT_SEED)
    test = [
        rng.permutation(np.flatnonzero(labels == c))[:_DIGITS_TEST_PER_CLASS] for c in range(10)
    ]
    is_test = np.zeros(len(labels), dtype=bool)
    is_test[np.concatenate(test)] = True
    return np.flatnonzero(is_test if split == "test" else ~is_test)


def load_digits(split: str = "train") -> tuple[torch.Tensor, torch.Tensor]:
    """scikit-learn's handwritten digits as ((N, 1, 8, 8) float32 in [-1, 1], (N,) int64).

    Pixel counts v in 0..16 map to ``v / 16 * 2 - 1``, exactly on the 17-level grid.
    Splits (fixed, stratified, see ``digits_split_indices``): ``train`` 1497, ``test`` 300
    (30 per class), ``all`` 1797.
    """
    idx = digits_split_indices(split)
    levels, labels = _digits_raw()
    images = to_unit_range(torch.from_numpy(levels[idx]), DIGITS_LEVELS)  # (N, 8, 8)
    return images.unsqueeze(1), torch.from_numpy(labels[idx])  # (N, 1, 8, 8), (N,)


# -----------------------------------------------------------------------------
# MNIST from IDX files (28x28, 256 levels)

MNIST_LEVELS = 256
MNIST_SPLITS = ("train", "test")
MNIST_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
MNIST_COUNTS = {"train": 60000, "test": 10000}
MNIST_MD5 = {  # published checksums of the .gz files
    "train-images-idx3-ubyte.gz": "f68b3c2dcbeaaa9fbdd348bbdeb94873",
    "train-labels-idx1-ubyte.gz": "d53e105ee54ea40749a09fcbcd1e9432",
    "t10k-images-idx3-ubyte.gz": "9fb629c4189551a2d022fa330f9573f3",
    "t10k-labels-idx1-ubyte.gz": "ec29112dd5afa0611ce80d1b7f02629c",
}
MNIST_MIRRORS = (
    "https://ossci-datasets.s3.amazonaws.com/mnist/",
    "https://storage.googleapis.com/cvdf-datasets/mnist/",
)


def _parse_idx(raw: bytes, path: Path, ndim: int) -> np.ndarray:
    """Decode an IDX file of unsigned bytes: magic 0x00 0x00 0x08 ndim, ndim big-endian
    uint32 sizes, then the data in C order."""
    if len(raw) < 4 or raw[:3] != b"\x00\x00\x08" or raw[3] != ndim:
        raise ValueError(
            f"{path}: bad IDX magic number 0x{raw[:4].hex()}, expected 0x000008{ndim:02x} "
            f"(unsigned bytes, {ndim} dims); the file is corrupt or not this MNIST file"
        )
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise ValueError(f"{path}: truncated IDX header ({len(raw)} bytes)")
    dims = struct.unpack(f">{ndim}I", raw[4:header])
    expected = header + math.prod(dims)
    if len(raw) != expected:
        raise ValueError(
            f"{path}: header says shape {dims}, i.e. {expected} bytes, but the data holds "
            f"{len(raw)} bytes; the file is truncated or corrupt, download it again"
        )
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(dims)


def _read_idx(path: Path, ndim: int) -> np.ndarray:
    raw = path.read_bytes()
    if path.suffix == ".gz":
        digest = hashlib.md5(raw).hexdigest()
        if digest != MNIST_MD5[path.name]:
            raise ValueError(
                f"{path}: md5 {digest} does not match the published {MNIST_MD5[path.name]}; "
                "the file is corrupt or incomplete, delete it and download it again"
            )
        raw = gzip.decompress(raw)
    return _parse_idx(raw, path, ndim)


def _find_idx(root: Path, base: str) -> Path | None:
    """Prefer the .gz file (it can be checked against the published md5)."""
    for path in (root / f"{base}.gz", root / base):
        if path.is_file():
            return path
    return None


def _fetch(url: str, dest: Path, md5: str) -> None:
    """Download ``url`` to ``dest`` atomically: verify md5, write a temp file, rename."""
    with urllib.request.urlopen(url, timeout=60) as response:
        data = response.read()
    digest = hashlib.md5(data).hexdigest()
    if digest != md5:
        raise ValueError(f"md5 {digest} does not match the published {md5}")
    fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".part")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, dest)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _download_mnist(root: Path, bases: Sequence[str], mirrors: Sequence[str]) -> list[str]:
    """Try each mirror for each missing file; return the errors of files no mirror gave."""
    root.mkdir(parents=True, exist_ok=True)
    errors = []
    for base in bases:
        name = f"{base}.gz"
        tried = []
        for mirror in mirrors:
            url = mirror.rstrip("/") + "/" + name
            try:
                _fetch(url, root / name, MNIST_MD5[name])
                break
            except (OSError, ValueError) as e:  # URLError and timeouts are OSErrors
                tried.append(f"{url}: {e}")
        else:
            errors.extend(tried)
    return errors


def load_mnist(
    root: str | os.PathLike,
    split: str = "test",
    download: bool = False,
    mirrors: Sequence[str] = MNIST_MIRRORS,
) -> tuple[torch.Tensor, torch.Tensor]:
    """MNIST from the IDX files in directory ``root``: ((N, 1, 28, 28) float32, (N,) int64).

    Reads ``train-images-idx3-ubyte`` / ``train-labels-idx1-ubyte`` (N = 60000) or
    ``t10k-images-idx3-ubyte`` / ``t10k-labels-idx1-ubyte`` (``split="test"``, N = 10000),
    each either plain or ``.gz``. ``.gz`` files are checked against the published md5;
    every file's IDX header, data length and count are checked. Pixels v in 0..255 map
    to ``v / 255 * 2 - 1``.

    Missing files raise FileNotFoundError, unless ``download=True``: then they are fetched
    (``.gz``, md5-verified, written atomically) into ``root`` from the first ``mirrors``
    entry that works. Corrupt files raise ValueError naming the file.
    """
    if split not in MNIST_SPLITS:
        raise ValueError(f"split must be one of {MNIST_SPLITS}, got {split!r}")
    root = Path(root)
    bases = MNIST_FILES[split]
    missing = [base for base in bases if _find_idx(root, base) is None]
    errors: list[str] = []
    if missing and download:
        errors = _download_mnist(root, missing, mirrors)
        missing = [base for base in bases if _find_idx(root, base) is None]
    if missing:
        how = (
            f"download {', '.join(f'{b}.gz' for b in missing)} from {MNIST_MIRRORS[0]} "
            f"into {root}, or call load_mnist(root, split={split!r}, download=True)"
        )
        failed = ("; download failed: " + " | ".join(errors)) if errors else ""
        raise FileNotFoundError(
            f"MNIST {split} files {missing} (plain or .gz) not found in {root.resolve()}; "
            f"to fix: {how}{failed}"
        )

    images_path, labels_path = (_find_idx(root, base) for base in bases)
    images = _read_idx(images_path, ndim=3)  # (N, 28, 28) uint8
    labels = _read_idx(labels_path, ndim=1)  # (N,) uint8
    n = MNIST_COUNTS[split]
    if images.shape != (n, 28, 28):
        raise ValueError(f"{images_path}: expected {n} images of 28x28, got {images.shape}")
    if labels.shape != (n,):
        raise ValueError(f"{labels_path}: expected {n} labels, got {labels.shape[0]}")
    if labels.max() > 9:
        raise ValueError(f"{labels_path}: labels must be digits 0..9, got max {labels.max()}")

    x = to_unit_range(torch.from_numpy(images.copy()), MNIST_LEVELS).unsqueeze(1)
    return x, torch.from_numpy(labels.astype(np.int64))  # (N, 1, 28, 28), (N,)


# The test split ships with a checkout of the book (data/mnist, 1.6 MB); elsewhere it is fetched.
MNIST_CHECKOUT_DIR = Path(__file__).resolve().parents[1] / "data" / "mnist"
MNIST_CACHE_DIR = Path.home() / ".cache" / "diffusion_core" / "mnist"


def mnist_dir(download: bool = True) -> Path:
    """A folder holding MNIST's test split: ``$MNIST_DIR`` if set, else the checkout's
    ``data/mnist``, else ``~/.cache/diffusion_core/mnist``, where the files are downloaded
    (md5-checked) if missing and ``download`` is True."""
    if os.environ.get("MNIST_DIR"):
        return Path(os.environ["MNIST_DIR"])
    for folder in (MNIST_CHECKOUT_DIR, MNIST_CACHE_DIR):
        if all(_find_idx(folder, base) for base in MNIST_FILES["test"]):
            return folder
    if download:
        load_mnist(MNIST_CACHE_DIR, "test", download=True)
    return MNIST_CACHE_DIR


MNIST9K_TRAIN = 9000  # of the 10,000 test images: the first 9,000 train, the last 1,000 are held out


def load_mnist9k(root: str | os.PathLike, split: str = "train") -> tuple[torch.Tensor, torch.Tensor]:
    """MNIST's 10,000-image test split, cut in two for machines without the training split.

    ``split="train"``: its first 9,000 images; ``"test"``: its last 1,000 (held out).
    Returns ((N, 1, 28, 28) float32 in [-1, 1], (N,) int64 labels), read by ``load_mnist``.
    The cut is fixed (no shuffle): the test file's order is the same everywhere.
    """
    if split not in MNIST_SPLITS:
        raise ValueError(f"split must be one of {MNIST_SPLITS}, got {split!r}")
    images, labels = load_mnist(root, "test")
    part = slice(None, MNIST9K_TRAIN) if split == "train" else slice(MNIST9K_TRAIN, None)
    return images[part], labels[part]


def split_mnist_test(
    images: torch.Tensor, labels: torch.Tensor, n_heldout: int = 2000, seed: int = 0
) -> tuple[tuple[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]:
    """Split MNIST's 10k test set into a training part and a held-out part.

    The book ships only the test split (the 60k training files are absent offline), so
    chapters train on ``N - n_heldout`` test images and evaluate on the other
    ``n_heldout``; the split is a seeded random permutation, the same for the same seed.
    Returns ``(train_images, train_labels), (heldout_images, heldout_labels)``.
    """
    check_tensor(images, "images")
    check_tensor(labels, "labels")
    if images.ndim != 4 or labels.shape != (images.shape[0],):
        raise ValueError(
            f"images must be (N, C, H, W) and labels (N,), "
            f"got {tuple(images.shape)} and {tuple(labels.shape)}"
        )
    n = images.shape[0]
    if isinstance(n_heldout, bool) or not isinstance(n_heldout, int) or not 0 < n_heldout < n:
        raise ValueError(f"n_heldout must be an integer in 1..{n - 1}, got {n_heldout!r}")
    perm = torch.from_numpy(np.random.default_rng(seed).permutation(n))
    train, heldout = perm[n_heldout:], perm[:n_heldout]
    return (images[train], labels[train]), (images[heldout], labels[heldout])


# -----------------------------------------------------------------------------
# photographs from skimage.data

PHOTOS = ("astronaut", "camera", "cat", "chelsea", "coffee", "coins", "moon", "rocket")


def load_photo(name: str = "camera", size: int = 64, grayscale: bool | None = None) -> torch.Tensor:
    """One ``skimage.data`` photograph as a (C, size, size) float32 tensor in [-1, 1].

    The image is centre-cropped to a square, then resized with area averaging (bilinear
    when enlarging). ``grayscale=None`` keeps the native channels (C = 1 for ``camera``,
    3 for ``astronaut``); ``True`` gives C = 1 (luma 0.2125 R + 0.7154 G + 0.0721 B, as
    ``skimage.color.rgb2gray``); ``False`` gives C = 3.
    """
    if name not in PHOTOS:
        raise ValueError(f"name must be one of {PHOTOS}, got {name!r}")
    if isinstance(size, bool) or not isinstance(size, int) or size < 1:
        raise ValueError(f"size must be an integer >= 1, got {size!r}")
    if grayscale not in (None, True, False):
        raise ValueError(f"grayscale must be None, True or False, got {grayscale!r}")
    import skimage.data

    pixels = np.asarray(getattr(skimage.data, name)())  # (H, W) or (H, W, 3) uint8
    img = torch.from_numpy(pixels).to(torch.float32) / 255
    img = img.unsqueeze(0) if img.ndim == 2 else img.permute(2, 0, 1)  # (C, H, W)

    _, h, w = img.shape
    side = min(h, w)
    top, left = (h - side) // 2, (w - side) // 2
    img = img[:, top : top + side, left : left + side]  # (C, side, side)

    if grayscale and img.shape[0] == 3:
        luma = torch.tensor([0.2125, 0.7154, 0.0721]).view(3, 1, 1)
        img = (img * luma).sum(0, keepdim=True)  # (1, side, side)
    elif grayscale is False and img.shape[0] == 1:
        img = img.expand(3, -1, -1)

    img = img.unsqueeze(0)  # (1, C, side, side)
    if size <= side:
        img = F.interpolate(img, size=(size, size), mode="area")
    else:
        img = F.interpolate(img, size=(size, size), mode="bilinear", align_corners=False)
    img = img[0]  # (C, size, size)
    return (img.clamp(0, 1) * 2 - 1).contiguous()
