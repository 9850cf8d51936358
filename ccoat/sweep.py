"""``python -m ccoat.sweep``: the cost sweep behind the book's "Cost audit" chapter.

For every model size × attention kind × input resolution × batch size it records MACs and other
operations (:func:`ccoat.cost.audit`), parameters, peak memory and throughput (forward, and
forward + backward), and writes

- ``<out>/<name>.csv``: one row per configuration;
- ``<out>/<name>_components.csv``: one row per configuration × component × stage;
- ``<out>/<name>.json``: both tables plus the provenance record (command, git commit, torch,
  device, threads, profile, date) and the sweep's settings.

Each CSV starts with one ``# {...}`` line holding the provenance record as JSON
(``pandas.read_csv(path, skiprows=1)`` reads the table); :func:`load` reads the JSON.

``--out`` is ``runs/sweep`` unless given: the committed ``results/cost_<profile>.*`` that the
book reads are rewritten only with ``--out results --overwrite``. A sweep never replaces files
of an earlier one without ``--overwrite``; it is refused before any work.

The sweep's size follows the run profile (``CCOAT_PROFILE``; every setting can be overridden):

- ``smoke``: CoaT-Lite Tiny at 224, batch 1, every kind, one timed forward pass (under a minute
  on CPU);
- ``cpu``: Tiny at 128 to 1024 px, batch 1, every kind, median of 5 after one warm-up;
- ``gpu``: all four sizes at 224 to 1024 px, batches 1 and 32, median of 10 after 3 warm-ups.

The kinds of one configuration share one set of weights (:func:`build_models`, through
:func:`ccoat.convert_attention`) and are timed **interleaved** by :func:`ccoat.measure.alternate`
(one pass of each kind in turn, repeated), so a change in machine load hits all kinds alike;
each row also records ``fwd_vs_factorized`` / ``train_vs_factorized``, the median over rounds of
its time over factorized attention's in the same round, the measure least moved by a busy
machine. A pass that
would take too long (estimated from the same kind at the previous resolution, scaled by the
analytic cost) or need too much memory is skipped, and the row says why: exact softmax attention
at 1024 px has 65,537 tokens in stage 1.
"""
from __future__ import annotations

import argparse
import contextlib
import copy
import csv
import io
import json
import os
import shlex
import statistics
import sys
import typing
from dataclasses import dataclass
from pathlib import Path

import torch

from . import checks, cost, measure
from .convert import convert_attention
from .data import parse_img_size, sample_photos
from .model import ATTENTION_KINDS
from .profile import choose, get_profile
from .provenance import provenance, writable_folder, write_atomic
from .registry import MODEL_NAMES, create_model

RESULTS_DIR = Path("results")
DEFAULT_OUT = Path("runs") / "sweep"  # a user's sweep; results/ holds the committed ones
SIZES = ("tiny", "mini", "small", "medium")


def default_settings(profile: str | None = None) -> dict:
    """The sweep of a run profile."""
    profile = profile or get_profile()
    sides = [224, 320, 448, 640, 768, 1024]
    small = [128, 160, 192]  # where clustering overhead and N² attention meet on a CPU
    return {
        "models": choose(smoke=["coat_lite_tiny"], cpu=["coat_lite_tiny"],
                         gpu=[f"coat_lite_{s}" for s in SIZES], profile=profile),
        "kinds": list(ATTENTION_KINDS),
        "img_sizes": choose(smoke=[224], cpu=small + sides, gpu=sides, profile=profile),
        "batch_sizes": choose(smoke=[1], cpu=[1], gpu=[1, 32], profile=profile),
        "repeats": choose(smoke=1, cpu=5, gpu=10, profile=profile),
        "warmup": choose(smoke=0, cpu=1, gpu=3, profile=profile),
        "max_seconds": choose(smoke=10.0, cpu=30.0, gpu=30.0, profile=profile),
        "train": choose(smoke=False, cpu=True, gpu=True, profile=profile),
        # the gpu sweep without CUDA is refused (validate_settings), not run on the CPU under
        # the gpu profile's name; --device cpu runs it there on purpose
        "device": "cuda" if profile == "gpu" else "cpu",
        "name": f"cost_{profile}",
    }


