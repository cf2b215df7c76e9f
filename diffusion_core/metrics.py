"""Quality yardsticks for generated images: a Fréchet distance in the feature space of a
small digit classifier, and statistics of that classifier's confidence.

FID (Heusel et al. 2017) fits a Gaussian to the features of each image set and measures

    d^2 = ||mu_a - mu_b||^2 + Tr(S_a + S_b - 2 (S_a S_b)^{1/2})

Inception features make no sense for 8x8 grey digits, so the features here are the 64-d
penultimate layer of a small CNN trained in seconds on the digits' training split. Each
feature vector is rescaled to length sqrt(D) (see `features`). The numbers are comparable
only between runs that use the same classifier (same seed).

Read top to bottom: the Fréchet distance, the classifier, training it, the yardsticks,
and the bootstrap that gives each its standard error.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import lru_cache

import torch
import torch.nn.functional as F
from torch import nn

from ._checks import check_float, check_tensor
from .data import load_digits

# -----------------------------------------------------------------------------
# Fréchet distance between Gaussians fitted to two feature sets


def _check_cov(cov: torch.Tensor, name: str, dim: int) -> None:
    if cov.shape != (dim, dim):
        raise ValueError(f"{name} must have shape (D, D) = ({dim}, {dim}), got {tuple(cov.shape)}")


def _psd_sqrt(cov: torch.Tensor) -> torch.Tensor:
    """Symmetric square root of a symmetric positive semi-definite matrix (D, D), by its
    eigen-decomposition; eigenvalues that round-off made slightly negative count as 0."""
    w, v = torch.linalg.eigh(cov)
    return (v * w.clamp(min=0).sqrt()) @ v.T


def gaussian_frechet_distance(mu_a: torch.Tensor, cov_a: torch.Tensor, mu_b: torch.Tensor,
                              cov_b: torch.Tensor) -> float:
    """Squared Fréchet (2-Wasserstein) distance between N(mu_a, cov_a) and N(mu_b, cov_b).

    d^2 = ||mu_a - mu_b||^2 + Tr(cov_a) + Tr(cov_b) - 2 Tr((cov_a cov_b)^{1/2}).
    cov_a cov_b is not symmetric, but it has the eigenvalues of the symmetric PSD matrix
    cov_a^{1/2} cov_b cov_a^{1/2}, so the trace of its square root is the sum of the square
    roots of those: stable for singular covariances, no complex round-off. Float64 inside.

    mu_*: (D,), cov_*: (D, D) symmetric positive semi-definite. Returns a float >= 0.
    """
    for value, name in ((mu_a, "mu_a"), (cov_a, "cov_a"), (mu_b, "mu_b"), (cov_b, "cov_b")):
        check_float(value, name)
    if mu_a.dim() != 1 or mu_b.shape != mu_a.shape:
        raise ValueError(f"mu_a and mu_b must both have shape (D,), got {tuple(mu_a.shape)} "
                         f"and {tuple(mu_b.shape)}")
    dim = mu_a.shape[0]
    _check_cov(cov_a, "cov_a", dim)
    _check_cov(cov_b, "cov_b", dim)
    mu_a, mu_b, cov_a, cov_b = (v.double() for v in (mu_a, mu_b, cov_a, cov_b))
    root_a = _psd_sqrt(cov_a)
    middle = root_a @ cov_b @ root_a
    middle = (middle + middle.T) / 2  # symmetric up to round-off; make it exactly so
    tr_sqrt = torch.linalg.eigvalsh(middle).clamp(min=0).sqrt().sum()
    d2 = (mu_a - mu_b).pow(2).sum() + cov_a.trace() + cov_b.trace() - 2 * tr_sqrt
    return max(float(d2), 0.0)


def feature_stats(feats: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean (D,) and unbiased covariance (D, D), in float64, of features (N, D)."""
    feats = feats.double()
    return feats.mean(dim=0), torch.cov(feats.T)


def frechet_distance(feats_a: torch.Tensor, feats_b: torch.Tensor) -> float:
    """Fréchet distance between Gaussians fitted to two feature sets (N_a, D) and (N_b, D).

    This is FID when the features come from a classifier's penultimate layer.
    """
    for feats, name in ((feats_a, "feats_a"), (feats_b, "feats_b")):
        check_float(feats, name)
        if feats.dim() != 2 or feats.shape[0] < 2:
            raise ValueError(f"{name} must have shape (N, D) with N >= 2, got {tuple(feats.shape)}")
    if feats_a.shape[1] != feats_b.shape[1]:
        raise ValueError(f"feats_a and feats_b must have the same feature size D, "
                         f"got {feats_a.shape[1]} and {feats_b.shape[1]}")
    return gaussian_frechet_distance(*feature_stats(feats_a), *feature_stats(feats_b))


