"""GaussianDiffusion against step-by-step simulation, Bayes' rule on a grid, and
the paper's independent formulas."""

import math

import numpy as np
import pytest
import torch
from scipy import stats

from diffusion_core import GaussianDiffusion, make_schedule

D64 = torch.float64


@pytest.fixture(scope="module")
def diffusion():
    return GaussianDiffusion(make_schedule("linear", 1000))


def test_closed_form_matches_running_the_chain(diffusion, generator):
    """q(x_t|x_0) in one step vs t applications of q(x_t|x_{t-1}) = N(√(1-β_t) x_{t-1}, β_t)."""
    g = generator(0)
    N = 30_000
    x0 = torch.tensor([-0.8, 0.1, 0.9], dtype=D64).repeat(N, 1)  # (N, 3)
    betas = diffusion.schedule.betas
    x = x0.clone()
    checked = 0
    for i in range(1000):
        x = (1 - betas[i]).sqrt() * x + betas[i].sqrt() * torch.randn(x.shape, generator=g, dtype=D64)
        if i in (0, 9, 99, 499, 999):
            t = torch.full((N,), i)
            mean, var, logvar = diffusion.q_mean_variance(x0, t)
            z_mean = (x.mean(0) - mean[0]) / (var[0] / N).sqrt()
            # the sample variance of a Gaussian has standard error var·√(2/N)
            z_var = (x.var(0) - var[0]) / (var[0] * math.sqrt(2 / N))
            assert torch.cat([z_mean, z_var]).abs().max() < 5, i
            assert torch.allclose(logvar, var.log())
            checked += 1
    assert checked == 5


def test_q_sample_has_the_closed_form_moments(diffusion, generator):
    g = generator(1)
    N = 100_000
    x0 = torch.full((N, 1), 0.5, dtype=D64)
    t = torch.full((N,), 300)
    noise = torch.randn(x0.shape, generator=g, dtype=D64)
    x_t = diffusion.q_sample(x0, t, noise)
    abar = diffusion.schedule.alphas_cumprod[300]
    z_mean = (x_t.mean().item() - abar.sqrt().item() * 0.5) / math.sqrt((1 - abar) / N)
    z_var = (x_t.var().item() - (1 - abar).item()) / ((1 - abar).item() * math.sqrt(2 / N))
    assert abs(z_mean) < 5 and abs(z_var) < 5


@pytest.mark.parametrize("t_index", [1, 2, 50, 700, 999])
def test_posterior_matches_bayes_rule_on_a_grid(diffusion, t_index):
    """q(x_{t-1}|x_t,x_0) ∝ q(x_t|x_{t-1}) q(x_{t-1}|x_0), normalised numerically."""
    s = diffusion.schedule
    x0, x_t = 0.3, -0.4
    beta = s.betas[t_index].item()
    abar_prev = s.alphas_cumprod_prev[t_index].item()
    grid = np.linspace(-6, 6, 400_001)
    log_prior = stats.norm.logpdf(grid, math.sqrt(abar_prev) * x0, math.sqrt(1 - abar_prev))
    log_lik = stats.norm.logpdf(x_t, math.sqrt(1 - beta) * grid, math.sqrt(beta))
    w = np.exp(log_prior + log_lik - (log_prior + log_lik).max())
    w /= np.trapezoid(w, grid)
    mean_num = np.trapezoid(grid * w, grid)
    var_num = np.trapezoid((grid - mean_num) ** 2 * w, grid)
    mean, var, logvar = diffusion.q_posterior_mean_variance(
        torch.tensor([[x0]], dtype=D64), torch.tensor([[x_t]], dtype=D64), torch.tensor([t_index]))
    assert mean.item() == pytest.approx(mean_num, abs=1e-7)
    assert var.item() == pytest.approx(var_num, rel=1e-5)
    assert logvar.item() == pytest.approx(math.log(var_num), abs=1e-5)


