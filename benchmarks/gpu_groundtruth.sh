#!/usr/bin/env bash
# Fine-tune the ground-truth benchmark's StylEx models (the from-plain recipe of `benchmarks/groundtruth.py
# --link-root BASE --stylex-from-plain`) side by side on one lent GPU, for settings the 2-core CPU cannot afford
# (e.g. a larger batch). Explanations and metrics then run on the CPU from the archives, with the command line that
# would have trained them plus `--adopt OUT` (it checks each run's config.json against that command line), e.g.
#   python benchmarks/groundtruth.py --root runs/gt-tint-b64 --link-root runs/gt-tint-base --stylex-from-plain \
#       --include-rgb --steps 3200 --set model.tint_styles=3 --stylex-set cond_rgb=false --stylex-set swap_weight=1.0 \
#       --stylex-set cond_sparsity=0.6 --stylex-set batch_size=64 --threads 2 --adopt OUT
#
# Usage:  bash benchmarks/gpu_groundtruth.sh pack BASE IN        (here: copy what the GPU needs out of a CPU root)
#         bash benchmarks/gpu_groundtruth.sh train IN OUT        (on the GPU machine)
#         GPU_TRAIN_DRY=1 bash benchmarks/gpu_groundtruth.sh train IN OUT   (CPU rehearsal: 2 steps per run)
#   BASE: a groundtruth.py root with unconditioned models (e.g. one made with --plain-only)
#   IN:   per cell <scenario>/seed<k>/{clf/, classifier.json, plain/config.json, plain/weights.safetensors,
#         data.sha256}; the data is re-rendered there from the same seeds by `groundtruth.py --prepare-only` and
#         checked against data.sha256 (the carried folder stays under the device tool's 64 MiB)
#   OUT:  <scenario>-seed<k>.tgz, one per cell (the device tool brings back 8 files at most): the run folder's
#         config.json, weights.safetensors, stats.jsonl, train.log and last sample grid
# Env:  STEPS (default 3200), MINUTES (a wall-clock cap per run, default 7.5), STYLEX_SET (the recipe's overrides,
#       space-separated; default the best recipe's: model.tint_styles=3 cond_rgb=false swap_weight=1.0
#       cond_sparsity=0.6), EXTRA_SET (overrides added to those, e.g. batch_size=64), PYTHON (default python3)
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
export PYTHONPATH=$PWD/src${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1

digest() {  # $1 = a data folder: one sha256 over factors.csv and every image, in name order
    (cd "$1" && find . -type f ! -name synth.json -print0 | LC_ALL=C sort -z | xargs -0 cat | sha256sum | cut -d' ' -f1)
}

if [ "${1:-}" = "pack" ]; then
    BASE=$2 IN=$3
    for cell in "$BASE"/*/seed*; do
        rel=${cell#"$BASE"/}
        mkdir -p "$IN/$rel/plain"
        cp -rL "$cell/clf" "$cell/classifier.json" "$IN/$rel/"
        cp -L "$cell/plain/config.json" "$cell/plain/weights.safetensors" "$IN/$rel/plain/"
        digest "$cell/data" >"$IN/$rel/data.sha256"
        echo "$rel packed"
    done
    du -sh "$IN"
    exit 0
fi
[ "${1:-}" = "train" ] || { sed -n 2,21p "$0"; exit 2; }
IN=$(cd "$2" && pwd) OUT=$3
mkdir -p "$OUT"
WORK=$(mktemp -d -t stylex-gpu-gt.XXXXXX)
if [ "${GPU_TRAIN_DRY:-0}" = "1" ]; then
    DEVICE=cpu LIMIT=(--max-steps 2 --set log_every=1)
    export OMP_NUM_THREADS=1
else
    DEVICE=cuda LIMIT=(--max-steps "${STEPS:-3200}" --max-minutes "${MINUTES:-7.5}")
    nvidia-smi -L || exit 1
fi
"$PY" -c "import torch; print('torch', torch.__version__, 'cuda', torch.cuda.is_available())"
SETS=()
for kv in ${STYLEX_SET:-model.tint_styles=3 cond_rgb=false swap_weight=1.0 cond_sparsity=0.6} ${EXTRA_SET:-}; do
    SETS+=(--set "$kv")
done

mapfile -t CELLS < <(cd "$IN" && ls -d -- */seed* | sort)
SCEN=$(printf '%s\n' "${CELLS[@]}" | cut -d/ -f1 | sort -u | tr '\n' ' ')
SEEDS=$(printf '%s\n' "${CELLS[@]}" | cut -d/ -f2 | sed 's/seed//' | sort -u | tr '\n' ' ')
# shellcheck disable=SC2086  # word lists
"$PY" benchmarks/groundtruth.py --root "$IN" --prepare-only --scenarios $SCEN --seeds $SEEDS | grep -v '^$' || exit 1
for cell in "${CELLS[@]}"; do
    got=$(digest "$IN/$cell/data")
    if [ "$got" != "$(cat "$IN/$cell/data.sha256")" ]; then
        echo "$cell: the re-rendered data differ from the CPU root's (sha256 $got); stopping"
        exit 1
    fi
done
echo "data re-rendered: the same as the CPU root's in ${#CELLS[@]} cells"

one() {  # $1 = <scenario>/seed<k>
    local cell=$1 name=${1/\//-} t0=$SECONDS
    local run=$WORK/$name log=$WORK/$name.log
    "$PY" -m stylex train --data "$IN/$cell/data" --classifier "$IN/$cell/clf" --out "$run" --preset shapes-32 \
        --device "$DEVICE" --quiet --init-from "$IN/$cell/plain" --set sample_every=800 --set checkpoint_every=0 \
        "${SETS[@]}" "${LIMIT[@]}" >"$log" 2>&1 || { echo "$name: training failed"; tail -5 "$log"; return 1; }
    local steps
    steps=$(tail -1 "$run/stats.jsonl" | "$PY" -c "import json,sys; print(json.load(sys.stdin).get('step'))")
    echo "$name: trained $steps steps in $((SECONDS - t0)) s"
    mkdir -p "$run/last"
    cp "$(ls "$run"/samples/*.png | tail -1)" "$run/last/"
    cp "$log" "$run/train.log"
    tar czf "$OUT/$name.tgz" -C "$run" config.json weights.safetensors stats.jsonl train.log last
}

for cell in "${CELLS[@]}"; do one "$cell" & done
wait
echo "done in $SECONDS s"
