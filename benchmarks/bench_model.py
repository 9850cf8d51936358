"""Forward+backward throughput of ccoat's CoaT-Lite Tiny against timm's, same weights, one run.

The two models are timed alternately (A, B, A, B, ...) so that whatever else the machine does
affects both alike; the result is the ratio of median times. Target: ccoat/timm throughput ≥ 1.0.

    python benchmarks/bench_model.py [--batch-size 8] [--img-size 224] [--repeats 15] [--threads N]
"""
from __future__ import annotations

import argparse
import json

import timm
import torch

import ccoat
from ccoat import measure
from ccoat.provenance import provenance


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--img-size", type=int, default=224)
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    torch.manual_seed(0)
    reference = timm.create_model("coat_lite_tiny", img_size=args.img_size).train()
    model = ccoat.load_timm_weights(ccoat.create_model("coat_lite_tiny"), reference).train()
    images = torch.randn(args.batch_size, 3, args.img_size, args.img_size)

    med = measure.medians(measure.alternate(
        {"timm": measure.pass_call(reference, images, train=True),
         "ccoat": measure.pass_call(model, images, train=True)}, args.repeats, args.warmup))
    result = {
        "benchmark": "coat_lite_tiny forward+backward, ccoat vs timm",
        "batch_size": args.batch_size, "img_size": args.img_size, "repeats": args.repeats,
        "median_s": med,
        "images_per_s": {k: args.batch_size / v for k, v in med.items()},
        "throughput_ratio_ccoat_over_timm": med["timm"] / med["ccoat"],
        **provenance(command=f"python benchmarks/bench_model.py --batch-size {args.batch_size} "
                             f"--img-size {args.img_size} --repeats {args.repeats}"
                             + (f" --threads {args.threads}" if args.threads else "")),
    }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
