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
# # Adaptive clustering attention
#
# **The question.** ACT's adaptive clustering attention {cite:p}`zheng2021act` replaces the
# queries of softmax attention by the means of their LSH clusters. How far does that move the
# output of a trained model's attention, and how does it depend on the bucket width $r$?
#
# **The answer.** On the queries of the trained Clustering CoaT's first block, on Imagenette
# photos (with hash projections drawn afresh, seed 0; chapter 4 uses the model's own, so its
# counts differ a little), ccoat's default ($r$ = [4](#d_r:.0f), [32](#d_hashes) hashes) keeps
# [37%](#d_share:.0% "live") of the image tokens as clusters and moves the attention output by
# [2.8%](#d_error:.1% "live") (relative norm). Each doubling of $r$ cuts the clusters and raises
# the error; at $r$ = [128](#big_r:.0f) only [2.1](#big_clusters:.1f "live") clusters per row
# remain and the error, [20%](#big_error:.0% "live"), approaches the
# [24%](#baseline:.0% "live") of one cluster for the whole image.
#
# **Prerequisites.** Chapter 1 (conv-attention: $q$, $k$, $v$, softmax and factorized
# attention, CRPE) and chapter 2 (E2LSH: bucket width $r$, the number of hashes).
#
# **Learning objectives**
#
# - compute prototypes and broadcast them back with `index_add_` and `gather`, by hand, and
#   check `ccoat.clustering` against it;
# - assemble clustered attention, with the class token kept as a cluster of its own, and see
#   that it becomes exact softmax attention as $r \to 0$;
# - measure, on a trained model's queries of real photos, how the number of clusters $K$ and
#   the approximation error follow $r$ and the number of hashes;
# - draw the clusters over the photo.
#
# The module: similar queries are clustered with E2LSH, each cluster is replaced by a
# **prototype** (the mean of its queries), attention is computed for the prototypes only, and
# each prototype's output is **broadcast** back to the queries of its cluster. With $K$
# clusters among $N$ queries, softmax attention costs $O(KNC)$ instead of $O(N^2C)$.

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
from matplotlib.collections import LineCollection
from matplotlib.colors import LogNorm
import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from IPython.display import display
from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD

from ccoat import data as cdata
from ccoat.plotting import set_theme
from ccoat.prose import glue
from ccoat.provenance import describe, results_file
from ccoat.runfolder import read_run

set_theme()
torch.manual_seed(0)
PROFILE = ccoat.get_profile()
print(f"profile: {PROFILE}, torch {torch.__version__}")

# %% [markdown]
# ## Queries of a trained model on real photos
#
# Clusters only mean something on queries with structure, so we take the queries that a
# trained model computes for real photos: the Clustering CoaT Tiny trained on Imagenette at
# 128 px (the committed run `imagenette128_gpu_ccoat_lite_tiny`, trained *with* clustered
# attention; `results/README.md` says how), on a fixed random subset of Imagenette's
# validation images. `clustering.block_qkv` runs the model up to the first block of stage 1
# (patch embedding, class token, CPE, LayerNorm) and returns that block's $q$, $k$, $v$.

# %%
n_images = ccoat.choose(smoke=2, cpu=4, gpu=16)
_, val_set, _ = cdata.build_datasets("imagenette", cdata.data_root(), img_size=128)
photos = cdata.subset(val_set, n_images, seed=0)
inputs = torch.stack([photos[i][0] for i in range(len(photos))])  # (B, 3, 128, 128)
mean, std = torch.tensor(IMAGENET_DEFAULT_MEAN), torch.tensor(IMAGENET_DEFAULT_STD)
images = (inputs * std.view(3, 1, 1) + mean.view(3, 1, 1)).clamp(0, 1)  # for display

model = read_run("imagenette128_gpu_ccoat_lite_tiny", CCOAT_REPO).load_model()
with torch.no_grad():
    q, k, v, (H, W) = clustering.block_qkv(model, inputs, stage=0, block=0)
