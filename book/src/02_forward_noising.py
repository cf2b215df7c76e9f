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
# # Forward noising: destroying structure slowly
#
# A diffusion model is trained to undo a process that we choose ourselves: take a
# picture and add a little Gaussian noise, then a little more, a thousand times, until
# nothing of the picture is left. This chapter builds that *forward process* from its
# definition and watches it work.
#
# **What you will learn**
#
# - The forward process is a fixed Markov chain,
#   $q(x_t \mid x_{t-1}) = \mathcal{N}\big(\sqrt{1-\beta_t}\,x_{t-1},\ \beta_t I\big)$, with no
#   parameters to learn.
# - How to draw one step with the reparameterisation
#   $x_t = \sqrt{1-\beta_t}\,x_{t-1} + \sqrt{\beta_t}\,\varepsilon$.
# - Why the mean is shrunk by $\sqrt{1-\beta_t}$: data of variance 1 keeps variance 1 at
#   every step, and any other variance is pulled towards 1.
# - The linear schedule of DDPM and the cosine schedule of improved DDPM.
# - What it looks like: a photograph and handwritten digits dissolving, and their pixel
#   histograms turning into $\mathcal{N}(0, 1)$.
# - The whole process at once, exactly, for data in one dimension: the density of $x_t$ at
#   every $t$, and why small steps make each reverse step $q(x_{t-1} \mid x_t)$ nearly Gaussian
#   while large jumps do not.

# %%
import sys
if "google.colab" in sys.modules:  # Colab only: install the book's library
    %pip install -q "diffusion_core @ git+https://github.com/diffusion-core/diffusion-book"

# %%
import math

import matplotlib.pyplot as plt
import numpy as np
import scipy.stats
import torch

from diffusion_core import make_schedule, viz
from diffusion_core.data import load_digits, load_photo
from diffusion_core.notebook import glue, setup

g = setup(seed=0)  # 2 threads, all seeds fixed: the outputs reproduce
f64 = torch.float64  # the chains run in double precision

# %% [markdown]
# ## A Markov chain that adds noise
#
# Start from a data point $x_0$, an image with $d$ pixels scaled to $[-1, 1]$. The
# forward process produces a sequence of ever noisier versions $x_1, x_2, \dots, x_T$,
# each made from the one before by a Gaussian step
# {cite}`sohl2015deep,ho2020denoising`:
#
# $$
# q(x_t \mid x_{t-1}) = \mathcal{N}\!\big(x_t;\ \sqrt{1-\beta_t}\,x_{t-1},\ \beta_t I\big),
# \qquad t = 1, \dots, T.
# $$ (forward-step)
#
# The numbers $\beta_1, \dots, \beta_T \in (0, 1)$ are the *variance schedule*: $\beta_t$ is
# the variance of the noise added at step $t$. They are chosen in advance and not learned,
# so the whole chain is fixed. Because each step looks only at the previous one, the chain
# is Markov and the joint distribution of the path factorises:
#
# $$
# q(x_{1:T} \mid x_0) = \prod_{t=1}^{T} q(x_t \mid x_{t-1}).
# $$ (forward-joint)
#
# The covariance $\beta_t I$ is diagonal: every pixel receives its own independent noise,
# and all pixels of one image are noised with the same $\beta_t$. In DDPM, $T = 1000$
# {cite}`ho2020denoising`.

# %% [markdown]
# ## One step, reparameterised
#
# To draw from {eq}`forward-step`, draw standard noise and scale it:
#
# $$
# x_t = \sqrt{1-\beta_t}\,x_{t-1} + \sqrt{\beta_t}\,\varepsilon_t,
# \qquad \varepsilon_t \sim \mathcal{N}(0, I).
# $$ (forward-reparam)
#
# This is the *reparameterisation trick*: the randomness sits in $\varepsilon_t$, which
# does not depend on anything, and $x_t$ is a deterministic, differentiable function of
# $x_{t-1}$ and $\varepsilon_t$. Here it is just a way to sample; later chapters lean on
# it, because it lets a network be trained to recover the $\varepsilon$ that was drawn.
#
# The library stores the schedule in `Schedule` tables that are **0-based**: `betas[0]`
# is $\beta_1$, so `betas[t - 1]` is $\beta_t$. In this chapter $t$ always means the paper's
# step, $t = 0$ is the data and $t = T$ the end of the chain. One step of
# {eq}`forward-reparam` is one line of code:

# %%
T = 1000
linear = make_schedule("linear", T)  # DDPM's schedule, float64 tables
betas = linear.betas                 # betas[t - 1] is β_t


def forward_step(x_prev: torch.Tensor, beta: torch.Tensor,
                 eps: torch.Tensor) -> torch.Tensor:
    """x_t = √(1 - β_t) x_{t-1} + √β_t ε, eq. (forward-reparam)."""
    return (1 - beta).sqrt() * x_prev + beta.sqrt() * eps

# %% [markdown]
# A quick check that this draws from {eq}`forward-step`: hold $x_{t-1}$ fixed at one
# value, draw many $\varepsilon$, and compare the sample mean and variance of $x_t$ with
# $\sqrt{1-\beta_t}\,x_{t-1}$ and $\beta_t$. Here and below, a Monte Carlo estimate passes
# when it lies within 5 standard errors of the exact value: a correct formula fails that
# test with probability below $10^{-6}$ per comparison, while the mistakes shown in this
# chapter miss by far more.

# %%
n, t = 20_000, 500
x_prev = torch.full((n,), 0.7, dtype=f64)
eps = torch.randn(n, generator=g, dtype=f64)
x_t = forward_step(x_prev, betas[t - 1], eps)

beta_t = betas[t - 1].item()
mean_exact, var_exact = math.sqrt(1 - beta_t) * 0.7, beta_t
mean_se = x_t.std().item() / math.sqrt(n)
var_se = var_exact * math.sqrt(2 / (n - 1))  # x_t is Gaussian here
print(f"beta_{t} = {beta_t:.6f}")
print(f"mean: sample {x_t.mean():.5f}, exact {mean_exact:.5f}, "
      f"SE {mean_se:.1e}")
