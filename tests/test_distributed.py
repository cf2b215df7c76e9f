"""Training on several processes (DistributedDataParallel over gloo, on the CPU).

(a) one DDP step with per-rank batches of B/2 equals one single-process step with
    batch B on the same examples;
(b) a 2-process torchrun run, killed with SIGKILL and resumed, ends where an
    uninterrupted 2-process run ends, bit for bit;
(c) only rank 0 writes files.
"""

import builtins
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from safetensors.torch import load_file
from torch.nn.parallel import DistributedDataParallel

from diffusion_core.data import load_digits
from diffusion_core.recipe import TrainConfig, build_diffusion, build_model
from diffusion_core.training import train, train_step

TINY = {"base_channels": 8, "channel_mult": (1, 2), "num_res_blocks": 1,
        "attention_resolutions": (), "num_groups": 4, "num_heads": 1, "dropout": 0.0}
WORLD = 2


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def join_group(rank: int, port: int) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=WORLD)


# ---- (a) one step ------------------------------------------------------------------------


def step_problem(seed: int, B: int = 32):
    """A fixed model, config and batch (x0, t, noise) from `seed`."""
    config = TrainConfig(model_overrides=TINY, T=100, batch_size=B, lr=1e-3, device="cpu",
                         loss_type="hybrid", model_var="learned_range", seed=seed)
    torch.manual_seed(seed)
    model = build_model(config)
    g = torch.Generator().manual_seed(seed + 1)
    x0 = load_digits("train")[0][:B]
    t = torch.randint(0, config.T, (B,), generator=g)
    noise = torch.randn(x0.shape, generator=g)
    return config, model, x0, t, noise


def run_steps(forward, model, config, x0, t, noise, steps: int = 2) -> None:
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.lr)
    diffusion = build_diffusion(config)
    for _ in range(steps):
        train_step(forward, model, diffusion, optimizer, x0, t, torch.ones(len(t)), noise, config)


def _ddp_step_worker(rank: int, port: int, seed: int, out: str) -> None:
    join_group(rank, port)
    config, model, x0, t, noise = step_problem(seed)
    half = slice(rank * len(t) // WORLD, (rank + 1) * len(t) // WORLD)
    run_steps(DistributedDataParallel(model), model, config, x0[half], t[half], noise[half])
    torch.save(model.state_dict(), f"{out}/rank{rank}.pt")
    dist.destroy_process_group()


def test_a_ddp_step_on_two_halves_equals_one_step_on_the_whole_batch(tmp_path, seed):
    mp.spawn(_ddp_step_worker, args=(free_port(), seed, str(tmp_path)), nprocs=WORLD)
    torch.set_num_threads(1)
    config, model, x0, t, noise = step_problem(seed)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    run_steps(model, model, config, x0, t, noise)
    ranks = [torch.load(tmp_path / f"rank{r}.pt") for r in range(WORLD)]
    moved = 0.0
    for name, want in model.state_dict().items():
        assert torch.equal(ranks[0][name], ranks[1][name]), name  # the ranks agree exactly
        # The two runs differ only in the order of float32 sums (the gradient averaged over
        # ranks vs over one batch): far below the step itself, which is ~lr = 1e-3 per weight.
        torch.testing.assert_close(ranks[0][name], want, rtol=0, atol=1e-6)
        moved = max(moved, (want - before[name]).abs().max().item())
    assert moved > 1e-3  # the step did move the weights


# ---- (b) and (c): torchrun, killed and resumed --------------------------------------------


def torchrun_train(out: Path, steps: int, cwd: Path) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={WORLD}",
           "-m", "diffusion_core", "train", "--device", "cpu", "--T", "100", "--batch-size", "32",
           "--steps", str(steps), "--checkpoint-every", "10", "--log-every", "5", "--lr", "1e-3",
           "--timestep-sampler", "importance", "--warmup-steps", "5", "--out-dir", str(out), "--quiet"]
    for key, value in {**TINY, "dropout": 0.1}.items():  # dropout: each rank's RNG must resume
        cmd += ["--model", f"{key}={json.dumps(value)}"]
    return subprocess.Popen(cmd, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, start_new_session=True)


def finish(proc: subprocess.Popen) -> str:
    out, _ = proc.communicate(timeout=300)
    assert proc.returncode == 0, out
    return out


def saved_step(out: Path) -> int:
    state = out / "checkpoint" / "state.json"
    try:
        return json.loads(state.read_text())["step"]
    except (FileNotFoundError, json.JSONDecodeError, KeyError):
        return 0