B, heads, N, Ch = q.shape  # (B, 8, 1 + H*W, 8)
for name, value in dict(B=B, H=H, W=W, N=N, heads=heads, Ch=Ch).items():
    glue(name, value)
glue("q_std", q.std().item())
glue("q_norm", q.norm(dim=-1).mean().item())
glue("default_r", hashing.DEFAULT_BUCKET_WIDTH)
glue("default_n", hashing.DEFAULT_N_HASHES)

# %% [markdown]
# [4](#B "live") photos at 128 px give a [32](#H) × [32](#W) grid:
# $N$ = [1025](#N) tokens with the class token, $h$ = [8](#heads) heads of
# $C_h$ = [8](#Ch) channels. The queries have a per-channel standard deviation of
# **[0.55](#q_std:.2f "live")** and a mean norm per head of **[1.46](#q_norm:.2f "live")**: the
# scale the bucket width is measured against (ccoat's default is $r$ =
# [4](#default_r:.0f) with [32](#default_n) hashes, the width this model was
# trained with).

# %% [markdown]
# ## Prototypes and broadcast, by hand
#
# We cluster the image tokens' queries (the class token stays out, see below) with the E2LSH
# of the previous chapter. Within each (photo, head) row the cluster ids run from 0 to
# $K_\text{row}-1$. A **prototype** is the mean of its cluster's queries: add each query into
# its cluster's slot (`index_add_`), divide by the cluster's size. To do all rows at once,
# give row $i$ the slots $iK \ldots iK + K - 1$, with $K$ the largest number of clusters of
# any row.

# %%
q_img = q[:, :, 1:]  # (B, heads, H*W, C_h): the image tokens' queries
lsh = hashing.E2LSH(Ch, n_hashes=32, bucket_width=4.0, seed=0)
# ids (B, heads, H*W), counts (B, heads, K), num_clusters (B, heads)
clusters = lsh(q_img)


def prototypes_by_hand(x, ids, counts):
    B, h, n, C = x.shape
    K = counts.shape[-1]
    # (B, heads, n): row i's clusters get the slots iK .. iK + K - 1
    slot = ids + K * torch.arange(B * h).view(B, h, 1)
    sums = torch.zeros(B * h * K, C).index_add_(0, slot.flatten(), x.reshape(-1, C))
    means = sums / counts.reshape(-1, 1).clamp(min=1)
    return means.view(B, h, K, C)  # (B, heads, K, C)


def broadcast_by_hand(y, ids):
    # (B, heads, n, C)
    return torch.gather(y, 2, ids.unsqueeze(-1).expand(-1, -1, -1, y.shape[-1]))


# %% [markdown]
# Checked against the library, on every photo and head at once:

# %%
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
# Prototypes and broadcast agree with `ccoat.clustering`. The [1024](#image_tokens)
# image queries of a row form [121](#fewest) to [724](#most "live") clusters (mean
# **[377](#mean_clusters:.0f "live")**, [37%](#cluster_share:.0% "live") of the tokens).

# %% [markdown]
# ## Clustered attention, by hand
#
# The class token is what CoaT-Lite finally classifies, so it never shares a cluster with
# image tokens: it is put in front of the prototypes and gets its exact attention row. The
# prototypes attend to **all** keys and values (only the queries are clustered) and each
# image token receives its cluster's output. The CRPE term $q \odot \mathrm{DWConv}(v)$ is not
# part of this core: `ConvAttention` adds it with every token's own query, as in the seed's
# module (chapter 4 builds the whole module by hand).


# %%
def clustered_attention_by_hand(q, k, v, lsh):
    q_cls, q_img = q[:, :, :1], q[:, :, 1:]
    c = lsh(q_img)
    # (B, h, 1+K, C_h): the class token's query, then the prototypes
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
    tiny_r = clustering.ClusteredCore(Ch, n_hashes=32, bucket_width=1e-6, seed=0)
    singletons = tiny_r(q, k, v)
glue("gap", (singletons - exact).abs().max().item())
assert (singletons - exact).abs().max() < 1e-5, "r -> 0 should give exact attention"

