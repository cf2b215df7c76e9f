"""A small residual MLP that predicts eps from (x_t, t) for low-dimensional toy data.

The 2-D toys (two moons, Swiss roll) need no convolutions: a few residual blocks of
width 128 (~60k parameters) learn their noise in seconds on a CPU. The timestep
enters every block, through the same sinusoidal embedding as the UNet's.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .unet import check_model_inputs, timestep_embedding


@dataclass
class MLPConfig:
    data_dim: int = 2  # D, the dimension of one sample
    hidden: int = 128
    num_layers: int = 3  # residual blocks
    time_embed_dim: int = 32
    learn_sigma: bool = False  # if True, output 2D values: eps and variance interpolation v

    def __post_init__(self) -> None:
        for name in ("data_dim", "hidden", "num_layers"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if not isinstance(self.time_embed_dim, int) or self.time_embed_dim < 2:
            raise ValueError(f"time_embed_dim must be an integer >= 2, got {self.time_embed_dim!r}")

    @property
    def out_dim(self) -> int:
        return self.data_dim * (2 if self.learn_sigma else 1)


class MLPBlock(nn.Module):
    """h + Linear(SiLU(h + time projection)): the timestep shifts the block's input."""

    def __init__(self, hidden: int, time_embed_dim: int):
        super().__init__()
        self.time_proj = nn.Linear(time_embed_dim, hidden)
        self.fc = nn.Linear(hidden, hidden)

    def forward(self, h: torch.Tensor, temb: torch.Tensor) -> torch.Tensor:
        return h + self.fc(F.silu(h + self.time_proj(temb)))  # (B, hidden)


class MLPDenoiser(nn.Module):
    """eps_theta(x_t, t): (B, D) samples and (B,) timesteps -> (B, D or 2D)."""

    def __init__(self, config: MLPConfig):
        super().__init__()
        self.config = config
        cfg = config
        self.fc_in = nn.Linear(cfg.data_dim, cfg.hidden)
        self.blocks = nn.ModuleList(MLPBlock(cfg.hidden, cfg.time_embed_dim)
                                    for _ in range(cfg.num_layers))
        self.fc_out = nn.Linear(cfg.hidden, cfg.out_dim)
        # Zero-init the output layer, as in the UNet: the untrained model predicts eps = 0.
        nn.init.zeros_(self.fc_out.weight)
        nn.init.zeros_(self.fc_out.bias)

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        cfg = self.config
        check_model_inputs(x, t, (cfg.data_dim,), "(B, data_dim)")
        temb = timestep_embedding(t, cfg.time_embed_dim).to(x.dtype)  # (B, time_embed_dim)
        h = self.fc_in(x)  # (B, hidden)
        for block in self.blocks:
            h = block(h, temb)
        return self.fc_out(F.silu(h))  # (B, D or 2D)
