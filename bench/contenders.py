"""The networks the speed benchmark compares, each built by name.

Three peers, each paired with a `UNetConfig` of ours whose parameter count is within
10% of the peer's, at two input shapes (1x28x28 and 3x32x32):

    lucidrains   denoising_diffusion_pytorch.Unet(dim=32, dim_mults=(1, 2, 2))
                 channels 32, 32, 64 at 28, 14, 7 px; linear attention at 28 and 14 px,
                 full attention at 7 px and in the middle.
    diffusers    UNet2DModel(block_out_channels=(32, 64, 64)), 2 ResBlocks per level,
                 attention at the lowest level (7 px) and in the middle: the DDPM layout,
                 which is also ours, so `UNetConfig.mnist()` matches it block for block.
    diffusers-noattn   the same with 1 ResBlock per level and no attention at all.

Ours runs with dropout 0, as the peers do by default, so every contender does the same
kind of work. `UNetConfig.digits()` at 8x8 is timed alone, as a reference. At 1x28x28 every
contender also runs "tuned": weights and inputs in channels_last (NHWC), the layout oneDNN's
convolutions use natively, so each peer gets the same tuning as ours.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

# The torchvision stand-in (see stubs/torchvision/__init__.py), for this process only.
sys.path.insert(0, str(Path(__file__).resolve().parent / "stubs"))

SHAPES = {"1x28x28": (1, 28), "3x32x32": (3, 32)}  # name -> (channels, size)
TUNED_SHAPES = ("1x28x28",)  # where every contender also runs in channels_last


@dataclass
class Contender:
    name: str  # unique, e.g. "ours~lucidrains 1x28x28"
    library: str  # "ours", "lucidrains" or "diffusers"
    shape: tuple[int, int, int]  # (C, H, W) of one input image
    build: Callable[[], nn.Module]
    config: str  # how it is built, for the report
    channels_last: bool = False  # the tuned twin: NHWC weights and inputs (oneDNN's own layout)

    def forward(self, model: nn.Module, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """eps prediction (B, C, H, W) from x (B, C, H, W) and integer timesteps t (B,)."""
        if self.library == "diffusers":
            return model(x, t, return_dict=False)[0]
        return model(x, t)


@dataclass
class Pair:
    peer: str  # contender names
    ours: str


def _ours(channels: int, size: int, **overrides) -> Callable[[], nn.Module]:
    from diffusion_core.models.unet import UNet, UNetConfig

    lowest = (size + 3) // 4  # the third level's resolution: 28 -> 7, 32 -> 8
    config = dict(image_size=size, in_channels=channels, attention_resolutions=(lowest,), dropout=0.0)
    config.update(overrides)
    return lambda: UNet(UNetConfig.mnist(**config))


def _lucidrains(channels: int) -> nn.Module:
    from denoising_diffusion_pytorch import Unet

    return Unet(dim=32, dim_mults=(1, 2, 2), channels=channels)


def _diffusers(channels: int, size: int, attention: bool) -> nn.Module:
    from diffusers import UNet2DModel

    if attention:
        down = ("DownBlock2D", "DownBlock2D", "AttnDownBlock2D")
        up = ("AttnUpBlock2D", "UpBlock2D", "UpBlock2D")
    else:
        down, up = ("DownBlock2D",) * 3, ("UpBlock2D",) * 3
    return UNet2DModel(sample_size=size, in_channels=channels, out_channels=channels,
                       block_out_channels=(32, 64, 64), down_block_types=down, up_block_types=up,
                       layers_per_block=2 if attention else 1, add_attention=attention)


def contenders() -> dict[str, Contender]:
    """Every contender, keyed by name."""
    out = {}
    for shape_name, (c, s) in SHAPES.items():
        shape = (c, s, s)
        low = (s + 3) // 4
        entries = [
            Contender(f"lucidrains {shape_name}", "lucidrains", shape,
                      lambda c=c: _lucidrains(c), "Unet(dim=32, dim_mults=(1, 2, 2))"),
            Contender(f"ours~lucidrains {shape_name}", "ours", shape,
                      _ours(c, s, base_channels=36, num_groups=9, channel_mult=(1, 1, 2)),
                      f"UNetConfig.mnist(base_channels=36, num_groups=9, channel_mult=(1, 1, 2), "
                      f"attention_resolutions=({low},), dropout=0)"),
            Contender(f"diffusers {shape_name}", "diffusers", shape,
                      lambda c=c, s=s: _diffusers(c, s, attention=True),
                      "UNet2DModel(block_out_channels=(32, 64, 64), layers_per_block=2, "
                      "attention at the last level and mid)"),
            Contender(f"ours~diffusers {shape_name}", "ours", shape, _ours(c, s),
                      f"UNetConfig.mnist(attention_resolutions=({low},), dropout=0)"),
            Contender(f"diffusers-noattn {shape_name}", "diffusers", shape,
                      lambda c=c, s=s: _diffusers(c, s, attention=False),
                      "UNet2DModel(block_out_channels=(32, 64, 64), layers_per_block=1, "
                      "add_attention=False)"),
            Contender(f"ours~diffusers-noattn {shape_name}", "ours", shape,
                      _ours(c, s, num_res_blocks=1, attention_resolutions=()),
                      "UNetConfig.mnist(num_res_blocks=1, attention_resolutions=(), dropout=0); "
                      f"keeps its one middle attention at {low}x{low} (not switchable)"),
        ]
        if shape_name in TUNED_SHAPES:  # each contender again, channels_last: "tuned" rows
            entries += [Contender(e.name.replace(f" {shape_name}", f" channels_last {shape_name}"), e.library,
                                  e.shape, e.build, f"{e.config}; channels_last", channels_last=True)
                        for e in list(entries)]
        out.update({e.name: e for e in entries})

    def digits() -> nn.Module:
        from diffusion_core.models.unet import UNet, UNetConfig

        return UNet(UNetConfig.digits())

    out["ours digits 1x8x8"] = Contender("ours digits 1x8x8", "ours", (1, 8, 8), digits,
                                         "UNetConfig.digits() (dropout 0.1, as the preset)")
    out["ours digits channels_last 1x8x8"] = Contender(
        "ours digits channels_last 1x8x8", "ours", (1, 8, 8), digits,
        "UNetConfig.digits() (dropout 0.1, as the preset); channels_last", channels_last=True)
    return out


def pairs() -> list[Pair]:
    """(peer, ours) pairs whose speed ratio the benchmark reports."""
    return [Pair(f"{peer}{tuned} {shape}", f"ours~{peer}{tuned} {shape}")
            for shape in SHAPES for tuned in ("", " channels_last")
            for peer in ("lucidrains", "diffusers", "diffusers-noattn")
            if not tuned or shape in TUNED_SHAPES]


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