# %% [markdown]
# The hand-written clustered attention equals `ccoat`'s `ClusteredCore`. With a bucket width
# of $10^{-6}$ every query is its own cluster and the result is exact softmax attention:
# largest difference **[6.3e-06](#gap:.1e "live")**.

# %% [markdown]
# ## The clusters, drawn over the photo
#
# Each token (a 4×4-pixel patch) is coloured by the size of its cluster, on a log scale, and
# white lines separate clusters, for the first head's queries in the first block. Three bucket
# widths, from ccoat's default to one where few clusters remain.


# %%
patch = 128 // W  # pixels per token side


def token_sizes(clusters):
    """Each token's cluster size, first head, (B, H*W): the counts broadcast back."""
    counts = clusters.counts.unsqueeze(-1).float()
    return clustering.broadcast(counts, clusters)[:, 0, :, 0]


def borders(ids):
    """Segments between neighbouring tokens of different clusters, (H, W) ids."""
    rows, cols = torch.nonzero(ids[:, 1:] != ids[:, :-1], as_tuple=True)
    vertical = [
        [((c + 1) * patch, r * patch), ((c + 1) * patch, (r + 1) * patch)]
        for r, c in zip(rows.tolist(), cols.tolist())
    ]
    rows, cols = torch.nonzero(ids[1:, :] != ids[:-1, :], as_tuple=True)
    horizontal = [
        [(c * patch, (r + 1) * patch), ((c + 1) * patch, (r + 1) * patch)]
        for r, c in zip(rows.tolist(), cols.tolist())
    ]
    return vertical + horizontal


# %%
widths_shown = (4.0, 16.0, 64.0)
shown = min(B, 2)  # photos drawn
fig, axes = plt.subplots(
    shown, 4, figsize=(12.8, 3.2 * shown), squeeze=False, layout="constrained"
)
by_size = LogNorm(vmin=1, vmax=H * W)
for i in range(shown):
    axes[i, 0].imshow(images[i].permute(1, 2, 0).numpy())
    axes[i, 0].set(title="photo", xticks=[], yticks=[])
for j, width in enumerate(widths_shown, start=1):
    drawn = hashing.E2LSH(Ch, n_hashes=32, bucket_width=width, seed=0)(q_img[:shown])
    sizes = token_sizes(drawn).view(shown, H, W)
    for i in range(shown):
        ax = axes[i, j]
        ax.imshow(images[i].permute(1, 2, 0).numpy())
        shade = ax.imshow(
            sizes[i], norm=by_size, cmap="viridis", alpha=0.7, extent=(0, 128, 128, 0)
        )
        edges = borders(drawn.ids[i, 0].view(H, W))
        ax.add_collection(LineCollection(edges, colors="white", linewidths=0.5))
        ax.set(
            title=f"r = {width:g}: {drawn.num_clusters[i, 0].item()} clusters",
            xticks=[],
            yticks=[],
        )
fig.colorbar(shade, ax=axes[:, 1:], label="tokens in its cluster", shrink=0.8)
fig.suptitle("E2LSH clusters of the first head's queries, 32 hashes (trained model)")
plt.show()

# %%
# Texture: the pixel spread within each token's patch; the smoother half of the tokens
# against the other half, at ccoat's default bucket width.
texture = images.unfold(2, patch, patch).unfold(3, patch, patch).std(dim=(1, 4, 5))
drawn = hashing.E2LSH(Ch, n_hashes=32, bucket_width=4.0, seed=0)(q_img)
size = token_sizes(drawn)
smooth = texture.flatten(1) < texture.flatten(1).median()
glue("size_smooth", size[smooth].mean().item())
glue("size_textured", size[~smooth].mean().item())
assert size[smooth].mean() > 2 * size[~smooth].mean(), "smooth tokens: larger clusters"

