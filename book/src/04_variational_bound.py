# ---
# jupyter:
#   jupytext:
#     text_representation:
#       extension: .py
#       format_name: percent
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # The variational bound: L_T, L_{t-1} and L_0
#
# The forward process of {doc}`02_forward_noising` and {doc}`03_closed_form` destroys an
# image; the model must learn to run it backwards. This chapter sets up that reverse
# process, derives the quantity it is trained on, a bound on the negative log-likelihood,
# and splits the bound into the three kinds of terms that the rest of the book works
# with.
#
# **What you will learn**
#
# - The reverse process $p_\theta(x_{t-1} \mid x_t) = \mathcal{N}(\mu_\theta(x_t, t), \sigma_t^2 I)$,
#   and why Gaussian reverse steps are a good model *only because the forward steps are small*.
# - The posterior $q(x_{t-1} \mid x_t, x_0)$: Gaussian, with a mean and variance in closed form.
# - The bound $-\log p_\theta(x_0) \le L = L_T + \sum_{t=2}^{T} L_{t-1} + L_0$, derived line by line.
# - Why $L_T$ is a constant, which terms carry the likelihood of a trained model, and how
#   close the bound gets to the true likelihood when the denoiser is perfect.

# %%
import sys
if "google.colab" in sys.modules:  # Colab only: install the book's library
    %pip install -q "diffusion_core @ git+https://github.com/diffusion-core/diffusion-book"

# %%
import math

import matplotlib.pyplot as plt
import numpy as np
import torch
from scipy import stats

from diffusion_core import GaussianDiffusion, make_schedule, normal_kl
from diffusion_core.data import DIGITS_LEVELS, load_digits
from diffusion_core.metrics import standard_error as se
from diffusion_core.notebook import generator, glue, setup
from diffusion_core.pretrained import load_pretrained

g = setup(seed=0, threads=1)  # one thread: fast and reproducible on any machine
f64 = torch.float64

# %% [markdown]
# ## Running the chain backwards
#
# Sampling means starting from $x_T \sim \mathcal{N}(0, I)$ and drawing $x_{T-1}, \dots, x_0$
# one step at a time. If we knew the true reverse conditionals $q(x_{t-1} \mid x_t)$, this
# would produce exact samples of the data. We don't: $q(x_{t-1} \mid x_t) \propto
# q(x_t \mid x_{t-1})\, q(x_{t-1})$ involves the marginal $q(x_{t-1})$, the data
# distribution blurred by noise, which is what we are trying to learn in the first place.
# DDPM models each reverse step as a Gaussian {cite}`ho2020denoising`:
#
# $$
# p_\theta(x_{t-1} \mid x_t) = \mathcal{N}\big(x_{t-1};\ \mu_\theta(x_t, t),\ \sigma_t^2 I\big),
# \qquad p(x_T) = \mathcal{N}(0, I).
# $$ (reverse-step)
#
# Why should a Gaussian be good enough, when the data is anything but Gaussian? Because
# each forward step adds only a little noise. When $\beta_t$ is small, the likelihood
# $q(x_t \mid x_{t-1})$ is a narrow Gaussian in $x_{t-1}$, and over so narrow a window any
# smooth $q(x_{t-1})$ is nearly linear in its log: the product is nearly Gaussian
# {cite}`sohl2015deep`. With a large step the window is wide and the reverse conditional
# inherits the shape of the data.
#
# We can watch this happen in one dimension, where everything is computable on a grid.
# Take data with two modes, $x_0 \in \{-0.6, 0.6\}$, so that $q(x_{t-1})$ is a mixture of
# two Gaussians, and compute the exact reverse conditional $q(x_{t-1} \mid x_t)$ for a small
# step and a large one. We measure how far it is from Gaussian with the KL divergence to
# the Gaussian with the same mean and variance.

# %%
grid = np.linspace(-3, 3, 6001)


def reverse_conditional(x_t: float, abar_prev: float, beta: float) -> np.ndarray:
    """q(x_{t-1} | x_t) on the grid for data ±0.6 with equal weights (Bayes' rule)."""
    marginal = 0.5 * sum(stats.norm.pdf(grid, math.sqrt(abar_prev) * m, math.sqrt(1 - abar_prev))
                         for m in (-0.6, 0.6))
    likelihood = stats.norm.pdf(x_t, math.sqrt(1 - beta) * grid, math.sqrt(beta))
    p = marginal * likelihood
    return p / np.trapezoid(p, grid)


