"""DDPM's Table 2 in miniature: what the network predicts and what it is trained on.

DDPM (Ho et al. 2020, section 4.2 and Table 2) compared, on CIFAR-10, a network that
predicts the posterior mean μ̃ with one that predicts the noise ε, each trained on the
true bound L (with a fixed or a learned diagonal Σ) or on an unweighted mean squared
error. This module runs the same six rows on the sklearn digits, every row with the one
recipe and budget of the book's digits models (`TrainConfig()`: 2,000 steps of 128,
cosine schedule, T = 1000), and scores each the same way:

- sample quality: 300 samples from DDPM's ancestral sampler (all 1000 steps, the same
  starting noise for every row), rounded to the 17 grey levels, scored by the book's
  digit classifier (`metrics.sample_yardsticks`: Fréchet distance to the training
  digits, the share of confident samples);
- the bound: `calc_bpd_loop` on all 300 held-out digits with the likelihood table's
  x_t draws (chunk k of 100 digits from seed k), so every pair of rows is paired.

    python -m diffusion_core.ablation          # about 45 minutes on 2 CPU cores

The two ε rows with fixed Σ are the shipped `digits_vlb` and `digits_simple`, trained
by this same recipe; the other four are trained here into runs/table2/ (resumable).
A row whose loss turns NaN or infinite is recorded as diverged, with its step: the
paper's blank entries "were unstable to train".
"""

from __future__ import annotations

import dataclasses
import json
import platform
import time
from pathlib import Path

import torch

from .data import DIGITS_LEVELS, load_digits, to_levels, to_unit_range
from .metrics import sample_yardsticks, standard_error, train_digit_classifier
from .pretrained import PACKAGE_DIR, REGISTRY, load_pretrained
from .recipe import TrainConfig
from .sampling import sample_ddpm

TABLE_FILE = PACKAGE_DIR / "digits_table2" / "table.json"
COMMAND = "python -m diffusion_core.ablation"
N_SAMPLES = 300
N_KEPT = N_SAMPLES  # every sample is kept: the book bootstraps their standard errors
CHUNK = 100  # as in diffusion_core.likelihoods: chunk k of the held-out digits uses seed k


@dataclasses.dataclass(frozen=True)
class Row:
    key: str
    predicts: str  # "μ̃" or "ε"
    objective: str  # as Table 2 writes it
    options: dict  # TrainConfig fields that differ from the default recipe
    paper: tuple[str, str]  # DDPM's CIFAR-10 (IS, FID); "–": unstable to train
    pretrained: str | None = None  # a shipped model trained by exactly this row's recipe


ROWS = (
    Row("mean_vlb_learned", "μ̃", "L, learned diagonal Σ",
        dict(model_mean="mean", loss_type="vlb", model_var="learned"), ("7.28±0.10", "23.69")),
    Row("mean_vlb_fixed", "μ̃", "L, fixed isotropic Σ",
        dict(model_mean="mean", loss_type="vlb"), ("8.06±0.09", "13.22")),
    Row("mean_mse", "μ̃", "‖μ̃ − μ̂‖²", dict(model_mean="mean"), ("–", "–")),
    Row("eps_vlb_learned", "ε", "L, learned diagonal Σ",
        dict(loss_type="vlb", model_var="learned"), ("–", "–")),
    Row("eps_vlb_fixed", "ε", "L, fixed isotropic Σ", dict(loss_type="vlb"),
        ("7.67±0.13", "13.51"), pretrained="digits_vlb"),
    Row("eps_simple", "ε", "‖ε − ε̂‖² (L_simple)", {}, ("9.46±0.11", "3.17"),
        pretrained="digits_simple"),
)


def row_config(row: Row, out_root: str = "runs/table2", **overrides) -> TrainConfig:
    """The row's TrainConfig: the book's default digits recipe with the row's options."""
    if row.pretrained:
        base = REGISTRY[row.pretrained].config
        if dataclasses.replace(base, out_dir=None) != dataclasses.replace(
                TrainConfig(**row.options), out_dir=None):
            raise AssertionError(f"{row.pretrained} was not trained by row {row.key}'s recipe")
    return TrainConfig(**{**row.options, "out_dir": f"{out_root}/{row.key}", **overrides})


def train_row(row: Row, out_root: str = "runs/table2", progress: bool = True):
    """(model, diffusion, None) or (None, None, "diverged at step N ...")."""
    from .checkpoints import load_model
    from .training import train

    if row.pretrained:
        model, diffusion, _ = load_pretrained(row.pretrained, progress=False)
        return model, diffusion, None
    config = row_config(row, out_root)
    try:
        train(config, progress=progress)
    except FloatingPointError as e:
        return None, None, str(e).removeprefix("training stopped: ")
    model, diffusion, _ = load_model(config.out_dir)
    return model, diffusion, None


