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
#       jupytext_version: 1.19.7
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # Clustering tokens
#
# The chapters so far clustered the *queries* of CoaT's attention, and found that this
# cannot make CoaT-Lite cheaper: the attention core is a sliver of its work. This chapter
# asks what clustering the **tokens** buys, so that the projections and the MLP, where the
# work is, run on $K$ cluster prototypes instead of $N$ tokens.
#
# **The answer: a little CPU speed, less than the project's own target.** Converted without
# retraining, the fastest setting within one point of CoaT-Lite's accuracy on Imagenette is
# ToMe's bipartite matching at keep [0.5](#tc_in_best_keep:g), at
# [1.06](#tc_in_best_speed:.2f)× CoaT-Lite's CPU images/s. After a two-epoch fine-tune
# the best trade is bipartite matching at keep 0.25:
# [1.23](#tc_tune_bipartite_speed:.2f)× the CPU speed,
# [1.1](#tc_tune_bipartite_behind:.1f) points behind CoaT-Lite fine-tuned the same
# way. The project's target, 1.5× the images/s at a cost of at most one point, is missed
# both ways; on an H100 none was faster than CoaT-Lite by even 1%.
#
# **Prerequisites.** The CoaT-Lite block of chapters 1 and 4 (CPE, CRPE, factorized
# attention), E2LSH from chapter 2, and the cost chapter's account of where CoaT-Lite's
# multiply-accumulates go.
#
# **Learning objectives**
#
# - see where CoaT-Lite's multiply-accumulates are, and what token clustering can remove;
# - write merge (size-weighted means) and unmerge (broadcast) by hand and check them
#   against `ccoat.token_clustering`;
# - form a fixed number of clusters three ways (windows, ToMe's bipartite matching
#   {cite:p}`bolya2023tome`, the seed's E2LSH) and look at them on real photos;
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

import matplotlib.pyplot as plt
import pandas as pd
import torch
import torch.nn.functional as F
from IPython.display import display

from ccoat import cost
from ccoat import token_clustering as tc
from ccoat.data import sample_photos
from ccoat.plotting import plot_intervals, set_theme
from ccoat.prose import glue
from ccoat.provenance import read_results
from ccoat.runfolder import read_run
from ccoat.stats import paired_difference

set_theme()
torch.manual_seed(0)
print("profile:", ccoat.get_profile())


# %% [markdown]
# Every measurement below is read from a file committed under `results/`; a missing file
# stops the chapter with an error that names it.


# %% [markdown]
# ## Where the work is
#
# Counted on one 224 px image, CoaT-Lite Tiny spends its multiply-accumulates (MACs) as
# follows (a count of operations, so freshly initialised weights do as well as trained
# ones). Everything but the patch embeddings and the two convolutions (CPE, CRPE) runs
# token by token, so it shrinks in proportion to the number of tokens it runs on.

# %%
counts = cost.macs(ccoat.create_model("coat_lite_tiny"), img_size=224)
shares = (
    pd.Series({k: v for k, v in counts.items() if k != "total" and v})
    / counts["total"]
)
per_token = shares[["qkv", "proj", "mlp", "attention"]].sum()
assert shares["attention"] < 0.1 < per_token, "the text calls the core a sliver"
glue("per_token_share", per_token)
glue("attention_share", shares["attention"])
(100 * shares.sort_values(ascending=False)).round(1).rename(
    "share of MACs (%)"
).to_frame()

# %% [markdown]
# The qkv and output projections, the attention core and the MLP are
# [93%](#per_token_share:.0%) of the work; the attention core alone, all that query
# clustering can touch, is [1.4%](#attention_share:.1%).
#
# ## Merge and unmerge
#
# Given an assignment of the $N$ image tokens of one image to $K$ clusters, a cluster's
# *prototype* is the mean of its tokens, weighted by how many original tokens each one
# already stands for (its *size*; 1 for a plain token). *Unmerging* gives every token its
# cluster's prototype. Both are one scatter or one gather, for a whole batch whose images
# are clustered differently.


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
    """(B, k, C), (B, N) -> (B, N, C): every token gets its cluster's prototype."""
    return prototypes.gather(1, assign[..., None].expand(-1, -1, prototypes.shape[-1]))


# %% [markdown]
# Two images of six random tokens, clustered differently, check both against the library:

# %%
x = torch.randn(2, 6, 4)
assign = torch.tensor([[0, 0, 1, 1, 2, 2], [0, 1, 1, 1, 2, 0]])
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
# - `"lsh"` is the seed's E2LSH: the codes of the tokens, read lexicographically, give a
#   sort order in which tokens with equal codes are neighbours; it is cut into $K$ equal
#   runs.
#
# A block on clusters forms its clusters once, from its input after the CPE, then merges
# before each sub-layer (attention, MLP) and unmerges after it, so the residual stream
# keeps every token. CPE and CRPE, the two convolutions, see the full grid. Attention is
# *proportional*: a prototype of $s$ tokens enters the softmax over keys with weight $s$,
# which is exact for CoaT's factorized attention when a cluster's tokens are equal.
#
# We look at the clusters of the best-trained CoaT-Lite Tiny on Imagenette at 128 px
# (`results/imagenette128_gpu_coat_lite_tiny_e70`: 50 epochs of a 70-epoch schedule on one
# H100, trained weights),
# at half of the tokens in stages 1 and 2, on two photos that ship with scikit-learn.

