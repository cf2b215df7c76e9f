#!/usr/bin/env bash
# Run one book chapter against diffusion_core installed from its wheel (as on Colab),
# not against the repo's editable install.
#
#   scripts/test_installed_chapter.sh [book/NN_chapter.ipynb]    # default: chapter 04
#
# Builds the wheel and a fresh venv with scripts/wheel_venv.py (dependencies come from
# $PYTHON's site-packages through a .pth, nothing is downloaded), copies the notebook to a
# temp dir outside the repo, checks that the kernel nbval will start is the fresh venv's
# interpreter and imports diffusion_core from the wheel, then runs
#   <fresh python> -m pytest --nbval-lax -p no:cacheprovider --nbval-current-env <copy>
# from that temp dir. --nbval-current-env makes nbval launch the kernel with the fresh
# python itself, whatever kernelspecs (JUPYTER_PATH, ~/.local/share/jupyter) say about
# the notebook's "python3". Env: PYTHON (default .venv/bin/python), KEEP=1 keeps the temp dir.
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
NOTEBOOK="${1:-book/04_variational_bound.ipynb}"
PYTHON="${PYTHON:-$REPO/.venv/bin/python}"
[[ "$NOTEBOOK" = /* ]] || NOTEBOOK="$REPO/$NOTEBOOK"
[[ -f "$NOTEBOOK" ]] || { echo "no notebook at $NOTEBOOK" >&2; exit 2; }

WORK="$(mktemp -d "${TMPDIR:-/tmp}/installed_chapter.XXXXXX")"
if [[ "${KEEP:-0}" = 1 ]]; then
    echo "keeping $WORK"
else
    trap 'rm -rf "$WORK"' EXIT
fi

start=$SECONDS
VENV_PY="$("$PYTHON" "$REPO/scripts/wheel_venv.py" "$WORK/build")"
VENV="$(dirname "$(dirname "$VENV_PY")")"
echo "fresh venv: $VENV ($((SECONDS - start)) s to build and install the wheel)"

RUN="$WORK/run"
mkdir -p "$RUN"
cp "$NOTEBOOK" "$RUN/"
COPY="$RUN/$(basename "$NOTEBOOK")"
cd "$RUN"
unset PYTHONPATH PYTHONHOME VIRTUAL_ENV

# The kernel nbval starts under --nbval-current-env, started the way nbval starts it (same
# kernelspec manager, same cwd): it must be the fresh python and import the wheel's copy.
"$VENV_PY" - "$VENV" "$REPO" "$RUN" <<'EOF'
import sys
from pathlib import Path

from nbval.kernel import CURRENT_ENV_KERNEL_NAME, RunningKernel

venv, repo, run = (Path(p).resolve() for p in sys.argv[1:4])
code = "import sys, diffusion_core; print(sys.executable); print(diffusion_core.__file__)"
kernel = RunningKernel(CURRENT_ENV_KERNEL_NAME, cwd=str(run))
lines = []
try:
    reply = kernel.kc.execute_interactive(
        code, timeout=120,
        output_hook=lambda m: lines.extend(m["content"].get("text", "").split())
        if m["msg_type"] == "stream" else None)
    assert reply["content"]["status"] == "ok", reply["content"]
finally:
    kernel.stop()
executable, module = (Path(p) for p in lines)
print(f"kernel python: {executable}\nkernel diffusion_core: {module}")
if executable.parent.resolve() != venv / "bin":  # (the file itself links to the base python)
    sys.exit(f"FAIL: the kernel runs {executable}, not the fresh venv's python in {venv}")
if not module.resolve().is_relative_to(venv):
    sys.exit(f"FAIL: the kernel imports diffusion_core from {module}, not from the wheel in {venv}"
             + (" (the repo!)" if module.resolve().is_relative_to(repo) else ""))
EOF

start=$SECONDS
"$VENV_PY" -m pytest --nbval-lax -p no:cacheprovider --nbval-current-env "$COPY"
echo "chapter $(basename "$NOTEBOOK") passed against the installed wheel in $((SECONDS - start)) s"
