# ---
# jupyter:
#   accelerator: GPU
#   colab:
#     gpuType: T4
#     provenance: []
#   jupytext:
#     formats: ipynb,py:percent
#     notebook_metadata_filter: accelerator,colab
#     text_representation:
#       extension: .py
#       format_name: percent
#       format_version: '1.3'
#       jupytext_version: 1.19.6
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # Clustering tokens
#
# The chapters so far answered the seed's question as asked: clustering the *queries* of
# CoaT's attention cannot make CoaT-Lite cheaper, because the attention core is a sliver of
# its work. This chapter tries the variant that could: cluster the **tokens**, so that the
# projections and the MLP, where the work is, run on cluster prototypes. A block merges its
# image tokens into $K$ prototypes, runs its sub-layers on them, and broadcasts each
# prototype's update back to the tokens of its cluster.
#
# **Learning objectives**
#
# - see where CoaT-Lite's multiply-accumulates are, and what token clustering can remove;
# - write merge (size-weighted means) and unmerge (broadcast) by hand and check them against
#   `ccoat.token_clustering`;
# - form a fixed number of clusters three ways (windows, ToMe's bipartite matching
#   {cite:p}`bolya2023tome`, the seed's E2LSH) and look at them on real images;
# - read, from measurements, what each costs in accuracy for the speed it buys on a trained
#   model, without retraining and after a short fine-tune.

# %% tags=["hide-input"]
# On Colab, install ccoat first (elsewhere the environment already has it).
import sys

CCOAT_REPO = "https://github.com/ccoat-book/ccoat"
if "google.colab" in sys.modules:
    import subprocess

    subprocess.run(
        [sys.executable, "-m", "pip", "install", "-q", f"git+{CCOAT_REPO}"], check=True
    )

# %% tags=["hide-input"]
import ccoat  # first: it quiets a progress-bar warning timm prints in Jupyter

import copy
import json
import textwrap

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import torch
from IPython.display import display

from ccoat import cost
from ccoat import data as cdata
from ccoat import token_clustering as tc
from ccoat.plotting import glue, set_theme
from ccoat.provenance import results_file
from ccoat.runfolder import first_run
from ccoat.stats import bootstrap_interval, distinguishable
from ccoat.weights import load_weights, read_metadata

set_theme()
torch.manual_seed(0)
PROFILE = ccoat.get_profile()

# %% [markdown]
# ## Where the work is
#
# Counted on one 224 px image, CoaT-Lite Tiny spends its multiply-accumulates (MACs) as
# follows. Everything but the patch embeddings and the two convolutions (CPE, CRPE) runs
# token by token, so it shrinks in proportion to the number of tokens it runs on.

# %%
counts = cost.macs(ccoat.create_model("coat_lite_tiny"), img_size=224)
shares = (
    pd.Series({k: v for k, v in counts.items() if k != "total" and v})
    / counts["total"]
)
per_token = shares[
    [c for c in ("qkv", "proj", "mlp", "attention") if c in shares]
].sum()
glue("per_token_share", per_token)
glue("attention_share", shares.get("attention", 0.0))
(100 * shares.sort_values(ascending=False)).round(1).rename(
    "share of MACs (%)"
).to_frame()

# %% [markdown]
# The qkv and output projections, the attention core and the MLP are
# {glue:text}`per_token_share:.0%` of the work; the attention core alone, all that query
# clustering can touch, is {glue:text}`attention_share:.1%`.
#
# ## Merge and unmerge
#
# Given an assignment of the $N$ image tokens of one image to $K$ clusters, a cluster's
# *prototype* is the mean of its tokens, weighted by how many original tokens each one already
# stands for (its *size*; 1 for a plain token). *Unmerging* gives every token its cluster's
# prototype. Both are one scatter or one gather, for a whole batch whose images are clustered
# differently.


# %%
def merge_by_hand(x, assign, k, sizes=None):
    """(B, N, C), (B, N) in [0, k) -> prototypes (B, k, C) and cluster sizes (B, k)."""
    B, N, C = x.shape
    w = torch.ones(B, N) if sizes is None else sizes
    total = torch.zeros(B, k, C).scatter_add_(
        1, assign[..., None].expand(-1, -1, C), x * w[..., None]
    )
    size = torch.zeros(B, k).scatter_add_(1, assign, w)
    return total / size.clamp(min=1e-6)[..., None], size


