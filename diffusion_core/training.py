"""The training loop: the timestep samplers, EMA, one step, and `train`.

One step: draw a batch x_0 and timesteps t, compute the per-example loss of
`GaussianDiffusion.training_losses`, weight it by the timestep sampler's
importance weights, take an AdamW step with a clipped gradient, and update the
exponential moving average (EMA) of the weights, the copy we sample from.

A step never reads a tensor back to the host: the data, the timestep sampler and
the schedule's tables live on the training device, and the losses are kept there
until the logging interval (`log_every`), when they are read once, checked for
NaN and written to `<out_dir>/metrics.jsonl`. On a GPU the CPU runs ahead
and queues the next steps while the device computes.

Under torchrun the same loop runs in every process, each on its own share of
the batch with its own random draws; DistributedDataParallel averages the
gradients, and rank 0 alone keeps the EMA, shows progress and writes files.

Every random draw comes from state that the checkpoint stores (each rank's
torch and data generators, numpy, Python), so a resumed run ends at the same
weights as an uninterrupted one (bit for bit on the CPU at the same thread count).
"""

from __future__ import annotations

import copy
import json
import math
import random
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from tqdm.auto import tqdm

from . import checkpoints
from .diffusion import GaussianDiffusion
from .distributed import Distributed, setup
from .guidance import drop_labels
from .recipe import TrainConfig, build_diffusion, build_model, load_labelled

METRICS_FILE = "metrics.jsonl"
RANK_SEED_STRIDE = 7919  # rank r of a multi-process run draws from seed + 7919 (r + 1)


# -----------------------------------------------------------------------------
# Timestep samplers


