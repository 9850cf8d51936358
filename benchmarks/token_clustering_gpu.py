"""Token clustering on a GPU: forward images/s for each method and budget (eager, and compiled
for some), and the training images/s of the configurations trained from scratch.

    python benchmarks/token_clustering_gpu.py [--img-size 128] [--batch-size 256]
        [--keeps 0.75 0.5 0.25] [--repeats 5] [--passes 5] [--compile-keeps 0.5]
        [--train-batch-size 128] [--train pool:0.25 lsh:0.25] [--device auto] [--out results]
        [--name token_clustering_gpu]

Every configuration is CoaT-Lite Tiny (10 classes) at ``--img-size``, randomly initialised (the
times do not depend on the weights: every shape is fixed by the budget), on scikit-learn's two
sample photos repeated to the batch, under bf16 autocast on CUDA (float32 on a CPU). The
configurations of a section run in turn, round after round (``--repeats`` rounds of
``ccoat.measure.alternate``, a timed call being ``--passes`` passes), and each one's speed is
also given as the median over rounds of its ratio to CoaT-Lite's in the same round. Sections,
written to ``OUT/NAME.json`` as each ends:

- ``forward``: CoaT-Lite, Clustering CoaT (the seed's clustered queries), and ``cluster_tokens``
  with each method at each ``--keeps`` (stages 1 and 2), eager;
- ``compiled``: ``torch.compile`` of CoaT-Lite and of each method at ``--compile-keeps`` (compile
  time recorded; a configuration that fails to compile is recorded with its error);
- ``train``: a training step (``ccoat.train.train_step``: forward, cross-entropy, backward,
  AdamW) at ``--train-batch-size`` for CoaT-Lite, Clustering CoaT and each ``METHOD:KEEP`` of
  ``--train`` (the from-scratch runs).
"""

import argparse
import copy
import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

import ccoat
from ccoat import measure
from ccoat.data import parse_img_size, sample_photos
from ccoat.provenance import output_folder, provenance, write_atomic
from ccoat.train import train_step


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], allow_abbrev=False)
    p.add_argument("--img-size", type=parse_img_size, default=128, metavar="N")
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--keeps", type=float, nargs="+", default=[0.75, 0.5, 0.25])
    p.add_argument("--compile-keeps", type=float, nargs="*", default=[0.5])
    p.add_argument("--train-batch-size", type=int, default=128)
    p.add_argument("--train", nargs="*", default=["pool:0.25", "lsh:0.25"])
    p.add_argument("--repeats", type=int, default=5,
                   help="timed rounds (every configuration once each)")
    p.add_argument("--passes", type=int, default=5, help="passes per timed call")
    p.add_argument("--sections", nargs="+", default=["train", "forward", "compiled"])
    p.add_argument("--device", default="auto", help="auto (cuda if there is one), cpu, cuda or "
                   "cuda:N")
    p.add_argument("--out", type=output_folder, default="results", help="the folder of the results file")
    p.add_argument("--name", default="token_clustering_gpu",
                   help="the results file's stem: OUT/NAME.json")
    args = p.parse_args(argv)
    if args.device == "auto":
        args.device = "cuda" if torch.cuda.is_available() else "cpu"
    return args


@dataclass(frozen=True)
class Setup:
    """What the sections share: the parsed flags, where and how to run, the results file."""
    args: argparse.Namespace
    device: torch.device
    dtype: torch.dtype | None  # bf16 autocast on CUDA, None (float32) elsewhere
    sync: Callable[[], None]
    out: Path  # OUT/NAME.json


def make_setup(args: argparse.Namespace) -> Setup:
    device = torch.device(args.device)
    dtype = torch.bfloat16 if device.type == "cuda" else None
    return Setup(args, device, dtype, measure.device_sync(device),
                 Path(args.out) / f"{args.name}.json")


def start_result(setup: Setup) -> dict:
    return {"provenance": provenance(
        dataset="scikit-learn's two sample photos (china.jpg, flower.jpg), repeated to the batch",
        device=str(setup.device)),
        "img_size": setup.args.img_size,
        "precision": "bf16 autocast" if setup.dtype else "float32"}


def build(setup: Setup, method=None, keep=1.0, attention="factorized") -> torch.nn.Module:
    """CoaT-Lite Tiny (seed 0) on the device, converted by ``cluster_tokens`` if ``method``."""
    torch.manual_seed(0)
    model = ccoat.create_model("coat_lite_tiny", num_classes=10, img_size=setup.args.img_size,
                               attention=attention)
    if method is not None:
        model = ccoat.cluster_tokens(model, method, keep=keep)
    return model.to(setup.device)


def configurations(keeps):
    """(name, build options): CoaT-Lite, then every method at every keep it takes."""
    yield "coat_lite", dict()
    for method in ccoat.token_clustering.METHODS:
        for keep in keeps:
            if method == "grid" and abs(1 / keep - round(1 / keep)) > 1e-9:
                continue  # grid clustering takes keep = 1/n
            yield f"{method} keep={keep:g}", dict(method=method, keep=keep)


