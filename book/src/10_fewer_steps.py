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
# # Sampling faster: strided respacing and DDIM
#
# DDPM's sampler calls the network once per step, 1000 times per image. Sampling is where
# diffusion models pay for their quality ({doc}`01_introduction`), so the first thing
# anyone wants is fewer steps. This chapter takes the two standard answers: skip steps in
# the ancestral sampler by *respacing* the schedule {cite}`nichol2021improved`, and replace
# the sampler by DDIM's, which needs no retraining and can be deterministic
# {cite}`song2021denoising`. Both reuse the trained network as it is.
#
# **What you will learn**
#
# - How to run a model trained on $T$ steps on a subset of them: recomputed $\beta$'s that
#   keep $\bar\alpha$ at the kept steps.
# - DDIM's update, its noise scale $\sigma_t(\eta)$, and why $\eta = 1$ is DDPM while
#   $\eta = 0$ is a deterministic map from noise to image.
# - How sample quality of the digits model falls with the number of steps, for both
#   samplers, measured with a Fréchet distance and a classifier.
# - A real effect to know about: with few steps, both samplers shrink the spread of the
#   samples, shown exactly on Gaussian data.

# %%
import sys
if "google.colab" in sys.modules:  # Colab only: install the book's library
    %pip install -q "diffusion_core @ git+https://github.com/diffusion-core/diffusion-book"

# %%
import math
import time

import matplotlib.pyplot as plt
import numpy as np
import torch

from diffusion_core import (GaussianDiffusion, make_schedule, respace, sample_ddim, sample_ddpm,
                            sample_strided, space_timesteps, viz)
from diffusion_core.data import DIGITS_LEVELS, load_digits, to_levels, to_unit_range
from diffusion_core.metrics import class_probs, confidence_stats, fid, train_digit_classifier
from diffusion_core.notebook import glue, setup
from diffusion_core.pretrained import load_pretrained
from diffusion_core.sampling import ddim_sigma

g = setup(seed=0, threads=1)  # one thread: small tensors, and robust on a busy machine
f64 = torch.float64
T = 1000

# %% [markdown]
# ## Respacing: the same marginals on fewer steps
#
# The network was trained to predict the noise in $x_t \sim q(x_t \mid x_0) =
# \mathcal{N}(\sqrt{\bar\alpha_t}\,x_0, (1-\bar\alpha_t) I)$ for every $t$. Nothing in that
# involves the steps in between: $q(x_t \mid x_0)$ depends on $\bar\alpha_t$ alone
# ({doc}`03_closed_form`). So pick a subset of timesteps $k_1 < k_2 < \dots < k_K$ and
# define a new, shorter forward process with the same $\bar\alpha$ at those steps. Its
# $\beta$'s follow from $\bar\alpha_{k_i} = \bar\alpha_{k_{i-1}} (1 - \beta'_i)$:
#
# $$
# \beta'_i = 1 - \frac{\bar\alpha_{k_i}}{\bar\alpha_{k_{i-1}}}, \qquad \bar\alpha_{k_0} = 1 .
# $$ (respaced-beta)
#
# Every table of the short process (posterior mean coefficients, $\tilde\beta'$) is then
# computed from $\beta'$ as usual, and the network is called with the *original* timestep
# $k_i$, whose noise level it knows. In the library, `space_timesteps(T, K)` picks $K$
# evenly strided steps (always keeping the last one, so sampling starts from noise),
# `respace(schedule, kept)` builds the short schedule, and `GaussianDiffusion.respaced(K)`
# does both and records the map $i \mapsto k_i$ as `timestep_map`. The indices are 0-based
# (the paper's $t - 1$).

# %%
linear = make_schedule("linear", T)
kept = space_timesteps(T, 10)
short = respace(linear, kept)
print("kept steps (0-based):", kept.tolist())
print("beta' :", [round(b, 4) for b in short.betas.tolist()])
ratio = linear.alphas_cumprod[kept].numpy()
beta_by_hand = 1 - ratio / np.concatenate([[1.0], ratio[:-1]])
d10 = GaussianDiffusion(linear).respaced(10)
print("timestep_map:", d10.timestep_map.tolist())

