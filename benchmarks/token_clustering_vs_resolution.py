"""Token clustering against the obvious competitor, a lower resolution: accuracy, MACs and CPU speed.

    python benchmarks/token_clustering_vs_resolution.py [--sections score time]
        [--weights results/imagenette128_gpu_coat_lite_tiny_e70/model.safetensors]
        [--data-dir ../shared/data] [--repeats 5] [--passes 3] [--threads 2]
        [--out results] [--name token_clustering_vs_resolution] [--no-progress]

Every configuration is the reference CoaT-Lite Tiny of Imagenette (128 px) as converted, without
retraining: the same model at 128, 96 and 64 px (the resolution curve), and at 128 px with its
stages 1-2 token-clustered at keep 0.25 by pool, bipartite, lsh and grid, grid on stages 1-3,
and grid at a second budget (keep 0.5).
Each row names the run folder of its 2-epoch fine-tune (``benchmarks/finetune_token_clustering.sh``),
whose ``eval.json`` holds the tuned accuracy.

- ``score``: top-1 on every val image (3,925, or ``--val-subset``), resized and centre-cropped to
  the row's size as ``ccoat.data`` evaluates, with the bootstrap interval and the per-image
  predictions (so the chapter can pair any two rows: ``ccoat.stats.paired_difference``), and
  the MACs of one image counted by ``ccoat.cost.macs``.
- ``time``: CPU images/s of a forward pass at batch 32 and at batch 1, every row in turn within
  each of ``--repeats`` rounds (``ccoat.measure.alternate``; a timed call is ``--passes``
  passes), the median over rounds, and its ratio to 128 px;
  then where the time of one pass at batch 32 goes, per component and stage
  (``ccoat.measure.component_times``, the median of ``--passes`` passes), for CoaT-Lite at
  128 px and the grid rows.

Writes ``OUT/NAME.json`` after every row (atomically); ``--sections time`` keeps the scores of
an existing one.
"""
from __future__ import annotations

import argparse
import copy
import json
import statistics
from functools import partial
from pathlib import Path

import torch

import ccoat
from ccoat import cost, measure
from ccoat import data as cdata
from ccoat.evaluate import eval_json, evaluate
from ccoat.provenance import output_folder, provenance, write_atomic
from ccoat.weights import load_weights, read_metadata

WEIGHTS = "results/imagenette128_gpu_coat_lite_tiny_e70/model.safetensors"
# name: (image side, token clustering method or None, keep, stages, tuned run folder)
CONFIGS = {
    "coat_lite 128": (128, None, 1.0, (), "imagenette128_finetune_coat_lite_tiny"),
    "coat_lite 96": (96, None, 1.0, (), "imagenette96_finetune_coat_lite_tiny"),
    "coat_lite 64": (64, None, 1.0, (), "imagenette64_finetune_coat_lite_tiny"),
    "pool 0.25": (128, "pool", 0.25, (1, 2), "imagenette128_finetune_pool25"),
    "bipartite 0.25": (128, "bipartite", 0.25, (1, 2), "imagenette128_finetune_bipartite25"),
    "lsh 0.25": (128, "lsh", 0.25, (1, 2), "imagenette128_finetune_lsh25"),
    "grid 0.25": (128, "grid", 0.25, (1, 2), "imagenette128_finetune_grid25"),
    "grid 0.25 stages 1-3": (128, "grid", 0.25, (1, 2, 3), "imagenette128_finetune_grid25_s123"),
    "grid 0.5": (128, "grid", 0.5, (1, 2), "imagenette128_finetune_grid50"),
}


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], allow_abbrev=False)
    p.add_argument("--sections", nargs="+", choices=("score", "time"), default=["score", "time"])
    p.add_argument("--weights", default=WEIGHTS)
    p.add_argument("--data-dir", default=None, help="holds imagenette/ (None: $CCOAT_DATA)")
    p.add_argument("--configs", nargs="+", choices=list(CONFIGS), default=list(CONFIGS))
    p.add_argument("--val-subset", type=int, default=0, help="a fixed random subset of val "
                   "(seed 0); 0: all 3,925 images")
    p.add_argument("--repeats", type=int, default=5, help="timed rounds (every row once each)")
    p.add_argument("--passes", type=int, default=3, help="forward passes per row per round")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--out", type=output_folder, default="results", help="the folder of the results file")
    p.add_argument("--name", default="token_clustering_vs_resolution",
                   help="the results file's stem: OUT/NAME.json")
    p.add_argument("--progress", action=argparse.BooleanOptionalAction, default=True,
                   help="a progress bar per row while scoring")
    args = p.parse_args(argv)
    if args.repeats < 1 or args.passes < 1 or args.threads < 1 or args.val_subset < 0:
        p.error(f"--repeats, --passes and --threads must be >= 1 and --val-subset >= 0, got "
                f"{args.repeats}, {args.passes}, {args.threads} and {args.val_subset}")
    if "score" not in args.sections and not results_file(args).is_file():
        p.error(f"--sections time keeps the scores of OUT/NAME.json, but {results_file(args)} "
                f"does not exist")
    return args