def test_posterior_at_t0_returns_x0_with_zero_variance(diffusion):
    x0 = torch.tensor([[0.25, -0.5]], dtype=D64)
    x_t = torch.tensor([[0.1, 0.2]], dtype=D64)
    mean, var, _ = diffusion.q_posterior_mean_variance(x0, x_t, torch.tensor([0]))
    assert torch.allclose(mean, x0) and torch.all(var == 0)


def test_eps_x0_conversions_invert_each_other(diffusion, generator):
    g = generator(2)
    x0 = torch.rand((8, 3, 4, 4), generator=g, dtype=D64) * 2 - 1
    eps = torch.randn(x0.shape, generator=g, dtype=D64)
    t = torch.tensor([0, 1, 10, 100, 500, 900, 998, 999])
    x_t = diffusion.q_sample(x0, t, eps)
    assert torch.allclose(diffusion.predict_x0_from_eps(x_t, t, eps), x0, atol=1e-8)
    assert torch.allclose(diffusion.predict_eps_from_x0(x_t, t, x0), eps, atol=1e-10)


def test_eq11_mean_equals_posterior_mean_of_predicted_x0(diffusion, generator):
    """1/√α_t (x_t - β_t/√(1-ᾱ_t) ε) and μ̃_t(x̂_0(ε), x_t) are two derivations of one thing."""
    g = generator(3)
    x_t = torch.randn((6, 5), generator=g, dtype=D64)
    eps = torch.randn((6, 5), generator=g, dtype=D64)
    t = torch.tensor([1, 2, 30, 400, 800, 999])
    x0_hat = diffusion.predict_x0_from_eps(x_t, t, eps)
    mean_posterior, _, _ = diffusion.q_posterior_mean_variance(x0_hat, x_t, t)
    assert torch.allclose(diffusion.mean_from_eps(x_t, t, eps), mean_posterior, atol=1e-9)


def perfect_model(diffusion, x0, v=None):
    """A model that knows x0: returns the exact noise of whatever x_t it is given."""
    def model(x_t, t):
        eps = diffusion.predict_eps_from_x0(x_t, t, x0)
        return eps if v is None else torch.cat([eps, torch.full_like(eps, v)], dim=1)
    return model


@pytest.mark.parametrize("model_var,v", [("fixed_small", None), ("learned_range", -1.0)])
def test_vb_terms_vanish_for_a_perfect_model(diffusion, model_var, v):
    d = GaussianDiffusion(diffusion.schedule, model_var=model_var)
    x0 = torch.rand((4, 2, 3, 3), dtype=D64) * 2 - 1
    t = torch.tensor([1, 5, 400, 999])
    x_t = d.q_sample(x0, t)
    eps, v_out = d.model_output(perfect_model(d, x0, v), x_t, t)
    out = d.vb_terms_bpd(x0, x_t, t, eps, v_out, clip_denoised=False)
    assert torch.all(out["output"].abs() < 1e-8)


def test_simple_loss_is_zero_for_the_true_noise_and_positive_otherwise(diffusion):
    x0 = torch.rand((5, 1, 4, 4), dtype=D64) * 2 - 1
    t = torch.tensor([0, 10, 200, 600, 999])
    noise = torch.randn_like(x0)
    losses = diffusion.training_losses(lambda x, tt: noise, x0, t, noise)
    assert torch.all(losses["mse"] == 0)
    losses = diffusion.training_losses(lambda x, tt: torch.zeros_like(x), x0, t, noise)
    expected = (noise ** 2).flatten(1).mean(1)
    assert torch.allclose(losses["loss"], expected)


def test_decoder_term_is_discrete_nll_in_bits(diffusion):
    """L_0 with a model mean exactly at x0 and σ² = β̃_1: compare with scipy's CDF."""
    d = GaussianDiffusion(diffusion.schedule, num_levels=17)
    x0 = torch.tensor([[-1.0, 0.0, 0.125, 1.0]], dtype=D64)
    t = torch.tensor([0])
    x_t = d.q_sample(x0, t)
    eps = d.predict_eps_from_x0(x_t, t, x0)
    out = d.vb_terms_bpd(x0, x_t, t, eps, clip_denoised=False)["output"]
    sigma = math.exp(0.5 * d.schedule.posterior_log_variance_clipped[0].item())
    half = 1 / 16
    p = [stats.norm.cdf(-1 + half, -1, sigma), stats.norm.cdf(half, 0, sigma) - stats.norm.cdf(-half, 0, sigma),
         stats.norm.cdf(0.125 + half, 0.125, sigma) - stats.norm.cdf(0.125 - half, 0.125, sigma),
         stats.norm.sf(1 - half, 1, sigma)]
    want = -np.mean(np.log2(p))
    assert out.item() == pytest.approx(want, rel=1e-6, abs=1e-12)