def kl_to_moment_matched_gaussian(p: np.ndarray) -> float:
    m = np.trapezoid(grid * p, grid)
    v = np.trapezoid((grid - m) ** 2 * p, grid)
    log_q = stats.norm.logpdf(grid, m, math.sqrt(v))
    ok = p > 1e-300  # 0 log 0 = 0
    log_p = np.log(np.where(ok, p, 1.0))
    return float(np.trapezoid(np.where(ok, p * (log_p - log_q), 0.0), grid))


abar_prev, x_t_value = 0.9, 0.0  # a point between the modes, where the shape matters most
small, large = 0.001, 0.6
p_small = reverse_conditional(x_t_value, abar_prev, small)
p_large = reverse_conditional(x_t_value, abar_prev, large)
kl_small = kl_to_moment_matched_gaussian(p_small)
kl_large = kl_to_moment_matched_gaussian(p_large)
print(f"beta = {small}: KL(q(x_t-1|x_t) || best Gaussian) = {kl_small:.2e} nats")
print(f"beta = {large}:   KL(q(x_t-1|x_t) || best Gaussian) = {kl_large:.3f} nats")
glue("kl_small_step", kl_small, display=False)
glue("kl_large_step", kl_large, display=False)

# %%
fig, axes = plt.subplots(1, 2, figsize=(8, 2.8))
for ax, p, beta in zip(axes, (p_small, p_large), (small, large), strict=True):
    m = np.trapezoid(grid * p, grid)
    v = np.trapezoid((grid - m) ** 2 * p, grid)
    ax.plot(grid, p, label=r"exact $q(x_{t-1}\mid x_t)$")
    ax.plot(grid, stats.norm.pdf(grid, m, math.sqrt(v)), "--", label="Gaussian, same moments")
    ax.set_title(rf"$\beta_t = {beta}$, $x_t = {x_t_value}$")
    ax.set_xlim(-1.5, 1.5) if beta == large else ax.set_xlim(m - 6 * math.sqrt(v), m + 6 * math.sqrt(v))
    ax.set_xlabel(r"$x_{t-1}$")
axes[0].legend(fontsize=8)
plt.tight_layout()
plt.show()

# %%
assert kl_small < 1e-3 < 0.05 < kl_large  # small steps: Gaussian; large steps: not at all

# %% [markdown]
# With $\beta_t = 0.001$ the exact reverse step is Gaussian to within
# {glue:text}`kl_small_step:.1e` nats; with $\beta_t = 0.6$ it is bimodal and the best
# Gaussian is {glue:text}`kl_large_step:.2f` nats away. This is why diffusion models use
# hundreds or thousands of small steps, and why {doc}`11_fewer_steps` has to work to take
# fewer.

# %% [markdown]
# ## The posterior q(x_{t-1} | x_t, x_0)
#
# The reverse conditional is intractable, but if we also know where the chain started, it
# is not. Conditioning on $x_0$ turns $q(x_{t-1})$ into $q(x_{t-1} \mid x_0)$, a Gaussian by
# {doc}`03_closed_form`, and Bayes' rule multiplies two Gaussians in $x_{t-1}$:
#
# $$
# q(x_{t-1} \mid x_t, x_0) = \frac{q(x_t \mid x_{t-1})\, q(x_{t-1} \mid x_0)}{q(x_t \mid x_0)}
# = \mathcal{N}\big(x_{t-1};\ \tilde\mu_t(x_t, x_0),\ \tilde\beta_t I\big),
# $$ (posterior)
#
# (the Markov property lets us write $q(x_t \mid x_{t-1}, x_0) = q(x_t \mid x_{t-1})$). Adding
# the precisions $\frac{1-\beta_t}{\beta_t}$ and $\frac{1}{1-\bar\alpha_{t-1}}$ and
# simplifying with $\alpha_t\,(1-\bar\alpha_{t-1}) + \beta_t = 1-\bar\alpha_t$ gives
#
# $$
# \tilde\beta_t = \frac{1-\bar\alpha_{t-1}}{1-\bar\alpha_t}\,\beta_t,
# \qquad
# \tilde\mu_t(x_t, x_0) = \frac{\sqrt{\bar\alpha_{t-1}}\,\beta_t}{1-\bar\alpha_t}\,x_0
#   + \frac{\sqrt{\alpha_t}\,(1-\bar\alpha_{t-1})}{1-\bar\alpha_t}\,x_t .
# $$ (posterior-params)
#
# The library stores both coefficients and $\tilde\beta_t$ in the schedule tables
# (`posterior_mean_coef1`, `posterior_mean_coef2`, `posterior_variance`), and
# `GaussianDiffusion.q_posterior_mean_variance` applies them. We check them against
# Bayes' rule done numerically: multiply the two densities on a fine grid, normalise, and
# integrate for the mean and variance. Remember that the library's index `t` is the
# paper's $t+1$.

