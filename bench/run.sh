#!/usr/bin/env bash
# The whole benchmark, one command: set up bench/.venv, time every contender, profile the
# 1x28x28 ones (on one thread), write bench/results.json, bench/profile.json and bench/RESULTS.md.
# About 10 minutes on an idle 2-core CPU; longer when the machine is shared.
# Extra arguments go to speed.py, e.g.: bash bench/run.sh --rounds 1 --steps 1
set -euo pipefail
cd "$(dirname "$0")"
bash setup.sh
export OMP_NUM_THREADS=2 MKL_NUM_THREADS=2  # the same thread count for every contender
PY=.venv/bin/python
$PY speed.py --threads 2 --command "bash bench/run.sh $*" "$@"
$PY profile_ops.py --threads 1  # one thread: see profile_ops.py
$PY report.py
