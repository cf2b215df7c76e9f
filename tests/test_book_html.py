"""The built HTML book in headless Chromium, with the network cut off.

scripts/browser_check.js does the work (see its header for the list of checks);
these tests run it on the real build and on a deliberately broken page. They skip
when the build or the browser tooling is missing: `make book`, Node.js >= 20,
`npm ci --prefix scripts`, and Chromium (`apt-get install chromium`).
"""

import os
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
HTML = ROOT / "_build" / "html"
SCRIPT = ROOT / "scripts" / "browser_check.js"
CHROMIUM = Path(os.environ.get("CHROMIUM", "/usr/bin/chromium"))
# `make check-html` (run by CI after `make book`) sets this: there a missing
# build or browser is a failure, not a reason to skip.
REQUIRED = os.environ.get("REQUIRE_BOOK_HTML") == "1"


def _missing(reason: str) -> None:
    if REQUIRED:
        pytest.fail(reason + " (REQUIRE_BOOK_HTML=1)")
    pytest.skip(reason)


def _skip_without_browser() -> None:
    if shutil.which("node") is None:
        _missing("node not found: install Node.js >= 20")
    if not (ROOT / "scripts" / "node_modules" / "playwright-core").is_dir():
        _missing("playwright-core not installed: run `npm ci --prefix scripts`")
    if not CHROMIUM.exists():
        _missing(f"no Chromium at {CHROMIUM}: `apt-get install chromium`, or set CHROMIUM")


def _check(html: Path, shots: Path, toc: Path) -> subprocess.CompletedProcess:
    return subprocess.run(["node", str(SCRIPT), str(html), str(shots), "--toc", str(toc)],
                          cwd=ROOT, capture_output=True, text=True, timeout=600)


def test_every_book_page_works_offline():
    if not (HTML / "index.html").is_file():
        _missing("no built book in _build/html: run `make book` first")
    _skip_without_browser()
    result = _check(HTML, ROOT / "_build" / "browser_check", ROOT / "_toc.yml")
    print(result.stdout)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "FAIL" not in result.stdout


BROKEN_PAGE = """<!DOCTYPE html>
<html><head><title>broken</title></head><body>
<p>Left untypeset: $$x^2$$</p>
<div class="cell_output"><div class="output traceback">Traceback (most recent call last):
ValueError: boom</div></div>
<a href="missing.html">a dead link</a>
<a href="#nowhere">a dead anchor</a>
<img src="https://example.com/remote.png">
</body></html>
"""


def test_the_check_catches_a_broken_page(tmp_path):
    _skip_without_browser()
    (tmp_path / "html" / "book").mkdir(parents=True)
    (tmp_path / "html" / "book" / "bad.html").write_text(BROKEN_PAGE)
    toc = tmp_path / "_toc.yml"
    toc.write_text("format: jb-book\nroot: book/bad\n")
    result = _check(tmp_path / "html", tmp_path / "shots", toc)
    out = result.stdout
    assert result.returncode == 1, out + result.stderr
    assert "FAIL book/bad.html" in out
    assert "raw TeX left in the text" in out
    assert "error output: Traceback" in out
    assert "missing file" in out and "missing.html" in out
    assert "missing anchor #nowhere" in out
    assert "network request (blocked): https://example.com/remote.png" in out
    assert (tmp_path / "shots" / "book_bad.png").is_file()
