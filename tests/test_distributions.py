"""KL and the discrete decoder against scipy integration, scipy's CDF and mpmath."""

import math

import mpmath
import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import integrate, stats

from diffusion_core import discretized_gaussian_log_likelihood, normal_kl


def kl_by_quadrature(m1, s1, m2, s2):
    p, q = stats.norm(m1, s1), stats.norm(m2, s2)
    f = lambda x: p.pdf(x) * (p.logpdf(x) - q.logpdf(x))
    return integrate.quad(f, m1 - 30 * s1, m1 + 30 * s1, limit=200, epsabs=1e-12)[0]


@pytest.mark.parametrize("m1,s1,m2,s2", [
    (0.0, 1.0, 0.0, 1.0), (0.3, 0.5, -0.2, 1.3), (2.0, 0.1, 0.0, 1.0), (-1.0, 2.0, 1.0, 0.7),
])
def test_normal_kl_matches_numerical_integration(m1, s1, m2, s2):
    got = normal_kl(torch.tensor(m1, dtype=torch.float64), torch.tensor(2 * math.log(s1), dtype=torch.float64),
                    torch.tensor(m2, dtype=torch.float64), torch.tensor(2 * math.log(s2), dtype=torch.float64))
    assert got.item() == pytest.approx(kl_by_quadrature(m1, s1, m2, s2), abs=1e-9, rel=1e-7)


def test_normal_kl_matches_monte_carlo(generator):
    g = generator(0)
    m1, s1, m2, s2 = 0.4, 0.8, -0.1, 1.5
    x = m1 + s1 * torch.randn(2_000_000, generator=g, dtype=torch.float64)
    log_ratio = stats.norm(m1, s1).logpdf(x.numpy()) - stats.norm(m2, s2).logpdf(x.numpy())
    mc, se = log_ratio.mean(), log_ratio.std() / math.sqrt(len(log_ratio))
    got = normal_kl(torch.tensor(m1), torch.tensor(2 * math.log(s1)), torch.tensor(m2), torch.tensor(2 * math.log(s2)))
    # 5 standard errors of the Monte Carlo mean (se ≈ 4e-4); 1e-6 for `got`, in float32
    z = (abs(got.item() - mc) - 1e-6) / se
    assert z < 5


@settings(max_examples=30, deadline=None)
@given(st.lists(st.integers(1, 4), min_size=0, max_size=3), st.lists(st.integers(1, 4), min_size=0, max_size=3))
def test_normal_kl_broadcasts(shape_a, shape_b):
    a, b = torch.randn(shape_a), torch.randn(shape_b)
    try:
        want = torch.broadcast_shapes(a.shape, b.shape)
    except RuntimeError:
        with pytest.raises(ValueError, match="broadcast"):
            normal_kl(a, torch.zeros(()), b, torch.zeros(()))
        return
    out = normal_kl(a, torch.zeros(()), b, torch.zeros(()))
    assert out.shape == want and bool((out >= 0).all())


def test_normal_kl_rejects_nan():
    with pytest.raises(ValueError, match="mean2 contains NaN"):
        normal_kl(torch.zeros(3), torch.zeros(3), torch.tensor([0.0, float("nan"), 0.0]), torch.zeros(3))


# ---- discretised Gaussian ---------------------------------------------------------------

def levels(L):
    return torch.linspace(-1, 1, L, dtype=torch.float64)


@pytest.mark.parametrize("L", [2, 17, 256])
@pytest.mark.parametrize("mean,log_scale", [(0.0, -1.0), (0.37, -3.0), (-0.9, 0.5), (5.0, -2.0), (0.1, -9.0)])
def test_discretized_probabilities_sum_to_one(L, mean, log_scale):
    x = levels(L)
    log_scale = torch.tensor(log_scale, dtype=torch.float64)
    lp = discretized_gaussian_log_likelihood(x, torch.full_like(x, mean), log_scale, L)
    assert torch.logsumexp(lp, 0).item() == pytest.approx(0.0, abs=1e-9)


