"""Token clustering without retraining: accuracy, counted MACs and CPU images/s per method and budget.

    python benchmarks/token_clustering.py [--weights results/gpu_budget_cifar10_coat_lite_tiny_cifar/model.safetensors]
        [--keeps 0.75 0.5 0.25] [--methods pool bipartite lsh] [--scopes block stage]
        [--stages 1 2] [--lsh-seeds 0 1 2] [--repeats 5] [--passes 5] [--threads 2]
        [--out results] [--name token_clustering_cifar10] [--timing-only] [--no-progress]

Loads a trained CoaT-Lite (a committed run's weights: CIFAR-10 at 32 px, or Imagenette at the
size its metadata says, e.g. ``--weights results/imagenette128_gpu_coat_lite_tiny_e70/model.safetensors
--name token_clustering_imagenette128``), converts copies with
``ccoat.token_clustering.cluster_tokens`` for every method and budget, and measures on its
dataset's test or val split (CIFAR-10 (JPEG copy); Imagenette val, resized and centre-cropped):
- top-1 on every test image (or ``--val-subset``), with its bootstrap 95% interval
  (``ccoat.evaluate.evaluate``);
- counted MACs of one image (ccoat.cost.macs: matrix products and convolutions);
- forward images/s on the CPU at batch 32 and batch 1, every configuration timed in turn within
  each of ``--repeats`` rounds (ratios to CoaT-Lite are read within one run), a timed call being
  ``--passes`` forward passes, the median over rounds.
Writes ``OUT/NAME.json`` after every configuration (atomically), so an interrupted run keeps what
it measured. ``--timing-only`` keeps the accuracies and MACs of an existing results file and
times again (on a quieter machine, say); its provenance then records both runs.
"""

import argparse
import copy
import json
import statistics
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import torch

import ccoat
from ccoat import cost, measure
from ccoat import data as cdata
from ccoat.evaluate import evaluate
from ccoat.provenance import output_folder, provenance, write_atomic
from ccoat.token_clustering import cluster_tokens
from ccoat.weights import load_weights, read_metadata


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], allow_abbrev=False)
    p.add_argument(
        "--weights",
        default="results/gpu_budget_cifar10_coat_lite_tiny_cifar/model.safetensors",
    )
    p.add_argument("--keeps", type=float, nargs="+", default=[0.75, 0.5, 0.25])
    p.add_argument("--methods", nargs="+", default=["pool", "bipartite", "lsh"])
    p.add_argument("--scopes", nargs="+", default=["block"], help="block: each block forms its "
                   "clusters; stage: a stage's first block forms them for the stage")
    p.add_argument("--stages", type=int, nargs="+", default=[1, 2])
    p.add_argument("--lsh-seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--repeats", type=int, default=5,
                   help="timed rounds (every configuration once each)")
    p.add_argument("--passes", type=int, default=5,
                   help="forward passes per configuration per round")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--data-dir", default=None)
    p.add_argument("--val-subset", type=int, default=0, help="Imagenette: a fixed random subset "
                   "of val (seed 0); 0: all 3,925 images")
    p.add_argument("--out", type=output_folder, default="results", help="the folder of the results file")
    p.add_argument("--name", default="token_clustering_cifar10",
                   help="the results file's stem: OUT/NAME.json")
    p.add_argument("--timing-only", action="store_true")
    p.add_argument("--progress", action=argparse.BooleanOptionalAction, default=True,
                   help="a progress bar per configuration while scoring")
    args = p.parse_args(argv)
    if args.repeats < 1 or args.passes < 1:
        p.error(f"--repeats and --passes must be at least 1, got {args.repeats} and {args.passes}")
    return args


@dataclass(frozen=True)
class Setup:
    """What the steps of a run share: the parsed flags, the model's image size, the results file."""
    args: argparse.Namespace
    img_size: int
    out: Path  # OUT/NAME.json


def load_base(weights: str):
    """The trained CoaT-Lite in eval mode, its weights' metadata and its image size."""
    meta = read_metadata(weights)
    img_size = meta.get("img_size") or 32
    base = load_weights(
        ccoat.create_model(meta["model"], num_classes=meta["num_classes"], img_size=img_size),
        weights,
    ).eval()
    return base, meta, img_size


def test_split(args: argparse.Namespace, meta: dict, img_size: int):
    """The loader of the weights' dataset's test (or val) split, and its description."""
    if "imagenette" in str(meta.get("dataset", "")).lower():  # the val split, resized and cropped
        _, test_set, info = cdata.build_datasets("imagenette", args.data_dir, img_size=img_size)
        test_set = cdata.subset(test_set, args.val_subset or None, seed=0)
        test = cdata.make_loader(test_set, 100, train=False, num_workers=1)
        return test, f"Imagenette val, {len(test_set)} images at {img_size} px"
    _, test_set, info = cdata.build_datasets("cifar10", args.data_dir)
    test = cdata.device_loader(test_set, info, 500, train=False, device="cpu", num_workers=2)
    return test, f"CIFAR-10 (JPEG copy), all {info.n_val} test images"