# %%
trained = read_run(
    "imagenette128_gpu_coat_lite_tiny_e70", CCOAT_REPO, required=True
).load_model()
photos = sample_photos(128, 2)  # (2, 3, 128, 128), normalised as the model takes them
METHODS = {"pool": {}, "bipartite": {}, "lsh": {"seed": 0}}
records = {}
for method, options in METHODS.items():
    model = tc.cluster_tokens(copy.deepcopy(trained), method, keep=0.5, **options)
    with torch.no_grad(), tc.record_token_clusters(model) as rec:
        model(photos)
    records[method] = rec


# %%
def painted(photo, record, image: int) -> torch.Tensor:
    """The photo at the stage's grid, each token painted its cluster's mean colour."""
    H, W = record["size"]
    pixels = F.adaptive_avg_pool2d(photo, (H, W)).flatten(1).T[None]  # (1, N, 3)
    assign = record["assign"][image][None]  # (1, N)
    colours, _ = tc.merge(pixels, assign, record["sizes"].shape[1])  # (1, K, 3)
    return tc.unmerge(colours, assign)[0].view(H, W, 3).clamp(0, 1)


BLOCKS = [
    "stages.0.blocks.0",
    "stages.1.blocks.0",
]  # the first block of stages 1 and 2
fig, axes = plt.subplots(2, 1 + 2 * len(METHODS), figsize=(10, 3.6))
for row, photo in enumerate(sample_photos(128, 2, normalize=False)):
    axes[row, 0].imshow(photo.clamp(0, 1).permute(1, 2, 0))
    for col, method in enumerate(METHODS):
        for s, block in enumerate(BLOCKS):
            ax = axes[row, 1 + 2 * col + s]
            ax.imshow(painted(photo, records[method][block], row))
            ax.set_title(f"{method}\nstage {s + 1}" if row == 0 else "", fontsize=8)
axes[0, 0].set_title("photo", fontsize=8)
for ax in axes.flat:
    ax.axis("off")
fig.suptitle(
    "Token clusters at keep = 0.5, each painted its mean colour", fontsize=10, y=1.02
)
plt.show()

# %% [markdown]
# Painting each token with its cluster's mean colour shows what a block's sub-layers see.
# Windows blur the photo into blocks, whatever it shows. Bipartite matching merges tokens
# of like content, so that the outlines of the tower and of the flower stay sharp. The
# seed's LSH groups tokens whose features hash alike, wherever they lie, and cuts its sort
# order into equal runs: in stage 2 its clusters mix colours from across the photo, the
# speckle of the last column.
#
# ## Accuracy for speed, without retraining
#
# `python benchmarks/token_clustering.py` converted a trained model for every method and
# budget (stages 1 and 2; three hash draws for LSH), scored each on every test or val image
# with a bootstrap 95% interval, counted its MACs, and timed its forward pass on the CPU at
# batch 32 and batch 1, every configuration in turn within each round. It ran on two
# trained CoaT-Lite Tiny: the CIFAR-10 (JPEG copy) model of the training chapter, whose 32
# px images give stage 1 a 16×16 grid of 256 tokens, and the Imagenette model above, whose
# stage 1 has 32×32 = 1,024 tokens, where there is more to merge. In the figure the dotted
# lines mark the project's own target: 1.5× CoaT-Lite's speed, at most one point below it.


# %%
def sweep(name):
    """A committed sweep ``results/name``: its rows (row 0: CoaT-Lite), provenance."""
    bench = read_results(name, CCOAT_REPO)
    return pd.DataFrame(bench["rows"]), bench["provenance"]


def per_setting(rows):
    """One row per (method, keep): LSH's hash draws averaged, its bar spanning all."""
    return (
        rows.iloc[1:]
        .groupby(["method", "keep"], sort=False)
        .agg(
            top1=("top1", "mean"),
            low=("top1_ci95", lambda c: min(v[0] for v in c)),
            high=("top1_ci95", lambda c: max(v[1] for v in c)),
            speed=("speedup_batch32", "mean"),
        )
    )


CIFAR, IMAGENETTE = "CIFAR-10 (JPEG copy), 32 px", "Imagenette, 128 px"
sweeps = {
    CIFAR: sweep("token_clustering_cifar10.json"),
    IMAGENETTE: sweep("token_clustering_imagenette128.json"),
}
settings = {title: per_setting(rows) for title, (rows, _) in sweeps.items()}

