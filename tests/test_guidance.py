"""Tests for conditioning and classifier-free guidance, DDIM inversion and slerp.

The samplers are checked on 1-D data whose every score is known in closed form: two
classes N(-m, s²) and N(+m, s²), so ε̂(x_t, y) and ε̂(x_t, ∅) are exact and what the
samplers return can be compared with the distributions they should draw from.
"""

import math
from types import SimpleNamespace

import pytest
import torch
from torch import nn

from diffusion_core import GaussianDiffusion, make_schedule, sample_ddim, sample_ddpm, sample_strided
from diffusion_core.guidance import check_guidance, drop_labels, guided
from diffusion_core.models import UNet, UNetConfig
from diffusion_core.sampling import ddim_invert, slerp

M, S = 0.5, 0.3  # class means -M, +M and their standard deviation


class ExactTwoClass(nn.Module):
    """The exact ε̂ of two equally likely classes N(∓M, S²) in 1-D: label 0, 1, or 2 (none).

    Class k's marginal at step t is N(√ᾱ μ_k, ᾱ S² + 1 - ᾱ); ε̂ = -√(1 - ᾱ) ∇ log p_t.
    """

    def __init__(self, diffusion: GaussianDiffusion, dtype=torch.float64):
        super().__init__()
        self.config = SimpleNamespace(num_classes=2)
        self.acp = diffusion.schedule.alphas_cumprod.to(dtype)
        self.calls: list[int] = []  # the batch size of every call

    def forward(self, x, t, y=None):
        self.calls.append(x.shape[0])
        if y is None:
            y = torch.full_like(t, 2)
        a = self.acp[t].to(x.dtype).reshape(-1, 1)
        var = a * S ** 2 + 1 - a
        means = torch.stack([-M * a.sqrt(), M * a.sqrt()])  # (2, B, 1)
        log_p = -(x - means) ** 2 / (2 * var)  # (2, B, 1): each class's log density (shared var)
        w = torch.softmax(log_p, dim=0)  # p(k | x_t)
        score_k = -(x - means) / var  # (2, B, 1)
        cond = torch.where(y.reshape(-1, 1) == 0, score_k[0], score_k[1])
        score = torch.where(y.reshape(-1, 1) == 2, (w * score_k).sum(0), cond)
        return -(1 - a).sqrt() * score

    def p_class0(self, x):
        """p(y = 0 | x) at the data: the Bayes classifier of the two classes."""
        return torch.sigmoid(-2 * M * x / S ** 2).squeeze(-1)


@pytest.fixture(scope="module")
def diffusion():
    return GaussianDiffusion(make_schedule("linear", 1000), num_levels=256)


def draw(diffusion, model, n, generator, sampler="ddpm", **kw):
    kw = dict(kw, generator=generator, dtype=torch.float64, clip_denoised=False, progress=False)
    if sampler == "ddpm":
        return sample_ddpm(diffusion, model, (n, 1), **kw)
    if sampler == "strided":
        return sample_strided(diffusion, model, (n, 1), 100, **kw)
    return sample_ddim(diffusion, model, (n, 1), 100, **kw)


# ---- the network takes labels -----------------------------------------------------------


def tiny_unet(num_classes: int, **overrides) -> UNet:
    cfg = UNetConfig.digits(base_channels=8, num_groups=4, num_heads=1, num_classes=num_classes,
                            **overrides)
    net = UNet(cfg).eval()
    with torch.no_grad():  # leave the zero init, so that the output depends on everything
        for p in net.parameters():
            p.add_(0.1 * torch.randn_like(p))
    return net


def test_the_label_changes_the_output_and_none_means_no_label():
    net = tiny_unet(10)
    x, t = torch.randn(4, 1, 8, 8), torch.tensor([0, 10, 500, 999])
    no_label = net(x, t, torch.full((4,), net.config.null_label))
    assert torch.equal(net(x, t), no_label)
    for y in range(10):
        assert (net(x, t, torch.full((4,), y)) - no_label).abs().amax(dim=(1, 2, 3)).min() > 1e-4