def configurations(args: argparse.Namespace) -> dict[str, dict]:
    """CoaT-Lite, then every method x keep (x LSH seed) x scope, by name."""
    configs = {"coat_lite": dict(method=None, keep=1.0, seed=None, scope=None)}
    for method in args.methods:
        for keep in args.keeps:
            for seed in args.lsh_seeds if method == "lsh" else [None]:
                for scope in args.scopes:
                    name = f"{method} keep={keep}" + (
                        f" seed={seed}" if seed is not None else ""
                    ) + (f" scope={scope}" if scope != "block" else "")
                    configs[name] = dict(method=method, keep=keep, seed=seed, scope=scope)
    return configs


def build(base: torch.nn.Module, cfg: dict, stages) -> torch.nn.Module:
    """A copy of ``base`` converted by ``cluster_tokens`` as ``cfg`` says (CoaT-Lite: unchanged)."""
    model = copy.deepcopy(base)
    if cfg["method"]:
        options = {"seed": cfg["seed"]} if cfg["method"] == "lsh" else {}
        cluster_tokens(model, cfg["method"], keep=cfg["keep"], stages=tuple(stages),
                       scope=cfg["scope"], **options)
    return model.eval()


def start_record(setup: Setup, meta: dict, dataset: str) -> dict:
    """The results' provenance; with ``--timing-only``, the earlier file's rows without timings."""
    args = setup.args
    record = {
        "provenance": provenance(
            dataset=dataset,
            weights=args.weights,
            weights_metadata=meta,
            settings=vars(args),
        ),
        "rows": [],
    }
    if args.timing_only:
        earlier = json.loads(setup.out.read_text())
        record["rows"] = [
            {k: v for k, v in row.items() if "batch" not in k} for row in earlier["rows"]
        ]
        record["provenance"]["accuracy_and_macs_from"] = earlier["provenance"]
    return record


def write(record: dict, out: Path) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(out, json.dumps(record, indent=1) + "\n")


def score(setup: Setup, models: dict, configs: dict, test, record: dict) -> None:
    """Top-1 (with its 95% interval) and MACs of every model: a row each, written as it ends."""
    args = setup.args
    for name, model in models.items():
        scored = evaluate(model, test, "cpu", interval=True, progress=args.progress, desc=name)
        record["rows"].append(
            {
                "config": name,
                **configs[name],
                "stages": args.stages,
                "top1": scored["top1"],
                "top1_ci95": scored["top1_ci95"],
                "macs": cost.macs(model, setup.img_size)["total"],
            }
        )
        print(json.dumps(record["rows"][-1]), flush=True)
        write(record, setup.out)


def forward_passes(model: torch.nn.Module, x: torch.Tensor, passes: int) -> None:
    """One timed call: ``passes`` forward passes."""
    for _ in range(passes):
        model(x)


def time_forward(setup: Setup, models: dict, images: torch.Tensor, record: dict) -> None:
    """Images/s and speed-up over CoaT-Lite of every row at batch 32 and 1, every configuration
    in turn each round; written after each batch size."""
    args = setup.args
    with torch.inference_mode():
        for batch in (32, 1):
            x = images[:batch]
            times = measure.alternate(
                {name: partial(forward_passes, model, x, args.passes)
                 for name, model in models.items()},
                args.repeats,
                warmup=1,
            )
            for row in record["rows"]:
                row[f"images_per_s_batch{batch}"] = (
                    batch * args.passes / statistics.median(times[row["config"]])
                )
            reference = record["rows"][0][f"images_per_s_batch{batch}"]
            for row in record["rows"]:
                row[f"speedup_batch{batch}"] = (
                    row[f"images_per_s_batch{batch}"] / reference
                )
            write(record, setup.out)


def print_table(rows: list[dict]) -> None:
    for row in rows:
        print(
            f"{row['config']:>26}: top-1 {row['top1']:.2f} [{row['top1_ci95'][0]:.2f}, "
            f"{row['top1_ci95'][1]:.2f}]  MMACs {row['macs'] / 1e6:7.1f}  "
            f"x{row['speedup_batch32']:.2f} (b32)  x{row['speedup_batch1']:.2f} (b1)"
        )


def main(argv=None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    base, meta, img_size = load_base(args.weights)
    test, dataset = test_split(args, meta, img_size)
    configs = configurations(args)
    setup = Setup(args, img_size, Path(args.out) / f"{args.name}.json")
    record = start_record(setup, meta, dataset)
    models = {name: build(base, cfg, args.stages) for name, cfg in configs.items()}
    if not args.timing_only:
        score(setup, models, configs, test, record)
    time_forward(setup, models, next(iter(test))[0], record)
    print_table(record["rows"])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
