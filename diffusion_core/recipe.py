"""A run's recipe: the config, what each dataset is, and what a config builds.

`TrainConfig` holds every choice a training run makes. It is checked as a whole
when it is made, before any data is loaded or any step taken: an option that
does not fit the others (a discrete-decoder loss on continuous points, a UNet
preset for another image size, a model field that does not exist) is refused
with one line naming the option and what it accepts.

From a config come the network (`build_model`), the diffusion (`build_diffusion`),
the data (`load_dataset`) and the device (`resolve_device`). Checkpoints store a
config and rebuild from it; training runs one. This module imports neither.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from .data import DIGITS_LEVELS, MNIST_LEVELS, TOY_DATASETS, load_digits, load_mnist, load_mnist9k, toy_2d
from .diffusion import LEARNED_VARS, LOSS_TYPES, MODEL_MEANS, MODEL_VARS, GaussianDiffusion
from .models import MLPConfig, MLPDenoiser, UNet, UNetConfig
from .schedules import make_schedule

SCHEDULES = ("linear", "cosine")
TIMESTEP_SAMPLERS = ("uniform", "importance")
MODEL_PRESETS = ("auto", "digits", "mnist", "cifar10", "mlp")
TOY_POINTS = 20_000  # size of the fixed training set drawn from a 2-D toy


# -----------------------------------------------------------------------------
# Datasets


@dataclass(frozen=True)
class DatasetSpec:
    """What a dataset is: the shape of one example and, for images, its grey levels."""

    name: str
    shape: tuple[int, ...]  # one example: (C, H, W) or (D,)
    num_levels: int | None  # values on this many levels in [-1, 1]; None: continuous
    preset: str  # the model preset "auto" picks
    num_classes: int = 0  # labels 0..num_classes-1 come with the images (0: no labels)

    @property
    def discrete(self) -> bool:
        return self.num_levels is not None

    def describe(self) -> str:
        kind = f"{self.num_levels}-level images" if self.discrete else "continuous points"
        return f"{self.name} ({kind} of shape {'x'.join(map(str, self.shape))})"


DATASET_SPECS: dict[str, DatasetSpec] = {
    "digits": DatasetSpec("digits", (1, 8, 8), DIGITS_LEVELS, "digits", num_classes=10),
    "mnist": DatasetSpec("mnist", (1, 28, 28), MNIST_LEVELS, "mnist", num_classes=10),
    # MNIST's test split cut 9,000 / 1,000, for machines without the 60,000 training images
    "mnist9k": DatasetSpec("mnist9k", (1, 28, 28), MNIST_LEVELS, "mnist", num_classes=10),
    **{name: DatasetSpec(name, (2,), None, "mlp") for name in TOY_DATASETS},
}
DATASETS = tuple(DATASET_SPECS)


# -----------------------------------------------------------------------------
# Configuration


@dataclass
class TrainConfig:
    """Everything a training run depends on; `to_dict` / `from_dict` round-trip through JSON."""

    dataset: str = "digits"  # "digits", "mnist", "mnist9k" (need data_dir) or a 2-D toy name
    data_dir: str | None = None  # MNIST IDX files ("mnist" downloads them there if missing)
    model_preset: str = "auto"  # "auto": the dataset's UNet preset, or the MLP for toys
    model_overrides: dict[str, Any] = field(default_factory=dict)  # fields of UNet/MLPConfig
    schedule: str = "cosine"
    T: int = 1000
    model_var: str = "fixed_small"
    model_mean: str = "eps"  # what the network predicts: "eps" (DDPM) or "mean" (μ̃, its baseline)
    loss_type: str = "simple"
    timestep_sampler: str = "uniform"
    num_classes: int = 0  # > 0: a conditional network, trained on the dataset's labels
    p_uncond: float = 0.1  # with num_classes: the share of labels dropped to "no label"
    batch_size: int = 128  # the global batch: split evenly over the processes of a torchrun
    lr: float = 2e-3
    weight_decay: float = 0.0
    warmup_steps: int = 200
    steps: int = 2000
    grad_clip: float = 1.0
    ema_decay: float = 0.995
    seed: int = 0
    device: str = "auto"  # "auto": CUDA if available, else CPU
    bf16: bool = False  # bfloat16 autocast (CUDA or CPU)
    compile: bool = False  # torch.compile the network (CUDA or CPU)
    channels_last: bool = False  # NHWC memory layout for the UNet (often faster on CPUs)
    out_dir: str | None = None  # None: keep everything in memory, no checkpoints
    checkpoint_every: int = 500
    log_every: int = 50  # the loss is read (and checked for NaN) every this many steps

    def __post_init__(self) -> None:
        # JSON turns tuples into lists; store them as tuples so round trips compare equal.
        self.model_overrides = {k: tuple(v) if isinstance(v, list) else v
                                for k, v in dict(self.model_overrides).items()}
        self._check_fields()
        check_recipe(self)

    def _check_fields(self) -> None:
        choices = {"dataset": DATASETS, "model_preset": MODEL_PRESETS, "schedule": SCHEDULES,
                   "model_var": MODEL_VARS, "model_mean": MODEL_MEANS, "loss_type": LOSS_TYPES,
                   "timestep_sampler": TIMESTEP_SAMPLERS}
        for name, allowed in choices.items():
            if getattr(self, name) not in allowed:
                raise ValueError(f"{name} must be one of {allowed}, got {getattr(self, name)!r}")
        for name in ("T", "batch_size", "steps", "checkpoint_every", "log_every"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
        if isinstance(self.warmup_steps, bool) or not isinstance(self.warmup_steps, int) \
                or self.warmup_steps < 0:
            raise ValueError(f"warmup_steps must be an integer >= 0, got {self.warmup_steps!r}")
        for name in ("lr", "grad_clip"):
            if not float(getattr(self, name)) > 0:
                raise ValueError(f"{name} must be > 0, got {getattr(self, name)!r}")
        if not float(self.weight_decay) >= 0:
            raise ValueError(f"weight_decay must be >= 0, got {self.weight_decay!r}")
        if isinstance(self.num_classes, bool) or not isinstance(self.num_classes, int) \
                or self.num_classes < 0:
            raise ValueError(f"num_classes must be an integer >= 0 (0: unconditional), "
                             f"got {self.num_classes!r}")
        if not 0.0 <= float(self.p_uncond) <= 1.0:
            raise ValueError(f"p_uncond must be in [0, 1], got {self.p_uncond!r}")
        if not 0.0 <= float(self.ema_decay) < 1.0:
            raise ValueError(f"ema_decay must be in [0, 1), got {self.ema_decay!r}")
        for name in ("bf16", "compile", "channels_last"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"{name} must be True or False, got {getattr(self, name)!r}")
        if self.device != "auto" and not self.device.startswith(("cpu", "cuda")):
            raise ValueError(f"device must be 'auto', 'cpu' or 'cuda[:N]', got {self.device!r}")
        if self.dataset in ("mnist", "mnist9k") and not self.data_dir:
            raise ValueError(f"dataset={self.dataset!r} needs data_dir (a folder for the MNIST "
                             "IDX files)")

    @property
    def spec(self) -> DatasetSpec:
        return DATASET_SPECS[self.dataset]

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TrainConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"unknown TrainConfig fields {unknown}; known fields: {sorted(known)}")
        return cls(**d)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> TrainConfig:
        return cls.from_dict(json.loads(text))


def check_recipe(config: TrainConfig) -> None:
    """Refuse options that are valid alone but do not fit together (one line each)."""
    spec = config.spec
    needs_decoder = {"vlb": "loss_type='vlb'", "hybrid": "loss_type='hybrid'"}.get(config.loss_type)
    if learns_sigma(config):
        needs_decoder = f"model_var={config.model_var!r}"
    if needs_decoder and not spec.discrete:
        raise ValueError(f"{needs_decoder} trains on the bound, whose L_0 term is a discrete decoder "
                         f"for data on grey levels; {spec.describe()} has no levels: use "
                         "loss_type='simple' with model_var 'fixed_small' or 'fixed_large'")
    if config.num_classes and config.num_classes != spec.num_classes:
        has = f"has labels 0..{spec.num_classes - 1}" if spec.num_classes else "has no labels"
        raise ValueError(f"num_classes={config.num_classes}, but {spec.describe()} {has}: use "
                         f"num_classes 0 (unconditional)"
                         + (f" or {spec.num_classes}" if spec.num_classes else ""))
    if "num_classes" in config.model_overrides:
        raise ValueError("set num_classes on the TrainConfig (--num-classes), not as a model "
                         "override: the training loop needs it too")
    cfg = model_config(config)  # raises on unknown or invalid overrides
    if config.num_classes and isinstance(cfg, MLPConfig):
        raise ValueError(f"num_classes={config.num_classes} needs a UNet; the MLP takes no labels")
    have = sample_shape_of(cfg)
    if have != spec.shape:
        shape = "x".join(map(str, have))
        net = "an MLP" if isinstance(cfg, MLPConfig) else "a UNet"
        raise ValueError(f"model_preset={config.model_preset!r} with overrides "
                         f"{config.model_overrides or '{}'} builds {net} for "
                         f"examples of shape {shape}, but {spec.describe()}: use model_preset "
                         f"'auto' or {spec.preset!r}")
    if cfg.learn_sigma != learns_sigma(config):
        raise ValueError(f"model override learn_sigma={cfg.learn_sigma} does not fit "
                         f"model_var={config.model_var!r}: leave learn_sigma out, model_var sets it")


# -----------------------------------------------------------------------------
# What a config builds: network, diffusion, data, device


def model_config(config: TrainConfig) -> UNetConfig | MLPConfig:
    """The network's config: the preset (the dataset's when "auto") plus the overrides."""
    preset = config.spec.preset if config.model_preset == "auto" else config.model_preset
    cls = MLPConfig if preset == "mlp" else UNetConfig
    known = [f.name for f in dataclasses.fields(cls)]
    unknown = sorted(set(config.model_overrides) - set(known))
    if unknown:
        raise ValueError(f"model override {unknown[0]!r} (--model {unknown[0]}=...) is not a field "
                         f"of {cls.__name__}; accepted: {', '.join(known)}")
    overrides = {"learn_sigma": learns_sigma(config), **config.model_overrides}
    if config.num_classes and cls is UNetConfig:  # the MLP takes no labels (check_recipe)
        overrides["num_classes"] = config.num_classes
    try:
        return MLPConfig(**overrides) if cls is MLPConfig else getattr(UNetConfig, preset)(**overrides)
    except (TypeError, ValueError) as e:
        raise ValueError(f"model overrides {config.model_overrides}: {e}") from None


def learns_sigma(config: TrainConfig) -> bool:
    """Whether the network has a variance output (2C channels)."""
    return config.model_var in LEARNED_VARS


def sample_shape_of(cfg: UNetConfig | MLPConfig) -> tuple[int, ...]:
    """The shape of one example a network config takes: (C, H, W) or (D,)."""
    if isinstance(cfg, MLPConfig):
        return (cfg.data_dim,)
    return (cfg.in_channels, cfg.image_size, cfg.image_size)


def sample_shape(config: TrainConfig) -> tuple[int, ...]:
    """The shape of one sample: (C, H, W) or (2,)."""
    return sample_shape_of(model_config(config))


def build_model(config: TrainConfig) -> nn.Module:
    cfg = model_config(config)
    return MLPDenoiser(cfg) if isinstance(cfg, MLPConfig) else UNet(cfg)


def num_levels(config: TrainConfig) -> int:
    """Grey levels of the data, for the discrete decoder (continuous toys get 256, unused)."""
    return config.spec.num_levels or 256


def build_diffusion(config: TrainConfig) -> GaussianDiffusion:
    return GaussianDiffusion(make_schedule(config.schedule, config.T), config.model_var,
                             num_levels(config), model_mean=config.model_mean)


def load_dataset(config: TrainConfig, split: str = "train") -> torch.Tensor:
    """The whole split as one tensor in [-1, 1]: (N, C, H, W) images or (N, 2) points."""
    return load_labelled(config, split)[0]


def load_labelled(config: TrainConfig, split: str = "train") -> tuple[torch.Tensor, torch.Tensor | None]:
    """The whole split and its labels: ((N, ...) in [-1, 1], (N,) int64 or None for the toys)."""
    if config.dataset == "digits":
        return load_digits(split)
    if config.dataset == "mnist":  # the standard 60,000 / 10,000, fetched if missing
        return load_mnist(config.data_dir, split, download=True)
    if config.dataset == "mnist9k":  # the test split's first 9,000 / last 1,000
        return load_mnist9k(config.data_dir, split)
    seed = 0 if split == "train" else 1  # the toy's held-out points are a different draw
    return toy_2d(config.dataset, TOY_POINTS, seed=seed), None


def resolve_device(device: str, local_rank: int | None = None) -> torch.device:
    """"auto": CUDA if available (GPU `local_rank` under torchrun), else the CPU."""
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"device={device!r} was asked for, but CUDA is not available")
    if device == "cuda" and local_rank is not None:
        device = f"cuda:{local_rank}"
    return torch.device(device)
