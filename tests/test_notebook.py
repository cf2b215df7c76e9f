"""The chapters' set-up: BOOK_SEED shifts every seed, BOOK_THREADS the thread count,
and bad values are refused by name."""

import pytest
import torch

from diffusion_core.notebook import SEED_STRIDE, book_seed, generator, setup


def test_unset_book_seed_reproduces_the_stored_streams(monkeypatch):
    monkeypatch.delenv("BOOK_SEED", raising=False)
    assert book_seed(7) == 7
    want = torch.randn(5, generator=torch.Generator().manual_seed(7))
    assert torch.equal(torch.randn(5, generator=generator(7)), want)
    monkeypatch.setenv("BOOK_SEED", "0")
    assert torch.equal(torch.randn(5, generator=generator(7)), want)


def test_book_seed_shifts_every_stream_to_one_the_stored_run_never_uses(monkeypatch):
    monkeypatch.setenv("BOOK_SEED", "2")
    assert book_seed(7) == 7 + 2 * SEED_STRIDE
    stored = {k: torch.randn(5, generator=torch.Generator().manual_seed(k)) for k in range(SEED_STRIDE)}
    shifted = torch.randn(5, generator=generator(7))
    assert not any(torch.equal(shifted, x) for x in stored.values())
    before = torch.get_num_threads()
    try:
        g = setup(seed=3, threads=1)
        assert torch.equal(torch.randn(3, generator=g),
                           torch.randn(3, generator=torch.Generator().manual_seed(3 + 2 * SEED_STRIDE)))
        monkeypatch.setenv("BOOK_THREADS", "1")
        setup(seed=0, threads=2)
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)


@pytest.mark.parametrize("name, value", [("BOOK_SEED", "one"), ("BOOK_SEED", "-1"),
                                         ("BOOK_THREADS", "0"), ("BOOK_THREADS", "2.5")])
def test_bad_knobs_are_refused_by_name(monkeypatch, name, value):
    monkeypatch.setenv(name, value)
    before = torch.get_num_threads()
    try:
        with pytest.raises(ValueError, match=f"{name} must be an integer >= "):
            setup(seed=0)
    finally:
        torch.set_num_threads(before)