# %% [markdown]
# Uniform regions (here the plain backgrounds) fall into a few large clusters; edges and
# texture split into many small ones. Measured over all [4](#B "live") photos at ccoat's
# default $r = 4$, the smoother half of the tokens (by the pixel spread in their patch) sit in
# clusters of [151](#size_smooth:.0f "live") tokens on average, the other half in clusters of
# [17](#size_textured:.0f "live"). This is why the number of clusters adapts to the image.

# %% [markdown]
# ## Error and number of clusters against $r$ and the number of hashes
#
# For each bucket width and number of hashes we count the clusters and measure the relative
# error of the attention output, $\lVert \text{clustered} - \text{exact} \rVert /
# \lVert \text{exact} \rVert$, on all photos and heads. The yardstick is the crudest
# approximation: one cluster for the whole image, every image token given the attention of
# the mean query. The widths run from nearly one cluster per token to a handful per row.

# %%
widths = ccoat.choose(
    smoke=[1.0, 4.0, 32.0, 128.0],
    cpu=[0.5, 1, 2, 4, 8, 16, 32, 64, 128],
    gpu=[0.25, 0.5, 1, 2, 4, 8, 16, 32, 64, 128, 256],
)
hash_counts = ccoat.choose(smoke=[8, 32], cpu=[8, 32], gpu=[4, 8, 16, 32, 64])


def relative_error(out):
    return ((out - exact).norm() / exact.norm()).item()


with torch.no_grad():
    mean_query_out = F.scaled_dot_product_attention(q_img.mean(2, keepdim=True), k, v)
    one_cluster = torch.cat([exact[:, :, :1], mean_query_out.expand_as(q_img)], dim=2)
    rows = []
    for n in hash_counts:
        for width in widths:
            core = clustering.ClusteredCore(Ch, n_hashes=n, bucket_width=width, seed=0)
            K_mean = core.cluster(q_img).num_clusters.float().mean().item()
            rows.append(
                dict(
                    n_hashes=n,
                    r=width,
                    error=relative_error(core(q, k, v)),
                    clusters=K_mean,
                )
            )
sweep = pd.DataFrame(rows)
baseline = relative_error(one_cluster)

# %%
fig, axes = plt.subplots(1, 2, figsize=(11, 4))
for n, sel in sweep.groupby("n_hashes"):
    axes[0].plot(sel.r, sel.clusters / (H * W), "o-", label=f"{n} hashes")
    axes[1].plot(sel.r, sel.error, "o-", label=f"{n} hashes")
axes[1].axhline(baseline, color="grey", ls="--", label="one cluster per image")
axes[0].set(
    xscale="log",
    yscale="log",
    xlabel="bucket width r",
    ylabel="clusters K / image tokens",
    title="Clusters formed",
)
axes[1].set(
    xscale="log",
    xlabel="bucket width r",
    ylabel="relative error",
    title="Error of the attention output",
)
axes[1].legend()
fig.suptitle(
    "Clustered vs exact softmax attention\nstage 1 block 1 of the trained Clustering "
    f"CoaT Tiny, {B} Imagenette photos"
)
fig.tight_layout()

# %%
at32 = sweep[sweep.n_hashes == 32].set_index("r")
default, big = at32.loc[4.0], at32.iloc[-1]
assert at32.error.is_monotonic_increasing, "the error should grow with r"
assert at32.clusters.is_monotonic_decreasing, "the clusters should shrink as r grows"
assert big.clusters < 10 and big.error > 0.5 * baseline, (
    "large r: few clusters, big error"
)
assert big.error < baseline, "even a few clusters should beat one cluster per image"
few_hashes = sweep[(sweep.n_hashes == 8) & (sweep.r == 4.0)].iloc[0]
assert few_hashes.clusters < default.clusters, "fewer hashes should merge more queries"
assert few_hashes.error > default.error, "and so move the output further"
for name, value in dict(
    d_hashes=32,
    d_r=4.0,
    d_clusters=default.clusters,
    d_share=default.clusters / (H * W),
    d_error=default.error,
    big_r=big.name,
    big_clusters=big.clusters,
    big_error=big.error,
    baseline=baseline,
).items():
    glue(name, value)

