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
# # What came after: cosine schedule, learned variances, importance sampling
#
# DDPM left three things on the table. Its linear schedule destroys small images early and
# then wastes steps on pure noise; its reverse variances are fixed by hand; and its
# likelihood, the bound of {doc}`04_variational_bound`, is hard to optimise directly.
# Improved DDPM {cite}`nichol2021improved` addressed all three with small changes, which
# this chapter takes one at a time, each on the library's code and on a trained digits
# model.
#
# **What you will learn**
#
# - The cosine schedule: its definition, checked against the library, and how much more
#   slowly it destroys information than the linear one.
# - Learned variances $\Sigma_\theta = \exp(v \log\beta_t + (1-v)\log\tilde\beta_t)$, and why
#   they only matter at small $t$.
# - The hybrid loss $L_\text{simple} + \lambda L_\text{vlb}$ with a stop-gradient on the mean,
#   demonstrated with autograd.
# - Why the one-sample estimate of the bound is so noisy, and how importance sampling of
#   timesteps reduces its variance, computed exactly from a trained model.

# %%
import sys
if "google.colab" in sys.modules:  # Colab only: install the book's library
    %pip install -q "diffusion_core @ git+https://github.com/diffusion-core/diffusion-book"

# %%
import math

import matplotlib.pyplot as plt
import numpy as np
import torch
from torch import nn

from diffusion_core import GaussianDiffusion, make_schedule, sample_strided, viz
from diffusion_core.data import DIGITS_LEVELS, load_digits
from diffusion_core.likelihoods import difference_to_table, load_table, row_name
from diffusion_core.metrics import standard_error as se
from diffusion_core.notebook import generator, glue, setup
from diffusion_core.pretrained import load_pretrained
from diffusion_core.training import ImportanceSampler, UniformSampler

g = setup(seed=0, threads=1)  # one thread: small tensors, and robust on a busy machine
f64 = torch.float64
T = 1000

# %% [markdown]
# ## The cosine schedule
#
# DDPM's $\beta_t$ rise linearly from $10^{-4}$ to $0.02$. Nichol and Dhariwal noticed that
# with this schedule the end of the forward chain is almost pure noise, especially for
# small images: starting the reverse process as late as $t = 0.8\,T$ instead of $T$ barely
# changed their sample quality, so a fifth of the steps was doing nothing useful. They
# define a schedule through $\bar\alpha_t$ instead of $\beta_t$ (their eq. 17):
#
# $$
# \bar\alpha_t = \frac{f(t)}{f(0)}, \qquad
# f(t) = \cos^2\!\Big(\frac{t/T + s}{1 + s} \cdot \frac{\pi}{2}\Big), \qquad
# \beta_t = \min\Big(1 - \frac{\bar\alpha_t}{\bar\alpha_{t-1}},\ 0.999\Big),
# $$ (cosine)
#
# with a small offset $s = 0.008$ that keeps $\beta_1$ from being too small to learn from.
# Near the middle, $\bar\alpha_t$ falls linearly; at both ends it changes slowly. The cap
# on $\beta_t$ matters only at $t = T$, where $f(T) = 0$ would make $\beta_T = 1$. We check
# the library's `make_schedule("cosine", T)` against the formula with numpy (the library's
# index $i$ is the paper's $t = i + 1$).

# %%
linear, cosine = make_schedule("linear", T), make_schedule("cosine", T)
s_offset = 0.008
t_paper = np.arange(0, T + 1)
f = np.cos((t_paper / T + s_offset) / (1 + s_offset) * np.pi / 2) ** 2
abar_formula = f[1:] / f[0]  # t = 1..T
rel = np.abs(cosine.alphas_cumprod.numpy()[:-1] / abar_formula[:-1] - 1).max()
print(f"t = 1..T-1: largest relative difference from eq. (cosine): {rel:.1e}")
print(f"t = T: formula {abar_formula[-1]:.1e}, library {cosine.alphas_cumprod[-1].item():.3e} "
      f"(beta_T capped at {cosine.betas[-1].item()})")

# %%
assert rel < 1e-12
expected_last = cosine.alphas_cumprod[-2].item() * (1 - 0.999)  # the capped last step
assert math.isclose(cosine.alphas_cumprod[-1].item(), expected_last, rel_tol=1e-12)
assert cosine.betas[:-1].max() < 0.999

# %% [markdown]
# How fast is information destroyed? The signal-to-noise ratio of $q(x_t \mid x_0)$,
# $\mathrm{SNR}(t) = \bar\alpha_t / (1 - \bar\alpha_t)$ (`Schedule.snr`), says how much of
# $x_0$ is left in $x_t$. Below $\mathrm{SNR} = 10^{-2}$ the signal's standard deviation is
# a tenth of the noise's, and an 8×8 digit is gone.

# %%
snr_floor = 1e-2
share = {name: (s.snr < snr_floor).double().mean().item()
         for name, s in (("linear", linear), ("cosine", cosine))}
glue("share_low_snr_linear", 100 * share["linear"])
glue("share_low_snr_cosine", 100 * share["cosine"])
for name, value in share.items():
    print(f"{name:>6}: {value:.1%} of the steps have SNR < {snr_floor}")

# %%
assert share["linear"] == np.mean(linear.alphas_cumprod.numpy() < snr_floor / (1 + snr_floor))
assert share["cosine"] < share["linear"] / 3
first_low = {name: int(np.argmax(s.snr.numpy() < snr_floor)) + 1
             for name, s in (("linear", linear), ("cosine", cosine))}  # paper's t