# -----------------------------------------------------------------------------
# The classifier


@dataclass
class ClassifierConfig:
    image_size: int = 8  # height = width
    in_channels: int = 1
    width: int = 32  # channels of the first convs; the third has 2 * width
    feature_dim: int = 64  # the penultimate layer, whose activations feed the Fréchet distance
    num_classes: int = 10

    def __post_init__(self) -> None:
        for name in ("image_size", "in_channels", "width", "feature_dim", "num_classes"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if self.image_size < 4:
            raise ValueError(f"image_size must be >= 4 (two 2x poolings), got {self.image_size}")


class DigitClassifier(nn.Module):
    """A small CNN: (B, C, H, W) images in [-1, 1] -> (B, num_classes) logits.

    Three 3x3 convs with two 2x max-pools, an average pool to 2x2 (so any image size
    works), then Linear -> ReLU to `feature_dim` features and a Linear head.
    """

    def __init__(self, config: ClassifierConfig):
        super().__init__()
        self.config = config
        w = config.width
        self.body = nn.Sequential(
            nn.Conv2d(config.in_channels, w, 3, padding=1), nn.ReLU(),
            nn.Conv2d(w, w, 3, padding=1), nn.ReLU(),
            nn.MaxPool2d(2),  # 8 -> 4, 28 -> 14
            nn.Conv2d(w, 2 * w, 3, padding=1), nn.ReLU(),
            nn.MaxPool2d(2),  # 4 -> 2, 14 -> 7
            nn.AdaptiveAvgPool2d(2),
            nn.Flatten(),  # (B, 2w * 4)
            nn.Linear(2 * w * 4, config.feature_dim), nn.ReLU(),
        )
        self.head = nn.Linear(config.feature_dim, config.num_classes)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Penultimate activations (B, feature_dim)."""
        return self.body(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(x))  # (B, num_classes)


def _check_images(x: object, config: ClassifierConfig, name: str) -> torch.Tensor:
    x = check_float(x, name)
    want = (config.in_channels, config.image_size, config.image_size)
    if x.dim() != 4 or tuple(x.shape[1:]) != want or x.shape[0] < 1:
        raise ValueError(f"{name} must have shape (N, {want[0]}, {want[1]}, {want[2]}) to suit the "
                         f"classifier, got {tuple(x.shape)}")
    return x


# -----------------------------------------------------------------------------
# Training


def _random_shift(x: torch.Tensor, gen: torch.Generator, max_shift: int = 1) -> torch.Tensor:
    """Translate each image by up to max_shift pixels, filling with the background (-1)."""
    B, _, H, W = x.shape
    padded = F.pad(x, (max_shift,) * 4, value=-1.0)  # (B, C, H + 2s, W + 2s)
    windows = padded.unfold(2, H, 1).unfold(3, W, 1)  # (B, C, 2s + 1, 2s + 1, H, W), a view
    dy, dx = torch.randint(0, 2 * max_shift + 1, (2, B), generator=gen)
    return windows[torch.arange(B), :, dy, dx]  # (B, C, H, W)


@contextmanager
def _one_thread() -> Iterator[None]:
    """Run torch on one thread, then restore the caller's count. A network this small trains
    faster on one thread (a second one only adds a synchronisation per op, which is costly
    on a busy machine), and the weights then do not depend on the caller's thread count."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _outliers(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Images that are not digits, shaped like the batch x (B, C, H, W): half are x with
    each image's pixels shuffled (the same ink, no shape), half smooth noise (uniform
    noise at a quarter of the resolution, upsampled)."""
    B, C, H, W = x.shape
    flat = x.reshape(B, -1)
    perm = torch.argsort(torch.rand(flat.shape, generator=gen), dim=1)
    shuffled = flat.gather(1, perm).reshape(x.shape)
    coarse = torch.rand(B, C, max(H // 4, 1), max(W // 4, 1), generator=gen) * 2 - 1
    smooth = F.interpolate(coarse, size=(H, W), mode="bilinear", align_corners=False)
    return torch.cat([shuffled[: B // 2], smooth[B // 2:]])


def train_classifier(images: torch.Tensor, labels: torch.Tensor, config: ClassifierConfig,
                     seed: int = 0, epochs: int = 20, batch_size: int = 64,
                     lr: float = 3e-3, outlier_exposure: bool = False) -> DigitClassifier:
    """Train a DigitClassifier with AdamW, a one-cycle learning rate and 1-pixel random
    shifts, on one thread. Reproducible for a seed (the global RNG is left as it was).

    `outlier_exposure` (Hendrycks et al. 2019) adds, for every batch, as many non-digits
    (`_outliers`) whose target is the uniform distribution over the classes: a classifier
    that has seen what a digit is not gives noise and blobs low confidence.

    images: (N, C, H, W) in [-1, 1]; labels: (N,) class indices. Returns it frozen, in eval mode.
    For MNIST: ``(x, y), _ = split_mnist_test(*load_mnist(root))`` then
    ``train_classifier(x, y, ClassifierConfig(image_size=28), epochs=5)``.
    """
    images = _check_images(images, config, "images")
    labels = check_tensor(labels, "labels")
    if labels.shape != (images.shape[0],):
        raise ValueError(f"labels must have shape (N,) = ({images.shape[0]},), got {tuple(labels.shape)}")
    if isinstance(epochs, bool) or not isinstance(epochs, int) or epochs < 1:
        raise ValueError(f"epochs must be a positive integer, got {epochs!r}")
    gen = torch.Generator().manual_seed(seed)
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        model = DigitClassifier(config)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(
        opt, max_lr=lr, total_steps=epochs * math.ceil(len(images) / batch_size))
    model.train()
    with _one_thread():
        for _ in range(epochs):
            for idx in torch.randperm(len(images), generator=gen).split(batch_size):
                x = _random_shift(images[idx], gen)
                loss = F.cross_entropy(model(x), labels[idx])
                if outlier_exposure:  # cross-entropy to the uniform distribution
                    loss = loss - 0.5 * model(_outliers(x, gen)).log_softmax(dim=1).mean()
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                sched.step()
    return model.eval().requires_grad_(False)


@lru_cache(maxsize=4)
def train_digit_classifier(seed: int = 0) -> DigitClassifier:
    """The classifier for 8x8 digits, trained on ``load_digits("train")`` (a few seconds on
    a CPU) and cached in memory per seed. Held-out accuracy on ``load_digits("test")``:
    ``accuracy(model, *load_digits("test"))``, about 0.98."""
    x, y = load_digits("train")
    return train_classifier(x, y, ClassifierConfig(), seed=seed)


# -----------------------------------------------------------------------------
# Yardsticks


@torch.no_grad()
def features(model: DigitClassifier, x: torch.Tensor, batch_size: int = 1000) -> torch.Tensor:
    """The yardstick's features (N, D) of images x (N, C, H, W) in [-1, 1]: the classifier's
    penultimate activations, each vector rescaled to length sqrt(D) (coordinates of RMS 1).

    Why rescale: a ReLU network's activations shrink with the input's contrast, so without
    it a blurred set (faint strokes) lands as far from the data as noise does; with it,
    the distance measures which features fire, not how loudly.
    """
    x = _check_images(x, model.config, "x")
    model.eval()
    feats = torch.cat([model.features(chunk) for chunk in x.split(batch_size)])  # (N, D)
    return F.normalize(feats, dim=1) * math.sqrt(feats.shape[1])


@torch.no_grad()
def class_probs(model: DigitClassifier, x: torch.Tensor, batch_size: int = 1000) -> torch.Tensor:
    """Softmax class probabilities (N, num_classes) of images x (N, C, H, W)."""
    x = _check_images(x, model.config, "x")
    model.eval()
    return torch.cat([model(chunk).softmax(dim=1) for chunk in x.split(batch_size)])


def accuracy(model: DigitClassifier, x: torch.Tensor, labels: torch.Tensor) -> float:
    """Fraction of images x (N, C, H, W) whose predicted class equals labels (N,)."""
    probs = class_probs(model, x)
    if check_tensor(labels, "labels").shape != (x.shape[0],):
        raise ValueError(f"labels must have shape (N,) = ({x.shape[0]},), got {tuple(labels.shape)}")
    return float((probs.argmax(dim=1) == labels).double().mean())


def fid(x_a: torch.Tensor, x_b: torch.Tensor, classifier: DigitClassifier | None = None) -> float:
    """Fréchet distance between two image sets (N_a, C, H, W) and (N_b, C, H, W) in the
    classifier's feature space; the cached digit classifier (seed 0) when None."""
    if classifier is None:
        classifier = train_digit_classifier()
    return frechet_distance(features(classifier, x_a), features(classifier, x_b))


