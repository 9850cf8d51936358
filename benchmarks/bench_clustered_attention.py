"""Clustered attention against exact softmax attention (SDPA) on CPU, in one run.

One attention layer as in CoaT-Lite-Tiny's first stage (C = 64, 8 heads, batch 1) at
N = 1 + 56² = 3137 and 1 + 112² = 12545 tokens (224 and 448 px inputs). The queries, keys and
values are *real image features*: scikit-learn's two sample photos through a random-init
CoaT-Lite-Tiny (patch embedding, class token, CPE, LayerNorm and the first block's qkv); there
are no pretrained weights offline, so these are the features of an untrained network.

Measured, for ``clustered`` against ``softmax``:

- time: the two are run alternately (A, B, A, B, ...) and the median of each is taken, so the
  ratio is measured in one run under the same machine load; hashing + clustering (E2LSH codes,
  cluster ids) is timed on its own the same way;
- clusters formed per (image, head) row, mean and max;
- relative output error ``||clustered - exact|| / ||exact||`` over the attention output; for
  scale, the same for a single cluster (every image token gets the mean query's output);
- peak memory: how far the resident set of a fresh process, which has only loaded q, k, v,
  rises while the attention runs once (Linux: reset the peak RSS through
  ``/proc/self/clear_refs``, then read ``VmHWM``). tracemalloc does not see torch's
  allocations and CPU torch keeps no allocator statistics; this counts every page the call
  touches, at page granularity.

And the whole model: ``ccoat_lite_tiny`` (clustered) against ``coat_lite_tiny`` with
``attention="softmax"`` (and CoaT's own factorized attention, for reference), the same weights,
on china.jpg at 448 px, forward only, alternated, median of repeats; plus where the clustered
model's time goes (shares of one forward under torch.profiler).

    python benchmarks/bench_clustered_attention.py [--threads 1] [--repeats 7] [--bucket-width R]
        [--n-hashes 32] [--img-sizes 224 448] [--model-img-size 448] [--out results]
        [--name bench_clustered_attention]

writes ``OUT/NAME.json``.

``--threads 1`` by default: the project's machine shares 2 cores among several jobs, and
multi-threaded small ops then wait on each other; one thread gives steadier ratios.
"""
from __future__ import annotations

import argparse
import copy
import json
import re
import subprocess
import sys
import tempfile
from pathlib import Path

import torch
import torch.nn.functional as F

import ccoat
from ccoat import measure
from ccoat.clustering import ClusteredCore, block_qkv, clusters_per_row
from ccoat.data import parse_img_size, sample_photos
from ccoat.hashing import DEFAULT_BUCKET_WIDTH, DEFAULT_N_HASHES
from ccoat.provenance import output_folder, provenance, write_atomic


def _status_kib(field: str) -> int:
    return int(re.search(rf"{field}:\s+(\d+) kB", Path("/proc/self/status").read_text()).group(1))


def peak_memory_mib(fn) -> float:
    """Peak resident memory added while ``fn`` runs, in MiB (Linux).

    Writing 5 to ``/proc/self/clear_refs`` resets the process's peak RSS (VmHWM) to its
    current RSS; the peak after ``fn`` minus the RSS before is what ``fn`` needed at most.
    """
    Path("/proc/self/clear_refs").write_text("5")
    before = _status_kib("VmRSS")
    fn()
    return (_status_kib("VmHWM") - before) / 1024


def memory_child(path: str, kind: str, n_hashes: int, bucket_width: float) -> None:
    """In a fresh process (no pages freed by earlier calls to reuse): one call's peak."""
    q, k, v = torch.load(path)
    core = ClusteredCore(q.shape[-1], n_hashes=n_hashes, bucket_width=bucket_width, seed=0)
    with torch.no_grad():
        fn = (lambda: core(q, k, v)) if kind == "clustered" else \
            (lambda: F.scaled_dot_product_attention(q, k, v))
        print(json.dumps({"peak_mib": peak_memory_mib(fn)}))


