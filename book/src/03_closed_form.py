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
# # Jumping to any t: q(xₜ | x₀)
#
# In {doc}`02_forward_noising` we reached $x_t$ by running $t$ noisy steps. Because every
# step is Gaussian and linear, the $t$ steps collapse into one: $x_t$ given $x_0$ is again
# Gaussian, with a mean and variance we can write down. This chapter derives that closed
# form, checks it against the step-by-step chain, and uses it to compare noise schedules.
#
# **What you will learn**
#
# - The notation $\alpha_t = 1 - \beta_t$, $\bar\alpha_t = \prod_{s \le t} \alpha_s$, and the
#   closed form $q(x_t \mid x_0) = \mathcal{N}\big(\sqrt{\bar\alpha_t}\,x_0,\ (1-\bar\alpha_t) I\big)$,
#   derived by induction.
# - How to check it: Monte Carlo means and variances at every $t$, and a
#   Kolmogorov-Smirnov test.
# - Why it makes training cheap: any $x_t$ in one step instead of $t$.
# - The signal-to-noise ratio $\bar\alpha_t / (1 - \bar\alpha_t)$ of the linear and cosine
#   schedules, and why the prior term $L_T$ of the bound is almost 0.
# - Two wrong versions of the closed form that circulate, and the numbers that expose them.

# %%
import sys
if "google.colab" in sys.modules:  # Colab only: install the book's library
    %pip install -q "diffusion_core @ git+https://github.com/diffusion-core/diffusion-book"

# %%
import inspect
import math
import time

import matplotlib.pyplot as plt
import numpy as np
import scipy.stats
import torch

from diffusion_core import (GaussianDiffusion, make_schedule,
                            schedule_from_betas, viz)
from diffusion_core.data import load_digits
from diffusion_core.notebook import glue, setup

g = setup(seed=0)  # 2 threads, all seeds fixed: the outputs reproduce
f64 = torch.float64

# %% [markdown]
# ## Notation: $\alpha_t$ and $\bar\alpha_t$
#
# Two quantities make the algebra short {cite}`ho2020denoising`:
#
# $$
# \alpha_t = 1 - \beta_t, \qquad \bar\alpha_t = \prod_{s=1}^{t} \alpha_s .
# $$ (cf-alphas)
#
# With them, one step of the forward process from {doc}`02_forward_noising` reads
#
# $$
# x_t = \sqrt{\alpha_t}\,x_{t-1} + \sqrt{1-\alpha_t}\,\varepsilon_t,
# \qquad \varepsilon_t \sim \mathcal{N}(0, I).
# $$ (cf-step)
#
# The library precomputes both tables in float64 (`Schedule.alphas`,
# `Schedule.alphas_cumprod`), **0-based**: `alphas_cumprod[t - 1]` is $\bar\alpha_t$. In the
# text, $t$ is the paper's step ($t = 0$ is the data). Here is the table against a product
# of plain Python floats:

# %%
T = 1000
linear = make_schedule("linear", T)
cosine = make_schedule("cosine", T)

# ᾱ_1, ..., ᾱ_T as products of plain Python floats
betas = linear.betas.tolist()
alphas_cumprod = [math.prod(1 - b for b in betas[:t])
                  for t in range(1, T + 1)]
print(f"alpha-bar at t = 1, 500, 1000: {alphas_cumprod[0]:.6f}, "
      f"{alphas_cumprod[499]:.6f}, {alphas_cumprod[-1]:.4e}")

# %% tags=["nbval-ignore-output"]
# Rounding-level numbers vary by machine: output not compared.
library = linear.alphas_cumprod.tolist()
rel_err = max(abs(a - b) / b
              for a, b in zip(alphas_cumprod, library, strict=True))
print(f"largest relative difference from the library: {rel_err:.1e}")
assert rel_err < 1e-12

