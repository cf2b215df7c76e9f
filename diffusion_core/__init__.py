"""diffusion_core: denoising diffusion models (DDPM and what came after), small and tested.

The math lives in `schedules`, `distributions`, `diffusion` and `sampling`;
networks in `models`; data, training and evaluation in their own modules.
"""

from ._version import __version__
from .diffusion import GaussianDiffusion, mean_flat, snap_timesteps, snap_to_levels
from .distributions import discretized_gaussian_log_likelihood, normal_kl
from .guidance import guided
from .sampling import Trajectory, ddim_invert, sample_ddim, sample_ddpm, sample_dpm_solver, sample_strided, slerp
from .schedules import Schedule, make_schedule, respace, schedule_from_betas, space_timesteps

__all__ = [
    "__version__",
    "GaussianDiffusion",
    "Schedule",
    "Trajectory",
    "ddim_invert",
    "discretized_gaussian_log_likelihood",
    "guided",
    "make_schedule",
    "mean_flat",
    "normal_kl",
    "respace",
    "sample_ddim",
    "sample_ddpm",
    "sample_dpm_solver",
    "sample_strided",
    "schedule_from_betas",
    "slerp",
    "snap_timesteps",
    "snap_to_levels",
    "space_timesteps",
]
