"""The quality yardstick for the shipped digits models: sample quality against the number
of sampling steps, and held-out bits/dim next to two baselines. Writes bench/quality.json.

    python bench/quality.py [--n 300] [--threads 2]

Runs in the project's environment (diffusion_core and its dependencies; `make install`),
not in bench/.venv. About 10 minutes on 2 CPU cores. Chapter 11 of the book plots the
curve from the JSON this writes.

- Steps: one batch of starting noise x_T, the same for every sampler: DDPM's ancestral
  sampler on all 1000 steps, the strided ancestral sampler and DDIM (eta = 0) on STEPS.
  Each set of `n` samples is rounded to the 17 grey levels and scored with the digit
  classifier of `diffusion_core.metrics`: the Fréchet distance of its features to the
  training digits, the share of confident samples (top probability >= 0.9), the entropy
  of the class shares, and the pixel spread. The floor: the same numbers for the held-out
  real digits (n = 300 of them, so use n = 300 samples for a like-for-like distance).
- Bits/dim: read from the book's likelihood table (`diffusion_core.likelihoods`, made by
  `python -m diffusion_core.likelihoods`): `calc_bpd_loop` on all 300 held-out digits for
  the models trained with L_simple, L_vlb and L_hybrid, each plain and with
  `snap_to_levels`, all with the same x_t draws (paired), next to the per-pixel categorical
  and Gaussian mixture baselines fitted on the training digits. One table, so the bench and
  the book cannot quote two numbers for one model.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from datetime import datetime, timezone
from pathlib import Path

import torch

import diffusion_core
from diffusion_core import sample_ddim, sample_ddpm, sample_strided, viz
from diffusion_core.data import DIGITS_LEVELS, load_digits, to_levels, to_unit_range
from diffusion_core.likelihoods import COMMAND, load_table
from diffusion_core.metrics import sample_yardsticks, train_digit_classifier
from diffusion_core.pretrained import load_pretrained

HERE = Path(__file__).resolve().parent
STEPS = (250, 100, 50, 20, 10)
BPD_MODELS = ("digits_simple", "digits_vlb", "digits_hybrid")


def cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            return next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        return platform.machine()


def steps_sweep(n: int) -> dict:
    model, diffusion, _ = load_pretrained("digits_simple", progress=False)
    classifier = train_digit_classifier()
    x_train, _ = load_digits("train")
    x_test, _ = load_digits("test")
    x_T = torch.randn(n, 1, 8, 8, generator=torch.Generator().manual_seed(1))
    runs = [("ancestral", 1000, sample_ddpm, {})]
    runs += [("strided", K, sample_strided, {"num_steps": K}) for K in STEPS]
    runs += [("DDIM", K, sample_ddim, {"num_steps": K, "eta": 0.0}) for K in STEPS]
    rows = []
    for name, K, sampler, options in runs:
        start = time.perf_counter()
        x = sampler(diffusion, model, x_T.shape, noise=x_T, progress=False,
                    generator=torch.Generator().manual_seed(2), **options)
        seconds = time.perf_counter() - start
        x = to_unit_range(to_levels(x, DIGITS_LEVELS), DIGITS_LEVELS)
        rows.append({"sampler": name, "steps": K, "seconds": seconds,
                     **sample_yardsticks(x, x_train, classifier)})
        print(f"{name:>9} {K:5d} steps: {seconds:6.1f} s, Fréchet {rows[-1]['frechet']:.3f}, "
              f"confident {rows[-1]['confident']:.3f}", flush=True)
    real = sample_yardsticks(x_test, x_train, classifier)
    return {"n": n, "n_real": len(x_test), "rows": rows, "real": real}


def bits_per_dim() -> dict:
    """The held-out bits/dim rows of the book's likelihood table (means, SEs, t = 1..50)."""
    table = load_table()
    models = {}
    for key, row in table["rows"].items():
        models[key] = {"mean": row["mean"], "se": row["se"]}
        if "first_50" in row:
            models[key]["first_50"] = row["first_50"]["mean"]
    return {"n": table["n"], "source": f"{COMMAND} ({table['date']})", "models": models}


def plot(result: dict, out: Path) -> None:
    """Sample quality against steps (two panels) and the bits/dim table as bars."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sweep, bpd = result["steps"], result["bits_per_dim"]["models"]
    fig, axes = plt.subplots(1, 3, figsize=(12, 3.4))
    viz.plot_sampler_sweep(sweep["rows"], sweep["real"], axes=axes[:2],
                           panels={"frechet": f"Fréchet distance (lower: better), {sweep['n']} samples",
                                   "confident": f"share of confident samples, {sweep['n']} samples"},
                           real_label=f"{sweep['n_real']} real digits")
    names = list(bpd)
    axes[2].barh(names, [bpd[k]["mean"] for k in names], xerr=[bpd[k]["se"] for k in names],
                 color=["C0" if "snapped" in k else "C1" if "," in k else "C2" for k in names])
    axes[2].invert_yaxis()
    axes[2].tick_params(axis="y", labelsize=7)
    axes[2].set(xlabel="bits/dim (lower: better)",
                title=f"held-out bits/dim, {result['bits_per_dim']['n']} digits")
    fig.tight_layout()
    fig.savefig(out, dpi=90)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=300, help="samples per sampler and step count")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, default=HERE / "quality.json")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    start = time.perf_counter()
    result = {
        "command": f"python bench/quality.py --n {args.n} --threads {args.threads}",
        "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": f"{cpu_name()}, {os.cpu_count()} cores, torch threads {args.threads}",
        "load_average_start": os.getloadavg()[0],
        "versions": {"python": platform.python_version(), "torch": torch.__version__,
                     "diffusion_core": diffusion_core.__version__},
        "steps": steps_sweep(args.n),
        "bits_per_dim": bits_per_dim(),
    }
    result["minutes"] = (time.perf_counter() - start) / 60
    result["load_average_end"] = os.getloadavg()[0]
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    plot(result, args.out.with_name("quality.png"))
    print(f"wrote {args.out} and quality.png ({result['minutes']:.1f} min)")


if __name__ == "__main__":
    main()