glue("first_low_linear", first_low["linear"])
glue("first_low_cosine", first_low["cosine"])
print("first t with SNR < 0.01:", first_low)

# %%
x_demo = load_digits("test")[0][:1].to(f64)  # one held-out digit, (1, 1, 8, 8)
noise = torch.randn(x_demo.shape, generator=g, dtype=f64)
show_t = [50, 150, 300, 500, 700, 900]  # paper's t
fig = plt.figure(figsize=(8, 3))
ax = fig.add_subplot(1, 2, 1)
for name, s in (("linear", linear), ("cosine", cosine)):
    ax.plot(np.arange(1, T + 1), s.alphas_cumprod, label=name)
ax.set_xlabel("t")
ax.set_ylabel(r"$\bar\alpha_t$")
ax.legend()
for row, (name, s) in enumerate((("linear", linear), ("cosine", cosine))):
    d = GaussianDiffusion(s, num_levels=DIGITS_LEVELS)
    x_t = torch.cat([d.q_sample(x_demo, torch.tensor([t - 1]), noise) for t in show_t])
    ax = fig.add_subplot(2, 2, 2 + 2 * row)
    viz.show_images(x_t, nrow=len(show_t), ax=ax)
    ax.set_title(f"{name}: t = " + ", ".join(map(str, show_t)), fontsize=8)
plt.tight_layout()
plt.show()

# %% [markdown]
# With the linear schedule {glue:text}`share_low_snr_linear:.0f`% of the steps have
# $\mathrm{SNR} < 10^{-2}$, against {glue:text}`share_low_snr_cosine:.0f`% with the cosine
# one: the linear chain is nearly pure noise from $t =$ {glue:text}`first_low_linear` on,
# the cosine chain only from $t =$ {glue:text}`first_low_cosine`, and at $t = 500$ the
# digit is much fainter in the linear chain than in the cosine one. The cosine schedule spreads the work of destroying (and so of rebuilding) the image
# over all the steps.
#
# ## Learned variances
#
# DDPM fixed the reverse variance to $\sigma_t^2 = \beta_t$ or $\sigma_t^2 = \tilde\beta_t$
# and found similar samples with either. These are the two extremes: $\tilde\beta_t$ is the
# right variance if the data were a single point, $\beta_t$ if the data were
# $\mathcal{N}(0, I)$ {cite}`ho2020denoising`. Improved DDPM lets the network choose, per
# pixel, a point between them on a log scale (their eq. 15):
#
# $$
# \Sigma_\theta(x_t, t) = \exp\big(v \log\beta_t + (1 - v)\log\tilde\beta_t\big),
# $$ (learned-var)
#
# where $v$ is an extra output channel of the network. The library's network outputs a
# raw value $v_\text{raw}$ and uses $v = (v_\text{raw} + 1)/2$, so that $v_\text{raw} = \pm 1$
# means $\beta_t$ or $\tilde\beta_t$ (`GaussianDiffusion(..., model_var="learned_range")`).
# How different are the two extremes?

# %%
fig, axes = plt.subplots(1, 2, figsize=(8, 3))
axes[0].loglog(np.arange(2, T + 1), cosine.betas[1:], label=r"$\beta_t$")
axes[0].loglog(np.arange(2, T + 1), cosine.posterior_variance[1:], label=r"$\tilde\beta_t$")
axes[0].set_xlabel("t")
axes[0].legend()
axes[0].set_title("cosine schedule, t = 2..T")
ratio = cosine.posterior_variance[1:] / cosine.betas[1:]
axes[1].semilogx(np.arange(2, T + 1), ratio)
axes[1].set_xlabel("t")
axes[1].set_title(r"$\tilde\beta_t / \beta_t$")
plt.tight_layout()
plt.show()
glue("ratio_t2", ratio[0].item())
glue("ratio_t100", ratio[98].item())
print(f"beta~/beta at t = 2: {ratio[0].item():.3f}, t = 10: {ratio[8].item():.3f}, "
      f"t = 100: {ratio[98].item():.4f}")

# %% [markdown]
# The ratio $\tilde\beta_t/\beta_t = (1-\bar\alpha_{t-1})/(1-\bar\alpha_t)$ is
# {glue:text}`ratio_t2:.2f` at $t = 2$ but {glue:text}`ratio_t100:.3f` by $t = 100$: the
# two choices differ only in the first few dozen steps. That is exactly where the bound
# has most of its mass ({doc}`04_variational_bound`), so the variance matters for the
# likelihood even though it hardly matters for samples. We check the library's
# `reverse_log_variance` against {eq}`learned-var` for random network outputs.

# %%
d_learned = GaussianDiffusion(cosine, model_var="learned_range", num_levels=DIGITS_LEVELS)
t = torch.randint(1, T, (64,), generator=g)  # indices 1..T-1, where beta~ > 0
v_raw = torch.rand(64, 1, 8, 8, generator=g, dtype=f64) * 2 - 1
log_var = d_learned.reverse_log_variance(v_raw, t, v_raw)
v = (v_raw.numpy() + 1) / 2
b = cosine.betas.numpy()[t.numpy()].reshape(-1, 1, 1, 1)
b_tilde = cosine.posterior_variance.numpy()[t.numpy()].reshape(-1, 1, 1, 1)
by_formula = np.exp(v * np.log(b) + (1 - v) * np.log(b_tilde))
print(f"largest relative difference: {np.abs(log_var.exp().numpy() / by_formula - 1).max():.1e}")
assert np.allclose(log_var.exp().numpy(), by_formula, rtol=1e-12)

