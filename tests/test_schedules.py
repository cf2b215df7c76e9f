"""Schedules against the papers' numbers and independent numpy recomputation."""

import math

import numpy as np
import pytest
import torch

from diffusion_core import make_schedule, respace, schedule_from_betas, space_timesteps


def test_linear_schedule_has_ddpm_endpoints_at_T1000():
    s = make_schedule("linear", 1000)
    assert s.betas.dtype == torch.float64 and s.T == 1000
    assert s.betas[0].item() == pytest.approx(1e-4, rel=1e-12)
    assert s.betas[-1].item() == pytest.approx(0.02, rel=1e-12)
    assert bool((s.betas[1:] > s.betas[:-1]).all())


def test_linear_schedule_scales_with_T():
    s = make_schedule("linear", 250)
    assert s.betas[0].item() == pytest.approx(4e-4)
    assert s.betas[-1].item() == pytest.approx(0.08)


def test_cosine_schedule_matches_its_defining_formula():
    T, s_ = 1000, 0.008
    f = lambda t: np.cos((t / T + s_) / (1 + s_) * np.pi / 2) ** 2
    abar = f(np.arange(1, T + 1)) / f(0)
    sch = make_schedule("cosine", T)
    # Away from the clipped last steps, ᾱ_t is exactly f(t)/f(0).
    np.testing.assert_allclose(sch.alphas_cumprod[:-5].numpy(), abar[:-5], rtol=1e-10)
    assert sch.betas.max().item() <= 0.999


@pytest.mark.parametrize("name", ["linear", "cosine"])
def test_derived_tables_recomputed_with_numpy(name):
    s = make_schedule(name, 200)
    b = s.betas.numpy()
    abar = np.cumprod(1 - b)
    abar_prev = np.concatenate([[1.0], abar[:-1]])
    np.testing.assert_allclose(s.alphas_cumprod.numpy(), abar, rtol=1e-12)
    np.testing.assert_allclose(s.alphas_cumprod_prev.numpy(), abar_prev, rtol=1e-12)
    post_var = b * (1 - abar_prev) / (1 - abar)
    np.testing.assert_allclose(s.posterior_variance.numpy(), post_var, rtol=1e-12)
    assert s.posterior_variance[0].item() == 0.0
    np.testing.assert_allclose(s.posterior_log_variance_clipped[0].item(), math.log(post_var[1]))
    np.testing.assert_allclose(s.posterior_log_variance_clipped[1:].numpy(), np.log(post_var[1:]))
    np.testing.assert_allclose(s.snr.numpy(), abar / (1 - abar), rtol=1e-12)


def test_space_timesteps_keeps_last_step_and_count():
    for T, k in [(1000, 1), (1000, 10), (1000, 250), (1000, 1000), (7, 3)]:
        steps = space_timesteps(T, k)
        assert len(steps) == k
        assert steps[-1].item() == T - 1
        assert bool((steps[1:] > steps[:-1]).all()) and steps[0].item() >= 0


@pytest.mark.parametrize("k", [5, 50, 333])
def test_respaced_schedule_reproduces_alphas_cumprod_on_kept_steps(k):
    s = make_schedule("linear", 1000)
    kept = space_timesteps(1000, k)
    r = respace(s, kept)
    assert r.T == k
    np.testing.assert_allclose(r.alphas_cumprod.numpy(), s.alphas_cumprod[kept].numpy(), rtol=1e-12)


def test_respace_with_every_step_is_the_identity():
    s = make_schedule("cosine", 100)
    r = respace(s, torch.arange(100))
    np.testing.assert_allclose(r.betas.numpy(), s.betas.numpy(), rtol=1e-10)


@pytest.mark.parametrize("name,T,match", [
    ("quadratic", 100, "name must be one of"),
    ("linear", 0, "T must be >= 1"),
    ("linear", 10, "betas must lie in"),
])
def test_make_schedule_rejects_bad_input(name, T, match):
    with pytest.raises(ValueError, match=match):
        make_schedule(name, T)


def test_make_schedule_rejects_non_int_T():
    with pytest.raises(TypeError, match="T must be an int"):
        make_schedule("linear", 100.0)


@pytest.mark.parametrize("betas", [[0.1, 1.0], [0.0, 0.1], [-0.1], [0.1, float("nan")]])
def test_schedule_from_betas_requires_open_unit_interval(betas):
    with pytest.raises(ValueError, match="betas"):
        schedule_from_betas(torch.tensor(betas, dtype=torch.float64))


def test_respace_rejects_bad_timesteps():
    s = make_schedule("linear", 100)
    with pytest.raises(ValueError, match="0..T-1 = 0..99"):
        respace(s, torch.tensor([0, 100]))
    with pytest.raises(ValueError, match="strictly increasing"):
        respace(s, torch.tensor([5, 3]))
    with pytest.raises(ValueError, match="num_steps must be in 1..T"):
        space_timesteps(100, 0)