def peak_memory(q, k, v, kind: str, args) -> float:
    with tempfile.TemporaryDirectory() as tmp:
        path = str(Path(tmp) / "qkv.pt")
        torch.save((q, k, v), path)
        out = subprocess.run(
            [sys.executable, __file__, "--memory-child", path, kind, "--n-hashes",
             str(args.n_hashes), "--bucket-width", str(args.bucket_width), "--threads",
             str(args.threads)], capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])["peak_mib"]


def layer_benchmark(model, side, args) -> dict:
    with torch.no_grad():
        q, k, v, size = block_qkv(model, sample_photos(side), stage=0, block=0)
    q, k, v = q[:1].contiguous(), k[:1].contiguous(), v[:1].contiguous()  # batch 1: china.jpg
    core = ClusteredCore(q.shape[-1], n_hashes=args.n_hashes, bucket_width=args.bucket_width, seed=0)
    with torch.no_grad():
        exact = F.scaled_dot_product_attention(q, k, v)
        approx = core(q, k, v)
        clusters = core.cluster(q[:, :, 1:])
        # One cluster for all image tokens: the trivial approximation, for scale.
        mean_out = F.scaled_dot_product_attention(q[:, :, 1:].mean(2, keepdim=True), k, v)
        single = torch.cat([exact[:, :, :1], mean_out.expand(-1, -1, q.shape[2] - 1, -1)], 2)
        memory = {kind: peak_memory(q, k, v, kind, args) for kind in ("softmax", "clustered")}
        medians = measure.medians(measure.alternate({
            "softmax": lambda: F.scaled_dot_product_attention(q, k, v),
            "clustered": lambda: core(q, k, v),
            "hash_and_cluster": lambda: core.cluster(q[:, :, 1:]),
        }, args.repeats))
    rel = lambda a: ((a - exact).norm() / exact.norm()).item()  # noqa: E731
    sweep = []  # what the bucket width trades: clusters against error (no timing)
    with torch.no_grad():
        for width in (1.0, 2.0, 4.0, 8.0, 16.0):
            other = ClusteredCore(q.shape[-1], n_hashes=args.n_hashes, bucket_width=width, seed=0)
            sweep.append({"bucket_width": width, "relative_error": rel(other(q, k, v)),
                          "clusters_mean": other.cluster(q[:, :, 1:]).num_clusters.float().mean().item()})
    return {
        "tokens": q.shape[2], "grid": list(size), "heads": q.shape[1], "head_dim": q.shape[3],
        "median_s": medians,
        "time_ratio_clustered_over_softmax": medians["clustered"] / medians["softmax"],
        "hash_and_cluster_share_of_clustered": medians["hash_and_cluster"] / medians["clustered"],
        "clusters_mean": clusters.num_clusters.float().mean().item(),
        "clusters_max": int(clusters.num_clusters.max()),
        "relative_error": rel(approx),
        "relative_error_one_cluster": rel(single),
        "peak_rss_increase_mib": memory,
        "bucket_width_sweep": sweep,
    }


def time_breakdown(model, x) -> dict:
    """Share of one profiled forward spent hashing + clustering, in SDPA, in linear layers."""
    from torch.profiler import profile, record_function

    cores = [m for m in model.modules() if isinstance(m, ClusteredCore)]
    originals = [core.cluster for core in cores]

    def timed(cluster):
        def wrapper(q_img):
            with record_function("hash_and_cluster"):
                return cluster(q_img)
        return wrapper

    for core, cluster in zip(cores, originals):
        core.cluster = timed(cluster)
    try:
        with torch.no_grad(), profile() as prof:
            model(x)
    finally:
        for core in cores:
            del core.cluster  # back to the class's method
    events = {e.key: e for e in prof.key_averages()}
    total = sum(e.self_cpu_time_total for e in events.values())
    share = lambda key: events[key].cpu_time_total / total if key in events else 0.0  # noqa: E731
    return {"hash_and_cluster": share("hash_and_cluster"),
            "sdpa": share("aten::_scaled_dot_product_flash_attention_for_cpu"),
            "linear": share("aten::addmm")}


