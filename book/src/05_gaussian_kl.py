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
# # KL divergence between Gaussians
#
# The variational bound of a diffusion model is a sum of Kullback-Leibler divergences, one
# per step, each between two Gaussians: the forward process's posterior
# $q(x_{t-1} \mid x_t, x_0)$ and the model's step $p_\theta(x_{t-1} \mid x_t)$ (chapter 4,
# the variational bound, derives this). Between Gaussians the KL has a closed form, so
# every term of the bound can be computed exactly, with no sampling. This chapter derives
# it, checks it three ways, and shows what it becomes when the model's variance is fixed: a
# weighted squared distance between two means.
#
# **What you will learn**
#
# - The closed form of $\mathrm{KL}\big(\mathcal{N}(\mu_1, \sigma_1^2)\,\|\,\mathcal{N}(\mu_2, \sigma_2^2)\big)$,
#   derived and checked against Monte Carlo and numerical integration.
# - Why the KL of diagonal Gaussians is a sum over dimensions.
# - Why, with a fixed variance $\sigma_t^2$, each term $L_{t-1}$ of the bound is
#   $\|\tilde\mu_t - \mu_\theta\|^2 / (2\sigma_t^2)$ plus a constant, and what the constant is.
# - The price of not matching variances, and the wrong loss weights $1/\sigma_t$ and
#   $1/\sigma_t^2$.

# %%
import sys
if "google.colab" in sys.modules:  # Colab only: install the book's library
    %pip install -q "diffusion_core @ git+https://github.com/diffusion-core/diffusion-book"

# %%
import inspect
import math

import matplotlib.pyplot as plt
import numpy as np
import scipy.integrate
import scipy.stats
import torch

from diffusion_core import GaussianDiffusion, distributions, make_schedule, normal_kl
from diffusion_core.data import load_digits
from diffusion_core.notebook import book_seed, glue, setup

g = setup(seed=0)  # 2 threads, all seeds fixed: the outputs reproduce
rng = np.random.default_rng(book_seed(0))  # for the numpy / scipy checks
f64 = torch.float64

# %% [markdown]
# ## The closed form
#
# The KL divergence from a density $q$ to a density $p$ is the expected log-ratio under $p$,
#
# $$
# \mathrm{KL}(p \,\|\, q) = \mathbb{E}_{x \sim p}\big[\log p(x) - \log q(x)\big]
#                         = \int p(x) \log\frac{p(x)}{q(x)}\,dx .
# $$ (kl-definition)
#
# It is never negative, it is 0 only when $p = q$, and it is not symmetric. Take
# $p = \mathcal{N}(\mu_1, \sigma_1^2)$ and $q = \mathcal{N}(\mu_2, \sigma_2^2)$ in one dimension.
# Their log-densities are
#
# $$
# \begin{aligned}
# \log p(x) &= -\tfrac12\log(2\pi\sigma_1^2) - \frac{(x-\mu_1)^2}{2\sigma_1^2}, \\
# \log q(x) &= -\tfrac12\log(2\pi\sigma_2^2) - \frac{(x-\mu_2)^2}{2\sigma_2^2}.
# \end{aligned}
# $$
#
# Under $x \sim p$ we need two expectations:
# $\mathbb{E}_p[(x-\mu_1)^2] = \sigma_1^2$, and, writing $x - \mu_2 = (x - \mu_1) + (\mu_1 - \mu_2)$
# (the cross term has mean 0),
# $\mathbb{E}_p[(x-\mu_2)^2] = \sigma_1^2 + (\mu_1-\mu_2)^2$. Subtracting the two log-densities
# and taking expectations, the $2\pi$ cancels:
#
# $$
# \mathrm{KL}\big(\mathcal{N}(\mu_1, \sigma_1^2)\,\|\,\mathcal{N}(\mu_2, \sigma_2^2)\big)
# = \log\frac{\sigma_2}{\sigma_1} + \frac{\sigma_1^2 + (\mu_1-\mu_2)^2}{2\sigma_2^2} - \frac12 .
# $$ (kl-gauss)
#
# Two readings of {eq}`kl-gauss` are useful. With $r = \sigma_1^2/\sigma_2^2$ it is
#
# $$
# \mathrm{KL} = \tfrac12\big(r - 1 - \log r\big) + \frac{(\mu_1-\mu_2)^2}{2\sigma_2^2} ,
# $$ (kl-split)
#
# a *variance part* that only depends on the ratio of the variances and is $\ge 0$ with
# equality only at $r = 1$ (because $\log r \le r - 1$), plus a *mean part*, the squared
# distance between the means in units of $\sigma_2$. So the KL is 0 exactly when both the means
# and the variances agree.
#
# The library's `normal_kl` implements {eq}`kl-gauss` elementwise, taking log-variances (the
# form networks predict, always positive after `exp`), in nats. It checks its inputs once and
# hands them to `_normal_kl`, the formula alone, which the training loop calls directly (the
# checks read values back from the device, and a step on a GPU should never wait for that):