# %%
diffusion = GaussianDiffusion(make_schedule("linear", 1000), num_levels=DIGITS_LEVELS)
s = diffusion.schedule
x0_value, x_t_value = 0.4, -0.3
grid = np.linspace(-3, 3, 600_001)  # fine: at the paper's t=2 the posterior std is ~0.008
rows = []
for t in (1, 10, 100, 500, 999):  # 0-based index; the paper's t is t + 1
    # In log space: at small t both factors are far in each other's tails.
    log_prior = stats.norm.logpdf(grid, math.sqrt(s.alphas_cumprod_prev[t]) * x0_value,
                                  math.sqrt(1 - s.alphas_cumprod_prev[t]))
    log_lik = stats.norm.logpdf(x_t_value, math.sqrt(1 - s.betas[t]) * grid, math.sqrt(s.betas[t]))
    post = np.exp(log_prior + log_lik - (log_prior + log_lik).max())
    post /= np.trapezoid(post, grid)
    m_num = np.trapezoid(grid * post, grid)
    v_num = np.trapezoid((grid - m_num) ** 2 * post, grid)
    m, v, _ = diffusion.q_posterior_mean_variance(torch.tensor([[x0_value]], dtype=f64),
                                                  torch.tensor([[x_t_value]], dtype=f64),
                                                  torch.tensor([t]))
    rows.append((t + 1, m.item(), m_num, v.item(), v_num))
    print(f"t={t + 1:4d}  mean {m.item():+.6f} (grid {m_num:+.6f})   "
          f"variance {v.item():.3e} (grid {v_num:.3e})")

# %%
for _, m, m_num, v, v_num in rows:
    assert abs(m - m_num) < 1e-5 and abs(v / v_num - 1) < 1e-3

# %% [markdown]
# ## Deriving the bound
#
# We want to maximise $\log p_\theta(x_0)$, where
# $p_\theta(x_0) = \int p(x_T) \prod_{t=1}^T p_\theta(x_{t-1} \mid x_t)\, dx_{1:T}$ is an
# integral over every path, far too large to compute. Multiply and divide by the forward
# path density and use Jensen's inequality, exactly as for a VAE whose encoder is the
# fixed forward process:
#
# $$
# -\log p_\theta(x_0)
# = -\log \mathbb{E}_{q(x_{1:T} \mid x_0)}\!\left[\frac{p_\theta(x_{0:T})}{q(x_{1:T} \mid x_0)}\right]
# \le \mathbb{E}_{q}\!\left[-\log \frac{p_\theta(x_{0:T})}{q(x_{1:T} \mid x_0)}\right] = L .
# $$ (elbo)
#
# Write out both path densities:
# $L = \mathbb{E}_q\big[-\log p(x_T) - \sum_{t \ge 1} \log \frac{p_\theta(x_{t-1} \mid x_t)}{q(x_t \mid x_{t-1})}\big]$.
# Each forward factor with $t \ge 2$ can be turned around with Bayes' rule, conditioning on
# $x_0$ throughout:
# $q(x_t \mid x_{t-1}) = q(x_{t-1} \mid x_t, x_0)\, q(x_t \mid x_0) / q(x_{t-1} \mid x_0)$.
# The ratios $q(x_t \mid x_0)/q(x_{t-1} \mid x_0)$ telescope to $q(x_T \mid x_0)/q(x_1 \mid x_0)$,
# and the terms regroup into KL divergences between Gaussians:
#
# $$
# L = \underbrace{D_{\mathrm{KL}}\big(q(x_T \mid x_0)\,\|\,p(x_T)\big)}_{L_T}
# + \sum_{t=2}^{T} \underbrace{\mathbb{E}_q\, D_{\mathrm{KL}}\big(q(x_{t-1} \mid x_t, x_0)\,\|\,p_\theta(x_{t-1} \mid x_t)\big)}_{L_{t-1}}
# \underbrace{-\ \mathbb{E}_q \log p_\theta(x_0 \mid x_1)}_{L_0}.
# $$ (bound-split)
#
# - $L_T$ compares the end of the forward chain with the prior. It has no parameters.
# - Each $L_{t-1}$, $t = 2, \dots, T$, compares the model's reverse step with the tractable
#   posterior {eq}`posterior`: a KL between two Gaussians, in closed form
#   ({doc}`05_gaussian_kl`).
# - $L_0$ is a reconstruction term: how well the last step decodes the data. For images
#   it is a discrete likelihood over pixel values ({doc}`09_discrete_decoder`).
#
# In the library, `GaussianDiffusion.vb_terms_bpd(x0, x_t, t, eps)` takes the network's output
# $\hat\varepsilon$ at $(x_t, t)$ and returns $L_{t-1}$ at index `t` $\ge 1$ and $L_0$ at index
# 0; `prior_bpd` returns $L_T$; `calc_bpd_loop` adds
# them all up for a batch of images. All are in **bits per dimension**: nats divided by
# $\ln 2$ and by the number of pixels, the unit in which image likelihoods are reported.