# %% [markdown]
# ## The closed form, by induction
#
# **Claim.** For every $t \ge 1$,
#
# $$
# \begin{aligned}
# q(x_t \mid x_0) &= \mathcal{N}\!\big(x_t;\ \sqrt{\bar\alpha_t}\,x_0,\ (1-\bar\alpha_t) I\big),
# \quad\text{that is,} \\
# x_t &= \sqrt{\bar\alpha_t}\,x_0 + \sqrt{1-\bar\alpha_t}\,\bar\varepsilon_t,
# \qquad \bar\varepsilon_t \sim \mathcal{N}(0, I).
# \end{aligned}
# $$ (cf-closed-form)
#
# One fact does all the work: **the sum of two independent Gaussians is Gaussian, and their
# variances add**. If $a \sim \mathcal{N}(0, \sigma_a^2 I)$ and $b \sim \mathcal{N}(0, \sigma_b^2 I)$
# are independent, then $a + b \sim \mathcal{N}\big(0, (\sigma_a^2 + \sigma_b^2) I\big)$ (the
# characteristic function of a sum of independent variables is the product of theirs, and
# $e^{-\sigma_a^2 u^2/2} e^{-\sigma_b^2 u^2/2} = e^{-(\sigma_a^2 + \sigma_b^2) u^2/2}$).
#
# *Base case, $t = 1$.* {eq}`cf-step` with $t = 1$ is {eq}`cf-closed-form`, since
# $\bar\alpha_1 = \alpha_1$.
#
# *Step.* Suppose {eq}`cf-closed-form` holds for $t - 1$. Substitute it into {eq}`cf-step`:
#
# $$
# \begin{aligned}
# x_t &= \sqrt{\alpha_t}\big(\sqrt{\bar\alpha_{t-1}}\,x_0
#        + \sqrt{1-\bar\alpha_{t-1}}\,\bar\varepsilon_{t-1}\big)
#        + \sqrt{1-\alpha_t}\,\varepsilon_t \\
#     &= \sqrt{\bar\alpha_t}\,x_0
#        + \underbrace{\sqrt{\alpha_t(1-\bar\alpha_{t-1})}\,\bar\varepsilon_{t-1}
#        + \sqrt{1-\alpha_t}\,\varepsilon_t}_{\text{two independent Gaussians}} .
# \end{aligned}
# $$ (cf-induction)
#
# The fresh noise $\varepsilon_t$ is independent of $\bar\varepsilon_{t-1}$ (which only
# depends on $\varepsilon_1, \dots, \varepsilon_{t-1}$), so the two noise terms merge into one
# Gaussian with variance
#
# $$
# \alpha_t(1-\bar\alpha_{t-1}) + (1-\alpha_t) = 1 - \alpha_t\bar\alpha_{t-1} = 1 - \bar\alpha_t .
# $$ (cf-merged-variance)
#
# That is {eq}`cf-closed-form` for $t$. $\square$
#
# Unrolling the induction shows what the merged noise is: the chain gives
# $x_t = \sqrt{\bar\alpha_t}\,x_0 + \sum_{s=1}^{t} c_{t,s}\,\varepsilon_s$ with
# $c_{t,s} = \sqrt{1-\alpha_s}\,\prod_{r=s+1}^{t}\sqrt{\alpha_r}$ (the noise of step $s$,
# shrunk by every later step). The closed form says $\sum_s c_{t,s}^2 = 1 - \bar\alpha_t$.
# Check it for every $t$, building the coefficients the way the chain does, one step at a
# time:

# %% tags=["nbval-ignore-output"]
# Rounding-level numbers vary by machine: output not compared.
alphas = linear.alphas.numpy()
coef = np.zeros(T)    # coef[s - 1] = c_{t,s}, updated as t grows
sum_sq = np.zeros(T)  # sum_sq[t - 1] = Σ_s c_{t,s}²
signal = np.zeros(T)  # signal[t - 1]: the coefficient of x_0 at step t
x0_coef = 1.0
for t in range(1, T + 1):
    coef[: t - 1] *= np.sqrt(alphas[t - 1])   # shrink the older noise
    coef[t - 1] = np.sqrt(1 - alphas[t - 1])  # this step's own noise
    x0_coef *= np.sqrt(alphas[t - 1])
    sum_sq[t - 1], signal[t - 1] = (coef[:t] ** 2).sum(), x0_coef

err_var = np.abs(sum_sq - (1 - linear.alphas_cumprod.numpy())).max()
err_mean = np.abs(signal - linear.sqrt_alphas_cumprod.numpy()).max()
print(f"max |sum of c^2 - (1 - alpha-bar)|      = {err_var:.1e}")
print(f"max |x_0 coefficient - sqrt(alpha-bar)| = {err_mean:.1e}")
assert err_var < 1e-12 and err_mean < 1e-12

# %% [markdown]
# The library implements {eq}`cf-closed-form` in two methods of `GaussianDiffusion`:
# `q_mean_variance` returns the mean and variance, `q_sample` draws from it. Their
# timestep argument is the 0-based index, so the paper's $x_t$ is `q_sample(x0, t - 1)`.
# `q_sample` checks its arguments and hands them to `_q_sample`, the formula itself, which
# the training loop calls directly (checks read values back from the device, and a step on a
# GPU should not wait for that). `_at` picks the table's entry for each example's $t$:

# %%
print(inspect.getsource(GaussianDiffusion.q_sample))
print(inspect.getsource(GaussianDiffusion._q_sample))

# %% [markdown]
# ## Checking it against the chain
#
# The derivation is short, but the chain is the definition, so let us compare the two
# directly. Take five values of a pixel, $x_0 \in \{-1, -0.5, 0, 0.5, 1\}$, run 6400
# independent chains of {eq}`cf-step` from each for all 1000 steps of the linear schedule,
# and record the sample mean and variance at every $t$. The closed form predicts
# $\sqrt{\bar\alpha_t}\,x_0$ and $1 - \bar\alpha_t$, which `q_mean_variance` returns.
#
# The tolerance is **6 standard errors**: the standard error of a sample mean is
# $s/\sqrt{n}$, that of a sample variance $\sqrt{(m_4 - s^4\,(n-3)/(n-1))/n}$ with $m_4$ the
# fourth central moment. Over the 10 000 comparisons below (5000 means, 5000 variances) the
# largest error of a correct formula should be about 4 standard errors. A single comparison
# passes 5 by chance with probability $6 \cdot 10^{-7}$, but 10 000 of them, if independent,
# would do so somewhere with probability 0.6%; 6 standard errors bring that down to
# $2 \cdot 10^{-5}$.

# %%
def forward_step(x_prev: torch.Tensor, beta: torch.Tensor,
                 eps: torch.Tensor) -> torch.Tensor:
    """x_t = √(1 - β_t) x_{t-1} + √β_t ε: one step of the chain."""
    return (1 - beta).sqrt() * x_prev + beta.sqrt() * eps