def _available_bytes(device: torch.device) -> int:
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return free
    try:
        with open("/proc/meminfo") as f:
            info = dict(line.split(":", 1) for line in f)
        return int(info["MemAvailable"].split()[0]) * 1024
    except (OSError, KeyError, ValueError):
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


class _PassForecast:
    """Predicts a pass's time and memory from the same kind's last measured point, scaled by the
    analytic cost (MACs + other operations), and says why a pass should be skipped."""

    def __init__(self, max_seconds: float, device: torch.device):
        self.max_seconds = max_seconds
        self.device = device
        self.last: dict = {}  # (model, kind, batch, mode) -> (work, seconds, bytes)

    def skip_reason(self, key, work: float) -> str | None:
        if key not in self.last:
            return None
        prev_work, prev_s, prev_bytes = self.last[key]
        scale = work / prev_work
        if prev_s is not None and prev_s * scale > self.max_seconds:
            return (f"estimated {prev_s * scale:.0f} s per pass (measured {prev_s:.2f} s at the "
                    f"previous size x {scale:.1f} analytic cost) exceeds {self.max_seconds:.0f} s")
        budget = 0.5 * _available_bytes(self.device)
        if prev_bytes is not None and prev_bytes * scale > budget:
            return (f"estimated peak memory {prev_bytes * scale / 2**30:.1f} GiB exceeds half of "
                    f"the {2 * budget / 2**30:.1f} GiB available")
        return None

    def remember(self, key, work, seconds, nbytes):
        self.last[key] = (work, seconds, nbytes)


def build_models(model_name: str, kinds, device) -> dict:
    """One model per attention kind, all with the same weights: a factorized model drawn with
    seed 0, converted to each kind by :func:`ccoat.convert_attention` (a clustered kind's hash
    projections drawn after seeding torch with 1)."""
    torch.manual_seed(0)
    reference = create_model(model_name, attention="factorized")
    models = {}
    for kind in kinds:
        torch.manual_seed(1)
        models[kind] = convert_attention(copy.deepcopy(reference), kind).to(device).eval()
    return models


@dataclass
class _Sweep:
    """What every configuration of one sweep shares: its settings, the forecast that skips a
    pass too long or too large, and the progress bar."""

    settings: dict
    forecast: _PassForecast
    bar: typing.Any  # tqdm


def _measure_config(sweep: _Sweep, model_name: str, models: dict, img_size: int,
                    batch_size: int) -> tuple[list[dict], list[dict]]:
    """All kinds of one (model, size, batch): costs, memory, then interleaved timings."""
    settings, forecast, bar = sweep.settings, sweep.forecast, sweep.bar
    device = torch.device(settings["device"])
    kinds = list(models)
    images = sample_photos(img_size, batch_size).to(device)
    rows, components = {}, []
    for kind, model in models.items():
        table = cost.audit(model, img_size, batch_size, images=images)
        work = float(table["macs"].sum() + table["ops"].sum())
        H, W = cost.check_input(model, img_size, batch_size)
        shapes = cost.stage_shapes(model, img_size)
        row = {
            "model": model_name, "kind": kind, "img_size": img_size, "batch_size": batch_size,
            "tokens_stage1": shapes[0].tokens, "params": int(table["params"].sum()),
            "macs": int(table["macs"].sum()), "ops": float(table["ops"].sum()),
            "attention_macs": int(table.loc[table.component.isin(
                ("attention", *cost.CLUSTERING_COMPONENTS)), "macs"].sum()),
            "clusters_per_row_stage1": cost.stage_clusters_per_row(table.attrs.get("clusters")),
        }
        for mode in ("fwd", "train"):
            key = (model_name, kind, batch_size, mode)
            reason = forecast.skip_reason(key, work) if mode == "fwd" or settings["train"] else \
                "not asked for (--no-train)"
            row[f"peak_mem_{mode}_bytes"], row[f"{mode}_s"], row[f"{mode}_img_s"] = None, None, None
            row[f"{mode}_repeats"], row[f"{mode}_skipped"] = 0, reason
            if reason is None:
                mem = measure.peak_memory(model, img_size, batch_size, train=mode == "train",
                                       images=images)
                row[f"peak_mem_{mode}_bytes"] = mem["bytes"]
                row["memory_method"] = mem["method"]
        for _, r in table.iterrows():
            components.append({"model": model_name, "kind": kind, "img_size": img_size,
                               "batch_size": batch_size, **r.to_dict()})
        rows[kind] = (row, work)
        bar.update(1)

    # Interleaved timing: warm-up rounds of every kind, then one pass of each kind per round.
    for mode in ("fwd", "train") if settings["train"] else ("fwd",):
        timed = [k for k in kinds if rows[k][0][f"{mode}_skipped"] is None]
        if not timed:
            continue
        train = mode == "train"
        with contextlib.ExitStack() as modes:
            calls = {k: measure.pass_call(modes.enter_context(measure.in_mode(models[k], train)),
                                          images, train) for k in timed}
            times = measure.alternate(calls, settings["repeats"], settings["warmup"],
                                      measure.device_sync(device))
        for kind in timed:
            row, work = rows[kind]
            median = statistics.median(times[kind])
            if "factorized" in timed:  # per-round ratios: a load change hits both passes alike
                row[f"{mode}_vs_factorized"] = measure.round_ratio(times, kind, "factorized")
            row[f"{mode}_s"], row[f"{mode}_img_s"] = median, batch_size / median
            row[f"{mode}_repeats"] = len(times[kind])
            forecast.remember((model_name, kind, batch_size, mode), work, median,
                         row[f"peak_mem_{mode}_bytes"])
    return [rows[k][0] for k in kinds], components