# %%
fig, axes = plt.subplots(1, 2, figsize=(10, 4))
for ax, (title, (rows, _)) in zip(axes, sweeps.items()):
    ref = rows.iloc[0]
    plot_intervals(
        1.0, ref.top1, *ref.top1_ci95, ax=ax, fmt="k*", ms=10, label="CoaT-Lite"
    )
    for method, g in settings[title].groupby(level="method", sort=False):
        keeps = [f"{k:g}" for k in g.index.get_level_values("keep")]
        plot_intervals(
            g.speed, g.top1, g.low, g.high, ax=ax, labels=keeps, label=method
        )
    ax.axhline(
        ref.top1 - 1, color="gray", ls=":", lw=1
    )  # the target: within one point
    ax.axvline(1.5, color="gray", ls=":", lw=1)  # ... at 1.5x the speed
    ax.set(xlabel="CPU images/s at batch 32, relative to CoaT-Lite", title=title)
axes[0].set(ylabel="top-1 (%), all test/val images")
axes[0].legend(fontsize=8)
fig.suptitle("Token clustering without retraining (labels: keep)")
fig.tight_layout()
plt.show()


# %%
def fastest_within_one_point(title):
    """The fastest (method, keep) at most one point below CoaT-Lite, and its speed."""
    close = settings[title][settings[title].top1 >= sweeps[title][0].top1[0] - 1.0]
    return close.speed.idxmax(), close.speed.max()


for key, title in (("in", IMAGENETTE), ("cifar", CIFAR)):
    (method, keep), speed = fastest_within_one_point(title)
    assert method == "bipartite", f"the text names bipartite matching ({title})"
    assert speed < 1.5, f"the text says the project's target is missed ({title})"
    glue(f"tc_{key}_best_keep", keep)
    glue(f"tc_{key}_best_speed", speed)
    smallest = settings[title].xs(0.25, level="keep")
    assert smallest.top1.idxmin() == "lsh", "the text says LSH is last at keep 0.25"
    glue(f"tc_{key}_lsh25", smallest.top1["lsh"])
    glue(f"tc_{key}_bip25", smallest.top1["bipartite"])
    rows = sweeps[title][0].iloc[1:]
    slower = int((rows.speedup_batch1 < 1).sum())
    assert slower > len(rows) / 2, "the text says most settings are slower at batch 1"
    glue(f"tc_{key}_slower_b1", slower)
    glue(f"tc_{key}_configs", len(rows))
glue("tc_in_ref", sweeps[IMAGENETTE][0].top1[0])

# %% [markdown]
# The measured numbers, every configuration (the hash draws of LSH apart), with MACs in
# millions and the speeds relative to CoaT-Lite:

# %%
for title, (rows, prov) in sweeps.items():
    caption = f"{title}: {prov['dataset']}; {prov['device']}, {prov['date'][:10]}"
    table = rows[["config", "top1", "macs", "speedup_batch32", "speedup_batch1"]]
    names = {
        "macs": "MMACs",
        "speedup_batch32": "speed b32",
        "speedup_batch1": "speed b1",
    }
    display(
        table.assign(macs=table.macs / 1e6)
        .rename(columns=names | {"top1": "top-1 (%)"})
        .set_index("config")
        .style.format(precision=2)
        .set_caption(caption)
    )

# %% [markdown]
# Within one point of CoaT-Lite, the fastest setting is bipartite matching in both sweeps:
# at keep [0.5](#tc_in_best_keep:g) on Imagenette, [1.06](#tc_in_best_speed:.2f)×
# CoaT-Lite's CPU images/s at batch 32, and at keep [0.75](#tc_cifar_best_keep:g) on
# CIFAR-10, [1.01](#tc_cifar_best_speed:.2f)×. Without retraining, token clustering
# misses the project's target of 1.5× at a cost of at most one point on both grids. At the
# smallest budget, keep 0.25, the seed's LSH is the least accurate of the three: on
# Imagenette it scores [49.6](#tc_in_lsh25:.1f)% (mean of three hash draws) where
# bipartite matching keeps [80.3](#tc_in_bip25:.1f)% and CoaT-Lite scores
# [83.3](#tc_in_ref:.1f)%. At batch 1, [14](#tc_in_slower_b1) of
# [15](#tc_in_configs) configurations on Imagenette and
# [15](#tc_cifar_slower_b1) of [15](#tc_cifar_configs) on CIFAR-10 are slower
# than CoaT-Lite: with one image, forming the clusters costs about what the smaller
# products save.
#
# ## Where to merge
#
# A block could merge its tokens around each sub-layer (merge, attention, unmerge; merge,
# MLP, unmerge), or once for the whole block. The two are the same computation: after the
# attention, each token of a cluster received the same update, so merging the updated
# tokens again gives the prototypes plus that update, exactly. `ccoat.token_clustering`
# therefore keeps the clusters through the block and saves the second merge (a test checks
# the two agree). Keeping them through a whole *stage* is a real choice: the stage's first
# block forms the clusters and the others reuse them (`cluster_tokens(...,
# scope="stage")`), which saves forming them again but lets them drift from the tokens they
# group. The benchmark measured both on the Imagenette model (a 1,000-image val subset, one
# hash draw).

