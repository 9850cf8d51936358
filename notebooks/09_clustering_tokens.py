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
#   model, without retraining.

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

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import torch

from ccoat import cost
from ccoat import data as cdata
from ccoat import token_clustering as tc
from ccoat.plotting import glue, set_theme
from ccoat.provenance import results_file
from ccoat.stats import bootstrap_interval
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
# `python benchmarks/token_clustering.py` converted the trained model for every method and
# budget (stages 1 and 2; three hash draws for LSH), scored each on all 10,000 CIFAR-10
# (JPEG copy) test images with a bootstrap 95% interval, counted its MACs, and timed its
# forward pass on the CPU at batch 32, every configuration in turn within each round.

# %%
bench = json.loads(
    results_file("token_clustering_cifar10.json", CCOAT_REPO).read_text()
)
rows = pd.DataFrame(bench["rows"])
reference = rows.iloc[0]
fig, ax = plt.subplots(figsize=(7, 4))
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
ax.set(
    xlabel="CPU images/s at batch 32, relative to CoaT-Lite",
    ylabel="test top-1 (%)",
    title="Token clustering without retraining (labels: keep)",
)
ax.legend(fontsize=8)
plt.show()

# %%
within_a_point = rows[(rows.top1 >= reference.top1 - 1.0)].iloc[1:]
best = within_a_point.sort_values("speedup_batch32").tail(1)
glue("tc_ref_top1", reference.top1)
glue("tc_best_speed", best.speedup_batch32.iloc[0] if len(best) else 1.0)
glue("tc_best", best.config.iloc[0] if len(best) else "none")
glue(
    "tc_target",
    "reaches" if len(best) and best.speedup_batch32.iloc[0] >= 1.5 else "misses",
)
smallest = rows[rows.keep == rows.keep.min()].groupby("method").top1.mean()
glue("tc_lsh_rank", int(smallest.rank(ascending=False)["lsh"]))
table = rows[["config", "top1", "macs", "speedup_batch32", "speedup_batch1"]].copy()
table["macs"] = table.macs / 1e6
table.rename(
    columns={
        "macs": "MMACs",
        "speedup_batch32": "speed b32",
        "speedup_batch1": "speed b1",
        "top1": "top-1 (%)",
    }
).set_index("config").round(2)

# %% [markdown]
# Within one point of CoaT-Lite's {glue:text}`tc_ref_top1:.2f`% the fastest setting is
# {glue:text}`tc_best`, at {glue:text}`tc_best_speed:.2f`× its CPU images/s: without
# retraining, token clustering {glue:text}`tc_target` the 1.5× target. At the smallest
# budget the seed's LSH ranks {glue:text}`tc_lsh_rank` of three in accuracy. This model works
# on 32 px images, whose first stage has only 256 tokens; what remains to measure is a
# short fine-tune of each method, a model trained with token clustering from scratch, and
# the larger grids of ImageNet-sized images, where there is more to merge.