# %% [markdown]
# ## The hybrid loss
#
# $L_\text{simple} = \mathbb{E}\,\|\epsilon - \hat\epsilon\|^2$, DDPM's unweighted loss, does not
# involve $\Sigma_\theta$ at all, so it cannot train $v$. The bound $L_\text{vlb}$ does: each $L_{t-1}$ is a KL divergence
# that depends on the variance ({doc}`05_gaussian_kl`). But the bound is a poor objective
# for the mean (its gradients are noisy, more on that below), and $L_\text{simple}$ trains
# the mean well. Improved DDPM combines them (their eq. 16):
#
# $$
# L_\text{hybrid} = L_\text{simple} + \lambda\, L_\text{vlb}, \qquad \lambda = 0.001,
# $$ (hybrid)
#
# with a **stop-gradient on the mean** inside $L_\text{vlb}$: the bound trains only the
# variance, and the mean learns from $L_\text{simple}$ alone. In the library,
# `training_losses(model, x0, t, loss_type="hybrid")` estimates $L_\text{vlb}$ at the sampled
# timestep as $T \cdot L_t$ (in bits/dim, so $\lambda T = 1$ at $T = 1000$) and feeds the bound
# a detached copy of $\hat\epsilon$.
#
# Autograd lets us check the stop-gradient directly. Take a tiny linear "network" on
# four-pixel data: eight outputs, the first four read as $\hat\epsilon$ and the last four as
# $v_\text{raw}$. The gradient of $L_\text{hybrid}$ with respect to the $\hat\epsilon$ rows of
# the weights must equal the gradient of the plain mean squared error, computed here by
# hand, and the $v$ rows must get a gradient from the bound alone.

# %%
class TinyLinear(nn.Module):
    """(B, 4) -> (B, 8): eps-hat (B, 4) and v_raw (B, 4), ignoring t (enough for a check)."""

    def __init__(self):
        super().__init__()
        self.net = nn.Linear(4, 8, dtype=f64)

    def forward(self, x, t):
        return self.net(x)


tiny = TinyLinear()
x0_tiny = torch.randint(0, DIGITS_LEVELS, (32, 4), generator=g).to(f64) / 8 - 1  # on the grid
t_tiny = torch.randint(0, T, (32,), generator=g)
eps_tiny = torch.randn(32, 4, generator=g, dtype=f64)

tiny.zero_grad()
d_learned.training_losses(tiny, x0_tiny, t_tiny, eps_tiny, loss_type="hybrid")["loss"].mean().backward()
grad_hybrid = tiny.net.weight.grad.clone()  # (8, 4)

# The same MSE by hand: x_t from eq. 4, then the squared error of the first four outputs.
abar = cosine.alphas_cumprod[t_tiny].view(-1, 1)
x_t_tiny = abar.sqrt() * x0_tiny + (1 - abar).sqrt() * eps_tiny
tiny.zero_grad()
((tiny(x_t_tiny, t_tiny)[:, :4] - eps_tiny) ** 2).mean(1).mean().backward()
grad_mse = tiny.net.weight.grad.clone()

# Without the stop-gradient: the bound term with gradients through the mean too.
tiny.zero_grad()
eps_live, v_live = d_learned.model_output(tiny, x_t_tiny, t_tiny)
vb_live = d_learned.vb_terms_bpd(x0_tiny, x_t_tiny, t_tiny, eps_live, v_live)["output"]
(((tiny(x_t_tiny, t_tiny)[:, :4] - eps_tiny) ** 2).mean(1) + 1e-3 * T * vb_live).mean().backward()
grad_no_stop = tiny.net.weight.grad.clone()

print(f"eps rows: |hybrid - MSE| = {(grad_hybrid[:4] - grad_mse[:4]).abs().max().item():.1e}, "
      f"|MSE| = {grad_mse[:4].abs().max().item():.3f}")
print(f"v rows:   MSE gives {grad_mse[4:].abs().max().item():.1f}, "
      f"hybrid gives {grad_hybrid[4:].abs().max().item():.4f}")
extra = (grad_no_stop[:4] - grad_mse[:4]).norm() / grad_mse[:4].norm()
print(f"without the stop-gradient the eps rows change by {100 * extra.item():.1g}% of their norm")

# %%
assert torch.allclose(grad_hybrid[:4], grad_mse[:4], rtol=1e-12, atol=1e-15)
assert bool((grad_mse[4:] == 0).all()) and grad_hybrid[4:].abs().max() > 1e-6
assert torch.allclose(grad_hybrid[4:], grad_no_stop[4:], rtol=1e-10)  # v is trained the same
assert extra > 1e-6  # far above float64 rounding: the mean's gradient really changes
glue("no_stop_change", 100 * extra.item(), digits=1)

# %% [markdown]
# :::{admonition} A common mistake
# :class: warning
# Adding $\lambda L_\text{vlb}$ to $L_\text{simple}$ without the stop-gradient. It still
# trains, but then the bound's gradients, noisy and dominated by the first few timesteps,
# pull on the mean as well: in the check above the gradient of the $\hat\epsilon$ weights
# changes by {glue:text}`no_stop_change:.1g`% of its norm, even with $\lambda = 0.001$. With
# the stop-gradient that change is zero to rounding, and $v$ gets the very same gradient
# either way.
# :::

# %% [markdown]
# ## The trained hybrid model
#
# `load_pretrained("digits_hybrid")` is the digits UNet trained with learned variances and
# the hybrid loss. The book's default model `digits_simple` has the same network, data,
# cosine schedule and training budget, but a fixed $\sigma_t^2 = \tilde\beta_t$ and
# $L_\text{simple}$, so comparing the two isolates the changes of this section. What did
# the hybrid model learn for $v$?
# We feed it held-out digits noised to {glue:text}`n_t_grid` values of $t$ spread
# logarithmically over $1..T$, all in one batch, and average $v$ over images and pixels.

