"""Training speed of ``ccoat.train`` on a CPU: what torch's options buy, as ratios in one run.

Two parts, both on the real training loop's pieces:

1. **fit** (end to end): :func:`ccoat.train.fit` for ``--steps`` updates of one epoch, as
   ``python -m ccoat.train`` runs them (loader, augmentation, AdamW, clipping), under each
   option set below; the figure is the run's own ``images_per_s`` (training images over
   training seconds: the loader's waits included, the one-time set-up and the evaluation not).
   The option sets run in turn, then again in reverse order (A, B, ..., ..., B, A), and each
   keeps the mean of its two passes; ``baseline`` is the code as a user runs it today
   (``TrainConfig``'s defaults: fp32, two loader workers, torch's thread count).
2. **step** (the model alone): the median time of :func:`ccoat.train.train_step` on one fixed
   batch, fp32 against channels-last, bf16 autocast and ``torch.compile`` (its first call,
   the compilation, timed apart), alternated (:func:`ccoat.measure.alternate`).

Models and data: CoaT-Lite Tiny at 128 px on Imagenette (``--data-dir``; its 224-px copies),
and CoaT-Lite Tiny (cifar) at 32 px on CIFAR-10 (JPEG copy); batch 64 both.

    python benchmarks/bench_train_cpu.py --data-dir ../shared/data [--steps 10] [--no-compile]
        [--out runs] [--name bench_train_cpu_options]
    python benchmarks/bench_train_cpu.py --torch-profiler [--out runs]  # ..._profile.json

writes ``OUT/NAME.json``.

bf16 autocast pays only on CPUs with native bf16 arithmetic (AVX512-BF16 or AMX); the record
says whether this one has it (``cpu.bf16``). On others it is slower than fp32: measure first.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn as nn

import ccoat
from ccoat import measure
from ccoat.provenance import output_folder, provenance, write_atomic
from ccoat.train import TrainConfig, fit, param_groups, train_step

# The option sets of part 1: TrainConfig fields over the baseline's.
OPTIONS = {
    "baseline": {},
    "one_worker": {"num_workers": 1},
    "channels_last": {"channels_last": True},
    "data_on_device": {"data_on_device": True},
    "bf16": {"amp": "bf16"},
    "data_on_device_bf16": {"data_on_device": True, "amp": "bf16"},
}

CASES = {
    "imagenette128": dict(model="coat_lite_tiny", data="imagenette", img_size=128),
    "cifar10": dict(model="coat_lite_tiny_cifar", data="cifar10"),
}


def cpu_record() -> dict:
    """What decides which options pay on this CPU."""
    model = "?"
    try:
        with open("/proc/cpuinfo") as f:
            model = next((line.split(":", 1)[1].strip() for line in f
                          if line.startswith("model name")), "?")
    except OSError:
        pass
    return {"model": model, "capability": torch.backends.cpu.get_cpu_capability(),
            "bf16": bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())}


def fit_once(case: dict, options: dict, args) -> dict:
    config = TrainConfig(**case, **options, data_dir=args.data_dir, epochs=1,
                         batch_size=args.batch_size, steps_per_epoch=args.steps, val_subset=64,
                         warmup_epochs=0.0, device="cpu", progress=False, seed=0)
    start = time.perf_counter()
    record = fit(config).history[-1]
    return {"images_per_s": record["images_per_s"], "data_wait_s": record["data_wait_s"],
            "train_time_s": record["train_time_s"],
            "setup_and_eval_s": time.perf_counter() - start - record["train_time_s"]}


def bench_fit(case: dict, args) -> dict:
    names = list(OPTIONS)
    runs: dict[str, list[dict]] = {name: [] for name in names}
    for order in (names, names[::-1]):
        for name in order:
            runs[name].append(fit_once(case, OPTIONS[name], args))
            print(f"  {name}: {runs[name][-1]['images_per_s']:.1f} images/s", file=sys.stderr,
                  flush=True)
    speed = {name: statistics.mean(r["images_per_s"] for r in rs) for name, rs in runs.items()}
    return {"options": OPTIONS, "runs": runs, "images_per_s": speed,
            "speedup_over_baseline": {n: s / speed["baseline"] for n, s in speed.items()}}


def step_of(case: dict, args, channels_last=False, dtype=None, compile=False):
    """One training step (:func:`ccoat.train.train_step`: AdamW, label smoothing, clipping) of
    a fresh ``case`` model on one fixed random batch, as a call."""
    torch.manual_seed(0)
    size = case.get("img_size", 32)
    images = torch.randn(args.batch_size, 3, size, size)
    target = torch.randint(0, 10, (args.batch_size,))
    model = ccoat.create_model(case["model"], num_classes=10, img_size=size).train()
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
        images = images.contiguous(memory_format=torch.channels_last)
    optimizer = torch.optim.AdamW(param_groups(model, 0.05), lr=1e-4)
    criterion = nn.CrossEntropyLoss(label_smoothing=0.1)
    run = torch.compile(model) if compile else model
    return lambda: train_step(run, images, target, optimizer, criterion, clip_grad=1.0,
                              dtype=dtype, clip_params=model.parameters())


def bench_step(case: dict, args) -> dict:
    steps = {"fp32": step_of(case, args), "channels_last": step_of(case, args, channels_last=True),
             "bf16": step_of(case, args, dtype=torch.bfloat16)}
    compile_s = None
    if args.compile:
        steps["compile"] = step_of(case, args, compile=True)
        start = time.perf_counter()
        steps["compile"]()  # the compilation
        compile_s = time.perf_counter() - start
    med = measure.medians(measure.alternate(steps, args.repeats, warmup=1))
    return {"median_step_s": med,
            "images_per_s": {k: args.batch_size / v for k, v in med.items()},
            "speedup_over_fp32": {k: med["fp32"] / v for k, v in med.items()},
            "first_compiled_step_s": compile_s}


def profile_step(case: dict, args) -> dict:
    """Where an fp32 training step's time goes: torch.profiler's self CPU time per operator,
    over two steps after one untimed, as shares of the total (the top 12)."""
    from torch.profiler import ProfilerActivity, profile

    step = step_of(case, args)
    step()
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(2):
            step()
    events = [e for e in prof.key_averages() if not e.key.startswith(("autograd::", "Optimizer"))]
    total = sum(e.self_cpu_time_total for e in events)
    top = sorted(events, key=lambda e: e.self_cpu_time_total, reverse=True)[:12]
    return {"self_cpu_share": {e.key: e.self_cpu_time_total / total for e in top},
            "self_cpu_s_per_step": total / 2e6}


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0], allow_abbrev=False)
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--steps", type=int, default=10, help="updates per fit")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=5, help="timed rounds of part 2")
    parser.add_argument("--cases", nargs="+", default=list(CASES), choices=list(CASES))
    parser.add_argument("--no-compile", dest="compile", action="store_false",
                        help="leave torch.compile out of part 2 (its compilation takes minutes)")
    parser.add_argument("--no-step", dest="step", action="store_false")
    parser.add_argument("--torch-profiler", action="store_true",
                        help="only profile an fp32 step of each case with torch.profiler (where "
                             "its time goes)")
    parser.add_argument("--out", type=output_folder, default="runs", help="the folder of the results file")
    parser.add_argument("--name", help="the results file's stem: OUT/NAME.json (default "
                        "bench_train_cpu_options, or bench_train_cpu_profile with "
                        "--torch-profiler)")
    args = parser.parse_args(argv)
    if args.name is None:
        args.name = "bench_train_cpu_profile" if args.torch_profiler else "bench_train_cpu_options"
    return args


def write(result: dict, args) -> None:
    out = Path(args.out) / f"{args.name}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(out, json.dumps(result, indent=2) + "\n")
    print(f"wrote {out}")


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.torch_profiler:
        result = {name: profile_step(CASES[name], args) for name in args.cases}
        result["provenance"] = provenance()
        write(result, args)
        return 0
    result = {"benchmark": "ccoat.train on a CPU: images/s under torch's options", "steps":
              args.steps, "batch_size": args.batch_size, "cpu": cpu_record(), "cases": {}}
    for name in args.cases:
        print(f"{name}: fit", file=sys.stderr, flush=True)
        result["cases"][name] = {"config": CASES[name], "fit": bench_fit(CASES[name], args)}
        if args.step:
            print(f"{name}: step", file=sys.stderr, flush=True)
            result["cases"][name]["step"] = bench_step(CASES[name], args)
    result["provenance"] = provenance(
        dataset="Imagenette (224-px copies) and CIFAR-10 (JPEG copy)")
    write(result, args)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
