"""Samplers: ancestral DDPM, strided (respaced) DDPM and DDIM.

Each runs the reverse process from x_T ~ N(0, I) down to x_0 and can keep
intermediate frames (x_t and the model's x̂_0) for the book's figures.

- Ancestral (DDPM algorithm 2): x_{t-1} = μ_θ(x_t, t) + σ_t z.
- Strided (iDDPM section 4): the same on a subset of the steps, with β
  recomputed from ᾱ at the kept steps (`GaussianDiffusion.respaced`).
- DDIM (Song et al. 2021, eq. 12):
  x_{t-1} = √ᾱ_{t-1} x̂_0 + √(1 - ᾱ_{t-1} - σ_t²) ε̂ + σ_t z,
  σ_t = η √((1 - ᾱ_{t-1}) / (1 - ᾱ_t)) √(1 - ᾱ_t / ᾱ_{t-1}).
  η = 0 is deterministic; η = 1 gives σ_t² = β̃_t, DDPM's posterior variance.
- DPM-Solver++(2M) (Lu et al. 2022, algorithm 2): a second-order multistep
  solver of the probability-flow ODE in λ = log(√ᾱ/√(1-ᾱ)), using the x̂_0 of
  the two latest steps; one network call per step. Its first-order form is DDIM
  (η = 0); its stochastic form (SDE-DPM-Solver++(2M)) is, to first order, the
  strided ancestral sampler.

Every sampler takes labels `y` (B,) and a `guidance_scale` for a conditional
network (classifier-free guidance, `guidance.guided`). `ddim_invert` runs the
deterministic DDIM map the other way, from data to noise.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from tqdm.auto import tqdm

from .diffusion import GaussianDiffusion, Model
from .guidance import check_guidance, guided


@dataclass
class Trajectory:
    """Frames kept along a reverse run: the timestep, x_t and the model's x̂_0 there."""

    timesteps: list[int] = field(default_factory=list)
    x_t: list[torch.Tensor] = field(default_factory=list)
    pred_x0: list[torch.Tensor] = field(default_factory=list)


def ddim_sigma(diffusion: GaussianDiffusion, t: torch.Tensor, like: torch.Tensor, eta: float) -> torch.Tensor:
    """σ_t of DDIM eq. 16 for the 0-based step t, shaped (B, 1, ...)."""
    acp = diffusion._at("alphas_cumprod", t, like)
    acp_prev = diffusion._at("alphas_cumprod_prev", t, like)
    return eta * ((1 - acp_prev) / (1 - acp)).sqrt() * (1 - acp / acp_prev).sqrt()


def ancestral_step(diffusion: GaussianDiffusion, model: Model, x: torch.Tensor, t: torch.Tensor,
                   generator: torch.Generator | None = None, clip_denoised: bool = True,
                   eta: float = 1.0) -> tuple[torch.Tensor, torch.Tensor]:
    """One step of DDPM's algorithm 2: x_{t-1} = μ_θ(x_t, t) + σ_t z (no noise at t = 0).
    x: (B, ...) at the 0-based steps t (B,); returns (x_{t-1}, x̂_0). `eta` is unused (the
    samplers pass it to every step). The building block of `sample_ddpm`, unchecked."""
    out = diffusion._p_mean_variance(model, x, t, clip_denoised)
    noise = torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
    nonzero = (t > 0).to(x.dtype).reshape(-1, *([1] * (x.dim() - 1)))  # no noise at the last step
    return out["mean"] + nonzero * (0.5 * out["log_variance"]).exp() * noise, out["pred_x0"]


def ddim_step(diffusion: GaussianDiffusion, model: Model, x: torch.Tensor, t: torch.Tensor,
              generator: torch.Generator | None = None, clip_denoised: bool = True,
              eta: float = 0.0) -> tuple[torch.Tensor, torch.Tensor]:
    """One DDIM step (eq. 12 above): x: (B, ...) at the 0-based steps t (B,); returns
    (x_{t-1}, x̂_0). Deterministic for eta = 0. The building block of `sample_ddim`, unchecked."""
    out = diffusion._p_mean_variance(model, x, t, clip_denoised)
    # Re-derive ε̂ from the (possibly clipped) x̂_0 so the two stay consistent.
    eps = diffusion.predict_eps_from_x0(x, t, out["pred_x0"])
    acp_prev = diffusion._at("alphas_cumprod_prev", t, x)
    sigma = ddim_sigma(diffusion, t, x, eta)
    noise = torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
    mean = acp_prev.sqrt() * out["pred_x0"] + (1 - acp_prev - sigma ** 2).clamp(min=0).sqrt() * eps
    nonzero = (t > 0).to(x.dtype).reshape(-1, *([1] * (x.dim() - 1)))
    return mean + nonzero * sigma * noise, out["pred_x0"]