# %%
assert torch.allclose(short.alphas_cumprod, linear.alphas_cumprod[kept], rtol=1e-12, atol=0)
assert np.allclose(short.betas.numpy(), beta_by_hand, rtol=1e-12)
assert torch.equal(d10.timestep_map, kept) and kept[-1] == T - 1
for sched in (linear, make_schedule("cosine", T)):  # other strides, and the cosine schedule
    for K in (20, 50, 250):
        dK = GaussianDiffusion(sched).respaced(K)
        assert torch.allclose(dK.schedule.alphas_cumprod, sched.alphas_cumprod[dK.timestep_map],
                              rtol=1e-12, atol=0)

# %%
fig, ax = plt.subplots(figsize=(6, 2.8))
ax.semilogy(np.arange(1, T + 1), linear.betas, label="T = 1000")
for K in (50, 10):
    dK = GaussianDiffusion(linear).respaced(K)
    ax.semilogy(dK.timestep_map + 1, dK.schedule.betas, "o-", ms=3, label=f"{K} steps")
ax.set_xlabel("t (original numbering)")
ax.set_ylabel(r"$\beta'$")
ax.legend()
plt.show()

# %% [markdown]
# With 10 steps each $\beta'$ covers a hundred original steps and the largest is close to
# 1. The marginals are right by construction; what is not right any more is the shape of
# the reverse steps: {doc}`04_variational_bound` showed that a Gaussian reverse step is a
# good model only when $\beta$ is small. We will see the price below.
#
# ## DDIM
#
# Song, Meng and Ermon {cite}`song2021denoising` noticed that the training objective only
# constrains the marginals $q(x_t \mid x_0)$, and built a family of forward processes, no
# longer Markov, that all share them. Reversing a member of the family gives the update
# (their eq. 12), written with the network's $\hat\epsilon = \epsilon_\theta(x_t, t)$ and the
# clean image it implies, $\hat x_0 = (x_t - \sqrt{1-\bar\alpha_t}\,\hat\epsilon)/\sqrt{\bar\alpha_t}$:
#
# $$
# x_{t-1} = \sqrt{\bar\alpha_{t-1}}\,\hat x_0
#         + \sqrt{1 - \bar\alpha_{t-1} - \sigma_t^2}\;\hat\epsilon + \sigma_t z,
# \qquad
# \sigma_t(\eta) = \eta \sqrt{\frac{1-\bar\alpha_{t-1}}{1-\bar\alpha_t}}
#                  \sqrt{1 - \frac{\bar\alpha_t}{\bar\alpha_{t-1}}},
# $$ (ddim)
#
# with $z \sim \mathcal{N}(0, I)$. Read it as: point at the predicted image, re-noise it to
# the level of step $t-1$, and split that noise between the direction the network found
# ($\hat\epsilon$) and fresh noise ($\sigma_t z$). If $\hat x_0$ and $\hat\epsilon$ were the true
# $x_0$ and $\epsilon$, then $x_{t-1}$ would have mean $\sqrt{\bar\alpha_{t-1}}\,x_0$ and variance
# $(1 - \bar\alpha_{t-1} - \sigma_t^2) + \sigma_t^2 = 1 - \bar\alpha_{t-1}$: exactly
# $q(x_{t-1} \mid x_0)$, whatever $\eta$. A quick Monte Carlo check:

# %%
abar_t, abar_prev, x0_val = 0.3, 0.5, 0.7
n = 400_000
eps = torch.randn(n, generator=g, dtype=f64)
z = torch.randn(n, generator=g, dtype=f64)
for eta in (0.0, 0.5, 1.0):
    sigma = eta * math.sqrt((1 - abar_prev) / (1 - abar_t) * (1 - abar_t / abar_prev))
    x_prev = math.sqrt(abar_prev) * x0_val + math.sqrt(1 - abar_prev - sigma ** 2) * eps + sigma * z
    print(f"eta = {eta}: mean {x_prev.mean().item():.4f} (want {math.sqrt(abar_prev) * x0_val:.4f}),"
          f" variance {x_prev.var().item():.4f} (want {1 - abar_prev:.4f})")
    assert abs(x_prev.mean().item() - math.sqrt(abar_prev) * x0_val) < 5 * math.sqrt(0.5 / n)
    assert abs(x_prev.var().item() / (1 - abar_prev) - 1) < 0.01