# %% [markdown]
# With [32](#d_hashes) hashes and $r$ = [4](#d_r:.0f), the image tokens form
# [377](#d_clusters:.0f "live") clusters per row on average ([37%](#d_share:.0% "live") of them),
# and the relative error is **[0.028](#d_error:.3f "live")**. At $r$ = [128](#big_r:.0f) only
# [2.1](#big_clusters:.1f "live") clusters per row remain and the error is
# **[0.202](#big_error:.3f "live")**, against **[0.240](#baseline:.3f "live")** for a single
# cluster: wide buckets make the output visibly coarser. Fewer hashes cut the clusters as
# wider buckets do (a pair must collide in every hash to share a cluster, so fewer hashes
# merge more), and the error then rises with them.

# %% [markdown]
# ## What it costs: the measured benchmark
#
# The attention of the prototypes costs $(1 + K) N C_h$ multiply-accumulates per head for
# the scores, against $N^2 C_h$ for exact attention; hashing adds $N \cdot L
# \cdot C_h$ for the projections and a few sorts. The benchmark
# `benchmarks/bench_clustered_attention.py` times one such layer (on `china.jpg` alone,
# batch 1, through a randomly initialised CoaT-Lite Tiny: a measurement of time, where the
# weights matter only through $K$) and the whole model; its results file records how it was
# run (printed under the table).

# %%
bench = json.loads(
    results_file(
        "bench_clustered_attention.json", CCOAT_REPO, required=True
    ).read_text()
)
layer = pd.DataFrame(
    {
        "tokens N": r["tokens"],
        "clusters (mean)": round(r["clusters_mean"]),
        "time clustered / softmax": round(r["time_ratio_clustered_over_softmax"], 3),
        "hashing share": f"{r['hash_and_cluster_share_of_clustered']:.0%}",
    }
    for r in bench["layer"].values()
).set_index("tokens N")
display(layer)
glue("bench_img", bench["model"]["img_size"])
glue("bench_ratio", bench["model"]["time_ratio_clustered_over_softmax"])
glue("bench_vs_factorized", bench["model"]["time_ratio_clustered_over_factorized"])
assert bench["model"]["time_ratio_clustered_over_softmax"] < 1, (
    "clustered should be faster"
)
assert bench["model"]["time_ratio_clustered_over_factorized"] > 1, (
    "and factorized faster"
)
print(describe(bench))

# %% [markdown]
# For the whole model at [448](#bench_img) px, clustered attention takes
# **[0.12](#bench_ratio:.2f)×** the time of softmax attention, but
# **[2.0](#bench_vs_factorized:.1f)×** that of CoaT's factorized attention: clustering
# pays against softmax attention, not against the operator CoaT already has.
# Untrained queries are smaller than trained ones and form fewer clusters at the same $r$
# (exercise 4 measures it), so these times, made with random weights, favour clustering.

# %% [markdown]
# ## Clustering inside CoaT's factorized attention
#
# The seed's module, as this book reads it (chapter 4) and as every trained Clustering CoaT
# here runs it, replaces CoaT's factorized operator with softmax attention of prototypes. The
# alternative keeps CoaT's own operator,
# $\frac{1}{\sqrt{C_h}}\,q\,(\mathrm{softmax}_N(k)^\top v)$, and clusters only its
# queries: ccoat's `clustered_factorized` kind. That operator is linear in $q$, so a
# prototype's output is exactly the mean of its members' outputs: `clustered_factorized`
# averages the outputs within each cluster, and it saves only the $N C_h^2$ product per
# head, which is already small. Linearity also sets its error: there is no softmax pulling
# every output towards the average value, so the output moves as much as the query does
# when it is replaced by its prototype.

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
assert f_error > default.error, "the factorized kind should be the less forgiving one"
glue("f_error", f_error)
glue("q_error", q_error)

# %% [markdown]
# Clustered factorized attention equals the cluster-averaged factorized output. Its relative
# error against factorized attention is **[0.123](#f_error:.3f "live")**, of the order of how far
# the queries move to their prototypes (**[0.129](#q_error:.3f "live")** of their norm) and above
# the error of clustered softmax attention at the same $r$ ([0.028](#d_error:.3f "live")): the
# softmax's averaging hides part of the clustering's error.

