"""Samplers: with the exact denoiser of Gaussian data, every sampler must return
that Gaussian; DDIM with η=1 must have DDPM's posterior variance."""

import math

import pytest
import torch

from diffusion_core import GaussianDiffusion, make_schedule, sample_ddim, sample_ddpm, sample_strided
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


# Full-length runs: with few steps the fixed variance β̃ and DDIM's first-order
# update both shrink the spread (a real effect the book shows), so they are not
# exact; with all 1000 steps every sampler must reproduce the data.
@pytest.mark.parametrize("sampler,kwargs", [
    (sample_ddpm, {}),
    (sample_strided, {"num_steps": 1000}),
    (sample_ddim, {"eta": 0.0}),
    (sample_ddim, {"eta": 1.0}),
])
def test_samplers_recover_gaussian_data(diffusion, sampler, kwargs):
    N = 10_000
    g = torch.Generator().manual_seed(0)
    x = sampler(diffusion, gaussian_eps_model(diffusion), (N, 2), generator=g, dtype=torch.float64,
                clip_denoised=False, progress=False, **kwargs)
    assert x.shape == (N, 2)
    se = SIGMA / math.sqrt(N)
    assert torch.all((x.mean(0) - MU).abs() < 5 * se + 0.005)
    assert torch.all((x.std(0) / SIGMA - 1).abs() < 0.04)


def test_ddim_eta1_on_full_schedule_is_ddpm_posterior_variance(diffusion):
    t = torch.arange(1, 1000)
    like = torch.zeros(999, 1, dtype=torch.float64)
    sigma = ddim_sigma(diffusion, t, like, eta=1.0).flatten()
    assert torch.allclose(sigma ** 2, diffusion.schedule.posterior_variance[1:], rtol=1e-10)


def test_ddim_eta0_is_deterministic_given_x_T(diffusion):
    noise = torch.randn(64, 2, dtype=torch.float64)
    run = lambda seed: sample_ddim(diffusion, gaussian_eps_model(diffusion), noise.shape, num_steps=20,
                                   noise=noise, dtype=torch.float64, generator=torch.Generator().manual_seed(seed),
                                   clip_denoised=False, progress=False)
    assert torch.equal(run(0), run(1))


def test_trajectory_frames_use_original_timesteps(diffusion):
    x, traj = sample_strided(diffusion, gaussian_eps_model(diffusion), (3, 2), num_steps=10,
                             num_frames=4, progress=False, clip_denoised=False, dtype=torch.float64)
    assert traj.timesteps[0] == 999 and traj.timesteps[-1] == 0
    assert len(traj.timesteps) == len(traj.x_t) == len(traj.pred_x0) == 4
    assert all(f.shape == (3, 2) for f in traj.x_t)
    assert traj.timesteps == sorted(traj.timesteps, reverse=True)


def test_seeded_sampling_reproduces(diffusion):
    m = gaussian_eps_model(diffusion)
    a = sample_strided(diffusion, m, (4, 2), 10, generator=torch.Generator().manual_seed(5), progress=False)
    b = sample_strided(diffusion, m, (4, 2), 10, generator=torch.Generator().manual_seed(5), progress=False)
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