def results_file(args) -> Path:
    return Path(args.out) / f"{args.name}.json"


def build(base, name):
    _, method, keep, stages, _ = CONFIGS[name]
    model = copy.deepcopy(base)
    if method is not None:
        ccoat.cluster_tokens(model, method, keep=keep, stages=stages)
    return model.eval()


def val_loader(size, args):
    _, val, _ = cdata.build_datasets("imagenette", args.data_dir, img_size=size)
    val = cdata.subset(val, args.val_subset or None, seed=0)
    return cdata.make_loader(val, 100, train=False, num_workers=1)


def score(record, models, args, write):
    for name, model in models.items():
        size, method, keep, stages, run = CONFIGS[name]
        result = evaluate(model, val_loader(size, args), interval=True, progress=args.progress,
                          desc=name)
        record["rows"].append({
            "config": name, "img_size": size, "method": method, "keep": keep,
            "stages": list(stages), "tuned_run": run, "top1": result["top1"],
            "top1_ci95": result["top1_ci95"], "macs": cost.macs(model, size)["total"],
            "predictions": result["predictions"], "labels": result["labels"]})
        print(f"{name:>22}: top-1 {result['top1']:.2f}", flush=True)
        write()


def time_rows(record, models, args, write):
    for batch in (32, 1):
        inputs = {size: torch.randn(batch, 3, size, size, generator=torch.Generator().manual_seed(0))
                  for size in {CONFIGS[name][0] for name in models}}

        def passes(model, x):
            with torch.inference_mode():
                for _ in range(args.passes):
                    model(x)

        times = measure.alternate({name: partial(passes, model, inputs[CONFIGS[name][0]])
                                   for name, model in models.items()}, args.repeats, warmup=1)
        rows = {row["config"]: row for row in record["rows"]}
        for name in models:
            rows[name][f"images_per_s_batch{batch}"] = (
                batch * args.passes / statistics.median(times[name]))
        reference = rows["coat_lite 128"][f"images_per_s_batch{batch}"]
        for row in rows.values():
            if f"images_per_s_batch{batch}" in row:
                row[f"speedup_batch{batch}"] = row[f"images_per_s_batch{batch}"] / reference
        write()
    for name in ["coat_lite 128"] + [n for n in models if CONFIGS[n][1] == "grid"]:
        times = measure.component_times(models[name], CONFIGS[name][0], 32,
                                         repeats=args.passes)
        row = next(row for row in record["rows"] if row["config"] == name)
        row["component_seconds_batch32"] = {f"{c}/{st}": t for (c, st), t in times.items()}
        write()


def main(argv=None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    meta = read_metadata(args.weights)
    base = load_weights(ccoat.create_model(meta["model"], num_classes=meta["num_classes"],
                                           img_size=meta["img_size"]), args.weights).eval()
    models = {name: build(base, name) for name in args.configs}
    out = results_file(args)
    record = {"provenance": provenance(weights=args.weights, weights_metadata=meta,
                                       dataset="Imagenette val (../shared/data), resized and "
                                               "centre-cropped to each row's size",
                                       settings=vars(args)),
              "rows": []}
    if "score" not in args.sections:
        earlier = json.loads(out.read_text())
        record["rows"] = [{k: v for k, v in row.items() if "batch" not in k}
                          for row in earlier["rows"]]
        record["provenance"]["scores_from"] = earlier["provenance"]

    def write():  # each row's per-image lists on one line each
        head = json.dumps({"provenance": record["provenance"]}, indent=1)[:-2]
        rows = ",\n".join(eval_json(row).rstrip("\n") for row in record["rows"])
        out.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(out, f'{head},\n "rows": [\n{rows}\n]}}\n')

    if "score" in args.sections:
        score(record, models, args, write)
    if "time" in args.sections:
        if "coat_lite 128" not in models:
            raise SystemExit("error: --sections time needs the row 'coat_lite 128' (the "
                             "reference of every ratio) among --configs")
        time_rows(record, models, args, write)
    for row in record["rows"]:
        speed = "  ".join(f"x{row[k]:.2f} (b{k[-2:].lstrip('h')})" for k in
                          ("speedup_batch32", "speedup_batch1") if k in row)
        print(f"{row['config']:>22}: top-1 {row['top1']:.2f}  MMACs {row['macs'] / 1e6:7.1f}  {speed}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
