"""KL and the discrete decoder against scipy integration, scipy's CDF and mpmath."""

import math

import mpmath
import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import integrate, stats

from diffusion_core import discretized_gaussian_log_likelihood, make_schedule, normal_kl, respace
from diffusion_core.distributions import (
    mixture_cdf,
    mixture_moments,
    mixture_pdf,
    point_mass_marginal,
    point_mass_reverse,
)


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


# ---- exact 1-D densities for point-mass data -------------------------------------------

LEVELS = torch.tensor([-1.0, 0.2, 1.0], dtype=torch.float64)
WEIGHTS = torch.tensor([0.3, 0.3, 0.4], dtype=torch.float64)


@pytest.fixture(scope="module")
def linear():
    return make_schedule("linear", 1000)


def test_point_mass_marginal_matches_running_the_chain(linear, generator):
    """Run x_t = √(1-β_t) x_{t-1} + √β_t ε step by step from x_0 ~ Σ w_k δ(c_k), and compare
    the empirical CDF with the mixture's CDF at a few points, within 5 standard errors."""
    g = generator(10)
    n = 30_000  # below 32 768 elements torch runs each step on one thread: fast on a busy CPU
    x = LEVELS[torch.multinomial(WEIGHTS, n, replacement=True, generator=g)]  # (n,)
    betas = linear.betas
    x_probe = torch.linspace(-2.5, 2.5, 21, dtype=torch.float64)
    checked = []
    for i in range(1000):
        x = (1 - betas[i]).sqrt() * x + betas[i].sqrt() * torch.randn(n, generator=g, dtype=torch.float64)
        if i in (0, 9, 99, 299, 999):
            q = point_mass_marginal(linear, i, LEVELS, WEIGHTS)  # batch ()
            exact = mixture_cdf(q, x_probe)  # (21,)
            empirical = (x[None, :] <= x_probe[:, None]).double().mean(1)
            se = (exact * (1 - exact) / n).sqrt().clamp(min=1 / n)
            assert ((empirical - exact).abs() / se).max() < 5, i
            checked.append(i)
    assert len(checked) == 5


@pytest.mark.parametrize("i", [0, 40, 999])
def test_mixture_pdf_integrates_to_its_cdf(linear, i):
    q = point_mass_marginal(linear, torch.tensor([i]), LEVELS, WEIGHTS)  # batch (1,)
    for b in (-0.7, 0.3, 1.5):
        pdf = lambda u: mixture_pdf(q, torch.tensor([[u]], dtype=torch.float64)).item()
        points = (q.means[0] if i < 100 else torch.zeros(1)).tolist()  # where the mass sits
        area = integrate.quad(pdf, -12, b, points=[p for p in points if p < b] or None, limit=400,
                              epsabs=1e-12)[0]
        assert area == pytest.approx(mixture_cdf(q, torch.tensor([[b]], dtype=torch.float64)).item(),
                                     abs=1e-8)


def bayes_on_grid(abar_s, abar_t, x_t, n=200_001):
    """q(x_s | x_t) ∝ q(x_t | x_s) q(x_s) on a grid, in numpy: q(x_s) = Σ w_k N(√ᾱ_s c_k, 1-ᾱ_s),
    q(x_t | x_s) = N(√(ᾱ_t/ᾱ_s) x_s, 1 - ᾱ_t/ᾱ_s). Returns the grid and the normalised density."""
    c, w = LEVELS.numpy(), WEIGHTS.numpy()
    a = abar_t / abar_s  # one step: α_t; a jump: the product of the α's in between
    margin = 0.5 + 12 * np.sqrt(1 - abar_s)  # beyond every component of the prior
    lo = min(np.sqrt(abar_s) * c.min(), x_t / np.sqrt(a)) - margin
    hi = max(np.sqrt(abar_s) * c.max(), x_t / np.sqrt(a)) + margin
    grid = np.linspace(lo, hi, n)
    log_prior = np.logaddexp.reduce(np.log(w) + stats.norm.logpdf(grid[:, None], np.sqrt(abar_s) * c,
                                                                    np.sqrt(1 - abar_s)), axis=1)
    log_joint = log_prior + stats.norm.logpdf(x_t, np.sqrt(a) * grid, np.sqrt(1 - a))
    p = np.exp(log_joint - log_joint.max())
    return grid, p / np.trapezoid(p, grid)


