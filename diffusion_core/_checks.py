"""Input checks shared by the public functions.

Each check raises with a message that names the argument and what is accepted,
so that a reader who passes a wrong value learns the rule, not just that a rule
exists. The inner math stays free of checks.
"""

from __future__ import annotations

import torch

_INT_DTYPES = (torch.int8, torch.int16, torch.int32, torch.int64, torch.uint8)


def check_tensor(x: object, name: str) -> torch.Tensor:
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    return x


def check_finite(x: torch.Tensor, name: str) -> None:
    if x.is_floating_point() and not bool(torch.isfinite(x).all()):
        raise ValueError(f"{name} contains NaN or infinite values")


def check_float(x: object, name: str) -> torch.Tensor:
    x = check_tensor(x, name)
    if not x.is_floating_point():
        raise TypeError(f"{name} must be a floating-point tensor, got dtype {x.dtype}")
    check_finite(x, name)
    return x


def check_timesteps(t: object, T: int, batch: int | None = None, name: str = "t") -> torch.Tensor:
    """`t` must be an integer tensor of shape (B,) with values in 0..T-1."""
    t = check_tensor(t, name)
    if t.dtype not in _INT_DTYPES:
        raise TypeError(f"{name} must be an integer tensor (e.g. torch.long), got dtype {t.dtype}")
    if t.dim() != 1:
        raise ValueError(f"{name} must have shape (B,), got shape {tuple(t.shape)}")
    if batch is not None and t.shape[0] != batch:
        raise ValueError(f"{name} must have shape (B,) = ({batch},) to match the batch, "
                         f"got shape {tuple(t.shape)}")
    if t.numel() and (int(t.min()) < 0 or int(t.max()) > T - 1):
        raise ValueError(f"{name} must hold timesteps in 0..T-1 = 0..{T - 1}, "
                         f"got values in {int(t.min())}..{int(t.max())}")
    return t.long()


def check_same_shape(a: torch.Tensor, b: torch.Tensor, name_a: str, name_b: str) -> None:
    if a.shape != b.shape:
        raise ValueError(f"{name_a} and {name_b} must have the same shape, "
                         f"got {tuple(a.shape)} and {tuple(b.shape)}")


def check_in_unit_range(x: torch.Tensor, name: str, tol: float = 1e-6) -> None:
    """Data the discrete decoder scores must lie in [-1, 1]."""
    lo, hi = float(x.min()), float(x.max())
    if lo < -1 - tol or hi > 1 + tol:
        raise ValueError(f"{name} must lie in [-1, 1] (images scaled from 0..255), "
                         f"got values in [{lo:.4g}, {hi:.4g}]")


def check_batched(x: torch.Tensor, name: str) -> None:
    if x.dim() < 2:
        raise ValueError(f"{name} must have a batch dimension, shape (B, ...), "
                         f"got shape {tuple(x.shape)}")
