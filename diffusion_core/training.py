"""The training loop: a config, the timestep samplers, EMA, and `train`.

One step: draw a batch x_0 and timesteps t, compute the per-example loss of
`GaussianDiffusion.training_losses`, weight it by the timestep sampler's
importance weights, take an AdamW step with a clipped gradient, and update the
exponential moving average (EMA) of the weights, the copy we sample from.

Every random draw comes from state that the checkpoint stores (the torch and
data generators, numpy, Python), so a resumed run ends at the same weights as
an uninterrupted one (bit for bit on CPU at the same thread count).
"""

from __future__ import annotations

import dataclasses
import json
import random
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn
from tqdm.auto import tqdm

from .data import DIGITS_LEVELS, MNIST_LEVELS, TOY_DATASETS, load_digits, load_mnist, toy_2d
from .diffusion import LOSS_TYPES, MODEL_VARS, GaussianDiffusion
from .models import MLPConfig, MLPDenoiser, UNet, UNetConfig
from .schedules import make_schedule

DATASETS = ("digits", "mnist", *TOY_DATASETS)
SCHEDULES = ("linear", "cosine")
TIMESTEP_SAMPLERS = ("uniform", "importance")
MODEL_PRESETS = ("auto", "digits", "mnist", "cifar10", "mlp")
TOY_POINTS = 20_000  # size of the fixed training set drawn from a 2-D toy


# -----------------------------------------------------------------------------
# Configuration


@dataclass
class TrainConfig:
    """Everything a training run depends on; `to_dict` / `from_dict` round-trip through JSON."""

    dataset: str = "digits"  # "digits", "mnist" (needs data_dir) or a 2-D toy name
    data_dir: str | None = None  # MNIST IDX files (downloaded there if missing)
    model_preset: str = "auto"  # "auto": digits/mnist UNet preset, or the MLP for toys
    model_overrides: dict[str, Any] = field(default_factory=dict)  # fields of UNet/MLPConfig
    schedule: str = "cosine"
    T: int = 1000
    model_var: str = "fixed_small"
    loss_type: str = "simple"
    timestep_sampler: str = "uniform"
    batch_size: int = 128
    lr: float = 2e-3
    weight_decay: float = 0.0
    warmup_steps: int = 200
    steps: int = 2000
    grad_clip: float = 1.0
    ema_decay: float = 0.995
    seed: int = 0
    device: str = "auto"  # "auto": CUDA if available, else CPU
    bf16: bool = False  # bfloat16 autocast, CUDA only
    compile: bool = False  # torch.compile, CUDA only
    out_dir: str | None = None  # None: keep everything in memory, no checkpoints
    checkpoint_every: int = 500
    log_every: int = 50

    def __post_init__(self) -> None:
        # JSON turns tuples into lists; store them as tuples so round trips compare equal.
        self.model_overrides = {k: tuple(v) if isinstance(v, list) else v
                                for k, v in dict(self.model_overrides).items()}
        choices = {"dataset": DATASETS, "model_preset": MODEL_PRESETS, "schedule": SCHEDULES,
                   "model_var": MODEL_VARS, "loss_type": LOSS_TYPES,
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
        if not 0.0 <= float(self.ema_decay) < 1.0:
            raise ValueError(f"ema_decay must be in [0, 1), got {self.ema_decay!r}")
        if self.device != "auto" and not self.device.startswith(("cpu", "cuda")):
            raise ValueError(f"device must be 'auto', 'cpu' or 'cuda[:N]', got {self.device!r}")
        if self.dataset == "mnist" and not self.data_dir:
            raise ValueError("dataset='mnist' needs data_dir (a folder for the MNIST IDX files)")

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


# -----------------------------------------------------------------------------
# What a config builds: data, network, diffusion


def model_config(config: TrainConfig) -> UNetConfig | MLPConfig:
    """The network's config: the preset (chosen by dataset when "auto") plus the overrides."""
    preset = config.model_preset
    if preset == "auto":
        preset = config.dataset if config.dataset in ("digits", "mnist") else "mlp"
    overrides = {"learn_sigma": config.model_var == "learned_range", **config.model_overrides}
    if preset == "mlp":
        return MLPConfig(**overrides)
    return getattr(UNetConfig, preset)(**overrides)


def build_model(config: TrainConfig) -> nn.Module:
    cfg = model_config(config)
    return MLPDenoiser(cfg) if isinstance(cfg, MLPConfig) else UNet(cfg)


def num_levels(config: TrainConfig) -> int:
    """Grey levels of the data, for the discrete decoder (continuous toys get 256)."""
    return {"digits": DIGITS_LEVELS, "mnist": MNIST_LEVELS}.get(config.dataset, 256)


def build_diffusion(config: TrainConfig) -> GaussianDiffusion:
    return GaussianDiffusion(make_schedule(config.schedule, config.T), config.model_var,
                             num_levels(config))


def load_dataset(config: TrainConfig, split: str = "train") -> torch.Tensor:
    """The whole split as one tensor in [-1, 1]: (N, C, H, W) images or (N, 2) points."""
    if config.dataset == "digits":
        return load_digits(split)[0]
    if config.dataset == "mnist":
        return load_mnist(config.data_dir, split)[0]
    seed = 0 if split == "train" else 1  # the toy's held-out points are a different draw
    return toy_2d(config.dataset, TOY_POINTS, seed=seed)


def sample_shape(config: TrainConfig) -> tuple[int, ...]:
    """The shape of one sample: (C, H, W) or (2,)."""
    cfg = model_config(config)
    if isinstance(cfg, MLPConfig):
        return (cfg.data_dim,)
    return (cfg.in_channels, cfg.image_size, cfg.image_size)


def resolve_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"device={device!r} was asked for, but CUDA is not available")
    return torch.device(device)


