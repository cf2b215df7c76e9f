"""The command line: `python -m diffusion_core train | sample | nll`.

A thin layer over `training.train`, the samplers and `calc_bpd_loop`; every
option maps onto a function argument. Errors the user can fix (a missing
checkpoint, a bad option) print one line and exit with code 2.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path

import torch

from .baselines import CategoricalBaseline, GMMBaseline
from .checkpoints import CheckpointError, find_checkpoint, load_model
from .diffusion import GaussianDiffusion, snap_to_levels
from .metrics import standard_error
from .recipe import TrainConfig, load_dataset, resolve_device, sample_shape
from .sampling import sample_ddim, sample_ddpm, sample_dpm_solver, sample_strided
from .training import read_config, train

SAMPLERS = ("ddpm", "strided", "ddim", "dpm-solver", "sde-dpm-solver")
# Steps when --steps is not given: the DPM-Solver++ pair reaches at 20 what the others need 250 for
# (bench/RESULTS.md, quality against steps).
DEFAULT_STEPS = {"strided": 250, "ddim": 250, "dpm-solver": 20, "sde-dpm-solver": 20}


def positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be an integer >= 1, got {value}")
    return value


class UsageError(Exception):
    """A mistake in the command line; reported without a traceback."""


# -----------------------------------------------------------------------------
# train


def _parse_override(text: str) -> tuple[str, object]:
    """'base_channels=32' -> ('base_channels', 32); values are JSON, else strings."""
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise UsageError(f"--model takes KEY=VALUE (e.g. base_channels=32), got {text!r}")
    try:
        return key, json.loads(value)
    except json.JSONDecodeError:
        return key, value


def config_from_args(args: argparse.Namespace) -> TrainConfig:
    """TrainConfig defaults, then --config FILE, then the options given on the command line."""
    fields = read_config(args.config).to_dict() if args.config else {}
    for f in dataclasses.fields(TrainConfig):
        value = getattr(args, f.name, None)
        if value is not None and f.name != "model_overrides":
            fields[f.name] = value
    if args.model:
        fields["model_overrides"] = {**fields.get("model_overrides", {}),
                                     **dict(_parse_override(m) for m in args.model)}
    if "out_dir" not in fields:
        fields["out_dir"] = f"runs/{fields.get('dataset', TrainConfig.dataset)}"
    return TrainConfig(**fields)


def cmd_train(args: argparse.Namespace) -> int:
    config = config_from_args(args)
    start = time.perf_counter()
    result = train(config, resume=not args.no_resume, progress=not args.quiet)
    elapsed = time.perf_counter() - start
    if result.rank != 0:  # under torchrun, rank 0 reports
        return 0
    last = result.history[-config.log_every:]
    where = f" on {result.world_size} processes" if result.world_size > 1 else ""
    print(f"trained {config.dataset} to step {result.step}{where} in {elapsed:.1f} s "
          f"({result.steps_per_sec:.2f} steps/s, "
          f"{result.steps_per_sec * config.batch_size:.0f} images/s); "
          f"mean loss of the last {len(last)} steps {sum(last) / max(len(last), 1):.4f}; "
          f"checkpoint in {Path(config.out_dir) / 'checkpoint'}")
    return 0


# -----------------------------------------------------------------------------
# sample


def open_model(args: argparse.Namespace):
    """(model, diffusion, config) from --checkpoint or --pretrained."""
    device = resolve_device(args.device)
    if args.pretrained:
        from .pretrained import load_pretrained

        return load_pretrained(args.pretrained, device=str(device))
    if find_checkpoint(args.checkpoint) is None:
        raise UsageError(f"no checkpoint in {args.checkpoint!r}: train one with "
                         f"`python -m diffusion_core train --out-dir {args.checkpoint}`, "
                         "or pass --pretrained NAME")
    return load_model(args.checkpoint, device=str(device), ema=not args.raw_weights)


def draw_samples(model: torch.nn.Module, diffusion: GaussianDiffusion, shape: tuple[int, ...],
                 n: int, sampler: str = "strided", steps: int = 250, eta: float = 0.0,
                 seed: int = 0, batch_size: int = 500, device: str | torch.device = "cpu",
                 progress: bool = True, y: torch.Tensor | None = None,
                 guidance_scale: float = 1.0) -> torch.Tensor:
    """n samples (n, *shape) from one seeded generator, drawn in batches; y: labels (n,)
    for a conditional model, guided with `guidance_scale`."""
    if sampler not in SAMPLERS:
        raise ValueError(f"sampler must be one of {SAMPLERS}, got {sampler!r}")
    if y is not None and tuple(y.shape) != (n,):
        raise ValueError(f"y must hold one label per sample, shape ({n},), got {tuple(y.shape)}")
    generator = torch.Generator(device).manual_seed(seed)
    batches = []
    for start in range(0, n, batch_size):
        batch_shape = (min(batch_size, n - start), *shape)
        kwargs = dict(generator=generator, device=device, progress=progress,
                      guidance_scale=guidance_scale,
                      y=None if y is None else y[start:start + batch_shape[0]].to(device))
        if sampler == "ddpm":
            x = sample_ddpm(diffusion, model, batch_shape, **kwargs)
        elif sampler == "strided":
            x = sample_strided(diffusion, model, batch_shape, steps, **kwargs)
        elif sampler == "ddim":
            x = sample_ddim(diffusion, model, batch_shape, steps, eta=eta, **kwargs)
        else:
            x = sample_dpm_solver(diffusion, model, batch_shape, steps,
                                  stochastic=sampler == "sde-dpm-solver", **kwargs)
        batches.append(x.cpu())
    return torch.cat(batches)


def save_points_png(points: torch.Tensor, path: Path) -> None:
    """A scatter plot of 2-D samples (N, 2)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(4, 4))
    ax.scatter(points[:, 0], points[:, 1], s=2)
    ax.set_aspect("equal")
    fig.savefig(path, dpi=100)
    plt.close(fig)


