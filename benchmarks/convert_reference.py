"""ACT's experiment on the Imagenette reference model: convert a trained CoaT-Lite to every
attention kind without retraining, and sweep the bucket width of clustered_factorized.

    python benchmarks/convert_reference.py [--run imagenette128_cpu_coat_lite_tiny]
        [--val-subset 1000] [--widths 0.25 0.5 1 2 4 8] [--threads 1]
        [--out results/RUN] [--name conversion] [--no-progress]

Loads the committed run's weights (``CommittedRun.load_model``), and for each attention kind,
then for each bucket width, scores a copy on a fixed random subset of Imagenette's val split
(seed 0; ``--val-subset 0``: all 3,925 images) with ``ccoat.evaluate.evaluate``: top-1 with its
bootstrap 95% interval, top-5, the mean number of clusters per (image, head) row of each stage,
and forward images/s on this machine (the kinds run one after another, so their speeds are
comparable only on a quiet machine; the chapter's cost sweeps are the timing reference).
Hash projections are drawn with seed 0. Writes ``OUT/NAME.json`` after every configuration
(atomically), so an interrupted run keeps what it measured, and an existing file's rows are kept
and not redone.
"""

import argparse
import copy
import json
from pathlib import Path

import torch

import ccoat
from ccoat import data as cdata
from ccoat.evaluate import evaluate
from ccoat.model import CLUSTERED_KINDS
from ccoat.provenance import output_folder, provenance, write_atomic
from ccoat.runfolder import read_run


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], allow_abbrev=False)
    p.add_argument("--run", default="imagenette128_cpu_coat_lite_tiny")
    p.add_argument("--val-subset", type=int, default=1000)
    p.add_argument("--widths", type=float, nargs="+", default=[0.25, 0.5, 1.0, 2.0, 4.0, 8.0])
    p.add_argument("--batch-size", type=int, default=50)
    p.add_argument("--threads", type=int, default=None, help="default: torch's")
    p.add_argument("--data-dir", default=None)
    p.add_argument("--out", type=output_folder, default=None, help="the folder of the results file (default: "
                   "results/RUN)")
    p.add_argument("--name", default="conversion", help="the results file's stem: OUT/NAME.json")
    p.add_argument("--progress", action=argparse.BooleanOptionalAction, default=True,
                   help="a progress bar per configuration")
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)

    run = read_run(args.run)
    if run is None:
        raise SystemExit(f"error: no committed run results/{args.run}")
    reference = run.load_model()
    _, val_set, info = cdata.build_datasets("imagenette", args.data_dir,
                                            img_size=run.run["data"]["img_size"])
    val_set = cdata.subset(val_set, args.val_subset or None, seed=0)
    loader = cdata.make_loader(val_set, args.batch_size, train=False, num_workers=1)
    configs = [dict(kind=kind) for kind in ccoat.ATTENTION_KINDS]
    configs += [dict(kind="clustered_factorized", bucket_width=w) for w in args.widths]

    out = Path(args.out or f"results/{args.run}") / f"{args.name}.json"
    done = json.loads(out.read_text())["rows"] if out.exists() else []
    result = {
        "provenance": provenance(dataset=f"Imagenette val ({len(val_set)} images, seed 0) at "
                                 f"{info.img_size} px", device="cpu"),
        "run": args.run, "weights": f"results/{args.run}/model.safetensors",
        "val_images": len(val_set), "rows": done,
    }
    for config in configs:
        if any({k: r.get(k) for k in config} == config for r in done):
            continue
        options = {k: v for k, v in config.items() if k != "kind"}
        if config["kind"] in CLUSTERED_KINDS:
            options["seed"] = 0
        model = ccoat.convert_attention(copy.deepcopy(reference), config["kind"], **options)
        scored = evaluate(model, loader, "cpu", interval=True, progress=args.progress,
                          desc=json.dumps(config))
        row = {**config, **{k: scored[k] for k in ("top1", "top1_ci95", "top5", "images_per_s")},
               "clusters_per_stage": scored.get("clusters_per_stage")}
        done.append(row)
        out.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(out, json.dumps(result, indent=1) + "\n")
        print(json.dumps(row), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
