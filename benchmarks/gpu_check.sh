#!/usr/bin/env bash
# GPU check (issue 8): short StylEx training runs at 64 px and 128 px on one CUDA device, in the plain fp32 path
# and in the fast path (bf16 autocast + channels_last, then also torch.compile), an AttFind pass, and a DDP run
# when the machine has 2 or more GPUs. Prints images/second and the CUDA memory peak of every stage as a table.
# Fits in about 8 minutes on one H100 (each stage is a separate process; compile stages are capped).
#
# Usage:  bash benchmarks/gpu_check.sh                 (on a machine with a CUDA GPU)
#         GPU_CHECK_DRY=1 bash benchmarks/gpu_check.sh (CPU rehearsal: tiny preset, 16 px, a few steps, ~20 s)
# Env:    GPU_CHECK_WORK=DIR  where data, runs and figures.jsonl go (default: a new temporary folder)
#         PYTHON=...          the interpreter (default .venv/bin/python, else python3)
#         GPU_CHECK_RESOLUTIONS="64"  the training resolutions on a GPU (default "64 128"), e.g. for a short lease
#         GPU_CHECK_COMPILE=0  skip the torch.compile stages on a GPU (default 1: run them, a minute or two each)
#         GPU_CHECK_BATCHES="64 128"  also train at these batch sizes (first resolution), each in fp32, bf16 alone,
#                              channels_last alone and both: where bf16 autocast starts to pay (default: none)
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
[ -x "$PY" ] || PY=python3
export PYTHONPATH=$PWD/src${PYTHONPATH:+:$PYTHONPATH}  # a checkout that is not installed (e.g. on a lent GPU)
WORK=${GPU_CHECK_WORK:-$(mktemp -d -t stylex-gpu-check.XXXXXX)}
mkdir -p "$WORK"
FIG="$WORK/figures.jsonl"
: >"$FIG"
STAGE=("$PY" benchmarks/gpu_check_stage.py "$FIG")
FAST=(--set amp=bf16 --set channels_last=true)  # the fast path (the defaults of the presets other than tiny)

if [ "${GPU_CHECK_DRY:-0}" = "1" ]; then
    DEVICE=cpu; PRESET=tiny; RESOLUTIONS="16"; NUM_IMAGES=64; STEPS=6; LOG_EVERY=2; BATCH=8
    CLF_WIDTH=8; ATTFIND_IMAGES=4; COMPILE=0; NPROC=2; BATCHES=${GPU_CHECK_BATCHES:-}
    export OMP_NUM_THREADS=1
else
    DEVICE=cuda; PRESET=plant-64; RESOLUTIONS=${GPU_CHECK_RESOLUTIONS:-"64 128"}; NUM_IMAGES=1024; STEPS=60
    LOG_EVERY=10; BATCH=32; CLF_WIDTH=32; ATTFIND_IMAGES=32; COMPILE=${GPU_CHECK_COMPILE:-1}
    BATCHES=${GPU_CHECK_BATCHES:-}
    NPROC=$("$PY" -c "import torch; print(torch.cuda.device_count())")
    if [ "$NPROC" -lt 1 ]; then
        echo "no CUDA device; run with GPU_CHECK_DRY=1 for the CPU rehearsal" >&2
        exit 1
    fi
fi
"$PY" - <<'EOF'
import platform, torch
name = torch.cuda.get_device_name(0) if torch.cuda.is_available() else f"CPU ({platform.machine()})"
print(f"device: {name}; torch {torch.__version__}; CUDA devices: {torch.cuda.device_count()}")
EOF
echo "work folder: $WORK; preset $PRESET, batch $BATCH, $STEPS steps (images/s over steps $LOG_EVERY..$STEPS)"

train_args() {  # $1 = resolution, $2 = run folder, then extra options; sets ARGS
    local res=$1 out=$2
    shift 2
    ARGS=(train --data "$WORK/data-$res" --classifier "$WORK/clf-$res" --out "$out" --preset "$PRESET"
        --max-steps "$STEPS" --device "$DEVICE" --quiet --set "model.resolution=$res" --set "batch_size=$BATCH"
        --set "log_every=$LOG_EVERY" --set sample_every=0 --set checkpoint_every=0 "$@")
}

