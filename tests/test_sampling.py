"""Samplers: with the exact denoiser of Gaussian data, every sampler must return the
Gaussian its update predicts (the data's, up to a small known shrinkage); DDIM with η=1
must have DDPM's posterior variance."""

import math

import pytest
import torch

from diffusion_core import GaussianDiffusion, make_schedule, sample_ddim, sample_ddpm, sample_dpm_solver, sample_strided
from diffusion_core.sampling import ddim_sigma

MU, SIGMA = 0.3, 0.2  # data distribution N(MU, SIGMA²) per coordinate


def gaussian_eps_model(diffusion):
    """E[ε | x_t] for x_0 ~ N(MU, SIGMA²): x_t = a x_0 + b ε is jointly Gaussian with ε."""
    acp = diffusion.schedule.alphas_cumprod

    def model(x, t):  # t are the ORIGINAL timesteps (respaced processes map them back)
        a = acp[t].sqrt().to(x.dtype).view(-1, 1)
        b = (1 - acp[t]).sqrt().to(x.dtype).view(-1, 1)
        return b * (x - a * MU) / (a ** 2 * SIGMA ** 2 + b ** 2)
    return model


@pytest.fixture(scope="module")
def diffusion():
    return GaussianDiffusion(make_schedule("linear", 1000))


def exact_output_moments(diffusion, sampler, eta=0.0):
    """Mean and std of what a sampler returns, computed without sampling: with the linear
    denoiser above every step is x <- A x + B + σ z, so N(m, v) goes to N(A m + B, A² v + σ²).
    Written from the papers' formulas (not the library's): DDPM's posterior mean with
    σ² = β̃_t (model_var "fixed_small"), and DDIM's eq. 12 with its σ_t(η)."""
    acp = diffusion.schedule.alphas_cumprod.tolist()
    m, v = 0.0, 1.0  # x_T ~ N(0, 1)
    for i in range(len(acp) - 1, -1, -1):
        ab, ab_prev = acp[i], (acp[i - 1] if i > 0 else 1.0)
        a, b = math.sqrt(ab), math.sqrt(1 - ab)
        k_eps = b / (a ** 2 * SIGMA ** 2 + b ** 2)  # ε̂ = k_eps x + c_eps
        c_eps = -a * MU * k_eps
        k_x0, c_x0 = (1 - b * k_eps) / a, -b * c_eps / a  # x̂_0 = (x - b ε̂) / a
        if sampler is sample_ddim:
            var = eta ** 2 * (1 - ab_prev) / (1 - ab) * (1 - ab / ab_prev)
            r = math.sqrt(1 - ab_prev - var)
            A, B = math.sqrt(ab_prev) * k_x0 + r * k_eps, math.sqrt(ab_prev) * c_x0 + r * c_eps
        else:
            beta = 1 - ab / ab_prev
            c1 = beta * math.sqrt(ab_prev) / (1 - ab)
            c2 = (1 - ab_prev) * math.sqrt(1 - beta) / (1 - ab)
            A, B = c1 * k_x0 + c2, c1 * c_x0
            var = beta * (1 - ab_prev) / (1 - ab)
        m, v = A * m + B, A ** 2 * v + (var if i > 0 else 0.0)  # no noise at the last step
    return m, math.sqrt(v)


