"""The two densities the variational bound needs, and exact 1-D pictures of the process.

- `normal_kl`: KL divergence between two diagonal Gaussians, the L_{t-1} terms.
- `discretized_gaussian_log_likelihood`: a Gaussian integrated over each pixel's
  bin, the decoder term L_0 (DDPM section 3.3).

Both work elementwise in nats; reduce (sum or mean over pixels) at the call site.

- `point_mass_marginal`, `point_mass_reverse`: for 1-D data made of a few point
  masses, q(x_t) and the exact reverse step q(x_{t-1} | x_t), both Gaussian mixtures
  (`GaussianMixture1D`), with `mixture_pdf`, `mixture_cdf` and `mixture_moments`
  (the best single Gaussian), all in float64.
- `MixtureDenoiser`: the exact ε̂(x_t, t, y) for 1-D data drawn from one Gaussian
  mixture per class, a "network" the samplers can run to show what they do when
  nothing is learned.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
from torch import nn

from ._checks import check_float, check_in_unit_range, check_same_shape
from .schedules import Schedule


def _broadcast(*tensors: torch.Tensor, names: tuple[str, ...]) -> None:
    try:
        torch.broadcast_shapes(*(t.shape for t in tensors))
    except RuntimeError:
        shapes = ", ".join(f"{n}={tuple(t.shape)}" for n, t in zip(names, tensors, strict=True))
        raise ValueError(f"shapes do not broadcast: {shapes}") from None


def normal_kl(mean1: torch.Tensor, logvar1: torch.Tensor,
              mean2: torch.Tensor, logvar2: torch.Tensor) -> torch.Tensor:
    """KL(N(mean1, e^logvar1) || N(mean2, e^logvar2)), elementwise, in nats.

    KL = ½ [log σ₂²/σ₁² + (σ₁² + (μ₁ - μ₂)²)/σ₂² - 1]. Inputs broadcast; floats
    or tensors (at least one argument must be a tensor).
    """
    names = ("mean1", "logvar1", "mean2", "logvar2")
    args = [mean1, logvar1, mean2, logvar2]
    ref = next((a for a in args if isinstance(a, torch.Tensor)), None)
    if ref is None:
        raise TypeError("normal_kl needs at least one torch.Tensor argument")
    args = [a if isinstance(a, torch.Tensor) else torch.tensor(float(a), dtype=ref.dtype)
            for a in args]
    for a, n in zip(args, names, strict=True):
        check_float(a, n)
    _broadcast(*args, names=names)
    return _normal_kl(*args)


def _normal_kl(mean1: torch.Tensor, logvar1: torch.Tensor,
               mean2: torch.Tensor, logvar2: torch.Tensor) -> torch.Tensor:
    """`normal_kl` without the checks (no host reads: the training step calls it)."""
    # With d = log σ₁²/σ₂² the variance part is e^d - 1 - d; expm1 keeps it exact
    # (and >= 0) when the variances nearly agree, as they do for most L_{t-1}.
    d = logvar1 - logvar2
    return 0.5 * (torch.expm1(d) - d + (mean1 - mean2) ** 2 * torch.exp(-logvar2))


def _log1mexp(d: torch.Tensor) -> torch.Tensor:
    """log(1 - e^d) for d <= 0, accurate at both ends (Mächler 2012)."""
    return torch.where(d > -math.log(2.0), torch.log(-torch.expm1(d)), torch.log1p(-torch.exp(d)))


def _log_normal_interval(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """log(Φ(b) - Φ(a)) for a < b, exact in both tails.

    Φ(b) - Φ(a) = Φ(-a) - Φ(-b): mirror intervals on the right of 0 to the left,
    where log Φ is accurate, then log(Φ(b) - Φ(a)) = log Φ(b) + log(1 - Φ(a)/Φ(b)).
    """
    right = a > 0
    lo = torch.where(right, -b, a)
    hi = torch.where(right, -a, b)
    log_hi = torch.special.log_ndtr(hi)
    return log_hi + _log1mexp(torch.special.log_ndtr(lo) - log_hi)


def discretized_gaussian_log_likelihood(x: torch.Tensor, mean: torch.Tensor,
                                        log_scale: torch.Tensor,
                                        num_levels: int = 256) -> torch.Tensor:
    """log P(x) in nats, elementwise, for data quantised to `num_levels` levels in [-1, 1].

    Level k sits at -1 + 2k/(L-1); its bin is ±1/(L-1) around it, except that
    the first bin extends to -∞ and the last to +∞, so the probabilities of the
    L levels sum to exactly 1 (DDPM eq. 13). The Gaussian N(mean, exp(log_scale)²)
    is integrated over the bin with the exact normal CDF in log space, so far
    tails get their true, very negative values.

    Shapes: x and mean (B, ...) equal; log_scale broadcasts to them.
    """
    if isinstance(num_levels, bool) or not isinstance(num_levels, int):
        raise TypeError(f"num_levels must be an int, got {type(num_levels).__name__}")
    if num_levels < 2:
        raise ValueError(f"num_levels must be >= 2 (e.g. 256 for 8-bit images), got {num_levels}")
    x = check_float(x, "x")
    mean = check_float(mean, "mean")
    log_scale = check_float(log_scale, "log_scale")
    check_same_shape(x, mean, "x", "mean")
    _broadcast(x, log_scale, names=("x", "log_scale"))
    if torch.broadcast_shapes(x.shape, log_scale.shape) != x.shape:
        raise ValueError(f"log_scale must broadcast to the shape of x {tuple(x.shape)}, "
                         f"got {tuple(log_scale.shape)}")
    check_in_unit_range(x, "x")
    return _discretized_gaussian_log_likelihood(x, mean, log_scale, num_levels)


def _discretized_gaussian_log_likelihood(x: torch.Tensor, mean: torch.Tensor,
                                         log_scale: torch.Tensor, num_levels: int) -> torch.Tensor:
    """`discretized_gaussian_log_likelihood` without the checks (no host reads)."""
    half_bin = 1.0 / (num_levels - 1)
    inv_std = torch.exp(-log_scale)
    upper = (x - mean + half_bin) * inv_std
    lower = (x - mean - half_bin) * inv_std
    # Edge levels are found by position (x within half a bin of ±1), not equality,
    # so data that went through float arithmetic is still treated right.
    is_first = x < -1.0 + half_bin
    is_last = x > 1.0 - half_bin
    inner = _log_normal_interval(torch.where(is_first | is_last, lower.new_zeros(()) - 1, lower),
                                 torch.where(is_first | is_last, lower.new_zeros(()), upper))
    log_probs = torch.where(is_first, torch.special.log_ndtr(upper),
                            torch.where(is_last, torch.special.log_ndtr(-lower), inner))
    return log_probs


# -----------------------------------------------------------------------------
# Exact 1-D pictures: data made of a few point masses
#
# If x_0 takes the values c_1..c_K with probabilities w_1..w_K, every distribution of
# the process is a mixture of Gaussians with one shared variance, in closed form:
#   q(x_t)           = Σ_k w_k N(√ᾱ_t c_k, 1 - ᾱ_t)                       (DDPM eq. 4)
#   q(x_{t-1} | x_t) = Σ_k w_k(x_t) N(μ̃_t(x_t, c_k), β̃_t)               (eq. 6-7)
# with w_k(x_t) = q(x_0 = c_k | x_t) ∝ w_k N(x_t; √ᾱ_t c_k, 1 - ᾱ_t) (Bayes' rule).


class GaussianMixture1D(NamedTuple):
    """A batch of 1-D Gaussian mixtures whose K components share one variance (float64).

    weights (..., K), summing to 1 over K; means (..., K); variance (...), the variance of
    every component (0 for point masses).
    """

    weights: torch.Tensor
    means: torch.Tensor
    variance: torch.Tensor


def _check_point_masses(levels: torch.Tensor, weights: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    levels = check_float(levels, "levels").to(torch.float64)
    weights = check_float(weights, "weights").to(torch.float64)
    if levels.dim() != 1 or levels.numel() < 1:
        raise ValueError(f"levels must have shape (K,) with K >= 1 (the values of x_0), "
                         f"got {tuple(levels.shape)}")
    if weights.shape != levels.shape:
        raise ValueError(f"weights must have the shape of levels {tuple(levels.shape)} (one "
                         f"probability per level), got {tuple(weights.shape)}")
    if float(weights.min()) < 0 or abs(float(weights.sum()) - 1.0) > 1e-9:
        raise ValueError(f"weights must be >= 0 and sum to 1 (the probabilities of the levels), "
                         f"got {weights.tolist()} (sum {float(weights.sum()):.6g})")
    return levels, weights


def _check_step(schedule: Schedule, t: int | torch.Tensor) -> torch.Tensor:
    if not isinstance(schedule, Schedule):
        raise TypeError(f"schedule must be a Schedule (see make_schedule), got {type(schedule).__name__}")
    if isinstance(t, int) and not isinstance(t, bool):
        t = torch.tensor(t)
    if not isinstance(t, torch.Tensor) or t.is_floating_point() or t.dtype == torch.bool or t.is_complex():
        got = f"dtype {t.dtype}" if isinstance(t, torch.Tensor) else type(t).__name__
        raise TypeError(f"t must be an int or an integer tensor (0-based timesteps), got {got}")
    if t.numel() and (int(t.min()) < 0 or int(t.max()) > schedule.T - 1):
        raise ValueError(f"t must hold timesteps in 0..T-1 = 0..{schedule.T - 1}, "
                         f"got values in {int(t.min())}..{int(t.max())}")
    return t.long()


def point_mass_marginal(schedule: Schedule, t: int | torch.Tensor, levels: torch.Tensor,
                        weights: torch.Tensor) -> GaussianMixture1D:
    """q(x_t) = Σ_k w_k N(√ᾱ_t c_k, 1 - ᾱ_t) for 1-D data x_0 = c_k with probability w_k.

    t: 0-based timesteps (index t is the paper's t+1), an int or an integer tensor of any
    shape (...); levels c (K,) and weights w (K,). Returns the mixture with batch shape (...):
    weights (..., K), means (..., K), variance (...).
    """
    t = _check_step(schedule, t)
    levels, weights = _check_point_masses(levels, weights)
    abar = schedule.alphas_cumprod[t]  # (...)
    return GaussianMixture1D(weights.expand(*t.shape, -1), abar.sqrt()[..., None] * levels, 1.0 - abar)


def point_mass_reverse(schedule: Schedule, t: int | torch.Tensor, x_t: torch.Tensor,
                       levels: torch.Tensor, weights: torch.Tensor) -> GaussianMixture1D:
    """The exact reverse step q(x_{t-1} | x_t) = Σ_k w_k(x_t) N(μ̃_t(x_t, c_k), β̃_t).

    For 1-D data x_0 = c_k with probability w_k, the reverse step is the posterior
    q(x_{t-1} | x_t, x_0) (DDPM eq. 6-7) averaged over what x_t says of x_0:
    w_k(x_t) = q(x_0 = c_k | x_t) ∝ w_k N(x_t; √ᾱ_t c_k, 1 - ᾱ_t), and
    μ̃_t(x_t, c_k) = posterior_mean_coef1_t c_k + posterior_mean_coef2_t x_t.
    With a respaced schedule (`respace`) index t is a jump between two kept steps.

    t: 0-based timesteps, an int or an integer tensor broadcasting with x_t; at t = 0 the
    step is to x_0 itself and the components are point masses (variance 0). x_t: any shape
    (...). Returns the mixture (float64) with batch shape broadcast(t, x_t): weights (..., K),
    means (..., K), variance (...).
    """
    t = _check_step(schedule, t)
    x_t = check_float(x_t, "x_t").to(torch.float64)
    levels, weights = _check_point_masses(levels, weights)
    _broadcast(t, x_t, names=("t", "x_t"))
    abar = schedule.alphas_cumprod[t][..., None]  # (..., 1)
    x = x_t[..., None]  # (..., 1)
    # responsibilities, in log space: the normalising constant of N(x_t; ., 1 - ᾱ_t) cancels
    logits = weights.log() - (x - abar.sqrt() * levels) ** 2 / (2 * (1.0 - abar))  # (..., K)
    means = schedule.posterior_mean_coef1[t][..., None] * levels \
        + schedule.posterior_mean_coef2[t][..., None] * x  # (..., K)
    variance = schedule.posterior_variance[t].expand(means.shape[:-1])
    return GaussianMixture1D(torch.softmax(logits, dim=-1), means, variance)


def _check_mixture(mixture: GaussianMixture1D, x: torch.Tensor | None = None) -> None:
    if not isinstance(mixture, GaussianMixture1D):
        raise TypeError(f"mixture must be a GaussianMixture1D, got {type(mixture).__name__}")
    if mixture.weights.shape != mixture.means.shape or mixture.variance.shape != mixture.means.shape[:-1]:
        raise ValueError(f"mixture must hold weights and means (..., K) and variance (...), got "
                         f"{tuple(mixture.weights.shape)}, {tuple(mixture.means.shape)} and "
                         f"{tuple(mixture.variance.shape)}")
    if x is not None:
        check_float(x, "x")
        batch = tuple(mixture.variance.shape)
        if x.dim() != len(batch) + 1 or tuple(x.shape[:-1]) != batch:
            raise ValueError(f"x must have shape (..., N) = {batch + ('N',)}: N points for each "
                             f"mixture of the batch {batch}, got {tuple(x.shape)}")
        if float(mixture.variance.min()) <= 0:
            raise ValueError("mixture has components of variance 0 (point masses, e.g. the "
                             "reverse step at t = 0): it has no density or continuous CDF")


def mixture_pdf(mixture: GaussianMixture1D, x: torch.Tensor) -> torch.Tensor:
    """The density Σ_k w_k N(x; μ_k, σ²) of each mixture of the batch at N points.

    x: (..., N), N points for each mixture of the batch (...). Returns (..., N), float64.
    """
    _check_mixture(mixture, x)
    z = (x.to(torch.float64)[..., :, None] - mixture.means[..., None, :]) ** 2  # (..., N, K)
    var = mixture.variance[..., None, None]
    return (mixture.weights[..., None, :] * torch.exp(-z / (2 * var))).sum(-1) \
        / torch.sqrt(2 * math.pi * var[..., 0])


def mixture_cdf(mixture: GaussianMixture1D, x: torch.Tensor) -> torch.Tensor:
    """The CDF Σ_k w_k Φ((x - μ_k)/σ) of each mixture of the batch at N points.

    x: (..., N), as for `mixture_pdf`. Differences of the CDF give the probability of a bin,
    which stays exact where the density is too narrow for a grid. Returns (..., N), float64.
    """
    _check_mixture(mixture, x)
    z = (x.to(torch.float64)[..., :, None] - mixture.means[..., None, :]) \
        / mixture.variance.sqrt()[..., None, None]  # (..., N, K)
    return (mixture.weights[..., None, :] * torch.special.ndtr(z)).sum(-1)


def mixture_moments(mixture: GaussianMixture1D) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and variance (each (...)) of each mixture: the best single Gaussian.

    mean = Σ_k w_k μ_k, variance = σ² + Σ_k w_k μ_k² - mean². N(mean, variance) is the
    Gaussian closest to the mixture in KL(mixture || Gaussian) (moment matching).
    """
    _check_mixture(mixture)
    mean = (mixture.weights * mixture.means).sum(-1)
    spread = (mixture.weights * (mixture.means - mean[..., None]) ** 2).sum(-1)
    return mean, mixture.variance + spread


def mixture_score(mixture: GaussianMixture1D, x: torch.Tensor) -> torch.Tensor:
    """∇_x log p(x) of each mixture at N points: Σ_k r_k(x) (μ_k - x) / σ², with r_k the
    component's responsibility. x: (..., N) as for `mixture_pdf`. Returns (..., N), float64."""
    _check_mixture(mixture, x)
    diff = mixture.means[..., None, :] - x.to(torch.float64)[..., :, None]  # (..., N, K)
    var = mixture.variance[..., None, None]
    log_r = mixture.weights.log()[..., None, :] - diff ** 2 / (2 * var)
    return (torch.softmax(log_r, dim=-1) * diff).sum(-1) / var[..., 0]


class MixtureDenoiser(nn.Module):
    """The exact ε̂ for 1-D data from K classes, class k drawn from its own Gaussian
    mixture (all components sharing one variance), the classes equally likely.

    At step t, x_t = √ᾱ_t x_0 + √(1 - ᾱ_t) ε turns each mixture into one with means √ᾱ_t μ
    and variance ᾱ_t σ² + 1 - ᾱ_t, and ε̂ = E[ε | x_t] = -√(1 - ᾱ_t) ∇ log p_t(x_t)
    (Tweedie's formula). Label k uses class k's mixture; "no label" (y = K, or y None)
    their equal-weight union. Called like a conditional UNet: x (B, 1), t (B,) 0-based
    steps of `schedule`, y (B,). `config.num_classes` is K, as the samplers expect.
    """

    def __init__(self, schedule: Schedule, classes: list[GaussianMixture1D]):
        super().__init__()
        for k, c in enumerate(classes):
            _check_mixture(c)
            if c.means.dim() != 1 or float(c.variance) <= 0:
                raise ValueError(f"classes[{k}] must be one 1-D mixture, means (K,) and a "
                                 f"variance () > 0, got means {tuple(c.means.shape)}")
        if len({float(c.variance) for c in classes}) != 1:
            raise ValueError("every class's components must share one variance")
        K = len(classes)
        self.config = type("MixtureDenoiserConfig", (), {"num_classes": K})()
        self.classes = classes
        self.union = GaussianMixture1D(torch.cat([c.weights for c in classes]) / K,
                                       torch.cat([c.means for c in classes]), classes[0].variance)
        # Row k: class k's components, padded with weight 0; row K: the union ("no label").
        width = len(self.union.means)
        pad = [(c.weights, c.means) for c in classes] + [(self.union.weights, self.union.means)]
        self.weights = torch.stack([torch.cat([w, w.new_zeros(width - len(w))]) for w, _ in pad])
        self.means = torch.stack([torch.cat([m, m.new_zeros(width - len(m))]) for _, m in pad])
        self.variance = classes[0].variance.to(torch.float64)
        self.alphas_cumprod = schedule.alphas_cumprod

    def marginal(self, label: int, alpha_bar: float) -> GaussianMixture1D:
        """q(x_t | y = label) (label K: no label) for ᾱ_t = alpha_bar."""
        c = self.union if label == self.config.num_classes else self.classes[label]
        return GaussianMixture1D(c.weights, math.sqrt(alpha_bar) * c.means,
                                 alpha_bar * c.variance + 1 - alpha_bar)

    def forward(self, x: torch.Tensor, t: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        y = torch.full_like(t, self.config.num_classes) if y is None else y
        a = self.alphas_cumprod[t.cpu()]  # (B,) float64
        q_t = GaussianMixture1D(self.weights[y.cpu()], a.sqrt()[:, None] * self.means[y.cpu()],
                                a * self.variance + 1 - a)  # a batch of B mixtures
        eps = -(1 - a).sqrt()[:, None] * mixture_score(q_t, x.detach().cpu().to(torch.float64))
        return eps.to(device=x.device, dtype=x.dtype)  # (B, 1)
