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
# # Adaptive clustering attention
#
# The seed paper's module keeps CoaT's conv-attention but does not use the queries directly:
# similar queries are clustered with E2LSH, each cluster is replaced by a **prototype** (the
# mean of its queries), attention is computed for the prototypes only, and each prototype's
# output is **broadcast** back to the queries of its cluster. This is ACT's adaptive clustering
# attention {cite:p}`zheng2021act`. With $K$ clusters among $N$ queries, softmax attention costs
# $O(KNC)$ instead of $O(N^2C)$.
#
# **Learning objectives**
#
# - compute prototypes and broadcast them back with scatter and gather, by hand, and check
#   `ccoat.clustering` against it;
# - assemble clustered attention, with the class token kept as a cluster of its own, and see
#   that it becomes exact softmax attention as the bucket width goes to 0;
# - measure, on features of real photos, how the number of clusters and the approximation error
#   follow the bucket width $r$ and the number of hashes;
# - draw the clusters over the photo.

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
from ccoat import clustering, hashing

import json

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from IPython.display import Markdown, display

from ccoat.data import sample_photos
from ccoat.plotting import KIND_COLORS, glue, set_theme
from ccoat.provenance import describe, results_file

set_theme()
torch.manual_seed(0)
PROFILE = ccoat.get_profile()
print(f"profile: {PROFILE}, torch {torch.__version__}")

# %% [markdown]
# ## Queries of real photos
#
# The clusters only mean something on queries with structure, so we take real images:
# scikit-learn's two sample photos, through the first stage of a CoaT-Lite Tiny up to its first
# attention block (patch embedding, class token, CPE, LayerNorm, then the qkv projection).
#
# There are no pretrained weights on this machine, so the network is **randomly initialised**.
# Its queries are still a fixed linear function of the normalised patch embeddings, so similar
# patches give similar queries and the clusters follow the image. But the attention of an
# untrained network is nearly uniform (its queries and keys are small), so every query's output
# is close to the average value, and errors look small in absolute terms. We therefore also
# report the error of the crudest approximation — one cluster for the whole image — as the
# yardstick. A trained network has larger, more distinct queries: more clusters at the same $r$.

# %%
side = ccoat.choose(smoke=128, cpu=224, gpu=224)
# scikit-learn's two photos: pixels (2, 3, side, side), clamped to [0, 1] for display
images = sample_photos(side, 2, normalize=False).clamp(0, 1)
mean, std = torch.tensor([0.485, 0.456, 0.406]), torch.tensor([0.229, 0.224, 0.225])
inputs = (images - mean.view(3, 1, 1)) / std.view(3, 1, 1)  # (2, 3, side, side)

model = ccoat.create_model("coat_lite_tiny").eval()  # random init, seed 0
with torch.no_grad():
    q, k, v, (H, W) = clustering.block_qkv(model, inputs, stage=0, block=0)
B, heads, N, Ch = q.shape  # (2, 8, 1 + H*W, 8)
for name, value in dict(B=B, side=side, H=H, W=W, N=N, heads=heads, Ch=Ch).items():
    glue(name, value)
glue("q_std", q.std().item())
glue("q_norm", q.norm(dim=-1).mean().item())
glue("default_r", hashing.DEFAULT_BUCKET_WIDTH)
glue("default_n", hashing.DEFAULT_N_HASHES)

# %% [markdown]
# {glue:text}`B` photos at {glue:text}`side` px square give a {glue:text}`H` × {glue:text}`W`
# grid: N = {glue:text}`N` tokens with the class token, {glue:text}`heads` heads of
# {glue:text}`Ch` channels. The queries have a per-channel standard deviation of
# **{glue:text}`q_std:.3f`** and a mean norm per head of **{glue:text}`q_norm:.2f`**: the
# scale the bucket width is measured against (ccoat's default is r =
# {glue:text}`default_r` with {glue:text}`default_n` hashes).

# %% [markdown]
# ## Prototypes and broadcast, by hand
#
# We cluster the image tokens' queries (the class token stays out, see below) with the E2LSH of
# the previous chapter. Within each (photo, head) row the cluster ids run from 0 to $K_{row}-1$.
# A **prototype** is the mean of its cluster's queries: add each query into its cluster's slot
# (`index_add_`), divide by the cluster's size. To do all rows at once, give row $i$ the slots
# $iK \ldots iK + K - 1$, with $K$ the largest number of clusters of any row.

# %%
q_img = q[:, :, 1:]  # (B, heads, H*W, C_h): the image tokens' queries
lsh = hashing.E2LSH(Ch, n_hashes=32, bucket_width=4.0, seed=0)
# ids (B, heads, H*W), counts (B, heads, K), num_clusters (B, heads)
clusters = lsh(q_img)
K = clusters.max_clusters