def validate_settings(settings: dict) -> dict:
    """Raise ``ValueError`` naming the option (``--name``) of the first bad setting, before any
    work. Returns ``settings``."""
    def bad(key: str, expected: str):
        raise ValueError(f"--{key.replace('_', '-')} must be {expected}, got {settings[key]!r}")

    def integers(key: str, low: int):
        values = settings[key]
        if not isinstance(values, (list, tuple)) or not values or any(
                not checks.is_integer(v) or v < low for v in values):
            raise ValueError(f"--{key.replace('_', '-')}: {key.replace('_', ' ')} must be >= "
                             f"{low} (a non-empty list of integers), got {values!r}")

    integers("img_sizes", 1)
    integers("batch_sizes", 1)
    for key, low in (("repeats", 1), ("warmup", 0)):
        checks.integer(f"--{key}", settings[key], low)  # the key is the option's name
    if not isinstance(settings["max_seconds"], (int, float)) or not settings["max_seconds"] > 0:
        bad("max_seconds", "a number > 0")
    if not settings["models"] or any(m not in MODEL_NAMES for m in settings["models"]):
        bad("models", f"model names among {', '.join(MODEL_NAMES)}")
    if not settings["kinds"] or any(k not in ATTENTION_KINDS for k in settings["kinds"]):
        bad("kinds", f"attention kinds among {', '.join(ATTENTION_KINDS)}")
    for key in ("img_sizes", "batch_sizes", "models", "kinds"):
        repeated = sorted({v for v in settings[key] if list(settings[key]).count(v) > 1})
        if repeated:  # a repeated size gave two rows of one configuration
            raise ValueError(f"--{key.replace('_', '-')}: each value once, got "
                             f"{list(settings[key])!r} ({', '.join(map(str, repeated))} repeated)")
    if not settings["name"] or Path(settings["name"]).name != settings["name"]:
        bad("name", "a file stem (no folder)")
    try:
        device = torch.device(settings["device"])
    except (RuntimeError, TypeError):
        bad("device", "cpu, cuda or cuda:N")
    gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if device.type == "cuda" and (device.index or 0) >= gpus:  # else a CUDA error mid-sweep
        bad("device", f"cpu or cuda:0 to cuda:{gpus - 1}" if gpus else
            "cpu here (CUDA is not available)")
    return settings


