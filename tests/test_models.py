"""Tests for the networks in diffusion_core.models (they know nothing about diffusion)."""

import math

import pytest
import torch

from diffusion_core.models import (
    MLPConfig,
    MLPDenoiser,
    UNet,
    UNetConfig,
    count_parameters,
    timestep_embedding,
)
from diffusion_core.models.unet import AttentionBlock

SMALL_PRESETS = ["digits", "mnist"]


def make_unet(preset: str, seed: int = 0, **overrides) -> UNet:
    torch.manual_seed(seed)
    return UNet(getattr(UNetConfig, preset)(**overrides))


def random_inputs(cfg: UNetConfig, batch: int = 2) -> tuple[torch.Tensor, torch.Tensor]:
    x = torch.randn(batch, cfg.in_channels, cfg.image_size, cfg.image_size)
    t = torch.randint(0, 1000, (batch,))
    return x, t


def train_steps(model: torch.nn.Module, x: torch.Tensor, t: torch.Tensor, steps: int) -> None:
    """A few AdamW steps towards a fixed non-zero target.

    The zero-initialised layers unlock the network in stages: step 1 moves only the output
    conv, step 2 the last conv of each residual branch, and from step 3 on the layers inside
    the branches (and the timestep path) receive gradient and move too.
    """
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    target = torch.ones_like(model(x, t))
    for _ in range(steps):
        loss = (model(x, t) - target).pow(2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()


@pytest.fixture(scope="module")
def trained_digits(seed) -> UNet:
    """A digits UNet moved away from its (partly zero) initialisation, without dropout."""
    model = make_unet("digits", seed, dropout=0.0)
    x, t = random_inputs(model.config, batch=4)
    train_steps(model, x, t, steps=3)
    return model.eval()


# -----------------------------------------------------------------------------
# Timestep embedding


def test_timestep_embedding_at_t0_is_cos_one_sin_zero():
    emb = timestep_embedding(torch.zeros(3, dtype=torch.long), 16)
    assert emb.shape == (3, 16)
    assert torch.equal(emb[:, :8], torch.ones(3, 8))
    assert torch.equal(emb[:, 8:], torch.zeros(3, 8))


def test_timestep_embedding_matches_the_transformer_formula():
    # Computed independently with the math module: w_i = 10000^(-i / half).
    dim, half = 10, 5
    ts = [1, 7, 999]
    emb = timestep_embedding(torch.tensor(ts), dim)
    for b, t in enumerate(ts):
        for i in range(half):
            w = 10000.0 ** (-i / half)
            assert emb[b, i].item() == pytest.approx(math.cos(t * w), abs=1e-4)
            assert emb[b, half + i].item() == pytest.approx(math.sin(t * w), abs=1e-4)


def test_timestep_embedding_odd_dim_pads_with_zero_and_separates_timesteps():
    emb = timestep_embedding(torch.arange(1000), 7)
    assert emb.shape == (1000, 7)
    assert torch.equal(emb[:, -1], torch.zeros(1000))
    # every timestep in 0..999 gets its own code
    assert torch.cdist(emb, emb).add(torch.eye(1000)).min() > 1e-3


# -----------------------------------------------------------------------------
# Configs and parameter counts


@pytest.mark.parametrize("preset, low, high", [("digits", 0.35e6, 0.7e6),
                                                ("mnist", 1.3e6, 1.7e6)])
def test_small_preset_parameter_counts(preset, low, high):
    assert low <= count_parameters(make_unet(preset)) <= high


def test_cifar10_preset_matches_ddpm_parameter_count_and_runs():
    # Ho et al. (2020) report 35.7M parameters for their CIFAR-10 model.
    model = make_unet("cifar10").eval()
    assert count_parameters(model) == pytest.approx(35.7e6, rel=0.01)
    x, t = random_inputs(model.config, batch=1)
    with torch.no_grad():
        assert model(x, t).shape == (1, 3, 32, 32)


def test_count_parameters_skips_frozen_parameters():
    model = torch.nn.Linear(3, 4)  # 3 * 4 weights + 4 biases
    assert count_parameters(model) == 16
    model.bias.requires_grad_(False)
    assert count_parameters(model) == 12


def test_config_rejects_groups_that_do_not_divide_the_channels():
    with pytest.raises(ValueError, match="num_groups=5 must divide"):
        UNetConfig.digits(num_groups=5)


def test_config_rejects_attention_at_a_resolution_the_model_never_has():
    with pytest.raises(ValueError, match="attention_resolutions must be among .* got 5"):
        UNetConfig.digits(attention_resolutions=(5,))


def test_config_rejects_heads_that_do_not_divide_the_channels():
    with pytest.raises(ValueError, match="num_heads=5 must divide"):
        UNetConfig.digits(num_heads=5, num_groups=1)


def test_resolutions_round_up_odd_sizes():
    assert UNetConfig.mnist(channel_mult=(1, 2, 2, 2), attention_resolutions=()).resolutions \
        == (28, 14, 7, 4)


# -----------------------------------------------------------------------------
# UNet behaviour


@pytest.mark.parametrize("preset", SMALL_PRESETS)
@pytest.mark.parametrize("learn_sigma", [False, True])
def test_unet_output_shape_and_zero_at_initialisation(preset, learn_sigma):
    model = make_unet(preset, learn_sigma=learn_sigma)
    cfg = model.config
    x, t = random_inputs(cfg, batch=3)
    out = model(x, t)
    channels = 2 * cfg.in_channels if learn_sigma else cfg.in_channels
    assert out.shape == (3, channels, cfg.image_size, cfg.image_size)
    assert torch.equal(out, torch.zeros_like(out))


def test_models_run_in_float64():
    unet = make_unet("digits").double()
    x, t = random_inputs(unet.config)
    assert unet(x.double(), t).dtype == torch.float64
    mlp = MLPDenoiser(MLPConfig()).double()
    assert mlp(torch.randn(3, 2, dtype=torch.float64), torch.arange(3)).dtype == torch.float64


def test_unet_handles_odd_sizes_down_to_four_pixels():
    # 28 -> 14 -> 7 -> 4 and back up to the skips' exact sizes 7, 14, 28
    model = make_unet("mnist", channel_mult=(1, 1, 1, 1), base_channels=8,
                      attention_resolutions=(7, 4), num_res_blocks=1, learn_sigma=True)
    x, t = random_inputs(model.config)
    assert model(x, t).shape == (2, 2, 28, 28)
    model = make_unet("digits", image_size=7, attention_resolutions=())  # 7 -> 4 -> 7
    x, t = random_inputs(model.config)
    assert model(x, t).shape == (2, 1, 7, 7)


def test_unet_gradients_reach_every_parameter(seed):
    model = make_unet("digits", seed)
    x, t = random_inputs(model.config, batch=4)
    train_steps(model, x, t, steps=1)
    assert model(x, t).abs().max() > 0  # the first step already moves the output off zero
    train_steps(model, x, t, steps=1)
    model.zero_grad()
    (model(x, t) - 1).pow(2).mean().backward()  # the third backward pass
    for name, p in model.named_parameters():
        assert p.grad is not None, f"{name} gets no gradient"
        assert p.grad.abs().max() > 0, f"{name} gets a zero gradient"


def test_unet_output_depends_on_the_timestep(trained_digits, seed):
    torch.manual_seed(seed + 1)
    x = torch.randn(1, 1, 8, 8).expand(3, -1, -1, -1)  # one image, three timesteps
    with torch.no_grad():
        out = trained_digits(x, torch.tensor([0, 1, 500]))
    assert (out[0] - out[1]).abs().max() > 1e-6
    assert (out[0] - out[2]).abs().max() > 1e-6


def test_unet_samples_do_not_interact_within_a_batch(trained_digits, seed):
    torch.manual_seed(seed + 2)
    x, t = random_inputs(trained_digits.config, batch=5)
    with torch.no_grad():
        batched = trained_digits(x, t)
        assert batched.abs().max() > 0  # a zero output would make this test vacuous
        one_by_one = torch.cat([trained_digits(x[i:i + 1], t[i:i + 1]) for i in range(5)])
        # changing one sample leaves the others' outputs unchanged
        x2 = x.clone()
        x2[0] = torch.randn_like(x2[0])
        changed = trained_digits(x2, t)
    torch.testing.assert_close(batched, one_by_one, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(changed[1:], batched[1:], rtol=1e-4, atol=1e-5)
    assert (changed[0] - batched[0]).abs().max() > 1e-6


def test_attention_block_matches_per_head_softmax_attention():
    # Reference written with explicit loops over samples and heads, from the definition
    # softmax(q k^T / sqrt(hs)) v, with q, k, v the channel slices of one head.
    torch.manual_seed(0)
    B, C, H, W, nh = 2, 8, 3, 5, 2
    hs = C // nh
    block = AttentionBlock(C, num_heads=nh, groups=4)
    torch.nn.init.normal_(block.proj.weight)  # undo the zero init
    x = torch.randn(B, C, H, W)
    with torch.no_grad():
        out = block(x)
        normed = torch.nn.functional.group_norm(x, 4, block.norm.weight, block.norm.bias)
        expected = torch.empty_like(x)
        for b in range(B):
            tokens = normed[b].reshape(C, H * W).T  # (HW, C): one row per position
            q, k, v = (tokens @ block.qkv.weight.T + block.qkv.bias).split(C, dim=1)
            heads = []
            for i in range(nh):
                sl = slice(i * hs, (i + 1) * hs)
                weights = torch.softmax(q[:, sl] @ k[:, sl].T / math.sqrt(hs), dim=1)
                heads.append(weights @ v[:, sl])
            attn = torch.cat(heads, dim=1) @ block.proj.weight.T + block.proj.bias  # (HW, C)
            expected[b] = x[b] + attn.T.reshape(C, H, W)
    torch.testing.assert_close(out, expected, rtol=1e-4, atol=1e-5)


# -----------------------------------------------------------------------------
# Input checks


@pytest.mark.parametrize("x_shape, match", [
    ((2, 8, 8), r"x must have shape \(B, in_channels, image_size, image_size\) = \(B, 1, 8, 8\)"),
    ((2, 3, 8, 8), r"x must have shape .* got shape \(2, 3, 8, 8\)"),
    ((2, 1, 9, 9), r"x must have shape .* got shape \(2, 1, 9, 9\)"),
])
def test_unet_rejects_badly_shaped_x(x_shape, match):
    model = make_unet("digits")
    with pytest.raises(ValueError, match=match):
        model(torch.randn(x_shape), torch.zeros(2, dtype=torch.long))


def test_unet_rejects_bad_timesteps():
    model = make_unet("digits")
    x = torch.randn(2, 1, 8, 8)
    with pytest.raises(TypeError, match=r"t must be an integer tensor"):
        model(x, torch.zeros(2))
    with pytest.raises(ValueError, match=r"t must have shape \(B,\) = \(2,\)"):
        model(x, torch.zeros(3, dtype=torch.long))
    with pytest.raises(ValueError, match=r"t must have shape \(B,\)"):
        model(x, torch.zeros(2, 1, dtype=torch.long))
    with pytest.raises(TypeError, match=r"t must be an integer torch.Tensor"):
        model(x, 5)


def test_unet_rejects_integer_images():
    model = make_unet("digits")
    with pytest.raises(TypeError, match="x must be a floating-point tensor"):
        model(torch.zeros(2, 1, 8, 8, dtype=torch.uint8), torch.zeros(2, dtype=torch.long))


# -----------------------------------------------------------------------------
# MLP


@pytest.mark.parametrize("learn_sigma", [False, True])
@pytest.mark.parametrize("data_dim", [2, 5])
def test_mlp_shapes_and_zero_at_initialisation(data_dim, learn_sigma):
    model = MLPDenoiser(MLPConfig(data_dim=data_dim, learn_sigma=learn_sigma))
    out = model(torch.randn(7, data_dim), torch.randint(0, 1000, (7,)))
    assert out.shape == (7, data_dim * (2 if learn_sigma else 1))
    assert torch.equal(out, torch.zeros_like(out))


@pytest.mark.parametrize("num_layers", [3, 4])
def test_mlp_is_small(num_layers):
    assert 50_000 <= count_parameters(MLPDenoiser(MLPConfig(num_layers=num_layers))) <= 100_000


def test_mlp_trains_every_parameter_and_depends_on_t(seed):
    torch.manual_seed(seed)
    model = MLPDenoiser(MLPConfig())
    x, t = torch.randn(16, 2), torch.randint(0, 1000, (16,))
    train_steps(model, x, t, steps=2)
    model.zero_grad()
    (model(x, t) - 1).pow(2).mean().backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and p.grad.abs().max() > 0, f"{name} gets no gradient"
    with torch.no_grad():
        out = model(x[:1].expand(2, -1), torch.tensor([0, 500]))
    assert (out[0] - out[1]).abs().max() > 1e-6


def test_mlp_rejects_bad_inputs():
    model = MLPDenoiser(MLPConfig())
    with pytest.raises(ValueError, match=r"x must have shape \(B, data_dim\) = \(B, 2\)"):
        model(torch.randn(4, 3), torch.zeros(4, dtype=torch.long))
    with pytest.raises(TypeError, match="t must be an integer tensor"):
        model(torch.randn(4, 2), torch.zeros(4))
    with pytest.raises(ValueError, match=r"t must have shape \(B,\) = \(4,\)"):
        model(torch.randn(4, 2), torch.zeros(5, dtype=torch.long))
