"""Where a training step's time goes: torch.profiler, self CPU time per op, per contender.

Profiles the 1x28x28 contenders (batch 64, forward + backward + AdamW), one step at a time
in turns as speed.py does, and sums each op's self CPU time over the profiled steps. Writes
profile.json: per contender, ms per step in each op family and the top ops.

One thread by default: then an op's self time is its own compute. With two threads on a
machine that other processes share, each op also waits at its end for the second thread
to be scheduled again, and that wait, the same for a tiny op as for a big one, swamps
the small ops (an AdamW step measured 5-15 ms on one thread, 1-2 s on two, under load).

The default layouts only (about 2 minutes); --tuned adds the channels_last twins.

    python bench/profile_ops.py [--steps 2 --threads 1 --tuned --out bench/profile.json]
"""

from __future__ import annotations

import argparse
import json
from collections import Counter
from pathlib import Path

import torch
from contenders import contenders
from speed import Runner
from torch.profiler import ProfilerActivity, profile

HERE = Path(__file__).resolve().parent
FAMILIES = {  # op family -> aten op names (self time); everything else is "other"
    "conv (oneDNN fwd + bwd)": ("aten::mkldnn_convolution", "aten::convolution_backward",
                                "aten::_slow_conv2d_forward", "aten::_slow_conv2d_backward"),
    "matmul (Linear, einsum)": ("aten::mm", "aten::addmm", "aten::bmm", "aten::baddbmm"),
    "attention kernel": ("aten::_scaled_dot_product_flash_attention_for_cpu",
                         "aten::_scaled_dot_product_flash_attention_for_cpu_backward"),
    "normalization": ("aten::native_group_norm", "aten::native_group_norm_backward",
                      "aten::linalg_vector_norm", "aten::norm"),
    "copies, cat, layout": ("aten::copy_", "aten::cat", "aten::clone", "aten::contiguous"),
}


def family(op: str) -> str:
    return next((name for name, ops in FAMILIES.items() if op in ops), "other (elementwise, AdamW)")


def profile_steps(names: list[str], steps: int) -> dict[str, Counter]:
    """Self CPU ms per op, summed over `steps` training steps per contender, in turns."""
    runners = [Runner(contenders()[name]) for name in names]
    for runner in runners:
        runner.train()  # warm-up: first-step allocations and oneDNN primitive creation
    totals = {name: Counter() for name in names}
    for _ in range(steps):
        for runner in runners:
            with profile(activities=[ProfilerActivity.CPU]) as prof:
                runner.train()
            for event in prof.key_averages():
                totals[runner.c.name][event.key] += event.self_cpu_time_total / 1e3
    return totals


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=2)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--shape", default="1x28x28")
    parser.add_argument("--top", type=int, default=12)
    parser.add_argument("--tuned", action="store_true",
                        help="also profile the channels_last twins (doubles the run time)")
    parser.add_argument("--out", type=Path, default=HERE / "profile.json")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    names = [n for n, c in contenders().items()
             if n.endswith(f" {args.shape}") and (args.tuned or not c.channels_last)]
    totals = profile_steps(names, args.steps)
    out = {"shape": args.shape, "steps": args.steps, "threads": args.threads, "tuned": args.tuned,
           "contenders": {}}
    for name, per_op in totals.items():
        per_step = {op: ms / args.steps for op, ms in per_op.items()}
        families = Counter()
        for op, ms in per_step.items():
            families[family(op)] += ms
        out["contenders"][name] = {
            "total_ms": sum(per_step.values()),
            "families_ms": dict(families.most_common()),
            "top_ops_ms": dict(Counter(per_step).most_common(args.top)),
        }
        print(f"{name}: {sum(per_step.values()):.0f} ms/step; "
              + ", ".join(f"{k} {v:.0f}" for k, v in families.most_common()), flush=True)
    args.out.write_text(json.dumps(out, indent=1))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
