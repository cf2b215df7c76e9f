"""Tests for diffusion_core.recipe: dataset specs, and configs checked as a whole."""

import subprocess
import sys
from pathlib import Path

import pytest
import torch

from diffusion_core.recipe import DATASET_SPECS, TrainConfig, build_model, load_dataset, sample_shape

MNIST = str(Path(__file__).resolve().parents[1] / "data" / "mnist")  # shipped test split


@pytest.mark.parametrize("name", ["digits", "two_moons", "checkerboard", "mnist9k"])
def test_each_dataset_spec_describes_its_data(name):
    """The spec's shape and levels, checked against the loaded data itself."""
    spec = DATASET_SPECS[name]
    config = TrainConfig(dataset=name, data_dir=MNIST if name == "mnist9k" else None)
    x = load_dataset(config)
    assert tuple(x.shape[1:]) == spec.shape == sample_shape(config)
    if spec.discrete:
        k = (x + 1) / 2 * (spec.num_levels - 1)  # level index of every value
        assert torch.allclose(k, k.round(), atol=1e-5) and k.min() >= 0
        assert k.max() <= spec.num_levels - 1
    else:
        assert len(torch.unique(x)) > 1000  # points, not levels


def test_the_auto_preset_builds_a_network_for_the_datas_shape():
    for name in ("digits", "two_moons"):
        config = TrainConfig(dataset=name)
        x = load_dataset(config)[:3]
        assert build_model(config)(x, torch.zeros(3, dtype=torch.long)).shape == x.shape


BAD = [  # (options, words the one-line error must contain)
    (dict(dataset="two_moons", loss_type="vlb"),
     ["loss_type='vlb'", "discrete decoder", "two_moons", "continuous", "loss_type='simple'"]),
    (dict(dataset="swiss_roll", loss_type="hybrid"), ["loss_type='hybrid'", "swiss_roll"]),
    (dict(dataset="two_moons", model_var="learned_range"),
     ["model_var='learned_range'", "fixed_small", "fixed_large"]),
    (dict(model_preset="cifar10"),
     ["model_preset='cifar10'", "3x32x32", "digits", "1x8x8", "'auto' or 'digits'"]),
    (dict(model_preset="mlp"), ["an MLP", "shape 2", "1x8x8"]),
    (dict(dataset="two_moons", model_preset="digits"), ["a UNet", "1x8x8", "two_moons", "'mlp'"]),
    (dict(model_overrides={"wings": 2}),
     ["'wings'", "--model wings=", "not a field of UNetConfig", "base_channels", "num_heads"]),
    (dict(dataset="two_moons", model_overrides={"widht": 64}), ["'widht'", "MLPConfig", "hidden"]),
    (dict(model_overrides={"learn_sigma": True}), ["learn_sigma=True", "model_var='fixed_small'"]),
    (dict(model_overrides={"channel_mult": 3}), ["channel_mult must be a tuple", "got 3"]),
    (dict(model_overrides={"in_channels": 3}), ["3x8x8", "1x8x8"]),
    (dict(dataset="mnist9k"), ["dataset='mnist9k' needs data_dir"]),
    (dict(dataset="mnist9k", data_dir="x", model_preset="digits"), ["1x8x8", "1x28x28"]),
]


@pytest.mark.parametrize("options,words", BAD, ids=[str(o) for o, _ in BAD])
def test_configs_that_do_not_fit_together_are_refused_by_name(options, words):
    with pytest.raises(ValueError) as info:
        TrainConfig(**options)
    message = str(info.value)
    assert "\n" not in message
    for w in words:
        assert w in message, (w, message)


def test_the_command_line_refuses_them_before_any_work(tmp_path):
    """Exit 2 with the one-line message, before data, network or output directory exist."""
    for args in (["--dataset", "two_moons", "--loss-type", "vlb"], ["--model", "wings=2"],
                 ["--model-preset", "cifar10"]):
        out = tmp_path / "run"
        proc = subprocess.run([sys.executable, "-m", "diffusion_core", "train", *args,
                               "--out-dir", str(out)], capture_output=True, text=True, timeout=120)
        assert proc.returncode == 2, proc.stderr
        lines = proc.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr
        assert not out.exists() and "training" not in proc.stderr
