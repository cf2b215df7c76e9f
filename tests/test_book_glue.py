"""The numbers the prose shows ({glue:text}`name:fmt`) in the committed chapters.

Checked here, in seconds, rather than discovered by the book build: every name
the prose uses is glued in the same chapter, its stored value formats with the
prose's format spec (a repr such as `np.float32(1.5)` does not), and the prose
never shows more significant digits than were stored (`glue` rounds floats to 4
by default, so that the last bits of a float, which vary between CPUs, never
reach an output nbval compares).
"""

from __future__ import annotations

import ast
import json
import re
from pathlib import Path

import pytest

from diffusion_core.notebook import plain_number

BOOK = Path(__file__).resolve().parent.parent / "book"
CHAPTERS = sorted(BOOK.glob("[0-9][0-9]_*.ipynb"))
GLUE_MIME = "application/papermill.record/text/plain"
ROLE = re.compile(r"\{glue(?::text)?\}`([^`:]+)(?::([^`]*))?`")
DEFAULT_DIGITS = 4


def significant_digits(text: str) -> int:
    """Digits from the first non-zero one to the last one shown, exponent excluded: '0.0470' -> 3."""
    mantissa = re.split(r"[eE]", text)[0]
    digits = re.sub(r"\D", "", mantissa).lstrip("0")
    return max(len(digits), 1)


def glued_values(nb: dict) -> dict[str, str]:
    values = {}
    for cell in nb["cells"]:
        for out in cell.get("outputs", []):
            if GLUE_MIME in out.get("data", {}):
                values[out["metadata"]["scrapbook"]["name"]] = out["data"][GLUE_MIME]
    return values


def prose_references(nb: dict) -> list[tuple[str, str]]:
    text = "\n".join("".join(c["source"]) for c in nb["cells"] if c["cell_type"] == "markdown")
    return [(m.group(1), m.group(2) or "") for m in ROLE.finditer(text)]


def test_glue_stores_plain_rounded_numbers():
    import numpy as np
    import torch

    assert repr(plain_number(np.float32(0.19287633895874023), 4)) == "0.1929"
    assert type(plain_number(torch.tensor(2.0), 4)) is float
    assert plain_number(159744.068573, 6) == 159744.0
    assert plain_number(35746307, 4) == 35746307  # ints are exact: left alone
    assert plain_number("text", 4) == "text"


@pytest.mark.parametrize("path", CHAPTERS, ids=lambda p: p.stem)
def test_prose_numbers_are_glued_and_format(path: Path):
    format_plain_text = pytest.importorskip("myst_nb.core.variables").format_plain_text
    nb = json.loads(path.read_text())
    values = glued_values(nb)
    problems = []
    for name, fmt in prose_references(nb):
        if name not in values:
            problems.append(f"{name}: used in the prose but never glued")
            continue
        stored = values[name]
        try:
            shown = format_plain_text(stored, fmt)
        except (TypeError, ValueError) as err:
            problems.append(f"{name}: stored {stored!r} does not format with {fmt!r}: {err}")
            continue
        if fmt and isinstance(ast.literal_eval(stored), float):
            allowed = max(significant_digits(stored), DEFAULT_DIGITS)
            if significant_digits(shown) > allowed:
                problems.append(f"{name}: shown as {shown!r} ({fmt!r}) but stored as {stored} "
                                f"(round less in glue(..., digits=) or show fewer digits)")
    assert not problems, "\n".join(problems)
