"""Training throughput of ccoat's CoaT-Lite Tiny against timm's, and the data loader's share.

1. **Model**: the training step of :func:`ccoat.train.train_step` (AdamW, label-smoothed
   cross-entropy, gradient clipping) on ccoat's ``coat_lite_tiny`` and on timm's, with the same
   weights and the same batch, timed alternately (A, B, B, A, ...) in one run; the result is the
   ratio of median step times (ccoat images/s over timm images/s; target ≥ 0.95).
2. **Loader** (``--loader``): for the cpu-profile CIFAR-10 recipe, the time to produce one
   batch (JPEG decode + augmentation, ``num_workers=0``, so the full cost) against the time of
   one training step of ``coat_lite_tiny_cifar`` on that batch. A loader cheaper than the step
   (by a wide margin, since workers run beside the step) is not the bottleneck.

    python benchmarks/bench_train.py [--batch-size 8] [--img-size 224] [--repeats 10] [--threads N]
    python benchmarks/bench_train.py --loader --data-dir ../shared/data [--loader-batch 128]
        [--out runs] [--name bench_train]

writes ``OUT/NAME.json`` and prints it.
"""
from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import timm
import torch
import torch.nn as nn

import ccoat
from ccoat import data as cdata
from ccoat import measure
from ccoat.provenance import output_folder, provenance, write_atomic
from ccoat.train import param_groups, train_step


def make_step(model: nn.Module, images: torch.Tensor, target: torch.Tensor):
    optimizer = torch.optim.AdamW(param_groups(model, 0.05), lr=1e-4)
    criterion = nn.CrossEntropyLoss(label_smoothing=0.1)

    def step() -> None:
        train_step(model, images, target, optimizer, criterion, clip_grad=1.0)

    return step


def bench_models(args) -> dict:
    torch.manual_seed(0)
    reference = timm.create_model("coat_lite_tiny", img_size=args.img_size).train()
    model = ccoat.load_timm_weights(ccoat.create_model("coat_lite_tiny", img_size=args.img_size),
                                    reference).train()
    images = torch.randn(args.batch_size, 3, args.img_size, args.img_size)
    target = torch.randint(0, 1000, (args.batch_size,))
    steps = {"ccoat": make_step(model, images, target), "timm": make_step(reference, images, target)}
    med = measure.medians(measure.alternate(
        {"timm": steps["timm"], "ccoat": steps["ccoat"]}, args.repeats, args.warmup))
    return {
        "benchmark": "coat_lite_tiny training step (AdamW, clip, label smoothing), ccoat vs timm",
        "batch_size": args.batch_size, "img_size": args.img_size, "repeats": args.repeats,
        "median_step_s": med,
        "images_per_s": {k: args.batch_size / v for k, v in med.items()},
        "throughput_ratio_ccoat_over_timm": med["timm"] / med["ccoat"],
    }


def bench_loader(args) -> dict:
    train, _, info = cdata.build_datasets("cifar10", data_dir=args.data_dir)
    loader = cdata.make_loader(train, args.loader_batch, True, num_workers=0,
                               sampler=torch.utils.data.RandomSampler(train))
    model = ccoat.create_model("coat_lite_tiny_cifar", num_classes=10).train()
    batches, loader_times = iter(loader), []
    for _ in range(args.loader_repeats):
        start = time.perf_counter()
        images, target = next(batches)
        loader_times.append(time.perf_counter() - start)
    step_times = measure.alternate({"step": make_step(model, images, target)},
                                   args.loader_repeats)["step"]
    load, run = statistics.median(loader_times), statistics.median(step_times)
    return {
        "benchmark": "CIFAR-10 (JPEG copy) loader time per batch vs coat_lite_tiny_cifar step",
        "dataset": f"CIFAR-10 (JPEG copy) at {info.source}", "batch_size": args.loader_batch,
        "median_loader_s_per_batch": load, "median_step_s": run, "loader_over_step": load / run,
    }


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0], allow_abbrev=False)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--img-size", type=cdata.parse_img_size, default=224, metavar="N")
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--threads", type=int, default=None, help="default: torch's")
    parser.add_argument("--loader", action="store_true", help="also time the CIFAR-10 loader")
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--loader-batch", type=int, default=128)
    parser.add_argument("--loader-repeats", type=int, default=5)
    parser.add_argument("--out", type=output_folder, default="runs", help="the folder of the results file")
    parser.add_argument("--name", default="bench_train", help="the results file's stem: "
                        "OUT/NAME.json")
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    result = {"model": bench_models(args)}
    if args.loader:
        result["loader"] = bench_loader(args)
    result["provenance"] = provenance(dataset="CIFAR-10 (JPEG copy)" if args.loader else None)
    out = Path(args.out) / f"{args.name}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(out, json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
