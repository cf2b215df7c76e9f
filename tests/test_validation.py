"""Property tests: shapes broadcast as documented, and every bad input is refused
with a message that names the argument and what is accepted."""

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from diffusion_core import GaussianDiffusion, make_schedule

T = 50
D = GaussianDiffusion(make_schedule("cosine", T), num_levels=17)
shapes = st.lists(st.integers(1, 4), min_size=1, max_size=4)


@settings(max_examples=40, deadline=None)
@given(shape=shapes, ts=st.lists(st.integers(-3, T + 3), min_size=1, max_size=4))
def test_q_sample_shapes_and_timestep_range(shape, ts):
    B = len(ts)
    x0 = torch.rand((B, *shape)) * 2 - 1
    t = torch.tensor(ts)
    if all(0 <= v < T for v in ts):
        assert D.q_sample(x0, t).shape == x0.shape
        mean, var, logvar = D.q_mean_variance(x0, t)
        assert mean.shape == var.shape == logvar.shape == x0.shape
        assert D.q_posterior_mean_variance(x0, x0, t)[0].shape == x0.shape
    else:
        with pytest.raises(ValueError, match=r"t must hold timesteps in 0..T-1 = 0..49"):
            D.q_sample(x0, t)


@settings(max_examples=20, deadline=None)
@given(shape=shapes, B=st.integers(1, 3), bad=st.sampled_from([1.5, -1.01, 3.0]))
def test_decoder_refuses_data_outside_unit_range(shape, B, bad):
    x0 = torch.zeros((B, *shape))
    x0.view(-1)[0] = bad
    with pytest.raises(ValueError, match=r"x0 must lie in \[-1, 1\]"):
        D.calc_bpd_loop(lambda x, t: torch.zeros_like(x), x0)


def x0_t(B=2):
    return torch.zeros(B, 3), torch.zeros(B, dtype=torch.long)


@pytest.mark.parametrize("call,exc,match", [
    (lambda: D.q_sample(torch.zeros(2, 3), torch.zeros(2)), TypeError, "t must be an integer tensor"),
    (lambda: D.q_sample(torch.zeros(2, 3), torch.zeros(2, 1, dtype=torch.long)), ValueError, r"shape \(B,\)"),
    (lambda: D.q_sample(torch.zeros(2, 3), torch.zeros(3, dtype=torch.long)), ValueError, r"\(2,\) to match the batch"),
    (lambda: D.q_sample(torch.zeros(2, 3), [0, 1]), TypeError, "t must be a torch.Tensor"),
    (lambda: D.q_sample(torch.full((2, 3), float("nan")), x0_t()[1]), ValueError, "x0 contains NaN"),
    (lambda: D.q_sample(torch.zeros(2, 3, dtype=torch.long), x0_t()[1]), TypeError, "x0 must be a floating"),
    (lambda: D.q_sample(*x0_t(), noise=torch.zeros(2, 4)), ValueError, "noise and x0 must have the same shape"),
    (lambda: D.q_sample(torch.zeros(3), torch.zeros(3, dtype=torch.long)), ValueError, "x0 must have a batch"),
    (lambda: D.q_posterior_mean_variance(torch.zeros(2, 3), torch.zeros(2, 2), x0_t()[1]), ValueError,
     "x_t and x0 must have the same shape"),
    (lambda: D.training_losses(lambda x, t: x, *x0_t(), loss_type="l1"), ValueError, "loss_type must be one of"),
    (lambda: D.training_losses(lambda x, t: x[:, :1], *x0_t()), ValueError, "model output must have shape"),
    (lambda: GaussianDiffusion(D.schedule, model_var="learnt"), ValueError, "model_var must be one of"),
    (lambda: GaussianDiffusion(D.schedule, num_levels=1), ValueError, "num_levels must be an int >= 2"),
    (lambda: GaussianDiffusion("linear"), TypeError, "schedule must be a Schedule"),
])
def test_bad_inputs_are_refused_with_a_clear_message(call, exc, match):
    with pytest.raises(exc, match=match):
        call()