# %%
print(inspect.getsource(normal_kl))
print(inspect.getsource(distributions._normal_kl))

# %% [markdown]
# The last line is {eq}`kl-gauss` with the $\tfrac12$ taken out:
# $\log(\sigma_2/\sigma_1) = \tfrac12(\texttt{logvar2} - \texttt{logvar1})$ and
# $\sigma_1^2/\sigma_2^2 = e^{\texttt{logvar1} - \texttt{logvar2}}$.
#
# ## Three independent checks
#
# On a grid of 27 parameter pairs ($\mu_1 = 0$; $\mu_2 \in \{0, 1, 2\}$;
# $\sigma_1, \sigma_2 \in \{0.5, 1, 2\}$), compare `normal_kl` with
#
# 1. **numerical integration** of {eq}`kl-definition` with `scipy.integrate.quad`, using
#    scipy's own normal log-density;
# 2. **Monte Carlo**: the average of $\log p(x) - \log q(x)$ over $10^5$ draws from $p$,
#    with its standard error (the sample standard deviation over $\sqrt{n}$).
#
# Quadrature must agree to $10^{-9}$; Monte Carlo within 5 standard errors.

# %%
def kl_1d(m1: float, s1: float, m2: float, s2: float) -> float:
    """normal_kl for scalar means and standard deviations, in nats."""
    def tensor(v: float) -> torch.Tensor:
        return torch.tensor(v, dtype=f64)
    return normal_kl(tensor(m1), tensor(2 * math.log(s1)),
                     tensor(m2), tensor(2 * math.log(s2))).item()


def kl_by_quad(m1: float, s1: float, m2: float, s2: float) -> float:
    """∫ p log(p/q) dx by scipy's quad over μ₁ ± 12 σ₁ (p has mass
    below 1e-30 outside)."""
    def integrand(x: float) -> float:
        log_p = scipy.stats.norm.logpdf(x, m1, s1)
        log_q = scipy.stats.norm.logpdf(x, m2, s2)
        return math.exp(log_p) * (log_p - log_q)
    lo, hi = m1 - 12 * s1, m1 + 12 * s1
    value, _ = scipy.integrate.quad(integrand, lo, hi, epsabs=1e-13,
                                    epsrel=1e-12, limit=200)
    return value


def kl_by_mc(m1: float, s1: float, m2: float, s2: float,
             n: int = 100_000) -> tuple[float, float]:
    """Mean of log p(x) - log q(x) over n draws x ~ p, and its SE."""
    x = rng.normal(m1, s1, n)
    log_ratio = (scipy.stats.norm.logpdf(x, m1, s1)
                 - scipy.stats.norm.logpdf(x, m2, s2))
    return log_ratio.mean(), log_ratio.std(ddof=1) / math.sqrt(n)


params = [(0.0, s1, m2, s2) for m2 in (0.0, 1.0, 2.0)
          for s1 in (0.5, 1.0, 2.0) for s2 in (0.5, 1.0, 2.0)]
closed = np.array([kl_1d(*p) for p in params])
by_quad = np.array([kl_by_quad(*p) for p in params])
by_mc, mc_se = np.array([kl_by_mc(*p) for p in params]).T
# mc_se is 0 only where p = q, and there the KL is exactly 0
z = (by_mc - closed) / np.where(mc_se > 0, mc_se, 1.0)

print(" mu2  sigma1  sigma2  closed form  quadrature  Monte Carlo (SE)")
for i in [1, 5, 13, 15, 19, 22, 26]:
    _, s1, m2, s2 = params[i]
    print(f"{m2:4.1f}  {s1:6.1f}  {s2:6.1f}  {closed[i]:11.6f}  "
          f"{by_quad[i]:10.6f}  {by_mc[i]:7.4f} ({mc_se[i]:.4f})")
print(f"largest |closed form - MC| / SE = {np.abs(z).max():.2f}")

