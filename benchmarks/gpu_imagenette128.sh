#!/usr/bin/env bash
# The Imagenette reference runs of issues 13 and 15 on a lent GPU machine, in one call:
#   bash benchmarks/gpu_imagenette128.sh [SECONDS] [OUT]
# SECONDS (default 480) bounds the whole script; OUT (default $OUT) receives one tar per run
# (run.json, metrics.jsonl, model.safetensors, train.log: last.pt stays behind) and the timings.
#  1. the training images/s of the four configurations and the forward images/s of every
#     token clustering method and budget, in turn on the quiet GPU
#     (benchmarks/token_clustering_gpu.py --sections train forward);
#  2. from them, the number of epochs E that four runs take one after another in the time
#     left (they run side by side, so they end sooner), and the four runs of recipe
#     imagenette128-gpu for E epochs: CoaT-Lite Tiny, Clustering CoaT Tiny, and CoaT-Lite Tiny
#     with its stages 1 and 2 on tokens clustered by pool and by lsh at keep 0.25;
#     a run still going at the deadline is stopped (its last checkpoint is kept);
#  3. the compiled forward timings, if time is left;
#  4. --eval-only on each run's last checkpoint (the packed val subset) writes its
#     model.safetensors.
# The data: data/imagenette146.tar.gz from benchmarks/pack_imagenette.py, named in `carry`.
# A dry run on a CPU: TRAIN_ARGS, TIMING_ARGS and EVAL_ARGS are added to the three commands
# (e.g. TRAIN_ARGS="--device cpu --train-subset 64 --steps-per-epoch 2 --batch-size 16").
set -uo pipefail
budget=${1:-480}; out=${2:-${OUT:-/tmp/out}}
deadline=$((SECONDS + budget))
export PYTHONUNBUFFERED=1 PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
mkdir -p "$out" runs
root=$(mktemp -d)
tar xzf data/imagenette146.tar.gz -C "$root" || exit 1
log="$out/session.log"
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader | tee -a "$log"

timings="$out/token_clustering_gpu.json"
python3 benchmarks/token_clustering_gpu.py --sections train forward --train pool:0.25 lsh:0.25 \
    --repeats 3 --passes 3 --out "$out" --name token_clustering_gpu ${TIMING_ARGS:-} 2>&1 \
    | tee -a "$log"

declare -A options=(
    [imagenette128_gpu_coat_lite_tiny]="--model coat_lite_tiny"
    [imagenette128_gpu_ccoat_lite_tiny]="--model ccoat_lite_tiny"
    [imagenette128_gpu_coat_lite_tiny_pool25]="--model coat_lite_tiny --token-clustering pool --keep 0.25"
    [imagenette128_gpu_coat_lite_tiny_lsh25]="--model coat_lite_tiny --token-clustering lsh --keep 0.25"
)
reserve=${RESERVE:-40}  # seconds kept for scoring and packing
epochs=$(python3 - "$timings" $((deadline - SECONDS - reserve)) <<'PY'
import json, sys
rows = json.load(open(sys.argv[1]))["train"]["rows"]
seconds = float(sys.argv[2]) - 30  # start-up of four processes
per_epoch = sum(9469 / r["images_per_s"] * 1.1 for r in rows)  # + val and the epoch's overhead
print(max(1, min(100, int(seconds / per_epoch))))
PY
)
echo "epochs: $epochs ($((deadline - SECONDS)) s left)" | tee -a "$log"
pids=()
for name in "${!options[@]}"; do
    python3 -m ccoat.train --recipe imagenette128-gpu --epochs "$epochs" --data-dir "$root" \
        --num-workers 4 --no-progress --out "runs/$name" ${options[$name]} ${TRAIN_ARGS:-} \
        > "runs/$name.log" 2>&1 &
    pids+=($!)
done
while (( SECONDS < deadline - reserve + 20 )) && kill -0 "${pids[@]}" 2>/dev/null; do
    sleep 5
    alive=0; for p in "${pids[@]}"; do kill -0 "$p" 2>/dev/null && alive=$((alive + 1)); done
    (( alive == 0 )) && break
done
for p in "${pids[@]}"; do kill -0 "$p" 2>/dev/null && { echo "stopping $p at the deadline" | tee -a "$log"; kill -INT "$p"; }; done
wait
for name in "${!options[@]}"; do tail -n 3 "runs/$name.log" | tee -a "$log"; done

if (( deadline - SECONDS > 70 )); then
    timeout $((deadline - SECONDS - 30)) python3 benchmarks/token_clustering_gpu.py \
        --sections compiled --repeats 3 --passes 3 --out "$out" --name token_clustering_gpu_compiled \
        ${TIMING_ARGS:-} 2>&1 | tee -a "$log"
fi
for name in "${!options[@]}"; do
    [ -f "runs/$name/last.pt" ] && python3 -m ccoat.train --eval-only --resume "runs/$name/last.pt" \
        --data-dir "$root" --batch-size 500 --num-workers 3 --no-progress --out "runs/$name" \
        ${EVAL_ARGS:-} > /dev/null 2>>"$log" &
done
wait
for name in "${!options[@]}"; do
    cp "runs/$name.log" "runs/$name/train.log"
    tar cf "$out/$name.tar" --exclude=last.pt -C runs "$name"
done
ls -la "$out" | tee -a "$log"