def prototypes_by_hand(x, ids, counts):
    B, h, n, C = x.shape
    K = counts.shape[-1]
    # (B, heads, n): a slot per (row, cluster)
    slot = ids + K * torch.arange(B * h).view(B, h, 1)
    sums = torch.zeros(B * h * K, C).index_add_(0, slot.flatten(), x.reshape(-1, C))
    # (B, heads, K, C)
    return (sums / counts.reshape(-1, 1).clamp(min=1)).view(B, h, K, C)


def broadcast_by_hand(y, ids):
    # (B, heads, n, C)
    return torch.gather(y, 2, ids.unsqueeze(-1).expand(-1, -1, -1, y.shape[-1]))


protos = prototypes_by_hand(q_img, clusters.ids, clusters.counts)
torch.testing.assert_close(protos, clustering.prototypes(q_img, clusters))
torch.testing.assert_close(
    broadcast_by_hand(protos, clusters.ids), clustering.broadcast(protos, clusters)
)
glue("image_tokens", H * W)
glue("fewest", clusters.num_clusters.min().item())
glue("most", clusters.num_clusters.max().item())
glue("mean_clusters", clusters.num_clusters.float().mean().item())
glue("cluster_share", clusters.num_clusters.float().mean().item() / (H * W))

# %% [markdown]
# Prototypes and broadcast agree with `ccoat.clustering`. The {glue:text}`image_tokens`
# image queries of a row form {glue:text}`fewest` to {glue:text}`most` clusters (mean
# **{glue:text}`mean_clusters:.0f`**, {glue:text}`cluster_share:.1%` of the tokens).

# %% [markdown]
# ## Clustered attention, by hand
#
# The class token is what CoaT-Lite finally classifies, so it never shares a cluster with image
# tokens: it is put in front of the prototypes and gets its exact attention row. The prototypes
# attend to **all** keys and values — only the queries are clustered — and each image token
# receives its cluster's output. The CRPE term $q \odot \mathrm{DWConv}(v)$ is not part of this
# core: `ConvAttention` adds it with every token's own query, as in the seed's module.


# %%
def clustered_attention_by_hand(q, k, v, lsh):
    q_cls, q_img = q[:, :, :1], q[:, :, 1:]
    c = lsh(q_img)
    # (B, h, 1+K, C)
    queries = torch.cat([q_cls, prototypes_by_hand(q_img, c.ids, c.counts)], dim=2)
    # (B, h, 1+K, N)
    attn = (queries @ k.transpose(-1, -2) * q.shape[-1] ** -0.5).softmax(dim=-1)
    out = attn @ v  # (B, heads, 1 + K, C_h)
    return torch.cat([out[:, :, :1], broadcast_by_hand(out[:, :, 1:], c.ids)], dim=2)


core = clustering.ClusteredCore(Ch, n_hashes=32, bucket_width=4.0, seed=0)
with torch.no_grad():
    ours = clustered_attention_by_hand(q, k, v, lsh)
    torch.testing.assert_close(ours, core(q, k, v))
    exact = F.scaled_dot_product_attention(q, k, v)
    singletons = clustering.ClusteredCore(Ch, n_hashes=32, bucket_width=1e-6, seed=0)(
        q, k, v
    )
glue("gap", (singletons - exact).abs().max().item())

# %% [markdown]
# The hand-written clustered attention equals `ccoat`'s `ClusteredCore`. With a bucket width
# of $10^{-6}$ every query is its own cluster and the result is exact softmax attention:
# largest difference **{glue:text}`gap:.1e`**.

# %% [markdown]
# ## The clusters, drawn over the photo
#
# `ccoat.record_clusters` makes every clustered core of a model keep its clusters for a forward
# pass. Converting our CoaT-Lite to clustered attention keeps every weight (ACT's drop-in
# without retraining), so the queries are the ones above. Each colour is one cluster of the
# first head in the first block; tokens are 4×4-pixel patches.

# %%
widths_shown = (2.0, 4.0, 8.0)
fig, axes = plt.subplots(
    B, 1 + len(widths_shown), figsize=(3.2 * (1 + len(widths_shown)), 3.2 * B)
)
rng = np.random.default_rng(0)
palette = rng.random((4096, 3))
for j, width in enumerate(widths_shown):
    clustered_model = ccoat.convert_attention(
        model, "clustered", bucket_width=width, seed=0
    )
    with torch.no_grad(), ccoat.record_clusters(clustered_model) as records:
        clustered_model(inputs)
    ids = records["stages.0.blocks.0"]["ids"][:, 0].view(B, H, W)  # first head
    for i in range(B):
        if j == 0:
            axes[i, 0].imshow(images[i].permute(1, 2, 0).numpy())
            axes[i, 0].set(title="photo", xticks=[], yticks=[])
        overlay = palette[ids[i].numpy() % len(palette)]
        axes[i, j + 1].imshow(images[i].permute(1, 2, 0).numpy())
        axes[i, j + 1].imshow(
            overlay, alpha=0.6, extent=(0, side, side, 0), interpolation="nearest"
        )
        n_clusters = records["stages.0.blocks.0"]["num_clusters"][i, 0].item()
        axes[i, j + 1].set(
            title=f"r = {width}: {n_clusters} clusters", xticks=[], yticks=[]
        )