def confidence_stats(probs: torch.Tensor, threshold: float = 0.9) -> dict:
    """How sure the classifier is about a set of images, and how the classes spread.

    probs: (N, K) class probabilities (rows sum to 1). Returns
      frac_confident  fraction of images whose top probability is >= threshold
      class_shares    list of K fractions: how often each class is the top one
      class_entropy   entropy (nats) of class_shares; log K = 2.303 for K = 10 when
                      every class is equally common, 0 when one class takes all
    """
    check_float(probs, "probs")
    if probs.dim() != 2 or probs.shape[0] < 1:
        raise ValueError(f"probs must have shape (N, K) with N >= 1, got {tuple(probs.shape)}")
    if float(probs.min()) < 0 or not torch.allclose(probs.sum(dim=1), torch.ones(()), atol=1e-4):
        raise ValueError("probs must hold probabilities: non-negative rows that sum to 1")
    if not 0 < threshold <= 1:
        raise ValueError(f"threshold must be in (0, 1], got {threshold!r}")
    top, cls = probs.max(dim=1)
    shares = torch.bincount(cls, minlength=probs.shape[1]).double() / probs.shape[0]
    nonzero = shares[shares > 0]
    return {
        "frac_confident": float((top >= threshold).double().mean()),
        "class_shares": shares.tolist(),
        "class_entropy": float(-(nonzero * nonzero.log()).sum()),
    }