print(f"var:  sample {x_t.var():.6f}, exact {var_exact:.6f}, "
      f"SE {var_se:.1e}")

# %%
assert abs(x_t.mean().item() - mean_exact) < 5 * mean_se
assert abs(x_t.var().item() - var_exact) < 5 * var_se

# %% [markdown]
# ## Why the mean is shrunk: variance preservation
#
# Why multiply $x_{t-1}$ by $\sqrt{1-\beta_t}$ rather than just add noise? Take the variance
# of {eq}`forward-reparam`, one pixel at a time. $\varepsilon_t$ is independent of
# $x_{t-1}$, so the variances add:
#
# $$
# \operatorname{Var}(x_t) = (1-\beta_t)\operatorname{Var}(x_{t-1}) + \beta_t,
# \qquad
# \mathbb{E}[x_t] = \sqrt{1-\beta_t}\;\mathbb{E}[x_{t-1}].
# $$ (forward-var-recursion)
#
# If $\operatorname{Var}(x_{t-1}) = 1$ then $\operatorname{Var}(x_t) = 1 - \beta_t + \beta_t = 1$:
# the shrink removes exactly as much variance as the noise adds. For any other starting
# variance, subtract 1 from both sides:
# $\operatorname{Var}(x_t) - 1 = (1-\beta_t)\,\big(\operatorname{Var}(x_{t-1}) - 1\big)$, so the gap
# to 1 shrinks by a factor $1-\beta_t$ at every step, and the mean decays to 0 by a factor
# $\sqrt{1-\beta_t}$. The chain is *variance preserving*: its values never blow up, and
# after enough steps every pixel looks like a draw from $\mathcal{N}(0, 1)$, whatever the
# data were.
#
# Let us check {eq}`forward-var-recursion` on two kinds of data, by running the chain step
# by step on many samples:
#
# - **unit-variance data**: pixels that are $-1$ or $+1$ with equal probability (a
#   black-and-white image), mean 0 and variance exactly 1, and about as far from Gaussian as
#   data can be;
# - **digit pixels**: values drawn at random from all pixels of the scikit-learn digits,
#   whose mean and variance are far from 0 and 1.

# %%
digits, labels = load_digits("train")  # (1497, 1, 8, 8), (1497,)
pixels = digits.flatten().double()
print(f"{pixels.numel()} digit pixels: mean {pixels.mean():.4f}, "
      f"variance {pixels.var(correction=0):.4f}")

# 2 x 16 000 samples: below the 32 768 elements at which torch splits
# an operation across threads, so this runs fast even on a busy CPU.
n = 16_000
pm1 = torch.randint(0, 2, (n,), generator=g).double() * 2 - 1  # ±1
pick = torch.randint(0, pixels.numel(), (n,), generator=g)
x0 = torch.stack([pm1, pixels[pick]])  # (2, n)