def test_labels_are_refused_where_they_do_not_fit():
    x, t = torch.randn(2, 1, 8, 8), torch.tensor([1, 2])
    with pytest.raises(ValueError, match="num_classes=0 and takes no labels"):
        tiny_unet(0)(x, t, torch.tensor([1, 2]))
    with pytest.raises(ValueError, match=r"y must be an integer tensor of labels with shape \(B,\) = \(2,\)"):
        tiny_unet(10)(x, t, torch.tensor([1.0, 2.0]))
    with pytest.raises(ValueError, match="num_classes must be an integer >= 0"):
        UNetConfig.digits(num_classes=-1)


def test_an_unconditional_unet_keeps_its_parameters_and_outputs():
    torch.manual_seed(0)
    a = UNet(UNetConfig.digits())
    torch.manual_seed(0)
    b = UNet(UNetConfig.digits(num_classes=10))
    names_a = set(a.state_dict())
    assert names_a == set(b.state_dict()) - {"label_emb.weight"}
    assert b.label_emb.weight.shape == (11, 4 * 24)  # ten labels and "no label"


# ---- guidance -----------------------------------------------------------------------------


@pytest.mark.parametrize("scale", [0.0, 1.0, 3.0])
def test_guided_mixes_the_two_branches(diffusion, scale):
    model = ExactTwoClass(diffusion)
    x, t, y = torch.randn(5, 1, dtype=torch.float64), torch.tensor([0, 5, 100, 600, 999]), \
        torch.tensor([0, 1, 0, 1, 1])
    cond, uncond = model(x, t, y), model(x, t)
    model.calls.clear()
    out = guided(model, y, scale)(x, t)
    torch.testing.assert_close(out, uncond + scale * (cond - uncond), rtol=1e-12, atol=1e-12)
    assert model.calls == ([10] if scale not in (0, 1) else [5])  # one call, both branches batched


def test_with_learned_variances_only_eps_is_guided():
    net = tiny_unet(10, learn_sigma=True)  # 2C channels: ε̂ and the variance output v
    x, t, y = torch.randn(3, 1, 8, 8), torch.tensor([3, 30, 300]), torch.tensor([1, 5, 9])
    out = guided(net, y, 2.5)(x, t)
    cond, uncond = net(x, t, y), net(x, t)
    torch.testing.assert_close(out[:, :1], uncond[:, :1] + 2.5 * (cond[:, :1] - uncond[:, :1]))
    torch.testing.assert_close(out[:, 1:], cond[:, 1:])


@pytest.mark.parametrize("sampler", ["ddpm", "ddim"])  # (strided 100 with β̃ narrows: ch11)
def test_label_alone_samples_its_class(diffusion, generator, sampler):
    """guidance_scale 1: the samples of label 0 follow N(-M, S²): mean within 5 standard
    errors, and no more than 1% of them on the other class's side of 0 beyond noise."""
    n = 4000
    model = ExactTwoClass(diffusion)
    x = draw(diffusion, model, n, generator(1), sampler, y=torch.zeros(n, dtype=torch.long))[:, 0]
    se = S / math.sqrt(n)
    assert abs(x.mean().item() + M) < 5 * se + 0.01, x.mean()  # 0.01: the sampler's step error
    assert abs(x.std().item() - S) < 5 * S / math.sqrt(2 * n) + 0.01, x.std()
    # P(N(-M, S²) > 0) = Φ(-M/S) = 4.8%; a mixture would give 50%
    share = (x > 0).double().mean().item()
    p = 0.5 * math.erfc(M / S / math.sqrt(2))
    assert abs(share - p) < 5 * math.sqrt(p * (1 - p) / n) + 0.01, share


