"""The two densities the variational bound needs.

- `normal_kl`: KL divergence between two diagonal Gaussians, the L_{t-1} terms.
- `discretized_gaussian_log_likelihood`: a Gaussian integrated over each pixel's
  bin, the decoder term L_0 (DDPM section 3.3).

Both work elementwise in nats; reduce (sum or mean over pixels) at the call site.
"""

from __future__ import annotations

import math

import torch

from ._checks import check_float, check_in_unit_range, check_same_shape


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