# %% [markdown]
# Two values of $\eta$ are special. With $\eta = 1$, $\sigma_t^2$ is DDPM's posterior variance
# $\tilde\beta_t$, and the update is exactly DDPM's ancestral step: we check the first on
# the full schedule with `sampling.ddim_sigma`, and the second by running both samplers
# with the same random numbers. With $\eta = 0$ there is no fresh noise at all: the sampler
# is a deterministic function of $x_T$.

# %%
diffusion_lin = GaussianDiffusion(linear)
t_all = torch.arange(1, T)  # index 0 has sigma = 0 (beta~_1 = 0); skip it
sigma = ddim_sigma(diffusion_lin, t_all, torch.zeros(T - 1, 1, dtype=f64), eta=1.0).flatten()
acp = linear.alphas_cumprod.numpy()
beta_tilde = (1 - acp[:-1]) / (1 - acp[1:]) * linear.betas.numpy()[1:]  # eq. 7, by hand
print(f"largest |sigma^2 / beta~ - 1| = {np.abs(sigma.numpy() ** 2 / beta_tilde - 1).max():.1e}")
assert np.allclose(sigma.numpy() ** 2, beta_tilde, rtol=1e-12)

# %%
MU, S = 0.3, 0.5  # Gaussian "data" N(MU, S^2), whose optimal denoiser is known exactly


def gaussian_eps_model(d: GaussianDiffusion):
    """E[eps | x_t] for x_0 ~ N(MU, S^2): x_t = a x_0 + b eps is jointly Gaussian with eps."""
    acp = d.schedule.alphas_cumprod

    def model(x, t):  # t: original timesteps, as a respaced process passes them
        a = acp[t].sqrt().to(x.dtype).view(-1, 1)
        b = (1 - acp[t]).sqrt().to(x.dtype).view(-1, 1)
        return b * (x - a * MU) / (a ** 2 * S ** 2 + b ** 2)
    return model


eps_star = gaussian_eps_model(diffusion_lin)
kw = dict(dtype=f64, clip_denoised=False, progress=False)
x_ddim1 = sample_ddim(diffusion_lin, eps_star, (1000, 1), 20, eta=1.0,
                      generator=torch.Generator().manual_seed(5), **kw)
x_ddpm = sample_strided(diffusion_lin, eps_star, (1000, 1), 20,
                        generator=torch.Generator().manual_seed(5), **kw)
print(f"DDIM eta=1 vs strided DDPM, same random numbers: largest difference "
      f"{(x_ddim1 - x_ddpm).abs().max().item():.1e}")
assert torch.allclose(x_ddim1, x_ddpm, rtol=0, atol=1e-12)

# %% [markdown]
# ## Fewer steps shrink the spread
#
# The Gaussian data is also where we can see, exactly, what skipping steps costs. The
# denoiser above is the *optimal* one, so any error below comes from the sampler alone.
# We draw 20,000 samples from $\mathcal{N}(0.3, 0.5^2)$ with each sampler and each number of
# steps, and compare the standard deviation of the samples with the true 0.5:
#
# - ancestral (strided) sampling with $\sigma_t^2 = \tilde\beta'_t$, DDPM's choice for the bound;
# - ancestral sampling with $\sigma_t^2 = \beta'_t$, DDPM's other choice;
# - DDIM with $\eta = 0$;
# - ancestral sampling with the *exact* variance of the reverse step. For Gaussian data the
#   true reverse conditional $q(x_{t-1} \mid x_t)$ is Gaussian, with variance
#   $\tilde\beta_t + c_t^2\,\mathrm{Var}[x_0 \mid x_t]$, where $c_t$ is the coefficient of $x_0$ in
#   the posterior mean: the fixed $\tilde\beta_t$ forgets that $x_0$ is uncertain. We hand it
#   to the sampler as a "learned" variance ({doc}`09_improved_ddpm`), a value $v$ between
#   $\tilde\beta'_t$ and $\beta'_t$.