def test_scale_zero_samples_the_mixture(diffusion, generator):
    n = 4000
    model = ExactTwoClass(diffusion)
    x = draw(diffusion, model, n, generator(2), y=torch.zeros(n, dtype=torch.long), guidance_scale=0.0)
    share = (x > 0).double().mean().item()
    assert abs(share - 0.5) < 5 * math.sqrt(0.25 / n), share


def test_larger_scales_make_samples_more_typical_of_their_label(diffusion, generator):
    """The same noise at s = 1 and s = 4: the Bayes classifier's p(y | x) rises, paired."""
    n = 2000
    model = ExactTwoClass(diffusion)
    y = torch.zeros(n, dtype=torch.long)
    probs = []
    for s in (1.0, 4.0):
        x = draw(diffusion, model, n, generator(3), "ddim", y=y, guidance_scale=s)
        probs.append(model.p_class0(x))
    diff = probs[1] - probs[0]
    assert diff.mean() > 5 * diff.std() / math.sqrt(n), (diff.mean(), diff.std())
    assert probs[0].mean() < 0.99 < probs[1].mean()  # measured: 0.93 and 0.999


@pytest.mark.parametrize("kwargs,words", [
    (dict(guidance_scale=-1.0), "guidance_scale must be a finite number >= 0"),
    (dict(guidance_scale=float("nan")), "guidance_scale must be a finite number >= 0"),
    (dict(guidance_scale=True), "guidance_scale must be a finite number >= 0"),
    (dict(y=None, guidance_scale=2.0), "needs labels y"),
    (dict(y=torch.tensor([0, 2])), r"labels in 0..num_classes-1 = 0..1, got values in 0..2"),
    (dict(y=torch.tensor([0, -1])), r"labels in 0..num_classes-1 = 0..1"),
    (dict(y=torch.tensor([0.0, 1.0])), r"integer tensor of labels with shape \(B,\) = \(2,\)"),
    (dict(y=torch.tensor([0, 1, 1])), r"shape \(B,\) = \(2,\)"),
])
def test_samplers_refuse_bad_labels_and_scales_before_any_work(diffusion, kwargs, words):
    model = ExactTwoClass(diffusion)
    kwargs = {"y": torch.tensor([0, 1]), **kwargs}
    with pytest.raises(ValueError, match=words):
        sample_ddim(diffusion, model, (2, 1), 10, progress=False, **kwargs)
    assert model.calls == []


def test_labels_for_an_unconditional_model_are_refused():
    with pytest.raises(ValueError, match="the model takes no labels"):
        check_guidance(tiny_unet(0), torch.tensor([1]), 1.0, 1)


def test_drop_labels_drops_the_asked_share(generator):
    y = torch.arange(20000) % 10
    dropped = drop_labels(y, 0.1, 10, generator(4))
    kept = dropped != 10
    assert torch.equal(dropped[kept], y[kept])
    share = 1 - kept.double().mean().item()
    assert abs(share - 0.1) < 5 * math.sqrt(0.1 * 0.9 / len(y)), share
    assert torch.equal(drop_labels(y, 0.0, 10, generator(4)), y)
    assert (drop_labels(y, 1.0, 10, generator(4)) == 10).all()


# ---- DDIM inversion ---------------------------------------------------------------------


class ExactGaussian(nn.Module):
    """The exact ε̂ for data N(m, s²) in 1-D."""

    def __init__(self, diffusion, m=0.3, s=0.2):
        super().__init__()
        self.acp, self.m, self.s = diffusion.schedule.alphas_cumprod, m, s

    def forward(self, x, t):
        a = self.acp[t].to(x.dtype).reshape(-1, 1)
        var = a * self.s ** 2 + 1 - a
        return (1 - a).sqrt() * (x - a.sqrt() * self.m) / var


