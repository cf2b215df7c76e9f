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
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from tqdm.auto import tqdm

from .diffusion import GaussianDiffusion, Model


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


@torch.no_grad()
def _loop(diffusion: GaussianDiffusion, model: Model, shape: tuple[int, ...], step, *,
          eta: float = 0.0, noise: torch.Tensor | None = None,
          generator: torch.Generator | None = None, device: torch.device | str | None = None,
          dtype: torch.dtype = torch.float32, clip_denoised: bool = True, num_frames: int = 0,
          progress: bool = True, desc: str = "sampling"):
    shape = tuple(int(s) for s in shape)
    if len(shape) < 2 or min(shape) < 1:
        raise ValueError(f"shape must be (B, C, ...) with positive sizes, got {shape}")
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
    progress, num_frames (> 0 also returns a `Trajectory` of that many frames).
    Returns x_0 (B, C, ...) or (x_0, Trajectory).
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