def forward_call(setup: Setup, model: torch.nn.Module, x: torch.Tensor) -> Callable[[], None]:
    """A timed call: ``--passes`` forward passes under inference mode (and autocast on CUDA)."""
    def call():
        with torch.inference_mode(), torch.autocast(setup.device.type, dtype=setup.dtype,
                                                    enabled=setup.dtype is not None):
            for _ in range(setup.args.passes):
                model(x)
    return call


def train_call(setup: Setup, model: torch.nn.Module, x: torch.Tensor,
               y: torch.Tensor) -> Callable[[], None]:
    """A timed call: ``--passes`` training steps (AdamW, cross-entropy)."""
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    criterion = torch.nn.CrossEntropyLoss()

    def call():
        for _ in range(setup.args.passes):
            train_step(model, x, y, optimizer, criterion, dtype=setup.dtype)
    return call


def timed(setup: Setup, calls: dict, batch: int, extra: dict | None = None) -> dict:
    """The calls in turn, round after round: a section's table (images/s, speed-up over
    CoaT-Lite and any ``extra`` columns, a row per call)."""
    times = measure.alternate(calls, repeats=setup.args.repeats, warmup=1, sync=setup.sync)
    rows = []
    for name, t in measure.medians(times).items():
        rows.append({"config": name, "images_per_s": batch * setup.args.passes / t,
                     "speedup": 1 / measure.round_ratio(times, name, "coat_lite"),
                     **(extra or {}).get(name, {})})
    return {"batch_size": batch, "rows": rows}


def report(setup: Setup, result: dict, section: str, table: dict | None) -> None:
    """Adds a section's table to the results, writes them and prints the table (none: skipped)."""
    if table is None:
        return
    result[section] = table
    setup.out.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(setup.out, json.dumps(result, indent=1))
    print(f"\n{section} (batch {table['batch_size']}, {result['precision']}, {setup.device}):")
    for row in table["rows"]:
        print(f"  {row['config']:<22} {row['images_per_s']:9.0f} images/s  "
              f"{row['speedup']:.2f}x" + (f"  {row['error']}" if row.get("error") else ""))


def time_training(setup: Setup, x: torch.Tensor) -> dict:
    """``train``: CoaT-Lite, Clustering CoaT and each ``--train`` METHOD:KEEP."""
    batch = setup.args.train_batch_size
    xt = x[:batch]
    yt = torch.arange(batch, device=setup.device) % 10
    models = {"coat_lite": build(setup), "clustered": build(setup, attention="clustered")}
    for spec in setup.args.train:
        method, keep = spec.split(":")
        models[f"{method} keep={float(keep):g}"] = build(setup, method, float(keep))
    return timed(setup, {n: train_call(setup, m.train(), xt, yt) for n, m in models.items()},
                 batch)


def time_forward(setup: Setup, x: torch.Tensor) -> dict:
    """``forward``: CoaT-Lite, Clustering CoaT and each method at each ``--keeps``, eager."""
    models = {"coat_lite": build(setup), "clustered": build(setup, attention="clustered")}
    models |= {name: build(setup, **kw) for name, kw in configurations(setup.args.keeps) if kw}
    return timed(setup, {n: forward_call(setup, m.eval(), x) for n, m in models.items()},
                 setup.args.batch_size)


def time_compiled(setup: Setup, x: torch.Tensor) -> dict | None:
    """``compiled``: ``torch.compile`` of CoaT-Lite and each method at ``--compile-keeps``, with
    compile times and errors; None if CoaT-Lite did not compile."""
    calls, extra = {}, {}
    for name, kw in configurations(setup.args.compile_keeps):
        model = torch.compile(copy.deepcopy(build(setup, **kw)).eval())
        start = time.perf_counter()
        try:
            forward_call(setup, model, x)()
            setup.sync()
            calls[name] = forward_call(setup, model, x)
            extra[name] = {"compile_s": time.perf_counter() - start}
        except Exception as error:  # noqa: BLE001 (recorded: a failed compilation)
            extra[name] = {"error": f"{type(error).__name__}: {str(error)[:300]}"}
            print(f"  {name}: compile failed: {extra[name]['error']}")
    if "coat_lite" not in calls:
        return None
    return timed(setup, calls, setup.args.batch_size, extra)


def main(argv=None) -> int:
    args = parse_args(argv)
    setup = make_setup(args)
    result = start_result(setup)
    x = sample_photos(args.img_size, args.batch_size).to(setup.device)
    if "train" in args.sections:
        report(setup, result, "train", time_training(setup, x))
    if "forward" in args.sections:
        report(setup, result, "forward", time_forward(setup, x))
    if "compiled" in args.sections:
        report(setup, result, "compiled", time_compiled(setup, x))
    print(f"\nwrote {setup.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
