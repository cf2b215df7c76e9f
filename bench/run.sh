#!/usr/bin/env bash
# The whole benchmark, one command: set up bench/.venv, time every contender, profile the
# 1x28x28 ones (on one thread), measure the quality yardstick of the shipped digits models,
# and write bench/results.json, profile.json, quality.json (+ quality.png) and RESULTS.md.
# About 25 minutes on an idle 2-core CPU; longer when the machine is shared.
#   bash bench/run.sh                   everything
#   bash bench/run.sh quality           only the quality yardstick (then the report)
#   bash bench/run.sh --rounds 1 ...    extra arguments go to speed.py
set -euo pipefail
cd "$(dirname "$0")"
ONLY_QUALITY=0
if [ "${1:-}" = "quality" ]; then ONLY_QUALITY=1; shift; fi
if [ "$ONLY_QUALITY" = 0 ]; then
    bash setup.sh
    export OMP_NUM_THREADS=2 MKL_NUM_THREADS=2  # the same thread count for every contender
    PY=.venv/bin/python
    $PY speed.py --threads 2 --command "bash bench/run.sh${*:+ $*}" "$@"
    $PY profile_ops.py --threads 1  # one thread: see profile_ops.py
fi
# The quality yardstick needs diffusion_core's own dependencies (scikit-learn, safetensors,
# matplotlib): the project's environment, which `make install` sets up.
make -C .. --no-print-directory install
if [ -n "${VIRTUAL_ENV:-}" ]; then PROJECT_PY=python; else PROJECT_PY="$(cd .. && pwd)/.venv/bin/python"; fi
"$PROJECT_PY" quality.py --threads 2
"$PROJECT_PY" report.py
