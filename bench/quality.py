"""The quality yardstick for the shipped digits models: sample quality against the number
of sampling steps, and held-out bits/dim next to two baselines. Writes bench/quality.json.

    python bench/quality.py [--n 300] [--threads 2]

Runs in the project's environment (diffusion_core and its dependencies; `make install`),
not in bench/.venv. About 10 minutes on 2 CPU cores. Chapter 11 of the book plots the
curve from the JSON this writes.

- Steps: one batch of starting noise x_T, the same for every sampler: DDPM's ancestral
  sampler on all 1000 steps; the strided ancestral sampler, DDIM (eta = 0) and the two
  DPM-Solver++(2M) samplers (the ODE one and its stochastic form) on STEPS.
  Each set of `n` samples is rounded to the 17 grey levels and scored with the digit
  classifier of `diffusion_core.metrics`: the Fréchet distance of its features to the
  training digits, the share of confident samples (top probability >= 0.9), the entropy
  of the class shares, and the pixel spread. The floor: the same numbers for the held-out
  real digits (n = 300 of them, so use n = 300 samples for a like-for-like distance).
  Each Fréchet distance gets a bootstrap standard error (`metrics.paired_bootstrap`).
- Target check: 300 samples cannot tell 10% apart, so on 1500 samples from another x_T the
  stochastic DPM-Solver++ at 10 and 20 steps is compared with the best 250-step sampler
  (strided or itself), paired: is it within TARGET (10%) of that Fréchet distance?
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
from machine import cpu_name

import diffusion_core
from diffusion_core import sample_ddim, sample_ddpm, sample_dpm_solver, sample_strided, viz
from diffusion_core.data import DIGITS_LEVELS, load_digits, to_levels, to_unit_range
from diffusion_core.likelihoods import COMMAND, load_table
from diffusion_core.metrics import (
    features,
    frechet_distance,
    paired_bootstrap,
    sample_yardsticks,
    train_digit_classifier,
)
from diffusion_core.pretrained import load_pretrained

HERE = Path(__file__).resolve().parent
STEPS = (250, 50, 20, 10, 5)
TARGET_STEPS = (250, 20, 10)  # the target check: the best at 250 steps against 10 and 20
SAMPLERS = {  # name -> (sampler, options)
    "strided": (sample_strided, {}),
    "DDIM": (sample_ddim, {"eta": 0.0}),
    "DPM-Solver++": (sample_dpm_solver, {}),
    "SDE-DPM-Solver++": (sample_dpm_solver, {"stochastic": True}),
}
TARGET = 1.10  # a sampler "reaches" the best 250-step Fréchet distance within 10%
BPD_MODELS = ("digits_simple", "digits_vlb", "digits_hybrid")


def sample_levels(diffusion, model, sampler, x_T: torch.Tensor, **options) -> tuple[torch.Tensor, float]:
    """Samples from x_T rounded to the 17 grey levels, and the seconds the sampler took."""
    start = time.perf_counter()
    x = sampler(diffusion, model, x_T.shape, noise=x_T, progress=False,
                generator=torch.Generator().manual_seed(2), **options)
    seconds = time.perf_counter() - start
    return to_unit_range(to_levels(x, DIGITS_LEVELS), DIGITS_LEVELS), seconds


def steps_sweep(n: int) -> dict:
    """Every sampler at every step count of STEPS (and DDPM's 1000 steps), n samples each."""
    model, diffusion, _ = load_pretrained("digits_simple", progress=False)
    classifier = train_digit_classifier()
    x_train, _ = load_digits("train")
    x_test, _ = load_digits("test")
    f_train = features(classifier, x_train)
    x_T = torch.randn(n, 1, 8, 8, generator=torch.Generator().manual_seed(1))
    runs = [("ancestral", 1000, sample_ddpm, {})]
    runs += [(name, K, sampler, {"num_steps": K, **options})
             for name, (sampler, options) in SAMPLERS.items() for K in STEPS]
    rows = []
    for name, K, sampler, options in runs:
        x, seconds = sample_levels(diffusion, model, sampler, x_T, **options)
        f = features(classifier, x)
        se = paired_bootstrap(lambda a: frechet_distance(a, f_train), f,
                              generator=torch.Generator().manual_seed(3)).std().item()
        rows.append({"sampler": name, "steps": K, "seconds": seconds,
                     **sample_yardsticks(x, x_train, classifier), "frechet_se": se})
        print(f"{name:>16} {K:5d} steps: {seconds:6.1f} s, Fréchet {rows[-1]['frechet']:.3f}, "
              f"confident {rows[-1]['confident']:.3f}", flush=True)
    real = sample_yardsticks(x_test, x_train, classifier)
    return {"n": n, "n_real": len(x_test), "rows": rows, "real": real}


def target_check(n: int) -> dict:
    """The fast samplers at 10 and 20 steps against the best 250-step sampler, on n samples
    from one x_T: each Fréchet distance, its ratio to the best 250-step one, and the paired
    bootstrap SE of the difference (100 replicates). 300 samples cannot resolve 10%: the
    sweep's distances carry SEs of about half their value."""
    model, diffusion, _ = load_pretrained("digits_simple", progress=False)
    classifier = train_digit_classifier()
    x_train, _ = load_digits("train")
    f_train = features(classifier, x_train)
    fd = lambda f: frechet_distance(f, f_train)  # noqa: E731
    x_T = torch.randn(n, 1, 8, 8, generator=torch.Generator().manual_seed(11))
    feats, seconds = {}, {}
    for name in ("strided", "SDE-DPM-Solver++"):
        for K in TARGET_STEPS:
            if name == "strided" and K != 250:
                continue
            sampler, options = SAMPLERS[name]
            x, seconds[name, K] = sample_levels(diffusion, model, sampler, x_T, num_steps=K, **options)
            feats[name, K] = features(classifier, x)
            print(f"target check, {name} {K} steps, {n} samples: Fréchet {fd(feats[name, K]):.3f}",
                  flush=True)
    best = min(((name, 250) for name in ("strided", "SDE-DPM-Solver++")), key=lambda k: fd(feats[k]))
    rows = []
    for (name, K), f in feats.items():
        gap = paired_bootstrap(lambda a, b: fd(a) - fd(b), f, feats[best], n_boot=100,
                               generator=torch.Generator().manual_seed(3))
        rows.append({"sampler": name, "steps": K, "frechet": fd(f), "ratio": fd(f) / fd(feats[best]),
                     "gap": fd(f) - fd(feats[best]), "gap_se": gap.std().item(),
                     "seconds": seconds[name, K]})
    return {"n": n, "target": TARGET, "best": {"sampler": best[0], "steps": best[1]}, "rows": rows}


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
    parser.add_argument("--n-target", type=int, default=1500,
                        help="samples per run of the target check (10 and 20 steps against 250)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, default=HERE / "quality.json")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    start = time.perf_counter()
    result = {
        "command": f"python bench/quality.py --n {args.n} --n-target {args.n_target} --threads {args.threads}",
        "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": f"{cpu_name()}, {os.cpu_count()} cores, torch threads {args.threads}",
        "load_average_start": os.getloadavg()[0],
        "versions": {"python": platform.python_version(), "torch": torch.__version__,
                     "diffusion_core": diffusion_core.__version__},
        "steps": steps_sweep(args.n),
        "target": target_check(args.n_target),
        "bits_per_dim": bits_per_dim(),
    }
    result["minutes"] = (time.perf_counter() - start) / 60
    result["load_average_end"] = os.getloadavg()[0]
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    plot(result, args.out.with_name("quality.png"))
    print(f"wrote {args.out} and quality.png ({result['minutes']:.1f} min)")


if __name__ == "__main__":
    main()