def unmerge_by_hand(prototypes, assign):
    return prototypes.gather(1, assign[..., None].expand(-1, -1, prototypes.shape[-1]))


x = torch.randn(2, 6, 4)
assign = torch.tensor(
    [[0, 0, 1, 1, 2, 2], [0, 1, 1, 1, 2, 0]]
)  # two images, two clusterings
ours, theirs = merge_by_hand(x, assign, 3), tc.merge(x, assign, 3)
torch.testing.assert_close(ours, theirs)
torch.testing.assert_close(
    unmerge_by_hand(ours[0], assign), tc.unmerge(theirs[0], assign)
)
print("merge and unmerge by hand equal ccoat.token_clustering's")

# %% [markdown]
# ## Three ways to a fixed number of clusters
#
# A budget `keep` fixes the number of clusters of a stage with $N$ image tokens at
# $K = \mathrm{round}(\texttt{keep} \cdot N)$, whatever the image: shapes never depend on
# the data, so a batch stays a tensor and the GPU never waits for the host.
#
# - `"pool"` cuts the grid into about $K$ windows of neighbouring tokens: the trivial
#   baseline. If it does as well as the others, clustering is not worth its cost.
# - `"bipartite"` is ToMe's matching: split the tokens into two alternating sets, link each
#   token of the first set to its most similar token of the second (cosine similarity), and
#   merge the best-linked pairs, in rounds until $K$ are left.
# - `"lsh"` is the seed's E2LSH: the codes of the tokens, read lexicographically, give a sort
#   order in which tokens with equal codes are neighbours; it is cut into $K$ equal runs.
#
# A block on clusters forms its clusters once, from its input after the CPE, then merges
# before each sub-layer (attention, MLP) and unmerges after it, so the residual stream keeps
# every token. CPE and CRPE, the two convolutions, see the full grid. Attention is
# *proportional*: a prototype of $s$ tokens enters the softmax over keys with weight $s$,
# which is exact for CoaT's factorized attention when a cluster's tokens are equal.
#
# We look at the clusters of a CoaT-Lite Tiny trained on CIFAR-10 (the training chapter's
# equal-time run), at half of the tokens in stages 1 and 2.