# %% tags=["nbval-ignore-output"]
# Rounding-level numbers vary by machine: output not compared.
print(f"largest |closed form - quadrature| = "
      f"{np.abs(closed - by_quad).max():.1e}")
assert np.abs(closed - by_quad).max() < 1e-9
assert np.abs(z).max() < 5
# KL >= 0, and KL(p || p) = 0 for the three p on the grid (to rounding:
# float64 arithmetic can leave ±1e-16)
assert closed.min() > -1e-15
assert all(abs(kl_1d(0, s, 0, s)) < 1e-15 for s in (0.5, 1.0, 2.0))

# %%
fig, axes = plt.subplots(1, 2, figsize=(8, 3))
top = closed.max() * 1.05
axes[0].plot([0, top], [0, top], "k", lw=0.8, label="y = x")
axes[0].errorbar(closed, by_mc, yerr=5 * mc_se, fmt="o", ms=3,
                 label=r"Monte Carlo $\pm$ 5 SE")
axes[0].plot(closed, by_quad, "x", color="C3", ms=5, label="quadrature")
axes[0].set(xlabel="closed form (nats)", ylabel="estimate (nats)",
            title="27 parameter pairs")
axes[0].legend(fontsize=7)
axes[1].bar(np.arange(len(params)), z, color="C0")
for level in (5, -5):
    axes[1].axhline(level, color="k", lw=0.5, ls="--")
axes[1].set(xlabel="parameter pair", ylabel="(MC - closed form) / SE",
            ylim=(-5.5, 5.5), title="Monte Carlo error in SEs")
plt.tight_layout()
plt.show()

# %% [markdown]
# The KL is not symmetric: swapping the two distributions changes its value whenever the
# variances differ.

# %%
kl_ab, kl_ba = kl_1d(0, 1, 0, 2), kl_1d(0, 2, 0, 1)
print(f"KL(N(0, 1) || N(0, 4)) = {kl_ab:.4f} nats")
print(f"KL(N(0, 4) || N(0, 1)) = {kl_ba:.4f} nats")
assert abs(kl_ab - (math.log(2) + 1 / 8 - 0.5)) < 1e-12  # (kl-gauss)
assert abs(kl_ba - (-math.log(2) + 2 - 0.5)) < 1e-12

# %% [markdown]
# ## Diagonal Gaussians: a sum over dimensions
#
# Images are vectors, and the Gaussians of a diffusion model have diagonal covariances
# $\mathrm{diag}(\sigma_1^2, \dots, \sigma_d^2)$: the coordinates are independent, so the
# log-density is a sum over coordinates, and so is the expected log-ratio:
#
# $$
# \mathrm{KL}\big(\mathcal{N}(\mu_1, \Sigma_1)\,\|\,\mathcal{N}(\mu_2, \Sigma_2)\big)
# = \sum_{i=1}^{d} \mathrm{KL}_i
# \qquad\text{for diagonal } \Sigma_1, \Sigma_2 ,
# $$ (kl-diagonal)
#
# where $\mathrm{KL}_i$ is the one-dimensional KL {eq}`kl-gauss` between the $i$-th
# coordinates, $\mathcal{N}(\mu_{1,i}, \sigma_{1,i}^2)$ and $\mathcal{N}(\mu_{2,i}, \sigma_{2,i}^2)$.
#
# So `normal_kl` works elementwise and the caller sums over pixels (the bound in
# bits per dimension then divides by $d$ and by $\log 2$). Check it in $d = 6$ dimensions
# against PyTorch's general multivariate-normal KL, which uses Cholesky factors of full
# covariance matrices and knows nothing of this sum, and against Monte Carlo with scipy's
# multivariate normal density:

# %%
d, n = 6, 100_000
mu1 = torch.randn(d, generator=g, dtype=f64)
mu2 = torch.randn(d, generator=g, dtype=f64)
logvar1 = torch.randn(d, generator=g, dtype=f64) * 0.7
logvar2 = torch.randn(d, generator=g, dtype=f64) * 0.7
cov1 = torch.diag(logvar1.exp())  # (d, d)
cov2 = torch.diag(logvar2.exp())

kl_sum = normal_kl(mu1, logvar1, mu2, logvar2).sum().item()

mvn = torch.distributions.MultivariateNormal
kl_torch = torch.distributions.kl_divergence(
    mvn(mu1, covariance_matrix=cov1),
    mvn(mu2, covariance_matrix=cov2)).item()

