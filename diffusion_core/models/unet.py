"""The UNet that predicts the noise eps (and optionally the variance) from x_t and t.

The network follows the DDPM architecture (Ho et al. 2020, appendix B), a
PixelCNN++-style UNet with a Wide-ResNet backbone:

    down:    conv_in, then per level  num_res_blocks x (ResBlock [+ Attention]), Downsample
    middle:  ResBlock, Attention, ResBlock
    up:      per level  (num_res_blocks + 1) x (ResBlock on concat(h, skip) [+ Attention]), Upsample
    out:     GroupNorm, SiLU, conv_out

Every output of the down path is kept as a skip, and the up path eats them in reverse order.
The timestep t reaches every ResBlock through a sinusoidal embedding and an MLP;
with `num_classes` > 0 a learned embedding of the class label y is added to it
(classifier-free guidance, Ho & Salimans 2022), with one extra "no label" entry.
The network knows nothing about diffusion: it maps (x, t) to a tensor, and the
diffusion code decides what that tensor means (eps, and variance interpolation
values when `learn_sigma=True`, as in Nichol & Dhariwal 2021).

Read top to bottom: config, timestep embedding, the blocks, the UNet.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

_INT_DTYPES = (torch.int8, torch.int16, torch.int32, torch.int64, torch.uint8)


# -----------------------------------------------------------------------------
# Configuration


@dataclass
class UNetConfig:
    image_size: int = 32  # height = width, in pixels
    in_channels: int = 3
    base_channels: int = 128  # channels at the first level; level i has base * channel_mult[i]
    channel_mult: tuple[int, ...] = (1, 2, 2, 2)
    num_res_blocks: int = 2  # ResBlocks per level on the way down (the way up has one more)
    attention_resolutions: tuple[int, ...] = (16,)  # resolutions (pixels) with self-attention
    dropout: float = 0.1
    learn_sigma: bool = False  # if True, output 2C channels: eps and variance interpolation v
    num_groups: int = 32  # GroupNorm groups; must divide every channel count
    num_heads: int = 1
    num_classes: int = 0  # > 0: the network also takes a label y in 0..num_classes-1 (or no label)

    def __post_init__(self) -> None:
        for name in ("channel_mult", "attention_resolutions"):
            if not isinstance(getattr(self, name), (tuple, list)):
                raise ValueError(f"{name} must be a tuple of positive integers, e.g. (1, 2), "
                                 f"got {getattr(self, name)!r}")
        self.channel_mult = tuple(self.channel_mult)
        self.attention_resolutions = tuple(self.attention_resolutions)
        for name in ("image_size", "in_channels", "base_channels", "num_res_blocks",
                     "num_groups", "num_heads"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if isinstance(self.num_classes, bool) or not isinstance(self.num_classes, int) \
                or self.num_classes < 0:
            raise ValueError(f"num_classes must be an integer >= 0 (0: no labels), got {self.num_classes!r}")
        if not self.channel_mult or any(not isinstance(m, int) or m < 1
                                        for m in self.channel_mult):
            raise ValueError("channel_mult must be a non-empty tuple of positive integers, "
                             f"got {self.channel_mult!r}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout!r}")
        for ch in self.channel_counts:
            if ch % self.num_groups:
                raise ValueError(f"num_groups={self.num_groups} must divide every channel count "
                                 f"{self.channel_counts}, but does not divide {ch}")
        resolutions = self.resolutions
        for res in self.attention_resolutions:
            if res not in resolutions:
                raise ValueError(f"attention_resolutions must be among the model's resolutions "
                                 f"{resolutions}, got {res}")
            ch = self.base_channels * self.channel_mult[resolutions.index(res)]
            if ch % self.num_heads:
                raise ValueError(f"num_heads={self.num_heads} must divide the {ch} channels "
                                 f"of the attention at resolution {res}")

    @property
    def resolutions(self) -> tuple[int, ...]:
        """Spatial size of each level: a stride-2 conv maps n pixels to ceil(n / 2)."""
        sizes = [self.image_size]
        for _ in self.channel_mult[1:]:
            sizes.append((sizes[-1] + 1) // 2)
        return tuple(sizes)

    @property
    def channel_counts(self) -> tuple[int, ...]:
        return (self.base_channels,) + tuple(self.base_channels * m for m in self.channel_mult)

    @property
    def null_label(self) -> int:
        """The label value meaning "no label": the embedding's last entry."""
        return self.num_classes

    @property
    def out_channels(self) -> int:
        return self.in_channels * (2 if self.learn_sigma else 1)

    @classmethod
    def digits(cls, **overrides) -> UNetConfig:
        """8x8 grey digits (scikit-learn, 8 -> 4): 396k parameters, trains on a laptop CPU.

        One ResBlock per level and no dropout: tuned on sample quality (two blocks,
        or dropout 0.1, gave less recognisable digits within a 10-minute CPU budget).
        """
        config = dict(image_size=8, in_channels=1, base_channels=24, channel_mult=(1, 2),
                      num_res_blocks=1, attention_resolutions=(4,), dropout=0.0,
                      num_groups=8, num_heads=4)
        return cls(**{**config, **overrides})

    @classmethod
    def mnist(cls, **overrides) -> UNetConfig:
        """28x28 MNIST (28 -> 14 -> 7): 1.62M parameters."""
        config = dict(image_size=28, in_channels=1, base_channels=32, channel_mult=(1, 2, 2),
                      num_res_blocks=2, attention_resolutions=(7,), dropout=0.1,
                      num_groups=8, num_heads=4)
        return cls(**{**config, **overrides})

    @classmethod
    def cifar10(cls, **overrides) -> UNetConfig:
        """DDPM's CIFAR-10 model (Ho et al. 2020, appendix B): 35.7M parameters."""
        config = dict(image_size=32, in_channels=3, base_channels=128, channel_mult=(1, 2, 2, 2),
                      num_res_blocks=2, attention_resolutions=(16,), dropout=0.1,
                      num_groups=32, num_heads=1)
        return cls(**{**config, **overrides})