# %%
scope_rows, scope_prov = sweep("token_clustering_imagenette128_scope.json")
per = scope_rows.dropna(subset=["method"]).pivot_table(
    index=["method", "keep"], columns="scope", values=["top1", "speedup_batch32"]
)
print(f"{scope_prov['dataset']}; CoaT-Lite {scope_rows.top1[0]:.1f}% on these images")
names = {"speedup_batch32": "CPU speed b32 (×)", "top1": "top-1 (%)"}
display(
    per.rename(columns=names)
    .rename_axis(columns=[None, "clusters formed per"])
    .round(2)
)
gain = per["speedup_batch32"]["stage"] - per["speedup_batch32"]["block"]
change = per["top1"]["stage"] - per["top1"]["block"]
assert (gain > 0).all(), "the text says a stage's clusters are faster in every setting"
assert change.min() > -1, "the text says a stage's clusters cost no accuracy"
glue("tc_scope_gain", gain.mean())
glue("tc_scope_change_min", change.min())
glue("tc_scope_change_max", change.max())

# %% [markdown]
# Reusing a stage's clusters was faster in all four settings measured, by
# [+0.06](#tc_scope_gain:+.2f)× CoaT-Lite's images/s at batch 32 on average, and changed
# top-1 by [-0.1](#tc_scope_change_min:+.1f) to [+4.7](#tc_scope_change_max:+.1f)
# points, on one subset and one hash draw. The measurement favours forming the clusters
# once per stage; the library's default stays per block because every committed model was
# trained and measured that way (`scope="stage"` is one argument away).
#
# ## On a GPU
#
# `benchmarks/token_clustering_gpu.py` timed the same configurations on one H100 at 128 px
# (batch 256, bf16 autocast; randomly initialised weights, since every shape is fixed by
# the budget and time does not depend on the weights), eager and, for CoaT-Lite and each
# method at keep 0.5, compiled with `torch.compile`; and it timed a training step (batch
# 128) of the configurations trained below. Speeds are relative to CoaT-Lite in the same
# round; `clustered` is the seed's clustered attention (Clustering CoaT).


# %%
files = [
    read_results(f"token_clustering_gpu{s}.json", CCOAT_REPO)
    for s in ("", "_compiled")
]
for file in files:
    print(file["provenance"]["device"], file["provenance"]["date"][:10])
gpu = {**files[0], **files[1]}  # sections forward and train; compiled
speeds = {
    section: {r["config"]: r for r in gpu[section]["rows"]}
    for section in ("forward", "compiled", "train")
}
display(
    pd.DataFrame(
        {
            f"{section} (batch {gpu[section]['batch_size']})": {
                config: f"{r['images_per_s']:,.0f} ({r['speedup']:.2f}×)"
                for config, r in rows.items()
            }
            for section, rows in speeds.items()
        }
    ).fillna("")
)

# %%
variants = {
    (section, config): r["speedup"]
    for section in ("forward", "compiled")
    for config, r in speeds[section].items()
    if config not in ("coat_lite", "clustered")
}
fastest = max(variants, key=variants.get)
assert fastest == ("forward", "pool keep=0.25"), "the text names eager pool at 0.25"
assert variants[fastest] < 1.01, "the text says no variant was faster by 1% or more"
compiled = max(v for (s, _), v in variants.items() if s == "compiled")
assert compiled < 1, "the text says every compiled variant was slower"
train_gpu = [
    speeds["train"][c]["speedup"] for c in ("pool keep=0.25", "lsh keep=0.25")
]
assert max(train_gpu) < 1, "the text says token clustering trains slower on the GPU"
glue("tc_gpu_fastest", variants[fastest])
glue("tc_gpu_compiled", compiled)
glue("tc_gpu_train_pool", train_gpu[0])
glue("tc_gpu_train_lsh", train_gpu[1])

# %% [markdown]
# On the H100 no token-clustering variant was faster than CoaT-Lite by as much as 1%: the
# fastest, pool at keep 0.25 run eagerly, reached [1.003](#tc_gpu_fastest:.3f)×
# CoaT-Lite's images/s, the fastest compiled one [0.88](#tc_gpu_compiled:.2f)×, and a
# training step on pooled or LSH clusters at keep 0.25 ran at
# [0.641](#tc_gpu_train_pool:.3f)× and [0.636](#tc_gpu_train_lsh:.3f)×. Our reading,
# not measured here: CoaT-Lite Tiny at 128 px is too small for the H100's
# multiply-accumulates to be what limits it, rather the number of kernels it launches and
# the memory they move; merging and unmerging add kernels (scatter, gather, LSH's sorts,
# bipartite's rounds of matching), and CPE and CRPE still run on the full grid. A profile
# of the kernels would tell. The seed's clustered attention, for comparison, runs at a
# fraction of CoaT-Lite's speed.
#
# ## A short fine-tune
#
# A model converted without retraining meets clusters it never saw. Two epochs of training
# with them (4% of the reference's 50) show how much of the loss is adaptation rather than
# lost capacity. `benchmarks/finetune_token_clustering.sh` started from the reference
# weights (`--init`) with each method at keep 0.25, the budget where the sweep lost the
# most, and the recipe `imagenette128-finetune-cpu` (learning rate 1e-4 on a cosine, bf16
# autocast, on the 2-core CPU; the weights were not committed). The reference stopped at
# epoch 50 of a 70-epoch schedule, so two more epochs might move CoaT-Lite itself: the same
# fine-tune of CoaT-Lite, without clustering, is the point of comparison. Every score is on
# all 3,925 val images, with its 95% interval; the speeds are the sweep's (fine-tuning
# changes weights, not shapes).