p = scipy.stats.multivariate_normal(mu1.numpy(), cov1.numpy())
q = scipy.stats.multivariate_normal(mu2.numpy(), cov2.numpy())
x = p.rvs(size=n, random_state=rng)  # (n, d)
log_ratio = p.logpdf(x) - q.logpdf(x)
kl_mc, kl_mc_se = log_ratio.mean(), log_ratio.std(ddof=1) / math.sqrt(n)
print(f"sum of normal_kl over {d} dims: {kl_sum:.8f}")
print(f"torch MultivariateNormal KL:   {kl_torch:.8f}")
print(f"Monte Carlo:                   {kl_mc:.4f} (SE {kl_mc_se:.4f})")

# %%
assert abs(kl_sum - kl_torch) < 1e-10
assert abs(kl_mc - kl_sum) < 5 * kl_mc_se

# %% [markdown]
# ## What each term of the bound becomes
#
# For $t \ge 2$ the bound contains
#
# $$
# L_{t-1} = \mathrm{KL}\big(q(x_{t-1} \mid x_t, x_0)\,\|\,p_\theta(x_{t-1} \mid x_t)\big),
# $$ (kl-bound-term)
#
# where the forward posterior is $q(x_{t-1} \mid x_t, x_0) = \mathcal{N}(\tilde\mu_t, \tilde\beta_t I)$,
# with a mean $\tilde\mu_t(x_t, x_0)$ and variance $\tilde\beta_t = \frac{1-\bar\alpha_{t-1}}{1-\bar\alpha_t}\beta_t$
# that chapter 4 (the variational bound) derives from Bayes' rule {cite}`ho2020denoising`, and the
# model is $p_\theta(x_{t-1} \mid x_t) = \mathcal{N}(\mu_\theta(x_t, t), \sigma_t^2 I)$. DDPM
# fixes $\sigma_t^2$ to a constant of the schedule, $\beta_t$ or $\tilde\beta_t$, and learns only
# the mean. Put the two into {eq}`kl-gauss` and sum over the $d$ dimensions
# {eq}`kl-diagonal`:
#
# $$
# L_{t-1} = \frac{\|\tilde\mu_t - \mu_\theta\|^2}{2\sigma_t^2} + C_t, \qquad
# C_t = \frac d2\Big(\log\frac{\sigma_t^2}{\tilde\beta_t} + \frac{\tilde\beta_t}{\sigma_t^2} - 1\Big) ,
# $$ (kl-weighted-mse)
#
# DDPM's eq. 8 {cite}`ho2020denoising`. The constant $C_t$ contains no $\theta$: with a fixed
# variance, minimising the bound is exactly minimising a squared distance between the model's
# mean and the posterior mean, weighted by $1/(2\sigma_t^2)$.
#
# Let us check this with the library. `GaussianDiffusion.q_posterior_mean_variance` returns
# $\tilde\mu_t$ and $\tilde\beta_t$; `reverse_log_variance` returns the fixed $\log\sigma_t^2$
# of the model (`model_var="fixed_large"` is $\sigma_t^2 = \beta_t$). Take a digit $x_0$, draw
# $x_t$ at $t = 100$, and try a range of arbitrary model means $\mu_\theta$, from the exact
# posterior mean to pure junk:

# %%
def first(x: torch.Tensor) -> float:
    """The value of a table that is the same for every pixel."""
    return x.flatten()[0].item()


digits, _ = load_digits("train")
x0 = digits[:1].double()  # (1, 1, 8, 8): d = 64 pixels
dim = x0.numel()
linear = make_schedule("linear", 1000)
diffusion = GaussianDiffusion(linear, model_var="fixed_large")
t = 100
t_index = torch.tensor([t - 1])  # the library's timesteps are 0-based
eps = torch.randn(x0.shape, generator=g, dtype=f64)
x_t = diffusion.q_sample(x0, t_index, eps)
mu_tilde, beta_tilde, log_beta_tilde = \
    diffusion.q_posterior_mean_variance(x0, x_t, t_index)
log_sigma2 = diffusion.reverse_log_variance(None, t_index, x_t)
sigma2 = first(log_sigma2.exp())  # σ_t² = β_t
print(f"t = {t}: beta_t = {linear.betas[t - 1]:.6f}, "
      f"sigma_t^2 = {sigma2:.6f}")
print(f"        beta-tilde_t = {first(beta_tilde):.6f}")


def noise(scale: float) -> torch.Tensor:
    return scale * torch.randn(x0.shape, generator=g, dtype=f64)