fig.suptitle(
    "E2LSH clusters of the first head's queries, 32 hashes (random-init CoaT-Lite "
    "Tiny)"
)
fig.tight_layout()

# %% [markdown]
# Uniform regions (sky, petals, background) fall into a few large clusters; edges and texture
# split into many small ones. This is why the number of clusters adapts to the image.

# %% [markdown]
# ## Error and number of clusters against $r$ and the number of hashes
#
# For each bucket width and number of hashes we count the clusters and measure the relative
# error of the attention output, $\lVert \text{clustered} - \text{exact} \rVert /
# \lVert \text{exact} \rVert$, on both photos and all heads.

# %%
widths = ccoat.choose(
    smoke=[1.0, 4.0, 16.0],
    cpu=[0.5, 1, 2, 4, 8, 16, 32],
    gpu=[0.25, 0.5, 1, 2, 4, 8, 16, 32, 64],
)
hash_counts = ccoat.choose(smoke=[8, 32], cpu=[4, 8, 16, 32], gpu=[4, 8, 16, 32, 64])
relative_error = lambda out: ((out - exact).norm() / exact.norm()).item()  # noqa: E731

with torch.no_grad():
    mean_query_out = F.scaled_dot_product_attention(q_img.mean(2, keepdim=True), k, v)
    one_cluster = torch.cat(
        [exact[:, :, :1], mean_query_out.expand(-1, -1, N - 1, -1)], dim=2
    )
    rows = []
    for n in hash_counts:
        for width in widths:
            core = clustering.ClusteredCore(Ch, n_hashes=n, bucket_width=width, seed=0)
            clusters = core.cluster(q_img)
            rows.append(
                dict(
                    n_hashes=n,
                    r=width,
                    error=relative_error(core(q, k, v)),
                    clusters=clusters.num_clusters.float().mean().item(),
                )
            )
baseline = relative_error(one_cluster)

# %%
fig, grid = plt.subplots(2, 2, figsize=(10, 7.5))
axes = [grid[0, 0], grid[0, 1], grid[1, 0]]  # the fourth panel holds the legend
for n in hash_counts:
    sel = [row for row in rows if row["n_hashes"] == n]
    axes[0].plot(
        [s["r"] for s in sel],
        [s["clusters"] / (N - 1) for s in sel],
        "o-",
        label=f"{n} hashes",
    )
    axes[1].plot(
        [s["r"] for s in sel], [s["error"] for s in sel], "o-", label=f"{n} hashes"
    )
    axes[2].plot(
        [s["clusters"] / (N - 1) for s in sel],
        [s["error"] for s in sel],
        "o-",
        label=f"{n} hashes",
    )
for ax in axes[1:]:
    ax.axhline(baseline, color="grey", ls="--", label="one cluster")
axes[0].set(
    xscale="log",
    yscale="log",
    xlabel="bucket width r",
    ylabel="clusters / image tokens",
    title="Clusters formed",
)
axes[1].set(
    xscale="log",
    xlabel="bucket width r",
    ylabel="relative error",
    title="Approximation error",
)
axes[2].set(
    xscale="log",
    xlabel="clusters / image tokens",
    ylabel="relative error",
    title="Error against cost",
)
grid[1, 1].axis("off")
grid[1, 1].legend(*axes[2].get_legend_handles_labels(), loc="center")
fig.suptitle(
    "Clustered vs exact softmax attention\nstage 1 of random-init CoaT-Lite Tiny, "
    f"{side} px photos"
)
fig.tight_layout()

# %%
default = min(rows, key=lambda row: abs(row["r"] - 4.0) + abs(row["n_hashes"] - 32))
glue("d_hashes", default["n_hashes"])
glue("d_r", default["r"])
glue("d_clusters", default["clusters"])
glue("d_share", default["clusters"] / (N - 1))
glue("d_error", default["error"])
glue("baseline", baseline)

# %% [markdown]
# With {glue:text}`d_hashes` hashes and r = {glue:text}`d_r`, the image tokens form
# {glue:text}`d_clusters:.0f` clusters per row on average ({glue:text}`d_share:.1%` of them),
# and the relative error is **{glue:text}`d_error:.4f`**, against
# **{glue:text}`baseline:.4f`** for a single cluster. The error falls as clusters are added,
# but slowly: on these untrained features most of the output is the shared average, and the
# part that depends on the query is what the clusters must capture.