# %%
hybrid, d_hybrid, _ = load_pretrained("digits_hybrid", progress=False)
simple, d_simple, _ = load_pretrained("digits_simple", progress=False)
digits, labels = load_digits("test")
x_few = digits[:16]  # (16, 1, 8, 8)
t_grid = torch.unique(torch.logspace(0, math.log10(T - 1), 50).round().long())  # indices
t_grid = torch.unique(torch.cat([t_grid, torch.tensor([99])]))  # include the paper's t = 100
glue("n_t_grid", len(t_grid))
x0_rep = x_few.repeat(len(t_grid), 1, 1, 1)  # (n_t * 16, 1, 8, 8)
t_rep = t_grid.repeat_interleave(len(x_few))
x_t = d_hybrid.q_sample(x0_rep, t_rep, torch.randn(x0_rep.shape, generator=g))
with torch.no_grad():
    _, v_out = d_hybrid.model_output(hybrid, x_t, t_rep)
v_mean = ((v_out + 1) / 2).view(len(t_grid), -1).mean(1)  # (n_t,): average v per t
log_var = d_hybrid.reverse_log_variance(v_out, t_rep, x_t).view(len(t_grid), -1).mean(1)

fig, axes = plt.subplots(1, 2, figsize=(8, 3))
axes[0].semilogx(t_grid + 1, v_mean)
axes[0].set_xlabel("t")
axes[0].set_title(r"learned $v$ (0: $\tilde\beta_t$, 1: $\beta_t$)")
s = d_hybrid.schedule
axes[1].loglog(t_grid + 1, s.betas[t_grid], label=r"$\beta_t$")
axes[1].loglog(t_grid + 1, s.posterior_log_variance_clipped[t_grid].exp(), label=r"$\tilde\beta_t$")
axes[1].loglog(t_grid + 1, log_var.exp(), "k--", label="learned")
axes[1].set_xlabel("t")
axes[1].legend()
plt.tight_layout()
plt.show()

# %%
i100 = int(torch.nonzero(t_grid == 99))  # the paper's t = 100
v_img = ((v_out + 1) / 2).view(len(t_grid), len(x_few), -1).mean(2)  # (n_t, 16): per image
v_first, v_100 = v_img[0], v_img[i100]  # (16,) each: t = 2 and t = 100, the same 16 digits
v_drop = v_first - v_100


glue("v_first", v_first.mean().item(), digits=2)
glue("v_t100", v_100.mean().item(), digits=2)
print("t:     ", [int(t) + 1 for t in t_grid[::7]])
print("mean v:", [round(v, 2) for v in v_mean[::7].tolist()])
print(f"t = 2: v = {v_first.mean():.2f} ± {se(v_first):.1g}; drop to t = 100: "
      f"{v_drop.mean():.2f} ± {se(v_drop):.1g} (over the 16 digits)")
# between the extremes, and drifting down (paired over the same digits), by > 3 standard errors
assert 3 * se(v_first) < v_first.mean() < 1 - 3 * se(v_first)
assert v_drop.mean() > 3 * se(v_drop)

# %% [markdown]
# At $t = 2$ the hybrid model chooses $v \approx$ {glue:text}`v_first:.2f`: a variance above
# the posterior variance $\tilde\beta_t$, part of the way to $\beta_t$. Further on, $v$
# drifts down ({glue:text}`v_t100:.2f` at $t = 100$), but there
# $\tilde\beta_t =$ {glue:text}`ratio_t100:.3f` $\beta_t$ (above) and the choice hardly
# matters: the network only has to get $v$
# right where it counts.
#
# Now the likelihood. We evaluate the full bound of both models with `calc_bpd_loop` on the
# same held-out digits: the first three of each class, 30 in all. That is 2 × 1000 network
# calls on a batch of 30, most of this chapter's time budget; the per-digit *difference*
# between the two models (the same digits and the same $x_t$ draws) is much less noisy than
# either bound, which is what lets 30 digits suffice.

# %%
subset = torch.cat([torch.nonzero(labels == c).flatten()[:3] for c in range(10)])  # (30,)
x0 = digits[subset]
res_hybrid = d_hybrid.calc_bpd_loop(hybrid, x0, generator=generator(0))


class Recorder:
    """Calls the model and keeps (x_t, output) per timestep, to replay them later."""

    def __init__(self, model):
        self.model, self.calls = model, {}

    def __call__(self, x_t, t):
        out = self.model(x_t, t)
        self.calls[int(t[0])] = (x_t, out)
        return out


recorder = Recorder(simple)
res_simple = d_simple.calc_bpd_loop(recorder, x0, generator=generator(0))
rows = {"digits_simple": res_simple, "digits_hybrid": res_hybrid}
# Sampled numbers (t and noise draws, 30 digits): 2 decimals, with standard errors.
print(f"{'model':>14} | {'L_T':>7} {'sum L_t-1':>10} {'L_0':>7} | {'total':>12} bits/dim")
for name, r in rows.items():
    total = r["total_bpd"]
    print(f"{name:>14} | {r['prior_bpd'].mean().item():7.4f} {r['vb'][:, 1:].sum(1).mean().item():10.2f}"
          f" {r['vb'][:, 0].mean().item():7.4f} | {total.mean().item():5.2f} ± {se(total):.2f}")