def sample_moments(x: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """Mean, variance and SE of the variance, along the last dim."""
    n = x.shape[-1]
    mean, var = x.mean(dim=-1), x.var(dim=-1)
    m4 = ((x - mean[..., None]) ** 4).mean(dim=-1)
    return mean, var, ((m4 - var**2 * (n - 3) / (n - 1)).clamp(min=0) / n).sqrt()


x0_values = torch.tensor([-1.0, -0.5, 0.0, 0.5, 1.0], dtype=f64)
n = 6400  # chains per value: 5 x 6400 = 32 000 numbers in all
x = x0_values[:, None].expand(5, n).clone()  # (5, n)
stats = []
for t in range(1, T + 1):
    eps = torch.randn(x.shape, generator=g, dtype=f64)
    x = forward_step(x, linear.betas[t - 1], eps)
    stats.append(sample_moments(x))
    if t == 500:
        x_500 = x.clone()
# each (T, 5): row t - 1, one column per x_0
mc_mean, mc_var, mc_se = (torch.stack(s)
                          for s in zip(*stats, strict=True))

# %%
diffusion = GaussianDiffusion(linear)
t_index = torch.arange(T).repeat_interleave(5)  # (5T,), 0-based: t - 1
x0_batch = x0_values.repeat(T)[:, None]         # (5T, 1)
cf_mean, cf_var, _ = diffusion.q_mean_variance(x0_batch, t_index)
cf_mean, cf_var = cf_mean.reshape(T, 5), cf_var.reshape(T, 5)

z_mean = (mc_mean - cf_mean) / (mc_var / n).sqrt()
z_var = (mc_var - cf_var) / mc_se
print("   t   x_0   mean: chain  closed form   var: chain  closed form")
for t in [1, 10, 100, 500, 1000]:
    for k in [0, 3]:
        print(f"{t:4d}  {x0_values[k]:4.1f}  {mc_mean[t - 1, k]:11.4f}"
              f"  {cf_mean[t - 1, k]:11.4f}  {mc_var[t - 1, k]:11.5f}"
              f"  {cf_var[t - 1, k]:11.5f}")
print(f"largest |z| over all t and x_0: mean {z_mean.abs().max():.2f}, "
      f"variance {z_var.abs().max():.2f}")

# %%
assert z_mean.abs().max() < 6 and z_var.abs().max() < 6  # 10 000 comparisons: 6 SE

# %%
fig, axes = plt.subplots(1, 3, figsize=(8, 2.8))
t_axis = np.arange(1, T + 1)
dots = slice(24, None, 50)  # error bars at t = 25, 75, ...
for k in range(5):
    c, label = f"C{k}", f"$x_0$ = {x0_values[k]:g}"
    axes[0].plot(t_axis, cf_mean[:, k], color=c, lw=1)
    axes[0].errorbar(t_axis[dots], mc_mean[dots, k], fmt="o", ms=2.5,
                     yerr=6 * (mc_var[dots, k] / n).sqrt(), color=c,
                     label=label)
    axes[2].plot(t_axis, z_mean[:, k], ".", ms=1, color=c)
axes[1].plot(t_axis, cf_var[:, 0], "k", lw=1, label="closed form")
axes[1].errorbar(t_axis[dots], mc_var[dots, 0], yerr=6 * mc_se[dots, 0],
                 fmt="o", ms=2.5, color="C0", label="chain")
axes[0].set(xlabel="t", title=r"mean: $\sqrt{\bar\alpha_t}\,x_0$")
axes[1].set(xlabel="t", title=r"variance: $1-\bar\alpha_t$")
axes[2].set(xlabel="t", title="mean error / SE", ylim=(-6.5, 6.5))
for level in (6, -6):
    axes[2].axhline(level, color="k", lw=0.5, ls="--")
axes[0].legend(fontsize=6)
axes[1].legend(fontsize=7)
plt.tight_layout()
plt.show()

# %% [markdown]
# Lines are the closed form, dots the chain with bars of $\pm 6$ standard errors. The right panel shows the error of every one of the 5000 chain
# means in units of its standard error: a band of pure noise, as it should be.
#
# Means and variances could agree while the shapes differ. A Kolmogorov-Smirnov test checks
# the whole distribution: standardise the 32 000 chain samples at $t = 500$ with the closed
# form, $z = (x_{500} - \sqrt{\bar\alpha_{500}}\,x_0)/\sqrt{1-\bar\alpha_{500}}$, and test them
# against $\mathcal{N}(0, 1)$.

# %%
mean_500, std_500 = cf_mean[499], cf_var[499].sqrt()  # (5,)
z_500 = ((x_500 - mean_500[:, None]) / std_500[:, None]).flatten()
ks = scipy.stats.kstest(z_500.numpy(), "norm")
print(f"all {z_500.numel()} samples, standardised: "
      f"D = {ks.statistic:.4f}, p-value = {ks.pvalue:.3f}")
for k in range(5):  # one test per x_0, against N(√ᾱ x_0, 1 - ᾱ) itself
    cdf = scipy.stats.norm(mean_500[k].item(), std_500[k].item()).cdf
    r = scipy.stats.kstest(x_500[k].numpy(), cdf)
    print(f"  x_0 = {x0_values[k]:4.1f}: D = {r.statistic:.4f}, "
          f"p-value = {r.pvalue:.3f}")

# %%
glue("ks_500_D", float(ks.statistic), digits=2)
# a sample that follows the formula fails this with probability 1e-6
assert ks.pvalue > 1e-6

# %% [markdown]
# ## Why this makes training cheap
#
# Training a diffusion model (later chapters) needs, for each training image, a noisy
# version $x_t$ at a random $t$. With the chain that costs $t$ steps, each with a fresh
# Gaussian draw for every pixel: $(T+1)/2 = 500.5$ steps per image on average. With
# {eq}`cf-closed-form` it costs one draw and one multiply-add per pixel, whatever $t$ is.
# For a batch of 128 digit images at random $t$:

# %%
digits, labels = load_digits("train")  # (1497, 1, 8, 8) in [-1, 1]
x0 = digits[:128].double()             # (128, 1, 8, 8)
t = torch.randint(1, T + 1, (128,), generator=g)  # uniform on 1..T
draws_chain = int(t.sum()) * 64   # one Gaussian per pixel per step
draws_closed = 128 * 64           # one Gaussian per pixel
ratio = draws_chain / draws_closed  # the mean of the 128 sampled t
glue("draw_ratio", ratio, digits=2)
print(f"Gaussian draws for the batch: chain {draws_chain:,}, "
      f"closed form {draws_closed:,}")
print(f"ratio {ratio:.1f}")
# t is uniform on 1..T: mean (T + 1)/2, SD √((T² - 1)/12), here over 128
assert abs(ratio - (T + 1) / 2) < 5 * math.sqrt((T**2 - 1) / 12 / 128)

# %% tags=["nbval-ignore-output"]
# Wall-clock times vary between machines (this output is not checked).
start = time.perf_counter()
x = x0.clone()
for s in range(1, int(t.max()) + 1):  # every image stops at its own t
    eps = torch.randn(x.shape, generator=g, dtype=f64)
    going = (s <= t).reshape(-1, 1, 1, 1)
    x = torch.where(going, forward_step(x, linear.betas[s - 1], eps), x)
chain_s = time.perf_counter() - start
start = time.perf_counter()
x_t = diffusion.q_sample(x0, t - 1)  # 0-based index: t - 1
closed_s = time.perf_counter() - start
print(f"chain: {chain_s * 1e3:.1f} ms, "
      f"closed form: {closed_s * 1e3:.2f} ms")

# %% [markdown]
# The chain needs about {glue:text}`draw_ratio:.0f` times as many random numbers for this batch
# (the mean of the sampled $t$, which averages $(T+1)/2$), and its loop cannot be parallelised over steps. The closed form
# also makes every training example independent of the others: each can have its own $t$,
# so one batch trains the network at many noise levels at once.

# %% [markdown]
# ## Signal-to-noise ratio, and how much signal is left at $t = T$
#
# In {eq}`cf-closed-form` the signal is scaled by $\sqrt{\bar\alpha_t}$ and the noise has
# variance $1-\bar\alpha_t$. Their ratio is the **signal-to-noise ratio**
#
# $$
# \mathrm{SNR}(t) = \frac{\bar\alpha_t}{1-\bar\alpha_t},
# $$ (cf-snr)
#
# for unit-variance data. It falls from very large to almost 0, and a schedule is best
# compared through it rather than through $\beta_t$ (`Schedule.snr`).

# %%
fig, axes = plt.subplots(1, 2, figsize=(8, 3))
for name, sched in [("linear", linear), ("cosine", cosine)]:
    axes[0].plot(t_axis, sched.alphas_cumprod, label=name)
    axes[1].plot(t_axis, sched.snr, label=name)
axes[0].set(xlabel="t", title=r"$\bar\alpha_t$ (signal variance kept)")
axes[1].set(xlabel="t", yscale="log",
            title=r"SNR$(t) = \bar\alpha_t / (1 - \bar\alpha_t)$")
axes[1].axhline(1, color="k", lw=0.5, ls="--")
axes[0].legend()
plt.tight_layout()
plt.show()

# %%
summary = {}
for name, sched in [("linear", linear), ("cosine", cosine)]:
    signal = sched.sqrt_alphas_cumprod
    summary[name] = {
        "acp_T": sched.alphas_cumprod[-1].item(),
        "snr_T": sched.snr[-1].item(),
        "t_snr_1": int((sched.snr > 1).sum()),  # SNR > 1 up to here
        "frac_low": (signal < 0.05).double().mean().item(),
        "sqrt_acp_500": signal[499].item(),
    }
    v = summary[name]
    print(f"{name}: alpha-bar_T = {v['acp_T']:.3e}, "
          f"SNR(T) = {v['snr_T']:.3e}")
    print(f"    SNR > 1 up to t = {v['t_snr_1']}, "
          f"sqrt(alpha-bar_500) = {v['sqrt_acp_500']:.3f}")
    print(f"    steps with sqrt(alpha-bar) < 0.05: "
          f"{100 * v['frac_low']:.1f}%")
for name, values in summary.items():
    for key, value in values.items():
        glue(f"{name}_{key}", float(f"{value:.6g}"))

# %%
# the SNR table is ᾱ/(1 - ᾱ): recompute it from the Python-float product
snr_check = np.array([a / (1 - a) for a in alphas_cumprod])
assert np.allclose(snr_check, linear.snr.numpy(), rtol=1e-10, atol=0)
assert summary["linear"]["acp_T"] < 1e-4
assert summary["cosine"]["acp_T"] < 1e-8

# %% [markdown]
# Both schedules end near $\bar\alpha = 0$, but they travel differently. The linear schedule
# keeps SNR above 1 only until $t =$ {glue:text}`linear_t_snr_1:.0f`, and in
# {glue:text}`linear_frac_low:.1%` of its steps less than 5% of the signal amplitude is left
# ($\sqrt{\bar\alpha_t} < 0.05$); the cosine schedule keeps SNR above 1 until
# $t =$ {glue:text}`cosine_t_snr_1:.0f` and spends only {glue:text}`cosine_frac_low:.1%` of its
# steps that close to pure noise. Improved DDPM designed it so that $\bar\alpha_t$ falls
# almost linearly in the middle of the chain and changes little near $t = 0$ and $t = T$
# {cite}`nichol2021improved` ({doc}`10_improved_ddpm`): at $t = 500$ the
# cosine schedule still keeps a signal amplitude of {glue:text}`cosine_sqrt_acp_500:.2f`,
# the linear one {glue:text}`linear_sqrt_acp_500:.2f`.
#
# At the end, $\bar\alpha_T$ is {glue:text}`linear_acp_T:.2e` for the linear schedule and
# {glue:text}`cosine_acp_T:.2e` for the cosine one. So
# $q(x_T \mid x_0) = \mathcal{N}(\sqrt{\bar\alpha_T}\,x_0, (1-\bar\alpha_T) I)$ is, for any
# image, almost exactly the standard normal $\mathcal{N}(0, I)$ from which sampling starts.
# The variational bound (chapter 4) contains the term
# $L_T = \mathrm{KL}\big(q(x_T \mid x_0)\,\|\,\mathcal{N}(0, I)\big)$; with the KL between
# Gaussians of {doc}`05_gaussian_kl`, per pixel,
#
# $$
# L_T = \tfrac12\big(\bar\alpha_T x_0^2 - \bar\alpha_T - \log(1-\bar\alpha_T)\big)
#     \approx \tfrac12\,\bar\alpha_T\,x_0^2 ,
# $$ (cf-prior-term)
#
# which has no parameters (the schedule is fixed) and is tiny. The library computes it as
# `GaussianDiffusion.prior_bpd`, in bits per pixel; here it is for all digits, against
# {eq}`cf-prior-term` evaluated by hand:

# %%
x0 = digits.double()  # all 1497 digits
prior_bpd = {}
for name, sched in [("linear", linear), ("cosine", cosine)]:
    prior = GaussianDiffusion(sched).prior_bpd(x0)  # (1497,), bits/dim
    a_T = sched.alphas_cumprod[-1].item()
    kl = 0.5 * (a_T * x0**2 - a_T - math.log1p(-a_T))  # (cf-prior-term)
    by_hand = kl.mean(dim=(1, 2, 3)) / math.log(2)      # nats -> bits
    prior_bpd[name] = prior.mean().item()
    print(f"{name}: L_T = {prior.mean():.3e} bits/dim on average, "
          f"largest {prior.max():.3e}")
    print(f"        by hand: {by_hand.mean():.3e} on average")
    assert torch.allclose(prior, by_hand, rtol=1e-6, atol=0)
for name, value in prior_bpd.items():
    glue(f"{name}_prior_bpd", float(f"{value:.6g}"))

# %% [markdown]
# About {glue:text}`linear_prior_bpd:.1e` bits per pixel for the linear schedule and
# {glue:text}`cosine_prior_bpd:.1e` for the cosine one: $L_T \approx 0$, and training ignores it.
#
# ## Watching both schedules
#
# The closed form makes any frame one line: `q_sample(x0, t - 1, noise)`. Using the **same**
# noise for both schedules, only $\bar\alpha_t$ differs. Each frame shows two digits, a 0 and
# a 2, noised with the **linear schedule in the top row** and the **cosine schedule in the
# bottom row**. The cosine schedule keeps the digits readable for longer and spends less of
# the chain on pure noise.

# %%
pair = [digits[labels == 0][0], digits[labels == 2][0]]
two = torch.stack(pair).double()  # (2, 1, 8, 8): a 0 and a 2
noise = torch.randn(two.shape, generator=g, dtype=f64)
diff_lin = GaussianDiffusion(linear)
diff_cos = GaussianDiffusion(cosine)
white_col = torch.ones(1, 8, 1, dtype=f64)
white_row = torch.ones(1, 1, 17, dtype=f64)


def noised(diff: GaussianDiffusion, t: int) -> torch.Tensor:
    """Both digits at the paper's t, side by side: (1, 8, 17)."""
    t_index = torch.full((2,), t - 1)
    x_t = two if t == 0 else diff.q_sample(two, t_index, noise)
    return torch.cat([x_t[0], white_col, x_t[1]], dim=2)


def frame(t: int) -> torch.Tensor:
    """Linear schedule on top, cosine below: (1, 17, 17)."""
    return torch.cat([noised(diff_lin, t), white_row,
                      noised(diff_cos, t)], dim=1)


keep = [0, 50, 100, 150, 200, 250, 300, 400, 500, 600, 700, 800, 900,
        1000]
pngs = viz.frames_to_png([frame(t) for t in keep],
                         titles=[f"t = {t}" for t in keep],
                         size_px=160, dpi=80)
viz.scrubber(pngs, keep)

# %% [markdown]
# The same for the 0 as a still:

# %%
strip = [0, 100, 200, 300, 400, 500, 600, 800, 1000]
fig, axes = plt.subplots(2, 1, figsize=(8, 2.6))
for ax, name, diff in zip(axes, ["linear", "cosine"],
                          [diff_lin, diff_cos], strict=True):
    zeros = [noised(diff, t)[:, :, :8] for t in strip]  # the 0 only
    viz.show_images(torch.stack(zeros), nrow=len(strip), ax=ax)
    ax.set_title(f"{name} schedule, t = " + ", ".join(map(str, strip)),
                 fontsize=9)
plt.tight_layout()
plt.show()

# %% [markdown]
# ## Two wrong closed forms
#
# :::{admonition} A common mistake
# :class: warning
# **Dropping the square roots:** $x_t = \bar\alpha_t x_0 + (1-\bar\alpha_t)\,\varepsilon$.
# It has the right end points ($x_0$ at $\bar\alpha = 1$, pure noise at $\bar\alpha = 0$),
# which is why it looks plausible, but it is not the distribution of the chain. For data of
# unit variance it gives $\operatorname{Var}(x_t) = \bar\alpha_t^2 + (1-\bar\alpha_t)^2$,
# which dips to {glue:text}`wrong_var_min:.3f` at $t =$ {glue:text}`wrong_var_t:.0f` (where
# $\bar\alpha_t \approx 0.5$), whereas the chain keeps the variance at exactly 1. The
# variance must be preserved, so the coefficients must satisfy
# $a^2 + b^2 = 1$, not $a + b = 1$. The cell below computes the variance for $\pm 1$ data, and
# KS tests of the chain's $t = 500$ samples against the wrong formula, one per starting value
# $x_0$. Where $x_0 = \pm 1$ the wrong mean $\bar\alpha_t x_0$ is furthest from the true
# $\sqrt{\bar\alpha_t}\,x_0$ and the test rejects the wrong formula outright; at $x_0 = 0$ only
# the variances differ, $(1-\bar\alpha_t)^2$ against $1-\bar\alpha_t$, by 8%, which 6400
# samples barely show.
# :::

# %%
n = 32_000
x0_pm = torch.randint(0, 2, (n,), generator=g).double() * 2 - 1  # ±1
print("                      Var(x_t)")
print("   t   alpha-bar   right (q_sample)   wrong: samples   formula")
for t in [50, 100, 259, 500, 1000]:
    a = linear.alphas_cumprod[t - 1].item()
    eps = torch.randn(n, 1, generator=g, dtype=f64)
    t_index = torch.full((n,), t - 1)
    right = diffusion.q_sample(x0_pm[:, None], t_index, eps)
    wrong = a * x0_pm + (1 - a) * eps[:, 0]  # no square roots
    wrong_var = a**2 + (1 - a) ** 2
    _, var_r, se_r = sample_moments(right[:, 0])
    _, var_w, se_w = sample_moments(wrong)
    print(f"{t:4d}  {a:10.4f}  {var_r:17.4f}  {var_w:15.4f}  "
          f"{wrong_var:8.4f}")
    assert abs(var_r - 1) < 5 * se_r
    assert abs(var_w - wrong_var) < 5 * se_w

# the chain's samples at t = 500 against the wrong formula's
# N(ᾱ x_0, (1 - ᾱ)²), one test per x_0
a = linear.alphas_cumprod[499].item()
print("KS tests of the chain at t = 500 against the wrong formula:")
ks_wrong = []
for k in range(5):
    wrong_cdf = scipy.stats.norm(a * x0_values[k].item(), 1 - a).cdf
    ks_wrong.append(scipy.stats.kstest(x_500[k].numpy(), wrong_cdf))
    print(f"  x_0 = {x0_values[k]:4.1f}: D = {ks_wrong[k].statistic:.4f}, "
          f"p-value = {ks_wrong[k].pvalue:.1e}")

# %%
acp = linear.alphas_cumprod.numpy()
var_wrong_all = acp**2 + (1 - acp) ** 2  # at t = 1..T
glue("wrong_var_min", round(float(var_wrong_all.min()), 6))
glue("wrong_var_t", int(t_axis[var_wrong_all.argmin()]))
assert var_wrong_all.min() < 0.51
# at x_0 = ±1 the exact D between the two normals is 0.087, and 6400 samples
# of the right one reach the 1e-6 critical value (0.034) only if their own D
# is off by 0.053, about 9 of its standard deviations (~0.006)
assert ks_wrong[0].pvalue < 1e-6 and ks_wrong[4].pvalue < 1e-6

# %% [markdown]
# :::{admonition} A common mistake
# :class: warning
# **The wrong variable and the wrong variance:** $q(x_t \mid x_0)$ written as
# $\mathcal{N}\big(\sqrt{\alpha}^{\,t}\,x_{t-1},\ (1-\alpha)^t I\big)$ for a constant
# $\alpha_t = \alpha$. Two things are wrong. The mean conditions on $x_{t-1}$, but one step
# from $x_{t-1}$ only shrinks by $\sqrt{\alpha}$, not $\sqrt{\alpha}^{\,t}$. And the variance
# $(1-\alpha)^t = \beta^t$ *decreases* with $t$ (with $\beta = 0.02$ and $t = 50$ it is
# {glue:text}`wrong_var_beta_t:.1e`), as if the chain became more certain the more noise it
# received. With constant $\alpha$, {eq}`cf-closed-form` gives $\bar\alpha_t = \alpha^t$ and
# the right statement
#
# $$
# q(x_t \mid x_0) = \mathcal{N}\big(\sqrt{\alpha}^{\,t}\,x_0,\ (1-\alpha^t) I\big).
# $$ (cf-constant-alpha)
#
# The cell below runs a chain with constant $\beta = 0.02$ and measures both conditionals at
# $t = 50$: how $x_{50}$ depends on $x_{49}$ (slope and residual variance of a least-squares
# fit) and on $x_0$.
# :::

# %%
beta, t = 0.02, 50
alpha = 1 - beta
const = schedule_from_betas(torch.full((100,), beta, dtype=f64))
n = 16_000
x0_pm = torch.randint(0, 2, (n,), generator=g).double() * 2 - 1  # ±1
x = x0_pm
for s in range(1, t + 1):
    x_prev = x  # ends as x_49
    eps = torch.randn(n, generator=g, dtype=f64)
    x = forward_step(x, const.betas[s - 1], eps)


def fit(x_in: torch.Tensor, x_out: torch.Tensor) -> tuple[float, ...]:
    """Slope of x_out on x_in (least squares through 0), residual
    variance, and the standard errors of both."""
    ss = float((x_in * x_in).sum())
    slope = float((x_in * x_out).sum()) / ss
    resid = float((x_out - slope * x_in).var())
    return (slope, resid, math.sqrt(resid / ss),
            resid * math.sqrt(2 / x_in.numel()))


slope_prev, resid_prev, slope_prev_se, resid_prev_se = fit(x_prev, x)
slope_0, resid_0, slope_0_se, resid_0_se = fit(x0_pm, x)
mean_lib, var_lib, _ = GaussianDiffusion(const).q_mean_variance(
    torch.ones(1, 1, dtype=f64), torch.tensor([t - 1]))
glue("wrong_var_beta_t", float(f"{beta**t:.4g}"))

rows = [
    ("x_50 given x_49", None, None),
    ("  chain", slope_prev, resid_prev),
    ("  one step (right)", math.sqrt(alpha), beta),
    ("  wrong formula", math.sqrt(alpha) ** t, beta**t),
    ("x_50 given x_0", None, None),
    ("  chain", slope_0, resid_0),
    ("  q_mean_variance", mean_lib.item(), var_lib.item()),
    ("  right closed form", math.sqrt(alpha) ** t, 1 - alpha**t),
    ("  wrong formula", None, beta**t),
]
print(f"{'':22s}{'slope':>8s}{'variance':>12s}")
for name, slope, var in rows:
    if var is None:
        print(name)
        continue
    slope_txt = f"{slope:8.4f}" if slope is not None else f"{'-':>8s}"
    var_txt = f"{var:12.4f}" if var > 1e-6 else f"{var:12.1e}"
    print(f"{name:22s}{slope_txt}{var_txt}")

# %%
# the library's closed form is exactly eq. (cf-constant-alpha)
assert abs(mean_lib.item() - math.sqrt(alpha) ** t) < 1e-12
assert abs(var_lib.item() - (1 - alpha**t)) < 1e-12
# the chain matches the right conditionals within 5 standard errors
assert abs(slope_prev - math.sqrt(alpha)) < 5 * slope_prev_se
assert abs(resid_prev - beta) < 5 * resid_prev_se
assert abs(slope_0 - math.sqrt(alpha) ** t) < 5 * slope_0_se
assert abs(resid_0 - (1 - alpha**t)) < 5 * resid_0_se
# the wrong formula: its slope is off by hundreds of standard errors,
# its variance by more than 80 orders of magnitude
assert abs(slope_prev - math.sqrt(alpha) ** t) > 100 * slope_prev_se
assert math.log10(resid_0 / beta**t) > 80
assert math.log10(resid_prev / beta**t) > 80

# %% [markdown]
# The chain agrees with one step ($\sqrt{\alpha}$, $\beta$) given $x_{49}$ and with
# {eq}`cf-constant-alpha` given $x_0$; the wrong formula matches neither, its variance off by
# more than 80 orders of magnitude.
#
# ## Summary
#
# - With $\alpha_t = 1-\beta_t$ and $\bar\alpha_t = \prod_{s\le t}\alpha_s$, the $t$ steps of the
#   chain collapse into $q(x_t \mid x_0) = \mathcal{N}(\sqrt{\bar\alpha_t}\,x_0, (1-\bar\alpha_t) I)$
#   {eq}`cf-closed-form`, because independent Gaussian noises merge and their variances add
#   {eq}`cf-merged-variance`.
# - The chain run step by step agrees with it at every $t$ within 6 standard errors, and a
#   KS test at $t = 500$ finds no difference ($D =$ {glue:text}`ks_500_D:.2g`).
# - Any $x_t$ costs one Gaussian draw per pixel instead of $t$: for a batch at random $t$,
#   about {glue:text}`draw_ratio:.0f` times fewer random numbers, and every example can have its
#   own $t$.
# - $\mathrm{SNR}(t) = \bar\alpha_t/(1-\bar\alpha_t)$ compares schedules: the cosine schedule
#   keeps more signal in the middle and wastes fewer steps on pure noise. Both end with a
#   tiny $\bar\alpha_T$ ({glue:text}`linear_acp_T:.1e` and {glue:text}`cosine_acp_T:.1e`), so
#   $L_T \approx 0$ and has no parameters.
# - $x_t = \bar\alpha_t x_0 + (1-\bar\alpha_t)\varepsilon$ (no square roots) and
#   $\mathcal{N}(\sqrt{\alpha}^{\,t} x_{t-1}, (1-\alpha)^t I)$ are wrong; the numbers above show
#   by how much.
#
# Next, the variational bound (chapter 4) splits the training objective into one KL term
# per step, and {doc}`05_gaussian_kl` computes those KL terms in closed form.
#
# ## Exercises
#
# ### Try it: $q(x_t \mid x_0)$ in one jump, from the betas alone
#
# Write `q_sample` yourself: from `linear.betas` only (no other table of the schedule), build
# $\bar\alpha_t = \prod_{s \le t}(1 - \beta_s)$ {eq}`cf-alphas` and return
# $x_t = \sqrt{\bar\alpha_t}\,x_0 + \sqrt{1-\bar\alpha_t}\,\varepsilon$ {eq}`cf-closed-form`
# for a batch of images, each at its own timestep. `t` holds the library's 0-based indices, so
# `t = 0` is the paper's $t = 1$, and $\bar\alpha_t$ must broadcast over each image's pixels. The
# last cell below compares your function with `diffusion.q_sample`; while it still raises
# `NotImplementedError`, the cell checks the book's hidden solution instead.

# %%
def my_q_sample(x0: torch.Tensor, t: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
    """x0, noise: (B, 1, 8, 8) float64; t: (B,) library indices 0..T-1. Returns x_t, (B, 1, 8, 8)."""
    raise NotImplementedError  # your code here

# %% tags=["hide-cell"]
def solution_q_sample(x0: torch.Tensor, t: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
    alphas_cumprod = torch.cumprod(1 - linear.betas, dim=0)  # (T,): ᾱ, index t - 1 for the paper's t
    abar = alphas_cumprod[t].reshape(-1, *[1] * (x0.dim() - 1))  # (B, 1, 1, 1)
    return abar.sqrt() * x0 + (1 - abar).sqrt() * noise

# %%
from diffusion_core.exercises import check
from diffusion_core.notebook import generator

gen = generator(100)
cases = [(torch.rand(5, 1, 8, 8, generator=gen, dtype=f64) * 2 - 1, t,
          torch.randn(5, 1, 8, 8, generator=gen, dtype=f64))
         for t in (torch.tensor([0, 1, 499, T - 2, T - 1]), torch.randint(0, T, (5,), generator=gen))]
passed = check(my_q_sample, diffusion.q_sample, cases, solution=solution_q_sample, name="q_sample")

# %% [markdown]
# ### More exercises
#
# 1. Generalise {eq}`cf-closed-form`: for $0 \le s < t$, show that
#    $q(x_t \mid x_s) = \mathcal{N}\big(\sqrt{\bar\alpha_t/\bar\alpha_s}\,x_s,\ (1-\bar\alpha_t/\bar\alpha_s) I\big)$,
#    and check the variance numerically with the coefficients $c_{t,s}$ built above.
# 2. For data with variance $v$ (not 1) and mean 0, what is $\operatorname{Var}(x_t)$? Compare
#    with exercise 1 of {doc}`02_forward_noising`.
# 3. With the linear schedule, at which $t$ is $\mathrm{SNR}(t)$ equal to the cosine
#    schedule's $\mathrm{SNR}(500)$?
# 4. Why is $L_T$ in {eq}`cf-prior-term` larger for bright pixels ($x_0 = \pm 1$) than for
#    mid-grey ones ($x_0 = 0$)? What is its value at $x_0 = 0$, to first order in
#    $\bar\alpha_T$?
#
# :::{admonition} Solution
# :class: dropdown
#
# 1. The induction of {eq}`cf-induction` works from any starting point $x_s$: after the steps
#    $s+1, \dots, t$ the signal is scaled by $\prod_{r=s+1}^{t}\sqrt{\alpha_r} = \sqrt{\bar\alpha_t/\bar\alpha_s}$
#    and the merged noise has variance $1 - \bar\alpha_t/\bar\alpha_s$. Numerically, with `s`
#    and `t` chosen: run the coefficient loop above from step `s + 1` to `t` only and
#    compare `(coef ** 2).sum()` with
#    `1 - linear.alphas_cumprod[t - 1] / linear.alphas_cumprod[s - 1]`.
# 2. $\operatorname{Var}(x_t) = \bar\alpha_t v + 1 - \bar\alpha_t = 1 + \bar\alpha_t (v - 1)$:
#    the same as exercise 1 of {doc}`02_forward_noising`, whose product
#    $\prod_s (1-\beta_s)$ is $\bar\alpha_t$.
# 3. `int((linear.snr >= cosine.snr[499]).sum())`: the linear schedule reaches the cosine
#    schedule's mid-point SNR (about 1) at $t = 261$, a quarter of the way through.
# 4. The mean $\sqrt{\bar\alpha_T}\,x_0$ is farthest from the prior's mean 0 when $|x_0|$ is
#    largest. At $x_0 = 0$, $L_T = \tfrac12(-\bar\alpha_T - \log(1-\bar\alpha_T)) \approx \bar\alpha_T^2/4$:
#    only the variance mismatch remains, second order in $\bar\alpha_T$.
# :::