# -----------------------------------------------------------------------------
# Timestep embedding


def timestep_embedding(t: torch.Tensor, dim: int, max_period: float = 10000.0) -> torch.Tensor:
    """Sinusoidal embedding of integer timesteps, as for positions in the Transformer.

    emb[b, i] = cos(t_b * w_i), emb[b, half + i] = sin(t_b * w_i), w_i = max_period^(-i / half),
    with half = dim // 2 (a zero column is appended when dim is odd).

    t: (B,) integer timesteps. Returns (B, dim) float32.
    """
    if not isinstance(t, torch.Tensor) or t.dim() != 1:
        raise ValueError(f"t must be a tensor of shape (B,), got {_describe(t)}")
    if not isinstance(dim, int) or dim < 2:
        raise ValueError(f"dim must be an integer >= 2, got {dim!r}")
    half = dim // 2
    freqs = torch.exp(-math.log(max_period)
                      * torch.arange(half, dtype=torch.float32, device=t.device) / half)
    args = t.float()[:, None] * freqs[None, :]  # (B, half)
    emb = torch.cat([torch.cos(args), torch.sin(args)], dim=1)  # (B, 2 * half)
    if dim % 2:
        emb = F.pad(emb, (0, 1))  # (B, dim)
    return emb


# -----------------------------------------------------------------------------
# Blocks


class ResBlock(nn.Module):
    """Two 3x3 convs with the timestep added in between, plus a skip connection."""

    def __init__(self, in_ch: int, out_ch: int, temb_ch: int, dropout: float, groups: int):
        super().__init__()
        self.norm1 = nn.GroupNorm(groups, in_ch)
        self.conv1 = nn.Conv2d(in_ch, out_ch, 3, padding=1)
        self.temb_proj = nn.Linear(temb_ch, out_ch)
        self.norm2 = nn.GroupNorm(groups, out_ch)
        self.dropout = nn.Dropout(dropout)
        self.conv2 = nn.Conv2d(out_ch, out_ch, 3, padding=1)
        self.skip = nn.Conv2d(in_ch, out_ch, 1) if in_ch != out_ch else nn.Identity()
        # Zero-init the last conv (as DDPM does): the block starts as the identity, so a
        # deep untrained UNet is a shallow net whose activations do not grow with depth.
        nn.init.zeros_(self.conv2.weight)
        nn.init.zeros_(self.conv2.bias)

    def forward(self, x: torch.Tensor, temb: torch.Tensor) -> torch.Tensor:
        # temb: (B, temb_ch), already passed through SiLU once by the UNet for all blocks
        h = self.conv1(F.silu(self.norm1(x)))  # (B, out_ch, H, W)
        h = h + self.temb_proj(temb)[:, :, None, None]  # broadcast over H, W
        h = self.conv2(self.dropout(F.silu(self.norm2(h))))
        return self.skip(x) + h


