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
# # The network: a UNet that sees the timestep
#
# Everything so far has treated the network as a black box $\varepsilon_\theta(x_t, t)$: an
# image and a timestep go in, a prediction of the noise, with the image's shape, comes out
# ({doc}`06_eps_parameterization`). This chapter opens the box. DDPM uses a UNet
# {cite}`ronneberger2015unet` in the style of PixelCNN++ {cite}`salimans2017pixelcnn`:
# residual blocks with group normalisation, self-attention at a low resolution, and one set
# of weights shared by all $T$ timesteps, which reach every block through a sinusoidal
# embedding {cite}`ho2020denoising`. We take `diffusion_core.models.unet` apart piece by
# piece, measure it (shapes, parameters, receptive field), and then watch the trained
# digits model denoise.
#
# **What you will learn**
#
# - How the timestep enters: the sinusoidal embedding, and why nearby $t$ get similar codes.
# - The building blocks: a residual block with GroupNorm, SiLU, dropout and the time
#   embedding added; self-attention over the pixels of a small feature map; down- and
#   upsampling joined by skip connections.
# - The shapes at every level, the parameter counts (DDPM's CIFAR-10 model: 35.7M), and why
#   the untrained network outputs exactly zero.
# - How far each output pixel "sees", measured with gradients and compared with theory.
# - What the trained digits model produces, and how its prediction of $x_0$ sharpens as
#   $t$ falls.

# %%
import sys
if "google.colab" in sys.modules:  # Colab only: install the book's library
    %pip install -q "diffusion_core @ git+https://github.com/diffusion-core/diffusion-book"

# %%
import dataclasses
import inspect
import math

import matplotlib.pyplot as plt
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from diffusion_core import sample_strided, viz
from diffusion_core.baselines import evaluate_digit_samples
from diffusion_core.data import load_digits
from diffusion_core.models import UNet, UNetConfig, count_parameters, timestep_embedding
from diffusion_core.models.unet import AttentionBlock, ResBlock
from diffusion_core.metrics import share_standard_error as share_se, standard_error
from diffusion_core.notebook import book_seed, generator, glue, setup
from diffusion_core.pretrained import REGISTRY, load_pretrained

g = setup(seed=0)  # 2 threads, all seeds fixed: the outputs reproduce
f64 = torch.float64

# %% [markdown]
# ## The whole network at a glance
#
# The network maps $(x_t, t)$ to a tensor shaped like $x_t$. Inside, in the order of the
# module's own docstring:
#
# - **down**: a $3\times3$ convolution lifts the image to `base_channels` feature maps; each
#   level then applies `num_res_blocks` residual blocks (with self-attention after each at
#   the resolutions listed in `attention_resolutions`) and halves the resolution with a
#   stride-2 convolution;
# - **middle**: residual block, self-attention, residual block at the lowest resolution;
# - **up**: the mirror image, with one more residual block per level; every block first
#   concatenates, along the channels, one of the feature maps saved on the way down (the
#   *skip connections*), then the resolution is doubled;
# - **out**: GroupNorm, SiLU, and a $3\times3$ convolution back to the image's channels.
#
# Three presets ship with the library: DDPM's CIFAR-10 model, and two small ones for the
# book's data, $8\times8$ digits and $28\times28$ MNIST.

# %%
presets = {"digits": UNetConfig.digits(), "mnist": UNetConfig.mnist(),
           "cifar10": UNetConfig.cifar10()}
print(f"{'preset':8s} {'size':>4s} {'channels per level':>22s} {'attention at':>13s}"
      f" {'levels (pixels)':>16s}")
for name, cfg in presets.items():
    print(f"{name:8s} {cfg.image_size:4d} {str(cfg.channel_counts[1:]):>22s} "
          f"{str(cfg.attention_resolutions):>13s} {str(cfg.resolutions):>16s}")

# %% [markdown]
# `viz.draw_unet` draws the network that a config builds, reading every number on the picture
# from the config, so the drawing cannot drift from the code. Here is the book's digits model
# (the preset that the trained model loaded at the end of this chapter uses):

# %%
viz.draw_unet(presets["digits"])
plt.show()

# %% [markdown]
# Read it as a U. The image enters at the top left and goes down: each blue box is one level,
# labelled with its resolution, its channel count and its blocks, and each arrow down is a
# stride-2 convolution that halves the resolution. The grey box at the bottom is the middle
# block at the lowest resolution. The orange boxes climb back up the right. Every block on the
# way up first concatenates one feature map saved on the way down, and each level saved one
# more map than it has blocks (its blocks' outputs and its input: the first convolution's
# output or the downsampled map), hence one more ResBlock per level on the way up. The dashed
# arrows carry the saved maps across, one arrow per level in the picture (in the code, one
# map per block). "+ attn" marks the levels listed in `attention_resolutions`. The
# timestep's embedding (top centre) is added inside every ResBlock, down, middle and up, and
# the output has the input's shape. DDPM's CIFAR-10 model is the same drawing with more, wider
# levels:

# %%
viz.draw_unet(presets["cifar10"])
plt.show()

# %% [markdown]
# ## How the network sees t: the sinusoidal embedding
#
# One network serves all $T = 1000$ timesteps, so it must be told which one it is at. An
# integer is a poor input for a neural network (the raw value $t$ spans three orders of
# magnitude), so DDPM borrows the positional encoding of the Transformer: $t$ becomes a
# vector of sines and cosines at geometrically spaced frequencies,
#
# $$
# e(t)_i = \cos(t\,\omega_i), \quad e(t)_{h+i} = \sin(t\,\omega_i), \qquad
# \omega_i = 10000^{-i/h}, \quad i = 0, \dots, h-1,
# $$ (temb)
#
# with $h = d/2$ for an embedding of $d$ dimensions. This is the convention of improved
# DDPM's implementation {cite}`nichol2021improved` (cosines first, $\omega_i = 10000^{-i/h}$),
# which the library follows; DDPM's original TensorFlow code puts the sines first and spaces
# the frequencies as $\omega_i = 10000^{-i/(h-1)}$, so that its lowest one is exactly
# $10^{-4}$. Reordering the dimensions changes nothing for the network, and the other
# frequencies change the similarities computed below a little, not their shape.
# `timestep_embedding` computes it (it
# takes the library's 0-based timesteps; only differences of $t$ will matter below, so the
# offset of one is immaterial). We check it against {eq}`temb` written in numpy:

# %%
dim = 128  # DDPM's CIFAR-10 model embeds t in base_channels = 128 dimensions
ts = torch.arange(1000)
emb = timestep_embedding(ts, dim)  # (1000, 128)

half = dim // 2
omega = 10000.0 ** (-np.arange(half) / half)  # (h,)
args = np.arange(1000)[:, None] * omega[None, :]  # (1000, h)
by_hand = np.concatenate([np.cos(args), np.sin(args)], axis=1)  # (1000, d)
print(f"embedding shape {tuple(emb.shape)}, "
      f"frequencies from {omega[0]:.0f} down to {omega[-1]:.2e} rad per step")

# %% tags=["nbval-ignore-output"]
# Rounding-level numbers vary by machine: output not compared.
err = np.abs(emb.double().numpy() - by_hand).max()
print(f"largest |library - numpy| = {err:.1e}")
assert err < 1e-3  # float32 sin/cos of arguments up to 999

# %% [markdown]
# Every pair $(\cos t\omega_i, \sin t\omega_i)$ is a point on the unit circle turning at its
# own speed, so every code has the same length $\|e(t)\| = \sqrt{h}$, and the inner product
# of two codes depends only on the *distance* between the timesteps:
#
# $$
# \frac{e(s)\cdot e(t)}{\|e(s)\|\,\|e(t)\|}
# = \frac1h \sum_{i} \big(\cos s\omega_i \cos t\omega_i + \sin s\omega_i \sin t\omega_i\big)
# = \frac1h \sum_i \cos\big((s - t)\,\omega_i\big).
# $$ (temb-similarity)
#
# Fast frequencies tell neighbouring steps apart, slow ones say roughly where in the chain
# we are. Left: the code of every $t$ (one row each); right: the cosine similarity between
# the codes of every pair of the first 200 timesteps (the band along the diagonal has the
# same width everywhere, by {eq}`temb-similarity`).

# %%
unit = F.normalize(emb.double(), dim=1)  # (1000, d), rows of length 1
similarity = (unit @ unit.T).numpy()  # (1000, 1000)

fig, axes = plt.subplots(1, 2, figsize=(8, 3.3))
axes[0].imshow(emb.numpy(), aspect="auto", cmap="RdBu", interpolation="nearest")
axes[0].set(xlabel="dimension (cos | sin)", ylabel="t (0-based)",
            title=r"$e(t)$, $d = 128$")
im2 = axes[1].imshow(similarity[:200, :200], cmap="viridis", vmin=0, vmax=1)
axes[1].set(xlabel="t", ylabel="s", title="cosine similarity, t, s < 200")
fig.colorbar(im2, ax=axes[1], fraction=0.046)
plt.tight_layout()
plt.show()

# %%
lags = np.arange(0, 1000)
predicted = np.cos(lags[:, None] * omega[None, :]).mean(axis=1)  # (temb-similarity)
measured = np.array([similarity[0, lag] for lag in lags])
also_at_500 = np.array([similarity[500, 500 - lag] for lag in range(500)])
for lag in (1, 10, 100, 500):
    print(f"|s - t| = {lag:3d}: cosine similarity {measured[lag]:.3f}")
glue("sim_lag1", float(measured[1]))
glue("sim_lag100", float(measured[100]))

# %% tags=["nbval-ignore-output"]
# Rounding-level numbers vary by machine: output not compared.
print(f"largest deviation from (temb-similarity): "
      f"{np.abs(measured - predicted).max():.1e}")
assert np.abs(measured - predicted).max() < 1e-5
assert np.abs(also_at_500 - predicted[:500]).max() < 1e-5  # depends only on s - t
norms = emb.double().norm(dim=1)
assert torch.allclose(norms, torch.full_like(norms, math.sqrt(half)), atol=1e-5)

# %% [markdown]
# Adjacent timesteps have codes with cosine similarity {glue:text}`sim_lag1:.3f`, steps
# 100 apart {glue:text}`sim_lag100:.2f`: the network receives a smooth code of the noise
# level, so what it learns at one $t$ carries over to its neighbours, and one set of
# weights can serve all of them.
#
# Inside the UNet, the $d$-dimensional code goes through a small MLP (Linear, SiLU, Linear,
# to $4d$ dimensions) and a SiLU, once for the whole network; each residual block then
# projects it to its own number of channels and **adds** it to its feature maps, one number
# per channel, the same at every pixel.
#
# ## The residual block
#
# This is the whole `ResBlock.forward` from the library:

# %%
print(inspect.getsource(ResBlock.forward))

# %% [markdown]
# Normalise, SiLU, $3\times3$ convolution; add the projected time embedding; normalise,
# SiLU, dropout, $3\times3$ convolution; add the input (through a $1\times1$ convolution
# when the number of channels changes). This is a Wide-ResNet block in the "pre-activation"
# order, with GroupNorm instead of batch normalisation (the statistics of one image, not of
# the batch, which mixes timesteps), the smooth SiLU $x\,\sigma(x)$ instead of ReLU, and the
# time embedding added in the middle.
#
# GroupNorm splits the channels into groups and standardises each group over its channels
# *and all pixels* of one image, then applies a learned per-channel scale and shift. We
# check that against the definition, computed by hand:

# %%
gn = nn.GroupNorm(8, 48)  # the digits model: 8 groups, 48 channels at 4x4
nn.init.normal_(gn.weight, generator=g)
nn.init.normal_(gn.bias, generator=g)
x = torch.randn(2, 48, 4, 4, generator=g)
grouped = x.reshape(2, 8, 6 * 4 * 4)  # (B, groups, channels per group * H * W)
mean = grouped.mean(dim=2, keepdim=True)
var = grouped.var(dim=2, unbiased=False, keepdim=True)
standard = ((grouped - mean) / torch.sqrt(var + gn.eps)).reshape(2, 48, 4, 4)
by_def = standard * gn.weight[:, None, None] + gn.bias[:, None, None]

# %% tags=["nbval-ignore-output"]
# Rounding-level numbers vary by machine: output not compared.
err = (gn(x) - by_def).abs().max().item()
print(f"GroupNorm vs its definition: largest difference {err:.1e}")
assert err < 1e-5

# %% [markdown]
# :::{admonition} A common mistake
# :class: warning
# Batch normalisation in a diffusion UNet. In training, a batch mixes timesteps, from nearly
# clean images to nearly pure noise, and BatchNorm standardises each one with statistics of
# all of them: an image's features then depend on which other timesteps happen to share
# its batch. Below, the same digit at the same $t$ goes through one normalised layer twice,
# once in a batch of low-noise images and once in a batch of high-noise ones. With
# BatchNorm its output moves by {glue:text}`bn_shift:.2f` (in units of its own spread); with
# GroupNorm, which only looks at the one image, not at all.
# :::