@pytest.mark.parametrize("i", [1, 5, 60, 300, 999])
@pytest.mark.parametrize("x_t", [-1.1, -0.35, 0.55, 0.9])
def test_point_mass_reverse_is_bayes_rule_on_a_grid(linear, i, x_t):
    abar = np.cumprod(1 - linear.betas.numpy())  # independent of the library's tables
    grid, bayes = bayes_on_grid(abar[i - 1], abar[i], x_t)
    q = point_mass_reverse(linear, i, torch.tensor([x_t], dtype=torch.float64), LEVELS, WEIGHTS)
    exact = mixture_pdf(q, torch.from_numpy(grid)[None])[0].numpy()
    # the grid's normalisation is the only approximation: relative error ~1e-8
    assert np.abs(exact - bayes).max() < 1e-6 * bayes.max()
    # the best single Gaussian: the grid's mean and variance
    mean, var = mixture_moments(q)
    grid_mean = np.trapezoid(grid * bayes, grid)
    grid_var = np.trapezoid((grid - grid_mean) ** 2 * bayes, grid)
    assert mean.item() == pytest.approx(grid_mean, abs=1e-7 * max(1.0, np.sqrt(grid_var)))
    assert var.item() == pytest.approx(grid_var, rel=1e-6)


@pytest.mark.parametrize("s,t", [(99, 199), (0, 999), (400, 500)])
def test_point_mass_reverse_jumps_on_a_respaced_schedule(linear, s, t):
    """On `respace(schedule, [s, t])`, index 1 is the jump q(x_s | x_t) over t - s steps."""
    jump = respace(linear, torch.tensor([s, t]))
    abar = np.cumprod(1 - linear.betas.numpy())
    grid, bayes = bayes_on_grid(abar[s], abar[t], 0.4)
    q = point_mass_reverse(jump, 1, torch.tensor([0.4], dtype=torch.float64), LEVELS, WEIGHTS)
    exact = mixture_pdf(q, torch.from_numpy(grid)[None])[0].numpy()
    assert np.abs(exact - bayes).max() < 1e-6 * bayes.max()


def test_moment_matching_minimises_the_kl(linear):
    """KL(mixture || N(m, v)) by quadrature is smallest at the mixture's own mean and variance."""
    jump = respace(linear, torch.tensor([99, 299]))  # 200 steps at once, from t = 300 to 100
    q = point_mass_reverse(jump, 1, torch.tensor([0.35], dtype=torch.float64), LEVELS, WEIGHTS)
    mean, var = (v.item() for v in mixture_moments(q))
    grid = torch.linspace(mean - 12 * math.sqrt(var), mean + 12 * math.sqrt(var), 40_001,
                          dtype=torch.float64)
    p = mixture_pdf(q, grid[None])[0].numpy()

    def kl(m, v):
        ratio = np.where(p > 0, np.log(np.maximum(p, 1e-300)) - stats.norm.logpdf(grid.numpy(), m, math.sqrt(v)), 0)
        return np.trapezoid(p * ratio, grid.numpy())

    best = kl(mean, var)
    assert best > 0.01  # this jump's reverse step is far from Gaussian
    for dm, fv in [(0.05, 1.0), (-0.05, 1.0), (0.0, 1.2), (0.0, 0.8)]:
        assert kl(mean + dm * math.sqrt(var), var * fv) > best


def test_point_mass_reverse_at_t0_is_the_responsibilities(linear):
    q = point_mass_reverse(linear, 0, torch.tensor([0.15, 0.95], dtype=torch.float64), LEVELS, WEIGHTS)
    assert torch.allclose(q.means, LEVELS.expand(2, 3), atol=1e-12)  # the step is to x_0 itself
    assert torch.all(q.variance == 0)
    assert torch.allclose(q.weights.sum(-1), torch.ones(2, dtype=torch.float64))
    with pytest.raises(ValueError, match="variance 0"):
        mixture_pdf(q, torch.zeros(2, 5, dtype=torch.float64))