def half_log_snr(alphas_cumprod: torch.Tensor) -> torch.Tensor:
    """λ = log(α/σ) with α = √ᾱ, σ = √(1 - ᾱ): DPM-Solver's time variable."""
    return 0.5 * (alphas_cumprod.log() - torch.log1p(-alphas_cumprod))


def dpm_solver_step(stochastic: bool = False):
    """A fresh DPM-Solver++(2M) step for one sampling run (it keeps the last step's x̂_0).

    From level s (x_s, ᾱ_s) to the next level t (ᾱ_t = ᾱ_prev of s), with h = λ_t - λ_s > 0:
      ODE: x_t = (σ_t/σ_s) x_s - α_t (e^{-h} - 1) D
      SDE: x_t = (σ_t/σ_s) e^{-h} x_s + α_t (1 - e^{-2h}) D + σ_t √(1 - e^{-2h}) z
    with D = x̂_0 on the first step and D = (1 + 1/2r) x̂_0 - (1/2r) x̂_0,prev after it,
    r = h_prev / h (the multistep's second-order correction). The last step, to the data
    (σ = 0, h = ∞), returns x̂_0, as DDIM does. The step into the last level (t = 0) is
    first order too: its λ-step is much longer than the one before (λ jumps from about 1.7
    to 5 at 10 steps), and extrapolating x̂_0 that far overshoots (the same reason
    diffusers' solver takes its final steps at first order).
    """
    previous: dict[str, torch.Tensor] = {}

    def step(diffusion: GaussianDiffusion, model: Model, x: torch.Tensor, t: torch.Tensor,
             generator: torch.Generator | None = None, clip_denoised: bool = True,
             eta: float = 0.0) -> tuple[torch.Tensor, torch.Tensor]:
        pred_x0 = diffusion._p_mean_variance(model, x, t, clip_denoised)["pred_x0"]
        if int(t[0]) == 0:  # to the data: σ_t = 0
            return pred_x0, pred_x0
        acp = diffusion._at("alphas_cumprod", t, x)
        acp_next = diffusion._at("alphas_cumprod_prev", t, x)
        h = half_log_snr(acp_next) - half_log_snr(acp)
        d = pred_x0
        if previous and int(t[0]) > 1:  # first order into the last level, as into the data
            r = previous["h"] / h
            d = (1 + 0.5 / r) * pred_x0 - (0.5 / r) * previous["pred_x0"]
        previous.update(pred_x0=pred_x0, h=h)
        sigma_ratio = ((1 - acp_next) / (1 - acp)).sqrt()
        if not stochastic:
            return sigma_ratio * x - acp_next.sqrt() * torch.expm1(-h) * d, pred_x0
        noise = torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
        decay = -torch.expm1(-2 * h)  # 1 - e^{-2h}
        return (sigma_ratio * (-h).exp() * x + acp_next.sqrt() * decay * d
                + (1 - acp_next).sqrt() * decay.sqrt() * noise), pred_x0
    return step