# %% [markdown]
# ## Summary
#
# - Prototypes are cluster means (`index_add_` then a division), broadcast is a `gather`;
#   both are differentiable and run for every image and head at once.
# - Clustered attention computes softmax attention for the prototypes only and gives each
#   query its cluster's row; the class token keeps its own row, and CRPE uses every token's
#   own query. As $r \to 0$ it becomes exact softmax attention (largest difference
#   [6.3e-06](#gap:.1e "live")).
# - On a trained model's queries of real photos the clusters follow the image: few in flat
#   regions, many at edges. At $r$ = [4](#d_r:.0f) with [32](#d_hashes) hashes,
#   $K$ is [37%](#d_share:.0% "live") of the tokens and the error [0.028](#d_error:.3f "live");
#   at $r$ = [128](#big_r:.0f), [2.1](#big_clusters:.1f "live") clusters and an error of
#   [0.202](#big_error:.3f "live"), against [0.240](#baseline:.3f "live") for one cluster.
# - Against softmax attention clustering pays ([0.12](#bench_ratio:.2f)× its time for the
#   whole model at [448](#bench_img) px); against CoaT's factorized attention it does not
#   ([2.0](#bench_vs_factorized:.1f)×), and clustered *factorized* attention has the
#   larger error ([0.123](#f_error:.3f "live")).
#
# ## Exercises
#
# 1. Cap the clusters with `max_clusters=64` in `ClusteredCore` (at $r$ = 4). How does the
#    error compare with a bucket width that gives 64 clusters per row on its own?
# 2. Do the heads agree on which tokens go together? Compare, for every pair of heads, the
#    pairs of tokens that share a cluster.
# 3. Show that with identical queries the clustered output of every image token is the
#    attention of the mean query, whatever $r$.
# 4. *(Mechanics, random weights.)* A randomly initialised CoaT-Lite Tiny has smaller queries
#    than the trained one. How many clusters does $r$ = 4 form on them, and does scaling $r$
#    by the ratio of the query scales restore the trained model's count?

# %% tags=["hide-input"]
with torch.no_grad():
    capped = clustering.ClusteredCore(Ch, 32, 4.0, max_clusters=64, seed=0)
    capped_error = relative_error(capped(q, k, v))
    low, high = 4.0, 256.0  # bisect (geometrically) for the r that gives 64 clusters
    for _ in range(12):
        r64 = (low * high) ** 0.5
        K64 = clustering.ClusteredCore(Ch, 32, r64, seed=0).cluster(q_img).num_clusters
        low, high = (r64, high) if K64.float().mean() > 64 else (low, r64)
    wide_error = relative_error(clustering.ClusteredCore(Ch, 32, r64, seed=0)(q, k, v))
assert abs(K64.float().mean().item() - 64) < 8, (
    "the bisection should reach ~64 clusters"
)
assert capped_error < wide_error, "capping fine clusters should beat one wide bucket"
glue("capped_error", capped_error)
glue("r64", r64)
glue("wide_error", wide_error)

# %% [markdown]
# ```{admonition} Solution to exercise 1
# :class: dropdown
# The cap keeps each row's 64 largest clusters at $r$ = 4 and merges every other cluster,
# whole, into the one with the nearest prototype: relative error
# **[0.058](#capped_error:.3f "live")**. The bucket width that gives 64 clusters per row on its
# own is $r \approx$ [12.6](#r64:.1f "live"), with an error of **[0.073](#wide_error:.3f "live")**.
# The cap is more accurate at the same $K$: it starts from fine clusters and merges by
# distance between prototypes, while a wide bucket cuts space on a fixed random grid.
# ```

