"""Time our UNet beside lucidrains' Unet and diffusers' UNet2DModel on the CPU.

For every contender of one input shape (see contenders.py), in one process, same torch,
same thread count:
  train   images/s of a training step: forward, MSE to the noise, backward, AdamW step (batch 64)
  sample  ms per denoising step: one forward pass without gradients (batch 16)
  memory  peak RSS that one such step adds, measured in a fresh child process per contender

The contenders of a shape are interleaved one step at a time (round-robin), for several
rounds, so that load from other processes hits all of them alike; each round gives one
speed ratio ours/peer from the medians of that round's steps. Writes the raw numbers to
results.json (report.py turns them into RESULTS.md).

    python bench/speed.py [--rounds 3 --steps 2 --threads 2 --out bench/results.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timezone
from importlib.metadata import version
from pathlib import Path

import torch
from contenders import SHAPES, Contender, contenders, count_parameters, pairs
from torch.utils.flop_counter import FlopCounterMode

HERE = Path(__file__).resolve().parent
MATCH_TOLERANCE = 0.10  # ours' parameter count within 10% of the peer's
TRAIN_BATCH = 64
SAMPLE_BATCH = 16
T = 1000  # timesteps are drawn from 0..T-1
MEMORY_WORKERS = 2  # memory children at a time (they measure memory, not time)


# -----------------------------------------------------------------------------
# One step of each kind


def make_inputs(c: Contender, batch: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """x_t (B, C, H, W), integer timesteps t (B,) and the target eps (B, C, H, W)."""
    g = torch.Generator().manual_seed(seed)
    x_t = torch.randn(batch, *c.shape, generator=g)
    t = torch.randint(0, T, (batch,), generator=g)
    eps = torch.randn(batch, *c.shape, generator=g)
    return x_t, t, eps


class Runner:
    """A built contender with its optimizer and fixed inputs; .train() and .sample() do one step."""

    def __init__(self, c: Contender):
        torch.manual_seed(0)
        self.c = c
        self.model = c.build()
        self.opt = torch.optim.AdamW(self.model.parameters(), lr=1e-4)
        self.train_inputs = make_inputs(c, TRAIN_BATCH)
        self.sample_inputs = make_inputs(c, SAMPLE_BATCH)[:2]
        if c.channels_last:  # parameters and images in NHWC; oneDNN then skips its reorders
            self.model = self.model.to(memory_format=torch.channels_last)
            self.opt = torch.optim.AdamW(self.model.parameters(), lr=1e-4)
            nhwc = lambda x: x.contiguous(memory_format=torch.channels_last) if x.dim() == 4 else x  # noqa: E731
            self.train_inputs = tuple(nhwc(x) for x in self.train_inputs)
            self.sample_inputs = tuple(nhwc(x) for x in self.sample_inputs)

    def train(self) -> None:
        x_t, t, eps = self.train_inputs
        self.model.train()
        loss = (self.c.forward(self.model, x_t, t) - eps).pow(2).mean()
        loss.backward()
        self.opt.step()
        self.opt.zero_grad(set_to_none=True)

    @torch.no_grad()
    def sample(self) -> None:
        self.model.eval()
        self.c.forward(self.model, *self.sample_inputs)


def gflop_per_image(runner: Runner) -> float:
    """Forward GFLOP for one image, as torch's FlopCounterMode counts them (convs, matmuls,
    attention; not the elementwise ops and norms)."""
    x_t, t = runner.sample_inputs
    runner.model.eval()
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        runner.c.forward(runner.model, x_t[:1], t[:1])
    return counter.get_total_flops() / 1e9


# -----------------------------------------------------------------------------
# Interleaved timing


def time_interleaved(runners: list[Runner], step: Callable[[Runner], None], rounds: int, steps: int,
                     warmup: int) -> dict[str, dict[str, list[list[float]]]]:
    """Wall and process-CPU seconds of each step, per contender: {name: {"wall": [[s, ...]
    per round], "cpu": ...}}. Contenders take turns one step at a time."""
    for runner in runners:
        for _ in range(warmup):
            step(runner)
    out = {r.c.name: {"wall": [], "cpu": []} for r in runners}
    for _ in range(rounds):
        for times in out.values():
            times["wall"].append([])
            times["cpu"].append([])
        for _ in range(steps):
            for runner in runners:
                wall0, cpu0 = time.perf_counter(), time.process_time()
                step(runner)
                wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
                out[runner.c.name]["wall"][-1].append(wall)
                out[runner.c.name]["cpu"][-1].append(cpu)
        print("  round done:", ", ".join(f"{name} {statistics.median(t['wall'][-1]) * 1e3:.0f} ms"
                                         for name, t in out.items()), flush=True)
    return out


def speed_ratios(peer_rounds: list[list[float]], ours_rounds: list[list[float]]) -> list[float]:
    """Per round: median step time of the peer / median step time of ours (> 1: ours faster)."""
    return [statistics.median(p) / statistics.median(o)
            for p, o in zip(peer_rounds, ours_rounds, strict=True)]


# -----------------------------------------------------------------------------
# Peak memory, in a fresh process per contender and step kind


def _rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _hwm_bytes() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no VmHWM in /proc/self/status")


def peak_rss_delta_mib(fn: Callable[[], None]) -> float:
    """Peak resident memory that fn() adds, in MiB: Linux's high-water mark VmHWM after fn,
    reset just before it (writing 5 to /proc/self/clear_refs), minus the RSS before it."""
    before = _rss_bytes()
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")
    fn()
    return (_hwm_bytes() - before) / 2**20


def memory_child(name: str, kind: str) -> None:
    """Entry point of the child process: one contender, one step kind; prints JSON. One step
    is enough: the first allocates everything (activations, gradients, AdamW's moments)."""
    runner = Runner(contenders()[name])
    print(json.dumps({"mib": peak_rss_delta_mib(runner.train if kind == "train" else runner.sample)}))


def measure_memory(name: str, kind: str, threads: int) -> float:
    command = [sys.executable, __file__, "--memory-child", name, kind, "--threads", str(threads)]
    done = subprocess.run(command, capture_output=True, text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])["mib"]


