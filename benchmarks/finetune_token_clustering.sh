#!/usr/bin/env bash
# Short fine-tunes of the reference CoaT-Lite Tiny (Imagenette, 128 px) with token clustering:
# for each method at one budget, two epochs (4% of the reference's 50) from its weights with
# the recipe imagenette128-finetune-cpu (lr 1e-4, cosine, bf16 autocast, the 146-px pack in
# memory), then the final weights scored on the whole val split (3,925 images, fp32, with the
# bootstrap interval) into results/<name>/eval.json. The control, CoaT-Lite itself tuned the
# same way, comes first: the reference stopped at epoch 50 of a 70-epoch schedule, so two more
# epochs may move it too, and the clustered models are compared with it.
#
#   python benchmarks/pack_imagenette.py && mkdir -p data/imagenette146 \
#       && tar -xzf data/imagenette146.tar.gz -C data/imagenette146
#   bash benchmarks/finetune_token_clustering.sh            # KEEP=0.25 METHODS="none pool ..."
#   SIZE=96 METHODS=none bash benchmarks/finetune_token_clustering.sh   # the resolution baseline
#   METHODS=grid STAGES="1 2 3" bash benchmarks/finetune_token_clustering.sh
#   KEEP=0.5 METHODS=grid AMP=off bash benchmarks/finetune_token_clustering.sh  # fp32
#
# Each run writes results/imagenette<size>_finetune_<method><keep>/ (run.json, metrics.jsonl,
# eval.json with per-image predictions, model.safetensors); last.pt stays out of git. A run
# folder that exists is replaced only with OVERWRITE=1.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
WEIGHTS=${WEIGHTS:-results/imagenette128_gpu_coat_lite_tiny_e70/model.safetensors}
DATA=${DATA:-data/imagenette146}  # the unpacked 146-px pack
FULL=${FULL:-../shared/data}      # the whole val split, for the final score
KEEP=${KEEP:-0.25}
METHODS=${METHODS:-none pool bipartite lsh}
SIZE=${SIZE:-128}                 # image side; the pack's 146 px are cropped to it
STAGES=${STAGES:-1 2}             # the stages that cluster (a name gets _s123 beyond 1 2)
overwrite=()
[ "${OVERWRITE:-0}" = 1 ] && overwrite=(--overwrite)
amp=()                            # AMP=off: float32, for a CPU without native bf16 (no AVX512-BF16
[ -n "${AMP:-}" ] && amp=(--amp "$AMP")  # or AMX), where the recipe's bf16 runs ~10x slower
for method in $METHODS; do
  if [ "$method" = none ]; then
    name=imagenette${SIZE}_finetune_coat_lite_tiny
    clustering=()
  else
    name=imagenette${SIZE}_finetune_${method}$($PY -c "print(round($KEEP * 100))")
    [ "$STAGES" != "1 2" ] && name=${name}_s${STAGES// /}
    # shellcheck disable=SC2206  # the stages are words
    clustering=(--token-clustering "$method" --keep "$KEEP" --token-stages $STAGES)
  fi
  echo "== $name"
  $PY -m ccoat.train --recipe imagenette128-finetune-cpu --init "$WEIGHTS" --data-dir "$DATA" \
    --img-size "$SIZE" "${clustering[@]}" --out "results/$name" "${overwrite[@]}" "${amp[@]}" --no-progress
  $PY -m ccoat.train --eval-only --out "results/$name" --data-dir "$FULL" --batch-size 100 \
    --num-workers 1 --no-progress > /dev/null
  $PY -c "import json,sys; e=json.load(open(sys.argv[1])); print(sys.argv[1], round(e['top1'],1), [round(x,1) for x in e['top1_ci95']])" "results/$name/eval.json"
done
