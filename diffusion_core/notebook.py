"""Small helpers every chapter calls first: fixed threads and seeds, and `glue`.

Float results on a CPU change with the number of threads, so the chapters fix
it. The last bits still change with the CPU's vector instructions, and a
sampler run over hundreds of steps turns them into other samples: another
machine amounts to another seed. So two knobs let anyone rerun a chapter as
another machine would:

    BOOK_SEED=<int>     shifts every seed of every chapter (unset or 0: the stored outputs)
    BOOK_THREADS=<int>  overrides the chapter's thread count

`make test-portable` runs every chapter's asserts under both.
"""

from __future__ import annotations

import math
import os
import random
from typing import Any

import numpy as np
import torch

# BOOK_SEED=s maps a chapter's seed k to k + SEED_STRIDE * s: a shifted run never reuses a
# random stream of the stored run (chapters use seeds below this stride).
SEED_STRIDE = 1000


def _env_int(name: str, minimum: int) -> int | None:
    value = os.environ.get(name, "").strip()
    if not value:
        return None
    try:
        number = int(value)
    except ValueError:
        number = None
    if number is None or number < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return number


def book_seed(seed: int) -> int:
    """`seed` shifted by the BOOK_SEED environment variable (unchanged when it is unset or 0)."""
    return seed + SEED_STRIDE * (_env_int("BOOK_SEED", 0) or 0)


def generator(seed: int) -> torch.Generator:
    """A CPU torch.Generator seeded with `book_seed(seed)`: every seeded draw of a chapter
    goes through here (or `setup`), so BOOK_SEED reruns the chapter on other random numbers."""
    return torch.Generator().manual_seed(book_seed(seed))


def setup(seed: int = 0, threads: int = 2) -> torch.Generator:
    """Fix threads and every seed; return a seeded torch.Generator for the chapter.
    BOOK_SEED shifts the seed and BOOK_THREADS overrides `threads` (see the module docstring)."""
    torch.set_num_threads(_env_int("BOOK_THREADS", 1) or threads)
    seed = book_seed(seed)
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