# -----------------------------------------------------------------------------
# Timestep samplers


class UniformSampler:
    """t ~ U{0..T-1}, every weight 1."""

    def __init__(self, T: int):
        self.T = T

    def probs(self) -> torch.Tensor:
        return torch.full((self.T,), 1.0 / self.T, dtype=torch.float64)

    def sample(self, batch_size: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """Timesteps (B,) and their importance weights 1 / (T p_t) (B,)."""
        p = self.probs()
        t = torch.multinomial(p, batch_size, replacement=True, generator=generator)
        return t, (1.0 / (self.T * p[t])).float()

    def update(self, t: torch.Tensor, losses: torch.Tensor) -> None:
        pass

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        pass


class ImportanceSampler(UniformSampler):
    """iDDPM's loss-aware sampler (Nichol & Dhariwal 2021, eq. 18): p_t ∝ √E[L_t²].

    It keeps the last `history` losses seen at each t and mixes p with a little
    of the uniform distribution so no t starves. The weights 1 / (T p_t) keep
    the weighted loss an unbiased estimate of the mean over t. Until every t
    has a full history it samples uniformly.
    """

    def __init__(self, T: int, history: int = 10, uniform_prob: float = 0.001):
        super().__init__(T)
        self.uniform_prob = uniform_prob
        self.losses = torch.zeros(T, history, dtype=torch.float64)  # newest last
        self.counts = torch.zeros(T, dtype=torch.long)

    def probs(self) -> torch.Tensor:
        if bool((self.counts < self.losses.shape[1]).any()):
            return super().probs()
        p = self.losses.pow(2).mean(dim=1).sqrt()
        p = p / p.sum()
        return p * (1.0 - self.uniform_prob) + self.uniform_prob / self.T

    def update(self, t: torch.Tensor, losses: torch.Tensor) -> None:
        for ti, loss in zip(t.tolist(), losses.detach().double().cpu().tolist(),
                            strict=True):
            self.losses[ti] = torch.cat([self.losses[ti, 1:], self.losses.new_tensor([loss])])
            self.counts[ti] = min(int(self.counts[ti]) + 1, self.losses.shape[1])

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {"losses": self.losses.clone(), "counts": self.counts.clone()}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        self.losses.copy_(state["losses"])
        self.counts.copy_(state["counts"])


def make_timestep_sampler(name: str, T: int) -> UniformSampler:
    return ImportanceSampler(T) if name == "importance" else UniformSampler(T)


# -----------------------------------------------------------------------------
# Random state


# The loop itself draws only from torch generators; numpy's and Python's global RNGs are
# seeded and checkpointed too, for any code (data, user callbacks) that uses them.


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)  # noqa: NPY002
    torch.manual_seed(seed)