# %%
conv = nn.Conv2d(1, 48, 3, padding=1)
x_one = load_digits("train")[0][:1]  # one digit, (1, 1, 8, 8)
abar_lo, abar_hi = 0.99, 0.05  # the rest of the batch: nearly clean, or nearly noise
batches = {name: torch.cat([x_one, math.sqrt(a) * load_digits("train")[0][1:16]
                            + math.sqrt(1 - a) * torch.randn(15, 1, 8, 8, generator=g)])
           for name, a in (("low noise", abar_lo), ("high noise", abar_hi))}
norms = {"BatchNorm": nn.BatchNorm2d(48).train(), "GroupNorm": nn.GroupNorm(8, 48)}
shift = {}
with torch.no_grad():
    for name, norm in norms.items():
        out = {b: norm(conv(x))[0] for b, x in batches.items()}  # the first image's features
        shift[name] = ((out["low noise"] - out["high noise"]).std() / out["low noise"].std()).item()
        print(f"{name}: the same image's features move by {shift[name]:.2f} of their spread")
glue("bn_shift", shift["BatchNorm"], digits=2)
# The BatchNorm shift depends on the random layer and noise: over 300 seeds it is
# 0.39 with a standard deviation of 0.03 (smallest 0.32), so 0.1 is 10 SDs below it.
# GroupNorm's is zero up to rounding: the same image gives the same output.
assert shift["BatchNorm"] > 0.1 and shift["GroupNorm"] < 1e-6

# %% [markdown]
# The last convolution of every residual block starts at zero (weights and bias). An
# untrained block is therefore exactly its skip path, the identity when the channels do not
# change: a freshly built UNet behaves like a shallow network, and its activations cannot
# blow up with depth. Check it on a random input:

# %%
block = ResBlock(48, 48, temb_ch=96, dropout=0.1, groups=8).eval()
x = torch.randn(4, 48, 4, 4, generator=g)
temb = torch.randn(4, 96, generator=g)
assert torch.equal(block(x, temb), x)
widen = ResBlock(24, 48, temb_ch=96, dropout=0.1, groups=8).eval()
x24 = torch.randn(4, 24, 4, 4, generator=g)
assert torch.equal(widen(x24, temb), widen.skip(x24))
print("untrained ResBlock(48 -> 48) is the identity; ResBlock(24 -> 48) is its 1x1 skip")

# %% [markdown]
# ## Self-attention at low resolution
#
# Convolutions combine neighbouring pixels; to relate distant parts of the image in one
# step, DDPM adds self-attention at the $16\times16$ level of its $32\times32$ models
# {cite}`ho2020denoising`. The digits model does the same at its $4\times4$ level (and in the
# middle). Each pixel's feature vector becomes a *token*; from each token three linear maps
# make a query, a key and a value, and each output token is an average of all the values,
# weighted by a softmax of query-key products:
#
# $$
# \mathrm{Attention}(Q, K, V) = \mathrm{softmax}\!\Big(\frac{QK^\top}{\sqrt{d_h}}\Big) V ,
# $$ (attention)
#
# computed per head ($d_h$ = channels per head), the heads concatenated and projected back,
# and the result added to the input. The library's `AttentionBlock` calls PyTorch's fused
# `scaled_dot_product_attention`; here is {eq}`attention` written out in float64, head by
# head, against it. The output projection starts at zero like the residual blocks' last
# convolution, so we give it random weights first:

# %%
attn = AttentionBlock(48, num_heads=4, groups=8).double()
nn.init.normal_(attn.proj.weight, std=0.1, generator=g)
x = torch.randn(2, 48, 4, 4, generator=g, dtype=f64)

B, C, H, W = x.shape
heads, hs = 4, 48 // 4
tokens = attn.norm(x).flatten(2).transpose(1, 2)  # (B, HW, C)
Wqkv, bqkv = attn.qkv.weight, attn.qkv.bias  # (3C, C): rows [queries | keys | values]
outputs = []
for h in range(heads):
    rows = slice(h * hs, (h + 1) * hs)
    q = tokens @ Wqkv[:C][rows].T + bqkv[:C][rows]  # (B, HW, hs)
    k = tokens @ Wqkv[C:2 * C][rows].T + bqkv[C:2 * C][rows]
    v = tokens @ Wqkv[2 * C:][rows].T + bqkv[2 * C:][rows]
    weights = torch.softmax(q @ k.transpose(1, 2) / math.sqrt(hs), dim=-1)  # (B, HW, HW)
    outputs.append(weights @ v)
mixed = attn.proj(torch.cat(outputs, dim=-1))  # (B, HW, C)
by_hand = x + mixed.transpose(1, 2).reshape(B, C, H, W)

# %% tags=["nbval-ignore-output"]
# Rounding-level numbers vary by machine: output not compared.
with torch.no_grad():
    err = (attn(x) - by_hand).abs().max().item()
print(f"AttentionBlock vs (attention) by hand: largest difference {err:.1e}")
assert err < 1e-12

# %% [markdown]
# Attention by itself does not know where the pixels are: permute the pixels of the input
# and the output is permuted the same way (GroupNorm does not care about order either). The
# positions come from the convolutions around it.

# %%
perm = torch.randperm(H * W, generator=g)
with torch.no_grad():
    out_of_permuted = attn(x.flatten(2)[:, :, perm].reshape(B, C, H, W))
    permuted_out = attn(x).flatten(2)[:, :, perm].reshape(B, C, H, W)
assert torch.allclose(out_of_permuted, permuted_out, atol=1e-12)
print("attention commutes with a permutation of the 16 pixels")

# %% [markdown]
# ## Down, up, and the skips: shapes at every level
#
# Forward hooks record what goes into and comes out of every block during one forward pass.
# On the way down, every output (and the first convolution's) is pushed on a stack; on the
# way up, each block pops one and concatenates it to its input, which is why the up blocks'
# input has more channels than the output of the block before them.

# %%
def stages(model: UNet) -> list[str]:
    """The blocks of the UNet in the order the forward pass calls them."""
    names = ["conv_in"]
    for i, level in enumerate(model.down):
        names += [f"down.{i}.{j}" for j in range(len(level))]
        names += [f"downsample.{i}"] if i < len(model.downsample) else []
    names += ["mid_block1", "mid_attn", "mid_block2"]
    for i, level in enumerate(model.up):
        names += [f"up.{i}.{j}" for j in range(len(level))]
        names += [f"upsample.{i}"] if i < len(model.upsample) else []
    return names + ["conv_out"]