for lo, hi in ((1, 10), (10, 100), (100, T)):  # 0-based index ranges: paper's t = lo+1..hi
    parts = [r["vb"][:, lo:hi].sum(1).mean().item() for r in rows.values()]
    print(f"   t = {lo + 1:3d}..{hi:4d}: simple {parts[0]:.2f}, hybrid {parts[1]:.2f} bits/dim")
gain_small_t = res_simple["vb"][:, 1:10].sum(1) - res_hybrid["vb"][:, 1:10].sum(1)  # (30,)
paired = res_hybrid["total_bpd"] - res_simple["total_bpd"]  # (30,): the same digits and x_t draws
glue("gain_small_t", gain_small_t.mean().item(), digits=2)
glue("gain_small_t_se", se(gain_small_t), digits=1)
glue("bpd_simple", res_simple["total_bpd"].mean().item(), digits=3)
glue("bpd_simple_se", se(res_simple["total_bpd"]), digits=1)
glue("bpd_hybrid", res_hybrid["total_bpd"].mean().item(), digits=3)
glue("bpd_hybrid_se", se(res_hybrid["total_bpd"]), digits=1)
glue("bpd_diff", paired.mean().item(), digits=2)
glue("bpd_gain", -paired.mean().item(), digits=2)
glue("bpd_diff_se", se(paired), digits=1)
print(f"hybrid - simple, per digit: {paired.mean().item():+.2f} ± {se(paired):.2f} bits/dim, "
      f"of which t = 2..10: {-gain_small_t.mean().item():+.2f} ± {se(gain_small_t):.2f}")

# %%
for r in rows.values():
    assert bool((r["vb"] >= 0).all())
assert paired.mean() < -3 * se(paired)  # the hybrid model's bound is lower (paired)
assert gain_small_t.mean() > 3 * se(gain_small_t)  # ... and at t = 2..10 alone

# %% [markdown]
# The book's likelihood table ({doc}`09_discrete_decoder`) holds both bounds on all 300
# held-out digits, with the same $x_t$ draws for both models. Our 30 digits agree with it,
# and it measures the difference more precisely still:

# %%
lik = load_table()
table = {m: lik["rows"][row_name(m, "plain")] for m in ("digits_simple", "digits_hybrid")}
table_paired = table["digits_hybrid"]["per_image"] - table["digits_simple"]["per_image"]  # (300,)
for name, row in table.items():
    print(f"{name:>14}: {row['mean']:.3f} ± {row['se']:.3f} bits/dim on all {lik['n']} digits")
print(f"hybrid - simple, per digit: {table_paired.mean().item():+.3f} ± {se(table_paired):.3f}")
glue("table_simple", table["digits_simple"]["mean"], digits=3)
glue("table_simple_se", table["digits_simple"]["se"], digits=1)
glue("table_hybrid", table["digits_hybrid"]["mean"], digits=3)
glue("table_hybrid_se", table["digits_hybrid"]["se"], digits=1)
glue("table_diff", table_paired.mean().item(), digits=2)
glue("table_diff_se", se(table_paired), digits=1)
glue("table_n", lik["n"])
assert table_paired.mean() < -5 * se(table_paired)

# %% tags=["nbval-ignore-output"]
# our 30 digits against the table's values for the same digits (other x_t draws)
for name, r in rows.items():
    d, d_se = difference_to_table(r["total_bpd"], row_name(name, "plain"), subset, lik)
    print(f"{name:>14}: these 30 digits minus the table: {d:+.3f} ± {d_se:.3f} bits/dim")
    assert abs(d) < 5 * d_se

# %% [markdown]
# On the same 30 digits the hybrid model's bound is {glue:text}`bpd_hybrid:.2f` ±
# {glue:text}`bpd_hybrid_se:.2f` bits/dim against {glue:text}`bpd_simple:.2f` ±
# {glue:text}`bpd_simple_se:.2f` for `digits_simple`; the per-digit difference,
# {glue:text}`bpd_diff:.2f` ± {glue:text}`bpd_diff_se:.2f` bits/dim, is measured more precisely
# than either bound and is many standard errors from zero. {glue:text}`gain_small_t:.2f` ±
# {glue:text}`gain_small_t_se:.2f` bits/dim of it come from $t = 2, \dots, 10$, the first 1% of
# the steps, where the learned $v$ departs most from $\tilde\beta_t$. On all
# {glue:text}`table_n` held-out digits the table gives {glue:text}`table_hybrid:.2f` ±
# {glue:text}`table_hybrid_se:.2f` against {glue:text}`table_simple:.2f` ±
# {glue:text}`table_simple_se:.2f` bits/dim, a difference of {glue:text}`table_diff:.2f` ±
# {glue:text}`table_diff_se:.2f` per digit. (With `snap_to_levels` the order turns around;
# {doc}`09_discrete_decoder` shows why.)
#
# ## Which fixed variance for the bound?
#
# If the variance matters this much at small $t$, which of DDPM's two fixed choices suits
# the bound better? The usual answer is $\tilde\beta_t$: it is the exact posterior variance
# given $x_0$, and the right one for a perfect denoiser. For a real denoiser, whose $\hat x_0$
# is off, a wider reverse step can be the better bet. We can test it on `digits_simple`
# without a single new network evaluation: the `Recorder` above kept the model's output at
# every $t$, and `calc_bpd_loop` with the same seed draws the same $x_t$, so we replay the
# outputs into a diffusion with `model_var="fixed_large"`, $\sigma_t^2 = \beta_t$ (whose
# decoder at $t = 1$ still uses $\tilde\beta_2$, as DDPM's code does).

# %%
def replay(x_t, t):
    recorded_x_t, out = recorder.calls[int(t[0])]
    assert torch.equal(x_t, recorded_x_t)  # the same draw of x_t as the recorded run
    return out


