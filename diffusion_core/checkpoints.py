"""Checkpoints: one directory per checkpoint, written atomically, verified on load.

Layout of a checkpoint directory:

    model.safetensors   the trained weights
    ema.safetensors     their exponential moving average (the weights to sample from)
    optim.pt            optimizer, LR schedule, EMA count, every RNG, timestep-sampler
                        history and the loss history; tensors and plain containers only,
                        so it loads with torch.load(weights_only=True)
    state.json          the full TrainConfig, the step, the sha256 of every other file,
                        the format and library versions

A shipped (pretrained) checkpoint holds only ema.safetensors and state.json.

Saving writes a sibling `<name>.tmp` directory, fsyncs it, moves the old
checkpoint to `<name>.prev`, renames the new one into place and only then
deletes `.prev`. A kill at any moment leaves a complete old or new checkpoint;
`find_checkpoint` falls back to `.prev` when the rename did not happen.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from ._version import __version__
from .diffusion import GaussianDiffusion
from .recipe import TrainConfig, build_diffusion, build_model, model_config

FORMAT_VERSION = 1
STATE_FILE = "state.json"
MODEL_FILE = "model.safetensors"
EMA_FILE = "ema.safetensors"
OPTIM_FILE = "optim.pt"


class CheckpointError(ValueError):
    """A checkpoint that is missing, corrupt, or does not fit the run that asks for it."""


def run_checkpoint_dir(out_dir: str | Path) -> Path:
    """Where a training run keeps its checkpoint: `<out_dir>/checkpoint`."""
    return Path(out_dir) / "checkpoint"


def find_checkpoint(path: str | Path) -> Path | None:
    """The complete checkpoint at `path`, at `path/checkpoint` (a run directory), or the
    `.prev` copy left by a save that was killed between its two renames; None if none."""
    path = Path(path)
    for candidate in (path, run_checkpoint_dir(path)):
        if (candidate / STATE_FILE).is_file():
            return candidate
        prev = candidate.with_name(candidate.name + ".prev")
        if (prev / STATE_FILE).is_file():
            return prev
    return None


# -----------------------------------------------------------------------------
# Writing


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _fsync(path: Path) -> None:
    """Flush a file, or a directory's entries, to disk."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _cpu_state(module: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().to("cpu", torch.float32 if v.is_floating_point() else v.dtype).contiguous()
            for k, v in module.state_dict().items()}


def save_checkpoint(path: str | Path, config: TrainConfig, step: int, ema: nn.Module | None,
                    model: nn.Module | None = None, optim_state: dict[str, Any] | None = None
                    ) -> Path:
    """Write a checkpoint directory atomically; `model` and `optim_state` are optional
    (a shipped checkpoint stores the EMA weights only; a snapshot, the raw weights only:
    then `ema` is None). Returns the path."""
    if ema is None and model is None:
        raise ValueError("save_checkpoint needs weights: ema, model or both")
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    prev = path.with_name(path.name + ".prev")
    shutil.rmtree(tmp, ignore_errors=True)  # the debris of a killed save
    tmp.mkdir(parents=True)

    if ema is not None:
        save_file(_cpu_state(ema), tmp / EMA_FILE)
    if model is not None:
        save_file(_cpu_state(model), tmp / MODEL_FILE)
    if optim_state is not None:
        torch.save(optim_state, tmp / OPTIM_FILE)
    files = sorted(p.name for p in tmp.iterdir())
    for name in files:
        _fsync(tmp / name)
    state = {
        "format_version": FORMAT_VERSION,
        "library_version": __version__,
        "step": step,
        "config": config.to_dict(),
        "model_config": dataclasses.asdict(model_config(config)),
        "sha256": {name: sha256_file(tmp / name) for name in files},
    }
    with open(tmp / STATE_FILE, "w") as f:
        json.dump(state, f, indent=2, sort_keys=True)
        f.flush()
        os.fsync(f.fileno())
    _fsync(tmp)

    if path.exists():
        shutil.rmtree(prev, ignore_errors=True)
        os.rename(path, prev)
    os.rename(tmp, path)
    _fsync(path.parent)
    shutil.rmtree(prev, ignore_errors=True)
    return path


# -----------------------------------------------------------------------------
# Reading


@dataclass
class Checkpoint:
    path: Path
    config: TrainConfig
    step: int
    state: dict[str, Any]  # the parsed state.json


def _describe(fields: dict[str, Any]) -> str:
    return ", ".join(f"{k}={v!r}" for k, v in fields.items())