def shape_table(cfg: UNetConfig) -> dict[str, tuple[tuple, tuple]]:
    """{block: (input shape, output shape)} for a batch of 2."""
    model = UNet(cfg).eval()
    modules = dict(model.named_modules())
    shapes = {}
    hooks = [modules[name].register_forward_hook(
        lambda mod, inp, out, name=name: shapes.update(
            {name: (tuple(inp[0].shape[1:]), tuple(out.shape[1:]))}))
        for name in stages(model)]
    x = torch.zeros(2, cfg.in_channels, cfg.image_size, cfg.image_size)
    with torch.no_grad():
        model(x, torch.tensor([0, 999]))
    for hook in hooks:
        hook.remove()
    return shapes


tables = {name: shape_table(presets[name]) for name in ("digits", "mnist")}
for name, table in tables.items():
    print(f"UNetConfig.{name}(): (C, H, W) in -> out")
    for stage, (shape_in, shape_out) in table.items():
        print(f"  {stage:12s} {str(shape_in):>14s} -> {str(shape_out)}")

# %%
for name, table in tables.items():
    cfg = presets[name]
    image = (cfg.in_channels, cfg.image_size, cfg.image_size)
    assert table["conv_in"][0] == image and table["conv_out"][1] == image
    # each up block eats one skip: the output of conv_in, of a down block or a downsample
    ups = [s for s in table if s.startswith("up.")]
    skips = [s for s in table if s == "conv_in" or s.startswith("down")]
    assert len(ups) == len(skips)
    for up, skip in zip(ups, reversed(skips), strict=True):
        previous = list(table)[list(table).index(up) - 1]
        c_in, c_prev, c_skip = table[up][0][0], table[previous][1][0], table[skip][1][0]
        assert c_in == c_prev + c_skip and table[up][0][1:] == table[skip][1][1:]
print("every up block's input = previous output + the matching skip, concatenated")

# %% [markdown]
# The spatial sizes follow $n \to \lceil n/2 \rceil$: $28 \to 14 \to 7$ for MNIST, and the
# upsampling goes back to the exact size of the skip it meets. The digits model has only
# two levels, $8\times8$ and $4\times4$: there is little room to go lower.
#
# ## Parameters
#
# Where do the parameters sit? Per part of the digits and MNIST models:

# %%
part_names = {"time MLP": ["time_mlp"], "conv in/out": ["conv_in", "norm_out", "conv_out"],
              "down path": ["down", "downsample"],
              "middle": ["mid_block1", "mid_attn", "mid_block2"],
              "up path": ["up", "upsample"]}
models = {name: UNet(presets[name]) for name in ("digits", "mnist")}
counts = {name: {part: sum(count_parameters(getattr(m, c)) for c in children)
                 for part, children in part_names.items()} for name, m in models.items()}
print(f"{'part':12s}{'digits':>10s}{'mnist':>11s}")
for part in part_names:
    print(f"{part:12s}{counts['digits'][part]:10,d}{counts['mnist'][part]:11,d}")
print(f"{'total':12s}{count_parameters(models['digits']):10,d}"
      f"{count_parameters(models['mnist']):11,d}")
for name, m in models.items():
    assert sum(counts[name].values()) == count_parameters(m)
up_over_down = counts["digits"]["up path"] / counts["digits"]["down path"]
glue("up_over_down", up_over_down)

# %% [markdown]
# The up path of the digits model holds {glue:text}`up_over_down:.1f` times the parameters of
# the down path: it has one more block per level, and its blocks take the concatenated skips
# as input. One residual block can be
# counted by hand: GroupNorm has a scale and a shift per channel, a $3\times3$ convolution
# from $c_\text{in}$ to $c_\text{out}$ channels has $9 c_\text{in} c_\text{out}$ weights and
# $c_\text{out}$ biases, the time projection $d_\text{emb}\, c_\text{out} + c_\text{out}$, and
# the $1\times1$ skip (only when the channels change) $c_\text{in} c_\text{out} + c_\text{out}$:

# %%
def resblock_params(c_in: int, c_out: int, d_emb: int) -> int:
    norms = 2 * c_in + 2 * c_out
    convs = (9 * c_in * c_out + c_out) + (9 * c_out * c_out + c_out)
    skip = c_in * c_out + c_out if c_in != c_out else 0
    return norms + convs + d_emb * c_out + c_out + skip


digits_model = models["digits"]
first_up = digits_model.up[0][0].res  # 48 + 48 skip channels in, 48 out
print(f"first up block of the digits model: {count_parameters(first_up):,d} parameters, "
      f"by hand {resblock_params(96, 48, 96):,d}")
assert count_parameters(first_up) == resblock_params(96, 48, 96)
assert count_parameters(digits_model.mid_block1) == resblock_params(48, 48, 96)

# %% [markdown]
# DDPM reports 35.7 million parameters for its CIFAR-10 model {cite}`ho2020denoising`, a
# number published independently of this code. Building the preset on PyTorch's `meta`
# device allocates no memory and takes no time:

# %%
with torch.device("meta"):
    cifar = UNet(UNetConfig.cifar10())
n_cifar = count_parameters(cifar)
sizes = {name: count_parameters(m) for name, m in models.items()} | {"cifar10": n_cifar}
for name, n in sizes.items():
    print(f"{name:8s} {n:12,d} parameters")
glue("n_digits", sizes["digits"])
glue("n_mnist", sizes["mnist"])
glue("n_cifar", n_cifar)
glue("cifar_rel_err", 100 * abs(n_cifar / 35.7e6 - 1))
assert abs(n_cifar / 35.7e6 - 1) < 0.01

# %% [markdown]
# The preset has {glue:text}`n_cifar:,` parameters, {glue:text}`cifar_rel_err:.2f`% from the
# published figure (which is rounded to 0.1M). The digits model has
# {glue:text}`n_digits:,` and the MNIST model {glue:text}`n_mnist:,`.
#
# ## An untrained network predicts exactly zero
#
# Like the residual blocks, the final convolution starts at zero, so the untrained network
# outputs $\hat\varepsilon = 0$ for every input:

# %%
digits, _ = load_digits("train")
x0 = digits[:256]
for name, m in models.items():
    cfg = presets[name]
    x = torch.randn(8, 1, cfg.image_size, cfg.image_size, generator=g)
    with torch.no_grad():
        out = m.eval()(x, torch.randint(0, 1000, (8,), generator=g))
    print(f"{name}: largest |output| of the untrained model = {out.abs().max().item()}")
    assert torch.equal(out, torch.zeros_like(out))

# %% [markdown]
# Why start there? Zero is the best *constant* guess of a standard normal $\varepsilon$, so the
# simple loss $\mathbb{E}\|\varepsilon - \hat\varepsilon\|^2 / d$ starts at exactly
# $\mathbb{E}[\varepsilon^2] = 1$, the value of knowing nothing, whatever the random seed: the
# network begins as a harmless "there is no noise" and every block as the identity, and
# training adds structure from there. With the usual random initialisation of the last layer
# instead, the untrained network outputs an arbitrary function of its input, and the
# starting loss depends on the seed. We compare
# the two on a batch of digits, with the same noise and timesteps, for five seeds (the loss is
# written out by hand, as {doc}`06_eps_parameterization` defines it; the network computes in
# float32, whose last bits differ between CPUs, so the printed digits are not compared when
# the book is tested, the assert is):

# %% tags=["nbval-ignore-output"]
alphas_cumprod = torch.cumprod(1 - torch.linspace(1e-4, 0.02, 1000, dtype=f64), 0)
t = torch.randint(0, 1000, (len(x0),), generator=g)
eps = torch.randn(x0.shape, generator=g)
abar = alphas_cumprod[t].float().view(-1, 1, 1, 1)
x_t = abar.sqrt() * x0 + (1 - abar).sqrt() * eps
print(f"mean of eps^2 = {(eps ** 2).mean().item():.3f}")
print(f"{'seed':>4s}{'loss, zero init':>17s}{'loss, random last layer':>25s}"
      f"{'its output SD':>15s}")
random_losses, random_sds = [], []
for seed in range(5):
    torch.manual_seed(book_seed(seed))
    net = UNet(presets["digits"]).eval()
    with torch.no_grad():
        loss_zero = ((eps - net(x_t, t)) ** 2).mean().item()
        net.conv_out.reset_parameters()  # PyTorch's default init for the last conv only
        out = net(x_t, t)
    random_losses.append(((eps - out) ** 2).mean().item())
    random_sds.append(out.std().item())
    print(f"{seed:4d}{loss_zero:17.3f}{random_losses[-1]:25.3f}{out.std().item():15.3f}")
    assert loss_zero == (eps ** 2).mean().item()  # exactly, for every seed
glue("random_loss_min", min(random_losses), digits=2)
glue("random_loss_max", max(random_losses), digits=2)
glue("random_sd_min", min(random_sds), digits=2)
glue("random_sd_max", max(random_sds), digits=2)

# %% [markdown]
# With a random last layer the untrained network's output has a standard deviation of
# {glue:text}`random_sd_min:.2f` to {glue:text}`random_sd_max:.2f` (against 1 for
# $\varepsilon$), and the starting loss ranges from {glue:text}`random_loss_min:.2g` to
# {glue:text}`random_loss_max:.2g` over five seeds. It can even start below 1, because $x_t$
# contains $\varepsilon$ and a random function of $x_t$ can correlate with it by chance; but
# that is luck, not design, and the part of the random output that does not help must be
# unlearnt. The zero start is the same for every seed.

# %% [markdown]
# ## How far does one output pixel see?
#
# The prediction at one pixel may depend on which input pixels? We measure it: the gradient
# of the central output pixel with respect to the input image is non-zero exactly at the
# input pixels it depends on. The zero-initialised layers would cut every gradient path, so
# we give them random weights first (any generic weights show the same dependence pattern).
#
# Theory for the convolutions alone: a $3\times3$ convolution, applied where one step of the
# feature map spans $j$ input pixels, widens the receptive field by $2j$; a stride-2
# convolution doubles $j$, an upsampling halves it. Walking the deepest path (through every
# level and the middle) gives the receptive field of each block:

# %%
def theoretical_rf(cfg: UNetConfig) -> dict[str, int]:
    """Receptive-field width (input pixels) of the convolutions up to each block."""
    rf, jump, out = 1, 1, {}

    def conv3(stride: int = 1) -> None:
        nonlocal rf, jump
        rf += 2 * jump
        jump *= stride

    conv3()
    out["conv_in"] = rf
    levels = len(cfg.channel_mult)
    for i in range(levels):
        for j in range(cfg.num_res_blocks):
            conv3()  # two 3x3 convs per residual block
            conv3()
            out[f"down.{i}.{j}"] = rf
        if i < levels - 1:
            conv3(stride=2)
            out[f"downsample.{i}"] = rf
    for _ in range(4):  # two residual blocks in the middle
        conv3()
    out["middle"] = rf
    for i in range(levels):
        for _ in range(2 * (cfg.num_res_blocks + 1)):
            conv3()
        if i < levels - 1:
            jump //= 2  # nearest upsampling, then a 3x3 conv
            conv3()
    conv3()
    out["conv_out"] = rf
    return out


for name in ("digits", "mnist"):
    rf = theoretical_rf(presets[name])
    print(f"{name}: " + ", ".join(f"{k} {v}" for k, v in rf.items()
                                  if k in ("conv_in", "down.0.1", "middle", "conv_out")))
    glue(f"rf_{name}", rf["conv_out"])

# %% [markdown]
# At the output the convolutions alone reach {glue:text}`rf_digits` pixels across for
# digits and {glue:text}`rf_mnist` for MNIST,
# far more than the images are wide: every output pixel can depend on every input pixel.
# To see the theory at work we need blocks where the field is still smaller than the image,
# and a network where convolutions are the only way pixels mix. Two other parts mix pixels:
# self-attention (all pixels at once) and GroupNorm, whose mean and variance are taken over
# all pixels of the image. So first a *convolutional skeleton*: the same network with the
# attention and the GroupNorms replaced by the identity.

# %%
def randomise_zero_init(model: UNet) -> UNet:
    for mod in model.modules():
        if isinstance(mod, nn.Conv2d | nn.Linear) and not mod.weight.any():
            mod.reset_parameters()  # PyTorch's default init instead of zeros
    return model


def skeleton(cfg: UNetConfig) -> UNet:
    """The UNet with attention and GroupNorm removed: only convolutions mix pixels."""
    torch.manual_seed(book_seed(1))
    no_attention = dataclasses.replace(cfg, attention_resolutions=())
    model = randomise_zero_init(UNet(no_attention))
    model.mid_attn = nn.Identity()
    for mod in list(model.modules()):
        for child_name, child in mod.named_children():
            if isinstance(child, nn.GroupNorm):
                setattr(mod, child_name, nn.Identity())
    return model.eval()