def test_prior_term_matches_kl_formula(diffusion):
    x0 = torch.tensor([[0.9, -0.3]], dtype=D64)
    abar = diffusion.schedule.alphas_cumprod[-1].item()
    m = math.sqrt(abar) * x0.numpy()[0]
    kl = 0.5 * (m ** 2 + (1 - abar) - 1 - math.log(1 - abar))  # KL(N(m, 1-ᾱ) || N(0, 1))
    assert diffusion.prior_bpd(x0).item() == pytest.approx(kl.mean() / math.log(2), rel=1e-9)


def test_hybrid_loss_stops_the_mean_gradient_in_its_vb_term(seed):
    torch.manual_seed(seed)
    d = GaussianDiffusion(make_schedule("linear", 100), model_var="learned_range", num_levels=17)
    net = torch.nn.Linear(4, 8, dtype=D64)  # ε̂ = first 4 outputs, v = last 4
    model = lambda x, t: net(x)
    x0 = torch.rand((16, 4), dtype=D64) * 2 - 1
    t = torch.randint(0, 100, (16,))
    noise = torch.randn_like(x0)
    out = d.training_losses(model, x0, t, noise, loss_type="hybrid")
    out["loss"].mean().backward()
    grad_full = net.weight.grad.clone()
    net.zero_grad()
    out = d.training_losses(model, x0, t, noise, loss_type="hybrid")
    out["mse"].mean().backward()
    grad_mse = net.weight.grad.clone()
    # ε rows get only the MSE gradient; v rows get only the bound's.
    assert torch.allclose(grad_full[:4], grad_mse[:4], atol=1e-12)
    assert torch.all(grad_mse[4:] == 0) and grad_full[4:].abs().sum() > 0


def test_vlb_loss_is_T_times_the_term():
    d = GaussianDiffusion(make_schedule("cosine", 50), num_levels=17)
    x0 = torch.rand((3, 4), dtype=D64) * 2 - 1
    t = torch.tensor([0, 7, 49])
    noise = torch.randn_like(x0)
    model = lambda x, tt: 0.5 * x
    out = d.training_losses(model, x0, t, noise, loss_type="vlb")
    x_t = d.q_sample(x0, t, noise)
    vb = d.vb_terms_bpd(x0, x_t, t, model(x_t, t))["output"]
    assert torch.allclose(out["loss"], 50 * vb)


def test_respaced_process_calls_the_model_with_original_timesteps():
    d = GaussianDiffusion(make_schedule("linear", 1000)).respaced(10)
    seen = []
    model = lambda x, t: (seen.append(t.clone()), torch.zeros_like(x))[1]
    d.p_mean_variance(model, torch.zeros(2, 3), torch.tensor([0, 9]))
    assert seen[0].tolist() == [0, 999]


# ---- DDPM's Table 2 options: predicting μ̃, and the learned diagonal Σ -------------------


def posterior_mean_by_hand(schedule, x0, x_t, t):
    """Eq. 7 with the paper's 1-based t = index + 1: μ̃ = √ᾱ_{t-1} β_t/(1-ᾱ_t) x_0
    + √α_t (1-ᾱ_{t-1})/(1-ᾱ_t) x_t, from the betas alone."""
    betas = schedule.betas.to(D64)
    abar = torch.cumprod(1 - betas, 0)
    abar_prev = torch.cat([torch.ones(1, dtype=D64), abar[:-1]])
    shape = (-1,) + (1,) * (x0.dim() - 1)
    c0 = (abar_prev[t].sqrt() * betas[t] / (1 - abar[t])).reshape(shape)
    ct = ((1 - betas[t]).sqrt() * (1 - abar_prev[t]) / (1 - abar[t])).reshape(shape)
    return c0 * x0 + ct * x_t