d_large = GaussianDiffusion(d_simple.schedule, "fixed_large", d_simple.num_levels)
res_large = d_large.calc_bpd_loop(replay, x0, generator=generator(0))
# per digit, paired (the very same x_t and network outputs): beta minus beta~
large_minus_small = res_large["total_bpd"] - res_simple["total_bpd"]  # (30,)
lms_small_t = (res_large["vb"][:, 1:10] - res_simple["vb"][:, 1:10]).sum(1)  # t = 2..10
lms_rest = (res_large["vb"][:, 10:] - res_simple["vb"][:, 10:]).sum(1)  # t = 11..T
hybrid_minus_large = res_hybrid["total_bpd"] - res_large["total_bpd"]  # same digits, x_t
glue("bpd_large", res_large["total_bpd"].mean().item(), digits=3)
glue("bpd_large_se", se(res_large["total_bpd"]), digits=1)
glue("large_minus_small", large_minus_small.mean().item(), digits=2)
glue("large_minus_small_se", se(large_minus_small), digits=1)
for name, r in (("digits_simple, fixed_small (beta~)", res_simple),
                ("digits_simple, fixed_large (beta) ", res_large),
                ("digits_hybrid, learned            ", res_hybrid)):
    print(f"{name}: {r['total_bpd'].mean().item():.2f} ± {se(r['total_bpd']):.2f} bits/dim")
print(f"large - small, per digit: {large_minus_small.mean():+.2f} ± {se(large_minus_small):.2f}"
      f" bits/dim; from t = 2..10: {lms_small_t.mean():+.2f} ± {se(lms_small_t):.2f}, "
      f"from t > 10: {lms_rest.mean():+.3f} ± {se(lms_rest):.3f}")
print(f"hybrid - large, per digit: {hybrid_minus_large.mean():+.2f} "
      f"± {se(hybrid_minus_large):.2f} bits/dim")

# %%
assert torch.equal(res_large["vb"][:, 0], res_simple["vb"][:, 0])  # the same decoder L_0
# for this model beta beats beta~ (the prose below), paired, by > 3 standard errors ...
assert large_minus_small.mean() < -3 * se(large_minus_small)
# ... and the difference comes from t = 2..10: the rest is smaller, beyond both intervals
assert abs(lms_rest.mean()) + 3 * se(lms_rest) < -lms_small_t.mean() - 3 * se(lms_small_t)
# the learned variances beat both fixed ones (paired)
assert paired.mean() < -3 * se(paired)
assert hybrid_minus_large.mean() < -3 * se(hybrid_minus_large)

# %% [markdown]
# For this model the usual answer is wrong: the bound with $\sigma_t^2 = \beta_t$ is
# {glue:text}`bpd_large:.2f` ± {glue:text}`bpd_large_se:.2f` bits/dim, a per-digit difference of
# {glue:text}`large_minus_small:+.2f` ± {glue:text}`large_minus_small_se:.2f` against
# $\tilde\beta_t$, and the difference comes from the first ten steps. The denoiser's errors
# at small $t$ are large enough that the narrow $\tilde\beta_t$ is overconfident. The
# learned variances beat both fixed choices, because the right variance depends on how
# wrong the model is, at each $t$ and each pixel: a fixed schedule cannot know that, a
# network can.
#
# ## Samples
#
# Samples from both, with 100 evenly strided steps each ({doc}`11_fewer_steps` explains
# the striding; a full 1000-step run would take more than this chapter's time budget):

# %%
fig, axes = plt.subplots(1, 2, figsize=(8, 4))
for ax, (name, model, d) in zip(axes, (("digits_simple", simple, d_simple),
                                       ("digits_hybrid", hybrid, d_hybrid)), strict=True):
    x = sample_strided(d, model, (25, 1, 8, 8), 100, generator=generator(1),
                       progress=False)
    viz.show_images(x, nrow=5, ax=ax, title=name)
plt.tight_layout()
plt.show()

# %% [markdown]
# ## Importance sampling the timesteps
#
# Training on the bound means estimating $L_\text{vlb} = \sum_t L_t$ (here: the 1000 terms
# after $L_T$, which is constant) from one random timestep per example. With $t$ uniform,
# the estimate is $T \cdot L_t$: unbiased, but its variance is enormous, because the terms
# are anything but equal: the first few carry most of the bound. Any distribution $p_t > 0$
# gives an unbiased estimate $L_t / p_t$, with variance
#
# $$
# \mathrm{Var}\Big[\frac{L_t}{p_t}\Big] = \sum_t \frac{\mathbb{E}[L_t^2]}{p_t} - L_\text{vlb}^2 ,
# $$ (is-variance)
#
# where the expectation is over the data and the noise. By the Cauchy-Schwarz inequality
# it is smallest for $p_t \propto \sqrt{\mathbb{E}[L_t^2]}$, which is what improved DDPM
# uses, estimating $\mathbb{E}[L_t^2]$ from the last ten losses seen at each $t$ during
# training. The library's `ImportanceSampler` (in `training.py`) does exactly this, mixed
# with a little of the uniform distribution so that no $t$ starves.
#
# The hybrid model's per-$t$ terms from `calc_bpd_loop` give us everything: treating the
# 30 digits with their noise draws as the population, we feed all of them to an
# `ImportanceSampler` and compute {eq}`is-variance` exactly, as a sum, for both samplers.

# %%
vb = res_hybrid["vb"].double()  # (30, T): the per-t terms for each digit
mean_t = vb.mean(0)  # E[L_t], (T,)
second_t = (vb ** 2).mean(0)  # E[L_t^2], (T,)
total_vlb = mean_t.sum().item()

