#!/usr/bin/env bash
# One equal-GPU-time run of the training chapter (issue 14), as run on the lent GPU machine:
#   bash benchmarks/gpu_train_budget.sh MODEL OUT [DATA_TAR]
# trains MODEL with the recipe "cifar10-gpu-budget" (ccoat/recipes.py) into OUT, scores the last
# checkpoint on all 10,000 test images (eval.json, with a bootstrap interval), and --eval-only
# writes the weights in half precision (model.safetensors). DATA_TAR (default
# data/cifar10.tar.gz) is the CIFAR-10 (JPEG copy) folder packed with `tar czf data/cifar10.tar.gz -C ../shared/data cifar10`.
set -euo pipefail
model=$1; out=$2; tarball=${3:-data/cifar10.tar.gz}
root=$(mktemp -d)
tar xzf "$tarball" -C "$root"
export PYTHONUNBUFFERED=1
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
python3 -m ccoat.train --recipe cifar10-gpu-budget --model "$model" --data-dir "$root" \
    --out "$out" --no-progress ${EXTRA_ARGS:-}
python3 -m ccoat.train --eval-only --resume "$out/last.pt" --data-dir "$root" --batch-size 1000 \
    --num-workers 8 --no-progress --out "$out" > /dev/null
