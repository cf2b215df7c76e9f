"""The book's one table of held-out likelihoods for the shipped digits models.

Every chapter that quotes a bound of a shipped digits model reads it from here, so the
book cannot quote two different numbers for one model. The table is computed once,
by running this module, and shipped as data beside the weights:

    python -m diffusion_core.likelihoods          # about 15 minutes on 2 CPU cores

Rows: each of `MODELS` (ε-prediction with L_simple, with L_vlb, and learned variances
with L_hybrid), plain and wrapped in `snap_to_levels`, each evaluated exactly as
`GaussianDiffusion.calc_bpd_loop` does it (every one of the T terms, one x_t draw per
digit and t) on all 300 held-out digits; plus the two baselines of chapter 9, fitted on
the 1,497 training digits. Every model sees the same x_t draws (the same seeds), so a
difference between two rows is measured digit by digit, paired.
"""

from __future__ import annotations

import json
import platform
import time
from pathlib import Path

import torch

from .baselines import CategoricalBaseline, GMMBaseline
from .data import load_digits
from .diffusion import snap_timesteps, snap_to_levels
from .metrics import standard_error
from .pretrained import PACKAGE_DIR, load_pretrained

MODELS = ("digits_simple", "digits_vlb", "digits_hybrid")
VARIANTS = ("plain", "snapped")
BASELINES = ("per-pixel categorical", "Gaussian mixture")
TABLE_FILE = PACKAGE_DIR / "digits_likelihoods" / "table.json"
COMMAND = "python -m diffusion_core.likelihoods"
CHUNK = 100  # digits per calc_bpd_loop call; chunk k draws its x_t from seed k


def row_name(model: str, variant: str) -> str:
    """The table's key for `model` ("digits_simple", ...) as `variant` ("plain" or "snapped")."""
    if model not in MODELS:
        raise ValueError(f"model must be one of {MODELS}, got {model!r}")
    if variant not in VARIANTS:
        raise ValueError(f"variant must be one of {VARIANTS}, got {variant!r}")
    return f"{model}, {variant}"


def _summary(per_image: torch.Tensor) -> dict:
    return {"mean": per_image.mean().item(), "se": standard_error(per_image),
            "per_image": [round(v, 6) for v in per_image.tolist()]}


def compute_table(progress: bool = True) -> dict:
    """Evaluate every row on the held-out digits; returns the table as `load_table` gives it
    (with lists in place of tensors)."""
    x0, _ = load_digits("test")  # (300, 1, 8, 8)
    rows = {}
    for name in MODELS:
        model, diffusion, _ = load_pretrained(name, progress=False)
        n_snap = int(snap_timesteps(diffusion).sum())  # the first n_snap steps are snapped
        for variant, denoiser in (("plain", model), ("snapped", snap_to_levels(model, diffusion))):
            start = time.perf_counter()
            parts = [diffusion.calc_bpd_loop(denoiser, x0[i:i + CHUNK], progress=progress,
                                             generator=torch.Generator().manual_seed(k))
                     for k, i in enumerate(range(0, len(x0), CHUNK))]
            total = torch.cat([p["total_bpd"] for p in parts]).double()  # (300,)
            vb = torch.cat([p["vb"] for p in parts]).double()  # (300, T); index i: paper t = i + 1
            rows[row_name(name, variant)] = {
                **_summary(total),
                "decoder": _summary(vb[:, 0]),  # L_0
                "first_50": _summary(vb[:, :50].sum(1)),  # the terms at t = 1..50
                "snap_steps": _summary(vb[:, :n_snap].sum(1)),  # at t = 1..n_snap
                "n_snap": n_snap,
                "per_t": [round(v, 7) for v in vb.mean(0).tolist()],  # (T,) mean over digits
                "prior": _summary(torch.cat([p["prior_bpd"] for p in parts]).double()),  # L_T
                "seconds": round(time.perf_counter() - start, 1)}
            print(f"{name}, {variant}: {total.mean().item():.3f} ± {standard_error(total):.3f} "
                  f"bits/dim ({rows[row_name(name, variant)]['seconds']:.0f} s)", flush=True)
    x_train, _ = load_digits("train")
    for name, baseline in zip(BASELINES, (CategoricalBaseline.fit(x_train),
                                          GMMBaseline.fit(x_train)), strict=True):
        rows[name] = _summary(baseline.bits_per_dim(x0).double())
    return {"command": COMMAND, "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
            "machine": f"{platform.processor() or platform.machine()}, torch threads "
                       f"{torch.get_num_threads()}, torch {torch.__version__}",
            "n": len(x0), "rows": rows}


def load_table(path: str | Path = TABLE_FILE) -> dict:
    """The shipped table: {"n", "command", "date", "machine", "rows"}, where rows[key] holds
    "mean", "se" and "per_image" (a float64 tensor (n,)) of the total bound in bits/dim;
    model rows (keys from `row_name`) also hold "decoder" (L_0), "first_50" (the terms at
    t = 1..50), "snap_steps" (the terms at the n_snap timesteps `snap_to_levels` acts on)
    and "prior" (L_T), each with the same three entries, "n_snap", and "per_t" (T,), each
    term's mean over the digits."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no likelihood table at {path}; `{COMMAND}` computes it")
    table = json.loads(path.read_text())

    def tensors(entry: dict) -> dict:
        return {k: torch.tensor(v, dtype=torch.float64) if k in ("per_image", "per_t") else
                tensors(v) if isinstance(v, dict) else v for k, v in entry.items()}

    table["rows"] = {k: tensors(v) for k, v in table["rows"].items()}
    return table


def difference_to_table(values: torch.Tensor, key: str, indices: torch.Tensor,
                        table: dict | None = None) -> tuple[float, float]:
    """Mean and standard error of `values` (B,) minus the table's row `key` on the same
    held-out digits (`indices` (B,) into the 300), paired digit by digit.

    A chapter that evaluates a bound of its own on a few digits checks with this that it
    agrees with the table: both estimate the same per-digit bound on other noise, so the
    mean difference is 0 within a few standard errors.
    """
    table = load_table() if table is None else table
    if key not in table["rows"]:
        raise ValueError(f"key must be one of {sorted(table['rows'])}, got {key!r}")
    indices = torch.as_tensor(indices)
    if values.shape != indices.shape or values.ndim != 1:
        raise ValueError(f"values and indices must both have shape (B,), got "
                         f"{tuple(values.shape)} and {tuple(indices.shape)}")
    diff = values.double().cpu() - table["rows"][key]["per_image"][indices]
    return diff.mean().item(), standard_error(diff)


if __name__ == "__main__":
    torch.set_num_threads(2)
    TABLE_FILE.parent.mkdir(parents=True, exist_ok=True)
    result = compute_table()
    tmp = TABLE_FILE.with_suffix(".tmp")
    tmp.write_text(json.dumps(result) + "\n")  # compact: 2,400 numbers
    tmp.replace(TABLE_FILE)
    print(f"wrote {TABLE_FILE}")
