#!/usr/bin/env bash
# The figures and the shipped folder of one domain, from a finished training run (README "Shipped models").
#
#   benchmarks/ship.sh pepper-64 RUNS/plant/run [RUNS/plant/plain]
#   benchmarks/ship.sh digits-32 RUNS/digits/run [RUNS/digits/plain]
#
# Writes, beside the run: reconstruct/ (held-out consistency, identity, L1), attfind-fast/ and attfind/ (250
# images, fast mode and exact, both bf16; their wall times in timings.txt), random/ and wu/ (baselines on the same
# images; wu-plain/ on the unconditioned model when it is given). Set SKIP_EXACT=1 to leave out the exact AttFind.
# Then ship it by hand, with the figures on its card (the commands are in the card's notes):
#   stylex export RUN --out runs/ship-<name> --name <name> --notes "..." --metric KEY=VALUE ...
#   Z=src/stylex/assets/zoo/<name>   # export does not write into the package's zoo: move the folder in
#   cp $Z/LICENSE.md runs/ship-<name>/ && rm -r $Z && mv runs/ship-<name> $Z
set -euo pipefail
if [ $# -lt 2 ]; then
    echo "usage: benchmarks/ship.sh NAME RUN [PLAIN_RUN]   (env: PY, NUM_IMAGES, NUM_SAMPLES, SKIP_EXACT)" >&2
    exit 2
fi
name=$1 run=$(realpath "$2") plain=${3:+$(realpath "$3")}
cd "$(dirname "$0")/.."  # the repository root, where .venv lies
py=${PY:-.venv/bin/python}
num=${NUM_IMAGES:-250}
samples=${NUM_SAMPLES:-40}
timings=$run/../timings-$name.txt
stylex() { "$py" -m stylex "$@"; }
timed() { local t0; t0=$(date +%s.%N); "$@"; echo "$* : $(echo "$(date +%s.%N) - $t0" | bc) s" | tee -a "$timings"; }

timed stylex reconstruct --model "$run" --out "$run/../reconstruct"
timed stylex attfind --model "$run" --num-images "$num" --fast 50 --bf16 --out "$run/../attfind-fast" --recompute --quiet
if [ -z "${SKIP_EXACT:-}" ]; then
  timed stylex attfind --model "$run" --num-images "$num" --bf16 --out "$run/../attfind" --quiet
fi
timed stylex baseline --model "$run" --method random --num-images "$num" --out "$run/../random"
timed stylex baseline --model "$run" --method wu --num-images "$num" --out "$run/../wu"
if [ -n "$plain" ]; then
  timed stylex baseline --model "$plain" --method wu --num-images "$num" --out "$run/../wu-plain"
fi