sampler = ImportanceSampler(T, history=len(vb))
sampler.update(torch.arange(T).repeat(len(vb)), vb.flatten())  # every (digit, t) pair
samplers = {"uniform": UniformSampler(T).probs(), "importance": sampler.probs()}
variance = {name: (second_t / p).sum().item() - total_vlb ** 2 for name, p in samplers.items()}
# exact for these 30 digits and their x_t draws, which are themselves a sample: 2 digits
for name in samplers:
    print(f"{name:>10}: std of one-sample estimate = {math.sqrt(variance[name]):.2g} bits/dim")
reduction = variance["uniform"] / variance["importance"]
glue("is_reduction", reduction, digits=2)
glue("std_uniform", math.sqrt(variance["uniform"]), digits=2)
glue("std_importance", math.sqrt(variance["importance"]), digits=2)
print(f"variance reduction: {float(f'{reduction:.2g}'):.0f}x")

# %%
for p in samplers.values():  # unbiased needs p_t > 0 everywhere, summing to 1
    assert math.isclose(p.sum().item(), 1.0, rel_tol=1e-12) and bool((p > 0).all())
p_opt = second_t.sqrt() / second_t.sqrt().sum()  # the optimum, recomputed without the library
assert torch.allclose(samplers["importance"], 0.999 * p_opt + 0.001 / T, rtol=1e-10)

# %% [markdown]
# As a last check, draw timesteps with each sampler's own `sample` method, exactly as the
# training loop does, and compare the Monte Carlo mean and variance of the weighted
# estimate with the exact sums.

# %%
n_draws = 200_000
mc, var_se = {}, {}
for name, smp in (("uniform", UniformSampler(T)), ("importance", sampler)):
    t_draw, w = smp.sample(n_draws, generator(2))
    b_draw = torch.randint(0, len(vb), (n_draws,), generator=generator(3))
    estimate = T * w.double() * vb[b_draw, t_draw]  # the loop's loss T * L_t, weighted
    mc[name] = (estimate.mean().item(), estimate.var().item())
    # the standard error of a sample variance, sqrt((mu_4 - sigma^4) / n), with the exact
    # fourth central moment of the estimate vb[b, t] / p_t (b uniform, t ~ p_t)
    p = samplers[name]
    mu4 = ((p / len(vb)) * (vb / p - total_vlb) ** 4).sum().item()
    var_se[name] = math.sqrt((mu4 - variance[name] ** 2) / n_draws)
    print(f"{name:>10}: Monte Carlo mean {mc[name][0]:.2f} (exact {total_vlb:.2f}), "
          f"variance {mc[name][1]:.3g} (exact {variance[name]:.3g} ± {var_se[name]:.2g})")

# %%
for name, (m, var) in mc.items():  # both within 5 standard errors of the exact sums
    assert abs(m - total_vlb) < 5 * math.sqrt(variance[name] / n_draws)
    assert abs(var - variance[name]) < 5 * var_se[name]

# %%
fig, ax = plt.subplots(figsize=(6, 2.8))
ax.loglog(np.arange(1, T + 1), samplers["importance"], label="importance $p_t$")
ax.loglog(np.arange(1, T + 1), samplers["uniform"], label="uniform $p_t$")
ax.set_xlabel("t")
ax.legend()
plt.show()

# %% [markdown]
# The one-sample estimate of the hybrid model's bound has a standard deviation of
# {glue:text}`std_uniform:.2g` bits/dim with uniform timesteps and
# {glue:text}`std_importance:.2g` with importance sampling: the variance falls by a factor
# of about {glue:text}`is_reduction:.0f`. This is what made training directly on $L_\text{vlb}$
# possible in improved DDPM; the hybrid loss sidesteps the problem by giving the bound a
# small weight $\lambda$ and training the mean with $L_\text{simple}$.

# %% [markdown]
# ## Summary
#
# - The cosine schedule {eq}`cosine` defines $\bar\alpha_t$ directly and leaves the image
#   recognisable for longer: {glue:text}`share_low_snr_cosine:.0f`% of its steps are
#   nearly pure noise, against {glue:text}`share_low_snr_linear:.0f`% for the linear one.
# - Learned variances interpolate $\beta_t$ and $\tilde\beta_t$ on a log scale
#   {eq}`learned-var`; the two differ only at small $t$, which is where the bound is. The
#   hybrid digits model's bound is {glue:text}`bpd_gain:.2f` ± {glue:text}`bpd_diff_se:.2f`
#   bits/dim below the simple model's, better than either fixed variance.
# - The hybrid loss {eq}`hybrid` trains the variance with the bound and the mean with
#   $L_\text{simple}$; the stop-gradient makes the mean's gradient exactly the MSE's.
# - Importance sampling with $p_t \propto \sqrt{\mathbb{E}[L_t^2]}$ keeps the bound's
#   estimate unbiased and cuts its variance about {glue:text}`is_reduction:.0f`-fold here.
#
# ## Exercises
#
# ### Try it: the cosine schedule
#
# Write the $\beta_t$ of the cosine schedule {eq}`cosine` (improved DDPM's eq. 17) for $T$ steps:
# $\bar\alpha_t = f(t)/f(0)$ with $f(t) = \cos^2\big(\frac{t/T + s}{1 + s}\cdot\frac{\pi}{2}\big)$,
# $s = 0.008$, then $\beta_t = \min(1 - \bar\alpha_t/\bar\alpha_{t-1},\ 0.999)$ for $t = 1, \dots, T$.
# The last cell below compares your function with `make_schedule("cosine", T).betas`; while it
# still raises `NotImplementedError`, the cell checks the book's hidden solution instead.

