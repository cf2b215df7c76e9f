"""Turn results.json (speed.py), profile.json (profile_ops.py) and quality.json (quality.py)
into RESULTS.md.

    python bench/report.py [--results bench/results.json --profile bench/profile.json
                            --quality bench/quality.json --out bench/RESULTS.md]
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

HERE = Path(__file__).resolve().parent
TARGET = 1.3  # ours should train at least this much faster than the fastest peer of its size


def quartiles(values: list[float]) -> tuple[float, float, float]:
    """(25th percentile, median, 75th percentile)."""
    if len(values) < 2:
        return values[0], values[0], values[0]
    q1, q2, q3 = statistics.quantiles(values, n=4, method="inclusive")
    return q1, q2, q3


def flat(rounds: list[list[float]]) -> list[float]:
    return [x for r in rounds for x in r]


def contender_table(contenders: dict, meta: dict) -> list[str]:
    lines = [
        "| contender | params | GFLOP/img (fwd) | train img/s, median [IQR] | train CPU-ms/img | "
        "sample ms/step, median [IQR] | peak RSS train / sample (MiB) |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for name, c in contenders.items():
        train_ips = [meta["train_batch"] / s for s in flat(c["train"]["wall"])]
        q1, q2, q3 = quartiles(train_ips)
        cpu_ms = statistics.median(flat(c["train"]["cpu"])) / meta["train_batch"] * 1e3
        s1, s2, s3 = quartiles([s * 1e3 for s in flat(c["sample"]["wall"])])
        mem = c["memory_mib"]
        lines.append(f"| {name} | {c['params'] / 1e6:.3f}M | {c['gflop_per_image']:.3f} | "
                     f"{q2:.1f} [{q1:.1f}, {q3:.1f}] | {cpu_ms:.0f} | {s2:.0f} [{s1:.0f}, {s3:.0f}] | "
                     f"{mem['train']:.0f} / {mem['sample']:.0f} |")
    return lines


def ratio_cell(ratios: list[float]) -> str:
    return f"**{statistics.median(ratios):.2f}x** [{min(ratios):.2f}, {max(ratios):.2f}]"


def ratio_table(pairs: list[dict]) -> list[str]:
    lines = [
        "| ours vs peer | params ours / peer | train speed ours/peer [min, max over rounds] | "
        "train, CPU time | sample speed ours/peer | sample, CPU time | peak RSS train ours/peer |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for p in pairs:
        lines.append(
            f"| {p['ours']} vs {p['peer']} | {p['params_ours'] / 1e6:.3f}M / {p['params_peer'] / 1e6:.3f}M "
            f"= {p['params_ours'] / p['params_peer']:.3f} | {ratio_cell(p['train_speed_ratios'])} | "
            f"{ratio_cell(p['train_cpu_ratios'])} | {ratio_cell(p['sample_speed_ratios'])} | "
            f"{ratio_cell(p['sample_cpu_ratios'])} | {p['train_memory_ratio']:.2f} |")
    return lines


def target_lines(pairs: list[dict]) -> list[str]:
    """Per shape and size: is ours >= 1.3x the fastest peer (median train speed ratio)?"""
    lines = []
    for p in pairs:
        ratio = statistics.median(p["train_speed_ratios"])
        verdict = "met" if ratio >= TARGET else "missed"
        lines.append(f"- {p['ours']} vs {p['peer']}: {ratio:.2f}x, target {TARGET}x {verdict}")
    return lines


def profile_section(profile: dict) -> list[str]:
    names = list(profile["contenders"])
    families = list(dict.fromkeys(f for c in profile["contenders"].values() for f in c["families_ms"]))
    lines = [
        f"Self CPU time per training step (ms), `torch.profiler`, shape {profile['shape']}, batch 64, "
        f"torch threads: {profile['threads']}, mean of {profile['steps']} profiled steps per contender taken in turns.",
        "",
        "| op family | " + " | ".join(names) + " |",
        "|---|" + "---:|" * len(names),
    ]
    for fam in families:
        cells = []
        for n in names:
            c = profile["contenders"][n]
            ms = c["families_ms"].get(fam, 0.0)
            cells.append(f"{ms:.0f} ({ms / c['total_ms']:.0%})")
        lines.append(f"| {fam} | " + " | ".join(cells) + " |")
    lines.append("| **total** | " + " | ".join(f"**{profile['contenders'][n]['total_ms']:.0f}**"
                                              for n in names) + " |")
    lines += ["", "Top ops by self CPU time (ms per step):", ""]
    for n in names:
        top = ", ".join(f"`{op}` {ms:.0f}" for op, ms in profile["contenders"][n]["top_ops_ms"].items())
        lines.append(f"- {n}: {top}")
    return lines


def quality_section(q: dict) -> list[str]:
    """Sample quality against steps, and the bits/dim table, from quality.json."""
    sweep, bpd = q["steps"], q["bits_per_dim"]
    out = [
        f"- Command: `{q['command']}`; date {q['date']}; run time {q['minutes']:.1f} min",
        f"- Machine: {q['machine']}; load average (1 min) at start {q['load_average_start']:.2f}, "
        f"at end {q['load_average_end']:.2f}",
        f"- Versions: Python {q['versions']['python']}, torch {q['versions']['torch']}, "
        f"diffusion_core {q['versions']['diffusion_core']}",
        "",
        "![sample quality against steps, and bits/dim](quality.png)",
        "",
        f"### Sample quality against the number of steps (`digits_simple`, {sweep['n']} samples each)",
        "",
        "One batch of starting noise for every row. Fréchet distance: in the feature space of the "
        "digit classifier of `diffusion_core.metrics`, to the 1497 training digits (lower is better); "
        "confident: share of samples the classifier gives probability >= 0.9; class entropy: of the "
        "class shares (log 10 = 2.303 when every digit is equally common); pixel std: per-pixel "
        "standard deviation across samples, averaged over pixels.",
        "",
        "| sampler | steps | Fréchet distance | confident | class entropy | pixel std | seconds |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in sweep["rows"]:
        out.append(f"| {r['sampler']} | {r['steps']} | {r['frechet']:.3f} | {r['confident']:.3f} | "
                   f"{r['class_entropy']:.3f} | {r['pixel_std']:.3f} | {r['seconds']:.1f} |")
    real = sweep["real"]
    out += [f"| real held-out digits ({sweep['n_real']}) | - | {real['frechet']:.3f} | "
            f"{real['confident']:.3f} | {real['class_entropy']:.3f} | {real['pixel_std']:.3f} | - |", ""]
    out += [
        f"### Held-out bits/dim ({bpd['n']} digits, 17 levels)",
        "",
        f"The book's likelihood table (`{bpd.get('source', 'calc_bpd_loop')}`): "
        "`calc_bpd_loop` (L_T + every L_t-1 + L_0, 1000 steps) with the same x_t draws for every "
        "model; 'snapped' wraps the model in `snap_to_levels` (x0 rounded to the 17 levels where "
        "the noise is below a quarter of a bin). Baselines fitted on the training digits; their "
        "numbers are exact discrete log-likelihoods. Mean ± standard error over the digits.",
        "",
        "| model | bits/dim | of which t = 1..50 |",
        "|---|---:|---:|",
    ]
    for name, m in bpd["models"].items():
        small = f"{m['first_50']:.3f}" if "first_50" in m else "-"
        label = name
        out.append(f"| {label} | {m['mean']:.3f} ± {m['se']:.3f} | {small} |")
    return out


def render(results: dict, profile: dict | None, quality: dict | None = None) -> str:
    meta = results["meta"]
    by_shape: dict[str, dict] = {}
    for name, c in results["contenders"].items():
        by_shape.setdefault("x".join(map(str, c["shape"])), {})[name] = c
    out = [
        "# Speed: our UNet beside lucidrains' Unet and diffusers' UNet2DModel (CPU)",
        "",
        f"- Command: `{meta['command']}`",
        f"- Date: {meta['date']}; run time {meta['seconds'] / 60:.1f} min",
        f"- Machine: {meta['cpu']}, {meta['cores']} cores; torch threads: {meta['threads']}",
        f"- Versions: Python {meta['python']}, torch {meta['torch']}, "
        f"denoising-diffusion-pytorch {meta['denoising-diffusion-pytorch']}, diffusers {meta['diffusers']}",
        f"- GPU: {meta['gpu']}.",
        f"- Load average (1 min) at start {meta['load_avg_1min_start']:.2f}, at end {meta['load_avg_1min_end']:.2f} "
        f"on {meta['cores']} cores: the machine is shared, so absolute numbers are noisy; the ratios, "
        "measured with the contenders taking turns step by step, are what to read.",
        f"- Protocol: training step = forward + MSE + backward + AdamW (batch {meta['train_batch']}); "
        f"sampling step = one forward without gradients (batch {meta['sample_batch']}). "
        f"Warm-up steps: {meta['warmup']}; then {meta['rounds']} rounds of {meta['steps']} training steps "
        f"({meta['sample_steps']} sampling steps) per contender, interleaved one step at a time. "
        "A ratio is computed per round from that round's medians; the table gives the median over rounds "
        "and [min, max]. 'CPU time' ratios use the process CPU time instead of wall time.",
        f"- Memory: {meta['memory_method']}.",
        "",
        "## Speed ratios, ours / peer (> 1: ours faster)",
        "",
        *ratio_table(results["pairs"]),
        "",
        *target_lines(results["pairs"]),
        "",
        "## Every contender",
        "",
    ]
    for shape, contenders in by_shape.items():
        out += [f"### {shape}", "", *contender_table(contenders, meta), "", "Configs:", ""]
        out += [f"- {name}: `{c['config']}`" for name, c in contenders.items()]
        out.append("")
    if profile is not None:
        out += ["## Where the time goes", "", *profile_section(profile), ""]
    if quality is not None:
        out += ["# Quality yardstick: the shipped digits models", "", *quality_section(quality), ""]
    return "\n".join(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--results", type=Path, default=HERE / "results.json")
    parser.add_argument("--profile", type=Path, default=HERE / "profile.json")
    parser.add_argument("--quality", type=Path, default=HERE / "quality.json")
    parser.add_argument("--out", type=Path, default=HERE / "RESULTS.md")
    args = parser.parse_args()
    results = json.loads(args.results.read_text())
    profile = json.loads(args.profile.read_text()) if args.profile.exists() else None
    quality = json.loads(args.quality.read_text()) if args.quality.exists() else None
    args.out.write_text(render(results, profile, quality))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