candidates = {  # model means μ_θ, from right to junk
    "posterior mean": mu_tilde,
    "post. mean + 0.01 noise": mu_tilde + noise(0.01),
    "post. mean + 0.1 noise": mu_tilde + noise(0.1),
    "x_t itself": x_t,
    "zeros": torch.zeros_like(x0),
    "uniform in [-3, 3]": 6 * torch.rand(x0.shape, generator=g,
                                         dtype=f64) - 3,
}


def bound_term(mu_theta: torch.Tensor, log_var: torch.Tensor) -> float:
    """KL(q(x_{t-1} | x_t, x_0) || N(mu_theta, e^log_var)), in nats,
    summed over pixels: L_{t-1}."""
    return normal_kl(mu_tilde, log_beta_tilde, mu_theta,
                     log_var).sum().item()


def weighted_sq(mu_theta: torch.Tensor, sigma2: float) -> float:
    """|μ̃ - μ_θ|² / (2 σ²)."""
    return ((mu_tilde - mu_theta) ** 2).sum().item() / (2 * sigma2)


print(f"{'model mean':24s}{'L_{t-1}':>14s}{'|mu~-mu|^2/2s^2':>16s}"
      f"{'difference':>12s}")
differences, kls = [], []
for name, mu_theta in candidates.items():
    kl = bound_term(mu_theta, log_sigma2)
    weighted = weighted_sq(mu_theta, sigma2)
    differences.append(kl - weighted)
    kls.append(kl)
    print(f"{name:24s}{kl:14.6f}{weighted:16.6f}{kl - weighted:12.8f}")

# %% [markdown]
# The KL changes by about seven orders of magnitude across the candidates; the difference in
# the last column does not move. It is $C_t$, computed from {eq}`kl-weighted-mse`:

# %%
bt = first(beta_tilde)
C = dim / 2 * (math.log(sigma2 / bt) + bt / sigma2 - 1)
glue("C_100", round(C, 8))
# the smallest KL is C_t itself (the posterior mean); the junk candidates' squared
# errors are sums over 64 random pixels, within a factor 2 of their mean
assert 1e6 < max(kls) / min(kls) < 1e8
print(f"C_t by (kl-weighted-mse): {C:.8f} nats for d = {dim} pixels,")
print(f"    or {C / dim / math.log(2):.6f} bits per pixel")

# %% tags=["nbval-ignore-output"]
# Rounding-level numbers vary by machine: output not compared.
spread = max(differences) - min(differences)
print(f"spread of the differences: {spread:.1e}")
assert spread < 1e-9
assert all(abs(diff - C) < 1e-9 for diff in differences)
assert abs(sigma2 - linear.betas[t - 1].item()) < 1e-15

# %% [markdown]
# The weight is also visible in the gradient the network receives: by {eq}`kl-weighted-mse`,
# $\partial L_{t-1}/\partial\mu_\theta = (\mu_\theta - \tilde\mu_t)/\sigma_t^2$. Autograd through
# `normal_kl` agrees:

# %% tags=["nbval-ignore-output"]
# Rounding-level numbers vary by machine: output not compared.
mu_theta = candidates["post. mean + 0.1 noise"].clone().requires_grad_()
kl = normal_kl(mu_tilde, log_beta_tilde, mu_theta, log_sigma2).sum()
kl.backward()
expected = (mu_theta.detach() - mu_tilde) / sigma2
grad_err = ((mu_theta.grad - expected).abs().max()
            / expected.abs().max()).item()
print("autograd against (mu_theta - mu~) / sigma^2,")
print(f"largest relative difference: {grad_err:.1e}")
assert grad_err < 1e-12

# %% [markdown]
# ### When the constant vanishes, and what it costs when it does not
#
# By {eq}`kl-split`, $C_t/d = \tfrac12(r - 1 - \log r)$ with $r = \tilde\beta_t/\sigma_t^2$: it is
# zero exactly when $\sigma_t^2 = \tilde\beta_t$ (`model_var="fixed_small"`), and positive for
# any other fixed variance. A term $L_{t-1}$ can only reach 0 when **both** the means and the
# variances match; matching the means alone leaves $C_t$. With $\sigma_t^2 = \beta_t$ the
# variance is too large, by a factor
# $\beta_t/\tilde\beta_t = (1-\bar\alpha_t)/(1-\bar\alpha_{t-1})$ that is largest at small $t$
# and tends to 1 as $\bar\alpha_t \to 0$. DDPM found the two choices to give similar samples
# {cite}`ho2020denoising`; for the likelihood the difference matters, which is why improved
# DDPM learns the variance {cite}`nichol2021improved` (chapter 10).