@pytest.mark.parametrize("L", [17, 256])
def test_discretized_matches_scipy_cdf_differences(L, seed):
    rng = np.random.default_rng(seed)
    x = levels(L)
    for _ in range(5):
        mean, scale = rng.uniform(-1, 1), math.exp(rng.uniform(-4, 0))
        half = 1 / (L - 1)
        lo = np.where(x.numpy() < -1 + half, -np.inf, x.numpy() - half)
        hi = np.where(x.numpy() > 1 - half, np.inf, x.numpy() + half)
        # Right of the mean use survival functions: 1 - cdf would lose the digits.
        right = lo > mean
        p = np.where(right, stats.norm.sf(lo, mean, scale) - stats.norm.sf(hi, mean, scale),
                     stats.norm.cdf(hi, mean, scale) - stats.norm.cdf(lo, mean, scale))
        lp = discretized_gaussian_log_likelihood(x, torch.full_like(x, mean),
                                                 torch.tensor(math.log(scale), dtype=torch.float64), L)
        ok = p > 1e-200  # where scipy's own difference is representable
        np.testing.assert_allclose(lp.numpy()[ok], np.log(p[ok]), rtol=1e-6, atol=1e-9)


def mp_log_bin(x, mean, scale, L):
    mpmath.mp.dps = 60
    half = mpmath.mpf(1) / (L - 1)
    z = lambda v: (mpmath.mpf(v) - mean) / scale
    lo = -mpmath.inf if x < -1 + 1 / (L - 1) else z(mpmath.mpf(x) - half)
    hi = mpmath.inf if x > 1 - 1 / (L - 1) else z(mpmath.mpf(x) + half)
    if lo > 0:  # 60 digits cannot hold 1 - 1e-500: integrate the mirrored bin instead
        lo, hi = -hi, -lo
    return float(mpmath.log(mpmath.ncdf(hi) - mpmath.ncdf(lo)))


@pytest.mark.parametrize("x,mean,scale,L", [
    (0.5, 0.0, 0.01, 256),      # 50 standard deviations into the right tail
    (-0.5, 0.0, 0.01, 256),     # the same on the left
    (1.0, -0.9, 0.02, 17),      # the open last bin, far away
    (-1.0, 0.8, 0.03, 17),      # the open first bin, far away
    (0.0, 0.0, 1e-4, 256),      # a very narrow Gaussian centred in the bin
    (0.25, 0.0, 30.0, 256),     # a very wide Gaussian: tiny but ordinary bin mass
])
def test_discretized_far_tail_is_exact_not_clamped(x, mean, scale, L):
    got = discretized_gaussian_log_likelihood(torch.tensor([x], dtype=torch.float64),
                                              torch.tensor([mean], dtype=torch.float64),
                                              torch.tensor([math.log(scale)], dtype=torch.float64), L)
    want = mp_log_bin(x, mean, scale, L)
    assert got.item() == pytest.approx(want, rel=1e-8, abs=1e-10)


@pytest.mark.parametrize("kwargs,exc,match", [
    (dict(num_levels=1), ValueError, "num_levels must be >= 2"),
    (dict(x=torch.tensor([1.5])), ValueError, r"x must lie in \[-1, 1\]"),
    (dict(mean=torch.zeros(2)), ValueError, "x and mean must have the same shape"),
    (dict(log_scale=torch.zeros(3)), ValueError, "log_scale must broadcast"),
    (dict(mean=torch.tensor([float("nan")])), ValueError, "mean contains NaN"),
    (dict(x=torch.tensor([1])), TypeError, "x must be a floating-point tensor"),
])
def test_discretized_rejects_bad_input(kwargs, exc, match):
    args = dict(x=torch.tensor([0.5]), mean=torch.tensor([0.0]), log_scale=torch.tensor([0.0]), num_levels=256)
    args.update(kwargs)
    with pytest.raises(exc, match=match):
        discretized_gaussian_log_likelihood(**args)