# %%
TUNED = {
    "CoaT-Lite": "imagenette128_finetune_coat_lite_tiny",
    "pool": "imagenette128_finetune_pool25",
    "bipartite": "imagenette128_finetune_bipartite25",
    "lsh": "imagenette128_finetune_lsh25",
}
tuned_runs = {
    m: read_run(name, CCOAT_REPO, required=True) for m, name in TUNED.items()
}
control_run = tuned_runs.pop("CoaT-Lite")
tuned = {m: run.eval for m, run in tuned_runs.items()}
control = control_run.eval
converted = settings[IMAGENETTE].xs(0.25, level="keep")
pairs = {
    m: paired_difference(run.hits(), control_run.hits())
    for m, run in tuned_runs.items()
}
runs = pd.DataFrame(
    {
        "speed": converted.speed[list(tuned)],
        "before": converted.top1[list(tuned)],
        "after": [e["top1"] for e in tuned.values()],
        "low": [e["top1_ci95"][0] for e in tuned.values()],
        "high": [e["top1_ci95"][1] for e in tuned.values()],
        "gap": [d.delta for d in pairs.values()],
        "gap_high": [d.high for d in pairs.values()],
    }
)
runs["closed"] = (runs.after - runs.before) / (control["top1"] - runs.before)

# %%
display(
    pd.DataFrame(
        {
            "converted (%)": runs.before.round(1),
            "tuned (%)": runs.after.round(1),
            "95% interval": [f"{r.low:.1f}–{r.high:.1f}" for r in runs.itertuples()],
            "tuned minus tuned CoaT-Lite, paired": [str(d) for d in pairs.values()],
            "gap closed": runs.closed.map("{:.0%}".format),
            "CPU speed b32": runs.speed.round(2),
        }
    ).rename(index=lambda m: f"{m}, keep 0.25")
)

# %%
fig, ax = plt.subplots(figsize=(6.5, 3.8))
low, high = control["top1_ci95"]
plot_intervals(
    1.0, control["top1"], low, high, ax=ax, fmt="k*", ms=10, label="CoaT-Lite"
)
for method, r in runs.iterrows():
    bar = plot_intervals(r.speed, r.after, r.low, r.high, ax=ax, label=method)
    colour = bar.lines[0].get_color()
    ax.plot([r.speed], [r.before], "o", mfc="none", color=colour)
    arrow = dict(arrowstyle="->", color=colour)
    ax.annotate("", (r.speed, r.after), (r.speed, r.before), arrowprops=arrow)
ax.set(
    xlabel="CPU images/s at batch 32, relative to CoaT-Lite",
    ylabel="top-1 (%), all 3,925 val images",
    title="keep 0.25: converted (hollow), after two epochs (filled)",
)
ax.legend(fontsize=8)
plt.show()

# %%
assert runs.after.idxmax() == "bipartite", (
    "the text names bipartite the best after tuning"
)
assert (runs.after > runs.before).all(), "the text says two epochs raised every method"
assert (runs.gap < -1).all(), (
    "the text says none comes within one point of the control"
)
assert (runs.gap_high < 0).all(), "the text says every gap is resolved by the images"
assert runs.speed.max() < 1.6, "the text says the fastest is still short of 1.6x"
glue("tc_tune_control", control["top1"])
glue("tc_tune_control_before", sweeps[IMAGENETTE][0].top1[0])
for method in runs.index:
    glue(f"tc_tune_{method}_top1", runs.after[method])
    glue(f"tc_tune_{method}_behind", -runs.gap[method])
    glue(f"tc_tune_{method}_speed", runs.speed[method])
    glue(f"tc_tune_{method}_closed", runs.closed[method])