# %%
weights = results_file(
    "gpu_budget_cifar10_coat_lite_tiny_cifar/model.safetensors", CCOAT_REPO
)
meta = read_metadata(weights)
trained = load_weights(
    ccoat.create_model(meta["model"], num_classes=10), weights
).eval()
_, test_set, info = cdata.build_datasets(
    ccoat.choose(smoke="digits", cpu="cifar10", gpu="cifar10")
)
shown = [test_set[i] for i in range(0, len(test_set), len(test_set) // 4)][:4]
images = torch.stack([image for image, _ in shown])

METHODS = {"pool": {}, "bipartite": {}, "lsh": {"seed": 0}}
records = {}
for method, options in METHODS.items():
    model = tc.cluster_tokens(copy.deepcopy(trained), method, keep=0.5, **options)
    with torch.no_grad(), tc.record_token_clusters(model) as rec:
        model(images)
    records[method] = rec


def cluster_map(record, image: int) -> np.ndarray:
    """The stage grid coloured by cluster, each cluster a random colour."""
    H, W = record["size"]
    ids = record["assign"][image].view(H, W).numpy()
    colours = np.random.default_rng(0).random((record["sizes"].shape[1], 3))
    return colours[ids]


mean, std = (
    torch.tensor(info.mean)[:, None, None],
    torch.tensor(info.std)[:, None, None],
)
fig, axes = plt.subplots(
    len(shown), 1 + 2 * len(METHODS), figsize=(8.5, 1.45 * len(shown))
)
for row, (image, _) in enumerate(shown):
    axes[row, 0].imshow((image * std + mean).clamp(0, 1).permute(1, 2, 0))
    for col, method in enumerate(METHODS):
        for s, block in enumerate(["stages.0.blocks.0", "stages.1.blocks.0"]):
            axes[row, 1 + 2 * col + s].imshow(cluster_map(records[method][block], row))
            if row == 0:
                axes[row, 1 + 2 * col + s].set_title(
                    f"{method}\nstage {s + 1}", fontsize=8
                )
axes[0, 0].set_title("image", fontsize=8)
for ax in axes.flat:
    ax.axis("off")
fig.suptitle("Token clusters at keep = 0.5 (one colour per cluster)", fontsize=10)
plt.show()

# %% [markdown]
# Windows ignore the image; bipartite matching and LSH put tokens of similar content together,
# whatever their place. (With the `smoke` profile the images are digits, which this CIFAR
# model has not seen.)
#
# ## Accuracy for speed, without retraining
#
# `python benchmarks/token_clustering.py` converted a trained model for every method and
# budget (stages 1 and 2; three hash draws for LSH), scored each on every test or val image
# with a bootstrap 95% interval, counted its MACs, and timed its forward pass on the CPU at
# batch 32 and batch 1, every configuration in turn within each round. It ran on two trained
# CoaT-Lite Tiny: the CIFAR-10 (JPEG copy) model above, whose 32 px images give stage 1 a
# 16×16 grid of 256 tokens, and the best-trained Imagenette model at 128 px
# (`results/imagenette128_gpu_coat_lite_tiny_e70`: 50 epochs on one H100), whose stage 1 has
# 32×32 = 1,024 tokens, where there is more to merge.


# %%
def sweep_rows(name):
    """The committed sweep ``results/name`` as a table (None: not committed)."""
    path = results_file(name, CCOAT_REPO)
    if path is None:
        return None, None
    bench = json.loads(path.read_text())
    return pd.DataFrame(bench["rows"]), bench["provenance"]


def accuracy_for_speed(ax, rows, title):
    """Top-1 against CPU images/s at batch 32 (relative to CoaT-Lite), a line per
    method; LSH's points are the mean of its hash draws, bars span every interval."""
    reference = rows.iloc[0]
    ax.errorbar(
        1.0,
        reference.top1,
        yerr=[
            [reference.top1 - reference.top1_ci95[0]],
            [reference.top1_ci95[1] - reference.top1],
        ],
        fmt="k*",
        ms=10,
        capsize=3,
        label="CoaT-Lite (no clustering)",
    )
    for method, group in rows.iloc[1:].groupby("method", sort=False):
        g = group.groupby("keep", sort=False).agg(
            speed=("speedup_batch32", "mean"),
            top1=("top1", "mean"),
            lo=("top1_ci95", lambda c: min(v[0] for v in c)),
            hi=("top1_ci95", lambda c: max(v[1] for v in c)),
        )
        ax.errorbar(
            g.speed,
            g.top1,
            yerr=[g.top1 - g.lo, g.hi - g.top1],
            marker="o",
            capsize=3,
            label=method,
        )
        for keep, r in g.iterrows():
            ax.annotate(
                f"{keep:g}",
                (r.speed, r.top1),
                textcoords="offset points",
                xytext=(5, -10),
                fontsize=7,
            )
    ax.set(xlabel="CPU images/s at batch 32, relative to CoaT-Lite", title=title)


sweeps = {
    "CIFAR-10 (JPEG copy), 32 px": sweep_rows("token_clustering_cifar10.json"),
    "Imagenette, 128 px": sweep_rows("token_clustering_imagenette128.json"),
}
sweeps = {
    k: v for k, v in sweeps.items() if v[0] is not None and "speedup_batch32" in v[0]
}
fig, axes = plt.subplots(1, len(sweeps), figsize=(5 * len(sweeps), 4), squeeze=False)
for ax, (title, (rows, _)) in zip(axes[0], sweeps.items()):
    accuracy_for_speed(ax, rows, title)
axes[0, 0].set(ylabel="top-1 (%), all test/val images")
axes[0, 0].legend(fontsize=8)
fig.suptitle("Token clustering without retraining (labels: keep)")
fig.tight_layout()
plt.show()


# %%
def verdict(rows):
    """The fastest setting within one point of CoaT-Lite, and LSH's accuracy rank."""
    reference = rows.iloc[0]
    means = (
        rows.iloc[1:]
        .groupby(["method", "keep"], sort=False)
        .agg(top1=("top1", "mean"), speed=("speedup_batch32", "mean"))
    )
    close = means[means.top1 >= reference.top1 - 1.0].sort_values("speed")
    smallest = means.xs(rows.keep.min(), level="keep").top1
    lsh_rank = int(smallest.rank(ascending=False)["lsh"])
    if len(close):
        (method, keep), best = close.index[-1], close.iloc[-1]
        best_text = f"{method} at keep {keep:g}, {best.speed:.2f}×"
        target = "reaches" if best.speed >= 1.5 else "misses"
    else:
        best_text, target = "none", "misses"
    return {
        "CoaT-Lite top-1 (%)": f"{reference.top1:.2f}",
        "fastest within 1 point": best_text,
        "1.5× at ≤ 1 point": target,
        "LSH's accuracy rank at the smallest keep": f"{lsh_rank} of 3",
    }


verdicts = {title: verdict(rows) for title, (rows, _) in sweeps.items()}
for title, v in verdicts.items():
    key = "tc_imagenette" if "Imagenette" in title else "tc_cifar"
    glue(f"{key}_best", v["fastest within 1 point"])
    glue(f"{key}_target", v["1.5× at ≤ 1 point"])
    glue(f"{key}_lsh_rank", v["LSH's accuracy rank at the smallest keep"])
display(pd.DataFrame(verdicts))
slower = {
    title: (rows.iloc[1:].speedup_batch1 < 1).sum()
    for title, (rows, _) in sweeps.items()
}
glue(
    "tc_batch1",
    " and ".join(
        f"{n} of {len(sweeps[t][0]) - 1} settings are slower than CoaT-Lite ({t})"
        for t, n in slower.items()
    ),
)
for title, (rows, prov) in sweeps.items():
    table = rows[
        ["config", "top1", "macs", "speedup_batch32", "speedup_batch1"]
    ].copy()
    table["macs"] = table.macs / 1e6
    print(
        textwrap.fill(
            f"{title}: {prov['dataset']}; {prov['device']}, {prov['date'][:10]}", 88
        )
    )
    display(
        table.rename(
            columns={
                "macs": "MMACs",
                "speedup_batch32": "speed b32",
                "speedup_batch1": "speed b1",
                "top1": "top-1 (%)",
            }
        )
        .set_index("config")
        .round(2)
    )

# %% [markdown]
# Within one point of CoaT-Lite, the fastest setting on CIFAR-10 is
# {glue:text}`tc_cifar_best` its CPU images/s at batch 32, and on Imagenette
# {glue:text}`tc_imagenette_best`: without retraining, token clustering
# {glue:text}`tc_imagenette_target` the 1.5× target on the larger grid
# ({glue:text}`tc_cifar_target` it on CIFAR). At the smallest budget the seed's LSH ranks
# {glue:text}`tc_imagenette_lsh_rank` in accuracy on Imagenette
# ({glue:text}`tc_cifar_lsh_rank` on CIFAR). At batch 1, {glue:text}`tc_batch1`: there,
# forming the clusters costs about what the smaller products save.
#
# ## Where to merge
#
# A block could merge its tokens around each sub-layer (merge, attention, unmerge; merge,
# MLP, unmerge), or once for the whole block. The two are the same computation: after the
# attention, each token of a cluster received the same update, so merging the updated tokens
# again gives the prototypes plus that update, exactly. `ccoat.token_clustering` therefore
# keeps the clusters through the block and saves the second merge (a test checks the two
# agree). Keeping them through a whole *stage* is a real choice: the stage's first block
# forms the clusters and the others reuse them (`cluster_tokens(..., scope="stage")`), which
# saves forming them again but lets them drift from the tokens they group. The benchmark
# measured both on the Imagenette model (a 1,000-image val subset, one hash draw).

# %%
scope_rows, scope_prov = sweep_rows("token_clustering_imagenette128_scope.json")
if scope_rows is not None and "speedup_batch32" in scope_rows:
    per = scope_rows.dropna(subset=["method"]).pivot_table(
        index=["method", "keep"], columns="scope", values=["top1", "speedup_batch32"]
    )
    line = (
        f"{scope_prov['dataset']}; {scope_prov['device']}, {scope_prov['date'][:10]}; "
        f"CoaT-Lite {scope_rows.top1.iloc[0]:.1f}% on these images"
    )
    print(textwrap.fill(line, 88))
    display(per.round(2))
    gain = (per["speedup_batch32"]["stage"] - per["speedup_batch32"]["block"]).mean()
    change = (per["top1"]["stage"] - per["top1"]["block"]).mean()
    glue(
        "tc_scope",
        f"reusing a stage's clusters changes the speed at batch 32 by {gain:+.2f}× "
        f"CoaT-Lite's and top-1 by {change:+.1f} points on average, on one subset",
    )
else:
    glue("tc_scope", "the measurement is not committed yet")
    print("results/token_clustering_imagenette128_scope.json is not committed")

# %% [markdown]
# Measured: {glue:text}`tc_scope`. The measurement favours forming the clusters once per
# stage where it is faster and no less accurate; the library's default stays per block
# because every committed model was trained and measured that way (`scope="stage"` is one
# argument away).
#
# ## On a GPU
#
# `benchmarks/token_clustering_gpu.py` timed the same configurations on one H100 at 128 px
# (batch 256, bf16 autocast; randomly initialised weights, since every shape is fixed by the
# budget), eager and, for CoaT-Lite and each method at keep 0.5, compiled with
# `torch.compile`; and it timed a training step (batch 128) of the configurations trained
# below. Speeds are relative to CoaT-Lite in the same round.

# %%
gpu = {}
for name in ("token_clustering_gpu.json", "token_clustering_gpu_compiled.json"):
    path = results_file(name, CCOAT_REPO)
    if path is not None:
        gpu.update(
            {
                k: v
                for k, v in json.loads(path.read_text()).items()
                if isinstance(v, dict) and "rows" in v
            }
        )
gpu_rows = {
    (section, row["config"]): row for section, v in gpu.items() for row in v["rows"]
}
if gpu_rows:
    gpu_table = pd.DataFrame(
        {
            f"{section} (batch {gpu[section]['batch_size']})": {
                config: f"{row['images_per_s']:,.0f} ({row['speedup']:.2f}×)"
                for (s, config), row in gpu_rows.items()
                if s == section
            }
            for section in gpu
        }
    ).fillna("")
    display(gpu_table)
    forward = [r for (s, _), r in gpu_rows.items() if s in ("forward", "compiled")]
    fastest = max(
        (r for r in forward if r["config"] != "coat_lite"), key=lambda r: r["speedup"]
    )
    glue("tc_gpu_fastest", f"{fastest['config']}, at {fastest['speedup']:.2f}×")
    glue(
        "tc_gpu_verdict",
        "no token clustering configuration is faster than CoaT-Lite by more than 5%"
        if fastest["speedup"] < 1.05
        else "token clustering is faster than CoaT-Lite",
    )
    glue("tc_gpu_target", "is met" if fastest["speedup"] >= 1.5 else "is not met")
else:
    for name in ("tc_gpu_fastest", "tc_gpu_verdict", "tc_gpu_target"):
        glue(name, "not measured")
    print("no GPU timings are committed")

# %% [markdown]
# On the GPU {glue:text}`tc_gpu_verdict`: the fastest is {glue:text}`tc_gpu_fastest`,
# eager or compiled, and the 1.5× target {glue:text}`tc_gpu_target`. Our reading, not
# measured here: CoaT-Lite Tiny at 128 px is too small for the H100's multiply-accumulates
# to be what limits it, rather the number of kernels it launches and the memory they move;
# merging and unmerging add kernels (scatter, gather, LSH's sorts, bipartite's rounds of
# matching), and CPE and CRPE still run on the full grid. A profile of the kernels would
# tell. The seed's clustered attention, for comparison, runs at a fraction of CoaT-Lite's
# speed.
#
# ## A short fine-tune
#
# A model converted without retraining meets clusters it never saw. Two epochs of training
# with them (4% of the reference's 50) show how much of the loss is adaptation rather than
# lost capacity. `benchmarks/finetune_token_clustering.sh` started from the reference weights
# (`--init`) with each method at keep 0.25, the budget where the sweep lost the most, and the
# recipe `imagenette128-finetune-cpu` (learning rate 1e-4 on a cosine, bf16 autocast, on the
# 2-core CPU). The reference stopped at epoch 50 of a 70-epoch schedule, so two more epochs
# might move CoaT-Lite itself: the same fine-tune of CoaT-Lite, without clustering, is the
# point of comparison. Every score is on all 3,925 val images, with its 95% interval; the
# speeds are the sweep's (fine-tuning changes weights, not shapes).

# %%
tuned_names = {
    None: "imagenette128_finetune_coat_lite_tiny",
    "pool": "imagenette128_finetune_pool25",
    "bipartite": "imagenette128_finetune_bipartite25",
    "lsh": "imagenette128_finetune_lsh25",
}
tuned = {m: first_run([n], CCOAT_REPO) for m, n in tuned_names.items()}
tuned = {m: r for m, r in tuned.items() if r is not None}
rows_in = sweeps.get("Imagenette, 128 px", (None, None))[0]
tune_facts = dict.fromkeys(
    ["ref", "best", "target2", "target15", "lsh", "recovered", "order"], "n/a"
)


def interval_bar(ax, x, top1, ci, **style):
    """One top-1 at speed ``x`` with its interval ``ci`` as a bar."""
    return ax.errorbar(
        x, top1, yerr=[[top1 - ci[0]], [ci[1] - top1]], capsize=3, **style
    )


if None in tuned and rows_in is not None and len(tuned) > 1:
    ref = tuned[None].eval
    converted = rows_in[rows_in.keep == 0.25].groupby("method").mean(numeric_only=True)
    # one row per method: its sweep speed and converted top-1, its tuned top-1
    runs = pd.DataFrame(
        {
            m: {
                "speed": converted.speedup_batch32[m],
                "before": converted.top1[m],
                "after": r.eval["top1"],
                "ci": r.eval["top1_ci95"],
            }
            for m, r in tuned.items()
            if m is not None
        }
    ).T.infer_objects()
    runs["gap"] = runs.after - ref["top1"]
    apart = [
        distinguishable(ref["top1"], ref["top1_ci95"], r.after, r.ci)
        for r in runs.itertuples()
    ]
    table = pd.DataFrame(
        {
            "converted top-1 (%)": runs.before.map("{:.1f}".format),
            "tuned top-1 (%)": runs.after.map("{:.1f}".format),
            "95% interval": runs.ci.map("{0[0]:.1f}–{0[1]:.1f}".format),
            "vs tuned CoaT-Lite": [
                f"{g:+.1f}" + ("" if a else " (noise)")
                for g, a in zip(runs.gap, apart)
            ],
            "CPU speed b32": runs.speed.map("{:.2f}×".format),
        }
    ).rename(index=lambda m: f"{m}, keep 0.25")
    reference_row = pd.DataFrame(
        [
            [
                f"{rows_in.top1.iloc[0]:.1f}",
                f"{ref['top1']:.1f}",
                "{0[0]:.1f}–{0[1]:.1f}".format(ref["top1_ci95"]),
                "",
                "1.00×",
            ]
        ],
        index=["CoaT-Lite (no clustering)"],
        columns=table.columns,
    )
    display(pd.concat([reference_row, table]))
    fig, ax = plt.subplots(figsize=(6.5, 3.8))
    interval_bar(
        ax,
        1.0,
        ref["top1"],
        ref["top1_ci95"],
        fmt="k*",
        ms=10,
        label="CoaT-Lite, tuned",
    )
    for method, r in runs.iterrows():
        bar = interval_bar(
            ax, r.speed, r.after, r.ci, fmt="o", label=f"{method}, tuned"
        )
        colour = bar.lines[0].get_color()
        ax.plot([r.speed], [r.before], "o", mfc="none", color=colour)
        ax.annotate(
            "",
            (r.speed, r.after),
            (r.speed, r.before),
            arrowprops=dict(arrowstyle="->", color=colour),
        )
    ax.set(
        xlabel="CPU images/s at batch 32, relative to CoaT-Lite",
        ylabel="top-1 (%), all 3,925 val images",
        title="keep 0.25: converted (hollow) and after two epochs (filled)",
    )
    ax.legend(fontsize=8)
    plt.show()
    best, led = runs.after.idxmax(), runs.before.idxmax()
    within = runs[runs.gap >= -1.0]
    if len(within):
        target15 = (
            "within one point of it are "
            + ", ".join(f"{m} ({v:.2f}×)" for m, v in within.speed.items())
            + ": the 1.5× target after a fine-tune is "
            + ("met" if within.speed.max() >= 1.5 else "missed")
        )
    else:
        target15 = (
            "none comes within one point of it, so the targets after a fine-tune are "
            "missed"
        )
    fastest = rows_in.speedup_batch32.max()
    recovered = (runs.after - runs.before) / (ref["top1"] - runs.before)
    tune_facts.update(
        ref=f"{ref['top1']:.1f}% (the reference: {rows_in.top1.iloc[0]:.1f}%)",
        best=f"{best}, at {runs.after[best]:.1f}% ({runs.gap[best]:+.1f} points)",
        target2=f"no budget measured reaches 2× (the fastest: {fastest:.2f}×)"
        if fastest < 2
        else "see the table",
        target15=target15,
        recovered=", ".join(f"{v:.0%} ({m})" for m, v in recovered.items()),
        order=f"{best} keeps the lead it had when converted"
        if best == led
        else f"{best} leads after tuning, where {led} led when converted",
        lsh=f"{runs.after['lsh']:.1f}% against {runs.after['pool']:.1f}% (pool) and "
        f"{runs.after['bipartite']:.1f}% (bipartite)"
        if {"lsh", "pool", "bipartite"} <= set(runs.index)
        else "n/a",
    )
else:
    print("the fine-tuned runs (results/imagenette128_finetune_*) are not committed")
for name, value in tune_facts.items():
    glue(f"tc_tune_{name}", value)

# %% [markdown]
# Tuned the same way, CoaT-Lite reaches {glue:text}`tc_tune_ref`. Of the clustered models
# the best after two epochs is {glue:text}`tc_tune_best` against it (the table says whether
# the intervals tell them apart), and {glue:text}`tc_tune_target15`. Of the gap between
# each converted model and the tuned CoaT-Lite, two epochs closed
# {glue:text}`tc_tune_recovered`; {glue:text}`tc_tune_order`. The 2× target after
# fine-tuning cannot be met at these budgets: {glue:text}`tc_tune_target2`, because CPE,
# CRPE, stages 3 and 4 and the merging itself still run at full cost. The seed's LSH
# reaches {glue:text}`tc_tune_lsh`. One seed per run: an interval covers the test images,
# not the training's randomness.
#
# ## Trained with token clustering, from scratch
#
# The seed's promise is a lighter CoaT that *trains* in less time. Two CoaT-Lite Tiny were
# trained from scratch with their stages 1 and 2 on a quarter of their tokens (`pool` and
# `lsh`, `--token-clustering METHOD --keep 0.25`), beside CoaT-Lite Tiny and Clustering CoaT
# Tiny, with one recipe (`imagenette128-gpu`, 14 epochs, on one H100; the four ran side by
# side, so their recorded images/s are not a speed measurement: the training speeds are the
# quiet-GPU timings above).

# %%
scratch_names = {
    "CoaT-Lite Tiny": "imagenette128_gpu_coat_lite_tiny",
    "tokens: pool, keep 0.25": "imagenette128_gpu_coat_lite_tiny_pool25",
    "tokens: lsh, keep 0.25": "imagenette128_gpu_coat_lite_tiny_lsh25",
    "Clustering CoaT Tiny (queries)": "imagenette128_gpu_ccoat_lite_tiny",
}
train_speed = {
    "CoaT-Lite Tiny": "coat_lite",
    "tokens: pool, keep 0.25": "pool keep=0.25",
    "tokens: lsh, keep 0.25": "lsh keep=0.25",
    "Clustering CoaT Tiny (queries)": "clustered",
}
scratch = {k: first_run([v], CCOAT_REPO) for k, v in scratch_names.items()}
scratch = {k: r for k, r in scratch.items() if r is not None}
cpu_path = results_file("token_clustering_cpu_train.json", CCOAT_REPO)
cpu_train = (
    {r["config"]: r for r in json.loads(cpu_path.read_text())["train"]["rows"]}
    if cpu_path
    else {}
)
summary = {}
fig, ax = plt.subplots(figsize=(7, 3.6))
for name, r in scratch.items():
    style = "o--" if "queries" in name else "o-"  # the seed's clustered attention
    ax.plot(r.metrics.epoch, r.metrics.val_top1, style, ms=3, label=name)
    speed = gpu_rows.get(("train", train_speed[name]))
    summary[name] = {
        "epochs": len(r.metrics),
        "val top-1 (%), all 3,925": f"{r.eval['top1']:.1f}",
        "95% interval": "{:.1f}–{:.1f}".format(*r.eval["top1_ci95"]),
        "training images/s, quiet H100": f"{speed['images_per_s']:,.0f}"
        if speed
        else "n/a",
        "relative": f"{speed['speedup']:.2f}×" if speed else "n/a",
        "training speed, CPU": f"{cpu_train[train_speed[name]]['speedup']:.2f}×"
        if train_speed[name] in cpu_train
        else "n/a",
    }
ax.set(xlabel="epoch", ylabel="val top-1 (%), 1,000-image subset")
ax.legend(fontsize=8)
ax.set_title("Imagenette at 128 px, trained from scratch with one recipe")
plt.show()
display(pd.DataFrame(summary).T)
facts = dict.fromkeys(
    [
        "ref",
        "epochs",
        "pool",
        "pool_vs",
        "lsh",
        "lsh_vs",
        "pool_lsh",
        "speed",
        "cpu_speed",
        "cpu_verdict",
        "convert",
    ],
    "n/a",
)
pair = ("tokens: pool, keep 0.25", "tokens: lsh, keep 0.25")
if {"CoaT-Lite Tiny", *pair} <= set(scratch):
    ref = scratch["CoaT-Lite Tiny"].eval
    for key, name in zip(("pool", "lsh"), pair):
        e = scratch[name].eval
        apart = distinguishable(
            ref["top1"], ref["top1_ci95"], e["top1"], e["top1_ci95"]
        )
        facts[key] = f"{e['top1']:.1f}%"
        facts[f"{key}_vs"] = f"{e['top1'] - ref['top1']:+.1f} points, " + (
            "outside the intervals" if apart else "inside the intervals: noise"
        )
    p, q = (scratch[name].eval for name in pair)
    facts["pool_lsh"] = (
        "indistinguishable on these images"
        if not distinguishable(p["top1"], p["top1_ci95"], q["top1"], q["top1_ci95"])
        else "apart beyond the intervals, "
        + ("pooling" if p["top1"] > q["top1"] else "LSH")
        + " ahead"
    )
    facts.update(
        ref=f"{ref['top1']:.1f}%", epochs=str(len(scratch["CoaT-Lite Tiny"].metrics))
    )
speeds = [gpu_rows.get(("train", train_speed[name])) for name in pair]
if all(speeds):
    facts["speed"] = " and ".join(f"{r['speedup']:.2f}×" for r in speeds)
if all(train_speed[name] in cpu_train for name in pair):
    cpu_speeds = [cpu_train[train_speed[name]]["speedup"] for name in pair]
    facts["cpu_speed"] = " and ".join(f"{v:.2f}×" for v in cpu_speeds)
    facts["cpu_verdict"] = (
        "there token clustering does train in less time, at the accuracy above"
        if min(cpu_speeds) > 1.05
        else "not even there does token clustering train in clearly less time"
    )
if rows_in is not None:
    at = rows_in[rows_in.keep == 0.25].groupby("method").top1.mean()
    loss = rows_in.iloc[0].top1 - at
    facts["convert"] = (
        f"{loss['pool']:.1f} (pool) and {loss['lsh']:.1f} (lsh) points below its "
        f"{rows_in.iloc[0].top1:.1f}%"
    )
for name, value in facts.items():
    glue(f"tc_scratch_{name}", value)

# %% [markdown]
# After the same {glue:text}`tc_scratch_epochs` epochs CoaT-Lite reaches
# {glue:text}`tc_scratch_ref` on all val images, the model on pooled tokens
# {glue:text}`tc_scratch_pool` ({glue:text}`tc_scratch_pool_vs`) and the model on LSH
# clusters {glue:text}`tc_scratch_lsh` ({glue:text}`tc_scratch_lsh_vs`); pooling and LSH
# are {glue:text}`tc_scratch_pool_lsh`. Converted without retraining at the same budget,
# the better-trained Imagenette model falls {glue:text}`tc_scratch_convert`: trained with its
# clusters, a model adapts to them. But on the GPU the two train at
# {glue:text}`tc_scratch_speed` CoaT-Lite's images/s (the timings above), so the seed's claim
# of less training time does not hold there: in equal GPU time CoaT-Lite would have trained
# longer. On the 2-core CPU, where the smaller products do pay, a training step of the two
# runs at {glue:text}`tc_scratch_cpu_speed` CoaT-Lite's
# (`benchmarks/token_clustering_gpu.py --device cpu --sections train`, batch 64, float32, in
# one run): {glue:text}`tc_scratch_cpu_verdict`. Not done here, for want of GPU time:
# several seeds of each run.