# -----------------------------------------------------------------------------
# The whole benchmark


def environment(threads: int) -> dict:
    model_name = platform.processor()
    try:
        lscpu = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
        model_name = next(line.split(":", 1)[1].strip() for line in lscpu.splitlines()
                          if line.startswith("Model name"))
    except (OSError, StopIteration):
        pass
    return {
        "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "cpu": model_name,
        "cores": os.cpu_count(),
        "threads": threads,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "denoising-diffusion-pytorch": version("denoising-diffusion-pytorch"),
        "diffusers": version("diffusers"),
        "gpu": "none lent to this run: CPU only, so no bf16 or torch.compile rows",
        "memory_method": "peak RSS delta: /proc/self/status VmHWM (reset via /proc/self/clear_refs) "
                         "minus the RSS before the first step, in a fresh process per contender and step kind",
    }


def check_matched(runners: dict[str, Runner]) -> dict[str, float]:
    """Parameter ratio ours/peer of every pair; raises if one is off by more than 10%."""
    ratios = {}
    for pair in pairs():
        if pair.peer not in runners:
            continue
        n_peer = count_parameters(runners[pair.peer].model)
        n_ours = count_parameters(runners[pair.ours].model)
        ratio = n_ours / n_peer
        if abs(ratio - 1) > MATCH_TOLERANCE:
            raise ValueError(f"{pair.ours} has {n_ours} parameters, {pair.peer} {n_peer}: "
                             f"ratio {ratio:.3f} is outside 1 +- {MATCH_TOLERANCE}")
        ratios[pair.ours] = ratio
    return ratios