def check_compatible(saved: TrainConfig, expected: TrainConfig, where: str = "checkpoint") -> None:
    """Refuse a checkpoint whose data, architecture or schedule differ from `expected`."""
    def key(c: TrainConfig) -> dict[str, Any]:
        arch = {f"model.{k}": v for k, v in dataclasses.asdict(model_config(c)).items()}
        return {"dataset": c.dataset, "schedule": c.schedule, "T": c.T,
                "model_var": c.model_var, "model_mean": c.model_mean, **arch}

    have, want = key(saved), key(expected)
    differ = [k for k in want if have.get(k) != want[k]]
    if differ:
        # A schedule is named by its kind and length together: show both when one differs.
        context = [k for k in ("schedule", "T") if k not in differ] \
            if {"schedule", "T"} & set(differ) else []
        shown = [k for k in want if k in differ or k in context]
        raise CheckpointError(
            f"{where} was trained with {_describe({k: have.get(k) for k in shown})}; "
            f"this run asks {_describe({k: want[k] for k in differ})}")


def read_checkpoint(path: str | Path, expected: TrainConfig | None = None) -> Checkpoint:
    """Parse and verify a checkpoint: format version, sha256 of every file, and (if
    `expected` is given) the data, architecture and schedule. Loads no weights."""
    found = find_checkpoint(path)
    if found is None:
        raise CheckpointError(f"no checkpoint at {path} (expected {path}/{STATE_FILE} "
                              f"or {run_checkpoint_dir(path)}/{STATE_FILE})")
    state_path = found / STATE_FILE
    try:
        state = json.loads(state_path.read_text())
        version = state["format_version"]
        config = TrainConfig.from_dict(state["config"])
        step, hashes = int(state["step"]), dict(state["sha256"])
    except (ValueError, KeyError, TypeError) as e:
        raise CheckpointError(f"{state_path} is corrupt or not a checkpoint state: {e}") from None
    if version != FORMAT_VERSION:
        raise CheckpointError(f"{state_path} has format_version {version}; this library reads "
                              f"format_version {FORMAT_VERSION}")
    for name, want in hashes.items():
        file = found / name
        if not file.is_file():
            raise CheckpointError(f"{file} is missing from the checkpoint")
        got = sha256_file(file)
        if got != want:
            raise CheckpointError(f"{file} is corrupt: its sha256 is {got}, "
                                  f"{STATE_FILE} records {want}")
    if expected is not None:
        check_compatible(config, expected, where=f"checkpoint {found}")
    return Checkpoint(found, config, step, state)


def _load_weights(module: nn.Module, file: Path) -> None:
    try:
        tensors = load_file(file, device="cpu")
        module.load_state_dict(tensors)
    except Exception as e:  # safetensors raises its own types; name the file either way
        raise CheckpointError(f"cannot load weights from {file}: {e}") from None


def load_model(path: str | Path, expected: TrainConfig | None = None, device: str = "cpu",
               ema: bool = True) -> tuple[nn.Module, GaussianDiffusion, TrainConfig]:
    """(network in eval mode, its diffusion, its TrainConfig) from a checkpoint directory.

    ema=True loads the moving average (what to sample from), else the raw weights.
    """
    ckpt = read_checkpoint(path, expected)
    name = EMA_FILE if ema else MODEL_FILE
    if not (ckpt.path / name).is_file():
        raise CheckpointError(f"{ckpt.path / name} is missing (this checkpoint holds "
                              f"{sorted(ckpt.state['sha256'])})")
    model = build_model(ckpt.config)
    _load_weights(model, ckpt.path / name)
    return model.to(device).eval(), build_diffusion(ckpt.config), ckpt.config


def load_weights(module: nn.Module, ckpt: Checkpoint, name: str = EMA_FILE) -> None:
    """Load `name` (EMA_FILE or MODEL_FILE) of a verified checkpoint into `module`."""
    if name not in ckpt.state["sha256"]:
        raise CheckpointError(f"{ckpt.path} holds no {name}, so training cannot resume from it "
                              "(a shipped checkpoint keeps the EMA weights only)")
    _load_weights(module, ckpt.path / name)


def load_optim_state(ckpt: Checkpoint) -> dict[str, Any]:
    """The optimizer, schedule, RNG and history state a training run saved with its weights."""
    if OPTIM_FILE not in ckpt.state["sha256"]:
        raise CheckpointError(f"{ckpt.path} holds no {OPTIM_FILE}, so training cannot resume from "
                              "it (a shipped checkpoint keeps the EMA weights only)")
    try:
        return torch.load(ckpt.path / OPTIM_FILE, weights_only=True)
    except Exception as e:
        raise CheckpointError(f"cannot load {ckpt.path / OPTIM_FILE}: {e}") from None