# Full-length runs. Even with all 1000 steps the samplers are not exact: the fixed variance
# β̃ shrinks the spread by 1.9% (DDPM, strided, DDIM η=1) and DDIM η=0 by 0.7% (a real
# effect; the book shows it grow with fewer steps), 2.6 and 1.1 standard errors at N=10 000.
# So the samples are compared with the exact moments of each sampler's output, within
# 5 standard errors; and those moments must be the data's to within that small shrinkage.
@pytest.mark.parametrize("sampler,kwargs", [
    (sample_ddpm, {}),
    (sample_strided, {"num_steps": 1000}),
    (sample_ddim, {"eta": 0.0}),
    (sample_ddim, {"eta": 1.0}),
])
def test_samplers_recover_gaussian_data(diffusion, sampler, kwargs, generator):
    N = 10_000
    x = sampler(diffusion, gaussian_eps_model(diffusion), (N, 2), generator=generator(0), dtype=torch.float64,
                clip_denoised=False, progress=False, **kwargs)
    assert x.shape == (N, 2)
    mean, std = exact_output_moments(diffusion, sampler, kwargs.get("eta", 0.0))
    assert abs(mean - MU) < 1e-3 and abs(std / SIGMA - 1) < 0.02  # close to the data
    # the output is Gaussian: SE of the mean std/√N, of the std std/√(2(N-1))
    z_mean = (x.mean(0) - mean) / (std / math.sqrt(N))
    z_std = (x.std(0) - std) / (std / math.sqrt(2 * (N - 1)))
    z = torch.cat([z_mean, z_std])
    assert z.abs().max() < 5, z


def test_ddim_eta1_on_full_schedule_is_ddpm_posterior_variance(diffusion):
    t = torch.arange(1, 1000)
    like = torch.zeros(999, 1, dtype=torch.float64)
    sigma = ddim_sigma(diffusion, t, like, eta=1.0).flatten()
    assert torch.allclose(sigma ** 2, diffusion.schedule.posterior_variance[1:], rtol=1e-10)


def test_ddim_eta0_is_deterministic_given_x_T(diffusion, generator):
    noise = torch.randn(64, 2, dtype=torch.float64, generator=generator(2))
    run = lambda k: sample_ddim(diffusion, gaussian_eps_model(diffusion), noise.shape, num_steps=20,
                                noise=noise, dtype=torch.float64, generator=generator(k),
                                clip_denoised=False, progress=False)
    assert torch.equal(run(0), run(1))


def test_trajectory_frames_use_original_timesteps(diffusion):
    x, traj = sample_strided(diffusion, gaussian_eps_model(diffusion), (3, 2), num_steps=10,
                             num_frames=4, progress=False, clip_denoised=False, dtype=torch.float64)
    assert traj.timesteps[0] == 999 and traj.timesteps[-1] == 0
    assert len(traj.timesteps) == len(traj.x_t) == len(traj.pred_x0) == 4
    assert all(f.shape == (3, 2) for f in traj.x_t)
    assert traj.timesteps == sorted(traj.timesteps, reverse=True)


def test_seeded_sampling_reproduces(diffusion, generator):
    m = gaussian_eps_model(diffusion)
    a = sample_strided(diffusion, m, (4, 2), 10, generator=generator(5), progress=False)
    b = sample_strided(diffusion, m, (4, 2), 10, generator=generator(5), progress=False)
    assert torch.equal(a, b)


@pytest.mark.parametrize("kwargs,match", [
    (dict(eta=-0.5), "eta must be a number >= 0"),
    (dict(num_steps=0), "num_steps must be in 1..T"),
    (dict(num_steps=1001), "num_steps must be in 1..T"),
    (dict(num_frames=-1), "num_frames"),
    (dict(noise=torch.zeros(3, 3)), "noise must have shape"),
])
def test_sampler_rejects_bad_arguments(diffusion, kwargs, match):
    kwargs.setdefault("num_steps", 5)
    with pytest.raises(ValueError, match=match):
        sample_ddim(diffusion, gaussian_eps_model(diffusion), (2, 2), progress=False, **kwargs)


def test_model_with_wrong_output_shape_is_refused(diffusion):
    with pytest.raises(ValueError, match="model output must have shape"):
        sample_strided(diffusion, lambda x, t: x[:, :1], (2, 2), 5, progress=False)