def rng_state(data_generator: torch.Generator) -> dict[str, Any]:
    """Every RNG the loop touches, as tensors and plain containers (for weights_only loads)."""
    np_state = np.random.get_state()  # noqa: NPY002
    py_state = random.getstate()
    state = {
        "torch": torch.get_rng_state(),
        "data": data_generator.get_state(),
        "numpy": {"keys": torch.from_numpy(np_state[1].astype(np.int64)), "pos": int(np_state[2]),
                  "has_gauss": int(np_state[3]), "cached_gaussian": float(np_state[4])},
        "python": {"version": py_state[0], "state": list(py_state[1]), "gauss_next": py_state[2]},
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any], data_generator: torch.Generator) -> None:
    torch.set_rng_state(state["torch"])
    data_generator.set_state(state["data"])
    n = state["numpy"]
    keys = n["keys"].numpy().astype(np.uint32)
    np.random.set_state(("MT19937", keys, n["pos"], n["has_gauss"], n["cached_gaussian"]))  # noqa: NPY002
    p = state["python"]
    random.setstate((p["version"], tuple(p["state"]), p["gauss_next"]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


# -----------------------------------------------------------------------------
# The loop


@dataclass
class TrainResult:
    model: nn.Module  # the trained weights (train mode off)
    ema_model: nn.Module  # the moving average, the one to sample from
    diffusion: GaussianDiffusion
    config: TrainConfig
    history: list[float]  # the loss at every step since step 1
    step: int
    steps_per_sec: float  # over the steps this call ran (0 if it ran none)


def warmup_factor(warmup_steps: int):
    """LR multiplier: linear from 1/warmup to 1 over the first `warmup_steps` steps."""
    return lambda step: min(1.0, (step + 1) / warmup_steps) if warmup_steps else 1.0


def set_hyperparameters(config: TrainConfig, optimizer, scheduler) -> None:
    """After a resume, the caller's lr and weight decay rule (not the checkpoint's)."""
    factor = warmup_factor(config.warmup_steps)
    scheduler.lr_lambdas = [factor] * len(optimizer.param_groups)
    scheduler.base_lrs = [config.lr] * len(optimizer.param_groups)
    for group in optimizer.param_groups:
        group["initial_lr"] = config.lr
        group["lr"] = config.lr * factor(scheduler.last_epoch)
        group["weight_decay"] = config.weight_decay


def train(config: TrainConfig, resume: bool = True, progress: bool = True) -> TrainResult:
    """Train a denoiser on `config.dataset`; checkpoint to `config.out_dir` and resume from it.

    With `resume` and an existing checkpoint in out_dir, continue from its step
    (the architecture and schedule must match; `steps` may be raised). A NaN or
    infinite loss stops the run with FloatingPointError; the last checkpoint stays.
    """
    from . import checkpoints  # checkpoints imports this module for TrainConfig

    if not isinstance(config, TrainConfig):
        raise TypeError(f"config must be a TrainConfig, got {type(config).__name__}")
    device = resolve_device(config.device)
    cuda = device.type == "cuda"
    seed_everything(config.seed)
    data = load_dataset(config).to(device)  # (N, ...)
    model = build_model(config).to(device)
    diffusion = build_diffusion(config)
    ema = AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(config.ema_decay), use_buffers=True)
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, warmup_factor(config.warmup_steps))
    sampler = make_timestep_sampler(config.timestep_sampler, config.T)
    data_generator = torch.Generator().manual_seed(config.seed)
    history: list[float] = []
    step = 0

    ckpt_dir = checkpoints.run_checkpoint_dir(config.out_dir) if config.out_dir else None
    if resume and ckpt_dir is not None and checkpoints.find_checkpoint(ckpt_dir) is not None:
        step, history = checkpoints.load_training_state(
            ckpt_dir, config, model, ema, optimizer, scheduler, sampler, data_generator)
        set_hyperparameters(config, optimizer, scheduler)
    forward = torch.compile(model) if config.compile and cuda else model

    start, start_step = time.perf_counter(), step
    model.train()
    bar = tqdm(total=config.steps, initial=step, desc="training", disable=not progress)
    while step < config.steps:
        idx = torch.randint(0, data.shape[0], (config.batch_size,), generator=data_generator)
        t, weights = sampler.sample(config.batch_size, data_generator)
        x0, t, weights = data[idx.to(device)], t.to(device), weights.to(device)
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=config.bf16 and cuda):
            losses = diffusion.training_losses(forward, x0, t, loss_type=config.loss_type)
        loss = (losses["loss"] * weights).mean()
        if not torch.isfinite(loss):
            bar.close()
            kept = f"; the last checkpoint in {ckpt_dir} is kept" if ckpt_dir else ""
            raise FloatingPointError(f"training stopped: the loss is {loss.item()} at step "
                                     f"{step + 1}{kept}")
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
        optimizer.step()
        scheduler.step()
        ema.update_parameters(model)
        sampler.update(t, losses["loss"])
        step += 1
        history.append(loss.item())
        bar.update(1)
        if step % config.log_every == 0 or step == config.steps:
            bar.set_postfix(loss=f"{np.mean(history[-config.log_every:]):.4f}")
        if ckpt_dir is not None and (step % config.checkpoint_every == 0 or step == config.steps):
            checkpoints.save_training_state(ckpt_dir, config, step, history, model, ema,
                                            optimizer, scheduler, sampler, data_generator)
    bar.close()
    elapsed = time.perf_counter() - start
    model.eval()
    ema.module.eval()
    return TrainResult(model, ema.module, diffusion, config, history, step,
                       (step - start_step) / elapsed if step > start_step else 0.0)


def read_config(path: str | Path) -> TrainConfig:
    """A TrainConfig from a JSON file."""
    return TrainConfig.from_json(Path(path).read_text())