def input_gradient(model: UNet, stage: str, size: int, batch: int = 1) -> torch.Tensor:
    """d (central pixel of the block's output, summed over channels) / d input, for `batch`
    random inputs at once (the images of a batch do not mix): (batch, H, W)."""
    kept = {}
    hook = dict(model.named_modules())[stage].register_forward_hook(
        lambda mod, inp, out: kept.update(out=out))
    x = torch.randn(batch, 1, size, size, generator=g, requires_grad=True)
    model(x, torch.full((batch,), 500))
    hook.remove()
    feature = kept["out"]  # (batch, C, h, w)
    feature[:, :, feature.shape[2] // 2, feature.shape[3] // 2].sum().backward()
    return x.grad[:, 0]


def level_of(stage: str) -> int:
    """The level (0 = full resolution) of a down-path block's output."""
    if stage.startswith("downsample."):
        return int(stage.split(".")[1]) + 1
    return int(stage.split(".")[1]) if stage.startswith("down.") else 0


def theoretical_count(cfg: UNetConfig, stage: str, rf: int) -> int:
    """Input pixels inside the field of the central pixel of `stage`'s output."""
    level = level_of(stage)
    centre = (cfg.resolutions[level] // 2) * 2 ** level  # a stride-2 conv maps i to 2i
    lo, hi = max(0, centre - rf // 2), min(cfg.image_size - 1, centre + rf // 2)
    return (hi - lo + 1) ** 2

# %%
mnist_cfg = presets["mnist"]
mnist_skeleton = skeleton(mnist_cfg)
rf_mnist = theoretical_rf(mnist_cfg)
probe = ["conv_in", "down.0.0", "down.0.1", "downsample.0", "down.1.0", "down.1.1"]
grads = {}
print(f"MNIST skeleton: {'block':13s}{'field':>6s}{'theory':>8s}{'measured':>10s} pixels")
for stage in probe:
    grads[stage] = input_gradient(mnist_skeleton, stage, mnist_cfg.image_size)[0]
    measured = int((grads[stage] != 0).sum())
    expected = theoretical_count(mnist_cfg, stage, rf_mnist[stage])
    print(f"{'':16s}{stage:13s}{rf_mnist[stage]:6d}{expected:8d}{measured:10d}")
    assert measured == expected

# %% [markdown]
# The measured supports are exactly the squares the theory predicts, clipped to the image
# once the field is wider than it (the last row). Now the real networks, digits and MNIST, with
# GroupNorm and attention, at the output:

# %%
full = {}
for name in ("digits", "mnist"):
    cfg = presets[name]
    torch.manual_seed(book_seed(2))
    net = randomise_zero_init(UNet(cfg)).eval()
    full[name] = input_gradient(net, "conv_out", cfg.image_size)[0].abs()
    share = (full[name] > 0).float().mean().item()
    print(f"{name}: {int((full[name] > 0).sum())} of {cfg.image_size ** 2} input pixels "
          f"have a non-zero gradient ({share:.0%}); theory: all "
          f"(field {theoretical_rf(cfg)['conv_out']} > {cfg.image_size})")
    assert share == 1.0

# %% [markdown]
# Every input pixel matters. But not equally: the mean gradient magnitude on the rings at
# distance $r$ from the predicted pixel (in the max-norm, so ring $r$ is the border of a
# $(2r+1)\times(2r+1)$ square), relative to the mean over the whole image. One network and
# one input give a noisy profile (ring 0 is a single pixel), so we average over 8 random
# networks for digits and 4 for MNIST, each over 8 random inputs, and compare the ring next to
# the predicted pixel with the outermost ring: one difference per network, their mean and its
# standard error. (Float32 gradients: the printed digits are not compared when the
# book is tested; the asserts are.)

# %% tags=["nbval-ignore-output"]
def ring_profile(grad: torch.Tensor, rings: int) -> list[float]:
    """Mean |gradient| on each ring around the centre, over the mean of the image."""
    n = grad.shape[0]
    rows, cols = torch.meshgrid(torch.arange(n), torch.arange(n), indexing="ij")
    r = torch.maximum((rows - n // 2).abs(), (cols - n // 2).abs())
    return [(grad[r == k].mean() / grad.mean()).item() for k in range(rings)]


nets, rings = {"digits": 8, "mnist": 4}, {"digits": 4, "mnist": 8}
profiles, mean_grad = {}, {}
for name in nets:
    cfg = presets[name]
    per_net, maps = [], []
    for k in range(nets[name]):
        torch.manual_seed(book_seed(10 + k))
        net = randomise_zero_init(UNet(cfg)).eval()
        grad = input_gradient(net, "conv_out", cfg.image_size, batch=8).abs().mean(0)
        per_net.append(ring_profile(grad, rings[name]))
        maps.append(grad / grad.mean())
    profiles[name] = torch.tensor(per_net)  # (networks, rings)
    mean_grad[name] = torch.stack(maps).mean(0)  # (H, W), for the figure
for name, prof in profiles.items():
    print(f"{name:7s}" + " ".join(f"r={k}: {v:5.2f}" for k, v in enumerate(prof.mean(0))))
for name, prof in profiles.items():
    drop = prof[:, 1] - prof[:, -1]  # ring 1 minus the outermost ring, per network
    se = standard_error(drop)
    print(f"{name}: ring 1 minus outermost ring {drop.mean().item():.2f} ± {se:.2f} "
          f"({drop.mean().item() / se:.0f} standard errors)")
    # near the centre more than far out: expected near 13 standard errors for digits and 12
    # for MNIST (measured over 40 and 12 networks), so a t-test with 3 SEs misses it with
    # probability below 1e-7
    assert drop.mean().item() > 3 * se

# %%
fig, axes = plt.subplots(1, 5, figsize=(8, 2.1))
for ax, stage in zip(axes[:3], ["down.0.0", "downsample.0", "down.1.0"], strict=True):
    ax.imshow(grads[stage] != 0, cmap="Greys", vmin=0, vmax=1)
    ax.set_title(f"skeleton {stage}\n{int((grads[stage] != 0).sum())} pixels", fontsize=8)
for ax, name in zip(axes[3:], ("digits", "mnist"), strict=True):
    ax.imshow(mean_grad[name].numpy() / mean_grad[name].max().item(), cmap="magma",
              vmin=0, vmax=1)
    ax.set_title(f"{name}, output\nmean |gradient| / max", fontsize=8)
for ax in axes:
    ax.set_xticks([]), ax.set_yticks([])
plt.tight_layout()
plt.show()

# %% [markdown]
# Left: the growing square of the skeleton on MNIST. Right: the real networks at the output,
# averaged over the random networks and inputs above. The gradient is largest within a pixel
# or two of the one being predicted and fades with distance: convolutions do most of the local work, and the long-range terms (attention, the
# normalisation statistics, the deep levels) add global context. For $8\times8$ digits the
# convolutions alone cover the whole image by the first downsampling; even there the pixels
# next to the predicted one count most.
#
# ## The trained digits model
#
# Now the weights that matter: the book's default digits model, trained with the simple
# loss of {doc}`06_eps_parameterization` (the exponential moving average of its weights), on
# the 1497 training digits by the library's `train`; the command below retrains it from scratch.
# We run DDPM's ancestral sampler on 64 images, on 250 evenly strided steps of the 1000 (a
# quarter of the network calls, which keeps this page fast at a small cost in quality; the
# full chain is `sample_ddpm`, with the same arguments but no `num_steps`), and keep 16 frames of the
# trajectory: $x_t$ and the model's current guess of the clean image,
# $\hat x_0 = (x_t - \sqrt{1-\bar\alpha_t}\,\hat\varepsilon)/\sqrt{\bar\alpha_t}$.

# %%
model, diffusion, config = load_pretrained("digits_simple", progress=False)
print(f"{config.loss_type} loss, {config.schedule} schedule, T = {config.T}, "
      f"{count_parameters(model):,d} parameters")
print(f"trained from scratch by: {REGISTRY['digits_simple'].command}")
assert count_parameters(model) == sizes["digits"]

# %%
samples, traj = sample_strided(diffusion, model, (64, 1, 8, 8), num_steps=250,
                               generator=generator(1),
                               num_frames=16, progress=False)
viz.show_images(samples, nrow=16, title="64 samples of the digits model, 250 steps")
plt.show()

# %% [markdown]
# Is that a digit? A classifier trained on real digits (an RBF support vector machine,
# `diffusion_core.baselines.evaluate_digit_samples`) gives its confidence for each sample.
# As yardsticks, the same classifier on held-out real digits and on uniform noise:

# %% tags=["nbval-ignore-output"]
# Sample statistics move with rounding on another machine: output not compared.
test_digits, _ = load_digits("test")
uniform = torch.rand(64, 1, 8, 8, generator=g) * 2 - 1
scores = {"model samples": evaluate_digit_samples(samples),
          "held-out digits": evaluate_digit_samples(test_digits),
          "uniform noise": evaluate_digit_samples(uniform)}


for name, s in scores.items():
    print(f"{name:16s} confident (>= 0.9): {s['confident_fraction']:5.1%}   "
          f"mean confidence {s['mean_confidence']:.3f}   "
          f"class shares {min(s['class_shares']):.2f}..{max(s['class_shares']):.2f}")
ours, noise = scores["model samples"], scores["uniform noise"]
conf_se = share_se(ours["confident_fraction"], len(samples))
print(f"model samples: {ours['confident_fraction']:.0%} ± {conf_se:.0%} confident")
glue("conf_samples", 100 * ours["confident_fraction"], digits=2)
glue("conf_samples_se", 100 * conf_se, digits=1)
glue("conf_real", 100 * scores["held-out digits"]["confident_fraction"], digits=2)
glue("conf_noise", 100 * noise["confident_fraction"], digits=2)
glue("mean_conf_samples", ours["mean_confidence"], digits=2)
# Most samples are recognised: the model's rate is about 84% (measured over 512 samples),
# and 64 samples fall to half with probability near 1e-10 (binomial).
assert ours["confident_fraction"] > 0.5
# ... and far more than noise (independent samples: the standard errors add in quadrature)
diff_se = math.sqrt(conf_se**2 + share_se(noise["confident_fraction"], len(uniform)) ** 2)
assert ours["confident_fraction"] - noise["confident_fraction"] > 5 * diff_se

# %% [markdown]
# {glue:text}`conf_samples:.0f`% (± {glue:text}`conf_samples_se:.0f`%, a standard error) of the
# samples get a confidence of at least 0.9 (mean confidence
# {glue:text}`mean_conf_samples:.2f`), against {glue:text}`conf_real:.0f`% of held-out real
# digits and {glue:text}`conf_noise:.0f`% of uniform noise.
#
# ## Watching the model denoise
#
# Drag the slider (or press play) to move from $t = 1000$ down to $t = 1$ (the paper's
# numbering). Each frame shows eight samples twice: the current $x_t$ on top, and the
# model's guess $\hat x_0$ of the final image below it. Long before $x_t$ looks like
# anything, $\hat x_0$ is a blurry average digit; it commits to a class and sharpens as $t$
# falls, while $x_t$ catches up.

# %%
def frame(i: int) -> np.ndarray:
    """x_t of samples 0..7 (a 2 x 4 grid) above their x̂_0: one (H, W) image in [0, 1]."""
    top = viz.image_grid(traj.x_t[i][:8], nrow=4)[..., 0]
    bottom = viz.image_grid(traj.pred_x0[i][:8], nrow=4)[..., 0]
    rule = np.full((2, top.shape[1]), 0.5, dtype=np.float32)  # a grey line between the two
    return np.concatenate([top, rule, bottom])


paper_t = [t + 1 for t in traj.timesteps]  # library index t is the paper's t + 1
pngs = viz.frames_to_png([frame(i) for i in range(len(paper_t))],
                         titles=[f"t = {t}" for t in paper_t],
                         size_px=160, dpi=80, vmin=0.0, vmax=1.0)
viz.scrubber(pngs, paper_t, interval_ms=300)

# %% [markdown]
# The last frame is $t = 1$, and the sample the sampler returns is exactly that frame's
# $\hat x_0$: the last step adds no noise, and its mean is $\tilde\mu_1(x_1, \hat x_0) = \hat x_0$,
# because the posterior mean's coefficient of $x_0$ is
# $\sqrt{\bar\alpha_0}\,\beta_1/(1-\bar\alpha_1) = 1$ and that of $x_1$ is 0 ($\bar\alpha_0 = 1$).

# %% tags=["nbval-ignore-output"]
# Rounding-level numbers vary by machine: output not compared.
assert len(pngs) == 16 and paper_t[0] == 1000 and paper_t[-1] == 1
gap = (traj.pred_x0[-1] - samples).abs().max().item()
print(f"largest |x̂_0 at t = 1 - returned sample| = {gap:.1e}")
assert gap < 1e-5

# %% [markdown]
# ## Summary
#
# - The timestep enters through a sinusoidal code {eq}`temb`; the similarity of two codes
#   depends only on the distance between the timesteps {eq}`temb-similarity`, so nearby
#   $t$ look alike to the network, and one set of weights serves all $T$ steps.
# - A residual block is GroupNorm, SiLU, conv, + time embedding, GroupNorm, SiLU, dropout,
#   conv, + skip; self-attention {eq}`attention` runs at the low resolutions ($4\times4$ for
#   digits, $16\times16$ in DDPM); down and up paths are joined by skip connections that
#   are concatenated along the channels.
# - The presets have {glue:text}`n_digits:,` (digits), {glue:text}`n_mnist:,` (MNIST) and
#   {glue:text}`n_cifar:,` (CIFAR-10, DDPM's 35.7M) parameters.
# - Zero-initialised last layers make every block start as the identity and the network
#   output exactly 0, the best constant guess of the noise.
# - The convolutions' receptive field matches theory exactly; GroupNorm and attention
#   make every output pixel depend on every input pixel, though most strongly on its
#   neighbourhood.
# - The trained digits model's samples are recognised confidently by a classifier
#   {glue:text}`conf_samples:.0f`% of the time.
#
# ## Exercises
#
# ### Try it: the sinusoidal timestep embedding
#
# Write {eq}`temb`: for integer timesteps $t$ and a dimension $d$, with $h = \lfloor d/2 \rfloor$,
# return the cosines $\cos(t\,\omega_i)$ in the first $h$ columns and the sines in the next $h$,
# $\omega_i = 10000^{-i/h}$; when $d$ is odd, append a column of zeros. The last cell below
# compares your function with the library's `timestep_embedding` (which computes in float32,
# so the check allows differences of $10^{-4}$). While your function still raises
# `NotImplementedError`, the cell checks the book's hidden solution instead.

# %%
def my_timestep_embedding(t: torch.Tensor, dim: int) -> torch.Tensor:
    """t: (B,) integer timesteps; dim: an int >= 2. Returns (B, dim)."""
    raise NotImplementedError  # your code here

# %% tags=["hide-cell"]
def solution_timestep_embedding(t: torch.Tensor, dim: int) -> torch.Tensor:
    h = dim // 2
    omega = 10000.0 ** (-torch.arange(h, dtype=torch.float64) / h)  # (h,)
    angles = t.double()[:, None] * omega[None, :]  # (B, h)
    emb = torch.cat([angles.cos(), angles.sin()], dim=1)  # (B, 2h)
    if dim % 2:
        emb = torch.cat([emb, torch.zeros(len(t), 1, dtype=emb.dtype)], dim=1)  # (B, dim)
    return emb

# %%
from diffusion_core.exercises import check

gen = generator(100)
cases = [(torch.tensor([0, 1, 17, 500, 999]), 24), (torch.randint(0, 1000, (6,), generator=gen), 128),
         (torch.tensor([0, 3, 999]), 7)]  # (t, dim): the digits model's 24, DDPM's 128, and an odd dim
passed = check(my_timestep_embedding, timestep_embedding, cases, solution=solution_timestep_embedding,
               name="timestep_embedding", atol=1e-4)

# %% [markdown]
# ### More exercises
#
# 1. Why can't the network be given $t/T$ as a single extra input channel instead of the
#    embedding? (It can, and it works to a degree; what does the embedding offer that a
#    single number does not?)
# 2. The similarity at lag $\Delta$ is the average {eq}`temb-similarity` of
#    $\cos(\Delta\,\omega_i)$ over log-spaced frequencies. Compute it at lags 1, 10 and 100
#    for $d = 24$ (the digits model), $d = 128$ and $d = 1024$. What does it tend to as
#    $d \to \infty$?
# 3. Remove the attention from the digits model (`UNetConfig.digits(attention_resolutions=())`;
#    the middle still has one attention block). How many parameters does that save?
# 4. Replace GroupNorm by BatchNorm in your head: in training, a batch mixes timesteps from
#    1 to 1000. What would the batch statistics of a feature map look like, and why is that a
#    problem at sampling time, when every image in the batch has the same $t$?
#
# :::{admonition} Solution
# :class: dropdown
#
# 1. A single number enters the first layer linearly, and the network has to build every
#    nonlinear function of $t$ it needs (for example "is $t$ below 50?") from it. The
#    embedding hands it a rich set of features of $t$ at many scales, and every block gets
#    its own learned projection of them. DDPM's successors keep an embedding of this kind.
# 2. `np.cos(lag * omega).mean()` with `omega = 10000.0 ** (-np.arange(h) / h)`, $h = d/2$,
#    gives 0.950, 0.579, 0.262 ($d = 24$), 0.970, 0.669, 0.477 ($d = 128$) and 0.974, 0.681,
#    0.437 ($d = 1024$). The frequencies span the same range $[10^{-4}, 1]$ for every $d$;
#    more dimensions only place them more densely, so the average becomes an integral over
#    $u = \log\omega$: $\frac{1}{\ln 10^4}\int_{\ln 10^{-4}}^{0} \cos(\Delta e^u)\,du$, which
#    `scipy.integrate.quad` puts at 0.974, 0.682, 0.437. At $d = 24$ the grid of frequencies
#    is coarse and the codes of steps 100 apart are less alike than the limit says.
# 3. `count_parameters(UNet(UNetConfig.digits()))` minus
#    `count_parameters(UNet(UNetConfig.digits(attention_resolutions=())))`: each attention
#    block at 48 channels has $2\cdot48 + 48\cdot144 + 144 + 48\cdot48 + 48 = 9504$
#    parameters, and the $4\times4$ level has `num_res_blocks` of them on the way down and
#    `num_res_blocks + 1` on the way up: three for the digits preset (one block per level),
#    28,512 parameters, 7% of the model.
# 4. The batch statistics would average feature maps of nearly clean and nearly pure-noise
#    inputs: their variance is dominated by the noisy ones. At sampling time all images are
#    at the same $t$, so the statistics are those of one noise level, different from
#    training (and running averages cannot fix that, since they also mix all $t$).
#    GroupNorm normalises each image on its own and avoids the problem.
# :::
