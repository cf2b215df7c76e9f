"""Tests for diffusion_core.checkpoints and diffusion_core.pretrained: atomic saves,
verification on load, exact resume after kill -9, the shipped checkpoints."""

import json
import math
import os
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from diffusion_core.checkpoints import (
    CheckpointError,
    check_compatible,
    find_checkpoint,
    load_model,
    read_checkpoint,
    run_checkpoint_dir,
)
from diffusion_core.training import TrainConfig, train

ROOT = Path(__file__).resolve().parents[1]
TINY_UNET = {"base_channels": 8, "channel_mult": (1, 2), "num_res_blocks": 1,
             "attention_resolutions": (), "num_groups": 4, "num_heads": 1, "dropout": 0.1}


def tiny_config(**kw) -> TrainConfig:
    base = dict(model_overrides=TINY_UNET, schedule="linear", T=100, batch_size=16, steps=6, lr=3e-3,
                warmup_steps=2, device="cpu", checkpoint_every=3, log_every=3)
    return TrainConfig(**{**base, **kw})


@pytest.fixture(autouse=True)
def one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    """A finished tiny run (6 steps), shared by the read-only tests."""
    out = tmp_path_factory.mktemp("run")
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    train(tiny_config(out_dir=str(out)), progress=False)
    torch.set_num_threads(n)
    return out


def copy_checkpoint(src: Path, dst: Path) -> Path:
    ckpt = run_checkpoint_dir(dst)
    ckpt.mkdir(parents=True)
    for f in run_checkpoint_dir(src).iterdir():
        (ckpt / f.name).write_bytes(f.read_bytes())
    return ckpt


def all_tensors(ckpt: Path) -> dict[str, torch.Tensor]:
    """Every tensor a checkpoint holds: both weight files and the optimizer state."""
    out = {f"model/{k}": v for k, v in load_file(ckpt / "model.safetensors").items()}
    out |= {f"ema/{k}": v for k, v in load_file(ckpt / "ema.safetensors").items()}
    optim = torch.load(ckpt / "optim.pt", weights_only=True)["optimizer"]["state"]
    for i, s in optim.items():
        out |= {f"adam/{i}/{k}": v for k, v in s.items()}
    return out


# ---- what a checkpoint holds ---------------------------------------------------------------


def test_a_checkpoint_holds_the_config_step_and_hashes(run_dir):
    ckpt = read_checkpoint(run_dir)
    assert ckpt.path == run_checkpoint_dir(run_dir)
    assert ckpt.step == 6 and ckpt.config == tiny_config(out_dir=str(run_dir))
    state = json.loads((ckpt.path / "state.json").read_text())
    assert state["format_version"] == 1 and state["library_version"]
    names = {"model.safetensors", "ema.safetensors", "optim.pt"}
    assert set(state["sha256"]) == names == {p.name for p in ckpt.path.iterdir()} - {"state.json"}
    import hashlib

    for name, digest in state["sha256"].items():
        assert hashlib.sha256((ckpt.path / name).read_bytes()).hexdigest() == digest
    # the optimizer state loads without unpickling arbitrary objects
    optim = torch.load(ckpt.path / "optim.pt", weights_only=True)
    assert {"optimizer", "scheduler", "rng", "sampler", "history", "ema_n_averaged"} <= set(optim)
    assert len(optim["history"]) == 6 and int(optim["ema_n_averaged"]) == 6


def test_load_model_gives_the_ema_weights_in_eval_mode(run_dir):
    model, diffusion, config = load_model(run_dir)
    assert not model.training and diffusion.T == 100 and config.T == 100
    ema = load_file(run_checkpoint_dir(run_dir) / "ema.safetensors")
    for k, v in model.state_dict().items():
        assert torch.equal(v, ema[k])


# ---- refusing bad checkpoints ---------------------------------------------------------------


def test_a_flipped_byte_is_refused_naming_the_file(run_dir, tmp_path):
    ckpt = copy_checkpoint(run_dir, tmp_path)
    weights = ckpt / "ema.safetensors"
    data = bytearray(weights.read_bytes())
    data[len(data) // 2] ^= 0x01
    weights.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match=r"ema\.safetensors is corrupt: its sha256"):
        read_checkpoint(tmp_path)