def check_out(out_dir: str | os.PathLike, name: str, overwrite: bool = False) -> None:
    """Raise ``FileExistsError`` when ``out_dir`` holds a complete sweep ``name`` and
    ``overwrite`` is false: a new sweep would replace it (``results/cost_cpu.json`` is what the
    book's chapters read); ``OSError`` when ``out_dir`` cannot be made or written."""
    if Path(out_dir).exists() and not Path(out_dir).is_dir():
        raise NotADirectoryError(f"--out {out_dir} is a file; the sweep writes its files into a "
                                 f"folder")
    found = [str(p) for p in _files(out_dir, name) if p.exists()]
    if found and not overwrite:
        raise FileExistsError(f"{', '.join(found)} already exist(s); a sweep replaces them only "
                              f"with --overwrite (or choose another --out or --name)")
    try:  # a folder that cannot be made or written is named now, not after the first pass
        writable_folder(out_dir)
    except OSError as error:
        raise OSError(error.errno, f"--out: {error.strerror}") from error


def run(settings: dict, out_dir: str | os.PathLike = DEFAULT_OUT, command: str | None = None,
        progress: bool = True, overwrite: bool = False) -> dict:
    """Run a sweep and write its CSV and JSON files; return the JSON record.

    While the sweep runs, its rows so far are written to ``<name>.partial.*`` after every
    configuration (a long sweep cut short keeps them); the complete sweep then replaces
    ``<name>.*`` and the partial files are removed. Every write is atomic, so the files of an
    earlier complete sweep are never replaced by a partial one, and by a complete one only
    with ``overwrite`` (:func:`check_out`, before any work)."""
    from tqdm.auto import tqdm

    validate_settings(settings)
    check_out(out_dir, settings["name"], overwrite)
    device = torch.device(settings["device"])
    # The record is taken before the sweep: the code that ran is the code at its start.
    record_of_run = provenance(dataset="scikit-learn sample photos (china.jpg, flower.jpg)",
                               device=device, command=command, settings=settings)
    if progress:
        print(f"cost sweep at commit {record_of_run['git_commit']} on {record_of_run['device']}",
              file=sys.stderr, flush=True)
    models = {name: build_models(name, settings["kinds"], device) for name in settings["models"]}
    for kinds in models.values():
        for img_size in settings["img_sizes"]:
            for batch_size in settings["batch_sizes"]:  # bad settings fail before the sweep
                cost.check_input(next(iter(kinds.values())), img_size, batch_size)
    forecast = _PassForecast(settings["max_seconds"], device)
    rows, components = [], []
    total = (len(settings["models"]) * len(settings["batch_sizes"]) * len(settings["img_sizes"])
             * len(settings["kinds"]))
    partial = f"{settings['name']}.partial"
    with tqdm(total=total, desc="cost sweep", disable=not progress) as bar:
        sweep = _Sweep(settings, forecast, bar)
        for model_name in settings["models"]:
            for batch_size in settings["batch_sizes"]:
                for img_size in sorted(settings["img_sizes"]):
                    bar.set_postfix(model=model_name, size=img_size, batch=batch_size)
                    r, c = _measure_config(sweep, model_name, models[model_name], img_size,
                                           batch_size)
                    rows += r
                    components += c
                    write({"provenance": record_of_run, "complete": False, "rows": rows,
                           "components": components}, out_dir, partial)
    record = {"provenance": record_of_run, "complete": True, "rows": rows, "components": components}
    write(record, out_dir, settings["name"])
    for path in _files(out_dir, partial):
        path.unlink(missing_ok=True)
    return record


def _files(out_dir, name: str) -> list[Path]:
    out = Path(out_dir)
    return [out / f"{name}.json", out / f"{name}.csv", out / f"{name}_components.csv"]


def write(record: dict, out_dir, name: str) -> None:
    """``<name>.json``, ``<name>.csv`` and ``<name>_components.csv``, each written atomically."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    json_path, *csv_paths = _files(out, name)
    for path, table in zip(csv_paths, (record["rows"], record["components"])):
        fields = list(dict.fromkeys(k for row in table for k in row))
        text = io.StringIO(newline="")
        text.write(f"# {json.dumps(record['provenance'], default=str)}\n")
        writer = csv.DictWriter(text, fieldnames=fields)
        writer.writeheader()
        writer.writerows(table)
        write_atomic(path, text.getvalue())
    write_atomic(json_path, json.dumps(record, indent=1, default=str) + "\n")


def load(path: str | os.PathLike):
    """A sweep's JSON file -> ``(rows, components, provenance)``; the tables as DataFrames."""
    import pandas as pd

    record = json.loads(Path(path).read_text())
    return pd.DataFrame(record["rows"]), pd.DataFrame(record["components"]), record["provenance"]