# %% tags=["hide-input"]
lsh = hashing.E2LSH(Ch, n_hashes=32, bucket_width=4.0, seed=0)
ids = lsh(q_img).ids  # (B, h, H*W)
together = ids.unsqueeze(-1) == ids.unsqueeze(-2)  # (B, h, H*W, H*W)
together &= ~torch.eye(H * W, dtype=torch.bool)  # pairs of distinct tokens
overlap = [
    (
        (together[:, a] & together[:, b]).sum()
        / (together[:, a] | together[:, b]).sum()
    ).item()
    for a in range(heads)
    for b in range(a + 1, heads)
]
assert max(overlap) < 0.5, "no two heads should share most of their pairs"
glue("overlap_mean", sum(overlap) / len(overlap))
glue("overlap_low", min(overlap))
glue("overlap_high", max(overlap))

# %% [markdown]
# ```{admonition} Solution to exercise 2
# :class: dropdown
# For two heads, take the pairs of tokens that share a cluster in either head and count the
# share that shares one in both (the Jaccard index of the two sets of pairs). Over all pairs
# of heads it is [0.34](#overlap_mean:.2f "live") on average, from
# [0.21](#overlap_low:.2f "live") to [0.44](#overlap_high:.2f "live"): the heads agree in part
# (the image's flat regions group in every head) but each head groups by its own features,
# so each needs its own clustering, as ccoat does per (image, head) row.
# ```

# %% tags=["hide-input"]
same = q.clone()
same[:, :, 1:] = q_img[:, :, :1]  # every image token gets the first one's query
with torch.no_grad():
    target = F.scaled_dot_product_attention(same[:, :, 1:2], k, v)  # (B, h, 1, C_h)
    for width in (1e-3, 1.0, 4.0, 1e3):
        out = clustering.ClusteredCore(Ch, 32, width, seed=0)(same, k, v)
        torch.testing.assert_close(out[:, :, 1:], target.expand_as(out[:, :, 1:]))

# %% [markdown]
# ```{admonition} Solution to exercise 3
# :class: dropdown
# Identical queries have identical hash codes whatever $r$, so they form one cluster; its
# prototype, their mean, is that same query, and its attention row is broadcast to all of
# them. The cell above checks it for $r$ from $10^{-3}$ to $10^{3}$.
# ```

# %% tags=["hide-input"]
random_model = ccoat.create_model("ccoat_lite_tiny", num_classes=10, img_size=128)
with torch.no_grad():  # random init (seed 0 above): mechanics only
    q_random = clustering.block_qkv(random_model.eval(), inputs)[0][:, :, 1:]
scale = q_random.std().item() / q_img.std().item()


def mean_clusters(x, width):
    return hashing.E2LSH(Ch, 32, width, seed=0)(x).num_clusters.float().mean().item()


trained_K, random_K = mean_clusters(q_img, 4.0), mean_clusters(q_random, 4.0)
rescaled_K = mean_clusters(q_random, 4.0 * scale)
assert random_K < trained_K / 2, "smaller queries: far fewer clusters at the same r"
assert 2 / 3 < rescaled_K / trained_K < 3 / 2, "r scaled with the queries restores K"
for name, value in dict(
    random_std=q_random.std().item(),
    scale=scale,
    random_K=random_K,
    trained_K=trained_K,
    rescaled_K=rescaled_K,
).items():
    glue(name, value)

# %% [markdown]
# ```{admonition} Solution to exercise 4
# :class: dropdown
# At initialisation the queries have a per-channel standard deviation of
# [0.16](#random_std:.2f) (0.02-std qkv weights on LayerNorm'd tokens), against
# [0.55](#q_std:.2f "live") after training. At $r$ = 4 they form
# **[77](#random_K:.0f "live")** clusters per row against the trained model's
# **[377](#trained_K:.0f "live")**. E2LSH depends only on the ratio of distances to $r$, so
# scaling $r$ by the ratio of the query scales ([0.29](#scale:.2f "live")) gives
# **[388](#rescaled_K:.0f "live")** clusters, within a factor of 1.5 of the trained count (the
# two sets of queries differ in shape as well as in scale): the bucket width must follow the
# queries' scale, which training changes.
# ```