# %% [markdown]
# :::{admonition} A common mistake
# :class: warning
# Writing the KL sum from $t = 1$ *and* adding $L_0$. The sum starts at $t = 2$: the
# factor for $t = 1$ was never turned around, it *is* $L_0$. A "$t = 1$ KL term" would
# compare $p_\theta(x_0 \mid x_1)$ with $q(x_0 \mid x_1, x_0)$, a point mass at $x_0$
# ($\tilde\beta_1 = 0$), and that KL is infinite: the cell below shows it growing without
# bound as the posterior variance shrinks to the true value 0.
# :::

# %%
print("posterior variance at the paper's t=1:", diffusion.schedule.posterior_variance[0].item())
for tiny in (1e-4, 1e-8, 1e-16):
    kl = normal_kl(torch.tensor(0.0, dtype=f64), torch.tensor(math.log(tiny), dtype=f64),
                   torch.tensor(0.0, dtype=f64), diffusion.schedule.posterior_log_variance_clipped[0])
    print(f"  KL with the posterior variance set to {tiny:.0e}: {kl.item():7.2f} nats per pixel")

# %%
assert diffusion.schedule.posterior_variance[0].item() == 0.0

# %% [markdown]
# ## L_T is a constant, and it is tiny
#
# $q(x_T \mid x_0) = \mathcal{N}(\sqrt{\bar\alpha_T}\,x_0, (1-\bar\alpha_T) I)$ depends only
# on the schedule and the data, so with a fixed schedule $L_T$ does not change during
# training and is dropped from the loss. For DDPM's schedule $\bar\alpha_T$ is so small that
# the forward chain ends almost exactly at the prior:

# %%
digits, labels = load_digits("test")
prior_bpd = diffusion.prior_bpd(digits.to(f64))
print(f"alphas_cumprod[T] = {s.alphas_cumprod[-1].item():.3e}")
print(f"L_T over {len(digits)} held-out digits: mean {prior_bpd.mean().item():.2e} bits/dim, "
      f"max {prior_bpd.max().item():.2e}")
glue("prior_bpd_digits", prior_bpd.mean().item())

# %%
# Independent check: KL(N(m, v) || N(0, 1)) = (m² + v - 1 - ln v)/2 per pixel, here by hand.
abar_T = s.alphas_cumprod[-1].item()
m = math.sqrt(abar_T) * digits.to(f64)
by_hand = (0.5 * (m ** 2 + (1 - abar_T) - 1 - math.log(1 - abar_T))).flatten(1).mean(1) / math.log(2)
assert torch.allclose(prior_bpd, by_hand, rtol=1e-9)
assert prior_bpd.max() < 1e-4

# %% [markdown]
# ## The bound, term by term, for a trained model
#
# Now a real model: the book's default digits model, a small UNet ({doc}`07_unet`) trained
# with the simple loss of {doc}`06_eps_parameterization` on scikit-learn's 8×8 digits, whose
# pixels take 17 grey levels. `load_pretrained` loads its shipped weights (and retrains it
# from its recorded configuration if they are missing). We evaluate the whole bound on
# held-out digits: one draw of $x_t$ per example and per $t$, every KL exact given that draw.
# The bound of each digit is then a random number, so the mean over the 50 digits comes with
# a standard error. The network computes in float32, whose last bits differ between CPUs, so
# the printed digits of this cell are not compared when the book is tested; the asserts are.

