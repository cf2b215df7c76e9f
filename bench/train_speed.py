"""Training throughput (images/s) of `diffusion_core.train`, variants interleaved.

    python bench/train_speed.py [--before DIR] [--reps 2] [--compile] [--out FILE]

Each measurement is a fresh process running `train` on the digits preset (batch
128) or the MNIST preset (batch 64); the time of every optimizer step is recorded,
and the rate is taken over the steps after the first few (which include set-up and,
with --compile, compilation). The variants run in turn, round after round, so the
machine's slow and fast moments fall on all of them alike. --before DIR adds the
same runs against another checkout of the library (for example the commit before
a change), imported from DIR instead of this one.

MNIST's training split is not needed for a speed test: the runs train on the test
split (load_mnist is redirected), which has the same shape.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MNIST_DIR = ROOT.parent / "shared" / "data" / "mnist"

PRESETS = {  # name: (TrainConfig options, steps measured, steps skipped first)
    "digits": (dict(dataset="digits", batch_size=128), 40, 5),
    "mnist": (dict(dataset="mnist", data_dir=str(MNIST_DIR), batch_size=64), 16, 4),
}

CHILD = r"""
import json, sys, time
import torch
import diffusion_core.data as data
real_load_mnist = data.load_mnist
def test_split(root, split="test", **kwargs):
    return real_load_mnist(root, "test", **kwargs)
for module in ("diffusion_core.recipe", "diffusion_core.training"):
    try:
        mod = __import__(module, fromlist=["x"])
    except ImportError:
        continue
    if hasattr(mod, "load_mnist"):
        mod.load_mnist = test_split
from diffusion_core.training import TrainConfig, train
options, skip = json.loads(sys.argv[1]), int(sys.argv[2])
times = []
real_step = torch.optim.AdamW.step
def timed_step(self, *args, **kwargs):
    out = real_step(self, *args, **kwargs)
    times.append(time.perf_counter())
    return out
torch.optim.AdamW.step = timed_step
config = TrainConfig(device="cpu", warmup_steps=0, checkpoint_every=10**6, **options)
train(config, progress=False)
rate = (len(times) - 1 - skip) * config.batch_size / (times[-1] - times[skip])
print(json.dumps({"images_per_sec": rate, "threads": torch.get_num_threads()}))
"""


def measure(src: Path, options: dict, steps: int, skip: int) -> float:
    options = {**options, "steps": steps + skip + 1, "log_every": steps + skip + 1}
    env = {"PYTHONPATH": str(src), "PATH": "/usr/bin:/bin"}
    proc = subprocess.run([sys.executable, "-c", CHILD, json.dumps(options), str(skip)],
                          capture_output=True, text=True, env=env, cwd=src)
    if proc.returncode:
        raise RuntimeError(proc.stderr[-2000:])
    return json.loads(proc.stdout.strip().splitlines()[-1])["images_per_sec"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--before", type=Path, help="another checkout to compare with")
    parser.add_argument("--reps", type=int, default=2)
    parser.add_argument("--compile", action="store_true", help="also --compile (slow to start)")
    parser.add_argument("--presets", default="digits,mnist")
    parser.add_argument("--out", type=Path, help="write the results as JSON")
    args = parser.parse_args()

    variants = {}  # name: (source dir, extra options)
    if args.before:
        variants["before"] = (args.before.resolve(), {})
    variants["after"] = (ROOT, {})
    variants["after, channels_last"] = (ROOT, {"channels_last": True})
    if args.compile:
        variants["after, compile"] = (ROOT, {"compile": True})
        variants["after, compile + channels_last"] = (ROOT, {"compile": True, "channels_last": True})

    results: dict[str, dict[str, list[float]]] = {}
    for rep in range(args.reps):
        for preset in args.presets.split(","):
            options, steps, skip = PRESETS[preset]
            for name, (src, extra) in variants.items():
                rate = measure(src, {**options, **extra}, steps, skip)
                results.setdefault(preset, {}).setdefault(name, []).append(rate)
                print(f"round {rep + 1}: {preset:6s} {name:32s} {rate:7.1f} images/s", flush=True)

    print("\nmedian images/s over the rounds (2 CPU threads):")
    for preset, by_variant in results.items():
        base = statistics.median(by_variant[next(iter(by_variant))])
        for name, rates in by_variant.items():
            m = statistics.median(rates)
            print(f"  {preset:6s} {name:32s} {m:7.1f}  ({m / base:.2f}x)  runs: "
                  + ", ".join(f"{r:.1f}" for r in rates))
    if args.out:
        args.out.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
