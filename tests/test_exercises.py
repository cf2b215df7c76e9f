"""`exercises.check`: one exact line per verdict, the first wrong value found, the reader's
errors reported and not raised, the stub replaced by the book's solution, a wrong solution fatal."""

import math

import numpy as np
import pytest
import torch

from diffusion_core import GaussianDiffusion, make_schedule
from diffusion_core.exercises import check

DIFFUSION = GaussianDiffusion(make_schedule("linear", 100))


def reference(x0, t, noise):
    return DIFFUSION.q_sample(x0, t, noise)


def right(x0, t, noise):
    abar = DIFFUSION.schedule.alphas_cumprod[t].view(-1, 1)
    return abar.sqrt() * x0 + (1 - abar).sqrt() * noise


def stub(x0, t, noise):
    raise NotImplementedError  # your code here


def cases(g):
    return [(torch.randn(3, 2, generator=g, dtype=torch.float64), torch.tensor([0, 50, 99]),
             torch.randn(3, 2, generator=g, dtype=torch.float64)) for _ in range(4)]


def test_a_correct_function_passes_with_one_line(capsys, generator):
    assert check(right, reference, cases(generator(0)), name="q_sample") is True
    assert capsys.readouterr().out == "✓ q_sample: all 4 cases match the library\n"


def test_the_first_wrong_element_is_named_with_both_values(capsys, generator):
    data = cases(generator(0))

    def wrong_in_case_2(x0, t, noise):
        out = right(x0, t, noise)
        if torch.equal(x0, data[2][0]):
            out[1, 0] += 0.5  # one element off, in the third case only
            out[2, 1] += 1.0  # a later one too: only the first is reported
        return out

    want = reference(*data[2])[1, 0].item()
    assert check(wrong_in_case_2, reference, data, name="q_sample") is False
    assert capsys.readouterr().out == (f"✗ q_sample, case 2: first wrong value at index (1, 0): "
                                       f"got {want + 0.5:.6g}, expected {want:.6g}\n")


def test_a_value_within_the_tolerance_passes_and_one_outside_does_not(capsys):
    one = [(torch.ones(4, dtype=torch.float64),)]
    assert check(lambda x: x * (1 + 1e-7), lambda x: x, one, name="f")
    assert not check(lambda x: x * (1 + 1e-3), lambda x: x, one, name="f")
    assert capsys.readouterr().out.splitlines()[1] == \
        "✗ f, case 0: first wrong value at index (0,): got 1.001, expected 1"


def test_a_wrong_shape_is_reported_as_such(capsys, generator):
    def flat(x0, t, noise):
        return right(x0, t, noise).flatten()

    assert check(flat, reference, cases(generator(0)), name="q_sample") is False
    assert capsys.readouterr().out == "✗ q_sample, case 0: wrong shape: got (6,), expected (3, 2)\n"


def test_an_exception_is_reported_not_raised(capsys, generator):
    def broken(x0, t, noise):
        return x0 @ noise  # (3, 2) @ (3, 2)

    assert check(broken, reference, cases(generator(0)), name="q_sample") is False
    out = capsys.readouterr().out
    assert out.startswith("✗ q_sample, case 0: raised RuntimeError: mat1 and mat2 shapes cannot")
    assert out.count("\n") == 1


def test_returning_nothing_is_reported(capsys, generator):
    assert check(lambda *args: None, reference, cases(generator(0)), name="q_sample") is False
    assert capsys.readouterr().out == \
        "✗ q_sample, case 0: got None, expected a tensor of shape (3, 2)\n"


def test_the_stub_falls_back_to_the_solution(capsys, generator):
    assert check(stub, reference, cases(generator(0)), solution=right, name="q_sample") is False
    assert capsys.readouterr().out == (
        "q_sample is not written yet (it raises NotImplementedError); "
        "checking the book's solution instead:\n"
        "✓ q_sample: all 4 cases match the library\n")


def test_the_stub_without_a_solution_is_reported(capsys, generator):
    assert check(stub, reference, cases(generator(0))) is False
    assert capsys.readouterr().out == "✗ stub: not written yet (it raises NotImplementedError)\n"


def test_a_wrong_solution_fails_the_build(generator):
    def wrong_solution(x0, t, noise):
        return right(x0, t, noise) + 1e-3

    with pytest.raises(AssertionError, match=r"book's solution does not match the library: "
                                             r"✗ q_sample, case 0: first wrong value at index \(0, 0\)"):
        check(stub, reference, cases(generator(0)), solution=wrong_solution, name="q_sample")


def test_a_written_function_is_checked_even_when_a_solution_is_given(capsys, generator):
    def off(x0, t, noise):
        return right(x0, t, noise) * 2

    assert check(off, reference, cases(generator(0)), solution=right, name="q_sample") is False
    assert capsys.readouterr().out.startswith("✗ q_sample, case 0: first wrong value")


def test_several_outputs_numbers_and_arrays(capsys):
    def posterior(a, b):
        return a + b, a * b

    data = [(torch.tensor([1.0, 2.0]), torch.tensor([3.0, 4.0]))]
    assert check(lambda a, b: (a + b, a * b), posterior, data, name="pair")
    assert not check(lambda a, b: (a + b, a - b), posterior, data, name="pair")
    assert not check(lambda a, b: a + b, posterior, data, name="pair")
    assert check(lambda x: math.sqrt(x), lambda x: np.sqrt(np.float64(x)), [(2.0,), (9.0,)], name="root")
    assert capsys.readouterr().out.splitlines() == [
        "✓ pair: all 1 cases match the library",
        "✗ pair, case 0: output 1, first wrong value at index (0,): got -2, expected 3",
        "✗ pair, case 0: returned 1 output(s), expected 2",
        "✓ root: all 2 cases match the library",
    ]


def test_the_cases_are_not_changed_by_a_function_that_writes_into_them(capsys, generator):
    data = cases(generator(0))
    before = [tuple(a.clone() for a in case) for case in data]

    def in_place(x0, t, noise):
        x0.mul_(0)  # spoils its own copy only
        return right(x0, t, noise)

    check(in_place, reference, data, name="q_sample")
    capsys.readouterr()
    assert all(torch.equal(a, b) for case, old in zip(data, before, strict=True)
               for a, b in zip(case, old, strict=True))


@pytest.mark.parametrize("bad", [[], [torch.zeros(2)], "x"])
def test_cases_must_be_a_list_of_tuples(bad):
    with pytest.raises(TypeError, match="cases must be a non-empty list of tuples"):
        check(right, reference, bad)