for RES in $RESOLUTIONS; do
    echo "--- $RES px: data and classifier"
    "$PY" -m stylex data synth --out "$WORK/data-$RES" --num-images "$NUM_IMAGES" --resolution "$RES" \
        --overwrite --quiet || exit 1
    "$PY" -m stylex train-classifier --data "$WORK/data-$RES" --out "$WORK/clf-$RES" --resolution "$RES" \
        --epochs 1 --width "$CLF_WIDTH" --device "$DEVICE" --quiet || exit 1

    echo "--- $RES px: training"
    train_args "$RES" "$WORK/run-$RES-fp32" --set amp=none --set channels_last=false
    "${STAGE[@]}" "train $RES px fp32" -- "${ARGS[@]}"
    train_args "$RES" "$WORK/run-$RES-bf16" "${FAST[@]}"
    "${STAGE[@]}" "train $RES px bf16+channels_last" -- "${ARGS[@]}"
    if [ "$COMPILE" = "1" ] && [ "$SECONDS" -lt 240 ]; then  # compilation takes a minute or two
        train_args "$RES" "$WORK/run-$RES-compile" "${FAST[@]}" --set compile=true
        timeout 150 "${STAGE[@]}" "train $RES px bf16+channels_last+compile" -- "${ARGS[@]}" ||
            echo "(compile stage failed or ran past 150 s)"
    else
        echo "(compile stage skipped: dry run, or past 240 s)"
    fi
done

RES=${RESOLUTIONS%% *}  # the smallest resolution for the batch sweep, AttFind and DDP
for B in $BATCHES; do
    echo "--- $RES px, batch $B: fp32, bf16, channels_last, both"
    for MODE in "fp32:none:false" "bf16:bf16:false" "channels_last:none:true" "bf16+channels_last:bf16:true"; do
        IFS=: read -r NAME AMP CL <<<"$MODE"
        train_args "$RES" "$WORK/run-$RES-b$B-$NAME" --set "batch_size=$B" --set "amp=$AMP" --set "channels_last=$CL"
        "${STAGE[@]}" "train $RES px batch $B $NAME" -- "${ARGS[@]}"
    done
done

if "$PY" -m stylex attfind --help >/dev/null 2>&1; then
    echo "--- AttFind on the $RES px run"
    HELP=$("$PY" -m stylex attfind --help)
    ARGS=(attfind --model "$WORK/run-$RES-bf16" --num-images "$ATTFIND_IMAGES" --device "$DEVICE" --no-render --quiet)
    case "$HELP" in *--memory-mb*) [ "$DEVICE" = cuda ] && ARGS+=(--memory-mb 16384) ;; esac
    "${STAGE[@]}" "attfind $RES px fp32, $ATTFIND_IMAGES images" -- "${ARGS[@]}" --out "$WORK/attfind-fp32"
    case "$HELP" in *--bf16*)
        "${STAGE[@]}" "attfind $RES px bf16, $ATTFIND_IMAGES images" -- "${ARGS[@]}" --out "$WORK/attfind-bf16" --bf16 ;;
    esac
else
    echo "(no \`stylex attfind\` command in this version: AttFind stage skipped)"
fi

if [ "$NPROC" -ge 2 ]; then
    NPROC=2
    echo "--- $RES px: $NPROC processes with DDP (global batch $BATCH)"
    train_args "$RES" "$WORK/run-$RES-ddp" "${FAST[@]}"
    "$PY" -m torch.distributed.run --standalone --nproc_per_node=$NPROC benchmarks/gpu_check_stage.py "$FIG" \
        "train $RES px bf16+channels_last, DDP x$NPROC" -- "${ARGS[@]}"
else
    echo "(one GPU: DDP stage skipped)"
fi

echo
"$PY" benchmarks/gpu_check_stage.py "$FIG" --table
echo "($SECONDS s in all; figures in $FIG)"