# %% tags=["nbval-ignore-output"]
# Rounding-level numbers vary by machine: output not compared.
small = GaussianDiffusion(linear, model_var="fixed_small")
log_small = small.reverse_log_variance(None, t_index, x_t)  # log β̃_t
s2_small = first(log_small.exp())
C_small = [bound_term(mu, log_small) - weighted_sq(mu, s2_small)
           for mu in candidates.values()]
print(f"sigma_t^2 = beta-tilde_t: largest |KL - weighted distance| = "
      f"{max(map(abs, C_small)):.1e}")
assert max(map(abs, C_small)) < 1e-9

# %%
# C_t per pixel, in bits, for σ_t² = β_t at every t = 2..T
# r = β̃_t / β_t for t = 2..T
r = (linear.posterior_variance[1:] / linear.betas[1:]).numpy()
C_bits = 0.5 * (r - 1 - np.log(r)) / math.log(2)  # (T - 1,): t = 2..T
glue("C_sum_bits", round(float(C_bits.sum()), 6))
for t_ in [2, 10, 100, 1000]:
    print(f"C_t per pixel at t = {t_:4d}: {C_bits[t_ - 2]:.3e} bits")
print(f"sum over t = 2..T: {C_bits.sum():.4f} bits per pixel")
# t = 100, as found above
assert abs(C_bits[98] - C / dim / math.log(2)) < 1e-12

fig, ax = plt.subplots(figsize=(6, 2.8))
ax.plot(np.arange(2, 1001), C_bits)
ax.set(xscale="log", yscale="log", xlabel="t", ylabel="bits per pixel",
       title=r"$C_t / d$ for $\sigma_t^2 = \beta_t$: "
             r"the part of $L_{t-1}$ no mean removes")
plt.tight_layout()
plt.show()

# %% [markdown]
# Summed over $t = 2, \dots, T$, these constants put a floor of
# {glue:text}`C_sum_bits:.3f` bits per pixel under the bound of any model with
# $\sigma_t^2 = \beta_t$ and the linear schedule, however well it predicts the means; with
# $\sigma_t^2 = \tilde\beta_t$ that floor is 0.
#
# :::{admonition} A common mistake
# :class: warning
# The weight in {eq}`kl-weighted-mse` is $1/(2\sigma_t^2)$. It is sometimes written as
# $1/\sigma_t$ (a standard deviation where a variance belongs), or as $1/\sigma_t^2$ (the
# factor 2 dropped). Neither is the KL. Relative to the correct weight, $1/\sigma_t$ is off by a
# factor $2\sigma_t$, which with $\sigma_t^2 = \beta_t$ runs from
# {glue:text}`ratio_first:.3f` at $t = 2$ to {glue:text}`ratio_last:.3f` at $t = T$: it changes
# the *relative* weight of the timesteps by a factor of {glue:text}`ratio_spread:.1f`, so it
# trains a different objective, not just a rescaled one; and since $2\sigma_t < 1$ it
# reports values below the KL, which can then fall below the true negative log-likelihood: it
# is no longer a bound. Dropping the 2 doubles the mean part $\|\tilde\mu_t - \mu_\theta\|^2/(2\sigma_t^2)$
# of every term, while the constant $C_t$ (the log-variance and trace part) stays as it is:
# the minimiser is unchanged, but the reported value overstates the mean parts twofold, so a
# likelihood computed from it is wrong
# (still an upper bound, but not the bound, and not comparable with published numbers). The
# cell below shows both for one fixed error of the model mean (the posterior mean plus noise
# of standard deviation 0.1) at several $t$.
# :::

# %%
sigma = linear.betas.sqrt().numpy()
glue("ratio_first", round(float(2 * sigma[1]), 6))
glue("ratio_last", round(float(2 * sigma[-1]), 6))
glue("ratio_spread", round(float(sigma[-1] / sigma[1]), 4))

# a fixed error of the model mean
offset = candidates["post. mean + 0.1 noise"] - mu_tilde
sq = (offset**2).sum().item()  # |μ̃ - μ_θ|²
print("|mu~ - mu|^2 times each weight (s = sigma_t); ratio = 1/s over "
      "1/(2 s^2)")
print(f"{'t':>5s}{'sigma_t':>9s}{'KL - C_t':>11s}{'1/(2s^2)':>11s}"
      f"{'1/s^2':>11s}{'1/s':>9s}{'ratio':>8s}")
