"""Small helpers every chapter calls first: fixed threads and seeds, and `glue`.

Float results on a CPU change with the number of threads, so the chapters fix
it: their stored outputs then reproduce on any machine (nbval checks that).
"""

from __future__ import annotations

import random
from typing import Any

import numpy as np
import torch


def setup(seed: int = 0, threads: int = 2) -> torch.Generator:
    """Fix threads and every seed; return a seeded torch.Generator for the chapter."""
    torch.set_num_threads(threads)
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    import matplotlib.pyplot as plt

    plt.rcParams.update({"figure.dpi": 90, "savefig.dpi": 90, "axes.grid": False,
                         "figure.figsize": (6.4, 3.6)})
    return torch.Generator().manual_seed(seed)


def glue(name: str, value: Any, display: bool = False) -> Any:
    """Make `value` available to the prose as {glue:text}`name`.

    Uses myst_nb when it is there (the book build); elsewhere (Colab) it does
    nothing, so a chapter runs the same in both places.
    """
    try:
        from myst_nb import glue as _glue
    except ImportError:
        return value
    _glue(name, value, display=display)
    return value