# %% [markdown]
# ## What it costs: the measured benchmark
#
# The attention of the prototypes costs $(1 + K) N C$ multiply-accumulates per head for the
# scores, against $N^2 C$ for exact attention; hashing adds $N \cdot n \cdot C_h$ for the
# projections and a few sorts. The benchmark `benchmarks/bench_clustered_attention.py` times
# one such layer (on `china.jpg` alone, batch 1) and the whole model on this machine; its
# results file records how it was run.

# %%
bench_file = results_file("bench_clustered_attention.json", CCOAT_REPO)
if bench_file is not None:
    bench = json.loads(bench_file.read_text())
    layer = pd.DataFrame(
        [
            {
                "tokens N": r["tokens"],
                "clusters (mean)": round(r["clusters_mean"]),
                "time clustered / softmax": round(
                    r["time_ratio_clustered_over_softmax"], 3
                ),
                "hashing share": f"{r['hash_and_cluster_share_of_clustered']:.0%}",
                "rel. error": round(r["relative_error"], 4),
            }
            for r in bench["layer"].values()
        ]
    ).set_index("tokens N")
    display(layer)
    m = bench["model"]
    display(
        Markdown(
            f"Whole model at {m['img_size']} px: ccoat_lite_tiny takes "
            f"**{m['time_ratio_clustered_over_softmax']:.2f}×** the time of "
            f"coat_lite_tiny with softmax attention. (r = {bench['bucket_width']}, "
            f"{bench['n_hashes']} hashes; from {describe(bench, markdown=True)}.)"
        )
    )
else:
    print(
        "no results/bench_clustered_attention.json: run "
        "benchmarks/bench_clustered_attention.py"
    )

# %% [markdown]
# ## Clustering CoaT's own attention
#
# The seed applies the clustering to CoaT, whose attention is *factorized*:
# $\frac{1}{\sqrt{C_h}}\,q\,(\mathrm{softmax}_N(k)^\top v)$. That is linear in $q$, so a
# prototype's output is exactly the mean of its members' outputs: `clustered_factorized`
# averages the outputs within each cluster, and it saves only the $N C_h^2$ product per head,
# which is already small. Linearity also sets its error: there is no softmax pulling every
# output towards the average value, so the output moves as much as the query does when it is
# replaced by its prototype.

# %%
with torch.no_grad():
    fcore = clustering.ClusteredFactorizedCore(
        Ch, n_hashes=32, bucket_width=4.0, seed=0
    )
    factorized = ccoat.attention.factorized_attention(q, k, v)
    c = fcore.cluster(q_img)
    averaged = clustering.broadcast(clustering.prototypes(factorized[:, :, 1:], c), c)
    torch.testing.assert_close(fcore(q, k, v)[:, :, 1:], averaged)
    f_error = ((fcore(q, k, v) - factorized).norm() / factorized.norm()).item()
    moved = clustering.broadcast(clustering.prototypes(q_img, c), c)
    q_error = ((moved - q_img).norm() / q_img.norm()).item()
glue("f_error", f_error)
glue("q_error", q_error)

# %% [markdown]
# Clustered factorized attention equals the cluster-averaged factorized output. Its relative
# error against factorized attention is **{glue:text}`f_error:.2f`**, of the order of how far
# the queries move to their prototypes (**{glue:text}`q_error:.2f`** of their norm) and far
# above the error of clustered softmax attention: at this bucket width the clusters are
# loose, and only the softmax's averaging hides it.

# %% [markdown]
# ## Summary
#
# - Prototypes are cluster means (`index_add_` then a division), broadcast is a `gather`; both
#   are differentiable and run for every image and head at once.
# - Clustered attention computes softmax attention for the prototypes only and gives each query
#   its cluster's row; the class token keeps its own row, and CRPE uses every token's own query.
#   As $r \to 0$ it becomes exact softmax attention.
# - On real photos the clusters follow the image: few in flat regions, many at edges. Wider
#   buckets or fewer hashes mean fewer clusters, lower cost and a larger error.
# - On clustered *factorized* attention the saving is small, because factorized attention
#   spends little per query; on softmax attention it is the $N/K$ factor of the benchmark.
#
# ## Exercises
#
# 1. Use `max_clusters=64` in `ClusteredCore`. How does the error compare with choosing a bucket
#    width that gives 64 clusters on its own?
# 2. Draw the clusters of another head, and of stage 2 (`block_qkv(model, inputs, stage=1)`).
#    Do heads agree on which tokens go together?
# 3. Show that with identical queries the clustered output of every image token is the attention
#    of the mean query, whatever $r$.
# 4. Multiply the qkv weights by 5 (a crude stand-in for a trained network's larger queries).
#    How many clusters does r = 4 give now, and what bucket width restores the count?