def sample_yardsticks(x: torch.Tensor, reference: torch.Tensor,
                      classifier: DigitClassifier | None = None) -> dict:
    """Every yardstick of one image set x (N, C, H, W) against real images `reference`:
      frechet        Fréchet distance to `reference` in the classifier's feature space
      confident      share of images whose top class probability is >= 0.9
      class_entropy  entropy (nats) of the class shares (log K when all classes are equal)
      pixel_std      standard deviation of each pixel across the set, averaged over pixels
    The cached digit classifier (seed 0) when `classifier` is None."""
    if classifier is None:
        classifier = train_digit_classifier()
    stats = confidence_stats(class_probs(classifier, x))
    return {"frechet": fid(x, reference, classifier), "confident": stats["frac_confident"],
            "class_entropy": stats["class_entropy"], "pixel_std": x.std(dim=0).mean().item()}


# -----------------------------------------------------------------------------
# Standard errors


def standard_error(x: torch.Tensor) -> float:
    """Standard error of the mean of x (N,): the sample standard deviation (N - 1 in its
    denominator) over sqrt(N), in float64. For a paired comparison, pass the per-item
    differences (same items, same noise): their spread leaves out what both arms share.
    """
    x = check_float(x, "x")
    if x.dim() != 1 or x.shape[0] < 2:
        raise ValueError(f"x must have shape (N,) with N >= 2, got {tuple(x.shape)}")
    return x.double().std().item() / math.sqrt(x.shape[0])


def share_standard_error(share: float, n: int) -> float:
    """Binomial standard error sqrt(p (1 - p) / n) of a share p measured on n independent items."""
    if not 0.0 <= float(share) <= 1.0:
        raise ValueError(f"share must lie in [0, 1], got {share!r}")
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"n must be an integer >= 1, got {n!r}")
    return math.sqrt(share * (1 - share) / n)


def paired_bootstrap(statistic: Callable[..., float], *xs: torch.Tensor, n_boot: int = 200,
                     generator: torch.Generator | None = None) -> torch.Tensor:
    """Bootstrap replicates (n_boot,) of `statistic(*xs)`: each one evaluates it on rows
    resampled with replacement, with the same row indices for every x (each (N, ...)).

    Their standard deviation estimates the statistic's standard error (Efron 1979). The
    shared indices keep paired sets paired: for samples of two samplers run from the same
    starting noise, `statistic = lambda a, b: fd(a) - fd(b)` gets the (small) standard
    error of the paired difference, not that of two independent sets.
    """
    if not xs:
        raise ValueError("xs must hold at least one tensor")
    n = check_tensor(xs[0], "xs[0]").shape[0]
    for i, x in enumerate(xs):
        if check_tensor(x, f"xs[{i}]").dim() == 0 or x.shape[0] != n or n < 2:
            raise ValueError(f"xs[{i}] must have shape (N, ...) with the same N >= 2 as xs[0] "
                             f"({n}), got {tuple(x.shape)}")
    if isinstance(n_boot, bool) or not isinstance(n_boot, int) or n_boot < 2:
        raise ValueError(f"n_boot must be an integer >= 2, got {n_boot!r}")
    index = torch.randint(0, n, (n_boot, n), generator=generator)  # (n_boot, N)
    return torch.tensor([float(statistic(*(x[idx] for x in xs))) for idx in index],
                        dtype=torch.float64)
