"""Yardsticks for the digits models: a sample-quality check and two likelihood baselines.

- `evaluate_digit_samples`: does a classifier trained on real digits recognise
  the samples, confidently, and in roughly equal numbers per class?
- `CategoricalBaseline`: every pixel an independent categorical over the 17
  levels, with add-α (Laplace) smoothing.
- `GMMBaseline`: a diagonal Gaussian mixture fitted to the pixel values,
  discretised exactly onto the 17-level grid (edge bins open), so that it is a
  proper distribution over images and its bits/dim compare with the diffusion
  model's bound. The number of components is chosen by BIC on the training set.

All likelihoods are in bits per dimension (pixel) on the same data in [-1, 1].
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import torch

from .data import DIGITS_LEVELS, load_digits, to_levels, to_unit_range
from .distributions import discretized_gaussian_log_likelihood

LN2 = math.log(2.0)


def _flat_levels(x: torch.Tensor, num_levels: int) -> torch.Tensor:
    """Images (N, ...) in [-1, 1] -> integer levels (N, D)."""
    if not isinstance(x, torch.Tensor) or not x.is_floating_point() or x.dim() < 2:
        raise TypeError("images must be a floating-point tensor of shape (N, ...) in [-1, 1]")
    return to_levels(x, num_levels).reshape(x.shape[0], -1)  # (N, D)


# -----------------------------------------------------------------------------
# Sample quality: a classifier trained on real digits


@lru_cache(maxsize=1)
def digit_classifier():
    """An RBF support vector machine on the raw pixels of the digits train split.

    Its Platt-scaled probabilities give no confidence to noise (uniform noise:
    0% of images reach 0.9) and 87% of the held-out digits reach 0.9.
    """
    from sklearn.svm import SVC

    x, y = load_digits("train")
    with warnings.catch_warnings():  # sklearn >= 1.9 deprecates `probability`; it still works
        warnings.simplefilter("ignore", FutureWarning)
        clf = SVC(probability=True, random_state=0)
        clf.fit(x.reshape(len(x), -1).numpy(), y.numpy())
    return clf


def evaluate_digit_samples(samples: torch.Tensor, threshold: float = 0.9) -> dict:
    """Classify 8x8 samples (N, 1, 8, 8) in [-1, 1] (rounded to the 17 levels first).

    Returns confident_fraction (share with top probability >= threshold),
    class_shares (10 floats: share of samples labelled each digit), mean_confidence,
    and passes: confident_fraction >= 0.8 and every class share in [0.05, 0.20].
    """
    if not isinstance(samples, torch.Tensor) or samples.dim() != 4 or samples.shape[1:] != (1, 8, 8):
        shape = tuple(samples.shape) if isinstance(samples, torch.Tensor) else type(samples).__name__
        raise ValueError(f"samples must be digits of shape (N, 1, 8, 8), got {shape}")
    x = to_unit_range(_flat_levels(samples.detach().cpu(), DIGITS_LEVELS), DIGITS_LEVELS)  # (N, 64)
    probs = digit_classifier().predict_proba(x.numpy())  # (N, 10)
    confidence, labels = probs.max(axis=1), probs.argmax(axis=1)
    shares = np.bincount(labels, minlength=10) / len(labels)
    confident = float((confidence >= threshold).mean())
    return {
        "confident_fraction": confident,
        "class_shares": shares.tolist(),
        "mean_confidence": float(confidence.mean()),
        "passes": bool(confident >= 0.8 and shares.min() >= 0.05 and shares.max() <= 0.20),
    }


# -----------------------------------------------------------------------------
# Likelihood baseline 1: independent per-pixel categorical


@dataclass
class CategoricalBaseline:
    """p(x) = Π_d p_d(x_d), each p_d a categorical over the levels, add-α smoothed."""

    log_probs: torch.Tensor  # (D, L) float64, log p_d(level)
    num_levels: int

    @staticmethod
    def variance_floor(num_levels: int) -> float:
        """The smallest variance `fit` allows: that of a uniform over one bin of the
        levels in [-1, 1], (2/(L-1))² / 12."""
        return (2.0 / (num_levels - 1)) ** 2 / 12.0

    @classmethod
    def fit(cls, x_train: torch.Tensor, num_levels: int = DIGITS_LEVELS,
            alpha: float = 1.0) -> CategoricalBaseline:
        """p_d(l) = (n_dl + α) / (N + L α), n_dl the count of level l at pixel d."""
        if not alpha > 0:
            raise ValueError(f"alpha must be > 0 (add-α smoothing), got {alpha!r}")
        levels = _flat_levels(x_train, num_levels)  # (N, D)
        # counts[d, l] = how often pixel d takes level l; scatter_add, not one_hot: that would
        # make an (N, D, L) tensor (14 GB for 9,000 MNIST images on 256 levels)
        counts = torch.zeros(levels.shape[1], num_levels, dtype=torch.float64)  # (D, L)
        counts.scatter_add_(1, levels.T, torch.ones(levels.T.shape, dtype=torch.float64))
        probs = (counts + alpha) / (levels.shape[0] + num_levels * alpha)
        return cls(probs.log(), num_levels)

    def log_prob(self, x: torch.Tensor) -> torch.Tensor:
        """log p(x) in nats: (N, ...) -> (N,)."""
        levels = _flat_levels(x, self.num_levels)  # (N, D)
        return self.log_probs.gather(1, levels.T).sum(dim=0)  # (D, N) -> (N,)

    def bits_per_dim(self, x: torch.Tensor) -> torch.Tensor:
        return -self.log_prob(x) / (self.log_probs.shape[0] * LN2)


# -----------------------------------------------------------------------------
# Likelihood baseline 2: a diagonal Gaussian mixture, discretised


@dataclass
class GMMBaseline:
    """p(x) = Σ_k π_k Π_d P(x_d | N(μ_kd, σ_kd²) integrated over x_d's bin).

    Per component the bins factorise over pixels, so the discrete likelihood is
    exact: `discretized_gaussian_log_likelihood` per pixel (edge bins open to
    ±∞), summed over pixels, then a log-sum-exp over components.
    """

    log_weights: torch.Tensor  # (K,) log π_k
    means: torch.Tensor  # (K, D)
    log_scales: torch.Tensor  # (K, D) log σ_kd
    num_levels: int
    bic: dict[int, float]  # the BIC of every K tried (discrete likelihood, train set)

    @property
    def num_components(self) -> int:
        return self.means.shape[0]

    def component_log_prob(self, x: torch.Tensor) -> torch.Tensor:
        """log P(x | component k) in nats: (N, ...) -> (N, K)."""
        x = x.reshape(x.shape[0], 1, -1).double()  # (N, 1, D)
        x = x.expand(-1, self.num_components, -1)  # (N, K, D)
        mean = self.means.unsqueeze(0).expand_as(x)  # (N, K, D)
        ll = discretized_gaussian_log_likelihood(x, mean, self.log_scales, self.num_levels)
        return ll.sum(dim=2)  # (N, K)

    def log_prob(self, x: torch.Tensor) -> torch.Tensor:
        """log p(x) in nats: (N, ...) -> (N,)."""
        return torch.logsumexp(self.log_weights + self.component_log_prob(x), dim=1)

    def bits_per_dim(self, x: torch.Tensor) -> torch.Tensor:
        return -self.log_prob(x) / (self.means.shape[1] * LN2)

    def pixel_level_probs(self, d: int) -> torch.Tensor:
        """The mixture's marginal over the levels of pixel d: (L,), sums to 1."""
        L = self.num_levels
        grid = to_unit_range(torch.arange(L), L).double()[:, None].expand(-1, self.num_components)
        mean = self.means[:, d].expand_as(grid)  # (L, K)
        ll = discretized_gaussian_log_likelihood(grid, mean, self.log_scales[:, d], L)  # (L, K)
        return torch.logsumexp(self.log_weights + ll, dim=1).exp()

    @staticmethod
    def variance_floor(num_levels: int) -> float:
        """The smallest variance `fit` allows: that of a uniform over one bin of the
        levels in [-1, 1], (2/(L-1))² / 12."""
        return (2.0 / (num_levels - 1)) ** 2 / 12.0

    @classmethod
    def fit(cls, x_train: torch.Tensor, num_levels: int = DIGITS_LEVELS,
            components: tuple[int, ...] = (1, 2, 4, 8, 16, 32, 64), seed: int = 0) -> GMMBaseline:
        """Fit sklearn's diagonal GaussianMixture for each K in `components` and keep the
        one with the lowest BIC = -2 log p(train) + (#parameters) ln N, with the
        discrete likelihood (no held-out data is used to choose K).

        The variance floor is `variance_floor(num_levels)`, so that no component is
        sharper than the grid can resolve.
        """
        from sklearn.mixture import GaussianMixture

        x = x_train.reshape(x_train.shape[0], -1).double()  # (N, D)
        N, D = x.shape
        floor = cls.variance_floor(num_levels)
        best, bic = None, {}
        for K in components:
            gm = GaussianMixture(K, covariance_type="diag", reg_covar=floor, random_state=seed,
                                 max_iter=200).fit(x.numpy())
            model = cls(torch.from_numpy(np.log(gm.weights_)), torch.from_numpy(gm.means_),
                        0.5 * torch.from_numpy(np.log(gm.covariances_)), num_levels, bic)
            n_params = 2 * K * D + K - 1
            bic[K] = float(-2.0 * model.log_prob(x_train).sum() + n_params * math.log(N))
            if best is None or bic[K] < bic[best.num_components]:
                best = model
        return best