for t_ in [2, 10, 100, 500, 1000]:
    idx = torch.tensor([t_ - 1])
    eps = torch.randn(x0.shape, generator=g, dtype=f64)
    xt_ = diffusion.q_sample(x0, idx, eps)
    mt, bt_, log_bt = diffusion.q_posterior_mean_variance(x0, xt_, idx)
    log_s2 = diffusion.reverse_log_variance(None, idx, xt_)
    s2, b = first(log_s2.exp()), first(bt_)
    kl = normal_kl(mt, log_bt, mt + offset, log_s2).sum().item()
    C_t = dim / 2 * (math.log(s2 / b) + b / s2 - 1)
    right, no_two, std = sq / (2 * s2), sq / s2, sq / math.sqrt(s2)
    print(f"{t_:5d}{math.sqrt(s2):9.5f}{kl - C_t:11.4f}{right:11.4f}"
          f"{no_two:11.4f}{std:9.4f}{std / right:8.4f}")
    assert abs((kl - C_t) - right) < 1e-8 * right
    assert abs(no_two / right - 2) < 1e-12
    assert abs(std / right - 2 * math.sqrt(s2)) < 1e-12

# %% [markdown]
# Only the correct weight reproduces the KL (the column "KL − C_t" is computed with
# `normal_kl`, independently of any weight). The last column is the factor $2\sigma_t$ by which
# the $1/\sigma_t$ version is off: it grows with $t$, so that version puts relatively more
# weight on the noisy steps than the bound does.
#
# In {doc}`03_closed_form` the prior term $L_T$ was computed with the same formula, with
# $p = q(x_T \mid x_0)$ and $q = \mathcal{N}(0, I)$. The next chapter (the
# $\varepsilon$-parameterisation) writes $\mu_\theta$ through a predicted noise, which turns the
# weighted squared distance {eq}`kl-weighted-mse` into a weighted noise-prediction error.
#
# ## Summary
#
# - $\mathrm{KL}\big(\mathcal{N}(\mu_1,\sigma_1^2)\,\|\,\mathcal{N}(\mu_2,\sigma_2^2)\big)
#   = \log\frac{\sigma_2}{\sigma_1} + \frac{\sigma_1^2 + (\mu_1-\mu_2)^2}{2\sigma_2^2} - \frac12$
#   {eq}`kl-gauss`, `normal_kl` in the library; it agrees with quadrature to $10^{-9}$ and
#   with Monte Carlo within 5 standard errors on 27 parameter pairs.
# - For diagonal Gaussians the KL is a sum over dimensions {eq}`kl-diagonal`.
# - With a fixed model variance, each term of the bound is
#   $\|\tilde\mu_t - \mu_\theta\|^2/(2\sigma_t^2) + C_t$ {eq}`kl-weighted-mse`; the constant
#   does not depend on $\mu_\theta$ (checked over means whose KLs span about seven orders of
#   magnitude) and vanishes only for $\sigma_t^2 = \tilde\beta_t$. With $\sigma_t^2 = \beta_t$
#   the constants add up to {glue:text}`C_sum_bits:.3f` bits per pixel.
# - The weight is $1/(2\sigma_t^2)$: $1/\sigma_t$ changes the objective, $1/\sigma_t^2$ doubles
#   the mean part of each term of the bound (not its constant $C_t$).
#
# ## Exercises
#
# ### Try it: the KL between two Gaussians
#
# Write {eq}`kl-gauss` elementwise, in nats, for tensors of means and *log-variances*
# $\log\sigma_1^2$, $\log\sigma_2^2$ (the arguments of the library's `normal_kl`):
# $\mathrm{KL} = \log\frac{\sigma_2}{\sigma_1} + \frac{\sigma_1^2 + (\mu_1-\mu_2)^2}{2\sigma_2^2} - \frac12$.
# The last cell below compares your function with `normal_kl`, on cases that include equal
# Gaussians (KL = 0) and very different ones. While your function still raises
# `NotImplementedError`, the cell checks the book's hidden solution instead.

# %%
def my_normal_kl(mean1: torch.Tensor, logvar1: torch.Tensor,
                 mean2: torch.Tensor, logvar2: torch.Tensor) -> torch.Tensor:
    """KL(N(mean1, e^logvar1) || N(mean2, e^logvar2)), elementwise; all (N,) float64. Returns (N,)."""
    raise NotImplementedError  # your code here

