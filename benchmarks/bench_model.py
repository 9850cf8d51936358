"""Forward+backward throughput of ccoat's CoaT-Lite Tiny against timm's, same weights, one run.

The two models are timed alternately (A, B, A, B, ...) so that whatever else the machine does
affects both alike; the result is the ratio of median times. Target: ccoat/timm throughput ≥ 1.0.

    python benchmarks/bench_model.py [--batch-size 8] [--img-size 224] [--repeats 15] [--threads N]
        [--out runs] [--name bench_model]

writes ``OUT/NAME.json`` and prints it.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import timm
import torch

import ccoat
from ccoat import measure
from ccoat.data import parse_img_size
from ccoat.provenance import output_folder, provenance, write_atomic


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0], allow_abbrev=False)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--img-size", type=parse_img_size, default=224, metavar="N")
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None, help="default: torch's")
    parser.add_argument("--out", type=output_folder, default="runs", help="the folder of the results file")
    parser.add_argument("--name", default="bench_model", help="the results file's stem: "
                        "OUT/NAME.json")
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
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
    out = Path(args.out) / f"{args.name}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(out, json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
