"""Noise schedules β_1..β_T and every table derived from them.

Timesteps are 0-based: index t = 0..T-1 holds the paper's step t+1. All tables
are float64: the book's assert cells compare them with independent estimates,
and float32 loses about 1e-7 relative precision in ᾱ_t near t = T.

Paper equations referred to below:
- DDPM (Ho et al. 2020), eq. 4: q(x_t | x_0) = N(√ᾱ_t x_0, (1 - ᾱ_t) I).
- DDPM eq. 6-7: the posterior q(x_{t-1} | x_t, x_0) = N(μ̃_t, β̃_t I) with
  μ̃_t = √ᾱ_{t-1} β_t / (1 - ᾱ_t) · x_0 + √α_t (1 - ᾱ_{t-1}) / (1 - ᾱ_t) · x_t,
  β̃_t = (1 - ᾱ_{t-1}) / (1 - ᾱ_t) · β_t.
- Improved DDPM (Nichol & Dhariwal 2021), eq. 17: the cosine schedule.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields

import torch

from ._checks import check_tensor

SCHEDULES = ("linear", "cosine")


@dataclass(frozen=True)
class Schedule:
    """Float64 tables of length T, indexed by the 0-based timestep t."""

    betas: torch.Tensor                     # β_t
    alphas: torch.Tensor                    # α_t = 1 - β_t
    alphas_cumprod: torch.Tensor            # ᾱ_t = Π_{s≤t} α_s
    alphas_cumprod_prev: torch.Tensor       # ᾱ_{t-1}, with ᾱ_{-1} = 1
    sqrt_alphas_cumprod: torch.Tensor       # √ᾱ_t, the signal scale of q(x_t | x_0)
    sqrt_one_minus_alphas_cumprod: torch.Tensor  # √(1 - ᾱ_t), the noise scale
    posterior_variance: torch.Tensor        # β̃_t (0 at t = 0)
    posterior_log_variance_clipped: torch.Tensor  # log β̃_t, with β̃_1 used at t = 0
    posterior_mean_coef1: torch.Tensor      # the coefficient of x_0 in μ̃_t
    posterior_mean_coef2: torch.Tensor      # the coefficient of x_t in μ̃_t

    @property
    def T(self) -> int:
        return self.betas.shape[0]

    @property
    def snr(self) -> torch.Tensor:
        """Signal-to-noise ratio ᾱ_t / (1 - ᾱ_t) of q(x_t | x_0)."""
        return self.alphas_cumprod / (1.0 - self.alphas_cumprod)

    def to(self, device: torch.device | str) -> Schedule:
        return Schedule(**{f.name: getattr(self, f.name).to(device) for f in fields(self)})


def _check_T(T: object) -> int:
    if isinstance(T, bool) or not isinstance(T, int):
        raise TypeError(f"T must be an int (the number of diffusion steps), got {type(T).__name__}")
    if T < 1:
        raise ValueError(f"T must be >= 1 (the number of diffusion steps), got {T}")
    return T


def linear_betas(T: int) -> torch.Tensor:
    """DDPM's schedule: β from 1e-4 to 0.02 at T = 1000, both ends scaled by 1000/T.

    The scaling keeps ᾱ_T (so the prior match) about the same for other T.
    """
    scale = 1000.0 / T
    return torch.linspace(scale * 1e-4, scale * 0.02, T, dtype=torch.float64)


def cosine_betas(T: int, s: float = 0.008, max_beta: float = 0.999) -> torch.Tensor:
    """Improved DDPM eq. 17: ᾱ(t) = f(t)/f(0), f(t) = cos²((t/T + s)/(1 + s) · π/2).

    β_t = 1 - ᾱ(t+1)/ᾱ(t), clipped at `max_beta` because the last step would
    otherwise be exactly 1 (ᾱ(T) = 0).
    """
    def f(t: float) -> float:
        return math.cos((t / T + s) / (1 + s) * math.pi / 2) ** 2

    betas = [min(1.0 - f(i + 1) / f(i), max_beta) for i in range(T)]
    return torch.tensor(betas, dtype=torch.float64)


def schedule_from_betas(betas: torch.Tensor) -> Schedule:
    """Every table of `Schedule` from β (shape (T,), values in (0, 1))."""
    betas = check_tensor(betas, "betas")
    if betas.dim() != 1 or betas.numel() < 1:
        raise ValueError(f"betas must have shape (T,) with T >= 1, got shape {tuple(betas.shape)}")
    betas = betas.to(torch.float64)
    if not bool(torch.isfinite(betas).all()):
        raise ValueError("betas contains NaN or infinite values")
    if float(betas.min()) <= 0.0 or float(betas.max()) >= 1.0:
        raise ValueError(f"betas must lie in the open interval (0, 1), got values in "
                         f"[{float(betas.min()):.4g}, {float(betas.max()):.4g}]")

    alphas = 1.0 - betas
    alphas_cumprod = torch.cumprod(alphas, dim=0)
    alphas_cumprod_prev = torch.cat([alphas_cumprod.new_ones(1), alphas_cumprod[:-1]])
    posterior_variance = betas * (1.0 - alphas_cumprod_prev) / (1.0 - alphas_cumprod)
    # β̃ is 0 at t = 0 (x_0 is known there); its log would be -inf, so use β̃ at t = 1,
    # as improved DDPM does. With T = 1 there is no t = 1: fall back to β.
    first = posterior_variance[1:2] if betas.numel() > 1 else betas[:1]
    posterior_log_variance_clipped = torch.log(torch.cat([first, posterior_variance[1:]]))
    return Schedule(
        betas=betas,
        alphas=alphas,
        alphas_cumprod=alphas_cumprod,
        alphas_cumprod_prev=alphas_cumprod_prev,
        sqrt_alphas_cumprod=alphas_cumprod.sqrt(),
        sqrt_one_minus_alphas_cumprod=(1.0 - alphas_cumprod).sqrt(),
        posterior_variance=posterior_variance,
        posterior_log_variance_clipped=posterior_log_variance_clipped,
        posterior_mean_coef1=betas * alphas_cumprod_prev.sqrt() / (1.0 - alphas_cumprod),
        posterior_mean_coef2=(1.0 - alphas_cumprod_prev) * alphas.sqrt() / (1.0 - alphas_cumprod),
    )


def make_schedule(name: str, T: int) -> Schedule:
    """The named schedule (`"linear"` or `"cosine"`) with T steps."""
    T = _check_T(T)
    if name == "linear":
        betas = linear_betas(T)
    elif name == "cosine":
        betas = cosine_betas(T)
    else:
        raise ValueError(f"name must be one of {SCHEDULES}, got {name!r}")
    if float(betas.max()) >= 1.0:
        raise ValueError(f"the {name} schedule with T={T} has betas >= 1 (largest "
                         f"{float(betas.max()):.3g}); betas must lie in (0, 1): use a larger T")
    return schedule_from_betas(betas)


def space_timesteps(T: int, num_steps: int) -> torch.Tensor:
    """`num_steps` timesteps out of 0..T-1, evenly strided, always keeping t = T-1.

    Keeping the last step means sampling still starts from (nearly) pure noise.
    """
    T = _check_T(T)
    if isinstance(num_steps, bool) or not isinstance(num_steps, int):
        raise TypeError(f"num_steps must be an int, got {type(num_steps).__name__}")
    if not 1 <= num_steps <= T:
        raise ValueError(f"num_steps must be in 1..T = 1..{T}, got {num_steps}")
    # Round a float grid from T-1 down to 0; distinct because the stride is >= 1.
    steps = torch.linspace(T - 1, 0, num_steps, dtype=torch.float64).round().long()
    return steps.flip(0).unique()


def respace(schedule: Schedule, timesteps: torch.Tensor) -> Schedule:
    """The schedule that jumps between the kept `timesteps` (increasing, in 0..T-1).

    It has the same ᾱ at the kept steps; its betas are recomputed as
    β'_i = 1 - ᾱ_{k_i} / ᾱ_{k_{i-1}} (improved DDPM, section 4). A model trained
    on the full schedule is then called with the ORIGINAL timesteps k_i.
    """
    timesteps = check_tensor(timesteps, "timesteps")
    if timesteps.dim() != 1 or timesteps.numel() < 1:
        raise ValueError(f"timesteps must have shape (K,) with K >= 1, got {tuple(timesteps.shape)}")
    k = timesteps.long()
    if int(k.min()) < 0 or int(k.max()) > schedule.T - 1:
        raise ValueError(f"timesteps must lie in 0..T-1 = 0..{schedule.T - 1}, "
                         f"got values in {int(k.min())}..{int(k.max())}")
    if k.numel() > 1 and not bool((k[1:] > k[:-1]).all()):
        raise ValueError("timesteps must be strictly increasing")
    acp = schedule.alphas_cumprod[k]
    acp_prev = torch.cat([acp.new_ones(1), acp[:-1]])
    return schedule_from_betas(1.0 - acp / acp_prev)