# %%
def exact_variance_model(d: GaussianDiffusion):
    """eps* and the v that makes sigma_t^2 the true reverse variance, for the respaced d."""
    s = d.schedule
    index = torch.full((T,), -1, dtype=torch.long)
    index[d.timestep_map] = torch.arange(d.T)  # original timestep -> step of d

    def model(x, t):
        i = index[t]
        acp_i = s.alphas_cumprod[i].view(-1, 1)
        var_x0 = S ** 2 * (1 - acp_i) / (acp_i * S ** 2 + 1 - acp_i)  # Var[x_0 | x_t]
        var = s.posterior_variance[i].view(-1, 1) + s.posterior_mean_coef1[i].view(-1, 1) ** 2 * var_x0
        lo, hi = s.posterior_log_variance_clipped[i].view(-1, 1), s.betas[i].log().view(-1, 1)
        v = (var.log() - lo) / (hi - lo)  # eq. 15 of improved DDPM, solved for v
        return torch.cat([eps_star(x, t), (2 * v - 1).expand_as(x)], dim=1)
    return model


steps_gauss = [5, 10, 20, 50, 100]
n_gauss = 20_000
d_large = GaussianDiffusion(linear, model_var="fixed_large")
d_learned = GaussianDiffusion(linear, model_var="learned_range")
spread = {name: [] for name in ("ancestral, beta~", "ancestral, beta", "DDIM, eta = 0",
                                "ancestral, exact variance")}
for K in steps_gauss:
    x_T_gauss = torch.randn(n_gauss, 1, generator=g, dtype=f64)  # shared by the samplers
    kw_K = dict(noise=x_T_gauss, generator=torch.Generator().manual_seed(K), **kw)
    runs = [sample_strided(diffusion_lin, eps_star, (n_gauss, 1), K, **kw_K),
            sample_strided(d_large, eps_star, (n_gauss, 1), K, **kw_K),
            sample_ddim(diffusion_lin, eps_star, (n_gauss, 1), K, **kw_K),
            sample_strided(d_learned, exact_variance_model(d_learned.respaced(K)), (n_gauss, 1),
                           K, **kw_K)]
    for name, x in zip(spread, runs, strict=True):
        spread[name].append(x.std().item() / S)
glue("shrink_ancestral_10", spread["ancestral, beta~"][1])
glue("shrink_ddim_10", spread["DDIM, eta = 0"][1])
print("steps:" + "".join(f"{K:>8}" for K in steps_gauss))
for name, values in spread.items():
    print(f"{name:>26}: " + " ".join(f"{v:7.3f}" for v in values))

# %%
fig, ax = plt.subplots(figsize=(6, 3))
for name, values in spread.items():
    ax.semilogx(steps_gauss, values, "o-", label=name)
ax.axhline(1.0, color="k", lw=0.8)
ax.set_xlabel("number of sampling steps")
ax.set_ylabel("sample std / true std")
ax.legend(fontsize=8)
plt.show()

# %%
se = 1 / math.sqrt(2 * n_gauss)  # standard error of a std ratio
assert spread["ancestral, beta~"][1] < 1 - 20 * se and spread["DDIM, eta = 0"][1] < 1 - 20 * se
assert spread["ancestral, beta"][1] > 1 + 20 * se  # the large variance overshoots instead
assert all(abs(v - 1) < 5 * se for v in spread["ancestral, exact variance"])
assert spread["ancestral, beta~"][-1] > spread["ancestral, beta~"][1]  # more steps, less shrinkage