def test_inversion_follows_the_probability_flow_map(diffusion):
    """For Gaussian data the deterministic map is the quantile map between N(m, s²) and
    q(x_T) = N(√ᾱ_T m, ᾱ_T s² + 1 - ᾱ_T): x_T = √ᾱ_T m + σ_T (x_0 - m) / s."""
    model = ExactGaussian(diffusion)
    x0 = torch.linspace(-0.3, 0.9, 13, dtype=torch.float64).reshape(-1, 1)
    a = diffusion.schedule.alphas_cumprod[-1].item()
    exact = math.sqrt(a) * model.m + math.sqrt(a * model.s ** 2 + 1 - a) * (x0 - model.m) / model.s
    errors = {n: (ddim_invert(diffusion, model, x0, n, clip_denoised=False, progress=False)
                  - exact).abs().max().item() for n in (10, 100, 1000)}
    # A first-order method: ten times the steps, a tenth of the error (measured 1.41, 0.143,
    # 0.0107 at 10, 100, 1000 steps).
    assert errors[1000] < 0.02 and errors[10] > 5 * errors[100] > 25 * errors[1000], errors


def test_decoding_the_inversion_gives_the_data_back_better_with_more_steps(diffusion):
    model = ExactGaussian(diffusion)
    x0 = torch.linspace(-0.3, 0.9, 13, dtype=torch.float64).reshape(-1, 1)
    errors = {}
    for n in (10, 100, 1000):
        x_T = ddim_invert(diffusion, model, x0, n, progress=False)
        back = sample_ddim(diffusion, model, x0.shape, n, noise=x_T, dtype=torch.float64, progress=False)
        errors[n] = (back - x0).abs().max().item()
    # First order again (measured 0.445, 0.064, 0.0066)
    assert errors[1000] < 0.015 and errors[10] > 5 * errors[100] > 25 * errors[1000], errors


def test_inversion_refuses_what_is_not_data(diffusion):
    with pytest.raises(ValueError, match=r"x0 must be a float tensor of shape \(B, C, ...\)"):
        ddim_invert(diffusion, ExactGaussian(diffusion), torch.zeros(3), 10)


# ---- slerp ---------------------------------------------------------------------------------


def test_slerp_keeps_the_norm_and_moves_at_a_constant_angle(generator):
    g = generator(5)
    z0, z1 = torch.randn(3, 64, generator=g, dtype=torch.float64), torch.randn(3, 64, generator=g, dtype=torch.float64)
    z1 = z1 / z1.norm(dim=1, keepdim=True) * z0.norm(dim=1, keepdim=True)  # equal norms
    torch.testing.assert_close(slerp(z0, z1, 0.0), z0)
    torch.testing.assert_close(slerp(z0, z1, 1.0), z1)
    total = torch.arccos((z0 * z1).sum(1) / (z0.norm(dim=1) * z1.norm(dim=1)))
    for a in (0.25, 0.5, 0.8):
        z = slerp(z0, z1, a)
        torch.testing.assert_close(z.norm(dim=1), z0.norm(dim=1))
        angle = torch.arccos((z0 * z).sum(1) / (z0.norm(dim=1) * z.norm(dim=1)))
        torch.testing.assert_close(angle, a * total)
    # The straight line's midpoint is shorter, by cos(θ/2): the reason to use the arc
    torch.testing.assert_close(((z0 + z1) / 2).norm(dim=1), z0.norm(dim=1) * torch.cos(total / 2))


def test_slerp_of_a_noise_with_itself_is_that_noise():
    z = torch.randn(2, 10)
    torch.testing.assert_close(slerp(z, z, 0.3), z)


def test_slerp_refuses_bad_input():
    with pytest.raises(ValueError, match=r"alpha must lie in \[0, 1\]"):
        slerp(torch.randn(1, 4), torch.randn(1, 4), 1.5)
    with pytest.raises(ValueError, match="z0 and z1 must have the same shape"):
        slerp(torch.randn(1, 4), torch.randn(1, 5), 0.5)