def test_point_mass_functions_broadcast_over_t_and_x(linear):
    q = point_mass_marginal(linear, torch.arange(1000), LEVELS, WEIGHTS)
    assert q.weights.shape == q.means.shape == (1000, 3) and q.variance.shape == (1000,)
    r = point_mass_reverse(linear, torch.tensor([[3], [700]]), torch.linspace(-1, 1, 4, dtype=torch.float64),
                           LEVELS, WEIGHTS)
    assert r.means.shape == (2, 4, 3) and r.variance.shape == (2, 4)
    assert mixture_pdf(r, torch.zeros(2, 4, 7, dtype=torch.float64)).shape == (2, 4, 7)
    assert all(v.shape == (2, 4) for v in mixture_moments(r))


@pytest.mark.parametrize("kwargs,exc,match", [
    (dict(t=1000), ValueError, r"0\.\.T-1"),
    (dict(t=2.0), TypeError, "int or an integer tensor"),
    (dict(t=torch.tensor(2.0)), TypeError, "integer tensor"),
    (dict(weights=torch.tensor([0.5, 0.6, 0.1], dtype=torch.float64)), ValueError, "sum to 1"),
    (dict(weights=torch.tensor([0.5, 0.5], dtype=torch.float64)), ValueError, "shape of levels"),
    (dict(levels=torch.zeros(2, 3, dtype=torch.float64)), ValueError, r"\(K,\)"),
    (dict(x_t=torch.zeros(3, dtype=torch.float64), t=torch.tensor([1, 2])), ValueError, "broadcast"),
])
def test_point_mass_reverse_rejects_bad_input(linear, kwargs, exc, match):
    args = dict(t=5, x_t=torch.zeros(3, dtype=torch.float64), levels=LEVELS, weights=WEIGHTS) | kwargs
    with pytest.raises(exc, match=match):
        point_mass_reverse(linear, **args)


def test_mixture_pdf_rejects_points_of_the_wrong_batch(linear):
    q = point_mass_marginal(linear, torch.arange(5), LEVELS, WEIGHTS)
    with pytest.raises(ValueError, match=r"\(\.\.\., N\)"):
        mixture_pdf(q, torch.zeros(7, dtype=torch.float64))


def test_mixture_denoiser_is_minus_the_scaled_score_of_the_noised_mixture():
    """ε̂ = -√(1-ᾱ) d/dx log q_t(x | y), the derivative by central differences of
    `mixture_pdf` on q_t's own closed form (means √ᾱ μ, variance ᾱ σ² + 1 - ᾱ)."""
    from diffusion_core import make_schedule
    from diffusion_core.distributions import GaussianMixture1D, MixtureDenoiser, mixture_pdf

    f64 = torch.float64
    sched = make_schedule("linear", 1000)
    classes = [GaussianMixture1D(torch.tensor([1.0], dtype=f64), torch.tensor([-0.5], dtype=f64),
                                 torch.tensor(0.09, dtype=f64)),
               GaussianMixture1D(torch.tensor([0.3, 0.7], dtype=f64), torch.tensor([0.4, 0.8], dtype=f64),
                                 torch.tensor(0.09, dtype=f64))]
    model = MixtureDenoiser(sched, classes)
    x = torch.tensor([[0.1], [0.2], [-0.3], [1.5]], dtype=f64)
    t = torch.tensor([10, 500, 999, 0])
    h = 1e-5
    for y in (torch.tensor([0, 1, 2, 1]), None):
        eps = model(x, t, y)[:, 0]
        for i in range(4):
            a = sched.alphas_cumprod[t[i]].item()
            k = 2 if y is None else int(y[i])
            c = classes[k] if k < 2 else GaussianMixture1D(torch.tensor([0.5, 0.15, 0.35], dtype=f64),
                                                            torch.tensor([-0.5, 0.4, 0.8], dtype=f64),
                                                            torch.tensor(0.09, dtype=f64))
            q_t = GaussianMixture1D(c.weights, math.sqrt(a) * c.means, a * c.variance + 1 - a)
            log_p = mixture_pdf(q_t, x[i] + torch.tensor([h, -h], dtype=f64)).log()
            want = -math.sqrt(1 - a) * (log_p[0] - log_p[1]).item() / (2 * h)
            assert eps[i].item() == pytest.approx(want, rel=1e-6, abs=1e-8), (i, y)