# %%
def my_cosine_betas(T: int) -> torch.Tensor:
    """T: the number of steps. Returns β_1..β_T, (T,) float64 (index i holds the paper's t = i + 1)."""
    raise NotImplementedError  # your code here

# %% tags=["hide-cell"]
def solution_cosine_betas(T: int) -> torch.Tensor:
    s = 0.008
    t = torch.arange(T + 1, dtype=torch.float64)  # the paper's t = 0..T
    abar = torch.cos((t / T + s) / (1 + s) * math.pi / 2) ** 2  # f(t)
    abar = abar / abar[0]  # ᾱ_t = f(t) / f(0)
    return (1 - abar[1:] / abar[:-1]).clamp(max=0.999)

# %%
from diffusion_core.exercises import check

cases = [(10,), (100,), (T,)]  # (T,)
passed = check(my_cosine_betas, lambda T: make_schedule("cosine", T).betas, cases,
               solution=solution_cosine_betas, name="cosine_betas")

# %% [markdown]
# ### Try it: the learned variance
#
# Now {eq}`learned-var`: from the network's raw output $v_\text{raw} \in [-1, 1]$, set
# $v = (v_\text{raw} + 1)/2$ and return $\log\Sigma_\theta = v\log\beta_t + (1 - v)\log\tilde\beta_t$,
# with $\beta_t$ and $\tilde\beta_t$ from the tables `cosine.betas` and `cosine.posterior_variance`.
# The cases keep to $t \ge 1$ (library indices), where $\tilde\beta_t > 0$. The check compares
# your function with `d_learned.reverse_log_variance(v_raw, t, v_raw)`.

# %%
def my_learned_log_variance(v_raw: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """v_raw: (B, 1, 8, 8) float64 in [-1, 1]; t: (B,) library indices 1..T-1.
    Returns log Σ_θ, (B, 1, 8, 8)."""
    raise NotImplementedError  # your code here

# %% tags=["hide-cell"]
def solution_learned_log_variance(v_raw: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    v = (v_raw + 1) / 2
    log_beta = cosine.betas[t].log().reshape(-1, 1, 1, 1)  # (B, 1, 1, 1)
    log_beta_tilde = cosine.posterior_variance[t].log().reshape(-1, 1, 1, 1)
    return v * log_beta + (1 - v) * log_beta_tilde

# %%
gen = generator(100)
ends = torch.tensor([-1.0, 1.0], dtype=f64).reshape(2, 1, 1, 1).expand(2, 1, 8, 8)
v_random = torch.rand(6, 1, 8, 8, generator=gen, dtype=f64) * 2 - 1
cases = [(ends, torch.tensor([1, 1])), (ends, torch.tensor([T - 1, T - 1])),  # v = 0 and v = 1
         (v_random, torch.randint(1, T, (6,), generator=gen))]  # (v_raw, t)
library_log_variance = lambda v_raw, t: d_learned.reverse_log_variance(v_raw, t, v_raw)
passed = check(my_learned_log_variance, library_log_variance, cases,
               solution=solution_learned_log_variance, name="learned_log_variance")

# %% [markdown]
# ### More exercises
#
# 1. Show that $\tilde\beta_t$ is the variance of $q(x_{t-1} \mid x_t)$ when the data is a
#    single point, and $\beta_t$ when the data is $\mathcal{N}(0, I)$ (for the second, use
#    that then every $q(x_t)$ is $\mathcal{N}(0, I)$).
# 2. Prove that $p_t \propto \sqrt{\mathbb{E}[L_t^2]}$ minimises {eq}`is-variance` subject to
#    $\sum_t p_t = 1$.
# 3. Compute the variance reduction of importance sampling for the `digits_simple` model
#    from `res_simple["vb"]`. Is it larger or smaller than for the hybrid model, and why?
#
# :::{admonition} Solution to 1
# :class: dropdown
# For a point $x_0$, $q(x_{t-1} \mid x_t) = q(x_{t-1} \mid x_t, x_0)$, whose variance is
# $\tilde\beta_t$. For $x_0 \sim \mathcal{N}(0, I)$, $x_{t-1}$ and
# $x_t = \sqrt{\alpha_t}\,x_{t-1} + \sqrt{\beta_t}\,\epsilon$ are jointly Gaussian with unit variances and covariance
# $\sqrt{\alpha_t}$, so $\mathrm{Var}[x_{t-1} \mid x_t] = 1 - \alpha_t = \beta_t$.
# :::
#
# :::{admonition} Solution to 2
# :class: dropdown
# Minimise $\sum_t a_t / p_t$ with $a_t = \mathbb{E}[L_t^2]$. By Cauchy-Schwarz,
# $\big(\sum_t \sqrt{a_t}\big)^2 = \big(\sum_t \sqrt{a_t/p_t}\,\sqrt{p_t}\big)^2 \le
# \sum_t (a_t/p_t) \sum_t p_t = \sum_t a_t/p_t$, with equality when $\sqrt{a_t/p_t} \propto
# \sqrt{p_t}$, i.e. $p_t \propto \sqrt{a_t}$.
# :::
#
# :::{admonition} Solution to 3
# :class: dropdown
# Replace `res_hybrid` by `res_simple` in the cell that builds `vb`, and re-run it and the
# next one. The reduction is larger for `digits_simple`: with the narrow fixed variance
# $\tilde\beta_t$, its first few terms are larger (the table above), so its terms are even
# more unequal across $t$, which is exactly what uniform sampling handles worst and
# importance sampling best.
# :::
