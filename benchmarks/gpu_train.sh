#!/usr/bin/env bash
# Train several StylEx models side by side on one lent GPU for a fixed wall-clock budget, export each, and pack
# each exported model with its training log into one archive (what the device tool brings back). AttFind and the
# figures are then computed on the CPU from the archives (README "Shipped models").
#
# Usage:  bash benchmarks/gpu_train.sh IN OUT [SPECS]             (on a machine with a CUDA GPU)
#         GPU_TRAIN_DRY=1 bash benchmarks/gpu_train.sh IN OUT [SPECS]  (CPU rehearsal: 2 steps per run)
#   IN:  a folder with the data and classifiers the specs name (for the default specs: plantvillage-pepper-64.npz,
#        digits-32.npz, plant-clf/ and digits-clf/, the classifiers of `stylex train-classifier`)
#   OUT: where NAME.tgz (the exported model, stats.jsonl, config.json, the last sample grid) and NAME.log go
#   SPECS: a file of runs, one per line, `name|data|classifier|preset|options` (data and classifier relative to
#        IN; @IN@ in the options stands for IN, e.g. `--init-from @IN@/digits-run`; a `--max-steps N` there is that
#        run's own step budget, except in the rehearsal; # starts a comment); default:
#        the four runs of the session-4 call listed below (benchmarks/gpu_specs/ keeps those of later calls).
# Measured 2026-11-26 on one H100 (torch 2.11), the four runs below side by side for 6 minutes: pepper-64 3,490-3,670
# steps each (~0.1 s/step, 16 images), digits-32 4,300 steps; the whole call took 391 s plus about a minute to
# start. (On the 2-core CPU machine one pepper-64 run alone makes 0.6-0.9 s/step.)
# Continue a run later with `stylex train --data D --classifier C --out RUN --resume --max-minutes M`.
# Env:  GPU_MINUTES (training minutes of each run, default 6), GPU_STEPS (also a step budget: the run stops at
#       whichever comes first), PYTHON (default python3), RUNS (the names to train,
#       default all of those below), GPU_EVAL (N > 0: after the export, AttFind --fast 50 --bf16 on N images of
#       the run's data and `stylex evaluate` on the same device; NAME.tgz then holds attfind/ and eval/ too).
set -uo pipefail
cd "$(dirname "$0")/.."
IN=$(cd "$1" && pwd) OUT=$2 SPEC_FILE=${3:-}
PY=${PYTHON:-python3}
export PYTHONPATH=$PWD/src${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1
mkdir -p "$OUT"
WORK=$(mktemp -d -t stylex-gpu-train.XXXXXX)
if [ "${GPU_TRAIN_DRY:-0}" = "1" ]; then
    DEVICE=cpu BUDGET=(--set log_every=1) LAST=(--max-steps 2)  # LAST comes after a spec's own --max-steps: it wins
    export OMP_NUM_THREADS=1
else
    DEVICE=cuda BUDGET=(--max-minutes "${GPU_MINUTES:-6}") LAST=()
    [ -n "${GPU_STEPS:-}" ] && BUDGET+=(--max-steps "$GPU_STEPS")  # whichever comes first
    nvidia-smi -L || exit 1
fi
"$PY" -c "import torch; print('torch', torch.__version__, 'cuda', torch.cuda.is_available())"

# name | data | classifier | preset | options
SPECS=(
    "pepper-sparse05|plantvillage-pepper-64.npz|plant-clf|plant-64|--set cond_rgb=false --set cond_sparsity=0.05"
    "pepper-sparse15|plantvillage-pepper-64.npz|plant-clf|plant-64|--set cond_rgb=false --set cond_sparsity=0.15"
    "pepper-control|plantvillage-pepper-64.npz|plant-clf|plant-64|"
    "digits-sparse05|digits-32.npz|digits-clf|mnist-32|--set cond_rgb=false --set cond_sparsity=0.05"
)

if [ -n "$SPEC_FILE" ]; then
    mapfile -t SPECS < <(sed -e 's/#.*//' -e '/^[[:space:]]*$/d' "$SPEC_FILE")
fi

one() {  # $1 = spec
    local name data clf preset opts
    IFS='|' read -r name data clf preset opts <<<"$1"
    case " ${RUNS:-$name} " in *" $name "*) ;; *) return 0 ;; esac
    local run=$WORK/$name log=$OUT/$name.log t0=$SECONDS
    opts=${opts//@IN@/$IN}
    # shellcheck disable=SC2086  # opts is a list of words
    "$PY" -m stylex train --data "$IN/$data" --classifier "$IN/$clf" --out "$run" --preset "$preset" \
        --device "$DEVICE" --quiet "${BUDGET[@]}" --set sample_every=1000 --set checkpoint_every=0 $opts "${LAST[@]}" \
        >"$log" 2>&1 || { echo "$name: training failed (see $name.log)"; tail -5 "$log"; return 1; }
    local steps
    steps=$(tail -1 "$run/stats.jsonl" | "$PY" -c "import json,sys; print(json.load(sys.stdin).get('step'))")
    echo "$name: trained $steps steps in $((SECONDS - t0)) s"
    "$PY" -m stylex export "$run" --out "$run-export" --name "$name" --num-samples 40 --device "$DEVICE" \
        --notes "GPU run: $preset $opts, ${BUDGET[*]} on $(nvidia-smi --query-gpu=name --format=csv,noheader 2>/dev/null || echo cpu)" \
        >>"$log" 2>&1 || { echo "$name: export failed"; tail -5 "$log"; return 1; }
    mkdir -p "$run/last"
    cp "$(ls "$run"/samples/*.png | tail -1)" "$run/last/"
    local extra=()
    if [ "${GPU_EVAL:-0}" -gt 0 ]; then
        local n=$GPU_EVAL
        [ "${GPU_TRAIN_DRY:-0}" = "1" ] && n=4
        { "$PY" -m stylex attfind --model "$run-export/stylex" --data "$IN/$data" --num-images "$n" --fast 50 --bf16 \
              --out "$run/attfind" --quiet --no-render --device "$DEVICE" &&
          "$PY" -m stylex evaluate --model "$run-export/stylex" --attributes "$run/attfind" --out "$run/eval" \
              --device "$DEVICE"; } >>"$log" 2>&1 && extra=("$name/attfind" "$name/eval") || echo "$name: evaluation failed"
        echo "$name: $(grep -h -e '^attfind on' -e '^sufficiency@K' "$log" | tr '\n' ' ')"
    fi
    tar czf "$OUT/$name.tgz" -C "$WORK" "$name-export" "$name/stats.jsonl" "$name/config.json" "$name/last" "${extra[@]}"
    echo "$name: $(du -h "$OUT/$name.tgz" | cut -f1) packed"
}

for spec in "${SPECS[@]}"; do one "$spec" & done
wait
echo "done in $SECONDS s"