@torch.no_grad()
def _loop(diffusion: GaussianDiffusion, model: Model, shape: tuple[int, ...], step, *,
          eta: float = 0.0, noise: torch.Tensor | None = None,
          generator: torch.Generator | None = None, device: torch.device | str | None = None,
          dtype: torch.dtype = torch.float32, clip_denoised: bool = True, num_frames: int = 0,
          progress: bool = True, desc: str = "sampling", y: torch.Tensor | None = None,
          guidance_scale: float = 1.0):
    shape = tuple(int(s) for s in shape)
    if len(shape) < 2 or min(shape) < 1:
        raise ValueError(f"shape must be (B, C, ...) with positive sizes, got {shape}")
    y = check_guidance(model, y, guidance_scale, shape[0])
    if y is not None:
        model = guided(model, y, guidance_scale)
    if not isinstance(num_frames, int) or num_frames < 0:
        raise ValueError(f"num_frames must be an int >= 0, got {num_frames!r}")
    if noise is not None:
        if tuple(noise.shape) != shape:
            raise ValueError(f"noise must have shape {shape}, got {tuple(noise.shape)}")
        x = noise.to(device=device or noise.device, dtype=dtype)
    else:
        x = torch.randn(shape, generator=generator, device=device, dtype=dtype)
    T = diffusion.T
    keep = set(torch.linspace(T - 1, 0, num_frames).round().long().tolist()) if num_frames else set()
    traj = Trajectory()
    for i in tqdm(range(T - 1, -1, -1), desc=desc, disable=not progress, leave=False):
        t = torch.full((shape[0],), i, dtype=torch.long, device=x.device)
        x_in = x
        x, pred_x0 = step(diffusion, model, x, t, generator, clip_denoised, eta)
        if i in keep:
            traj.timesteps.append(int(diffusion.timestep_map[i]))
            traj.x_t.append(x_in.cpu())
            traj.pred_x0.append(pred_x0.cpu())
    return (x, traj) if num_frames else x


def sample_ddpm(diffusion: GaussianDiffusion, model: Model, shape: tuple[int, ...], **kwargs):
    """Ancestral sampling over all T steps (DDPM algorithm 2).

    Keyword arguments: generator, device, dtype, noise (x_T), clip_denoised,
    progress, num_frames (> 0 also returns a `Trajectory` of that many frames),
    y (labels (B,) for a conditional network) and guidance_scale (0: unconditional,
    1: conditional, the default, > 1: guided). Returns x_0 (B, C, ...) or (x_0, Trajectory).
    """
    return _loop(diffusion, model, shape, ancestral_step, desc="DDPM", **kwargs)


def sample_strided(diffusion: GaussianDiffusion, model: Model, shape: tuple[int, ...],
                   num_steps: int, **kwargs):
    """Ancestral sampling on `num_steps` evenly strided timesteps (iDDPM section 4)."""
    return _loop(diffusion.respaced(num_steps), model, shape, ancestral_step,
                 desc=f"strided {num_steps}", **kwargs)


def sample_ddim(diffusion: GaussianDiffusion, model: Model, shape: tuple[int, ...],
                num_steps: int | None = None, eta: float = 0.0, **kwargs):
    """DDIM sampling (Song et al. 2021) on `num_steps` strided timesteps (all T if None)."""
    if not isinstance(eta, (int, float)) or eta < 0:
        raise ValueError(f"eta must be a number >= 0 (0: deterministic, 1: DDPM-like), got {eta!r}")
    d = diffusion if num_steps is None else diffusion.respaced(num_steps)
    return _loop(d, model, shape, ddim_step, eta=float(eta), desc=f"DDIM {d.T}", **kwargs)


def sample_dpm_solver(diffusion: GaussianDiffusion, model: Model, shape: tuple[int, ...],
                      num_steps: int | None = 20, stochastic: bool = False, **kwargs):
    """DPM-Solver++(2M) (Lu et al. 2022) on `num_steps` strided timesteps (all T if None).

    Deterministic (the probability-flow ODE, like DDIM with η = 0, but second order) unless
    `stochastic`, which is SDE-DPM-Solver++(2M): a second-order version of the strided
    ancestral sampler. One network call per step. Keyword arguments as `sample_ddpm`.
    """
    if not isinstance(stochastic, bool):
        raise ValueError(f"stochastic must be True or False, got {stochastic!r}")
    d = diffusion if num_steps is None else diffusion.respaced(num_steps)
    name = "SDE-DPM-Solver++" if stochastic else "DPM-Solver++"
    return _loop(d, model, shape, dpm_solver_step(stochastic), desc=f"{name} {d.T}", **kwargs)