class AttentionBlock(nn.Module):
    """Multi-head self-attention over the H*W positions of a feature map, with a residual."""

    def __init__(self, ch: int, num_heads: int, groups: int):
        super().__init__()
        self.num_heads = num_heads
        self.norm = nn.GroupNorm(groups, ch)
        # DDPM's 1x1 convs, written as Linear layers on (B, HW, C) tokens (same parameters):
        # q, k, v then come out with contiguous head dims, which the fast SDPA kernels want.
        self.qkv = nn.Linear(ch, 3 * ch)
        self.proj = nn.Linear(ch, ch)
        # Zero-init the output projection (as DDPM does): the block starts as the identity.
        nn.init.zeros_(self.proj.weight)
        nn.init.zeros_(self.proj.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, C, H, W = x.shape
        nh = self.num_heads
        tokens = self.norm(x).permute(0, 2, 3, 1).reshape(B, H * W, C)  # (B, HW, C)
        qkv = self.qkv(tokens).reshape(B, H * W, 3, nh, C // nh)  # (B, HW, 3, nh, hs)
        q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)  # each (B, nh, HW, hs)
        h = F.scaled_dot_product_attention(q, k, v)  # (B, nh, HW, hs)
        h = self.proj(h.transpose(1, 2).reshape(B, H * W, C))  # (B, HW, C)
        return x + h.reshape(B, H, W, C).permute(0, 3, 1, 2)  # (B, C, H, W)


class Downsample(nn.Module):
    """Halve the resolution with a stride-2 3x3 conv: n pixels -> ceil(n / 2)."""

    def __init__(self, ch: int):
        super().__init__()
        self.conv = nn.Conv2d(ch, ch, 3, stride=2, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


class Upsample(nn.Module):
    """Nearest-neighbour upsampling to the skip's exact size (4 -> 7, 7 -> 14), then a conv."""

    def __init__(self, ch: int):
        super().__init__()
        self.conv = nn.Conv2d(ch, ch, 3, padding=1)

    def forward(self, x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        return self.conv(F.interpolate(x, size=size, mode="nearest"))


class ResAttnBlock(nn.Module):
    """A ResBlock followed by self-attention at the resolutions that have it."""

    def __init__(self, res: ResBlock, attn: AttentionBlock | None):
        super().__init__()
        self.res = res
        self.attn = attn if attn is not None else nn.Identity()

    def forward(self, x: torch.Tensor, temb: torch.Tensor) -> torch.Tensor:
        return self.attn(self.res(x, temb))


# -----------------------------------------------------------------------------
# The UNet


class UNet(nn.Module):
    """eps_theta(x_t, t): (B, C, H, W) images and (B,) timesteps -> (B, C or 2C, H, W)."""

    def __init__(self, config: UNetConfig):
        super().__init__()
        self.config = config
        cfg = config
        ch, groups = cfg.base_channels, cfg.num_groups
        temb_ch = 4 * ch

        def block(c_in: int, c_out: int, res: int) -> ResAttnBlock:
            attn = None
            if res in cfg.attention_resolutions:
                attn = AttentionBlock(c_out, cfg.num_heads, groups)
            return ResAttnBlock(ResBlock(c_in, c_out, temb_ch, cfg.dropout, groups), attn)

        self.time_mlp = nn.Sequential(nn.Linear(ch, temb_ch), nn.SiLU(),
                                      nn.Linear(temb_ch, temb_ch))
        # One vector per class and one for "no label", added to the time embedding: the
        # same network is the conditional and the unconditional model.
        self.label_emb = nn.Embedding(cfg.num_classes + 1, temb_ch) if cfg.num_classes else None
        self.conv_in = nn.Conv2d(cfg.in_channels, ch, 3, padding=1)

        # Down path. Every output (conv_in's too) is kept as a skip for the up path.
        skip_chs = [ch]
        c = ch
        self.down = nn.ModuleList()  # one nn.ModuleList of blocks per level
        self.downsample = nn.ModuleList()  # between levels
        for i, (mult, res) in enumerate(zip(cfg.channel_mult, cfg.resolutions, strict=True)):
            level = nn.ModuleList()
            for _ in range(cfg.num_res_blocks):
                level.append(block(c, ch * mult, res))
                c = ch * mult
                skip_chs.append(c)
            self.down.append(level)
            if i < len(cfg.channel_mult) - 1:
                self.downsample.append(Downsample(c))
                skip_chs.append(c)

        self.mid_block1 = ResBlock(c, c, temb_ch, cfg.dropout, groups)
        self.mid_attn = AttentionBlock(c, cfg.num_heads, groups)
        self.mid_block2 = ResBlock(c, c, temb_ch, cfg.dropout, groups)

        # Up path: one more block per level than on the way down, each eating one skip.
        self.up = nn.ModuleList()
        self.upsample = nn.ModuleList()
        for i in reversed(range(len(cfg.channel_mult))):
            mult, res = cfg.channel_mult[i], cfg.resolutions[i]
            level = nn.ModuleList()
            for _ in range(cfg.num_res_blocks + 1):
                level.append(block(c + skip_chs.pop(), ch * mult, res))
                c = ch * mult
            self.up.append(level)
            if i > 0:
                self.upsample.append(Upsample(c))

        self.norm_out = nn.GroupNorm(groups, c)
        self.conv_out = nn.Conv2d(c, cfg.out_channels, 3, padding=1)
        # Zero-init the last conv: the untrained model predicts exactly 0 (the mean of eps).
        nn.init.zeros_(self.conv_out.weight)
        nn.init.zeros_(self.conv_out.bias)

    def forward(self, x: torch.Tensor, t: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        """y: (B,) labels in 0..num_classes-1, or `config.null_label` for "no label"; None
        means no label for every example (the only choice when num_classes is 0)."""
        cfg = self.config
        check_model_inputs(x, t, (cfg.in_channels, cfg.image_size, cfg.image_size),
                           "(B, in_channels, image_size, image_size)")
        temb = self.time_mlp(timestep_embedding(t, cfg.base_channels).to(x.dtype))  # (B, 4 * ch)
        if self.label_emb is not None:
            if y is None:
                y = torch.full_like(t, cfg.null_label, dtype=torch.long)
            check_labels(y, x.shape[0])
            temb = temb + self.label_emb(y.long()).to(temb.dtype)
        elif y is not None:
            raise ValueError("y was given, but this UNet has num_classes=0 and takes no labels: "
                             "build it with UNetConfig(num_classes=...)")
        # Every ResBlock applies SiLU to the embedding before its projection; do it once here.
        temb = F.silu(temb)  # (B, 4 * ch)

        h = self.conv_in(x)  # (B, ch, H, W)
        skips = [h]
        for i, level in enumerate(self.down):
            for block in level:
                h = block(h, temb)
                skips.append(h)
            if i < len(self.downsample):
                h = self.downsample[i](h)  # (B, c, ceil(H / 2), ceil(W / 2))
                skips.append(h)

        h = self.mid_block2(self.mid_attn(self.mid_block1(h, temb)), temb)

        for i, level in enumerate(self.up):
            for block in level:
                h = block(torch.cat([h, skips.pop()], dim=1), temb)  # concat on channels
            if i < len(self.upsample):
                h = self.upsample[i](h, skips[-1].shape[-2:])  # to the next skip's size

        return self.conv_out(F.silu(self.norm_out(h)))  # (B, C or 2C, H, W)


# -----------------------------------------------------------------------------
# Helpers


def count_parameters(model: nn.Module) -> int:
    """Number of trainable parameters."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def _describe(value: object) -> str:
    if isinstance(value, torch.Tensor):
        return f"shape {tuple(value.shape)} and dtype {value.dtype}"
    return f"{type(value).__name__}"


def check_labels(y: object, batch: int) -> None:
    """y must be an integer tensor of shape (B,). Its values are not read here (that would
    wait on a GPU): the samplers and the training loop check them once, up front."""
    if not isinstance(y, torch.Tensor) or y.dtype not in _INT_DTYPES or y.shape != (batch,):
        raise ValueError(f"y must be an integer tensor of labels with shape (B,) = ({batch},), "
                         f"got {_describe(y)}")


def check_model_inputs(x: object, t: object, sample_shape: tuple[int, ...],
                       expected: str) -> None:
    """Check a network's (x, t): x float of shape (B, *sample_shape), t integer of shape (B,).

    `expected` spells the shape of x in words for the error message.
    """
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"x must be a torch.Tensor of shape {expected}, got {_describe(x)}")
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"t must be an integer torch.Tensor of shape (B,), got {_describe(t)}")
    if tuple(x.shape[1:]) != tuple(sample_shape) or x.dim() != len(sample_shape) + 1:
        want = ", ".join(str(s) for s in sample_shape)
        raise ValueError(f"x must have shape {expected} = (B, {want}), "
                         f"got shape {tuple(x.shape)}")
    if not x.is_floating_point():
        raise TypeError(f"x must be a floating-point tensor, got dtype {x.dtype}")
    if t.dtype not in _INT_DTYPES:
        raise TypeError(f"t must be an integer tensor (e.g. torch.long), got dtype {t.dtype}")
    if t.dim() != 1 or t.shape[0] != x.shape[0]:
        raise ValueError(f"t must have shape (B,) = ({x.shape[0]},) to match x, "
                         f"got shape {tuple(t.shape)}")