# %% tags=["hide-cell"]
def solution_normal_kl(mean1: torch.Tensor, logvar1: torch.Tensor,
                       mean2: torch.Tensor, logvar2: torch.Tensor) -> torch.Tensor:
    log_ratio = 0.5 * (logvar2 - logvar1)  # log σ₂/σ₁
    return log_ratio + (logvar1.exp() + (mean1 - mean2) ** 2) / (2 * logvar2.exp()) - 0.5

# %%
from diffusion_core.exercises import check
from diffusion_core.notebook import generator

gen = generator(100)
same = torch.randn(2, 6, generator=gen, dtype=f64)  # (mean, logvar) of one Gaussian
cases = [(same[0], same[1], same[0], same[1])]  # equal Gaussians: KL = 0
cases += [tuple(scale * torch.randn(6, generator=gen, dtype=f64) for scale in (1.0, 2.0, 1.0, 2.0))
          for _ in range(3)]  # (mean1, logvar1, mean2, logvar2)
passed = check(my_normal_kl, normal_kl, cases, solution=solution_normal_kl, name="normal_kl")

# %% [markdown]
# ### More exercises
#
# 1. Prove $\mathrm{KL} \ge 0$ for two Gaussians from {eq}`kl-split`, using
#    $\log r \le r - 1$.
# 2. Fix $\mu_1, \sigma_1, \mu_2$. Which $\sigma_2$ minimises
#    $\mathrm{KL}\big(\mathcal{N}(\mu_1,\sigma_1^2)\,\|\,\mathcal{N}(\mu_2,\sigma_2^2)\big)$? Check
#    your answer with `scipy.optimize.minimize_scalar` on `normal_kl`. What does it suggest
#    about a model that learns its variance while its mean is still wrong?
# 3. Show that $\beta_t/\tilde\beta_t = (1-\bar\alpha_t)/(1-\bar\alpha_{t-1})$ and explain why it
#    tends to 1 for large $t$. Compute $C_2/d$ (in nats) from it for the linear schedule.
# 4. Repeat the check of {eq}`kl-weighted-mse` at $t = 1000$ with the cosine schedule. How
#    large is $C_T$ there, and why?
#
# :::{admonition} Solution
# :class: dropdown
#
# 1. In {eq}`kl-split` the mean part is a square over a positive number, so $\ge 0$; the
#    variance part is $\tfrac12(r - 1 - \log r) \ge 0$ because $\log r \le r - 1$ for $r > 0$
#    (the logarithm lies below its tangent at $r = 1$), with equality only at $r = 1$.
# 2. Setting the derivative of {eq}`kl-gauss` with respect to $\sigma_2$ to zero,
#    $1/\sigma_2 - (\sigma_1^2 + (\mu_1-\mu_2)^2)/\sigma_2^3 = 0$, gives
#    $\sigma_2^2 = \sigma_1^2 + (\mu_1-\mu_2)^2$. For example
#    `minimize_scalar(lambda lv: normal_kl(torch.tensor(0.), torch.tensor(0.), torch.tensor(1.), torch.tensor(lv)).item())`
#    returns $\log\sigma_2^2 \approx \log 2$. A model whose mean is off widens its variance to
#    cover the error, so learned variances and means interact. Improved DDPM trains the
#    variance through the bound but stops that term's gradient from reaching the mean, which
#    is trained by the simple noise-prediction loss {cite}`nichol2021improved`.
# 3. $\tilde\beta_t/\beta_t = (1-\bar\alpha_{t-1})/(1-\bar\alpha_t)$ by the definition of
#    $\tilde\beta_t$; once $\bar\alpha_{t-1}$ and $\bar\alpha_t$ are both near 0, both factors are
#    near 1. At $t = 2$, $r = \tilde\beta_2/\beta_2 = \beta_1/(1 - \alpha_1\alpha_2) \approx 0.45$,
#    and $C_2/d = \tfrac12(r - 1 - \log r) \approx 0.12$ nats; the cell above prints it in bits.
# 4. Use `make_schedule("cosine", 1000)` and `t = 1000` in the cells above. There
#    $\bar\alpha_{T-1}$ and $\bar\alpha_T$ are both below $10^{-5}$, so
#    $\tilde\beta_T = \beta_T (1-\bar\alpha_{T-1})/(1-\bar\alpha_T)$ is within $10^{-5}$ of
#    $\beta_T$ (= 0.999, clipped), $r \approx 1$ and $C_T$ is almost 0. Any two choices of
#    variance between $\tilde\beta_t$ and $\beta_t$ agree wherever the signal is gone.
# :::
