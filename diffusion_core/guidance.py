"""Classifier-free guidance (Ho & Salimans 2022): one network, conditional and not.

A conditional UNet (`UNetConfig(num_classes=K)`) takes a label y in 0..K-1, or the
extra label K that means "no label". Training replaces each label by "no label"
with probability p_uncond (`drop_labels`), so the one network learns both
ε̂(x_t, y) and ε̂(x_t, ∅). Sampling mixes the two (`guided`):

    ε̂_s = ε̂(x_t, ∅) + s · (ε̂(x_t, y) - ε̂(x_t, ∅))

s = 0 is the unconditional model, s = 1 the conditional one, s > 1 pushes further
along the direction the label adds. As a score, -ε̂/√(1 - ᾱ_t) = ∇ log p_t(x), the
mix is ∇ log p_t(x) + s ∇ log p_t(y | x), the score of p_t(x) p_t(y | x)^s: an implicit
classifier sharpened to the power s, and no classifier trained. (The samples are only
roughly draws of p(x) p(y | x)^s: those tilted densities at each t are not the marginals
of one diffusion.)
"""

from __future__ import annotations

import math

import torch
from torch import nn

from .diffusion import Model
from .models.unet import check_labels


def num_classes_of(model: object) -> int:
    """The number of labels a network takes (0: it takes none)."""
    config = getattr(model, "config", None)
    return int(getattr(config, "num_classes", 0) or 0)


def check_guidance(model: object, y: object, guidance_scale: object, batch: int) -> torch.Tensor | None:
    """Check a sampler's y and guidance_scale before any work; returns y as long (or None)."""
    if isinstance(guidance_scale, bool) or not isinstance(guidance_scale, (int, float)) \
            or not math.isfinite(guidance_scale) or guidance_scale < 0:
        raise ValueError(f"guidance_scale must be a finite number >= 0 (0: unconditional, "
                         f"1: conditional, > 1: guided), got {guidance_scale!r}")
    if y is None:
        if guidance_scale != 1:
            raise ValueError(f"guidance_scale={guidance_scale} needs labels y to guide towards")
        return None
    k = num_classes_of(model)
    if k == 0:
        raise ValueError("y was given, but the model takes no labels (its config has no "
                         "num_classes > 0): train it with --num-classes")
    check_labels(y, batch)
    if y.numel() and (int(y.min()) < 0 or int(y.max()) > k - 1):
        raise ValueError(f"y must hold labels in 0..num_classes-1 = 0..{k - 1}, "
                         f"got values in {int(y.min())}..{int(y.max())}")
    return y.long()


def guided(model: nn.Module, y: torch.Tensor, guidance_scale: float = 1.0) -> Model:
    """The model (x_t, t) -> ε̂_s of the module docstring, for labels y (B,).

    With learned variances (2C channels) the variance half comes from the conditional
    branch. For s other than 0 and 1 both branches run in one batched call of 2B.
    Unchecked: the samplers call `check_guidance` first.
    """
    null = num_classes_of(model)
    s = float(guidance_scale)

    def eps_guided(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        labels = y.to(t.device)
        if s == 1.0:
            return model(x, t, labels)
        if s == 0.0:
            return model(x, t, torch.full_like(labels, null))
        out = model(torch.cat([x, x]), torch.cat([t, t]), torch.cat([labels, torch.full_like(labels, null)]))
        cond, uncond = out.chunk(2)
        C = x.shape[1]
        eps = uncond[:, :C] + s * (cond[:, :C] - uncond[:, :C])
        return torch.cat([eps, cond[:, C:]], dim=1)

    return eps_guided


def drop_labels(y: torch.Tensor, p_uncond: float, num_classes: int,
                generator: torch.Generator | None = None) -> torch.Tensor:
    """y (B,) with each label replaced by "no label" (= num_classes) with probability p_uncond."""
    drop = torch.rand(y.shape, generator=generator, device=y.device) < p_uncond
    return torch.where(drop, torch.full_like(y, num_classes), y)
