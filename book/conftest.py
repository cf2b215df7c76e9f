"""pytest set-up for the chapters: `pytest --nbval book/` applies the book's sanitizer
(nbval_sanitize.cfg beside this file) without any other flag. An explicit
--nbval-sanitize-with still wins.

Chapters run in parallel with pytest-xdist: `pytest -n auto --dist loadscope --nbval book/`
(loadscope keeps each notebook's cells in order on one worker; `make test` does this). Each
worker's kernels then take one torch thread (BOOK_THREADS=1, unless set): more threads than
cores make the many small ops of these networks wait for descheduled threads."""

import os
from pathlib import Path

import pytest

if os.environ.get("PYTEST_XDIST_WORKER"):  # the kernels nbval starts inherit this
    os.environ.setdefault("BOOK_THREADS", "1")

SANITIZER = Path(__file__).with_name("nbval_sanitize.cfg")


def pytest_configure(config):
    nbval = getattr(config.option, "nbval", False) or getattr(config.option, "nbval_lax", False)
    dist = getattr(config.option, "dist", "no")
    if nbval and dist not in ("no", "loadscope", "loadfile"):
        raise pytest.UsageError(f"--dist {dist} would spread one notebook's cells over several "
                                "workers; run the chapters with --dist loadscope")
    if hasattr(config.option, "nbval_sanitize_with") and not config.option.nbval_sanitize_with:
        config.option.nbval_sanitize_with = str(SANITIZER)
