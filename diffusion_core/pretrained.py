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
import json
import shutil
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from torch import nn

from .checkpoints import (
    EMA_FILE,
    MODEL_FILE,
    CheckpointError,
    load_model,
    read_checkpoint,
    save_checkpoint,
    sha256_file,
)
from .data import load_mnist9k
from .diffusion import GaussianDiffusion
from .metrics import ClassifierConfig, DigitClassifier, train_classifier
from .recipe import TrainConfig
from .training import METRICS_FILE, train  # the training log, shipped beside the weights

PACKAGE_DIR = Path(__file__).parent / "weights"  # not "checkpoints": that is the module checkpoints.py


@dataclass(frozen=True)
class Pretrained:
    name: str
    description: str
    config: TrainConfig
    command: str  # trains `config` into config.out_dir; `build_pretrained` exports its EMA
    sha256: str  # of ema.safetensors as shipped
    # Steps at which the raw (not averaged) weights were kept on the way, each with the sha256
    # of its model.safetensors. Raw, because early on the EMA still holds much of the random
    # initialisation (a fraction ema_decay^step of it).
    snapshots: dict[int, str] = field(default_factory=dict)


_DIGITS = TrainConfig(out_dir="runs/pretrained/digits_simple")
MNIST_DATA_DIR = "data/mnist"  # the MNIST test split in a checkout of the book

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
        "digits_cond",
        "the default digits model with class labels for classifier-free guidance: a label "
        "embedding added to the time embedding, the label dropped with probability 0.1",
        dataclasses.replace(_DIGITS, num_classes=10, out_dir="runs/pretrained/digits_cond"),
        "python -m diffusion_core train --num-classes 10 --out-dir runs/pretrained/digits_cond",
        "569dd481d315075dafb6d02bf3d8784d836963c391c1991c70c69b8698030eac",
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
    Pretrained(
        "mnist_simple",
        "a small UNet (0.41M parameters) on 28x28 MNIST, 256 levels: ε-prediction, L_simple, "
        "cosine schedule, T=1000; trained on the first 9,000 images of MNIST's test split "
        "(dataset mnist9k: the last 1,000 are held out)",
        TrainConfig(dataset="mnist9k", data_dir=MNIST_DATA_DIR,
                    model_overrides={"base_channels": 16, "dropout": 0.0}, batch_size=64,
                    lr=1e-3, ema_decay=0.998, steps=8000, out_dir="runs/pretrained/mnist_simple"),
        f"python -m diffusion_core train --dataset mnist9k --data-dir {MNIST_DATA_DIR} "
        "--model base_channels=16 --model dropout=0 --batch-size 64 --lr 0.001 "
        "--ema-decay 0.998 --steps 8000 --out-dir runs/pretrained/mnist_simple",
        "6663e27fcf69c8d746bcb39b28ce8eb18b8c093b8d3d7845c8e283593a8dfcd6",
        {500: "f5fc1310c2e276e0336b9dc55519b71712823dba41fdc1bb1bf384c8d75d09df",
         1000: "4705961a34f8adb2cbe92fdc920e194aa382a5758258e52bd2f779a1c7b07f75",
         2000: "632a2d7d906f4edfe7a69c97840bd0c666fb511b0d33b9c8bb354ac3eab1a78c",
         3000: "eff244a0c39907cb70eccac658dec27279986c7fb44ccda53d377ed841626695",
         5000: "53bbf8b568acff2f3a198f884c602b36aa5aa4b5389512697ecc564d54c940bc",
         8000: "67b38702cecb5178aed616b0abd5d275004ec56018176898598fa91db81af1e3"},
    ),
]}


def _spec(name: str) -> Pretrained:
    if name not in REGISTRY:
        raise ValueError(f"name must be one of {sorted(REGISTRY)}, got {name!r}")
    return REGISTRY[name]


def snapshot_dir(name: str, step: int, root: str | Path = PACKAGE_DIR) -> Path:
    """Where the raw weights of `name` at training step `step` are kept."""
    return Path(root) / f"{name}_snapshots" / f"step_{step:06d}"


def build_pretrained(name: str, root: str | Path = PACKAGE_DIR, progress: bool = True,
                     data_dir: str | None = None) -> Path:
    """Train `name` from its recorded config (resuming from its out_dir if the recorded
    command already ran) and export the EMA weights and the training log to `root/name`.

    The run stops at each snapshot step on the way to export that step's raw weights,
    then resumes; resuming is bit-identical, so this is the recorded command's run.
    `data_dir` replaces the recorded folder of the MNIST files.
    """
    spec = _spec(name)
    config = spec.config if data_dir is None else dataclasses.replace(spec.config, data_dir=data_dir)
    for step in sorted(set(spec.snapshots) | {config.steps}):
        partial = dataclasses.replace(config, steps=step)
        result = train(partial, progress=progress)
        if step in spec.snapshots:
            _export(snapshot_dir(name, step, root), partial, None, result.model, spec.snapshots[step])
    path = _export(Path(root) / name, config, result.ema_model, None, spec.sha256)
    if config.out_dir and (Path(config.out_dir) / METRICS_FILE).is_file():
        shutil.copyfile(Path(config.out_dir) / METRICS_FILE, path / METRICS_FILE)
    return path


