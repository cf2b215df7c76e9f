#!/usr/bin/env bash
# The whole benchmark, one command: set up bench/.venv, race the three libraries' default
# recipes to good digits at equal training budgets, time every contender, profile the
# 1x28x28 ones (on one thread), measure the quality yardstick of the shipped digits models,
# and write bench/time_to_quality.json, results.json, profile.json, quality.json (+ their
# PNGs) and RESULTS.md. 34.7 minutes on 2 cores on 2026-12-03 (time to quality 19, of it 15
# training; speed 4.4, profile 1, quality 10); longer on a slower or shared machine (about
# 42 at the 1.4x slower speed of that afternoon).
#   bash bench/run.sh                   everything
#   bash bench/run.sh quick             a smoke run in about 10 minutes: time to quality
#                                       --quick, one round of speed at 1x28x28, the report;
#                                       all written to bench/quick/ (git-ignored), so the
#                                       committed results stay as they are
#   bash bench/run.sh quality           only the quality yardstick (then the report)
#   bash bench/run.sh --rounds 1 ...    extra arguments go to speed.py
set -euo pipefail
cd "$(dirname "$0")"
MODE=all
case "${1:-}" in
    quality) MODE=quality; shift ;;
    quick) MODE=quick; shift ;;
esac
OUT=.
if [ "$MODE" = quick ]; then OUT=quick; mkdir -p "$OUT"; fi
if [ "$MODE" != quality ]; then
    bash setup.sh
    export OMP_NUM_THREADS=2 MKL_NUM_THREADS=2  # the same thread count for every contender
    PY=.venv/bin/python
    if [ "$MODE" = quick ]; then
        $PY time_to_quality.py --quick --threads 2 --out "$OUT/time_to_quality.json" \
            --command "bash bench/run.sh quick"
        $PY speed.py --threads 2 --rounds 1 --steps 1 --sample-steps 2 --shapes 1x28x28 --out "$OUT/results.json" \
            --command "bash bench/run.sh quick"
    else
        $PY time_to_quality.py --threads 2 --command "bash bench/run.sh${*:+ $*}"
        $PY speed.py --threads 2 --command "bash bench/run.sh${*:+ $*}" "$@"
        $PY profile_ops.py --threads 1  # one thread: see profile_ops.py
    fi
fi
# The quality yardstick and the report need diffusion_core's own dependencies
# (scikit-learn, safetensors, matplotlib): the project's environment, which `make install`
# sets up.
make -C .. --no-print-directory install
if [ -n "${VIRTUAL_ENV:-}" ]; then PROJECT_PY=python; else PROJECT_PY="$(cd .. && pwd)/.venv/bin/python"; fi
if [ "$MODE" != quick ]; then "$PROJECT_PY" quality.py --threads 2; fi
# quick: only what the quick run measured (no profile.json or quality.json in quick/)
"$PROJECT_PY" report.py --ttq "$OUT/time_to_quality.json" --results "$OUT/results.json" \
    --profile "$OUT/profile.json" --quality "$OUT/quality.json" --out "$OUT/RESULTS.md"