def sample_moments(x: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """Mean, variance and SE of the variance, along the last dim.

    SE(variance) = √((m₄ - s⁴ (n-3)/(n-1))/n), m₄ the fourth central
    moment: right for any distribution, not only for Gaussians (the
    (n-3)/(n-1) matters for ±1 data, whose m₄ - s⁴ is almost 0).
    """
    n = x.shape[-1]
    mean, var = x.mean(dim=-1), x.var(dim=-1)
    m4 = ((x - mean[..., None]) ** 4).mean(dim=-1)
    return mean, var, ((m4 - var**2 * (n - 3) / (n - 1)).clamp(min=0) / n).sqrt()


def chain_moments(x0: torch.Tensor, betas: torch.Tensor,
                  gen: torch.Generator) -> list[tuple]:
    """Run the chain on x0 (..., n): sample_moments of x_0, ..., x_T."""
    x, moments = x0, [sample_moments(x0)]
    for beta in betas:
        eps = torch.randn(x.shape, generator=gen, dtype=x.dtype)
        x = forward_step(x, beta, eps)
        moments.append(sample_moments(x))
    return moments


# each (T + 1, 2): row t, one column per kind of data
moments = chain_moments(x0, betas, g)
emp_mean, emp_var, emp_se = (torch.stack(m)
                             for m in zip(*moments, strict=True))

# %% [markdown]
# The exact values come from iterating {eq}`forward-var-recursion` with plain Python
# floats, starting from the population mean and variance of each kind of data (0 and 1 for
# the $\pm 1$ pixels; the moments of all digit pixels, printed above):

# %%
def moments_by_recursion(mean0: float, var0: float,
                         betas: list[float]) -> list[list[float]]:
    """E[x_t] and Var(x_t) for t = 0..T, eq. (forward-var-recursion)."""
    means, variances = [mean0], [var0]
    for beta in betas:
        means.append(math.sqrt(1 - beta) * means[-1])
        variances.append((1 - beta) * variances[-1] + beta)
    return [means, variances]


starts = {"±1 pixels": (0.0, 1.0),
          "digit pixels": (pixels.mean().item(),
                           pixels.var(correction=0).item())}
exact = [moments_by_recursion(m0, v0, betas.tolist())
         for m0, v0 in starts.values()]
ex_mean = torch.tensor([e[0] for e in exact], dtype=f64).T  # (T + 1, 2)
ex_var = torch.tensor([e[1] for e in exact], dtype=f64).T   # (T + 1, 2)

# errors in standard errors for t = 1..T (t = 0 is the data itself)
z_mean = (emp_mean - ex_mean)[1:] / (emp_var[1:] / n).sqrt()
z_var = (emp_var - ex_var)[1:] / emp_se[1:]

for k, name in enumerate(starts):
    print(f"{name}")
    print("     t   mean: chain   exact   var: chain   exact   |z|")
    for t in [1, 10, 100, 300, 500, 1000]:
        z = max(abs(z_mean[t - 1, k]), abs(z_var[t - 1, k]))
        print(f"  {t:4d}  {emp_mean[t, k]:11.4f} {ex_mean[t, k]:7.4f}  "
              f"{emp_var[t, k]:11.4f} {ex_var[t, k]:7.4f}  {z:4.2f}")

# %% [markdown]
# The last column is the larger of the two errors, in standard errors. Checked at every one
# of the 1000 steps, not just the rows printed. That is 4000 comparisons (mean and variance,
# two kinds of data, 1000 steps), so here the bar is 6 standard errors rather than 5: even if
# the 4000 were independent, a correct recursion would fail it somewhere with probability
# below $10^{-5}$ ($4000 \times 2 \cdot 10^{-9}$), while 5 would leave a chance of up to 0.2%.

# %%
print(f"largest |z| over t = 1..{T}: mean {z_mean.abs().max():.2f}, "
      f"variance {z_var.abs().max():.2f}")
assert z_mean.abs().max() < 6 and z_var.abs().max() < 6  # 4000 comparisons: 6 SE
# the ±1 data keep variance 1 at every step of the recursion
assert (ex_var[:, 0] - 1).abs().max() < 1e-12

# %% [markdown]
# The two columns agree at every step. For the $\pm 1$ pixels the variance stays at 1
# throughout, even though the distribution changes completely: it starts as two spikes and
# ends as a bell curve. For the digit pixels the variance climbs from
# {glue:text}`digit_var0:.3f` towards 1 and the mean decays from
# {glue:text}`digit_mean0:.3f` towards 0.

# %%
glue("digit_var0", round(starts["digit pixels"][1], 6))
glue("digit_mean0", round(starts["digit pixels"][0], 6))

fig, axes = plt.subplots(1, 2, figsize=(8, 3))
steps, dots = np.arange(T + 1), slice(None, None, 50)
for k, name in enumerate(starts):
    c = f"C{k}"
    axes[0].plot(steps, ex_mean[:, k], color=c,
                 label=f"{name}: recursion")
    axes[0].plot(steps[dots], emp_mean[dots, k], "o", ms=3, color=c,
                 label=f"{name}: chain")
    axes[1].plot(steps, ex_var[:, k], color=c)
    axes[1].plot(steps[dots], emp_var[dots, k], "o", ms=3, color=c)
axes[0].set(xlabel="t", ylabel=r"$\mathbb{E}[x_t]$", title="mean")
axes[1].set(xlabel="t", ylabel=r"$\mathrm{Var}(x_t)$", title="variance",
            ylim=(0, 1.1))
axes[0].legend(fontsize=7)
plt.tight_layout()
plt.show()

# %% [markdown]
# :::{admonition} A common mistake
# :class: warning
# Two slips in writing the step {eq}`forward-step` are common, and both break the property
# just checked.
#
# - **Mixing up the standard deviation and the variance.** Writing
#   $\mathcal{N}(\sqrt{1-\beta_t}\,x_{t-1}, \sqrt{\beta_t}\, I)$, that is, $\sqrt{\beta_t}$ as the
#   *variance*, makes the noise standard deviation $\beta_t^{1/4}$; writing the step as
#   $\sqrt{1-\beta_t}\,x_{t-1} + \beta_t\,\varepsilon$, that is, $\beta_t$ as the *standard
#   deviation*, makes the noise variance $\beta_t^2$.
# - **Leaving out the shrink:** $x_t = x_{t-1} + \sqrt{\beta_t}\,\varepsilon$.
#
# Start from unit-variance data and run each version for $T = 1000$ steps of the linear
# schedule. The correct step ends with $\operatorname{Var}(x_T) = 1$. With $\sqrt{\beta_t}$ as
# the variance it ends at {glue:text}`var_T_sqrtbeta:.2f`; with $\beta_t$ as the standard
# deviation the noise is far too weak and the variance *collapses* to
# {glue:text}`var_T_betastd:.4f`; without the shrink the variances simply add up to
# $1 + \sum_t \beta_t =$ {glue:text}`var_T_noshrink:.2f`. Without the shrink the data are also
# never forgotten: the correlation between $x_0$ and $x_T$ is still
# {glue:text}`corr_T_noshrink:.2f` (it is $1/\sqrt{\operatorname{Var}(x_T)}$), against
# {glue:text}`corr_T_correct:.4f` for the correct chain, so $x_T$ cannot be replaced by pure
# noise when sampling starts.
# :::

# %%
# Every version is x_t = a_t x_{t-1} + b_t ε: a_t shrinks, b_t is the
# standard deviation of the noise.
shrink, no_shrink = (1 - betas).sqrt(), torch.ones_like(betas)
versions = {
    "correct": (shrink, betas.sqrt()),
    "√β as variance": (shrink, betas.sqrt().sqrt()),
    "β as std": (shrink, betas),
    "no shrink": (no_shrink, betas.sqrt()),
}
a = torch.stack([v[0] for v in versions.values()])  # (4, T)
b = torch.stack([v[1] for v in versions.values()])  # (4, T)

n = 8_000  # 4 versions x 8 000 samples
x0 = torch.randint(0, 2, (4, n), generator=g).double() * 2 - 1  # ±1
x, var_chain = x0, [x0.var(dim=1)]
for t in range(1, T + 1):
    eps = torch.randn(x.shape, generator=g, dtype=f64)
    x = a[:, t - 1, None] * x + b[:, t - 1, None] * eps  # (4, n)
    var_chain.append(x.var(dim=1))
var_chain = torch.stack(var_chain)  # (T + 1, 4)
_, _, var_T_se = sample_moments(x)  # (4,)
corr_chain = [np.corrcoef(x0[k], x[k])[0, 1] for k in range(4)]

# The recursion Var_t = a_t² Var_{t-1} + b_t² in plain floats, and the
# exact correlation: Cov(x_0, x_T) = a_1 ⋯ a_T, as Var(x_0) = 1.
var_rec, corr_exact = [], []
for k in range(4):
    v = [1.0]
    for a_t, b_t in zip(a[k].tolist(), b[k].tolist(), strict=True):
        v.append(a_t**2 * v[-1] + b_t**2)
    var_rec.append(v)
    corr_exact.append(math.prod(a[k].tolist()) / math.sqrt(v[-1]))

print(f"{'':16s}{'Var(x_T)':>18s}{'corr(x_0, x_T)':>20s}")
print(f"{'version':16s}{'recursion':>10s}{'chain':>8s}"
      f"{'exact':>12s}{'chain':>8s}")
for k, name in enumerate(versions):
    print(f"{name:16s}{var_rec[k][-1]:10.4f}{var_chain[-1, k]:8.4f}"
          f"{corr_exact[k]:12.4f}{corr_chain[k]:8.4f}")

# %%
glue("var_T_sqrtbeta", round(var_rec[1][-1], 6))
glue("var_T_betastd", round(var_rec[2][-1], 6))
glue("var_T_noshrink", round(var_rec[3][-1], 6))
glue("corr_T_noshrink", round(corr_exact[3], 6))
glue("corr_T_correct", round(corr_exact[0], 6))
for k in range(4):  # chain and recursion agree within 5 SE
    assert abs(var_chain[-1, k] - var_rec[k][-1]) < 5 * var_T_se[k]
    # the SE of a sample correlation is about (1 - ρ²)/√n <= 1/√n
    assert abs(corr_chain[k] - corr_exact[k]) < 5 / math.sqrt(n)
assert abs(var_rec[0][-1] - 1) < 1e-12               # correct: stays 1
assert var_rec[1][-1] > 5 and var_rec[2][-1] < 0.05    # the two mix-ups
assert abs(var_rec[3][-1] - (1 + betas.sum())) < 1e-9  # 1 + Σ β_t

# %%
fig, ax = plt.subplots(figsize=(6, 3))
for k, name in enumerate(versions):
    ax.plot(steps, var_rec[k], color=f"C{k}", label=name)
    ax.plot(steps[dots], var_chain[dots, k], "o", ms=3, color=f"C{k}")
ax.set(xlabel="t", ylabel=r"$\mathrm{Var}(x_t)$", yscale="log",
       title="unit-variance data: lines = recursion, dots = chain")
ax.legend(fontsize=7, loc="lower left")
plt.tight_layout()
plt.show()

# %% [markdown]
# ## The variance schedule
#
# How fast the structure is destroyed is set by the schedule. DDPM uses a **linear**
# schedule, $\beta_t$ rising evenly from $\beta_1 = 10^{-4}$ to $\beta_T = 0.02$ over $T = 1000$
# steps {cite}`ho2020denoising`: tiny steps at first, where the image still holds fine
# detail, and larger ones later, where little is left to lose. Each step alone changes the
# image only slightly, which matters later: small steps are what make each reverse step
# nearly Gaussian too.
#
# Improved DDPM {cite}`nichol2021improved` found that the linear schedule destroys
# information too fast at low resolution, so that the last part of the chain is almost pure
# noise, and proposed a **cosine** schedule. It is defined through the product
# $\prod_{i=1}^{t}(1-\beta_i)$, the subject of {doc}`03_closed_form`, which it sets to
# $f(t)/f(0)$ with $f(t) = \cos^2\!\big(\tfrac{t/T + s}{1+s}\cdot\tfrac{\pi}{2}\big)$ and a small
# offset $s = 0.008$. Each step is then $\beta_t = 1 - f(t)/f(t-1)$, clipped at 0.999
# because at the last step $f(T) = 0$ would make it exactly 1. `make_schedule` builds both.

# %%
cosine = make_schedule("cosine", T)
t_axis = np.arange(1, T + 1)  # the paper's t (tables: index t - 1)
fig, ax = plt.subplots(figsize=(6, 3))
ax.plot(t_axis, linear.betas, label="linear (DDPM)")
ax.plot(t_axis, cosine.betas, label="cosine (improved DDPM)")
ax.set(xlabel="t", ylabel=r"$\beta_t$", yscale="log",
       title="the variance added at each step")
ax.legend()
plt.tight_layout()
plt.show()

# %% [markdown]
# An independent check of both tables: the linear one against its definition (first value,
# last value, even spacing), the cosine one recomputed from the formula above with numpy.

# %%
lin = linear.betas.numpy()
step = np.diff(lin)
print(f"linear: beta_1 = {lin[0]:.6f}, beta_T = {lin[-1]:.6f}, "
      f"sum {lin.sum():.4f}")
print(f"        spacing from {step.min():.6e} to {step.max():.6e}")

s = 0.008
f = np.cos((np.arange(T + 1) / T + s) / (1 + s) * np.pi / 2) ** 2
cos = np.minimum(1 - f[1:] / f[:-1], 0.999)  # f = [f(0), ..., f(T)]
print(f"cosine: beta_1 = {cos[0]:.3e}, beta_500 = {cos[499]:.4f}, "
      f"beta_T = {cos[-1]:.4f}")

# %% tags=["nbval-ignore-output"]
# Rounding-level numbers vary by machine: output not compared.
print(f"largest difference between numpy and the library: "
      f"{np.abs(cos - cosine.betas.numpy()).max():.1e}")
glue("sum_betas", round(float(lin.sum()), 6))
assert abs(lin[0] - 1e-4) < 1e-15 and abs(lin[-1] - 0.02) < 1e-15
assert np.allclose(step, (0.02 - 1e-4) / (T - 1), rtol=1e-9, atol=0)
assert np.allclose(cos, cosine.betas.numpy(), rtol=1e-12, atol=0)

# %% [markdown]
# The cosine schedule starts with even smaller steps than the linear one and ends with
# much larger ones; {doc}`03_closed_form` compares the two through what actually matters,
# how much of the signal is left at each $t$.

# %% [markdown]
# ## Watching an image dissolve
#
# Now run the chain {eq}`forward-reparam` on a photograph, the $64 \times 64$ grayscale
# "camera" image from scikit-image, with the linear schedule, step by step from $t = 1$ to
# $T$. We run 8 independent chains on the same photograph (they share $x_0$ but not the
# noise) and keep a few frames; the first chain is shown, all 8 feed the histograms below.

# %%
photo = load_photo("camera", size=64, grayscale=True).double()
x0 = photo.expand(8, 1, 64, 64).clone()  # (8, 1, 64, 64): 8 chains
strip = [0, 25, 50, 100, 200, 300, 500, 700, 1000]
x, frames = x0, {0: x0}
for t in range(1, T + 1):
    eps = torch.randn(x.shape, generator=g, dtype=f64)
    x = forward_step(x, betas[t - 1], eps)
    if t in strip:
        frames[t] = x

fig, ax = plt.subplots(figsize=(8, 1.3))
viz.show_images(torch.stack([frames[t][0] for t in strip]),
                nrow=len(strip), ax=ax)
ax.set_title("t = " + ", ".join(map(str, strip)), fontsize=9)
plt.show()

# %% [markdown]
# Pixels are shown on the fixed range $[-1, 1]$ (values outside are clipped, so the noise is
# not rescaled away). Fine texture goes first; by $t = 200$ only the large dark and light
# regions survive, and by $t = 700$ the picture is gone to the eye.

# %% [markdown]
# The same chain on the digits 0 to 3, $8 \times 8$ pixels each (one row per digit). With
# so few pixels, each of them large, a digit is unreadable much earlier than the
# photograph.

# %%
four = torch.stack([digits[labels == c][0] for c in range(4)]).double()
x, digit_frames = four, [four]  # (4, 1, 8, 8): the digits 0, 1, 2, 3
for t in range(1, T + 1):
    eps = torch.randn(x.shape, generator=g, dtype=f64)
    x = forward_step(x, betas[t - 1], eps)
    if t in strip[1:]:
        digit_frames.append(x)
grid = torch.stack(digit_frames, dim=1)  # (4, 9, 1, 8, 8): digit, t
fig, ax = plt.subplots(figsize=(5, 2.4))
viz.show_images(grid.reshape(-1, 1, 8, 8), nrow=len(strip), ax=ax)
ax.set_title("columns: t = " + ", ".join(map(str, strip)), fontsize=9)
plt.show()

# %% [markdown]
# ## Pixel values approach $\mathcal{N}(0, 1)$
#
# Pool all pixels of the 8 photograph chains (32 768 values) at a few $t$ and compare
# their histogram with the standard normal density. The Kolmogorov-Smirnov statistic $D$
# (the largest gap between the empirical and the normal CDF) measures the distance.

# %%
fig, axes = plt.subplots(1, 4, figsize=(8, 2.4), sharey=True)
grid_x = np.linspace(-4, 4, 200)
ks = {}
for ax, t in zip(axes, [0, 50, 200, 1000], strict=True):
    values = frames[t].flatten().numpy()
    ks[t] = scipy.stats.kstest(values, "norm")
    ax.hist(values, bins=60, range=(-4, 4), density=True, alpha=0.7)
    ax.plot(grid_x, scipy.stats.norm.pdf(grid_x), "k", lw=1)
    ax.set_title(f"t = {t}\nD = {ks[t].statistic:.3f}", fontsize=9)
    ax.set_xlabel("pixel value")
axes[0].set_ylim(0, 1.2)
plt.tight_layout()
plt.show()
for t, result in ks.items():
    print(f"t = {t:4d}: KS statistic D = {result.statistic:.4f}, "
          f"p-value = {result.pvalue:.3g}")

# %% [markdown]
# At $t = 0$ the histogram is the photograph's (a dark coat, a light sky); it is smoothed
# and pulled towards 0 as noise is added, and at $t = T$ it is indistinguishable from
# $\mathcal{N}(0, 1)$: $D =$ {glue:text}`ks_T:.2g` is the size of gap that 32 768 draws from
# $\mathcal{N}(0, 1)$ itself leave (about $0.87/\sqrt{32\,768} \approx 0.005$ on average). The
# cell below asserts $D <$ {glue:text}`ks_crit:.3f`, a bound that a sample of $\mathcal{N}(0, 1)$
# exceeds with probability $10^{-6}$, so a gap between the CDFs of 0.02 would not pass. That
# is the point of the forward process: after $T$ steps, $x_T$ follows (very nearly) a
# distribution we can sample from without knowing anything about the data, so a model that
# learns to reverse the steps can start from pure noise.

# %%
n_pixels = frames[1000].numel()
ks_crit = float(scipy.stats.kstwo.isf(1e-6, n_pixels))  # P(D > ks_crit | N(0, 1)) = 1e-6
glue("ks_T", float(ks[1000].statistic), digits=2)
glue("ks_crit", ks_crit, digits=2)
print(f"D at t = T: {ks[1000].statistic:.4f}; bound at the 1e-6 level: {ks_crit:.4f}")
assert ks[1000].statistic < ks_crit  # indistinguishable from N(0, 1) at t = T
assert ks[0].statistic > 0.1 and ks[50].statistic > ks[1000].statistic

# %% [markdown]
# ## The whole process in one dimension
#
# A histogram shows one $t$ at a time, and only approximately. For data in one dimension the
# whole process can be drawn at once, exactly. Let $x_0$ be a single "pixel" with three grey
# levels, $c_1, c_2, c_3 = -1, 0.2, 1$, taken with probabilities $w_1, w_2, w_3 = 0.3, 0.3, 0.4$.
# A chain started at one level $c_k$ has, by {eq}`forward-var-recursion` with
# $\operatorname{Var}(x_0) = 0$, mean $\sqrt{\bar\alpha_t}\,c_k$ and variance $1 - \bar\alpha_t$ at
# step $t$, where $\bar\alpha_t = \prod_{s=1}^{t}(1-\beta_s)$, and {doc}`03_closed_form` shows
# that $x_t$ is then Gaussian. So the density of $x_t$ is a mixture of three Gaussians:
#
# $$
# q(x_t) = \sum_k w_k\, \mathcal{N}\big(x_t;\ \sqrt{\bar\alpha_t}\,c_k,\ 1-\bar\alpha_t\big).
# $$ (point-mass-marginal)
#
# The library has it as `distributions.point_mass_marginal`, which returns the mixture's
# weights, means and variance. First a check against the chain itself: run 16 000 chains from
# draws of $x_0$ and compare their empirical CDF with the mixture's (`mixture_cdf`) at a few
# points and steps. Six of the chains are kept whole, for the picture below.

# %%
from diffusion_core import respace
from diffusion_core.distributions import (mixture_cdf, mixture_moments, mixture_pdf,
                                          point_mass_marginal, point_mass_reverse)

levels = torch.tensor([-1.0, 0.2, 1.0], dtype=f64)  # the grey levels c_k
probs = torch.tensor([0.3, 0.3, 0.4], dtype=f64)    # their probabilities w_k
n = 16_000  # below 32 768 elements: each step runs on one thread
x = levels[torch.multinomial(probs, n, replacement=True, generator=g)]  # x_0, (n,)
probe = torch.linspace(-2.5, 2.5, 11, dtype=f64)  # where the CDFs are compared
paths, z_cdf = [x[:6]], []
for t in range(1, T + 1):
    x = forward_step(x, betas[t - 1], torch.randn(n, generator=g, dtype=f64))
    paths.append(x[:6])
    if t in (10, 100, 300, 1000):
        exact = mixture_cdf(point_mass_marginal(linear, t - 1, levels, probs), probe)
        chain = (x[None, :] <= probe[:, None]).double().mean(1)  # (11,)
        se = (exact * (1 - exact) / n).sqrt().clamp(min=1 / n)
        z_cdf.append(((chain - exact) / se).abs().max().item())
paths = torch.stack(paths, dim=1)  # (6, T + 1): six whole chains, x_0 .. x_T

# %% tags=["nbval-ignore-output"]
# Sampled numbers: output not compared.
print("largest |z| of the CDF at t = 10, 100, 300, 1000:",
      ", ".join(f"{z:.2f}" for z in z_cdf))
assert max(z_cdf) < 5  # 44 comparisons, each within 5 standard errors

# %% [markdown]
# A sampler runs the chain backwards and needs the reverse step $q(x_{t-1} \mid x_t)$. For
# these data it is exact too. Given $x_t$, the level it started from is uncertain, with
# probabilities $w_k(x_t) = q(x_0 = c_k \mid x_t) \propto w_k\,\mathcal{N}(x_t;\ \sqrt{\bar\alpha_t}\,c_k,\ 1-\bar\alpha_t)$
# by Bayes' rule; given the level as well, the step back is the Gaussian
# $q(x_{t-1} \mid x_t, x_0 = c_k) = \mathcal{N}\big(\tilde\mu_t(x_t, c_k), \tilde\beta_t\big)$ that
# {doc}`04_variational_bound` derives. So the reverse step is a mixture as well,
#
# $$
# q(x_{t-1} \mid x_t) = \sum_k w_k(x_t)\, \mathcal{N}\big(x_{t-1};\ \tilde\mu_t(x_t, c_k),\ \tilde\beta_t\big),
# $$ (point-mass-reverse)
#
# `point_mass_reverse` in the library (its tests check it against Bayes' rule,
# $q(x_{t-1} \mid x_t) \propto q(x_t \mid x_{t-1})\,q(x_{t-1})$, on a fine grid). DDPM's reverse model
# is one Gaussian per step. The best single Gaussian for {eq}`point-mass-reverse` is the one
# with the same mean $m$ and variance $s^2$ (`mixture_moments`): of all Gaussians, it has the
# smallest $\mathrm{KL}\big(q(x_{t-1} \mid x_t)\,\|\,\mathcal{N}(m, s^2)\big)$. How good is it?
#
# Move the slider. Left: the density of $x_t$ over $(t, x)$, on a log colour scale (bright is
# likely), with the six chains in white; the $t$ axis is stretched at small $t$. Right: the
# exact reverse step at the dot, $x_t = \sqrt{\bar\alpha_t} \cdot (-0.4)$, the noisy image of the
# point halfway between the levels $-1$ and $0.2$, where $x_t$ says least about where it came
# from. Each density is drawn in units of its own best Gaussian, $(x_{t-1} - m)/s$, so that
# Gaussian is always the dashed bell and what is left to see is the shape. Blue: one step,
# $t \to t-1$. Orange: a jump of 100 steps at once (to $t - 100$, or to $t = 1$), which is what
# a sampler must do that takes 10 steps instead of 1000; the legend gives the variance that
# the jump adds, $\beta = 1 - \bar\alpha_t / \bar\alpha_{t-100}$ (`respace` builds that schedule).

# %%
frame_t = [2, 5, 10, 20, 35, 50, 75, 100, 150, 200, 250, 300, 400, 500, 700, 1000]
pngs = viz.reverse_step_frames(linear, levels, probs, frame_t, x_signal=-0.4, jump=100,
                               paths=paths)
viz.scrubber(pngs, frame_t)

# %% [markdown]
# What to look at:
#
# - **The levels merge into one Gaussian.** For the first few dozen steps the three levels
#   stay apart, each blurred into a narrow Gaussian and pulled towards 0. Between
#   $t \approx 50$ and $t \approx 200$ they run into each other, and from $t \approx 500$ on the
#   picture hardly changes: $q(x_t)$ is close to $\mathcal{N}(0, 1)$, whatever the levels were.
#   Each white chain wanders off its level and forgets it.
# - **One small step is Gaussian.** From $t \approx 50$ on, the blue curve lies on (or very
#   near) the dashed bell. At smaller $t$ the dot sits in the dark gap between two levels, and there the
#   one-step reverse has two peaks: an $x_t$ halfway between two levels could have come from
#   either. But such an $x_t$ practically never occurs; at $t = 20$ its density is
#   {glue:text}`dot_density_20:.0e`.
# - **A large jump is not.** The orange curve has two or three separate peaks as long as the
#   levels are still apart where the jump lands ($t \lesssim 200$): one Gaussian cannot say
#   "it was $-1$ or $0.2$". And from $t \approx 50$ on, where the blurred levels overlap, such
#   an $x_t$ is common. Only where the jump starts and lands in the merged part of the
#   picture ($t \gtrsim 300$) does it become a bell.
#
# The dot is one $x_t$. Averaged over where $x_t$ actually falls, the price of the best
# Gaussian is the expected KL,
# $\mathbb{E}_{x_t \sim q(x_t)}\,\mathrm{KL}\big(q(x_{t-1} \mid x_t)\,\|\,\mathcal{N}(m(x_t), s^2(x_t))\big)$,
# in nats. We compute it by quadrature, with the mixture's log-density written out here
# rather than taken from the library: the inner integral over $x_{t-1}$ by Gauss-Hermite
# quadrature on each component, the outer one over $x_t$ on a fine grid. The Gaussian's part
# needs no integral: $\mathbb{E}[-\log \mathcal{N}(x; m, s^2)] = \tfrac12 \log(2\pi e s^2)$ when
# $m$ and $s^2$ are the mean and variance of $x$.

# %%
y, w_gh = (torch.from_numpy(a) for a in np.polynomial.hermite.hermgauss(20))
w_gh = w_gh / math.sqrt(math.pi)  # E f(N(m, v)) ≈ Σ_j w_gh_j f(m + √(2v) y_j)


def log_density(mix, x: torch.Tensor) -> torch.Tensor:
    """log Σ_k w_k N(x; m_k, v) at x (..., A, B), for mixtures with batch shape (...)."""
    d = x[..., None] - mix.means[..., None, None, :]  # (..., A, B, K)
    v = mix.variance[..., None, None, None]
    return torch.logsumexp(mix.weights.log()[..., None, None, :] - d**2 / (2 * v)
                           - 0.5 * torch.log(2 * math.pi * v), dim=-1)


def expected_kl(schedule, i: int) -> float:
    """E over x_t of KL(exact reverse step at index i || its best Gaussian), in nats."""
    x_t = torch.linspace(-5, 5, 2001, dtype=f64)  # (N,): the outer grid
    step = point_mass_reverse(schedule, i, x_t, levels, probs)  # N mixtures
    _, var = mixture_moments(step)  # (N,)
    nodes = step.means[..., None] + (2 * step.variance)[:, None, None].sqrt() * y  # (N, K, J)
    e_log_p = (step.weights[..., None] * w_gh * log_density(step, nodes)).sum((-2, -1))
    kl = e_log_p + 0.5 * torch.log(2 * math.pi * math.e * var)  # (N,)
    q_t = point_mass_marginal(schedule, i, levels, probs)
    return torch.trapezoid(log_density(q_t, x_t[None]).exp()[0] * kl, x_t).item()


rows = []
for t in [10, 20, 50, 100, 150, 200, 300, 500, 1000]:
    s = max(t - 100, 1)
    jump = respace(linear, torch.tensor([s - 1, t - 1]))  # x_0 -> x_s -> x_t: index 1 jumps
    rows.append((t, s, expected_kl(linear, t - 1), expected_kl(jump, 1)))


def nats(v: float) -> str:  # below 1e-10 a KL is lost in the rounding of two ~1-nat numbers
    return f"{v:.2g}" if v >= 1e-10 else "< 1e-10"


print("    t   one step t -> t-1   jump t -> s")
for t, s, one, jump in rows:
    print(f"{t:5d}   {nats(one):>17s}   {s:4d}: {nats(jump)}")
dot_20 = math.sqrt(linear.alphas_cumprod[19]) * -0.4
dot_density = mixture_pdf(point_mass_marginal(linear, 19, levels, probs),
                          torch.tensor([dot_20], dtype=f64)).item()
print(f"q(x_t) at the dot at t = 20: {dot_density:.1e}")

# %%
kl_one_max = max(one for _, _, one, _ in rows)
glue("kl_one_max", kl_one_max, digits=2)
glue("kl_jump_100", rows[3][3], digits=2)  # the jump 100 -> 1
glue("kl_jump_200", rows[5][3], digits=2)  # 200 -> 100
glue("kl_jump_300", rows[6][3], digits=2)  # 300 -> 200
glue("dot_density_20", dot_density, digits=1)
assert kl_one_max < 1e-4  # one small step: Gaussian to within 1e-4 nats, at every t here
assert rows[3][3] > 1 and rows[5][3] > 0.01  # a jump of 100 steps: far from Gaussian
assert all(jump > 1000 * one for t, _, one, jump in rows if 50 <= t <= 500)

# %% [markdown]
# One step of DDPM's thousand costs the best Gaussian at most {glue:text}`kl_one_max:.2g`
# nats at any $t$ in the table: the reverse step is Gaussian for every practical purpose,
# which is why DDPM can model it with one. A jump of 100 steps costs up to
# {glue:text}`kl_jump_100:.2g` nats (from $t = 100$ to the data's neighbourhood at $t = 1$),
# still {glue:text}`kl_jump_200:.2g` from $t = 200$ and {glue:text}`kl_jump_300:.2g` from
# $t = 300$: the fewer the steps, the further a Gaussian reverse model is from the truth.
# {doc}`11_fewer_steps` measures what that costs a sampler that takes few steps.

# %% [markdown]
# ## Summary
#
# - The forward process is the fixed Markov chain {eq}`forward-step`; one step is
#   $x_t = \sqrt{1-\beta_t}\,x_{t-1} + \sqrt{\beta_t}\,\varepsilon$ {eq}`forward-reparam`.
# - Shrinking the mean by $\sqrt{1-\beta_t}$ keeps unit variance at 1 and pulls every other
#   variance towards 1 {eq}`forward-var-recursion`, checked against the chain at every
#   step. Mixing up standard deviation and variance, or dropping the shrink, ends the chain
#   at variance {glue:text}`var_T_sqrtbeta:.2f`, {glue:text}`var_T_betastd:.4f` or
#   {glue:text}`var_T_noshrink:.2f` instead of 1.
# - DDPM's linear schedule runs from $\beta_1 = 10^{-4}$ to $\beta_T = 0.02$ over
#   $T = 1000$ steps; improved DDPM's cosine schedule starts gentler and ends harder.
# - After $T$ steps the pixel values are indistinguishable from $\mathcal{N}(0, 1)$
#   (KS statistic {glue:text}`ks_T:.2g`).
# - For 1-D data on a few levels everything is exact: $q(x_t)$ is a mixture of Gaussians
#   {eq}`point-mass-marginal` that merges into $\mathcal{N}(0, 1)$, and the reverse step is a
#   mixture too {eq}`point-mass-reverse`. For one of DDPM's small steps the best single
#   Gaussian is within {glue:text}`kl_one_max:.2g` nats of it on average; for a jump of 100
#   steps it can be {glue:text}`kl_jump_100:.2g` nats off.
#
# Running the chain costs $t$ steps to reach $x_t$. {doc}`03_closed_form` shows that it can
# be reached in one.
#
# ## Exercises
#
# ### Try it: one step of the chain, at the paper's t
#
# Write one step of {eq}`forward-reparam`, $x_t = \sqrt{1-\beta_t}\,x_{t-1} + \sqrt{\beta_t}\,\varepsilon_t$,
# for the paper's step $t$ (an `int` from 1 to $T$), taking $\beta_t$ from the chapter's `betas`
# (DDPM's linear schedule, 0-based: mind the index). The last cell below compares your function
# with the library: one step of the chain is $q(x_1 \mid x_0)$ of a one-step process whose only
# $\beta$ is $\beta_t$, which `GaussianDiffusion.q_sample` draws. While your function still raises
# `NotImplementedError`, the cell checks the book's hidden solution instead.

# %%
def my_forward_step(x_prev: torch.Tensor, t: int, eps: torch.Tensor) -> torch.Tensor:
    """x_prev, eps: (B, D) float64; t: the paper's step, 1..T. Returns x_t, (B, D)."""
    raise NotImplementedError  # your code here

# %% tags=["hide-cell"]
def solution_forward_step(x_prev: torch.Tensor, t: int, eps: torch.Tensor) -> torch.Tensor:
    beta = betas[t - 1]  # β_t: index t - 1 holds the paper's step t
    return (1 - beta).sqrt() * x_prev + beta.sqrt() * eps

# %%
from diffusion_core import GaussianDiffusion, schedule_from_betas
from diffusion_core.exercises import check
from diffusion_core.notebook import generator


def library_step(x_prev: torch.Tensor, t: int, eps: torch.Tensor) -> torch.Tensor:
    one_step = GaussianDiffusion(schedule_from_betas(betas[t - 1:t]))  # β_1 of it is our β_t
    return one_step.q_sample(x_prev, torch.zeros(len(x_prev), dtype=torch.long), eps)


gen = generator(100)
cases = [(torch.randn(4, 3, generator=gen, dtype=f64), t, torch.randn(4, 3, generator=gen, dtype=f64))
         for t in (1, 2, 500, T)]  # (x_prev, t, eps)
passed = check(my_forward_step, library_step, cases, solution=solution_forward_step, name="forward_step")

# %% [markdown]
# ### More exercises
#
# 1. Show from {eq}`forward-var-recursion` that
#    $\operatorname{Var}(x_t) - 1 = \big(\operatorname{Var}(x_0) - 1\big)\prod_{s=1}^{t}(1-\beta_s)$.
#    Check it numerically for the digit pixels at $t = 100$.
# 2. With a constant $\beta$, after how many steps has the mean of the chain fallen to 1% of
#    its starting value? Evaluate for $\beta = 0.02$ and $\beta = 10^{-4}$.
# 3. Suppose the step keeps the shrink but uses noise variance $c\,\beta_t$ with $c \neq 1$.
#    Where does $\operatorname{Var}(x_t)$ go for long chains? Which value of $c$ do the
#    $\sqrt{\beta_t}$-as-variance and $\beta_t$-as-std mistakes correspond to, roughly, at
#    the end of the linear schedule?
# 4. Why not use $T = 10$ steps of $\beta = 0.6$, which also reach almost pure noise? (Think
#    about what the reverse process must learn for each step.)
#
# :::{admonition} Solution
# :class: dropdown
#
# 1. Subtract 1 from both sides of {eq}`forward-var-recursion`:
#    $\operatorname{Var}(x_t) - 1 = (1-\beta_t)\operatorname{Var}(x_{t-1}) + \beta_t - 1
#    = (1-\beta_t)\big(\operatorname{Var}(x_{t-1}) - 1\big)$, and unroll. In code,
#    `1 + (v0 - 1) * torch.prod(1 - betas[:100])` with `v0` the digit-pixel variance
#    equals `exact[1][1][100]`. The product $\prod_s (1-\beta_s)$ is $\bar\alpha_t$ of
#    {doc}`03_closed_form`.
# 2. The mean is multiplied by $(1-\beta)^{t/2}$, so $t = 2\ln(0.01)/\ln(1-\beta)$: about 456
#    steps for $\beta = 0.02$ and about 92 100 for $\beta = 10^{-4}$. This is why the linear
#    schedule needs its larger $\beta$ at the end.
# 3. The fixed point of $v \mapsto (1-\beta)v + c\beta$ is $v = c$: the variance goes to $c$.
#    $\sqrt{\beta_t}$ as variance is $c = 1/\sqrt{\beta_t} \approx 7.1$ at $\beta_T = 0.02$;
#    $\beta_t$ as std is $c = \beta_t = 0.02$. The chain's values above are close to these
#    (the schedule changes too fast for them to settle exactly).
# 4. The forward process itself would be fine, but each reverse step $x_t \to x_{t-1}$
#    would have to undo a large jump, and the true reverse conditional
#    $q(x_{t-1} \mid x_t)$ is then far from Gaussian (it must create structure out of
#    noise in a few bold moves). With small $\beta_t$ each reverse step is close to Gaussian,
#    which is what lets $p_\theta(x_{t-1} \mid x_t)$ be modelled as one (chapter 4, the
#    variational bound).
# :::