def kill_tree(pid: int) -> None:
    """SIGKILL a process and all its descendants (torchrun starts its workers in sessions of
    their own, so killing its process group would leave them running)."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    todo, tree = [pid], []
    while todo:
        p = todo.pop()
        tree.append(p)
        todo += children.get(p, [])
    for p in tree:
        try:
            os.kill(p, signal.SIGKILL)
        except ProcessLookupError:
            pass


def files_under(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*") if p.is_file()}


def test_a_killed_torchrun_run_resumes_to_the_same_weights(tmp_path):
    steps = 120
    # The run to kill: SIGKILL to every process once a checkpoint at step >= 20 exists.
    killed = torchrun_train(tmp_path / "killed", steps, tmp_path)
    deadline = time.time() + 240
    while saved_step(tmp_path / "killed") < 20 and killed.poll() is None and time.time() < deadline:
        time.sleep(0.02)
    kill_tree(killed.pid)
    killed.communicate()
    at_kill = saved_step(tmp_path / "killed")
    assert 20 <= at_kill < steps, f"the run was not killed mid-way (checkpoint at step {at_kill})"

    resumed = finish(torchrun_train(tmp_path / "killed", steps, tmp_path))
    straight_dir = tmp_path / "cwd"
    straight_dir.mkdir()
    straight = finish(torchrun_train(tmp_path / "straight", steps, straight_dir))
    assert resumed.count("trained digits") == 1 and straight.count("trained digits") == 1  # rank 0

    for name in ("model.safetensors", "ema.safetensors"):
        a = load_file(tmp_path / "killed" / "checkpoint" / name)
        b = load_file(tmp_path / "straight" / "checkpoint" / name)
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), name
    history = [torch.load(tmp_path / d / "checkpoint" / "optim.pt")["history"]
               for d in ("killed", "straight")]
    assert len(history[0]) == steps and torch.equal(*history)

    # The metrics log of the resumed run has each logged step once, with the same losses.
    def logged(d):
        lines = (tmp_path / d / "metrics.jsonl").read_text().splitlines()
        return [(r["step"], r["loss"], r["loss_by_t_quartile"]) for r in map(json.loads, lines)]
    assert logged("killed") == logged("straight")
    assert [s for s, _, _ in logged("straight")] == list(range(5, steps + 1, 5))

    # (c) the run wrote its checkpoint and log, once, and nothing else (no file of rank 1)
    assert files_under(tmp_path / "straight") == {
        "metrics.jsonl", "checkpoint/state.json", "checkpoint/model.safetensors",
        "checkpoint/ema.safetensors", "checkpoint/optim.pt"}
    assert files_under(straight_dir) == set()


def _writes_worker(rank: int, port: int, out: str) -> None:
    """Train 2 processes; record every file either rank opens for writing."""
    join_group(rank, port)
    opened = []
    real_open = builtins.open

    def recording_open(file, mode="r", *args, **kwargs):
        if any(c in mode for c in "wax+"):
            opened.append(str(file))
        return real_open(file, mode, *args, **kwargs)

    builtins.open = recording_open
    try:
        config = TrainConfig(model_overrides=TINY, T=100, batch_size=16, steps=6, device="cpu",
                             checkpoint_every=3, log_every=2, out_dir=f"{out}/run")
        result = train(config, progress=False)
    finally:
        builtins.open = real_open
    assert (result.ema_model is not None) == (rank == 0)
    with real_open(f"{out}/opened{rank}.json", "w") as f:
        json.dump(opened, f)


def test_only_rank_0_writes_files(tmp_path):
    mp.spawn(_writes_worker, args=(free_port(), str(tmp_path)), nprocs=WORLD)
    opened = [json.loads((tmp_path / f"opened{r}.json").read_text()) for r in range(WORLD)]
    assert opened[1] == []
    assert any(p.endswith("metrics.jsonl") for p in opened[0])
    assert any(p.endswith("state.json") for p in opened[0])


def test_a_global_batch_that_does_not_split_is_refused(tmp_path):
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
           "-m", "diffusion_core", "train", "--batch-size", "33", "--steps", "5",
           "--out-dir", str(tmp_path / "run"), "--quiet"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0
    assert "batch_size=33 (the global batch) must be divisible by the 2 processes" in proc.stderr
    assert not (tmp_path / "run" / "checkpoint").exists()


if not dist.is_gloo_available():  # pragma: no cover
    pytest.skip("torch.distributed without gloo", allow_module_level=True)