def save_samples_npz(x: torch.Tensor, path: Path) -> None:
    """The raw samples for other tools: `samples` (N, ...) float32 as drawn, in [-1, 1], and,
    for images, `arr_0` (N, H, W, C) uint8 in 0..255, the layout image-metric tools read."""
    import numpy as np

    arrays = {"samples": x.float().numpy()}
    if x.dim() == 4:
        pixels = ((x.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
        arrays["arr_0"] = pixels.permute(0, 2, 3, 1).contiguous().numpy()
    np.savez(path, **arrays)


def labels_from_args(args: argparse.Namespace, config: TrainConfig) -> torch.Tensor | None:
    """--label N: every sample asks for N; --label all: 0, 1, ..., K-1, 0, 1, ... (a grid
    with 10 per row then shows one label per column)."""
    if args.label is None:
        if args.guidance_scale != 1.0:
            raise UsageError("--guidance-scale needs --label (the label to guide towards)")
        return None
    k = config.num_classes
    if not k:
        raise UsageError("--label needs a conditional model (trained with --num-classes); "
                         "this one takes no labels")
    if args.label == "all":
        return torch.arange(args.n) % k
    try:
        label = int(args.label)
    except ValueError:
        raise UsageError(f"--label must be an integer in 0..{k - 1} or 'all', got {args.label!r}") from None
    if not 0 <= label < k:
        raise UsageError(f"--label must be an integer in 0..{k - 1} or 'all', got {label}")
    return torch.full((args.n,), label)


def use_channels_last(flag: bool | None, shape: tuple[int, ...], device: torch.device) -> bool:
    """`sample --[no-]channels-last`: NHWC for image models, by default on the CPU only.

    On 2 CPU cores our UNets sample 1.04-1.12x faster in NHWC, oneDNN's own layout (bench/
    RESULTS.md, the tuned rows); training gained nothing there (0.97-1.06x), so `train` keeps
    NCHW unless asked. On CUDA it was not measured, so the default leaves it alone there."""
    if flag and len(shape) != 3:
        raise UsageError(f"--channels-last needs an image model, this one draws points of shape {shape}")
    return flag if flag is not None else len(shape) == 3 and device.type == "cpu"


def cmd_sample(args: argparse.Namespace) -> int:
    model, diffusion, config = open_model(args)
    device = next(model.parameters()).device
    if use_channels_last(args.channels_last, sample_shape(config), device):
        model = model.to(memory_format=torch.channels_last)  # conv outputs follow the weights
    steps = diffusion.T if args.sampler == "ddpm" else args.steps or DEFAULT_STEPS[args.sampler]
    if not 1 <= steps <= diffusion.T:
        raise UsageError(f"--steps must be in 1..T = 1..{diffusion.T}, got {steps}")
    y = labels_from_args(args, config)
    start = time.perf_counter()
    x = draw_samples(model, diffusion, sample_shape(config), args.n, args.sampler, steps,
                     args.eta, args.seed, args.batch_size, device, progress=not args.quiet,
                     y=y, guidance_scale=args.guidance_scale)
    elapsed = time.perf_counter() - start
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    if out.suffix == ".npz":  # the raw samples, and their picture beside them
        save_samples_npz(x, out)
        print(f"wrote the {args.n} raw samples to {out}")
        out = out.with_suffix(".png")
    if x.dim() == 2:
        save_points_png(x, out)
    else:
        from .viz import save_grid_png

        save_grid_png(x[: args.grid], out, nrow=args.nrow)
    print(f"{args.n} samples ({args.sampler}, {steps} steps) in {elapsed:.1f} s; wrote {out}")
    if args.evaluate and config.dataset in ("mnist", "mnist9k"):
        from .metrics import class_probs, confidence_stats
        from .pretrained import load_mnist_classifier

        stats = confidence_stats(class_probs(load_mnist_classifier(), x.cpu()))
        shares = " ".join(f"{d}:{s:.1%}" for d, s in enumerate(stats["class_shares"]))
        print(f"MNIST classifier: {stats['frac_confident']:.1%} of samples with confidence "
              f">= 0.9; class shares {shares}")
    elif args.evaluate:
        if config.dataset != "digits":
            raise UsageError("--evaluate needs a digits or MNIST model (it uses a classifier "
                             "trained on that data)")
        from .baselines import evaluate_digit_samples

        ev = evaluate_digit_samples(x)
        shares = " ".join(f"{d}:{s:.1%}" for d, s in enumerate(ev["class_shares"]))
        print(f"classifier: {ev['confident_fraction']:.1%} of samples with confidence >= 0.9; "
              f"class shares {shares}; {'passes' if ev['passes'] else 'fails'} the quality target")
    return 0


# -----------------------------------------------------------------------------
# nll


def _mean_and_se(v: torch.Tensor) -> str:
    """'mean ± standard error' of per-image values v (N,); the error is nan for one image."""
    se = standard_error(v) if len(v) > 1 else float("nan")
    return f"{v.double().mean().item():.4f} ± {se:.4f}"


def cmd_nll(args: argparse.Namespace) -> int:
    model, diffusion, config = open_model(args)
    if not config.spec.discrete:
        raise UsageError(f"nll needs an image model (digits, mnist, mnist9k), this one is "
                         f"{config.dataset}")
    device = next(model.parameters()).device
    if args.data_dir:
        config = dataclasses.replace(config, data_dir=args.data_dir)
    x0 = load_dataset(config, args.split)
    x0 = x0[: args.n] if args.n else x0
    denoisers = {"bound": model}
    if args.snap_levels:
        denoisers[f"bound, x0 snapped to {diffusion.num_levels} levels"] = snap_to_levels(model, diffusion)
    start = time.perf_counter()
    for label, denoiser in denoisers.items():
        generator = torch.Generator(device).manual_seed(args.seed)  # the same x_t draws for each
        terms = {"prior": [], "L_0": [], "sum of KL terms": [], "total": []}
        for batch in x0.split(args.batch_size):
            batch = batch.to(device)
            if args.t_samples:
                out = diffusion.bpd_estimate(denoiser, batch, args.t_samples, generator=generator)
                parts = out["prior_bpd"], out["decoder_bpd"], out["kl_bpd"], out["total_bpd"]
            else:
                out = diffusion.calc_bpd_loop(denoiser, batch, progress=not args.quiet,
                                              generator=generator)
                parts = out["prior_bpd"], out["vb"][:, 0], out["vb"][:, 1:].sum(dim=1), out["total_bpd"]
            for values, part in zip(terms.values(), parts, strict=True):
                values.append(part)
        how = (f"{args.t_samples} stratified t per image" if args.t_samples
               else f"all {diffusion.T} t per image")
        print(f"{config.dataset} {args.split} split, {len(x0)} images, T={diffusion.T}, {label}, "
              f"{how}; bits/dim (mean over images ± standard error):")
        for name, values in terms.items():
            print(f"  {name:<16} {_mean_and_se(torch.cat(values))}")
    if args.baselines:
        x_train = load_dataset(config, "train")
        x_mix, mix_options = x_train, {}
        if x_train[0].numel() > 64:  # 28x28: the full BIC search over 9,000 images takes 10+ min
            x_mix, mix_options = x_train[:3000], {"components": (1, 2, 4, 8)}
        print(f"baselines fitted on the {len(x_train)} training images (the mixture on the "
              f"first {len(x_mix)}), bits/dim on the same {len(x0)} images:")
        mixture = GMMBaseline.fit(x_mix, diffusion.num_levels, **mix_options)
        baselines = {"per-pixel categorical": CategoricalBaseline.fit(x_train, diffusion.num_levels),
                     f"Gaussian mixture K={mixture.num_components}": mixture}
        for name, baseline in baselines.items():
            print(f"  {name:<21} {_mean_and_se(baseline.bits_per_dim(x0.cpu()))}")
    print(f"({time.perf_counter() - start:.1f} s)")
    return 0


# -----------------------------------------------------------------------------
# the parser


def _add_model_source(p: argparse.ArgumentParser) -> None:
    src = p.add_mutually_exclusive_group()
    src.add_argument("--checkpoint", default="runs/digits",
                     help="a run directory (from train --out-dir) or a checkpoint directory "
                          "(default: runs/digits)")
    src.add_argument("--pretrained", metavar="NAME",
                     help="a shipped checkpoint instead, e.g. digits_simple")
    p.add_argument("--raw-weights", action="store_true",
                   help="use the raw weights instead of their moving average (EMA)")
    p.add_argument("--device", default="auto", help="auto (CUDA if available), cpu, cuda")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--quiet", action="store_true", help="no progress bars")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m diffusion_core",
                                     description="Train, sample and score diffusion models.")
    sub = parser.add_subparsers(dest="command", required=True)

    d = TrainConfig()
    p = sub.add_parser("train", help="train a model (resumes from --out-dir)",
                       description="Train a denoiser. Unset options take TrainConfig's defaults.")
    p.add_argument("--config", help="a TrainConfig JSON file; options below override it")
    p.add_argument("--dataset", help=f"digits, mnist (60,000 MNIST training images, downloaded), mnist9k (the first "
                        f"9,000 of MNIST's test split) or a 2-D toy (default {d.dataset})")
    p.add_argument("--data-dir", help="folder of the MNIST IDX files")
    p.add_argument("--model-preset", help="auto, digits, mnist, cifar10, mlp (default auto)")
    p.add_argument("--model", action="append", metavar="KEY=VALUE",
                   help="override a field of the network config, e.g. base_channels=32 "
                        "or channel_mult=[1,2] (repeatable)")
    p.add_argument("--schedule", help=f"linear or cosine (default {d.schedule})")
    p.add_argument("--T", type=int, help=f"diffusion steps (default {d.T})")
    p.add_argument("--model-var", help=f"fixed_small, fixed_large, learned_range, learned "
                                       f"(default {d.model_var})")
    p.add_argument("--model-mean", help=f"what the network predicts: eps (the noise) or mean (the "
                                        f"posterior mean, DDPM's baseline) (default {d.model_mean})")
    p.add_argument("--loss-type", help=f"simple, vlb, hybrid (default {d.loss_type})")
    p.add_argument("--timestep-sampler", help=f"uniform or importance (default "
                                              f"{d.timestep_sampler})")
    p.add_argument("--num-classes", type=int,
                   help="train a conditional model on the dataset's labels: 10 for digits and "
                        "MNIST (default 0: unconditional)")
    p.add_argument("--p-uncond", type=float,
                   help=f"with --num-classes: the share of labels dropped, so that the one "
                        f"network also learns the unconditional model (default {d.p_uncond})")
    p.add_argument("--batch-size", type=int, help=f"(default {d.batch_size})")
    p.add_argument("--lr", type=float, help=f"(default {d.lr})")
    p.add_argument("--weight-decay", type=float, help=f"(default {d.weight_decay})")
    p.add_argument("--warmup-steps", type=int, help=f"(default {d.warmup_steps})")
    p.add_argument("--steps", type=int, help=f"(default {d.steps})")
    p.add_argument("--grad-clip", type=float, help=f"(default {d.grad_clip})")
    p.add_argument("--ema-decay", type=float, help=f"(default {d.ema_decay})")
    p.add_argument("--seed", type=int, help=f"(default {d.seed})")
    p.add_argument("--device", help="auto (CUDA if available), cpu, cuda (default auto)")
    p.add_argument("--bf16", action="store_const", const=True,
                   help="bfloat16 autocast (CUDA or CPU)")
    p.add_argument("--compile", action="store_const", const=True,
                   help="torch.compile the network (CUDA or CPU; the first steps compile)")
    p.add_argument("--channels-last", action="store_const", const=True,
                   help="NHWC memory layout for the UNet (often faster on CPUs)")
    p.add_argument("--out-dir", help="run directory (default runs/<dataset>)")
    p.add_argument("--checkpoint-every", type=int, help=f"(default {d.checkpoint_every})")
    p.add_argument("--log-every", type=int, help=f"(default {d.log_every})")
    p.add_argument("--no-resume", action="store_true",
                   help="start from scratch even if --out-dir holds a checkpoint")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("sample", help="draw samples and write a PNG grid")
    _add_model_source(p)
    p.add_argument("--sampler", choices=SAMPLERS, default="sde-dpm-solver",
                   help="ddpm (all T steps), strided (iDDPM respacing), ddim, dpm-solver "
                        "(DPM-Solver++(2M), deterministic) or sde-dpm-solver (its stochastic "
                        "form; the default)")
    p.add_argument("--steps", type=positive_int, default=None,
                   help="sampling steps (default 250 for strided and ddim, 20 for the DPM-Solvers; "
                        "ddpm uses all T)")
    p.add_argument("--eta", type=float, default=0.0, help="DDIM noise scale (default 0)")
    p.add_argument("--label", help="conditional models: the label to draw (0..9 for digits), "
                                   "or 'all' for 0, 1, ..., 9 in turn")
    p.add_argument("--guidance-scale", type=float, default=1.0,
                   help="classifier-free guidance with --label: 0 unconditional, 1 conditional "
                        "(default), > 1 guided (sharper, less varied)")
    p.add_argument("--n", type=positive_int, default=64, help="number of samples (default 64)")
    p.add_argument("--batch-size", type=positive_int, default=500)
    p.add_argument("--out", default="samples.png",
                   help="PNG file (default samples.png); a .npz name writes the raw samples "
                        "there and the PNG beside it")
    p.add_argument("--grid", type=positive_int, default=100, help="at most this many in the grid")
    p.add_argument("--nrow", type=positive_int, default=10, help="images per grid row (default 10)")
    p.add_argument("--evaluate", action="store_true",
                   help="digits, MNIST: score the samples with a classifier trained on real digits")
    p.add_argument("--channels-last", action=argparse.BooleanOptionalAction, default=None,
                   help="NHWC memory layout for an image model (default: on the CPU, where it "
                        "samples faster; off on CUDA)")
    p.set_defaults(func=cmd_sample)

    p = sub.add_parser("nll", help="held-out negative log-likelihood bound in bits/dim")
    _add_model_source(p)
    p.add_argument("--split", default="test", help="data split (default test)")
    p.add_argument("--n", type=int, default=0, help="use the first N images (default all)")
    p.add_argument("--t-samples", type=positive_int, metavar="K",
                   help="estimate the bound from K stratified timesteps per image (1 + K network "
                        "calls, unbiased) instead of all T")
    p.add_argument("--data-dir", help="folder of the MNIST IDX files, instead of the recorded one")
    p.add_argument("--batch-size", type=positive_int, default=100)
    p.add_argument("--snap-levels", action="store_true",
                   help="also the bound with x0 rounded to the data's levels where the noise is "
                        "small (diffusion_core.snap_to_levels)")
    p.add_argument("--baselines", action="store_true",
                   help="also a per-pixel categorical and a Gaussian mixture fitted on the "
                        "training split (exact discrete likelihoods)")
    p.set_defaults(func=cmd_nll)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (UsageError, CheckpointError, ValueError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except FloatingPointError as e:  # a diverged run: its last good checkpoint is kept
        print(f"error: {e}", file=sys.stderr)
        return 1
