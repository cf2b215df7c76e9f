"""Tests for the command line, `python -m diffusion_core train | sample | nll`."""

import math
import os
import subprocess
import sys
from pathlib import Path

import matplotlib.image
import numpy as np
import pytest
import torch

from diffusion_core.cli import UsageError, build_parser, config_from_args, main, use_channels_last
from diffusion_core.training import TrainConfig

ROOT = Path(__file__).resolve().parents[1]
TINY = ["--model", "base_channels=8", "--model", "channel_mult=[1,2]", "--model",
        "num_res_blocks=1", "--model", "attention_resolutions=[]", "--model", "num_groups=4",
        "--model", "num_heads=1"]


def run_cli(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-m", "diffusion_core", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=300)


def cli(capsys, *args: str) -> subprocess.CompletedProcess:
    """`main(args)` in this process (no interpreter start-up and imports, ~3.5 s each), with
    its exit code and output in the shape `run_cli` returns. `run_cli` tests the entry point."""
    capsys.readouterr()
    code = main(list(args))
    out = capsys.readouterr()
    return subprocess.CompletedProcess(args, code, out.out, out.err)


def mean_and_se(lines: list[str]) -> dict[str, tuple[float, float]]:
    """{first word: (value, standard error)} of lines that end in 'value ± se'."""
    return {line.split()[0]: (float(line.split()[-3]), float(line.split()[-1])) for line in lines}


def test_help_works_for_every_command(capsys):
    with pytest.raises(SystemExit) as e:
        main(["--help"])
    assert e.value.code == 0 and "{train,sample,nll}" in capsys.readouterr().out
    for command in ("train", "sample", "nll"):
        with pytest.raises(SystemExit) as e:
            main([command, "--help"])
        assert e.value.code == 0
        assert "usage: python -m diffusion_core " + command in capsys.readouterr().out


def test_train_options_map_onto_the_config():
    args = build_parser().parse_args(["train", "--steps", "7", "--schedule", "cosine",
                                      "--T", "500", *TINY])
    config = config_from_args(args)
    assert config == TrainConfig(steps=7, schedule="cosine", T=500, out_dir="runs/digits",
                                 model_overrides={"base_channels": 8, "channel_mult": (1, 2),
                                                  "num_res_blocks": 1, "attention_resolutions": (),
                                                  "num_groups": 4, "num_heads": 1})


def test_train_sample_nll_end_to_end(tmp_path, capsys):
    run = tmp_path / "run"
    out = run_cli("train", "--steps", "3", "--T", "50", "--batch-size", "8", "--out-dir",
                  str(run), "--quiet", *TINY)
    assert out.returncode == 0, out.stderr
    assert "trained digits to step 3" in out.stdout
    assert (run / "checkpoint" / "ema.safetensors").is_file()

    png = tmp_path / "grid.png"
    out = cli(capsys, "sample", "--checkpoint", str(run), "--n", "6", "--nrow", "3",
                  "--sampler", "ddim", "--steps", "5", "--eta", "0.5", "--out", str(png), "--quiet")
    assert out.returncode == 0, out.stderr
    image = matplotlib.image.imread(png)
    assert image.shape[:2] == (2 * 8 + 3 * 2, 3 * 8 + 4 * 2)  # 2 rows x 3 of 8x8, padding 2

    # .npz: the raw samples (the same seed draws the same samples), and the grid beside them
    npz = tmp_path / "samples.npz"
    out = cli(capsys, "sample", "--checkpoint", str(run), "--n", "6", "--nrow", "3",
                  "--sampler", "ddim", "--steps", "5", "--eta", "0.5", "--out", str(npz), "--quiet")
    assert out.returncode == 0, out.stderr
    with np.load(npz) as f:
        samples, pixels = f["samples"], f["arr_0"]
    assert samples.shape == (6, 1, 8, 8) and samples.dtype == np.float32
    assert pixels.shape == (6, 8, 8, 1) and pixels.dtype == np.uint8
    assert np.abs(pixels[..., 0] / 127.5 - 1 - samples[:, 0].clip(-1, 1)).max() <= 0.5 / 127.5 + 1e-6
    assert np.array_equal(matplotlib.image.imread(tmp_path / "samples.png"), image)

    # the default sampler is the stochastic DPM-Solver++ on 20 steps; the ODE one on request
    for args, words in [((), "(sde-dpm-solver, 20 steps)"), (("--sampler", "dpm-solver"), "(dpm-solver, 20 steps)")]:
        out = cli(capsys, "sample", "--checkpoint", str(run), "--n", "2", *args,
                  "--out", str(tmp_path / "dpm.png"), "--quiet")
        assert out.returncode == 0 and words in out.stdout, (out.stdout, out.stderr)

    # this model takes no labels: asking for one is refused, not ignored
    out = cli(capsys, "sample", "--checkpoint", str(run), "--n", "2", "--steps", "3", "--label", "3",
                  "--out", str(tmp_path / "x.png"), "--quiet")
    assert out.returncode == 2 and "--label needs a conditional model" in out.stderr, out.stderr

    out = cli(capsys, "nll", "--checkpoint", str(run), "--n", "4", "--snap-levels", "--quiet")
    assert out.returncode == 0, out.stderr
    blocks = [b.splitlines() for b in out.stdout.split("digits test split, 4 images")[1:]]
    assert len(blocks) == 2 and "snapped to 17 levels" in blocks[1][0]
    for block in blocks:
        values = {name: value for name, (value, _) in mean_and_se(block[1:5]).items()}
        assert set(values) == {"prior", "L_0", "sum", "total"}
        assert values["total"] == pytest.approx(values["prior"] + values["L_0"] + values["sum"],
                                                abs=2e-4)
    exact = mean_and_se(blocks[0][1:5])

    # --t-samples: the stratified estimate of the same bound, 3 timesteps per image
    out = cli(capsys, "nll", "--checkpoint", str(run), "--n", "4", "--t-samples", "3", "--baselines",
                  "--quiet")
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    # both baselines scored on the same 4 images: exact discrete likelihoods, so positive, and
    # the per-pixel categorical below log2(17) bits/dim (the uniform over the 17 levels)
    start = next(i for i, line in enumerate(lines) if line.startswith("baselines fitted on the"))
    categorical, mixture = (value for value, _ in mean_and_se(lines[start + 1:start + 3]).values())
    assert 0 < categorical < math.log2(17) and mixture > 0
    assert "digits test split, 4 images" in lines[0] and "3 stratified t per image" in lines[0]
    estimate = mean_and_se(lines[1:5])
    assert estimate["prior"][0] == pytest.approx(exact["prior"][0], abs=1e-4)  # no noise in L_T
    (est, se_est), (ex, se_ex) = estimate["total"], exact["total"]
    assert abs(est - ex) < 5 * (se_est**2 + se_ex**2) ** 0.5 + 0.05, (estimate, exact)


def test_channels_last_changes_the_speed_not_the_samples(tmp_path, capsys):
    """NHWC changes how oneDNN runs the convolutions, not what they compute: from one seed both
    layouts draw the same digits up to float rounding (20 stochastic steps; a reshape that
    assumed NCHW strides would scramble them). The default: NHWC for images on the CPU only."""
    samples = {}
    for flag in ("--channels-last", "--no-channels-last"):
        out = cli(capsys, "sample", "--pretrained", "digits_simple", "--n", "16", flag,
                  "--out", str(tmp_path / f"{flag}.npz"), "--quiet")
        assert out.returncode == 0, out.stderr
        with np.load(tmp_path / f"{flag}.npz") as f:
            samples[flag] = f["samples"]
    assert np.abs(samples["--channels-last"] - samples["--no-channels-last"]).max() < 1e-3
    assert samples["--channels-last"].std() > 0.3  # digits, not a constant

    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert use_channels_last(None, (1, 8, 8), cpu) and not use_channels_last(None, (1, 8, 8), cuda)
    assert not use_channels_last(None, (2,), cpu) and not use_channels_last(False, (1, 8, 8), cpu)
    assert use_channels_last(True, (1, 8, 8), cuda)
    with pytest.raises(UsageError, match="--channels-last needs an image model"):
        use_channels_last(True, (2,), cpu)


def test_errors_exit_with_code_2_and_a_message(tmp_path, capsys):
    # main returns (no exception escapes, so no traceback) and says what to do
    assert main(["sample", "--checkpoint", str(tmp_path / "missing")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: no checkpoint in") and "--out-dir" in err
    (tmp_path / "broken" / "checkpoint").mkdir(parents=True)
    (tmp_path / "broken" / "checkpoint" / "state.json").write_text("{")
    assert main(["nll", "--checkpoint", str(tmp_path / "broken")]) == 2
    assert "state.json is corrupt" in capsys.readouterr().err
    assert main(["train", "--schedule", "quadratic", "--out-dir", str(tmp_path)]) == 2
    assert main(["sample", "--pretrained", "nonexistent"]) == 2
    with pytest.raises(SystemExit) as e:
        main(["sample", "--n", "0"])
    assert e.value.code == 2


def test_mnist_pretrained_samples_are_scored_by_the_mnist_classifier(tmp_path, capsys):
    png = tmp_path / "mnist.png"
    out = cli(capsys, "sample", "--pretrained", "mnist_simple", "--n", "5", "--nrow", "5",
                  "--sampler", "ddim", "--steps", "4", "--out", str(png), "--evaluate", "--quiet")
    assert out.returncode == 0, out.stderr
    assert matplotlib.image.imread(png).shape[:2] == (28 + 2 * 2, 5 * 28 + 6 * 2)
    line = next(x for x in out.stdout.splitlines() if x.startswith("MNIST classifier:"))
    shares = [float(part.split(":")[1].rstrip("%")) for part in line.split("class shares ")[1].split()]
    assert len(shares) == 10 and sum(shares) == pytest.approx(100, abs=0.5)
    assert all(share % 20 == pytest.approx(0, abs=0.05) for share in shares)  # 5 samples: k/5 each


def test_conditional_train_and_guided_sample(tmp_path, capsys):
    run = tmp_path / "cond"
    out = cli(capsys, "train", "--steps", "3", "--T", "50", "--batch-size", "8", "--num-classes", "10",
                  "--p-uncond", "0.2", "--out-dir", str(run), "--quiet", *TINY)
    assert out.returncode == 0, out.stderr
    png = tmp_path / "label_3.png"
    out = cli(capsys, "sample", "--checkpoint", str(run), "--n", "4", "--steps", "5", "--label", "3",
                  "--guidance-scale", "3", "--out", str(png), "--quiet")
    assert out.returncode == 0, out.stderr
    assert png.is_file()
    for args, words in [(["--label", "10"], "--label must be an integer in 0..9 or 'all', got 10"),
                        (["--label", "3", "--guidance-scale", "-1"], "guidance_scale must be a finite number >= 0"),
                        (["--guidance-scale", "2"], "--guidance-scale needs --label")]:
        out = cli(capsys, "sample", "--checkpoint", str(run), "--n", "4", "--steps", "5", *args,
                      "--out", str(tmp_path / "x.png"), "--quiet")
        assert out.returncode == 2 and words in out.stderr, out.stderr



def test_label_all_cycles_through_the_classes_and_words_are_refused():
    from argparse import Namespace

    from diffusion_core.cli import UsageError, labels_from_args

    config = TrainConfig(num_classes=10)
    got = labels_from_args(Namespace(label="all", n=23, guidance_scale=3.0), config)
    assert got.tolist() == [i % 10 for i in range(23)]
    assert labels_from_args(Namespace(label="7", n=3, guidance_scale=1.0), config).tolist() == [7, 7, 7]
    with pytest.raises(UsageError, match="--label must be an integer in 0..9 or 'all', got 'three'"):
        labels_from_args(Namespace(label="three", n=3, guidance_scale=1.0), config)