def bench_group(names: list[str], args: argparse.Namespace) -> dict[str, dict]:
    """Build, time (train, then sample) and measure the memory of contenders sharing a shape."""
    all_contenders = contenders()
    runners = {name: Runner(all_contenders[name]) for name in names}
    param_ratios = check_matched(runners)
    results = {}
    for name, runner in runners.items():
        results[name] = {
            "library": runner.c.library,
            "shape": list(runner.c.shape),
            "config": runner.c.config,
            "params": count_parameters(runner.model),
            "params_vs_peer": param_ratios.get(name),
            "gflop_per_image": gflop_per_image(runner),
        }
    print(f"train, batch {TRAIN_BATCH}:", flush=True)
    train = time_interleaved(list(runners.values()), Runner.train, args.rounds, args.steps, args.warmup)
    print(f"sample, batch {SAMPLE_BATCH}:", flush=True)
    sample = time_interleaved(list(runners.values()), Runner.sample, args.rounds, args.sample_steps,
                              args.warmup + 1)
    del runners  # free them before the memory children start
    for name in names:
        results[name]["train"] = train[name]
        results[name]["sample"] = sample[name]
    # Each child reads only its own process's high-water mark, so children can run side by
    # side; most of a child's time is importing torch and diffusers (6-12 s here).
    jobs = [(name, kind) for name in names for kind in ("train", "sample")]
    with ThreadPoolExecutor(max_workers=MEMORY_WORKERS) as pool:
        mib = pool.map(lambda job: measure_memory(*job, args.threads), jobs)
        for (name, kind), value in zip(jobs, mib, strict=True):
            results[name].setdefault("memory_mib", {})[kind] = value
    return results


def summarize(results: dict[str, dict]) -> list[dict]:
    """Per pair: speed ratios ours/peer for each round (> 1: ours faster) and memory ratios."""
    rows = []
    for pair in pairs():
        if pair.peer not in results:
            continue
        peer, ours = results[pair.peer], results[pair.ours]
        row = {"peer": pair.peer, "ours": pair.ours, "params_peer": peer["params"],
               "params_ours": ours["params"]}
        for kind in ("train", "sample"):
            row[f"{kind}_speed_ratios"] = speed_ratios(peer[kind]["wall"], ours[kind]["wall"])
            row[f"{kind}_cpu_ratios"] = speed_ratios(peer[kind]["cpu"], ours[kind]["cpu"])
            row[f"{kind}_memory_ratio"] = ours["memory_mib"][kind] / peer["memory_mib"][kind]
        rows.append(row)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3, help="round-robin rounds")
    parser.add_argument("--steps", type=int, default=2, help="timed training steps per contender and round")
    parser.add_argument("--sample-steps", type=int, default=4, help="timed sampling steps per round")
    parser.add_argument("--warmup", type=int, default=1, help="untimed steps before the first round")
    parser.add_argument("--threads", type=int, default=2)
    # 3x32x32 (CIFAR-sized) on request only: it adds about 4 minutes, and make bench has 40
    parser.add_argument("--shapes", nargs="+", default=["1x28x28", "digits"], choices=[*SHAPES, "digits"],
                        help="input shapes to time (default 1x28x28 digits; also 3x32x32)")
    parser.add_argument("--out", type=Path, default=HERE / "results.json")
    parser.add_argument("--command", default=" ".join(sys.argv), help="the command to record")
    parser.add_argument("--memory-child", nargs=2, metavar=("NAME", "KIND"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.memory_child:
        memory_child(*args.memory_child)
        return

    meta = environment(args.threads)
    meta.update(command=args.command, load_avg_1min_start=os.getloadavg()[0],
                rounds=args.rounds, steps=args.steps, sample_steps=args.sample_steps,
                warmup=args.warmup, train_batch=TRAIN_BATCH, sample_batch=SAMPLE_BATCH)
    start = time.perf_counter()
    results: dict[str, dict] = {}
    for shape in args.shapes:
        names = [n for n in contenders() if n.endswith(" 1x8x8" if shape == "digits" else f" {shape}")]
        print(f"== {shape}: {', '.join(names)}", flush=True)
        results.update(bench_group(names, args))
    meta.update(load_avg_1min_end=os.getloadavg()[0], seconds=time.perf_counter() - start)
    summary = summarize(results)
    args.out.write_text(json.dumps({"meta": meta, "contenders": results, "pairs": summary}, indent=1))

    print(f"\nspeed ratio ours/peer (> 1: ours faster), median over {args.rounds} interleaved rounds:")
    for row in summary:
        train, sample = statistics.median(row["train_speed_ratios"]), statistics.median(row["sample_speed_ratios"])
        print(f"  {row['ours']:36s} vs {row['peer']:28s} params {row['params_ours'] / row['params_peer']:.3f}  "
              f"train {train:.2f}x  sample {sample:.2f}x  memory(train) {row['train_memory_ratio']:.2f}x")
    print(f"wrote {args.out} in {meta['seconds']:.0f} s")


if __name__ == "__main__":
    main()