def test_a_missing_or_broken_state_file_is_refused(run_dir, tmp_path):
    with pytest.raises(CheckpointError, match="no checkpoint at"):
        read_checkpoint(tmp_path / "nothing")
    ckpt = copy_checkpoint(run_dir, tmp_path)
    state = ckpt / "state.json"
    text = state.read_text()
    state.write_text(text[: len(text) // 2])
    with pytest.raises(CheckpointError, match=r"state\.json is corrupt"):
        read_checkpoint(tmp_path)
    state.write_text(text.replace('"format_version": 1', '"format_version": 99'))
    with pytest.raises(CheckpointError, match="format_version 99"):
        read_checkpoint(tmp_path)


def test_a_missing_weight_file_is_refused(run_dir, tmp_path):
    ckpt = copy_checkpoint(run_dir, tmp_path)
    (ckpt / "model.safetensors").unlink()
    with pytest.raises(CheckpointError, match=r"model\.safetensors is missing"):
        read_checkpoint(tmp_path)


def test_a_different_schedule_is_refused_naming_the_fields(run_dir):
    want = tiny_config(schedule="cosine")
    with pytest.raises(CheckpointError,
                       match=r"trained with schedule='linear', T=100; this run asks "
                             r"schedule='cosine'$"):
        read_checkpoint(run_dir, expected=want)


def test_a_different_architecture_is_refused_naming_the_fields(run_dir):
    want = tiny_config(model_overrides={**TINY_UNET, "base_channels": 16})
    with pytest.raises(CheckpointError, match=r"model\.base_channels=8; this run asks "
                                              r"model\.base_channels=16"):
        load_model(run_dir, expected=want)
    with pytest.raises(CheckpointError, match=r"model_var='fixed_small'.*learn_sigma"):
        check_compatible(tiny_config(), tiny_config(model_var="learned_range"))
    # training hyperparameters are not part of the match
    read_checkpoint(run_dir, expected=tiny_config(lr=1.0, steps=99))


def test_resuming_with_another_architecture_is_refused(run_dir, tmp_path):
    copy_checkpoint(run_dir, tmp_path)
    with pytest.raises(CheckpointError, match="schedule='linear', T=100; this run asks T=200"):
        train(tiny_config(T=200, out_dir=str(tmp_path)), progress=False)


# ---- atomic saves -------------------------------------------------------------------------


def test_a_save_killed_between_its_renames_leaves_the_old_checkpoint(run_dir, tmp_path):
    """Simulate a kill after `checkpoint -> checkpoint.prev` and before `.tmp -> checkpoint`:
    the old checkpoint is found in `.prev`, and the next save cleans up."""
    ckpt = copy_checkpoint(run_dir, tmp_path)
    prev = ckpt.with_name("checkpoint.prev")
    ckpt.rename(prev)
    tmp = ckpt.with_name("checkpoint.tmp")
    tmp.mkdir()
    (tmp / "model.safetensors").write_bytes(b"half a file")
    assert find_checkpoint(tmp_path) == prev
    assert read_checkpoint(tmp_path).step == 6
    result = train(tiny_config(steps=9, out_dir=str(tmp_path)), progress=False)
    assert result.step == 9 and read_checkpoint(tmp_path).path == ckpt
    assert not prev.exists() and not tmp.exists()


TRAIN_SCRIPT = """
import sys, torch
torch.set_num_threads(1)
from diffusion_core.training import TrainConfig, train
train(TrainConfig.from_json(sys.argv[1]), progress=False)
"""


def start_training(config: TrainConfig) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    return subprocess.Popen([sys.executable, "-c", TRAIN_SCRIPT, config.to_json()], env=env,
                            cwd=ROOT, stderr=subprocess.PIPE)


def saved_step(out: Path) -> int:
    try:
        return json.loads((run_checkpoint_dir(out) / "state.json").read_text())["step"]
    except (OSError, ValueError):  # not there yet, or mid-rename
        return 0


def test_resume_after_kill_9_equals_an_uninterrupted_run(tmp_path, seed):
    steps = 60
    killed, straight = tmp_path / "killed", tmp_path / "straight"
    config = dict(steps=steps, checkpoint_every=3, timestep_sampler="importance", seed=seed)
    victim = start_training(tiny_config(out_dir=str(killed), **config))
    reference = start_training(tiny_config(out_dir=str(straight), **config))
    deadline = time.time() + 120
    while saved_step(killed) < 9 and victim.poll() is None and time.time() < deadline:
        time.sleep(0.01)
    still_running = victim.poll() is None
    victim.send_signal(signal.SIGKILL)
    victim.wait()
    assert still_running, "the run finished before it could be killed: " + \
        victim.stderr.read().decode()
    interrupted = read_checkpoint(killed)  # complete and verified, whatever the kill hit
    assert 9 <= interrupted.step < steps

    resume = start_training(tiny_config(out_dir=str(killed), **config))
    for proc in (reference, resume):
        _, err = proc.communicate(timeout=180)
        assert proc.returncode == 0, err.decode()
    a, b = all_tensors(find_checkpoint(killed)), all_tensors(find_checkpoint(straight))
    assert read_checkpoint(killed).step == read_checkpoint(straight).step == steps
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    ha = torch.load(find_checkpoint(killed) / "optim.pt", weights_only=True)["history"]
    hb = torch.load(find_checkpoint(straight) / "optim.pt", weights_only=True)["history"]
    assert torch.equal(ha, hb) and len(ha) == steps


# ---- shipped checkpoints ------------------------------------------------------------------


def test_recorded_commands_parse_to_the_recorded_configs():
    from diffusion_core.cli import build_parser, config_from_args
    from diffusion_core.pretrained import REGISTRY

    for spec in REGISTRY.values():
        argv = shlex.split(spec.command)
        assert argv[:4] == ["python", "-m", "diffusion_core", "train"]
        assert config_from_args(build_parser().parse_args(argv[3:])) == spec.config, spec.name


@pytest.mark.parametrize("name", ["digits_simple", "digits_vlb", "digits_hybrid", "toy_moons",
                                  "mnist_simple"])
def test_shipped_checkpoints_load_and_match_their_hash(name):
    from diffusion_core.pretrained import PACKAGE_DIR, REGISTRY, load_pretrained

    spec = REGISTRY[name]
    state = json.loads((PACKAGE_DIR / name / "state.json").read_text())
    assert state["sha256"] == {"ema.safetensors": spec.sha256}
    assert (PACKAGE_DIR / name / "ema.safetensors").stat().st_size < 3_000_000
    model, diffusion, config = load_pretrained(name, retrain_if_missing=False)
    assert config == spec.config and not model.training
    assert diffusion.model_var == spec.config.model_var


def test_load_pretrained_retrains_a_missing_checkpoint(tmp_path, monkeypatch, capsys, seed):
    from diffusion_core import pretrained

    config = tiny_config(out_dir=str(tmp_path / "run"), seed=seed)
    spec = pretrained.Pretrained("tiny", "test", config, "python -m diffusion_core train",
                                 "0" * 64)
    monkeypatch.setitem(pretrained.REGISTRY, "tiny", spec)
    with pytest.raises(CheckpointError, match="no checkpoint"):
        pretrained.load_pretrained("tiny", root=tmp_path, retrain_if_missing=False)
    with pytest.warns(UserWarning, match="sha256"):
        model, _, got = pretrained.load_pretrained("tiny", root=tmp_path, progress=False,
                                                   retrain_if_missing=True)
    assert "retraining" in capsys.readouterr().out
    assert got == config and {p.name for p in (tmp_path / "tiny").iterdir()} == \
        {"ema.safetensors", "state.json", "metrics.jsonl"}
    reference = load_model(tmp_path / "run")[0]  # the EMA of the run it trained
    for v1, v2 in zip(model.state_dict().values(), reference.state_dict().values(), strict=True):
        assert torch.equal(v1, v2)


def test_shipped_snapshots_load_at_their_step_and_match_their_hash():
    from diffusion_core.pretrained import REGISTRY, load_pretrained, snapshot_dir, training_log

    spec = REGISTRY["mnist_simple"]
    assert spec.snapshots and max(spec.snapshots) == spec.config.steps
    for step, sha in spec.snapshots.items():
        state = json.loads((snapshot_dir("mnist_simple", step) / "state.json").read_text())
        assert state["sha256"] == {"model.safetensors": sha} and state["step"] == step
        model, _, config = load_pretrained("mnist_simple", step=step)
        assert config.steps == step and not model.training
    with pytest.raises(ValueError, match=r"step must be None \(the final EMA weights\) or one"):
        load_pretrained("mnist_simple", step=123)
    log = training_log("mnist_simple")  # the run's metrics.jsonl, one line per 50 steps
    assert [r["step"] for r in log] == list(range(50, spec.config.steps + 1, 50))
    assert all(math.isfinite(r["loss"]) for r in log) and log[-1]["loss"] < log[0]["loss"] / 5


def test_build_pretrained_keeps_snapshots_equal_to_a_run_stopped_there(tmp_path, monkeypatch, seed):
    """The snapshot at step 3 of a 6-step build holds the raw weights of a separate run of
    3 steps; the final checkpoint the EMA of an uninterrupted 6-step run."""
    from diffusion_core import pretrained

    config = tiny_config(out_dir=str(tmp_path / "run"), seed=seed)
    spec = pretrained.Pretrained("tiny", "test", config, "python -m diffusion_core train", "",
                                 {3: ""})
    monkeypatch.setitem(pretrained.REGISTRY, "tiny", spec)
    pretrained.build_pretrained("tiny", root=tmp_path / "weights", progress=False)
    snap, _, snap_config = pretrained.load_pretrained("tiny", root=tmp_path / "weights", step=3)
    final, _, _ = pretrained.load_pretrained("tiny", root=tmp_path / "weights")
    short = train(tiny_config(out_dir=str(tmp_path / "short"), seed=seed, steps=3), progress=False)
    straight = train(tiny_config(out_dir=str(tmp_path / "straight"), seed=seed), progress=False)
    assert snap_config.steps == 3
    for got, want in ((snap, short.model), (final, straight.ema_model)):
        for v1, v2 in zip(got.state_dict().values(), want.state_dict().values(), strict=True):
            assert torch.equal(v1, v2)