# DPM-Solver++(2M). For Gaussian data the probability-flow ODE keeps each sample's z-score
# (x_t - √ᾱ MU) / √(ᾱ SIGMA² + 1 - ᾱ), so its exact solution from the first level to the
# last (t = 0) is known in closed form; the samplers end with x̂_0 there, so the reference
# does too.
def exact_flow_endpoint(diffusion, x_T):
    acp = diffusion.schedule.alphas_cumprod
    a, b = acp[-1], acp[0]
    z = (x_T - a.sqrt() * MU) / (a * SIGMA ** 2 + 1 - a).sqrt()
    x = b.sqrt() * MU + (b * SIGMA ** 2 + 1 - b).sqrt() * z
    eps = gaussian_eps_model(diffusion)(x, torch.zeros(len(x), dtype=torch.long))
    return (x - (1 - b).sqrt() * eps) / b.sqrt()


@pytest.mark.parametrize("schedule", ["linear", "cosine"])
def test_dpm_solver_is_second_order_where_ddim_is_first(schedule):
    diffusion = GaussianDiffusion(make_schedule(schedule, 1000))
    x_T = torch.linspace(-3, 3, 61, dtype=torch.float64).view(-1, 1)
    exact = exact_flow_endpoint(diffusion, x_T)
    kw = dict(noise=x_T, dtype=torch.float64, clip_denoised=False, progress=False)
    err = {(f.__name__, n): (f(diffusion, gaussian_eps_model(diffusion), x_T.shape, n, **kw) - exact).abs().max()
           for f in (sample_ddim, sample_dpm_solver) for n in (40, 80)}
    ddim_rate = err["sample_ddim", 40] / err["sample_ddim", 80]
    dpm_rate = err["sample_dpm_solver", 40] / err["sample_dpm_solver", 80]
    assert 1.5 < ddim_rate < 2.5, ddim_rate  # halving the step halves the error
    assert dpm_rate > 3.5, dpm_rate  # ... and quarters it (or better)
    assert err["sample_dpm_solver", 80] < err["sample_ddim", 80] / 4


def test_dpm_solver_first_steps_are_ddim_and_strided(diffusion, generator):
    """With two steps the multistep correction never acts: the ODE solver is DDIM (η = 0)
    and the stochastic one is the strided ancestral sampler, draw for draw."""
    model, noise = gaussian_eps_model(diffusion), torch.randn(50, 2, dtype=torch.float64, generator=generator(3))
    kw = dict(noise=noise, dtype=torch.float64, clip_denoised=False, progress=False)
    assert torch.allclose(sample_dpm_solver(diffusion, model, noise.shape, 2, **kw),
                          sample_ddim(diffusion, model, noise.shape, 2, **kw), atol=1e-12)
    sde = sample_dpm_solver(diffusion, model, noise.shape, 2, stochastic=True, generator=generator(4), **kw)
    strided = sample_strided(diffusion, model, noise.shape, 2, generator=generator(4), **kw)
    assert torch.allclose(sde, strided, atol=1e-12)


def test_sde_dpm_solver_shrinks_the_data_less_than_strided(diffusion, generator):
    """Few ancestral steps shrink the spread of the samples (the data's std is SIGMA = 0.2);
    the second-order correction removes part of that bias. Same x_T and noise draws for both;
    the gap is tens of standard errors (SE of a std ≈ 0.2 / √(2N) = 0.0014)."""
    N, model = 20_000, gaussian_eps_model(diffusion)
    noise = torch.randn(N, 1, dtype=torch.float64, generator=generator(5))
    kw = dict(noise=noise, dtype=torch.float64, clip_denoised=False, progress=False)
    strided = sample_strided(diffusion, model, noise.shape, 20, generator=generator(6), **kw).std()
    sde = sample_dpm_solver(diffusion, model, noise.shape, 20, stochastic=True, generator=generator(6), **kw).std()
    assert strided < sde - 0.01 and sde < SIGMA, (strided, sde)


def test_dpm_solver_rejects_bad_arguments(diffusion):
    with pytest.raises(ValueError, match="stochastic must be True or False"):
        sample_dpm_solver(diffusion, gaussian_eps_model(diffusion), (2, 2), 5, stochastic="yes")
    with pytest.raises(ValueError, match="num_steps must be in 1..T"):
        sample_dpm_solver(diffusion, gaussian_eps_model(diffusion), (2, 2), 0)