# %% [markdown]
# Tuned the same way, CoaT-Lite reaches [84.0](#tc_tune_control:.1f)% (from
# [83.3](#tc_tune_control_before:.1f)%). Of the clustered models the best after two
# epochs is bipartite matching, at [82.9](#tc_tune_bipartite_top1:.1f)%
# ([1.1](#tc_tune_bipartite_behind:.1f) points behind the tuned CoaT-Lite) and
# [1.23](#tc_tune_bipartite_speed:.2f)× the CPU speed; pooling reaches
# [77.8](#tc_tune_pool_top1:.1f)% ([6.2](#tc_tune_pool_behind:.1f) behind) at
# [1.51](#tc_tune_pool_speed:.2f)×, and the seed's LSH
# [76.9](#tc_tune_lsh_top1:.1f)% ([7.0](#tc_tune_lsh_behind:.1f) behind) at
# [1.44](#tc_tune_lsh_speed:.2f)×. Two epochs closed
# [70%](#tc_tune_bipartite_closed:.0%) (bipartite),
# [72%](#tc_tune_pool_closed:.0%) (pool) and [80%](#tc_tune_lsh_closed:.0%) (LSH)
# of the gap between the converted model and the tuned CoaT-Lite, but none comes within one
# point of it: the project's target is missed after the fine-tune too. Every gap is
# paired, the tuned model and the tuned CoaT-Lite scored on the same 3,925 images, and
# every paired interval lies below zero (the table). One seed per run: an interval covers
# the test images, not the training's randomness. The next chapter asks whether a method
# that keeps a regular grid does better, and whether any of them beats simply giving the
# model smaller images.
#
# ## Trained with token clustering, from scratch
#
# The seed's promise is a lighter CoaT that *trains* in less time. Two CoaT-Lite Tiny were
# trained from scratch with their stages 1 and 2 on a quarter of their tokens (`pool` and
# `lsh`, `--token-clustering METHOD --keep 0.25`), beside CoaT-Lite Tiny and Clustering
# CoaT Tiny, with one recipe (`imagenette128-gpu`, 14 epochs, on one H100; the four ran
# side by side, so their recorded images/s are not a speed measurement: the training speeds
# are the quiet-GPU timings above and a CPU timing).

# %%
SCRATCH = {
    "CoaT-Lite Tiny": ("imagenette128_gpu_coat_lite_tiny", "coat_lite"),
    "tokens: pool, keep 0.25": (
        "imagenette128_gpu_coat_lite_tiny_pool25",
        "pool keep=0.25",
    ),
    "tokens: lsh, keep 0.25": (
        "imagenette128_gpu_coat_lite_tiny_lsh25",
        "lsh keep=0.25",
    ),
    "Clustering CoaT Tiny (queries)": (
        "imagenette128_gpu_ccoat_lite_tiny",
        "clustered",
    ),
}
scratch = {
    k: read_run(name, CCOAT_REPO, required=True) for k, (name, _) in SCRATCH.items()
}
cpu_rows = read_results("token_clustering_cpu_train.json", CCOAT_REPO)["train"]["rows"]
cpu_train = {r["config"]: r for r in cpu_rows}
fig, ax = plt.subplots(figsize=(7, 3.6))
for name, r in scratch.items():
    style = "o--" if "queries" in name else "o-"  # the seed's clustered attention
    ax.plot(r.metrics.epoch, r.metrics.val_top1, style, ms=3, label=name)
ax.set(xlabel="epoch", ylabel="val top-1 (%), 1,000-image subset")
ax.legend(fontsize=8)
ax.set_title("Imagenette at 128 px, trained from scratch with one recipe")
plt.show()

# %%
summary = pd.DataFrame(
    {
        name: {
            "epochs": len(r.metrics),
            "top1": r.eval["top1"],
            "low": r.eval["top1_ci95"][0],
            "high": r.eval["top1_ci95"][1],
            "H100": speeds["train"][SCRATCH[name][1]]["speedup"],
            "CPU": cpu_train[SCRATCH[name][1]]["speedup"],
        }
        for name, r in scratch.items()
    }
).T
summary.astype({"epochs": int}).round(2).rename(
    columns={"top1": "top-1 (%)", "H100": "train H100 (×)", "CPU": "train CPU (×)"}
)

# %%
ref, pool, lsh = (summary.loc[n] for n in list(SCRATCH)[:3])
for r in (pool, lsh):
    assert r.high < ref.low, (
        "the text says both fall below CoaT-Lite, beyond the intervals"
    )
overlap = max(pool.low, lsh.low) < min(pool.high, lsh.high)
assert overlap, "the text says the intervals of pooling and LSH overlap"
assert min(pool.CPU, lsh.CPU) > 1.05, "the text says both train faster on the CPU"
# converted at keep 0.25, the 50-epoch model loses more than the scratch runs trail
loss = sweeps[IMAGENETTE][0].top1[0] - converted.top1[["pool", "lsh"]]
assert loss.min() > ref.top1 - min(pool.top1, lsh.top1), "the text says a model adapts"
glue("tc_scratch_epochs", int(ref.epochs))
glue("tc_scratch_ref", ref.top1)
for key, r in (("pool", pool), ("lsh", lsh)):
    glue(f"tc_scratch_{key}", r.top1)
    glue(f"tc_scratch_{key}_behind", ref.top1 - r.top1)
    glue(f"tc_scratch_{key}_cpu", r.CPU)
glue("tc_convert_pool", loss["pool"])
glue("tc_convert_lsh", loss["lsh"])

