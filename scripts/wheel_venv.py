"""Build diffusion_core's wheel and install it, not editable, into a fresh virtual environment.

    .venv/bin/python scripts/wheel_venv.py TARGET_DIR      # prints TARGET_DIR/venv/bin/python

This is how Colab (`pip install "diffusion_core @ git+..."`) and PyPI users get the
library: from a wheel, with only the files the wheel carries. Steps, all offline:

1. copy the sources the build needs (top-level files and diffusion_core/, as git
   lists them, untracked-but-not-ignored files included) to TARGET_DIR/src, so the
   build writes nothing into the repo and no stale build/ or *.egg-info/SOURCES.txt
   of the working tree can add files that a fresh clone would not ship;
2. build the sdist from that copy, then the wheel from the sdist (what pip does
   for an sdist from an index; the wheel then holds what both carry), both with
   this interpreter's setuptools (no build isolation, no download);
3. `python -m venv` TARGET_DIR/venv, `pip install --no-deps` the wheel into it;
4. make the dependencies (torch, numpy, ...) visible without downloading them
   again: a .pth file in the fresh site-packages lists this interpreter's
   site-packages. A .pth line only appends a directory to sys.path; .pth files
   inside that directory (the editable install's finder among them) are not
   processed, so `import diffusion_core` finds the wheel's copy and only it.

Run it with the interpreter whose site-packages hold the dependencies (.venv's).
The sdist and wheel are left in TARGET_DIR/dist. Progress goes to stderr and the
fresh venv's python path alone to stdout.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import sysconfig
import tarfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
PACKAGE = "diffusion_core"
PTH_NAME = "_deps_from_build_env.pth"


def _log(*args: object) -> None:
    print(*args, file=sys.stderr, flush=True)


def _run(cmd: list[str], **kwargs) -> None:
    """Run quietly; on failure show the command's output and raise."""
    cmd = [str(c) for c in cmd]
    _log("$", " ".join(cmd))
    done = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, **kwargs)
    if done.returncode:
        _log(done.stdout)
        raise subprocess.CalledProcessError(done.returncode, cmd, done.stdout)


def _source_files(repo: Path) -> list[Path]:
    """Relative paths of the top-level files and of PACKAGE/, as git sees the working tree
    (tracked or untracked-but-not-ignored, and present on disk); without git, a plain walk."""
    try:
        out = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
                             cwd=repo, check=True, capture_output=True).stdout.decode()
        listed = [Path(p) for p in out.split("\0") if p]
    except (OSError, subprocess.CalledProcessError):
        listed = [p.relative_to(repo) for p in repo.iterdir() if p.is_file()]
        listed += [p.relative_to(repo) for p in (repo / PACKAGE).rglob("*")
                   if p.is_file() and "__pycache__" not in p.parts]
    keep = [p for p in listed if len(p.parts) == 1 or p.parts[0] == PACKAGE]
    return sorted(p for p in keep if (repo / p).is_file())


def build_wheel(out_dir: str | Path, repo: Path = REPO) -> Path:
    """sdist, then wheel from that sdist, into out_dir; returns the wheel's path."""
    out_dir = Path(out_dir).resolve()
    src = out_dir / "src"
    if src.exists():
        shutil.rmtree(src)
    for rel in _source_files(repo):
        (src / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(repo / rel, src / rel)
    dist = out_dir / "dist"
    dist.mkdir(parents=True, exist_ok=True)
    before = set(dist.iterdir())
    _run([sys.executable, "-c", "import sys; from setuptools import build_meta as b; "
          "print(b.build_sdist(sys.argv[1]))", dist], cwd=src)
    sdists = [p for p in set(dist.iterdir()) - before if p.name.endswith(".tar.gz")]
    if len(sdists) != 1:
        raise RuntimeError(f"expected one new sdist in {dist}, got {sdists}")
    with tarfile.open(sdists[0]) as tar:  # fail here, not later, if the build wrote nothing useful
        if not any(m.name.endswith("/pyproject.toml") for m in tar.getmembers()):
            raise RuntimeError(f"{sdists[0]} has no pyproject.toml")
    _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index",
          "--disable-pip-version-check", "-q", "-w", dist, sdists[0]], cwd=out_dir)
    wheels = [p for p in set(dist.iterdir()) - before if p.suffix == ".whl"]
    if len(wheels) != 1:
        raise RuntimeError(f"expected one new wheel in {dist}, got {wheels}")
    return wheels[0]


def site_packages(python: str | Path) -> Path:
    out = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                         check=True, capture_output=True, text=True).stdout.strip()
    return Path(out)


def make_venv(venv: str | Path, wheel: str | Path) -> Path:
    """A fresh venv at `venv` with `wheel` installed (no deps) and this interpreter's
    site-packages appended to its sys.path; returns the venv's python."""
    venv = Path(venv).resolve()
    if venv.exists():
        shutil.rmtree(venv)
    _run([sys.executable, "-m", "venv", "--without-pip", venv])
    python = venv / "bin" / "python"
    # this interpreter's pip, run for the fresh interpreter (no pip bootstrap in the venv)
    _run([sys.executable, "-m", "pip", "--python", python, "install", "--no-deps", "--no-index",
          "--disable-pip-version-check", "-q", wheel])
    ours = dict.fromkeys(sysconfig.get_paths()[k] for k in ("purelib", "platlib"))
    (site_packages(python) / PTH_NAME).write_text("".join(f"{p}\n" for p in ours))
    return python


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("target", type=Path, help="directory for src/, dist/ and venv/ (created)")
    args = parser.parse_args(argv)
    args.target.mkdir(parents=True, exist_ok=True)
    wheel = build_wheel(args.target)
    _log(f"wheel: {wheel} ({wheel.stat().st_size} bytes)")
    python = make_venv(args.target / "venv", wheel)
    print(python)
    return 0


if __name__ == "__main__":
    sys.exit(main())