# %% [markdown]
# With 10 steps the samples from the ancestral sampler with $\tilde\beta_t$ have
# {glue:text}`shrink_ancestral_10:.2f` of the true spread, and DDIM's
# {glue:text}`shrink_ddim_10:.2f`, although the denoiser is perfect; $\beta_t$ overshoots
# instead. Both errors vanish as the steps get smaller (the library's tests check that
# every sampler reproduces the data with all 1000 steps). The exact variance removes the
# error at every step count: for the ancestral sampler the whole problem is the reverse
# variance, which is why improved DDPM's learned variances pay off most when sampling with
# few steps. DDIM's shrinkage has another cause: with $\eta = 0$ it is a first-order
# discretisation of a differential equation, and big steps cut its corners.
#
# ## The digits model, step by step
#
# Now the trained digits model (`digits_simple`, trained on the cosine schedule; respacing
# works the same on any schedule). We draw one batch of starting noise
# $x_T$ and run every sampler from it: DDPM's 1000-step ancestral sampler, the strided
# ancestral sampler, and DDIM with $\eta = 0$, at 100, 50, 20 and 10 steps. Sample quality
# is measured two ways with a small classifier trained on the real training digits
# (`metrics.train_digit_classifier`, about 98% held-out accuracy):
#
# - a **Fréchet distance** between the classifier's 64 penultimate features of the samples
#   and of the 1497 training digits: Gaussians fitted to both, then
#   $\|\mu_a - \mu_b\|^2 + \mathrm{Tr}(\Sigma_a + \Sigma_b - 2(\Sigma_a\Sigma_b)^{1/2})$. This is
#   FID with a digit classifier in place of the Inception network (`metrics.fid`), so its
#   values are comparable only within this book;
# - the **share of confident samples**: those the classifier assigns to one digit with
#   probability at least 0.9.
#
# Each point uses only 32 samples, which is what fits in this chapter's time budget on two
# CPU cores: the 1000-step run alone is 32,000 evaluations of the network, about half a
# minute. A Fréchet distance estimated from 32 samples is strongly biased upwards, so we
# also compute it for 32 *real* held-out digits, a floor that no sampler can be expected
# to beat, and read the numbers as a ranking rather than as absolute values.

# %%
model, diffusion, config = load_pretrained("digits_simple", progress=False)
classifier = train_digit_classifier()
x_train, _ = load_digits("train")
x_test, _ = load_digits("test")
N = 32
x_T = torch.randn(N, 1, 8, 8, generator=torch.Generator().manual_seed(1))
samples, seconds = {}, {}


def run(name: str, steps: int, sampler, **options) -> None:
    """Sample N digits from x_T with `sampler`; keep them on the 17 levels, and the time."""
    start = time.perf_counter()
    x = sampler(diffusion, model, x_T.shape, noise=x_T, progress=False,
                generator=torch.Generator().manual_seed(2), **options)
    seconds[name, steps] = time.perf_counter() - start
    samples[name, steps] = to_unit_range(to_levels(x, DIGITS_LEVELS), DIGITS_LEVELS)


run("ancestral", 1000, sample_ddpm)
step_counts = [100, 50, 20, 10]
for K in step_counts:
    run("strided", K, sample_strided, num_steps=K)
    run("DDIM", K, sample_ddim, num_steps=K, eta=0.0)

# %% tags=["nbval-ignore-output"]
glue("ms_per_sample_1000", 1000 * seconds["ancestral", 1000] / N)
glue("ms_per_sample_10", 1000 * seconds["DDIM", 10] / N)
print(f"{'sampler':>10} {'steps':>6} | {'seconds':>7} {'ms per sample':>14}")
for (name, K), sec in seconds.items():
    print(f"{name:>10} {K:>6} | {sec:7.2f} {1000 * sec / N:14.2f}")

# %%
quality = {}
for key, x in samples.items():
    stats = confidence_stats(class_probs(classifier, x))
    quality[key] = (fid(x, x_train, classifier), stats["frac_confident"], stats["class_entropy"])
floor = fid(x_test[:N], x_train, classifier)
real = confidence_stats(class_probs(classifier, x_test[:N]))
print(f"{'sampler':>10} {'steps':>6} | {'Frechet':>8} {'confident':>9} {'class entropy':>13}")
for (name, K), (fd, conf, ent) in quality.items():
    print(f"{name:>10} {K:>6} | {fd:8.1f} {conf:9.2f} {ent:13.2f}")