@pytest.mark.parametrize("model_var,v", [("fixed_small", None), ("learned", None)])
def test_a_perfect_mean_model_has_a_zero_bound_and_reads_off_x0_and_the_noise(diffusion, model_var, v):
    d = GaussianDiffusion(diffusion.schedule, model_var=model_var, model_mean="mean")
    x0 = torch.rand((4, 2, 3, 3), dtype=D64) * 2 - 1
    t = torch.tensor([1, 5, 400, 999])
    noise = torch.randn_like(x0)
    x_t = d.q_sample(x0, t, noise)

    def model(x, tt):
        mean = posterior_mean_by_hand(d.schedule, x0, x, tt)
        if model_var == "fixed_small":
            return mean
        log_var = d.schedule.posterior_log_variance_clipped[tt].reshape(-1, 1, 1, 1).expand_as(mean)
        return torch.cat([mean, log_var], dim=1)  # the learned Σ says β̃_t, the true one

    out = d.p_mean_variance(model, x_t, t, clip_denoised=False)
    torch.testing.assert_close(out["pred_x0"], x0)
    torch.testing.assert_close(out["eps"], noise)
    mean, v_out = d.model_output(model, x_t, t)
    assert torch.all(d.vb_terms_bpd(x0, x_t, t, mean, v_out, clip_denoised=False)["output"].abs() < 1e-8)


def test_the_simple_loss_of_a_mean_model_is_the_unweighted_mse_of_the_posterior_mean(diffusion):
    d = GaussianDiffusion(diffusion.schedule, model_mean="mean")
    x0 = torch.rand((5, 1, 4, 4), dtype=D64) * 2 - 1
    t = torch.tensor([0, 10, 200, 600, 999])
    noise = torch.randn_like(x0)
    x_t = d.q_sample(x0, t, noise)
    losses = d.training_losses(lambda x, tt: 0.5 * x, x0, t, noise)
    want = ((posterior_mean_by_hand(d.schedule, x0, x_t, t) - 0.5 * x_t) ** 2).flatten(1).mean(1)
    torch.testing.assert_close(losses["loss"], want)


def test_the_learned_diagonal_sigma_is_the_network_output(diffusion):
    """KL(q(x_{t-1}|x_t,x_0) || N(μ, e^v)) per dimension, by the Gaussian KL formula by hand."""
    d = GaussianDiffusion(diffusion.schedule, model_var="learned", model_mean="mean")
    x0 = torch.rand((3, 1, 2, 2), dtype=D64) * 2 - 1
    t = torch.tensor([3, 50, 700])
    x_t = d.q_sample(x0, t)
    mu, v = 0.9 * x_t, torch.full_like(x_t, -3.0)
    got = d.vb_terms_bpd(x0, x_t, t, mu, v, clip_denoised=False)["output"]
    m_q = posterior_mean_by_hand(d.schedule, x0, x_t, t)
    var_q = d.schedule.posterior_variance[t].reshape(-1, 1, 1, 1)
    kl = 0.5 * (-3.0 - var_q.log() + (var_q + (m_q - mu) ** 2) / math.exp(-3.0) - 1)
    torch.testing.assert_close(got, kl.flatten(1).mean(1) / math.log(2))


def test_snapping_refuses_a_mean_model(diffusion):
    from diffusion_core import snap_to_levels

    with pytest.raises(ValueError, match="snap_to_levels needs a model that predicts ε"):
        snap_to_levels(lambda x, t: x, GaussianDiffusion(diffusion.schedule, model_mean="mean"))


def test_a_mean_model_refuses_fewer_steps_but_runs_on_all_of_them(diffusion):
    d = GaussianDiffusion(diffusion.schedule, model_mean="mean")
    with pytest.raises(ValueError, match="num_steps must be"):
        d.respaced(50)
    assert torch.equal(d.respaced(d.T).timestep_map, torch.arange(d.T))
