"""Exercises that check themselves: the reader's function against the library's.

A chapter's exercise has three cells: the reader's `def my_xxx(...)` (shipped as a
stub that raises NotImplementedError), a hidden `solution_xxx` written from the
equations, and one call

    check(my_xxx, reference, cases, solution=solution_xxx, name="xxx")

that runs both on every case and prints one line:

    ✓ xxx: all 4 cases match the library
    ✗ xxx, case 2: first wrong value at index (0, 1): got 0.5, expected 0.25

(`case i` is `cases[i]`). While the reader's function is still the stub, `check`
says so and checks the book's solution in its place, so the stored output is the
same on the book's build, under nbval and on a reader's first run. A wrong reader's
function is reported, never raised; a wrong solution is a bug in the book and raises
AssertionError, which fails the build.

Numbers are printed with 6 significant digits, so the lines do not depend on the
last bits of a CPU's arithmetic.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch


class _Wrong(Exception):
    """Why one output differs from the library's (the text after "case i: ")."""


def _copy(arg: Any) -> Any:
    """A copy of a case's argument, so a function that writes into its inputs spoils no other call."""
    if isinstance(arg, torch.Tensor):
        return arg.detach().clone()
    if isinstance(arg, np.ndarray):
        return arg.copy()
    return arg


def _as_array(value: Any) -> np.ndarray | None:
    """`value` (a tensor, array or number) as a float64 array; None for anything else."""
    if isinstance(value, torch.Tensor):
        return value.detach().cpu().to(torch.float64).numpy()
    if isinstance(value, (np.ndarray, np.generic, int, float)) and not isinstance(value, bool):
        try:
            return np.asarray(value, dtype=np.float64)
        except (TypeError, ValueError):
            return None
    return None


def _expected(value: Any) -> np.ndarray | tuple:
    """The reference's output as float64 arrays (a tuple of them for several outputs)."""
    if isinstance(value, (tuple, list)):
        return tuple(_expected(v) for v in value)
    array = _as_array(value)
    if array is None:
        raise TypeError(f"the reference returned a {type(value).__name__}; "
                        "check compares tensors, arrays and numbers (or tuples of them)")
    return array


def _compare(got: Any, expected: np.ndarray | tuple, rtol: float, atol: float, where: str = "") -> None:
    """Raise _Wrong describing the first difference between `got` and `expected`."""
    if isinstance(expected, tuple):
        if not isinstance(got, (tuple, list)) or len(got) != len(expected):
            n = len(got) if isinstance(got, (tuple, list)) else 1
            raise _Wrong(f"returned {n} output(s), expected {len(expected)}")
        for k, (g, e) in enumerate(zip(got, expected, strict=True)):
            _compare(g, e, rtol, atol, where=f"output {k}, ")
        return
    want = expected  # already a float64 array (see `_expected`)
    have = _as_array(got)
    if have is None:
        what = "None" if got is None else f"a {type(got).__name__}"
        raise _Wrong(f"{where}got {what}, expected a tensor of shape {want.shape}")
    if have.shape != want.shape:
        raise _Wrong(f"{where}wrong shape: got {have.shape}, expected {want.shape}")
    close = np.isclose(have, want, rtol=rtol, atol=atol, equal_nan=True)
    if not close.all():
        index = tuple(int(i) for i in np.argwhere(~close)[0])
        raise _Wrong(f"{where}first wrong value at index {index}: "
                     f"got {have[index]:.6g}, expected {want[index]:.6g}")


def _verdict(fn: Callable[..., Any], expected: list[np.ndarray | tuple], cases: list[tuple],
             rtol: float, atol: float, name: str) -> str | None:
    """None when `fn` matches on every case, else the ✗ line. NotImplementedError propagates."""
    for i, (case, want) in enumerate(zip(cases, expected, strict=True)):
        try:
            got = fn(*(_copy(a) for a in case))
            _compare(got, want, rtol, atol)
        except NotImplementedError:
            raise
        except _Wrong as wrong:
            return f"✗ {name}, case {i}: {wrong}"
        except Exception as error:  # the reader's code failed: say how, do not raise
            message = (str(error).strip().splitlines() or [""])[0]  # one line
            return f"✗ {name}, case {i}: raised {type(error).__name__}: {message}"
    return None


def check(fn: Callable[..., Any], reference: Callable[..., Any], cases: Sequence[tuple],
          solution: Callable[..., Any] | None = None, name: str | None = None,
          rtol: float = 1e-5, atol: float = 1e-6) -> bool:
    """Compare `fn(*case)` with `reference(*case)` for every case; print one verdict line.

    fn: the reader's function. reference: the library's function (or a lambda over it)
        that gives the expected output, a tensor, array, number or a tuple of them.
    cases: a list of tuples of arguments, fixed tensors built by the chapter.
    solution: the book's own answer, checked in place of `fn` while `fn` still raises
        NotImplementedError; if it does not match, AssertionError (a bug in the book).
    name: what the lines call the function (default: fn.__name__).
    rtol, atol: the tolerance of `numpy.isclose`, elementwise.

    Returns True when `fn` matches on every case, False otherwise (a wrong value, a
    wrong shape, an exception, or the stub); a wrong `fn` is printed, not raised.
    """
    if not isinstance(cases, Sequence) or len(cases) == 0 or \
            not all(isinstance(case, tuple) for case in cases):
        raise TypeError("cases must be a non-empty list of tuples of arguments, "
                        "e.g. [(x0, t, noise), ...]")
    name = name or getattr(fn, "__name__", "function")
    cases = list(cases)
    expected = [_expected(reference(*(_copy(a) for a in case))) for case in cases]
    ok = f"✓ {name}: all {len(cases)} cases match the library"
    try:
        wrong = _verdict(fn, expected, cases, rtol, atol, name)
    except NotImplementedError:
        if solution is None:
            print(f"✗ {name}: not written yet (it raises NotImplementedError)")
            return False
        print(f"{name} is not written yet (it raises NotImplementedError); "
              "checking the book's solution instead:")
        try:
            wrong = _verdict(solution, expected, cases, rtol, atol, name)
        except NotImplementedError:
            wrong = f"✗ {name}: the solution raises NotImplementedError"
        if wrong is not None:
            raise AssertionError(f"the book's solution does not match the library: {wrong}") from None
        print(ok)
        return False
    print(ok if wrong is None else wrong)
    return wrong is None
