"""The nbval sanitizer (book/nbval_sanitize.cfg), as nbval itself reads it: round-off
reports and exact zeros compare equal whatever the CPU printed, real numbers do not,
and `pytest --nbval book/` picks the file up with no flag."""

import re
from pathlib import Path

import pytest

nbval_plugin = pytest.importorskip("nbval.plugin")
BOOK = Path(__file__).resolve().parents[1] / "book"


@pytest.fixture(scope="module")
def sanitize():
    patterns = dict(nbval_plugin.get_sanitize_patterns((BOOK / "nbval_sanitize.cfg").read_text()))
    assert len(patterns) >= 10

    def apply(text: str) -> str:  # as nbval's IPyNbFile.sanitize does
        for regex, replacement in patterns.items():
            text = re.sub(regex, replacement, text)
        return text
    return apply


@pytest.mark.parametrize("a, b", [
    ("largest difference 1.1e-16", "largest difference 0.0e+00"),
    ("largest difference 3.9e-13", "largest difference -2.2E-10"),
    ("error 0e0", "error 4.4e-16"),
    ("error 0.00e+00 here", "error 1.23e-09 here"),
    ("gap 0.0000000012", "gap 0.00000000"),
    ("mean 0.004, 1.0086 (0.01 s)", "mean 0.004, 1.0086 (7.31 s)"),
])
def test_round_off_and_durations_compare_equal(sanitize, a, b):
    assert sanitize(a) == sanitize(b)


@pytest.mark.parametrize("a, b", [
    ("abar 4.036e-05", "abar 4.037e-05"),         # a real small number, not round-off
    ("kl 1.2e-08", "kl 0.0e+00"),                 # above the round-off threshold
    ("variance 1.0086", "variance 1.0087"),
    ("Frechet 0.91", "Frechet 0.92"),
    ("zero 0.0", "zero 1.0"),                     # a fixed-point 0.0 is a real value
    ("gap 0.0000012", "gap 0.0000013"),
])
def test_real_numbers_still_differ(sanitize, a, b):
    assert sanitize(a) != sanitize(b)


def test_plain_pytest_nbval_uses_the_sanitizer(pytester):
    """`pytest --nbval book/` with no other flag: book/conftest.py sets the option."""
    conftest = (BOOK / "conftest.py").read_text()
    pytester.makeconftest(conftest.replace('Path(__file__).with_name("nbval_sanitize.cfg")',
                                           f'Path({str(BOOK / "nbval_sanitize.cfg")!r})'))
    pytester.makepyfile(test_option="""
        def test_option(pytestconfig):
            assert pytestconfig.option.nbval_sanitize_with.endswith("nbval_sanitize.cfg")
    """)
    pytester.runpytest_subprocess().assert_outcomes(passed=1)


def test_parallel_chapters_need_loadscope(pytester, monkeypatch):
    """Spread over xdist workers, a notebook's cells must stay on one worker, in order:
    book/conftest.py refuses the default --dist load up front, and under loadscope each
    worker's kernels get one torch thread."""
    pytest.importorskip("xdist")
    monkeypatch.delenv("BOOK_THREADS", raising=False)
    conftest = (BOOK / "conftest.py").read_text()
    pytester.makeconftest(conftest.replace('Path(__file__).with_name("nbval_sanitize.cfg")',
                                           f'Path({str(BOOK / "nbval_sanitize.cfg")!r})'))
    pytester.makepyfile(test_threads="""
        import os
        def test_threads():
            assert os.environ["BOOK_THREADS"] == "1"
    """)
    refused = pytester.runpytest_subprocess("-n", "2", "--nbval", "-p", "no:cacheprovider")
    assert refused.ret == pytest.ExitCode.USAGE_ERROR
    refused.stderr.fnmatch_lines(["*--dist load would spread one notebook's cells*loadscope*"])
    pytester.runpytest_subprocess("-n", "2", "--dist", "loadscope", "--nbval",
                                  "-p", "no:cacheprovider").assert_outcomes(passed=1)
