"""Execute book chapters in place, so the committed notebooks carry their outputs.

    .venv/bin/python scripts/execute_notebooks.py                 # every book/*.ipynb
    .venv/bin/python scripts/execute_notebooks.py book/01_forward_noising.ipynb

Each notebook runs top to bottom in a fresh `python3` kernel with book/ as the
working directory (as Jupyter Book and nbval run it), and the widget state is
stored so that sliders work in the static HTML. The script stops at the first
failing cell, leaving that notebook unchanged on disk.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import nbformat
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError

BOOK = Path(__file__).resolve().parent.parent / "book"
TIMEOUT_S = 600  # per cell, as in _config.yml


def execute(path: Path) -> float:
    """Run one notebook in place; return the seconds it took."""
    nb = nbformat.read(path, as_version=4)
    client = NotebookClient(nb, timeout=TIMEOUT_S, kernel_name="python3",
                            resources={"metadata": {"path": str(BOOK)}},
                            store_widget_state=True, record_timing=False)
    start = time.perf_counter()
    client.execute()
    seconds = time.perf_counter() - start
    nbformat.write(nb, path)
    return seconds


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("notebooks", nargs="*", type=Path,
                        help="notebooks to execute (default: every book/*.ipynb)")
    args = parser.parse_args(argv)
    notebooks = args.notebooks or sorted(BOOK.glob("[0-9]*.ipynb"))
    missing = [str(p) for p in notebooks if not p.is_file()]
    if missing:
        parser.error(f"no such notebook: {', '.join(missing)}")

    # Two threads per kernel: the book must run on a small laptop or CI runner,
    # and the timings printed here should reflect that.
    os.environ["OMP_NUM_THREADS"] = "2"
    total = 0.0
    for path in notebooks:
        print(f"{path} ...", end=" ", flush=True)
        try:
            seconds = execute(path)
        except CellExecutionError as err:
            print("FAILED")
            print(err, file=sys.stderr)
            return 1
        total += seconds
        print(f"{seconds:.1f} s", flush=True)
    print(f"total {total:.1f} s for {len(notebooks)} notebook(s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
