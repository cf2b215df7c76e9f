#!/usr/bin/env bash
# Create bench/.venv, the benchmark's own environment: torch 2.13.0 (the CPU build), the
# two peers at pinned versions, and diffusion_core from this checkout. Idempotent: a stamp
# holding the hash of requirements.txt skips the work when nothing changed.
set -euo pipefail
cd "$(dirname "$0")"
VENV=.venv
STAMP="$VENV/.bench-installed"
WANT="$(cat requirements.txt setup.sh | sha256sum | cut -c1-16)"
if [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$WANT" ]; then
    echo "bench/.venv is up to date"
    exit 0
fi
[ -x "$VENV/bin/python" ] || python3 -m venv "$VENV"
PIP=("$VENV/bin/python" -m pip install --quiet)
# torch first, pinned: an unpinned torch (or one pulled in as a dependency) would be a
# multi-GB CUDA build. Never -U.
"${PIP[@]}" "torch==2.13.0"
# Everything else pinned and without dependency resolution, so nothing can replace torch.
"${PIP[@]}" --no-deps -r requirements.txt
# Our library from this checkout; its import needs only numpy and tqdm (in requirements.txt).
"${PIP[@]}" --no-deps -e ..
PYTHONPATH=. "$VENV/bin/python" -c "
import contenders, torch
import denoising_diffusion_pytorch, diffusers, diffusion_core
import diffusion_core.training, sklearn.svm  # time_to_quality.py: safetensors, scikit-learn
assert torch.__version__.startswith('2.13.0'), torch.__version__
print('bench/.venv ready: torch', torch.__version__, '| diffusers', diffusers.__version__)
"
echo "$WANT" > "$STAMP"
