"""Per-component cost of CoaT-Lite Tiny and Clustering CoaT Tiny: counted MACs, other operations,
parameters and measured forward time, as Markdown tables for benchmarks/README.md.

Both models share one set of (random-init) weights; the clustered model's hash projections are
drawn after ``torch.manual_seed(0)``, so the table repeats. Its cluster
counts, and so its cost, depend on that draw and on the image (scikit-learn's ``china.jpg`` at
batch 1, both sample photos at batch 2). Time per
component comes from ``ccoat.measure.component_times`` (module hooks, median of repeats), so the
table puts counted cost next to wall-clock.

    python benchmarks/cost_components.py [--models coat_lite_tiny ccoat_lite_tiny]
        [--img-sizes 224 448] [--batch-size 1] [--repeats 5] [--out results]
        [--name cost_components_tiny]

writes ``OUT/NAME.json``.
"""
from __future__ import annotations

import argparse
import copy
import json
from pathlib import Path

import torch

import ccoat
from ccoat import cost, measure
from ccoat.data import parse_img_size, sample_photos
from ccoat.provenance import output_folder, provenance, write_atomic


def component_table(model, img_size: int, batch_size: int, repeats: int) -> tuple[list, dict]:
    images = sample_photos(img_size, batch_size)
    table = cost.audit(model, img_size, batch_size, images=images)
    by_component = table.groupby("component", sort=False)[["macs", "macs_analytic", "ops",
                                                           "params"]].sum()
    times = measure.component_times(model, img_size, batch_size, repeats=repeats, warmup=1,
                                    images=images)
    total_time = times.pop(("total", "all"))
    seconds = {}
    for (component, _), t in times.items():
        seconds[component] = seconds.get(component, 0.0) + t
    rows = []
    for component in cost.COMPONENTS:
        if component not in by_component.index and component not in seconds:
            continue
        r = by_component.loc[component] if component in by_component.index else None
        rows.append({
            "component": component,
            "macs": int(r.macs) if r is not None else 0,
            "macs_analytic": float(r.macs_analytic) if r is not None else 0.0,
            "ops": float(r.ops) if r is not None else 0.0,
            "params": int(r.params) if r is not None else 0,
            "seconds": seconds.get(component, 0.0),
        })
    total_macs = sum(r["macs"] for r in rows)
    for r in rows:
        r["macs_share"] = r["macs"] / total_macs
        r["time_share"] = r["seconds"] / total_time
    rows.append({"component": "total", "macs": total_macs,
                 "macs_analytic": sum(r["macs_analytic"] for r in rows),
                 "ops": sum(r["ops"] for r in rows), "params": sum(r["params"] for r in rows),
                 "seconds": total_time, "macs_share": 1.0, "time_share": 1.0})
    meta = {"clusters_per_row_stage1": cost.stage_clusters_per_row(table.attrs.get("clusters"))}
    return rows, meta


def markdown(rows: list[dict]) -> str:
    lines = ["| component | MMACs | share of MACs | other ops (M) | params (k) | time (ms) | share of time |",
             "| --- | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for r in rows:
        lines.append(f"| {r['component']} | {r['macs'] / 1e6:,.1f} | {r['macs_share']:.1%} | "
                     f"{r['ops'] / 1e6:,.1f} | {r['params'] / 1e3:,.1f} | "
                     f"{r['seconds'] * 1e3:,.1f} | {r['time_share']:.1%} |")
    return "\n".join(lines)


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0], allow_abbrev=False)
    p.add_argument("--models", nargs="+", default=["coat_lite_tiny", "ccoat_lite_tiny"])
    p.add_argument("--img-sizes", nargs="+", type=parse_img_size, default=[224, 448],
                   metavar="N")
    p.add_argument("--batch-size", type=int, default=1)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--out", type=output_folder, default="results", help="the folder of the results file")
    p.add_argument("--name", default="cost_components_tiny",
                   help="the results file's stem: OUT/NAME.json")
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)

    command = ("python benchmarks/cost_components.py --models " + " ".join(args.models)
               + " --img-sizes " + " ".join(map(str, args.img_sizes))
               + f" --batch-size {args.batch_size} --repeats {args.repeats} --out {args.out}"
               f" --name {args.name}")
    record = {"provenance": provenance(dataset="scikit-learn sample photos (china.jpg, flower.jpg)",
                                       command=command), "tables": []}
    torch.manual_seed(0)
    reference = ccoat.create_model(args.models[0]).eval()
    for name in args.models:
        torch.manual_seed(0)  # one repeatable draw of the hash projections (the count depends on it)
        kind = ccoat.create_model(name).attention_kinds[0]  # the kind the name stands for
        model = ccoat.convert_attention(copy.deepcopy(reference), kind)  # one set of weights
        for img_size in args.img_sizes:
            rows, meta = component_table(model, img_size, args.batch_size, args.repeats)
            record["tables"].append({"model": name, "attention": model.attention_kinds[0],
                                     "img_size": img_size, "batch_size": args.batch_size,
                                     **meta, "rows": rows})
            print(f"\n**{name}** ({model.attention_kinds[0]}), {img_size} px, batch "
                  f"{args.batch_size}" + (f", {meta['clusters_per_row_stage1']:.0f} clusters per "
                                          "row in stage 1" if meta["clusters_per_row_stage1"] else "")
                  + "\n")
            print(markdown(rows))
    out = Path(args.out) / f"{args.name}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(out, json.dumps(record, indent=1) + "\n")  # a run cut short keeps the old file
    print(f"\nwrote {out}  ({record['provenance']['device']}, commit {record['provenance']['git_commit']})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
