import os
import random

import numpy as np
import pytest
import torch

# Float results on CPU depend on the thread count; fix it so runs reproduce. Under
# pytest-xdist (`make test` runs `-n auto`) each worker takes one thread: two workers of two
# threads on two cores make every small op wait for a descheduled thread.
_DEFAULT_THREADS = "1" if os.environ.get("PYTEST_XDIST_WORKER") else "2"
torch.set_num_threads(int(os.environ.get("DIFFUSION_TEST_THREADS", _DEFAULT_THREADS)))

pytest_plugins = ["pytester"]  # tests of the book's pytest set-up run pytest in a temporary dir

# Another CPU (AVX-512, another thread count) changes the last bits of float results, and a
# sampler or a training run turns those into other random numbers: another machine amounts to
# another seed. So every seeded draw in these tests goes through the knob
#
#     TEST_SEED=<int >= 0>   (unset or 0: the seeds the tests were written with)
#
# which maps a test's seed k to k + SEED_STRIDE * TEST_SEED (tests use k < SEED_STRIDE, so a
# shifted run never reuses a stream of another). A test that compares a sampled number with
# a threshold must pass for every TEST_SEED: its margin comes from the standard error it
# computes (5 or more), not from what one run happened to give. Tests of exact reproducibility
# (same seed twice, resume) use the shifted seeds too and stay exact.
SEED_STRIDE = 1000


def _read_test_seed() -> int:
    value = os.environ.get("TEST_SEED", "").strip()
    if not value:
        return 0
    try:
        number = int(value)
    except ValueError:
        number = -1
    if number < 0:
        raise pytest.UsageError(f"TEST_SEED must be an integer >= 0, got {value!r}")
    return number


TEST_SEED = 0


def pytest_configure(config):
    global TEST_SEED
    TEST_SEED = _read_test_seed()


def pytest_report_header(config):
    return (f"TEST_SEED={TEST_SEED} (seed k -> k + {SEED_STRIDE} * TEST_SEED), "
            f"torch threads={torch.get_num_threads()}")


@pytest.fixture(scope="session")
def seed() -> int:
    """This run's base seed, SEED_STRIDE * TEST_SEED: a test's k-th seed is `seed + k`."""
    return SEED_STRIDE * TEST_SEED


@pytest.fixture(scope="session")
def generator(seed):
    """`generator(k)`: a CPU torch.Generator seeded with k + SEED_STRIDE * TEST_SEED."""
    def make(k: int = 0) -> torch.Generator:
        if not 0 <= k < SEED_STRIDE:
            raise ValueError(f"test seeds must be in 0..{SEED_STRIDE - 1}, got {k}")
        return torch.Generator().manual_seed(seed + k)
    return make


@pytest.fixture(autouse=True)
def _seed_global_rngs(seed):
    """Unseeded draws (torch.rand without a generator, ...) follow TEST_SEED too, and do not
    depend on which tests ran before: a failing test reruns alone with the same numbers."""
    random.seed(seed)
    np.random.seed(seed)  # noqa: NPY002 (the global generator, for code that uses it)
    torch.manual_seed(seed)