# %%
# on the same val images: each token model minus CoaT-Lite, and pool minus lsh
hits = {n: r.hits() for n, r in scratch.items()}
names = list(SCRATCH)
pool_pair = paired_difference(hits[names[1]], hits[names[0]])
lsh_pair = paired_difference(hits[names[2]], hits[names[0]])
pool_lsh = paired_difference(hits[names[1]], hits[names[2]])
assert pool_pair.high < 0 and lsh_pair.high < 0, (
    "a token model no longer trails CoaT-Lite"
)
assert pool_lsh.low < 0 < pool_lsh.high, "the pairing now tells pooling and LSH apart"
glue("tc_scratch_pool_pair", str(pool_pair))
glue("tc_scratch_lsh_pair", str(lsh_pair))
glue("tc_scratch_pool_lsh", str(pool_lsh))

# %% [markdown]
# After the same [14](#tc_scratch_epochs) epochs CoaT-Lite reaches
# [74.4](#tc_scratch_ref:.1f)% on all val images, the model on pooled tokens
# [71.0](#tc_scratch_pool:.1f)% ([3.4](#tc_scratch_pool_behind:.1f) points behind)
# and the model on LSH clusters [70.6](#tc_scratch_lsh:.1f)%
# ([3.7](#tc_scratch_lsh_behind:.1f) behind). Image by image, pooling minus CoaT-Lite
# is [Δ = −3.4 points [−4.5, −2.3], McNemar p = 1.9e−09](#tc_scratch_pool_pair) and LSH minus CoaT-Lite [Δ = −3.7 points [−4.9, −2.6], McNemar p = 1e−10](#tc_scratch_lsh_pair):
# both trail it. Pooling minus LSH is [Δ = +0.3 points [−0.7, +1.4], McNemar p = 0.6](#tc_scratch_pool_lsh), so these runs cannot
# tell the two apart. Converted without retraining at the same budget, the better-trained
# Imagenette model falls [21.2](#tc_convert_pool:.1f) (pool) and
# [33.7](#tc_convert_lsh:.1f) (LSH) points: trained with its clusters, a model adapts
# to them. But on the GPU the two train at [0.641](#tc_gpu_train_pool:.3f)× and
# [0.636](#tc_gpu_train_lsh:.3f)× CoaT-Lite's images/s, so the seed's claim of less
# training time does not hold there: in equal GPU time CoaT-Lite would have trained longer.
# On the 2-core CPU, where the smaller products do pay, a training step of the two runs at
# [1.60](#tc_scratch_pool_cpu:.2f)× and [1.60](#tc_scratch_lsh_cpu:.2f)×
# CoaT-Lite's (`benchmarks/token_clustering_gpu.py --device cpu --sections train`, batch
# 64, float32; only three timed rounds of one step each, so these ratios are rough): there
# token clustering does train in less time, at the accuracy above. Not
# done here, for want of GPU time: several seeds of each run.
#
# ## Summary
#
# - The qkv and output projections, the attention core and the MLP, the work that runs
#   token by token, are [93%](#per_token_share:.0%) of CoaT-Lite Tiny's MACs; the
#   attention core alone is [1.4%](#attention_share:.1%). Token clustering shrinks all
#   of the first, query clustering only the second.
# - Merge is a size-weighted scatter of the tokens onto $K$ prototypes, unmerge a gather
#   back; a budget `keep` fixes $K$, so shapes never depend on the image.
# - Without retraining, the fastest setting within one point of CoaT-Lite is bipartite
#   matching at keep [0.5](#tc_in_best_keep:g), [1.06](#tc_in_best_speed:.2f)× the
#   CPU images/s on Imagenette; at keep 0.25 the seed's LSH keeps
#   [49.6](#tc_in_lsh25:.1f)% of images right against CoaT-Lite's
#   [83.3](#tc_in_ref:.1f)%.
# - After two epochs of fine-tuning, bipartite matching at keep 0.25 runs at
#   [1.23](#tc_tune_bipartite_speed:.2f)× the CPU speed,
#   [1.1](#tc_tune_bipartite_behind:.1f) points behind the tuned CoaT-Lite: the
#   project's target of 1.5× at a cost of at most one point is missed.
# - On an H100 no variant was faster than CoaT-Lite by 1% (the best
#   [1.003](#tc_gpu_fastest:.3f)×), and training on clusters ran at
#   [0.641](#tc_gpu_train_pool:.3f)× (pool) and [0.636](#tc_gpu_train_lsh:.3f)×
#   (LSH).
# - Trained from scratch on a quarter of the tokens, the models trail CoaT-Lite by
#   [3.4](#tc_scratch_pool_behind:.1f) (pool) and
#   [3.7](#tc_scratch_lsh_behind:.1f) (LSH) points, far less than a converted model
#   loses, and train [1.60](#tc_scratch_pool_cpu:.2f)× as fast on the CPU.
#
# ## Exercises
#
# 1. On Imagenette, what fraction of CoaT-Lite's MACs does pooling at keep 0.25 do, and
#    what speed-up would it give if CPU time followed MACs? Why is the measured speed-up
#    smaller?
# 2. Merge eight tokens into four clusters, then merge the four prototypes, with their
#    sizes, into two clusters. Show that this equals merging the eight tokens into the two
#    clusters at once. What goes wrong if the second merge ignores the sizes?
# 3. The clusters drawn above were formed at keep 0.5 on 128 px photos. How many prototypes
#    does a block of stage 1 form, how many a block of stage 2, and how many tokens does a
#    prototype of stage 1 stand for on average?

