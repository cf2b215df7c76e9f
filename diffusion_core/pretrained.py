"""Small shipped checkpoints that the book loads, and how each was made.

Each entry records the TrainConfig, the exact command that trains it, and the
sha256 of the EMA weights that command produced here. The files live in
`diffusion_core/weights/<name>/` (EMA weights in float32 + state.json), shipped
as package data in the wheel.
If a file is missing or corrupt, `load_pretrained` says so and names the command
that rebuilds it; only with `retrain_if_missing=True` does it retrain (minutes on
a laptop CPU) and save it. A retrained model on another machine need not be
bit-identical, so a different hash only warns.
"""

from __future__ import annotations

import dataclasses
import warnings
from dataclasses import dataclass
from pathlib import Path

from torch import nn

from .checkpoints import EMA_FILE, CheckpointError, load_model, read_checkpoint, save_checkpoint
from .diffusion import GaussianDiffusion
from .recipe import TrainConfig
from .training import train

PACKAGE_DIR = Path(__file__).parent / "weights"  # not "checkpoints": that is the module checkpoints.py


@dataclass(frozen=True)
class Pretrained:
    name: str
    description: str
    config: TrainConfig
    command: str  # trains `config` into config.out_dir; `build_pretrained` exports its EMA
    sha256: str  # of ema.safetensors as shipped


_DIGITS = TrainConfig(out_dir="runs/pretrained/digits_simple")

REGISTRY: dict[str, Pretrained] = {p.name: p for p in [
    Pretrained(
        "digits_simple",
        "the default digits model: ε-prediction, L_simple, cosine schedule, T=1000",
        _DIGITS,
        "python -m diffusion_core train --out-dir runs/pretrained/digits_simple",
        "2a11dfca10db987495cd430f39e1d4950532db35efbc0a2027f15faff209a28c",
    ),
    Pretrained(
        "digits_vlb",
        "the default digits model trained on the true bound L_vlb instead of L_simple",
        dataclasses.replace(_DIGITS, loss_type="vlb", out_dir="runs/pretrained/digits_vlb"),
        "python -m diffusion_core train --loss-type vlb --out-dir runs/pretrained/digits_vlb",
        "f6a9e25e40b179ce86ac7bebb021e93bb50dcbf8f4c448afb6d719984252a618",
    ),
    Pretrained(
        "digits_hybrid",
        "learned variances (iDDPM): L_hybrid, cosine schedule, T=1000",
        dataclasses.replace(_DIGITS, model_var="learned_range", loss_type="hybrid",
                            out_dir="runs/pretrained/digits_hybrid"),
        "python -m diffusion_core train --model-var learned_range --loss-type hybrid "
        "--out-dir runs/pretrained/digits_hybrid",
        "c42904620979f5fb35502dab8ff9246fc0544002aaa0c899482abeff292989d6",
    ),
    Pretrained(
        "toy_moons",
        "a residual MLP on two moons, L_simple, linear schedule, T=1000",
        TrainConfig(dataset="two_moons", schedule="linear", batch_size=512, steps=4000, lr=1e-3,
                    ema_decay=0.999, out_dir="runs/pretrained/toy_moons"),
        "python -m diffusion_core train --dataset two_moons --schedule linear --batch-size 512 "
        "--steps 4000 --lr 0.001 --ema-decay 0.999 --out-dir runs/pretrained/toy_moons",
        "521d36950466c862bc924783b0e89da8672b278699f0ba24d4702da0718852f2",
    ),
]}


def _spec(name: str) -> Pretrained:
    if name not in REGISTRY:
        raise ValueError(f"name must be one of {sorted(REGISTRY)}, got {name!r}")
    return REGISTRY[name]


def build_pretrained(name: str, root: str | Path = PACKAGE_DIR, progress: bool = True) -> Path:
    """Train `name` from its recorded config (resuming from its out_dir if the recorded
    command already ran) and export the EMA weights to `root/name`."""
    spec = _spec(name)
    result = train(spec.config, progress=progress)
    path = save_checkpoint(Path(root) / name, spec.config, result.step, result.ema_model)
    got = read_checkpoint(path).state["sha256"][EMA_FILE]
    if spec.sha256 and got != spec.sha256:
        warnings.warn(f"retrained {name!r} has EMA sha256 {got}, the shipped one {spec.sha256} "
                      "(expected on another machine or thread count; the model is still valid)",
                      stacklevel=2)
    return path


def load_pretrained(name: str, device: str = "cpu", retrain_if_missing: bool = False,
                    root: str | Path = PACKAGE_DIR, progress: bool = True
                    ) -> tuple[nn.Module, GaussianDiffusion, TrainConfig]:
    """(EMA network in eval mode, its diffusion, its TrainConfig) for a registered name.

    The checkpoint's files must match the sha256 in its state.json and its
    architecture and schedule the recorded config. Otherwise (or if it is missing)
    it raises CheckpointError naming the command that rebuilds it, or, with
    `retrain_if_missing`, retrains it from the recorded config first.
    """
    spec = _spec(name)
    path = Path(root) / name
    try:
        ckpt = read_checkpoint(path, expected=spec.config)
    except CheckpointError as e:
        if not retrain_if_missing:
            raise CheckpointError(f"pretrained {name!r}: {e}. Rebuild it with "
                                  f"load_pretrained({name!r}, retrain_if_missing=True) or "
                                  f"`{spec.command}` and build_pretrained({name!r})") from None
        print(f"pretrained {name!r}: {e}\nretraining it with the recorded config "
              f"(`{spec.command}`); this takes a few minutes on a CPU")
        build_pretrained(name, root, progress)
        ckpt = read_checkpoint(path, expected=spec.config)
    got = ckpt.state["sha256"].get(EMA_FILE)
    if spec.sha256 and got != spec.sha256:
        warnings.warn(f"pretrained {name!r}: EMA sha256 {got} differs from the recorded "
                      f"{spec.sha256} (retrained on another machine?)", stacklevel=2)
    return load_model(ckpt.path, expected=spec.config, device=device)