class UniformSampler:
    """t ~ U{0..T-1}, every weight 1."""

    def __init__(self, T: int, device: torch.device | str = "cpu"):
        self.T = T
        self.device = torch.device(device)

    def probs(self) -> torch.Tensor:
        """p_t, (T,) float64 on the sampler's device."""
        return torch.full((self.T,), 1.0 / self.T, dtype=torch.float64, device=self.device)

    def sample(self, batch_size: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """Timesteps (B,) and their importance weights 1 / (T p_t) (B,), on the sampler's device
        (`generator` must live there too)."""
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
    has a full history it samples uniformly. Its state lives on `device` and is
    updated with tensor operations only, so a training step never waits for it.
    """

    def __init__(self, T: int, history: int = 10, uniform_prob: float = 0.001,
                 device: torch.device | str = "cpu"):
        super().__init__(T, device)
        self.uniform_prob = uniform_prob
        self.losses = torch.zeros(T, history, dtype=torch.float64, device=self.device)  # newest last
        self.counts = torch.zeros(T, dtype=torch.long, device=self.device)

    def probs(self) -> torch.Tensor:
        rms = self.losses.pow(2).mean(dim=1).sqrt()
        p = rms / rms.sum()
        p = p * (1.0 - self.uniform_prob) + self.uniform_prob / self.T
        full = (self.counts >= self.losses.shape[1]).all()  # a tensor: chosen without a host read
        return torch.where(full, p, super().probs())

    def update(self, t: torch.Tensor, losses: torch.Tensor) -> None:
        """Append losses (B,) seen at timesteps t (B,), in order, to each t's history."""
        T, H = self.losses.shape
        t = t.to(self.device).long()
        losses = losses.detach().to(self.device, torch.float64)
        n = torch.zeros(T, dtype=torch.long, device=self.device).index_add_(  # (T,) new per t
            0, t, torch.ones_like(t))  # (bincount would read its maximum back on a GPU)
        # Each t's history shifts left by its n new losses...
        src = torch.arange(H, device=self.device) + n[:, None]  # (T, H) old column of each slot
        kept = torch.gather(self.losses, 1, src.clamp(max=H - 1))
        new = torch.where(src < H, kept, 0.0)
        new = torch.cat([new, new.new_zeros(T, 1)], dim=1)  # column H collects what falls off
        # ...and its new losses fill the right end, in the order they came.
        order = torch.argsort(t, stable=True)
        ts = t[order]
        rank = torch.arange(len(t), device=self.device) - (torch.cumsum(n, 0) - n)[ts]
        col = H - n[ts] + rank
        new[ts, torch.where(col >= 0, col, H)] = losses[order]
        self.losses = new[:, :H].contiguous()
        self.counts = torch.clamp(self.counts + n, max=H)

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {"losses": self.losses.cpu(), "counts": self.counts.cpu()}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        self.losses.copy_(state["losses"])
        self.counts.copy_(state["counts"])


def make_timestep_sampler(name: str, T: int, device: torch.device | str = "cpu") -> UniformSampler:
    return ImportanceSampler(T, device=device) if name == "importance" else UniformSampler(T, device)


# -----------------------------------------------------------------------------
# EMA


class EMA:
    """An exponential moving average of a model's weights: the copy to sample from.

    After the first update it equals the model; then each update moves it a
    fraction 1 - decay of the way to the current weights.
    """

    def __init__(self, model: nn.Module, decay: float):
        self.module = copy.deepcopy(model).eval()  # updated under no_grad
        self.decay = decay
        self.n_averaged = 0

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        ema = [*self.module.parameters(), *self.module.buffers()]
        current = [p.detach() for p in (*model.parameters(), *model.buffers())]
        if self.n_averaged == 0:
            for e, c in zip(ema, current, strict=True):
                e.copy_(c)
        else:
            floats = [(e, c) for e, c in zip(ema, current, strict=True) if e.is_floating_point()]
            if floats:
                torch._foreach_lerp_([e for e, _ in floats], [c for _, c in floats], 1.0 - self.decay)
            for e, c in zip(ema, current, strict=True):
                if not e.is_floating_point():
                    e.copy_(c)
        self.n_averaged += 1


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


def rank_seed(seed: int, rank: int, world_size: int) -> int:
    """The seed of a rank's draws: the run's seed for a single process, else one per rank."""
    return seed if world_size == 1 else seed + RANK_SEED_STRIDE * (rank + 1)


# -----------------------------------------------------------------------------
# One step


def train_step(forward: nn.Module, model: nn.Module, diffusion: GaussianDiffusion,
               optimizer: torch.optim.Optimizer, x0: torch.Tensor, t: torch.Tensor,
               weights: torch.Tensor, noise: torch.Tensor, config: TrainConfig,
               y: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """One AdamW step on a batch; no host reads. Returns the weighted mean loss () and the
    per-example losses (B,), both detached and still on the device.

    `forward` is the network to call (the model itself, or its DDP or compiled
    wrapper); `model` owns the parameters the gradient is clipped on. y: the batch's
    labels (B,) for a conditional network, some already dropped to "no label".
    """
    net = forward if y is None else (lambda x, t: forward(x, t, y))
    with torch.autocast(x0.device.type, dtype=torch.bfloat16, enabled=config.bf16):
        losses = diffusion._training_losses(net, x0, t, noise, config.loss_type)
    loss = (losses["loss"] * weights).mean()
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
    optimizer.step()
    return loss.detach(), losses["loss"].detach()


class LossWindow:
    """The losses of the steps since the last read, kept on the device.

    `read` fetches them in one host read (summed over the ranks first), with the
    mean per-example loss in each quarter of the timesteps.
    """

    def __init__(self, size: int, T: int, device: torch.device):
        self.T = T
        self.losses = torch.zeros(size, device=device)  # weighted mean loss of each step
        self.by_quartile = torch.zeros(2, 4, device=device)  # sums and counts per quarter of t
        self.n = 0

    def add(self, loss: torch.Tensor, t: torch.Tensor, per_example: torch.Tensor) -> None:
        self.losses[self.n] = loss
        q = t * 4 // self.T
        self.by_quartile[0].index_add_(0, q, per_example.float())
        self.by_quartile[1].index_add_(0, q, torch.ones_like(per_example, dtype=torch.float))
        self.n += 1

    def read(self, dist: Distributed) -> tuple[list[float], list[float | None]]:
        """(loss of each step, averaged over ranks; mean loss per quarter of t)."""
        both = torch.cat([self.losses[:self.n] / dist.world_size, self.by_quartile.flatten()])
        values = dist.all_sum_(both).tolist()
        steps, sums, counts = values[:self.n], values[self.n:self.n + 4], values[self.n + 4:]
        self.losses.zero_()
        self.by_quartile.zero_()
        self.n = 0
        return steps, [s / c if c else None for s, c in zip(sums, counts, strict=True)]


# -----------------------------------------------------------------------------
# Checkpoints of a run


def save_training_state(path: Path, config: TrainConfig, step: int, history: list[float],
                        model: nn.Module, ema: EMA | None, optimizer, scheduler,
                        sampler: UniformSampler, data_generator: torch.Generator,
                        dist: Distributed) -> None:
    """Everything `train` needs to continue exactly where it stopped. Every rank calls it
    (each hands over its random state); rank 0 writes."""
    rngs = dist.gather_objects(rng_state(data_generator))
    if not dist.is_main:
        return
    optim_state = {
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "ema_n_averaged": torch.tensor(ema.n_averaged),
        "rng": rngs[0],
        "rng_per_rank": rngs,
        "sampler": sampler.state_dict(),
        "history": torch.tensor(history, dtype=torch.float64),
    }
    checkpoints.save_checkpoint(path, config, step, ema.module, model, optim_state)


def load_training_state(path: Path, config: TrainConfig, model: nn.Module, ema: EMA | None,
                        optimizer, scheduler, sampler: UniformSampler,
                        data_generator: torch.Generator, dist: Distributed
                        ) -> tuple[int, list[float]]:
    """Restore a run in place from its checkpoint; returns (step, loss history)."""
    ckpt = checkpoints.read_checkpoint(path, config)
    checkpoints.load_weights(model, ckpt, checkpoints.MODEL_FILE)
    state = checkpoints.load_optim_state(ckpt)
    if ema is not None:
        checkpoints.load_weights(ema.module, ckpt, checkpoints.EMA_FILE)
        ema.n_averaged = int(state["ema_n_averaged"])
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    sampler.load_state_dict(state["sampler"])
    rngs = state.get("rng_per_rank", [state["rng"]])
    if len(rngs) == dist.world_size:
        set_rng_state(rngs[dist.rank], data_generator)
    else:  # another number of processes: continue with fresh per-rank draws
        if dist.is_main:
            warnings.warn(f"{ckpt.path} was written by {len(rngs)} processes and this run has "
                          f"{dist.world_size}: it continues from step {ckpt.step} with new random "
                          "draws, so it will not match an uninterrupted run bit for bit", stacklevel=3)
        seed = rank_seed(config.seed, dist.rank, dist.world_size) + ckpt.step
        torch.manual_seed(seed)
        data_generator.manual_seed(seed)
    return ckpt.step, state["history"].tolist()


def _keep_metrics_until(path: Path, step: int) -> None:
    """Drop metric lines past `step` (written after the checkpoint a run resumes from)."""
    if path.is_file():
        lines = [line for line in path.read_text().splitlines()
                 if line.strip() and json.loads(line)["step"] <= step]
        path.write_text("".join(line + "\n" for line in lines))


# -----------------------------------------------------------------------------
# The loop


@dataclass
class TrainResult:
    model: nn.Module  # the trained weights (train mode off)
    ema_model: nn.Module | None  # the moving average, the one to sample from (None off rank 0)
    diffusion: GaussianDiffusion
    config: TrainConfig
    history: list[float]  # the loss at every step since step 1 (the mean over the ranks)
    step: int
    steps_per_sec: float  # over the steps this call ran (0 if it ran none)
    rank: int = 0  # this process's rank under torchrun
    world_size: int = 1


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
    infinite loss stops the run with FloatingPointError at the next read of the
    loss (every `log_every` steps, and before each checkpoint), so the last
    checkpoint stays good. Under torchrun, every process calls this.
    """
    if not isinstance(config, TrainConfig):
        raise TypeError(f"config must be a TrainConfig, got {type(config).__name__}")
    dist = setup(config.device)
    try:
        return _train(config, dist, resume, progress)
    finally:
        dist.close()


def _train(config: TrainConfig, dist: Distributed, resume: bool, progress: bool) -> TrainResult:
    if config.batch_size % dist.world_size:
        raise ValueError(f"batch_size={config.batch_size} (the global batch) must be divisible by "
                         f"the {dist.world_size} processes")
    device, batch = dist.device, config.batch_size // dist.world_size
    seed_everything(config.seed)  # every rank builds the same initial weights
    data, labels = load_labelled(config)  # (N, ...), (N,) or None
    data = data.to(device)
    labels = labels.to(device) if config.num_classes else None
    model = build_model(config).to(device)
    if config.channels_last and data.dim() == 4:
        model = model.to(memory_format=torch.channels_last)
        data = data.contiguous(memory_format=torch.channels_last)
    diffusion = build_diffusion(config)
    ema = EMA(model, config.ema_decay) if dist.is_main else None
    # On a GPU the fused AdamW keeps its step counters on the device: one kernel, no host reads.
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay,
                                  fused=device.type == "cuda" or None)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, warmup_factor(config.warmup_steps))
    sampler = make_timestep_sampler(config.timestep_sampler, config.T, device)
    seed = rank_seed(config.seed, dist.rank, dist.world_size)
    data_generator = torch.Generator(device).manual_seed(seed)
    if dist.world_size > 1:
        torch.manual_seed(seed)  # each rank its own noise
    history: list[float] = []
    step = 0

    out_dir = Path(config.out_dir) if config.out_dir else None
    ckpt_dir = checkpoints.run_checkpoint_dir(out_dir) if out_dir else None
    if resume and ckpt_dir is not None and checkpoints.find_checkpoint(ckpt_dir) is not None:
        step, history = load_training_state(ckpt_dir, config, model, ema, optimizer, scheduler,
                                            sampler, data_generator, dist)
        set_hyperparameters(config, optimizer, scheduler)
    metrics = out_dir / METRICS_FILE if out_dir and dist.is_main else None
    if metrics is not None:
        out_dir.mkdir(parents=True, exist_ok=True)
        if step:
            _keep_metrics_until(metrics, step)
        else:
            metrics.unlink(missing_ok=True)
    forward = DistributedDataParallel(model) if dist.world_size > 1 else model
    if config.compile:
        forward = torch.compile(forward)

    window = LossWindow(config.log_every, config.T, device)
    start = last_read = time.perf_counter()
    start_step = last_step = step
    model.train()
    bar = tqdm(total=config.steps, initial=step, desc="training", disable=not (progress and dist.is_main))
    while step < config.steps:
        idx = torch.randint(0, data.shape[0], (batch,), generator=data_generator, device=device)
        t, weights = sampler.sample(batch, data_generator)
        x0 = data[idx]
        noise = torch.randn_like(x0)
        y = None
        if labels is not None:  # the network learns the unconditional model on the dropped ones
            y = drop_labels(labels[idx], config.p_uncond, config.num_classes, data_generator)
        loss, per_example = train_step(forward, model, diffusion, optimizer, x0, t, weights, noise,
                                       config, y)
        scheduler.step()
        if ema is not None:
            ema.update(model)
        if config.timestep_sampler == "importance":  # every rank sees every rank's losses
            sampler.update(dist.all_gather(t), dist.all_gather(per_example))
        window.add(loss, t, per_example)
        step += 1
        bar.update(1)
        save = ckpt_dir is not None and (step % config.checkpoint_every == 0 or step == config.steps)
        if save or step % config.log_every == 0 or step == config.steps:
            losses, by_quartile = window.read(dist)  # the one host read, every log_every steps
            bad = next((i for i, v in enumerate(losses) if not math.isfinite(v)), None)
            if bad is not None:
                bar.close()
                kept = f"; the last checkpoint in {ckpt_dir} is kept" if ckpt_dir else ""
                raise FloatingPointError(f"training stopped: the loss is {losses[bad]} at step "
                                         f"{step - len(losses) + bad + 1}{kept}")
            history.extend(losses)
            now = time.perf_counter()
            images_per_sec = (step - last_step) * config.batch_size / (now - last_read)
            last_read, last_step = now, step
            bar.set_postfix(loss=f"{np.mean(history[-config.log_every:]):.4f}")
            if metrics is not None:
                with open(metrics, "a") as f:
                    f.write(json.dumps({"step": step, "loss": float(np.mean(losses)),
                                        "loss_by_t_quartile": by_quartile,
                                        "images_per_sec": images_per_sec,
                                        "lr": scheduler.get_last_lr()[0]}) + "\n")
        if save:
            save_training_state(ckpt_dir, config, step, history, model, ema, optimizer, scheduler,
                                sampler, data_generator, dist)
    bar.close()
    elapsed = time.perf_counter() - start
    model.eval()
    return TrainResult(model, ema.module if ema is not None else None, diffusion, config, history,
                       step, (step - start_step) / elapsed if step > start_step else 0.0,
                       dist.rank, dist.world_size)


def read_config(path: str | Path) -> TrainConfig:
    """A TrainConfig from a JSON file."""
    return TrainConfig.from_json(Path(path).read_text())