# %% tags=["hide-input"]
# Exercise 1: MACs on paper against measured speed (the committed Imagenette sweep).
sweep_in = sweeps[IMAGENETTE][0].set_index("config")
mac_share = sweep_in.macs["pool keep=0.25"] / sweep_in.macs["coat_lite"]
measured = sweep_in.speedup_batch32["pool keep=0.25"]
assert 1 / mac_share > measured > 1, (
    "the solution says the speed-up is smaller than MACs'"
)
glue("ex1_mac_share", mac_share)
glue("ex1_predicted", 1 / mac_share)
glue("ex1_measured", measured)

# %% tags=["hide-input"]
# Exercise 2: a merge of merges, with and without the sizes (one image, eight tokens).
tokens = torch.randn(1, 8, 4)
fine = torch.tensor(
    [[0, 0, 0, 1, 2, 2, 3, 3]]
)  # four clusters of 3, 1, 2 and 2 tokens
coarse = torch.tensor([[0, 0, 1, 1]])  # the four clusters into two
prototypes, sizes = tc.merge(tokens, fine, 4)
twice, twice_sizes = tc.merge(prototypes, coarse, 2, sizes)
once, once_sizes = tc.merge(tokens, coarse.gather(1, fine), 2)
torch.testing.assert_close((twice, twice_sizes), (once, once_sizes))
unweighted, _ = tc.merge(prototypes, coarse, 2)
assert not torch.allclose(unweighted[:, 0], once[:, 0]), "unequal sizes: means differ"
torch.testing.assert_close(
    unweighted[:, 1], once[:, 1]
)  # sizes 2 and 2: equal weights

# %% tags=["hide-input"]
# Exercise 3: the budgets of the two stages, read from the recorded clusters.
for stage, block in enumerate(BLOCKS, start=1):
    record = records["bipartite"][block]
    H, W = record["size"]
    assert record["sizes"].shape[1] == tc.clusters_kept(0.5, H * W) == H * W // 2
    assert torch.all(record["sizes"].sum(1) == H * W), "every token is in one cluster"
    glue(f"ex3_n{stage}", H * W)
    glue(f"ex3_k{stage}", record["sizes"].shape[1])
glue("ex3_side1", records["bipartite"][BLOCKS[0]]["size"][0])
glue("ex3_side2", records["bipartite"][BLOCKS[1]]["size"][0])

# %% [markdown]
# ```{admonition} Solution to exercise 1
# :class: dropdown
# From the sweep's MACs, pooling at keep 0.25 does [51%](#ex1_mac_share:.0%) of
# CoaT-Lite's multiply-accumulates, which would give [1.95](#ex1_predicted:.2f)× if time
# followed MACs; measured, it runs at [1.51](#ex1_measured:.2f)×. Work that does not
# shrink (the patch embeddings, stages 3 and 4) is already in the 51%, so the gap comes from
# work that takes more time per MAC, or that a MAC count does not see at all: forming the
# clusters, the scatters and gathers of merging and unmerging, the element-wise operations
# (norms, activations, residual adds), and the depthwise convolutions of CPE and CRPE, which
# move much data for each MAC.
# ```
#
# ````{admonition} Solution to exercise 2
# :class: dropdown
# ```python
# tokens = torch.randn(1, 8, 4)
# fine = torch.tensor([[0, 0, 0, 1, 2, 2, 3, 3]])  # clusters of 3, 1, 2 and 2 tokens
# coarse = torch.tensor([[0, 0, 1, 1]])            # the four clusters into two
# prototypes, sizes = tc.merge(tokens, fine, 4)
# twice = tc.merge(prototypes, coarse, 2, sizes)
# once = tc.merge(tokens, coarse.gather(1, fine), 2)  # each token's coarse cluster
# torch.testing.assert_close(twice, once)              # prototypes and sizes agree
# ```
# A prototype is a sum divided by a size; weighting it by its size gives the sum back, so
# the second merge adds up the same tokens as a single merge would. Without the sizes the
# first coarse cluster would average a prototype of 3 tokens and one of 1 as if each were
# one token, giving the single token a weight of 1/2 instead of 1/4: twice its share, and
# three times the weight of each of the other three tokens; the second, two prototypes of
# 2 tokens each, happens to come out right. This is why a block keeps every prototype's size.
# ````
#
# ```{admonition} Solution to exercise 3
# :class: dropdown
# A 128 px image gives stage 1 a grid of [32](#ex3_side1) × [32](#ex3_side1) =
# [1024](#ex3_n1) tokens (patches of 4 px) and stage 2 one of [16](#ex3_side2) ×
# [16](#ex3_side2) = [256](#ex3_n2). At keep 0.5 a block of stage 1 forms
# $K$ = [512](#ex3_k1) prototypes and one of stage 2 [128](#ex3_k2), so a
# prototype stands for 2 tokens on average, whatever the method: the recorded sizes of each
# image add up to $N$, each token in exactly one cluster.
# ```
