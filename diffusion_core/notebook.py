"""Small helpers every chapter calls first: fixed threads and seeds, and `glue`.

Float results on a CPU change with the number of threads, so the chapters fix
it: their stored outputs then reproduce on any machine (nbval checks that).
"""

from __future__ import annotations

import math
import random
from typing import Any

import numpy as np
import torch


def setup(seed: int = 0, threads: int = 2) -> torch.Generator:
    """Fix threads and every seed; return a seeded torch.Generator for the chapter."""
    torch.set_num_threads(threads)
    random.seed(seed)
    np.random.seed(seed)  # noqa: NPY002 (the global generator is what chapter code uses)
    torch.manual_seed(seed)
    import matplotlib.pyplot as plt

    plt.rcParams.update({"figure.dpi": 90, "savefig.dpi": 90, "axes.grid": False,
                         "figure.figsize": (6.4, 3.6)})
    return torch.Generator().manual_seed(seed)


def glue(name: str, value: Any, display: bool = False, digits: int = 4) -> None:
    """Make `value` available to the prose as {glue:text}`name`.

    Numbers are stored as plain Python numbers (a numpy or torch scalar's repr,
    such as `np.float32(1.5)`, cannot be formatted by the prose), floats rounded
    to `digits` significant digits: the prose shows a few digits, and the last
    bits of a float differ between CPUs, which nbval would report as a changed
    output. Uses myst_nb when it is there (the book build); elsewhere (Colab) it
    does nothing, so a chapter runs the same in both places. Returns None, so a
    cell that ends with it prints nothing.
    """
    try:
        from myst_nb import glue as _glue
    except ImportError:
        return
    _glue(name, plain_number(value, digits), display=display)


def plain_number(value: Any, digits: int) -> Any:
    """A numpy / torch scalar as a Python number; a float rounded to `digits` significant digits."""
    if isinstance(value, torch.Tensor) and value.numel() == 1:
        value = value.item()
    elif isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and math.isfinite(value):
        value = float(f"{value:.{digits}g}")
    return value