@torch.no_grad()
def ddim_invert(diffusion: GaussianDiffusion, model: Model, x0: torch.Tensor,
                num_steps: int | None = None, y: torch.Tensor | None = None,
                guidance_scale: float = 1.0, clip_denoised: bool = True,
                progress: bool = True) -> torch.Tensor:
    """Encode data x0 (B, C, ...) to a noise x_T by running the deterministic DDIM map forwards.

    A decoding step (`ddim_step`, η = 0) from x_i with ε̂ = ε̂(x_i, t_i) is
    x_{i-1} = √ᾱ_{i-1} x̂_0 + √(1 - ᾱ_{i-1}) ε̂, x̂_0 = (x_i - √(1 - ᾱ_i) ε̂) / √ᾱ_i.
    For a given ε̂ this is solved exactly for x_i; the one approximation is ε̂(x_{i-1}, t_i)
    in place of ε̂(x_i, t_i), whose error shrinks with the step.
    Decode with `sample_ddim(diffusion, model, x0.shape, num_steps, noise=x_T)`.

    `clip_denoised` clips x̂_0 to the data range as the sampler does, and re-derives ε̂ from
    it. Keep it on in both directions: with the cosine schedule ᾱ_T ≈ 2e-9, and the first
    decoding step divides the network's error by √ᾱ_T, which clipping alone bounds.
    y, guidance_scale: as for the samplers. Returns x_T shaped like x0.
    """
    if not isinstance(x0, torch.Tensor) or not x0.is_floating_point() or x0.dim() < 2:
        got = f"shape {tuple(x0.shape)}, dtype {x0.dtype}" if isinstance(x0, torch.Tensor) \
            else type(x0).__name__
        raise ValueError(f"x0 must be a float tensor of shape (B, C, ...), got {got}")
    d = diffusion if num_steps is None else diffusion.respaced(num_steps)
    y = check_guidance(model, y, guidance_scale, x0.shape[0])
    if y is not None:
        model = guided(model, y, guidance_scale)
    x = x0
    for i in tqdm(range(d.T), desc=f"DDIM inversion {d.T}", disable=not progress, leave=False):
        t = torch.full((x.shape[0],), i, dtype=torch.long, device=x.device)
        eps, _ = d.model_output(model, x, t)
        acp_prev = d._at("alphas_cumprod_prev", t, x)  # x's own level: 1 at the data
        acp = d._at("alphas_cumprod", t, x)
        if i > 0:  # at the data x̂_0 is x itself
            pred_x0 = (x - (1 - acp_prev).sqrt() * eps) / acp_prev.sqrt()
            if clip_denoised:
                pred_x0 = pred_x0.clamp(-1.0, 1.0)
                eps = (x - acp_prev.sqrt() * pred_x0) / (1 - acp_prev).sqrt()
        else:
            pred_x0 = x
        x = acp.sqrt() * pred_x0 + (1 - acp).sqrt() * eps
    return x


def slerp(z0: torch.Tensor, z1: torch.Tensor, alpha: float | torch.Tensor) -> torch.Tensor:
    """Spherical interpolation between two noises, example by example: (B, ...) each.

    Noises from N(0, I) in high dimension lie near a sphere of radius √d; a straight line
    between two passes inside it (its midpoint has norm about √(d/2)), where the model saw
    no x_T. The great circle keeps the norm. alpha in [0, 1]: 0 gives z0, 1 gives z1.
    """
    if z0.shape != z1.shape:
        raise ValueError(f"z0 and z1 must have the same shape, got {tuple(z0.shape)} and {tuple(z1.shape)}")
    a = torch.as_tensor(alpha, dtype=z0.dtype, device=z0.device)
    if bool(((a < 0) | (a > 1)).any()):
        raise ValueError(f"alpha must lie in [0, 1], got {alpha!r}")
    flat0, flat1 = z0.reshape(z0.shape[0], -1), z1.reshape(z1.shape[0], -1)
    cos = (flat0 * flat1).sum(1) / (flat0.norm(dim=1) * flat1.norm(dim=1))
    theta = cos.clamp(-1, 1).acos().reshape(-1, *([1] * (z0.dim() - 1)))  # (B, 1, ...)
    near = theta < 1e-4  # (almost) the same direction: the straight line is the arc
    sin = torch.where(near, torch.ones_like(theta), theta.sin())
    w0 = torch.where(near, 1 - a, torch.sin((1 - a) * theta) / sin)
    w1 = torch.where(near, a.expand_as(theta), torch.sin(a * theta) / sin)
    return w0 * z0 + w1 * z1