print(f"{'real':>10} {'-':>6} | {floor:8.1f} {real['frac_confident']:9.2f} "
      f"{real['class_entropy']:13.2f}")
glue("fd_1000", quality["ancestral", 1000][0])
glue("fd_floor", floor)
for K in step_counts:
    glue(f"fd_strided_{K}", quality["strided", K][0])
    glue(f"fd_ddim_{K}", quality["DDIM", K][0])

# %%
fig, axes = plt.subplots(1, 2, figsize=(8, 3))
for ax, col, label in ((axes[0], 0, "Fréchet distance (lower is better)"),
                       (axes[1], 1, "share of confident samples")):
    for name, marker in (("strided", "o-"), ("DDIM", "s-")):
        ax.semilogx(step_counts, [quality[name, K][col] for K in step_counts], marker, label=name)
    ax.semilogx([1000], [quality["ancestral", 1000][col]], "k*", ms=10, label="ancestral, 1000")
    ax.axhline(floor if col == 0 else real["frac_confident"], color="0.5", ls="--",
               label="real digits")
    ax.set_xlabel("number of steps")
    ax.set_title(label, fontsize=10)
axes[0].legend(fontsize=8)
plt.tight_layout()
plt.show()

# %%
fig, axes = plt.subplots(1, 3, figsize=(8, 3))
for ax, key in zip(axes, (("ancestral", 1000), ("strided", 10), ("DDIM", 10)), strict=True):
    viz.show_images(samples[key][:25], nrow=5, ax=ax, title=f"{key[0]}, {key[1]} steps")
plt.tight_layout()
plt.show()

# %%
assert quality["strided", 10][0] > quality["strided", 100][0]  # fewer steps, worse
assert quality["DDIM", 10][0] < quality["strided", 10][0]  # DDIM degrades more gracefully
assert all(q[0] > 0 for q in quality.values())

# %% [markdown]
# QUALITY_PARAGRAPH
#
# ## One noise, one image
#
# Because DDIM with $\eta = 0$ is deterministic, $x_T$ alone fixes the image. We check it by
# sampling twice with different random generators, and then watch two DDIM runs from the
# same $x_T$, with 10 and with 50 steps. In the scrubber each frame shows $x_t$ for four
# samples: the 10-step run on top, the 50-step run below, at (nearly) the same $t$.

# %%
x_T4 = x_T[:4]
ddim_kw = dict(noise=x_T4, progress=False)
a = sample_ddim(diffusion, model, x_T4.shape, 10, generator=torch.Generator().manual_seed(10), **ddim_kw)
b = sample_ddim(diffusion, model, x_T4.shape, 10, generator=torch.Generator().manual_seed(11), **ddim_kw)
c = sample_ddim(diffusion, model, x_T4.shape, 10, eta=1.0,
                generator=torch.Generator().manual_seed(11), **ddim_kw)
print(f"eta = 0, two generators: identical = {torch.equal(a, b)}; "
      f"eta = 1: largest difference {(a - c).abs().max().item():.2f}")
assert torch.equal(a, b) and not torch.allclose(a, c)

# %%
_, traj10 = sample_ddim(diffusion, model, x_T4.shape, 10, num_frames=10, **ddim_kw)
_, traj50 = sample_ddim(diffusion, model, x_T4.shape, 50, num_frames=50, **ddim_kw)
frames, titles = [], []
for k, x10 in zip(traj10.timesteps, traj10.x_t, strict=True):
    j = int(np.argmin([abs(t - k) for t in traj50.timesteps]))  # the 50-step frame nearest t
    grid = viz.image_grid(torch.cat([x10, traj50.x_t[j]]), nrow=4)  # (H, W, 1) in [0, 1]
    frames.append(grid.transpose(2, 0, 1))
    titles.append(f"t = {k + 1}")
pngs = viz.frames_to_png(frames, titles=titles, size_px=160, vmin=0.0, vmax=1.0)
viz.scrubber(pngs, [k + 1 for k in traj10.timesteps])

