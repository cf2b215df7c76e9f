"""pytest set-up for the chapters: `pytest --nbval book/` applies the book's sanitizer
(nbval_sanitize.cfg beside this file) without any other flag. An explicit
--nbval-sanitize-with still wins."""

from pathlib import Path

SANITIZER = Path(__file__).with_name("nbval_sanitize.cfg")


def pytest_configure(config):
    if hasattr(config.option, "nbval_sanitize_with") and not config.option.nbval_sanitize_with:
        config.option.nbval_sanitize_with = str(SANITIZER)
