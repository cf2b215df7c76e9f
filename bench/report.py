"""Turn time_to_quality.json (time_to_quality.py), results.json (speed.py), profile.json
(profile_ops.py) and quality.json (quality.py) into RESULTS.md, and time_to_quality.json into
time_to_quality.png (beside the JSON). Runs in the project's environment (matplotlib).

    python bench/report.py [--ttq bench/time_to_quality.json --results bench/results.json
                            --profile bench/profile.json --quality bench/quality.json
                            --out bench/RESULTS.md]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
from pathlib import Path

HERE = Path(__file__).resolve().parent
CLASSIFIER_NAMES = {"book": "book CNN", "svc": "pixel SVC"}
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


def tuning_table(contenders: dict, meta: dict) -> list[str]:
    """Each contender tuned (channels_last) against itself in the default layout: median
    speed-ups (> 1: the tuning pays), from the same interleaved rounds."""
    lines = ["| contender | train speed-up, channels_last / default | sample speed-up |",
             "|---|---:|---:|"]
    for name, tuned in contenders.items():
        if " channels_last " not in name:
            continue
        plain = contenders.get(name.replace(" channels_last ", " "))
        if plain is None:
            continue
        cells = []
        for kind in ("train", "sample"):
            cells.append(statistics.median(flat(plain[kind]["wall"])) / statistics.median(flat(tuned[kind]["wall"])))
        lines.append(f"| {name.replace(' channels_last ', ' ')} | {cells[0]:.2f}x | {cells[1]:.2f}x |")
    return lines if len(lines) > 2 else []


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


def tuned_name(name: str) -> str:
    """'diffusers 1x28x28' -> 'diffusers channels_last 1x28x28' (contenders.py's naming)."""
    network, shape = name.rsplit(" ", 1)
    return f"{network} channels_last {shape}"


def best_layout_table(contenders: dict, pairs: list[dict]) -> list[str]:
    """Ours at its faster layout against each peer at its own faster layout, per step kind.
    The faster layout is the one with the lower median step time over all rounds; the ratio
    is then taken per round from the same interleaved rounds, as in the pair table."""
    def best(name: str, kind: str) -> tuple[str, dict]:
        options = {"default": contenders[name], "channels_last": contenders[tuned_name(name)]}
        layout = min(options, key=lambda k: statistics.median(flat(options[k][kind]["wall"])))
        return layout, options[layout]

    lines = ["| ours vs peer | train: layouts ours / peer | train speed ours/peer | "
             "sample: layouts ours / peer | sample speed ours/peer |", "|---|---|---:|---|---:|"]
    for p in pairs:
        if " channels_last " in p["ours"] or not all(
                tuned_name(n) in contenders for n in (p["ours"], p["peer"])):
            continue
        cells = []
        for kind in ("train", "sample"):
            (ours_layout, ours), (peer_layout, peer) = best(p["ours"], kind), best(p["peer"], kind)
            ratios = [statistics.median(pr) / statistics.median(o)
                      for pr, o in zip(peer[kind]["wall"], ours[kind]["wall"], strict=True)]
            cells += [f"{ours_layout} / {peer_layout}", ratio_cell(ratios)]
        lines.append(f"| {p['ours']} vs {p['peer']} | " + " | ".join(cells) + " |")
    return lines if len(lines) > 2 else []


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


def target_check_lines(tc: dict) -> list[str]:
    """The fast sampler at 10 and 20 steps against the best 250-step one (quality.py)."""
    best = f"{tc['best']['sampler']} {tc['best']['steps']}"
    out = [f"### Fast sampler against the best at 250 steps ({tc['n']} samples, paired)", "",
           f"The same x_T for every row; the best 250-step row is {best}. Target: a Fréchet distance "
           f"within {100 * (tc['target'] - 1):.0f}% of it (ratio <= {tc['target']:.2f}). ± is the "
           "paired bootstrap SE of the difference.", "",
           "| sampler | steps | Fréchet distance | ratio to the best | difference | within target |",
           "|---|---:|---:|---:|---:|---|"]
    for r in tc["rows"]:
        verdict = "yes" if r["ratio"] <= tc["target"] else "no"
        if abs(r["gap"]) < 2 * r["gap_se"]:
            verdict += " (not resolved: |difference| < 2 SE)"
        out.append(f"| {r['sampler']} | {r['steps']} | {r['frechet']:.3f} | {r['ratio']:.2f} | "
                   f"{r['gap']:+.3f} ± {r['gap_se']:.3f} | {verdict} |")
    return out + [""]


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
        "DPM-Solver++ is the second-order solver of the probability-flow ODE (DPM-Solver++(2M)); "
        "SDE-DPM-Solver++ its stochastic form, a second-order strided ancestral sampler. Each step "
        "is one network call. ± is a bootstrap standard error.",
        "",
        "| sampler | steps | Fréchet distance | confident | class entropy | pixel std | seconds |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in sweep["rows"]:
        se = f" ± {r['frechet_se']:.3f}" if "frechet_se" in r else ""
        out.append(f"| {r['sampler']} | {r['steps']} | {r['frechet']:.3f}{se} | {r['confident']:.3f} | "
                   f"{r['class_entropy']:.3f} | {r['pixel_std']:.3f} | {r['seconds']:.1f} |")
    real = sweep["real"]
    out += [f"| real held-out digits ({sweep['n_real']}) | - | {real['frechet']:.3f} | "
            f"{real['confident']:.3f} | {real['class_entropy']:.3f} | {real['pixel_std']:.3f} | - |", ""]
    if "target" in q:
        out += target_check_lines(q["target"])
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


# -----------------------------------------------------------------------------
# Time to quality (time_to_quality.json)


TARGET_LABELS = {"strict": "strict (the issue's example)", "relative": "relative to real digits"}


def ttq_target_text(name: str, target: dict) -> str:
    """One target in words, with its numbers per classifier."""
    conf = (f"confident share >= {target['confident']}" if "confident" in target
            else f"confident share >= {target['confident_of_real']:g}x that of the real digits")
    limits = target["limits"]
    numbers = "; ".join(f"{CLASSIFIER_NAMES[k]}: >= {limits['confident_min'][k]:.2f} and <= {limits['fd_max'][k]:.2f}"
                        for k in limits["fd_max"])
    return (f"**{TARGET_LABELS.get(name, name)}**: {conf} and Fréchet distance <= {target['fd_factor']:g}x "
            f"that of the real digits, under both classifiers ({numbers})")


def ttq_time(t: float | None, top: float) -> str:
    return f"{t:.0f} s" if t is not None else f"> {top:g} s"


def ttq_ratio(r: dict) -> str:
    if r["value"] is None:
        return "- (neither reached it)"
    return {"=": "**{:.2f}**", "<": "< {:.2f}", ">": "> {:.2f}"}[r["kind"]].format(r["value"])


def ttq_sampler_label(ttq: dict, kind: str) -> str:
    c = ttq["config"]
    if kind == "fast":
        return f"ours for all: {c['fast_sampler']}, {c['fast_steps']} steps, {c['n']} samples"
    at = "every budget" if c["own_at"] == "all" else "the last budget"
    return f"each one's own default, {c['n_own']} samples, at {at}"


def ttq_ratio_table(ttq: dict) -> list[str]:
    """Per target and sampler: the time to it per contender, and the ratios ours / peer."""
    names = list(ttq["contenders"])
    peers = [n for n in names if n != "ours"]
    top = ttq["config"]["budgets"][-1]
    lines = ["| target | sampler | " + " | ".join(f"time to target, {n}" for n in names) + " | "
             + " | ".join(f"ours / {p}" for p in peers) + " |",
             "|---|---|" + "---:|" * (len(names) + len(peers))]
    for target, summary in ttq["summary"].items():
        for kind in ("fast", "own"):
            times = [ttq_time(summary["time_to_target"][kind][n], top) for n in names]
            ratios = [ttq_ratio(summary["ratios"][kind][p]) for p in peers]
            lines.append(f"| {TARGET_LABELS.get(target, target)} | {ttq_sampler_label(ttq, kind)} | "
                         + " | ".join(times + ratios) + " |")
    return lines


def ttq_cell(s: dict, name: str, key: str, digits: int) -> str:
    return f"{s[name][key]:.{digits}f} ± {s[name][f'{key}_se']:.{digits}f}"


def ttq_scores_table(ttq: dict) -> list[str]:
    """Scores at every budget, per contender and sampler, and the real floor."""
    classifiers, targets = ttq["config"]["classifiers"], list(ttq["config"]["targets"])
    head = " | ".join(f"FD {CLASSIFIER_NAMES[k]} | confident {CLASSIFIER_NAMES[k]}" for k in classifiers)
    lines = [f"| contender | sampler | budget | steps | {head} | " + " | ".join(f"{t} target" for t in targets) + " |",
             "|---|---|---:|---:|" + "---:|---:|" * len(classifiers) + ":---:|" * len(targets)]
    budgets = ttq["config"]["budgets"]
    for name, c in ttq["contenders"].items():
        for kind in ("fast", "own"):
            for r in c["evals"][kind]:
                if r["point"] not in budgets:
                    continue
                cells = " | ".join(f"{ttq_cell(r, k, 'frechet', 2)} | {ttq_cell(r, k, 'confident', 2)}"
                                   for k in classifiers)
                stopped = " (ended)" if r["final"] else ""
                sampler = "ours" if kind == "fast" else "own"
                met = " | ".join("yes" if r["meets"][t] else "no" for t in targets)
                lines.append(f"| {name} | {sampler} | {r['point']:g} s | {r['step']}{stopped} | {cells} | {met} |")
    real = ttq["real"]
    cells = " | ".join(f"{ttq_cell(real, k, 'frechet', 2)} | {ttq_cell(real, k, 'confident', 2)}"
                       for k in classifiers)
    lines.append(f"| {ttq['config']['n_real']} real held-out digits | - | - | - | {cells} |" + " - |" * len(targets))
    return lines


def ttq_contender_lines(ttq: dict) -> list[str]:
    lines = ["| contender | params | batch | steps done | steps/s | images/s | own sampler |",
             "|---|---:|---:|---:|---:|---:|---|"]
    for name, c in ttq["contenders"].items():
        ended = f" (ended at {c['stopped_at']:.0f} s)" if c["stopped_at"] is not None else ""
        lines.append(f"| {name} | {c['params'] / 1e6:.3f}M | {c['batch']} | {c['steps']}{ended} | "
                     f"{c['steps_per_second']:.1f} | {c['steps_per_second'] * c['batch']:.0f} | "
                     f"{c['own_sampler']} |")
    lines.append("")
    for name, c in ttq["contenders"].items():
        lines.append(f"- **{name}**: {c['recipe']}.")
        lines += [f"  - differs from the original: {d}" for d in c["deviations"]]
    return lines


def ttq_ends(ttq: dict) -> str:
    return ", ".join(f"{n}: {c['max_steps']} steps" for n, c in ttq["contenders"].items())


def ttq_load_caution(ttq: dict) -> str:
    """A warning when training ran on several threads of a busy machine (see README.md)."""
    threads, load = ttq["config"]["threads"], ttq["meta"]["load_avg_1min_start"]
    cores = int(ttq["meta"]["machine"].rsplit(",", 1)[-1].split()[0])
    if threads > 1 and load >= 0.5 * cores:
        return (f". **Caution**: {threads} threads on a machine this busy make every small op wait "
                "for a descheduled thread; the clocks then measure the load more than the recipes "
                "(see bench/README.md)")
    return ""


def ttq_match_table(ttq: dict) -> list[str]:
    """Time to match: when ours first scores at least as well as each peer does at the largest
    budget, on all four yardsticks (both classifiers' Fréchet distance and confident share),
    with our sampler for all. The ratio (ours' time / the largest budget) needs no absolute
    target, so it exists even when nobody reaches one."""
    top = ttq["config"]["budgets"][-1]
    classifiers = ttq["config"]["classifiers"]
    fast = {n: sorted(c["evals"]["fast"], key=lambda r: r["time"]) for n, c in ttq["contenders"].items()}
    lines = [f"| peer | its scores at {top:g} s (FD / confident, per classifier) | ours first as good at | "
             "ours / peer |", "|---|---|---:|---:|"]
    for name, rows in fast.items():
        if name == "ours":
            continue
        goal = next(r for r in rows if r["time"] == top)
        done = next((r["time"] for r in fast["ours"]
                     if all(r[k]["frechet"] <= goal[k]["frechet"] and r[k]["confident"] >= goal[k]["confident"]
                            for k in classifiers)), None)
        scores = "; ".join(f"{CLASSIFIER_NAMES[k]} {goal[k]['frechet']:.2f} / {goal[k]['confident']:.2f}"
                           for k in classifiers)
        when, ratio = (f"{done:.0f} s", f"**{done / top:.2f}**") if done is not None else (f"> {top:g} s", "-")
        lines.append(f"| {name} | {scores} | {when} | {ratio} |")
    return lines


def ttq_section(ttq: dict, plot_name: str | None) -> list[str]:
    """The leading section of RESULTS.md: time to a good model at equal training budgets."""
    c, meta, real = ttq["config"], ttq["meta"], ttq["real"]
    v = meta["versions"]
    floor = ", ".join(f"{CLASSIFIER_NAMES[k]} {real[k]['frechet']:.3f}" for k in c["classifiers"])
    real_conf = ", ".join(f"{CLASSIFIER_NAMES[k]} {real[k]['confident']:.2f}" for k in c["classifiers"])
    out = [
        "# Time to quality: how soon each library's default recipe makes good digits",
        "",
        f"- Command: `{meta['command']}`; date {meta['date']}; run time {meta['seconds'] / 60:.1f} min "
        f"(training {meta['train_wall_seconds'] / 60:.1f} min of wall time)",
        f"- Machine: {meta['machine']}; torch threads {c['threads']} for training, "
        f"{c.get('eval_threads', c['threads'])} for sampling and scoring; load average (1 min) at start "
        f"{meta['load_avg_1min_start']:.2f}, at end {meta['load_avg_1min_end']:.2f}{ttq_load_caution(ttq)}",
        f"- Versions: Python {v['python']}, torch {v['torch']}, diffusion_core {v['diffusion_core']}, "
        f"denoising-diffusion-pytorch {v['denoising-diffusion-pytorch']}, diffusers {v['diffusers']}, "
        f"ema-pytorch {v['ema-pytorch']}, scikit-learn {v['scikit-learn']}",
        f"- Protocol: every contender trains on the same {c['n_train']} training digits with its library's "
        f"default recipe (below), in turns of about {c['slice']:g} s of its own clock (only its optimizer "
        "steps are timed), so load from other processes hits all alike. Its EMA weights are kept every "
        f"{c['grid']:g} s of its clock and at the budgets ({', '.join(f'{b:g}' for b in c['budgets'])} s); "
        f"each recipe ends where its original does ({ttq_ends(ttq)}), and one that ends before the "
        "largest budget keeps its final weights from there on. After "
        "training, each kept network is sampled by our fast sampler from one shared batch of starting "
        "noise, and at the budgets by its own default sampler (same starting noise where its interface "
        "allows: all three here).",
        f"- **Targets**, scored by two classifiers: the book's CNN "
        "(`diffusion_core.metrics.train_digit_classifier(seed=0)`, its 64 penultimate features) and an "
        "independent RBF SVC on raw pixels (its 10 one-vs-rest decision values; confidence by "
        f"`predict_proba`). A sample is confident when its top class probability is >= {c['confidence']}. "
        f"The {c['n_real']} held-out real digits score a Fréchet distance of {floor} (the floor) and a "
        f"confident share of {real_conf}.",
        *(f"  - {ttq_target_text(name, t)}." for name, t in c["targets"].items()),
        f"  - Time to target: the first kept network that meets it (resolution: the {c['grid']:g} s grid; "
        "for the own samplers, the budgets where they ran). Samples are clamped to [-1, 1].",
        f"- Errors: confident share ± its binomial standard error; Fréchet distance ± the spread of "
        f"{c['fd_se']}. The Fréchet distance grows as the sample count shrinks: the own samplers' "
        f"{c['n_own']} samples sit a little higher than our sampler's {c['n']} for the same network.",
        "",
        "## Time to target, and ours / peer (< 1: ours gets there sooner)",
        "",
        *ttq_ratio_table(ttq),
        "",
        "A bound (< or >) where one side never reached the target within the largest budget.",
        "",
        "## Time to match each peer's best (ours for all, < 1: ours gets there sooner)",
        "",
        *ttq_match_table(ttq),
        "",
        f"Resolution: the {c['grid']:g} s grid of kept networks; scores are single runs (see the "
        "errors above).",
        "",
    ]
    if plot_name:
        out += [f"![Fréchet distance and confident share against training seconds]({plot_name})", ""]
    out += ["## Scores at the budgets", "", *ttq_scores_table(ttq), "",
            "## The contenders and their recipes", "", *ttq_contender_lines(ttq), ""]
    return out


def ttq_plot(ttq: dict, out: Path) -> None:
    """Fréchet distance and confident share against training seconds (one row per classifier):
    lines for our sampler at every kept network, open markers for each own sampler."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    targets, real = ttq["config"]["targets"], ttq["real"]
    classifiers = ttq["config"]["classifiers"]
    fig, axes = plt.subplots(len(classifiers), 2, figsize=(11, 3.3 * len(classifiers)), squeeze=False)
    for row, k in zip(axes, classifiers, strict=True):
        for i, (name, c) in enumerate(ttq["contenders"].items()):
            for ax, key in zip(row, ("frechet", "confident"), strict=True):
                fast, own = c["evals"]["fast"], c["evals"]["own"]
                ax.errorbar([r["time"] for r in fast], [r[k][key] for r in fast],
                            yerr=[r[k][f"{key}_se"] for r in fast], color=f"C{i}", marker=".",
                            capsize=2, label=f"{name}, our sampler")
                if own:
                    ax.errorbar([r["time"] for r in own], [r[k][key] for r in own],
                                yerr=[r[k][f"{key}_se"] for r in own], color=f"C{i}", marker="o",
                                mfc="none", ls="none", capsize=2, label=f"{name}, own sampler")
        fd_ax, conf_ax = row
        fd_ax.axhline(real[k]["frechet"], color="k", lw=0.8, ls="--", label="real held-out digits")
        for (name, t), ls in zip(targets.items(), (":", "-."), strict=False):
            fd_ax.axhline(t["limits"]["fd_max"][k], color="k", lw=0.8, ls=ls, label=f"{name} target")
            conf_ax.axhline(t["limits"]["confident_min"][k], color="k", lw=0.8, ls=ls)
        fd_ax.set(yscale="log", xlabel="training seconds (own clock)",
                  ylabel=f"Fréchet distance, {CLASSIFIER_NAMES[k]}")
        conf_ax.axhline(real[k]["confident"], color="k", lw=0.8, ls="--")
        conf_ax.set(ylim=(0, 1), xlabel="training seconds (own clock)",
                    ylabel=f"confident share, {CLASSIFIER_NAMES[k]}")
    axes[0][0].legend(fontsize=7)
    fig.suptitle("Digits at equal training budgets: lower FD and higher confident share are better "
                 "(dashed: real digits; dotted, dash-dotted: the targets)", fontsize=9)
    fig.tight_layout()
    fig.savefig(out, dpi=90)
    plt.close(fig)


def render(results: dict, profile: dict | None, quality: dict | None = None, ttq: dict | None = None,
           ttq_plot_name: str | None = None) -> str:
    """RESULTS.md: time to quality first (when there is a time_to_quality.json), then speed,
    the profile and the quality yardstick."""
    meta = results["meta"]
    by_shape: dict[str, dict] = {}
    for name, c in results["contenders"].items():
        by_shape.setdefault("x".join(map(str, c["shape"])), {})[name] = c
    out = ttq_section(ttq, ttq_plot_name) if ttq is not None else []
    out += [
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
    ]
    best = best_layout_table(results["contenders"], results["pairs"])
    if best:
        out += ["## Each network at its faster layout", "",
                "What a user who picks the faster memory layout for each network gets: ours at its "
                "faster layout (default or channels_last) against each peer at its own, per step kind.",
                "", *best, ""]
    out += [
        "## Every contender",
        "",
    ]
    for shape, contenders in by_shape.items():
        out += [f"### {shape}", "", *contender_table(contenders, meta), ""]
        tuning = tuning_table(contenders, meta)
        if tuning:
            out += ["Tuned (channels_last) against the default layout, each contender against itself:", "",
                    *tuning, ""]
        out += ["Configs:", ""]
        out += [f"- {name}: `{c['config']}`" for name, c in contenders.items()]
        out.append("")
    if profile is not None:
        out += ["## Where the time goes", "", *profile_section(profile), ""]
    if quality is not None:
        out += ["# Quality yardstick: the shipped digits models", "", *quality_section(quality), ""]
    return "\n".join(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--ttq", type=Path, default=HERE / "time_to_quality.json")
    parser.add_argument("--results", type=Path, default=HERE / "results.json")
    parser.add_argument("--profile", type=Path, default=HERE / "profile.json")
    parser.add_argument("--quality", type=Path, default=HERE / "quality.json")
    parser.add_argument("--out", type=Path, default=HERE / "RESULTS.md")
    args = parser.parse_args()
    results = json.loads(args.results.read_text())
    profile = json.loads(args.profile.read_text()) if args.profile.exists() else None
    quality = json.loads(args.quality.read_text()) if args.quality.exists() else None
    ttq, plot_name = None, None
    if args.ttq.exists():
        ttq = json.loads(args.ttq.read_text())
        plot = args.ttq.with_suffix(".png")
        ttq_plot(ttq, plot)
        plot_name = os.path.relpath(plot, args.out.parent)
        print(f"wrote {plot}")
    args.out.write_text(render(results, profile, quality, ttq, plot_name))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