def crossover(rows, kind: str = "clustered", reference: str = "softmax", metric: str = "fwd_s",
              model: str | None = None, batch_size: int = 1):
    """The smallest resolution from which ``kind`` is faster (lower ``metric``) than
    ``reference`` at every larger resolution where both were measured; None if it never is.
    Returns ``(resolution, table)`` with the two kinds' values side by side."""
    sel = rows[(rows.batch_size == batch_size) & rows.kind.isin([kind, reference])]
    if model is not None:
        sel = sel[sel.model == model]
    table = sel.pivot_table(index="img_size", columns="kind", values=metric).dropna()
    if kind not in table or reference not in table:
        return None, table
    wins = (table[kind] < table[reference]).to_numpy()
    for i in range(len(wins)):
        if wins[i:].all():
            return int(table.index[i]), table
    return None, table


# The analyses of the book's cost chapters. They take a sweep's rows as :func:`load` returns them
# and key every comparison on (model, img_size, batch_size), so they read a CPU sweep (batch 1)
# and a GPU sweep (batches 1 and 32, several models) alike.
CONFIG = ["model", "img_size", "batch_size"]


def relative_to_factorized(rows):
    """``rows`` with ``macs_vs_factorized``: each row's MACs over factorized attention's (CoaT-Lite)
    in the same model, resolution and batch size. Its time over factorized's is already there,
    ``fwd_vs_factorized`` (the median of per-round ratios, measured interleaved)."""
    missing = [c for c in [*CONFIG, "kind", "macs"] if c not in rows]
    if missing:
        raise ValueError(f"sweep rows need columns {CONFIG + ['kind', 'macs']}, missing {missing}")
    base = rows.loc[rows.kind == "factorized", [*CONFIG, "macs"]]
    if base.duplicated(CONFIG).any():
        raise ValueError("sweep rows hold more than one factorized row for one "
                         f"{tuple(CONFIG)}: {base[base.duplicated(CONFIG)][CONFIG].values.tolist()}")
    base = base.rename(columns={"macs": "_factorized_macs"})
    out = rows.merge(base, on=CONFIG, how="left")
    out["macs_vs_factorized"] = out.macs / out.pop("_factorized_macs")
    return out


def time_per_mac(rows, metric: str = "fwd_vs_factorized"):
    """How each kind's time compares with what its MACs predict: per (model, batch size, kind
    other than factorized), ``metric`` (time over factorized's) divided by the MAC ratio, as the
    median, lowest and highest over the resolutions where the time was measured. 1 means time
    follows MACs; above 1, the kind is slower than its MACs say."""
    rel = relative_to_factorized(rows)
    rel = rel[(rel.kind != "factorized") & rel[metric].notna()]
    per_mac = (rel[metric] / rel.macs_vs_factorized).rename("per_mac")
    grouped = rel.assign(per_mac=per_mac).groupby(["model", "batch_size", "kind"], sort=False)
    return grouped.per_mac.agg(median="median", low="min", high="max", resolutions="count")


def at(rows, model: str = "coat_lite_tiny", batch_size: int = 1):
    """The rows of one model and batch size, with ``img_size`` unique per kind: the selection
    before a table indexed by resolution (a GPU sweep holds batches 1 and 32). Raises
    ``ValueError`` naming what the rows hold if the selection is empty."""
    sel = rows[(rows.model == model) & (rows.batch_size == batch_size)]
    if sel.empty:
        held = sorted(set(zip(rows.model, rows.batch_size.astype(int))))
        raise ValueError(f"no sweep rows for model {model!r} at batch {batch_size}; "
                         f"the rows hold (model, batch) {held}")
    return sel


def peak_memory_ratios(rows, model: str = "coat_lite_tiny", batch_size: int = 1):
    """Per resolution: the forward peaks' spread across kinds (``(max - min) / max``), and each
    kind's training peak over factorized attention's."""
    import pandas as pd

    sel = at(rows, model, batch_size)
    fwd = sel.pivot_table(index="img_size", columns="kind", values="peak_mem_fwd_bytes")
    train = sel.pivot_table(index="img_size", columns="kind", values="peak_mem_train_bytes")
    spread = ((fwd.max(axis=1) - fwd.min(axis=1)) / fwd.max(axis=1)).rename("forward spread")
    ratios = train.div(train["factorized"], axis=0).add_prefix("training / factorized: ")
    return pd.concat([spread, ratios], axis=1)