def evaluate_row(model, diffusion, classifier, x_T: torch.Tensor, progress: bool = True) -> dict:
    """Sample quality and the held-out bound of one trained row."""
    x_train, _ = load_digits("train")
    x_test, _ = load_digits("test")
    start = time.perf_counter()
    x = sample_ddpm(diffusion, model, x_T.shape, noise=x_T, progress=progress,
                    generator=torch.Generator().manual_seed(2))
    finite = torch.isfinite(x).flatten(1).all(1)  # a learned Σ can blow a sample up
    levels = to_levels(torch.where(finite.view(-1, 1, 1, 1), x, 0.0), DIGITS_LEVELS)  # ints 0..16
    quality = sample_yardsticks(to_unit_range(levels, DIGITS_LEVELS), x_train, classifier)
    quality["finite"] = finite.double().mean().item()
    parts = [diffusion.calc_bpd_loop(model, x_test[i:i + CHUNK], progress=progress,
                                     generator=torch.Generator().manual_seed(k))
             for k, i in enumerate(range(0, len(x_test), CHUNK))]
    total = torch.cat([p["total_bpd"] for p in parts]).double()
    return {**quality, "bpd": total.mean().item(), "bpd_se": standard_error(total),
            "bpd_per_image": [round(v, 6) for v in total.tolist()],
            "samples": levels[:N_KEPT, 0].tolist(),
            "seconds_to_evaluate": round(time.perf_counter() - start, 1)}


def training_log(out_dir: str | Path) -> list[dict]:
    """[{"step", "loss"}, ...] from a run's metrics.jsonl (empty if it has none)."""
    from .training import METRICS_FILE

    file = Path(out_dir) / METRICS_FILE
    lines = file.read_text().splitlines() if file.is_file() else []
    return [{"step": e["step"], "loss": e["loss"]} for e in map(json.loads, filter(str.strip, lines))]


def compute_table(out_root: str = "runs/table2", progress: bool = True) -> dict:
    classifier = train_digit_classifier()
    x_T = torch.randn(N_SAMPLES, 1, 8, 8, generator=torch.Generator().manual_seed(1))
    rows = {}
    for row in ROWS:
        start = time.perf_counter()
        model, diffusion, diverged = train_row(row, out_root, progress)
        entry = {"predicts": row.predicts, "objective": row.objective, "options": row.options,
                 "paper_is": row.paper[0], "paper_fid": row.paper[1], "pretrained": row.pretrained,
                 "diverged": diverged, "seconds_to_train": round(time.perf_counter() - start, 1)}
        if not row.pretrained:  # the loss every 50 steps, for a live rerun to compare with
            entry["log"] = training_log(row_config(row, out_root).out_dir)
        if diverged is None:
            entry.update(evaluate_row(model, diffusion, classifier, x_T, progress))
            print(f"{row.key}: Fréchet {entry['frechet']:.3f}, confident {entry['confident']:.3f}, "
                  f"bound {entry['bpd']:.3f} ± {entry['bpd_se']:.3f} bits/dim", flush=True)
        else:
            print(f"{row.key}: diverged ({diverged})", flush=True)
        rows[row.key] = entry
    x_train, _ = load_digits("train")
    x_test, _ = load_digits("test")
    return {"command": COMMAND, "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
            "machine": f"{platform.processor() or platform.machine()}, torch threads "
                       f"{torch.get_num_threads()}, torch {torch.__version__}",
            "n_samples": N_SAMPLES, "n_test": len(x_test),
            "real": sample_yardsticks(x_test, x_train, classifier), "rows": rows}


def load_table(path: str | Path = TABLE_FILE) -> dict:
    """The shipped table: {"command", "date", "machine", "n_samples", "n_test", "real" (the
    held-out digits' own yardsticks: the floor), "rows"}; rows[key] (keys of `ROWS`) holds
    the row's description, "diverged" (None, or where it stopped) and, if it trained,
    "frechet", "confident", "class_entropy", "pixel_std", "bpd", "bpd_se",
    "bpd_per_image" (float64 tensor (n_test,)) and "samples" (uint8 tensor (N_KEPT, 8, 8),
    grey levels 0..16); rows trained here also hold "log", their loss every 50 steps."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no Table 2 results at {path}; `{COMMAND}` computes them")
    table = json.loads(path.read_text())
    for entry in table["rows"].values():
        if "bpd_per_image" in entry:
            entry["bpd_per_image"] = torch.tensor(entry["bpd_per_image"], dtype=torch.float64)
            entry["samples"] = torch.tensor(entry["samples"], dtype=torch.uint8)
    return table


if __name__ == "__main__":
    torch.set_num_threads(2)
    TABLE_FILE.parent.mkdir(parents=True, exist_ok=True)
    result = compute_table()
    tmp = TABLE_FILE.with_suffix(".tmp")
    tmp.write_text(json.dumps(result) + "\n")
    tmp.replace(TABLE_FILE)
    print(f"wrote {TABLE_FILE}")