# %% tags=["nbval-ignore-output"]
model, diffusion, config = load_pretrained("digits_simple", progress=False)
x0 = digits[:50]
with torch.no_grad():
    result = diffusion.calc_bpd_loop(model, x0, generator=generator(0))
vb = result["vb"]  # (B, T): index 0 is L_0, index t >= 1 is L_{t}
total = result["total_bpd"].mean().item()
total_se = se(result["total_bpd"])  # over the 50 digits
parts = {"L_T": result["prior_bpd"].mean().item(), "L_0": vb[:, 0].mean().item(),
         "sum of L_{t-1}, t = 2..T": vb[:, 1:].sum(1).mean().item()}
for name, value in parts.items():
    print(f"{name:>26}: {value:.4f} bits/dim")
print(f"{'total':>26}: {total:.4f} ± {total_se:.4f} bits/dim")
glue("digits_total_bpd", total, digits=3)
glue("digits_total_se", total_se, digits=1)

# %%
assert torch.allclose(result["total_bpd"], result["prior_bpd"] + vb.sum(1))
assert abs(sum(parts.values()) - total) < 1e-5 * total  # float32 sums in another order
assert bool((vb[:, 1:] >= 0).all())  # KL terms are never negative

# %%
per_t = vb.mean(0).numpy()
fig, axes = plt.subplots(1, 2, figsize=(8, 3))
axes[0].semilogy(np.arange(1, 1001), per_t)
axes[0].set_xlabel("t (paper's numbering)")
axes[0].set_ylabel("bits/dim")
axes[0].set_title("each term of the bound")
axes[1].plot(np.arange(1, 1001), np.cumsum(per_t))
axes[1].set_xlabel("t")
axes[1].set_title("cumulative sum from t = 1")
plt.tight_layout()
plt.show()

# %% tags=["nbval-ignore-output"]
# the share of the first 100 steps, a ratio of two sums over the digits; its standard
# error from the per-digit residuals a_i - share * b_i (the delta method)
first, whole = vb[:, :100].sum(1).double(), vb.sum(1).double()  # (50,) each
first_tenth = (first.sum() / whole.sum()).item()
share_se = ((first - first_tenth * whole).std() / math.sqrt(len(whole))
            / whole.mean()).item()
print(f"share of the bound in the first 10% of the steps: {first_tenth:.1%} "
      f"± {share_se:.1%}")
glue("share_first_tenth", 100 * first_tenth, digits=2)
assert first_tenth - 5 * share_se > 0.5  # far above the 10% of an even split

# %% [markdown]
# The held-out bound is {glue:text}`digits_total_bpd:.2f` ± {glue:text}`digits_total_se:.1g`
# bits/dim (the mean over the 50 digits, ± its standard error). The terms are far from
# equal: {glue:text}`share_first_tenth:.2g`% of it comes from the first tenth of the
# steps, where the noise is small and the model must get fine details right; at large $t$
# the posterior and the model agree closely and the terms are tiny. {doc}`10_improved_ddpm`
# exploits this with importance-sampled timesteps.
#
# ## How tight is the bound?
#
# A bound is only useful if it is close to the quantity it bounds. For a trained network
# we cannot know the true likelihood, but we can build a case where we do: data on the 17
# grey levels, drawn from a discretised Gaussian, so its exact negative log-likelihood is a
# direct sum. For this data the best possible denoiser is known exactly: $\mathbb{E}[x_0 \mid x_t]$
# is a weighted average of the 17 levels with softmax weights from Bayes' rule. Plugging it
# in as the "model" gives the best bound a Gaussian reverse process with $\sigma_t^2 = \tilde\beta_t$
# can reach, and we watch it close in on the exact NLL as $T$ grows.

# %%
L = DIGITS_LEVELS
levels = torch.linspace(-1, 1, L, dtype=f64)
edges = np.concatenate([[-np.inf], levels[:-1].numpy() + 1 / (L - 1), [np.inf]])
probs = torch.tensor(np.diff(stats.norm.cdf(edges, 0.1, 0.35)))


def exact_denoiser(d: GaussianDiffusion):
    acp = d.schedule.alphas_cumprod

    def eps_hat(x, t):
        a, b = acp[t].sqrt().view(-1, 1), (1 - acp[t]).sqrt().view(-1, 1)
        logits = probs.log().view(1, -1) - 0.5 * ((x - a * levels.view(1, -1)) / b) ** 2
        x0_mean = (torch.softmax(logits, dim=1) * levels).sum(1, keepdim=True)
        return (x - a * x0_mean) / b
    return eps_hat