# %% [markdown]
# Both runs start from the same noise and arrive at the same digits; the 10-step run makes
# bigger jumps and gets coarser strokes. The sweep above gives a number for this
# consistency: the share of the 32 samples that the classifier puts in the same class as
# the 100-step run from the same $x_T$.

# %%
def labels_of(x):
    return class_probs(classifier, x).argmax(dim=1)


agreement = {}
for name in ("DDIM", "strided"):
    ref = labels_of(samples[name, 100])
    agreement[name] = [(labels_of(samples[name, K]) == ref).double().mean().item()
                       for K in step_counts[1:]]
    glue(f"agree_{name.lower()}_10", 100 * agreement[name][-1])
    print(f"{name:>8}: same class as its 100-step run at "
          + ", ".join(f"{K} steps {a:.0%}" for K, a in zip(step_counts[1:], agreement[name],
                                                            strict=True)))

# %% [markdown]
# With $\eta = 0$ the starting noise decides the digit: {glue:text}`agree_ddim_10:.0f`% of
# the 10-step DDIM samples are the same digit as their 100-step counterparts, against
# {glue:text}`agree_strided_10:.0f`% for the ancestral sampler, whose fresh noise at every
# step leads elsewhere. This is what makes DDIM's $x_T$ a useful latent code: interpolating
# two noises interpolates the images.
#
# ## Summary
#
# - A model trained on $T$ steps runs on any subset of them: keep $\bar\alpha$ at the kept
#   steps, recompute $\beta'$ from {eq}`respaced-beta`, and call the network with the
#   original timesteps.
# - DDIM's update {eq}`ddim` keeps every marginal $q(x_t \mid x_0)$ for any $\eta$;
#   $\eta = 1$ is DDPM's ancestral sampler, $\eta = 0$ a deterministic map from $x_T$.
# - On the digits model, quality falls as the steps get fewer, and DDIM falls more slowly
#   than the strided ancestral sampler.
# - With few steps both samplers shrink the spread of the samples, even with a perfect
#   denoiser; for the ancestral sampler the cure is the right reverse variance.
#
# ## Exercises
#
# 1. Show that with $\eta = 1$ the mean of the DDIM update {eq}`ddim`,
#    $\sqrt{\bar\alpha_{t-1}}\,\hat x_0 + \sqrt{1-\bar\alpha_{t-1}-\tilde\beta_t}\,\hat\epsilon$, equals
#    DDPM's posterior mean $\tilde\mu_t(\hat x_0, x_t)$.
# 2. Run the Gaussian experiment with DDIM at $\eta = 0.5$. Where does its spread fall
#    between $\eta = 0$ and $\eta = 1$?
# 3. `space_timesteps` strides evenly. DDIM's paper also tries a quadratic spacing,
#    $k_i \propto i^2$, which puts more steps at small $t$. Build it with `respace` and
#    compare the Fréchet distance at 10 steps.
#
# :::{admonition} Solution to 1
# :class: dropdown
# Substitute $\hat\epsilon = (x_t - \sqrt{\bar\alpha_t}\,\hat x_0)/\sqrt{1-\bar\alpha_t}$. Since
# $1 - \bar\alpha_{t-1} - \tilde\beta_t = (1-\bar\alpha_{t-1})\big(1 - \frac{\beta_t}{1-\bar\alpha_t}\big)
# = \frac{\alpha_t (1-\bar\alpha_{t-1})^2}{1-\bar\alpha_t}$, the coefficient of $x_t$ is
# $\sqrt{\alpha_t}(1-\bar\alpha_{t-1})/(1-\bar\alpha_t)$, DDPM's, and the coefficient of
# $\hat x_0$ becomes $\sqrt{\bar\alpha_{t-1}} - \sqrt{\alpha_t}(1-\bar\alpha_{t-1})\sqrt{\bar\alpha_t}/(1-\bar\alpha_t)
# = \sqrt{\bar\alpha_{t-1}}\,\beta_t/(1-\bar\alpha_t)$, also DDPM's.
# :::