def model_benchmark(side, args) -> dict:
    torch.manual_seed(0)  # one set of weights, converted to each kind
    softmax = ccoat.create_model("coat_lite_tiny", attention="softmax").eval()
    clustered = ccoat.convert_attention(copy.deepcopy(softmax), "clustered",
                                        n_hashes=args.n_hashes, bucket_width=args.bucket_width)
    factorized = ccoat.convert_attention(copy.deepcopy(softmax), "factorized")
    x = sample_photos(side)[:1]
    with torch.no_grad(), ccoat.record_clusters(clustered) as records:
        clustered(x)
        medians = measure.medians(measure.alternate(
            {"softmax": lambda: softmax(x), "clustered": lambda: clustered(x),
             "factorized": lambda: factorized(x)}, args.model_repeats))
    return {
        "img_size": side, "batch_size": 1, "median_s": medians,
        "time_ratio_clustered_over_softmax": medians["clustered"] / medians["softmax"],
        "time_ratio_clustered_over_factorized": medians["clustered"] / medians["factorized"],
        "clusters_mean_per_block": clusters_per_row(records),
        "tokens_per_block": {name: r["ids"].shape[-1] for name, r in records.items()},
        "clustered_time_shares": time_breakdown(clustered, x),
    }


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0], allow_abbrev=False)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--model-repeats", type=int, default=3)
    parser.add_argument("--n-hashes", type=int, default=DEFAULT_N_HASHES)
    parser.add_argument("--bucket-width", type=float, default=DEFAULT_BUCKET_WIDTH)
    parser.add_argument("--img-sizes", type=parse_img_size, nargs="+", default=[224, 448],
                        metavar="N", help="image sides of the one-layer benchmark")
    parser.add_argument("--model-img-size", type=parse_img_size, default=448, metavar="N",
                        help="image side of the whole-model benchmark")
    parser.add_argument("--out", type=output_folder, default="results", help="the folder of the results file")
    parser.add_argument("--name", default="bench_clustered_attention",
                        help="the results file's stem: OUT/NAME.json")
    parser.add_argument("--memory-child", nargs=2, metavar=("QKV_PATH", "KIND"),
                        help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.memory_child:
        memory_child(*args.memory_child, args.n_hashes, args.bucket_width)
        return 0

    torch.manual_seed(0)
    model = ccoat.create_model("coat_lite_tiny").eval()  # random init: no weights offline
    result = {
        "benchmark": "clustered vs softmax attention, one layer (C=64, 8 heads, batch 1) and "
                     "ccoat_lite_tiny vs coat_lite_tiny(attention='softmax'), CPU, forward",
        "features": "sklearn sample photos through a random-init coat_lite_tiny stage 1",
        "n_hashes": args.n_hashes, "bucket_width": args.bucket_width,
        "repeats": args.repeats, "model_repeats": args.model_repeats,
        "layer": {str(side): layer_benchmark(model, side, args) for side in args.img_sizes},
        "model": model_benchmark(args.model_img_size, args),
        **provenance(dataset="sklearn.datasets.load_sample_images (china.jpg, flower.jpg)"),
    }
    out = Path(args.out) / f"{args.name}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(out, json.dumps(result, indent=2) + "\n")  # a run cut short keeps the old file
    for r in result["layer"].values():
        print(f"N={r['tokens']}: clustered/softmax time {r['time_ratio_clustered_over_softmax']:.3f} "
              f"(softmax {r['median_s']['softmax'] * 1e3:.1f} ms, clustered "
              f"{r['median_s']['clustered'] * 1e3:.1f} ms, of which hashing+clustering "
              f"{r['median_s']['hash_and_cluster'] * 1e3:.1f} ms); clusters mean "
              f"{r['clusters_mean']:.0f} max {r['clusters_max']}; rel. error "
              f"{r['relative_error']:.4f} (one cluster: {r['relative_error_one_cluster']:.4f}); "
              f"peak RSS +MiB {r['peak_rss_increase_mib']}")
    m = result["model"]
    print(f"model at {m['img_size']}: clustered/softmax {m['time_ratio_clustered_over_softmax']:.3f}, "
          f"clustered/factorized {m['time_ratio_clustered_over_factorized']:.3f}, medians "
          f"{ {k: round(v, 3) for k, v in m['median_s'].items()} }")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