n_toy = 3000
idx = torch.multinomial(probs, n_toy, replacement=True, generator=g)
x0_toy, exact_nll = levels[idx].view(-1, 1), -torch.log2(probs[idx])
Ts = (100, 300, 1000, 3000)
gap = {}  # T -> bound - exact NLL for each example, (n_toy,)
for T in Ts:
    d = GaussianDiffusion(make_schedule("linear", T), num_levels=L)
    bound = d.calc_bpd_loop(exact_denoiser(d), x0_toy, clip_denoised=False,
                            generator=generator(1))["total_bpd"]
    gap[T] = bound - exact_nll
    print(f"T = {T:5d}: bound {bound.mean().item():.3f} bits, exact NLL {exact_nll.mean().item():.3f}, "
          f"gap {gap[T].mean().item():.3f} ± {se(gap[T]):.3f}")
for small, large in zip(Ts, Ts[1:]):
    drop = gap[small] - gap[large]  # the same examples at both T: a paired difference
    print(f"gap at T = {small:4d} minus gap at T = {large:4d}: {drop.mean().item():.3f} "
          f"± {se(drop):.3f} ({drop.mean().item() / se(drop):.1f} standard errors)")

# %%
assert all(g_T.mean() > -5 * se(g_T) for g_T in gap.values())  # it is a bound
# ... that tightens with T. The draws of x_t add noise to each example's bound, about 1.4 bits
# (standard deviation) to its difference between T = 1000 and 3000, whose mean is about 0.18
# bits: with 3000 examples that difference lies about 7 standard errors above 0 (6.8 to 8.3
# for BOOK_SEED 0-4), the others 9 and more, so the decrease shows in every run except with
# probability below 1e-9.
assert all((gap[small] - gap[large]).mean() > 0 for small, large in zip(Ts, Ts[1:]))

# %% [markdown]
# The gap shrinks steadily with $T$, each step of the table by many standard errors (the same
# examples at every $T$, so the differences are paired): with small steps the Gaussian
# reverse steps become exact, as the first section showed. What remains at a finite $T$ is
# the price of the Gaussian assumption, not of the network.
#
# ## Summary
#
# - The reverse process is a chain of Gaussians {eq}`reverse-step`; this is a good model
#   because the forward steps are small.
# - Conditioning on $x_0$ makes the reverse step tractable: $q(x_{t-1} \mid x_t, x_0)$ has
#   mean $\tilde\mu_t$ and variance $\tilde\beta_t$ {eq}`posterior-params`, checked above
#   against Bayes' rule on a grid.
# - The negative log-likelihood is bounded by $L = L_T + \sum_{t=2}^T L_{t-1} + L_0$
#   {eq}`bound-split`: a constant prior term, KL divergences between Gaussians, and a
#   decoder term. The KL sum starts at $t = 2$.
# - For a trained digits model the bound concentrates at small $t$; with a perfect
#   denoiser it closes in on the true likelihood as $T$ grows.
#
# ## Exercises
#
# 1. Derive $\tilde\beta_t$ in {eq}`posterior-params` by adding the precisions of the two
#    Gaussians in {eq}`posterior`.
# 2. Show that $\tilde\beta_t \le \beta_t$ for every $t$, and check it on both schedules
#    with the library's tables.
# 3. Using `calc_bpd_loop`'s `vb` output, find the smallest set of timesteps that carries
#    90% of the bound for the digits model.
#
# :::{admonition} Solution to 2
# :class: dropdown
# $\tilde\beta_t / \beta_t = (1-\bar\alpha_{t-1})/(1-\bar\alpha_t) \le 1$ because
# $\bar\alpha_t \le \bar\alpha_{t-1}$. In code:
# `all((s.posterior_variance <= s.betas).all() for s in (make_schedule("linear", 1000), make_schedule("cosine", 1000)))`
# is `True`.
# :::
#
# :::{admonition} Solution to 3
# :class: dropdown
# Sort the per-$t$ means in decreasing order and take the cumulative sum:
# `order = np.argsort(per_t)[::-1]; k = np.searchsorted(np.cumsum(per_t[order]) / per_t.sum(), 0.9) + 1`.
# Most of the steps in that set are small $t$.
# :::
