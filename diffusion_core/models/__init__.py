"""Networks that map (x_t, t) to a prediction; they know nothing about diffusion."""

from .mlp import MLPConfig, MLPDenoiser
from .unet import UNet, UNetConfig, count_parameters, timestep_embedding

__all__ = [
    "MLPConfig",
    "MLPDenoiser",
    "UNet",
    "UNetConfig",
    "count_parameters",
    "timestep_embedding",
]