def load_component_times(path: str | os.PathLike):
    """``benchmarks/cost_components.py``'s file (``results/cost_components_tiny.json``) ->
    ``(table, provenance)``: one row per model, attention kind, resolution, batch size and
    component, with its MACs, measured seconds and their shares of the pass, and the whole
    pass's seconds (``pass_seconds``). Each time is a median over the file's repeats, taken
    per component, so the time shares add up to about 1, not exactly ("other" holds what no
    module covers: reshapes, residual adds)."""
    import pandas as pd

    record = json.loads(Path(path).read_text())
    frames = []
    for t in record["tables"]:
        rows = [r for r in t["rows"] if r["component"] != "total"]
        (total,) = [r["seconds"] for r in t["rows"] if r["component"] == "total"]
        frames.append(pd.DataFrame(rows).assign(model=t["model"], attention=t["attention"],
                                                img_size=t["img_size"],
                                                batch_size=t["batch_size"], pass_seconds=total))
    return pd.concat(frames, ignore_index=True), record["provenance"]


def _parse(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m ccoat.sweep", description=__doc__.split("\n")[0],
                                allow_abbrev=False)
    p.add_argument("--profile", choices=("smoke", "cpu", "gpu"),
                   help="sweep size (default: CCOAT_PROFILE, else from the hardware)")
    p.add_argument("--models", nargs="+", help="model names, e.g. coat_lite_tiny")
    p.add_argument("--kinds", nargs="+", choices=ATTENTION_KINDS)
    p.add_argument("--img-sizes", nargs="+", type=parse_img_size, metavar="N",
                   help="image sides in pixels")
    p.add_argument("--batch-sizes", nargs="+", type=int)
    p.add_argument("--repeats", type=int)
    p.add_argument("--warmup", type=int)
    p.add_argument("--max-seconds", type=float, help="skip passes estimated to take longer")
    p.add_argument("--no-train", dest="train", action="store_false", default=None,
                   help="time forward passes only")
    p.add_argument("--device", help="cpu, cuda or cuda:N (default: the profile's)")
    p.add_argument("--name", help="file stem under --out (default cost_<profile>)")
    p.add_argument("--out", default=str(DEFAULT_OUT),
                   help=f"output folder (default {DEFAULT_OUT}; the committed sweeps are in "
                        f"{RESULTS_DIR})")
    p.add_argument("--overwrite", action="store_true",
                   help="replace the files of an earlier sweep of the same --name in --out")
    p.add_argument("--progress", action=argparse.BooleanOptionalAction, default=True,
                   help="a progress bar")
    return p.parse_args(argv)


def _settings(args: argparse.Namespace) -> dict:
    """The profile's sweep with the options given on the command line in place of its own."""
    settings = default_settings(args.profile)  # an unknown CCOAT_PROFILE is a ValueError
    for key in ("models", "kinds", "img_sizes", "batch_sizes", "repeats", "warmup",
                "max_seconds", "train", "device", "name"):
        value = getattr(args, key)
        if value is not None:
            settings[key] = value
    return settings


def main(argv=None) -> int:
    args = _parse(argv)
    if args.profile:
        os.environ["CCOAT_PROFILE"] = args.profile
    try:
        settings = validate_settings(_settings(args))
        command = "python -m ccoat.sweep " + " ".join(shlex.quote(a) for a in
                                                      (sys.argv[1:] if argv is None else argv))
        record = run(settings, args.out, command=command.strip(), progress=args.progress,
                     overwrite=args.overwrite)
    except (ValueError, OSError) as e:
        raise SystemExit(f"error: {checks.one_line(e)}") from None
    n_skipped = sum(1 for r in record["rows"] for m in ("fwd", "train") if r.get(f"{m}_skipped"))
    print(f"wrote {Path(args.out) / settings['name']}.csv, _components.csv and .json "
          f"({len(record['rows'])} configurations, {n_skipped} passes skipped)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