def _export(path: Path, config: TrainConfig, ema: nn.Module | None, model: nn.Module | None,
            recorded: str) -> Path:
    path = save_checkpoint(path, config, config.steps, ema, model)
    file = EMA_FILE if ema is not None else MODEL_FILE
    got = read_checkpoint(path).state["sha256"][file]
    if recorded and got != recorded:
        warnings.warn(f"retrained {path} has {file} sha256 {got}, the shipped one {recorded} "
                      "(expected on another machine or thread count; the model is still valid)",
                      stacklevel=3)
    return path


def training_log(name: str, root: str | Path = PACKAGE_DIR) -> list[dict[str, Any]]:
    """The shipped training log of `name`: one dict per logged step (step, loss,
    loss_by_t_quartile, images_per_sec, lr), as `train` wrote it to metrics.jsonl."""
    _spec(name)
    file = Path(root) / name / METRICS_FILE
    if not file.is_file():
        raise FileNotFoundError(f"no training log at {file}; build_pretrained({name!r}) writes it")
    return [json.loads(line) for line in file.read_text().splitlines() if line.strip()]


def load_pretrained(name: str, device: str = "cpu", retrain_if_missing: bool = False,
                    root: str | Path = PACKAGE_DIR, progress: bool = True, step: int | None = None
                    ) -> tuple[nn.Module, GaussianDiffusion, TrainConfig]:
    """(EMA network in eval mode, its diffusion, its TrainConfig) for a registered name;
    with `step`, the raw weights of the same run at that snapshot step instead.

    The checkpoint's files must match the sha256 in its state.json and its
    architecture and schedule the recorded config. Otherwise (or if it is missing)
    it raises CheckpointError naming the command that rebuilds it, or, with
    `retrain_if_missing`, retrains it from the recorded config first.
    """
    spec = _spec(name)
    if step is not None and step not in spec.snapshots:
        raise ValueError(f"step must be None (the final EMA weights) or one of {name!r}'s "
                         f"snapshot steps {sorted(spec.snapshots)}, got {step!r}")
    path = Path(root) / name if step is None else snapshot_dir(name, step, root)
    recorded, file = (spec.sha256, EMA_FILE) if step is None else (spec.snapshots[step], MODEL_FILE)
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
    got = ckpt.state["sha256"].get(file)
    if recorded and got != recorded:
        warnings.warn(f"pretrained {name!r}: {file} sha256 {got} differs from the recorded "
                      f"{recorded} (retrained on another machine?)", stacklevel=2)
    return load_model(ckpt.path, expected=spec.config, device=device, ema=step is None)


# -----------------------------------------------------------------------------
# The MNIST yardstick: a classifier trained on the 9,000 training digits of mnist9k

MNIST_CLASSIFIER = "mnist9k_classifier"
MNIST_CLASSIFIER_CONFIG = ClassifierConfig(image_size=28)
MNIST_CLASSIFIER_EPOCHS = 8
MNIST_CLASSIFIER_COMMAND = ("python -c 'from diffusion_core.pretrained import build_mnist_classifier; "
                            "build_mnist_classifier(\"data/mnist\")'")
MNIST_CLASSIFIER_SHA256 = "65a68ccd58019a12a5510e03528a113cee93a011c833d79913e3a086926ae98f"
CLASSIFIER_FILE = "classifier.safetensors"


def build_mnist_classifier(data_dir: str | Path, root: str | Path = PACKAGE_DIR) -> Path:
    """Train the MNIST classifier on the first 9,000 test-split images (one thread, seed 0,
    about five minutes) and save its weights to `root/mnist9k_classifier`."""
    from safetensors.torch import save_file

    x, y = load_mnist9k(data_dir, "train")
    model = train_classifier(x, y, MNIST_CLASSIFIER_CONFIG, seed=0, epochs=MNIST_CLASSIFIER_EPOCHS,
                             outlier_exposure=True)
    path = Path(root) / MNIST_CLASSIFIER
    path.mkdir(parents=True, exist_ok=True)
    tmp = path / (CLASSIFIER_FILE + ".tmp")
    save_file(model.state_dict(), tmp)
    tmp.replace(path / CLASSIFIER_FILE)
    return path / CLASSIFIER_FILE


def load_mnist_classifier(root: str | Path = PACKAGE_DIR) -> DigitClassifier:
    """The shipped MNIST classifier (frozen, eval mode), its file checked against the
    recorded sha256; a missing or changed file raises CheckpointError naming the command
    that rebuilds it."""
    from safetensors.torch import load_file

    file = Path(root) / MNIST_CLASSIFIER / CLASSIFIER_FILE
    rebuild = f"rebuild it with `{MNIST_CLASSIFIER_COMMAND}`"
    if not file.is_file():
        raise CheckpointError(f"no MNIST classifier at {file}; {rebuild}")
    got = sha256_file(file)
    if MNIST_CLASSIFIER_SHA256 and got != MNIST_CLASSIFIER_SHA256:
        raise CheckpointError(f"{file} has sha256 {got}, not the recorded "
                              f"{MNIST_CLASSIFIER_SHA256}; {rebuild}")
    model = DigitClassifier(MNIST_CLASSIFIER_CONFIG)
    model.load_state_dict(load_file(file))
    return model.eval().requires_grad_(False)
