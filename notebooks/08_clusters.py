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
# # What the clusters look like
#
# Clustering attention rests on one bet: that many queries of an image are nearly the same, so
# that one prototype can stand for each group. Does a Clustering CoaT **trained with
# clustering** keep its queries grouped? No. Training spreads the queries apart: by the last
# epoch stages 2 to 4 form about one cluster per token, and stage 1 about one cluster for every
# two tokens. With as many prototypes as tokens, prototype attention costs what softmax
# attention costs, plus the hashing.
#
# **Prerequisites.** Chapter 2 (LSH, the bucket width $r$), chapter 3 (clusters, prototypes),
# chapter 5 (counting MACs) and chapter 7 (the committed Imagenette models).
#
# **Learning objectives**
#
# - read how many clusters a model forms per stage from its training record, epoch by epoch;
# - draw a trained model's clusters over real photos;
# - measure how the cluster count varies across images, blocks and heads, and how large the
#   clusters are;
# - turn cluster counts into the cost of the attention core, and compare it with softmax and
#   factorized attention.

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
import numpy as np
import pandas as pd
import seaborn as sns
import timm
import torch
from IPython.display import display

from ccoat import cost
from ccoat import data as cdata
from ccoat.clustering import block_index, clusters_per_stage
from ccoat.plotting import KIND_COLORS, block_label, set_theme
from ccoat.prose import glue
from ccoat.runfolder import read_run

set_theme()
DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
print("profile:", ccoat.get_profile(), "| device:", DEVICE)

# %% [markdown]
# ## The trained model
#
# The model is the committed Clustering CoaT Tiny of chapter 7
# (`results/imagenette128_gpu_ccoat_lite_tiny`): trained from scratch **with** the seed's
# clustered attention (bucket width $r$ = [4](#r_trained:g), $L$ =
# [32](#n_hashes)), 128-px Imagenette,
# [14](#epochs) epochs on one GPU, [71.5](#top1:.1f)% top-1 on all
# [3925](#val_images) validation images. Its hash projections are part of its weights, so
# the clusters below are the ones it trained with.

# %%
run = read_run("imagenette128_gpu_ccoat_lite_tiny", CCOAT_REPO)
IMG_SIZE = run.run["data"]["img_size"]
model = run.load_model().to(
    DEVICE
)  # its own kind: clustered, its own hash projections
shapes = cost.stage_shapes(model, IMG_SIZE)
TOKENS = {s.name: s.image_tokens for s in shapes}  # N per stage: 1024, 256, 64, 16
print("attention kinds:", model.attention_kinds, "| image tokens per stage:", TOKENS)
hasher = model.stages[0].blocks[0].attn.core.hasher
glue("r_trained", hasher.bucket_width)
glue("n_hashes", hasher.n_hashes)
glue("epochs", len(run.metrics))
glue("top1", run.eval["top1"])
glue("val_images", run.eval["images"])

# %% [markdown]
# ## Clusters per stage over training
#
# Every epoch, the training run counted the clusters each (image, head) row formed on the
# validation images, averaged per stage; `metrics.jsonl` keeps them. Divided by the stage's
# number of image tokens $HW$, the count $K/HW$ says how much clustering can save: at $K/HW = 1$
# every query is alone in its cluster.

# %%
per_epoch = pd.DataFrame(list(run.metrics.clusters_per_stage), index=run.metrics.epoch)
fraction = per_epoch / pd.Series(TOKENS)  # K/HW per stage and epoch
fig, ax = plt.subplots(figsize=(7, 3.6))
for (stage, values), color in zip(fraction.items(), sns.color_palette("crest", 4)):
    label = f"{stage} (HW = {TOKENS[stage]})"
    ax.plot(values.index, values, "o-", color=color, label=label)
ax.axhline(1, color="grey", ls=":", lw=1)
ax.set(
    xlabel="epoch",
    ylabel="clusters per image token, K/HW",
    ylim=(0, 1.05),
    title="Clustering CoaT Tiny trained with clustering: K/HW per stage",
)
ax.legend(fontsize="small", loc="lower right")
fig.tight_layout()
plt.show()

# %%
first, last = fraction.iloc[0], fraction.iloc[-1]
assert last["stage1"] > 2 * first["stage1"], "stage 1's queries no longer spread apart"
assert last["stage2"] > first["stage2"], "stage 2's queries no longer spread apart"
assert (last[["stage2", "stage3", "stage4"]] > 0.95).all(), "stages 2-4 are not K ≈ HW"
assert (first[["stage3", "stage4"]] > 0.95).all(), "stages 3-4 did not start at K ≈ HW"
assert 0.4 < last["stage1"] < 0.6, (
    "stage 1 no longer keeps about one cluster per 2 tokens"
)
final = pd.Series(run.eval["clusters_per_stage"]) / pd.Series(TOKENS)  # all val images
assert (final - last).abs().max() < 0.02, (
    "the scored weights disagree with the last epoch"
)
for stage in TOKENS:
    glue(f"first_{stage}", first[stage])
    glue(f"last_{stage}", last[stage])
    glue(f"final_{stage}", final[stage])

# %% [markdown]
# After the first epoch, stage 1 formed [0.12](#first_stage1:.2f) clusters per token and
# stage 2 [0.63](#first_stage2:.2f): the young model's queries were still alike. Training
# pulled them apart: in the last epoch stage 1 forms [0.53](#last_stage1:.2f) clusters per
# token, stage 2 [0.96](#last_stage2:.2f), stage 3 [1.00](#last_stage3:.2f) and stage 4
# [1.00](#last_stage4:.2f). The final weights, scored on every validation image, give the
# same: [0.52](#final_stage1:.2f), [0.95](#final_stage2:.2f),
# [1.00](#final_stage3:.2f) and [1.00](#final_stage4:.2f). Nothing in the loss asks
# for few clusters; a classifier gains from queries that tell tokens apart, and at a fixed
# bucket width that means more buckets.
#
# ## Clusters over the image
#
# Each token of stage 1 covers a 4×4-pixel patch. Below, the tokens of the first block of
# stage 1 are painted, opaque, next to the photo (left) with the colour of **their cluster's prototype**: the
# prototypes are projected to three dimensions (their first principal components, per head) and
# read as RGB. Tokens in one cluster share one colour exactly; similar prototypes look alike.

# %%
n_images = ccoat.choose(smoke=4, cpu=16, gpu=256)
glue("n_images", n_images)
_, val_set, info = cdata.build_datasets(
    "imagenette", cdata.data_root(), img_size=IMG_SIZE
)
loader = cdata.make_loader(
    cdata.subset(val_set, n_images, seed=1), batch_size=n_images, train=False
)
images, labels = next(iter(loader))
with torch.no_grad(), ccoat.record_clusters(model) as records:
    model(images.to(DEVICE))
records = {name: {k: v.cpu() for k, v in rec.items()} for name, rec in records.items()}
print(f"{n_images} val images; blocks recorded:", ", ".join(map(block_label, records)))


# %%
def prototype_colours(rec, i, head):
    """(H*W, 3) colours in [0, 1]: each token's prototype's first three principal
    components (a row with one cluster is grey)."""
    ids = rec["ids"][i, head]
    protos = rec["prototypes"][i, head, : int(rec["num_clusters"][i, head])]
    if len(protos) < 2:
        return torch.full((len(ids), 3), 0.5)
    centred = protos - protos.mean(0)
    q = min(3, len(protos) - 1, centred.shape[1])
    _, _, v = torch.pca_lowrank(centred, q=q, center=False)
    pcs = torch.nn.functional.pad(centred @ v, (0, 3 - q))
    lo, hi = pcs.min(0).values, pcs.max(0).values
    return ((pcs - lo) / (hi - lo).clamp_min(1e-6))[ids]


def show_image(ax, i):
    mean, std = (torch.tensor(v)[:, None, None] for v in (info.mean, info.std))
    ax.imshow((images[i] * std + mean).clamp(0, 1).permute(1, 2, 0).numpy())


def class_name(i):
    wnid = info.classes[labels[i]]
    return timm.data.ImageNetInfo().label_name_to_description(wnid).split(",")[0]


# %%
rec, side = records["stages.0.blocks.0"], IMG_SIZE // 4  # stage 1: a 32x32 grid
heads = (0, 3, 6)
fig, axes = plt.subplots(3, 1 + len(heads), figsize=(10, 7.6))
for row, i in enumerate(range(3)):
    show_image(axes[row, 0], i)
    axes[row, 0].set_title(class_name(i), fontsize=9)
    for col, head in enumerate(heads, start=1):
        show_image(axes[row, col], i)
        colours = prototype_colours(rec, i, head).reshape(side, side, 3)
        extent = (-0.5, IMG_SIZE - 0.5, IMG_SIZE - 0.5, -0.5)
        axes[row, col].imshow(
            colours.numpy(), extent=extent
        )  # opaque: colour = cluster
        k = int(rec["num_clusters"][i, head])
        axes[row, col].set_title(f"head {head}: K = {k} of {side**2}", fontsize=9)
for ax in axes.flat:
    ax.set_xticks([]), ax.set_yticks([])
fig.suptitle(
    "Stage 1, block 1: tokens coloured by their cluster's prototype", fontsize=11
)
fig.tight_layout()
plt.show()

# %% [markdown]
# Uniform regions (the plain backgrounds, a shirt) share a few colours over large areas;
# edges and texture break into many small clusters. The heads differ: each hashes its own
# queries with its own projections.
#
# ## How many clusters, across images, blocks and heads
#
# One photo can mislead. Here are the counts over the [16](#n_images "live") validation photos
# above, for every block and head, as clusters per image token.

# %%
rows = [
    dict(block=block_label(name), stage=block_index(name)[0] + 1, clusters=int(k))
    | {"fraction": int(k) / rec["ids"].shape[-1]}
    for name, rec in records.items()
    for k in rec["num_clusters"].flatten()
]
counts = pd.DataFrame(rows)
fig, ax = plt.subplots(figsize=(9, 3.6))
sns.boxplot(
    data=counts,
    x="block",
    y="fraction",
    hue="stage",
    palette="crest",
    ax=ax,
    legend=False,
)
ax.set(
    ylabel="clusters per image token, K/HW",
    xlabel="block (s = stage, b = block)",
    title=f"{n_images} images × {shapes[0].heads} heads, r = {hasher.bucket_width:g}",
)
fig.tight_layout()
plt.show()
median = counts.groupby("stage")["fraction"].median()
assert median.loc[1] < median.loc[[2, 3, 4]].min(), "stage 1 no longer clusters most"
for stage, value in median.items():
    glue(f"median_stage{stage}", value)

# %% [markdown]
# On these images the median row forms [0.55](#median_stage1:.2f "live") clusters per token in
# stage 1, [1.00](#median_stage2:.2f) in stage 2, [1.00](#median_stage3:.2f) in stage 3
# and [1.00](#median_stage4:.2f) in stage 4: stage 1 is the only stage where clustering
# groups many queries.
#
# ## Cluster sizes
#
# A count hides how the tokens are shared out: a few large clusters and many singletons give
# the same count as evenly sized ones. The sizes of every cluster of stage 1:

# %%
stage1 = [name for name in records if block_index(name)[0] == 0]
sizes = torch.cat([records[n]["counts"][records[n]["counts"] > 0] for n in stage1])
sizes = sizes.numpy()
fig, ax = plt.subplots(figsize=(7, 3.4))
bins = np.logspace(0, np.log10(max(sizes.max(), 2)), 30)
ax.hist(sizes, bins=bins, color=KIND_COLORS["clustered"])
ax.set(
    xscale="log",
    yscale="log",
    xlabel="tokens in the cluster",
    ylabel="number of clusters",
    title="Cluster sizes in stage 1",
)
fig.tight_layout()
plt.show()
singletons = float((sizes == 1).mean())
assert singletons > 0.5, "singletons are no longer most of stage 1's clusters"
glue("singletons", 100 * singletons)
glue("largest", int(sizes.max()))

# %% [markdown]
# In stage 1, [79](#singletons:.0f "live")% of the clusters are single tokens, and the largest
# holds [508](#largest "live") tokens: a few large clusters (the uniform regions) and a crowd of
# singletons.
#
# ## What K ≈ HW costs
#
# Prototype attention computes softmax attention for the prototypes of a row, padded to the
# largest row's $K_{\max}$ (plus the class token), against all $N = 1 + HW$ keys:
# $2 h (1 + K_{\max}) N C_h$ MACs per block and image, where softmax attention computes
# $2 h N^2 C_h$. The hashing adds $HW\,C\,L$ MACs
# (every query against every projection), and a sort. `ccoat.cost.audit` counts both on two of
# the photos above, with the clusters the trained model forms on them; CoaT-Lite's factorized
# attention is shown for scale.

# %%
B, KINDS = 2, ("softmax", "factorized")
weights = run.load_model()
kinds = {k: ccoat.convert_attention(copy.deepcopy(weights), k) for k in KINDS}
tables = {"clustered": cost.audit(weights, IMG_SIZE, B, images[:B])}
tables |= {k: cost.audit(m, IMG_SIZE, B) for k, m in kinds.items()}


def macs_of(kind, components):
    table = tables[kind][tables[kind].component.isin(components)]
    return (
        table.groupby("stage").macs.sum().reindex(list(TOKENS), fill_value=0) / B / 1e6
    )


found = tables["clustered"].attrs["clusters"]
core = pd.DataFrame(
    {
        "image tokens HW": pd.Series(TOKENS),
        "clusters per row K": {
            s: cost.stage_clusters_per_row(found, s) for s in TOKENS
        },
        "softmax": macs_of("softmax", ["attention"]),
        "prototypes": macs_of("clustered", ["attention"]),
        "hashing": macs_of("clustered", ["hashing"]),
        "factorized": macs_of("factorized", ["attention"]),
    }
)
core["(proto + hash) / softmax"] = (core.prototypes + core.hashing) / core.softmax
caption = "M MACs per image and stage (2 blocks); K and HW are counts"
display(core.style.format("{:.2f}").set_caption(caption))

# %%
ratio = core["(proto + hash) / softmax"]
assert (ratio[["stage2", "stage3", "stage4"]] > 0.95).all(), (
    "K ≈ HW no longer costs softmax"
)
assert ratio["stage1"] < 1, "stage 1's prototypes no longer cost less than softmax"
cheaper = core.softmax / core.factorized  # softmax over factorized: (1 + N) / C_h
assert (cheaper[["stage1", "stage2"]] > 10).all(), "factorized no longer far cheaper"
totals = {k: t.macs.sum() / B / 1e9 for k, t in tables.items()}
assert totals["clustered"] > totals["factorized"], "clustered is no longer the dearer"
glue("ratio_stage1", ratio["stage1"])
glue("ratio_min234", ratio[["stage2", "stage3", "stage4"]].min())
glue("fact_stage1", cheaper["stage1"])
glue("fact_stage2", cheaper["stage2"])
hash_share = core.hashing / core.softmax
assert hash_share["stage1"] < 0.05 < 0.5 < hash_share["stage4"], (
    "the hashing's share moved"
)
glue("hash_share1", 100 * hash_share["stage1"])
glue("hash_share4", 100 * hash_share["stage4"])
glue("total_vs_softmax", totals["clustered"] / totals["softmax"])
for kind, value in totals.items():
    glue(f"gmacs_{kind}", value)

# %% [markdown]
# In stages 2 to 4, prototype attention plus the hashing costs at least
# [1.06](#ratio_min234:.2f) times what softmax attention costs: with $K \approx HW$ the
# prototypes are the queries, and nothing is saved. Stage 1, the one stage that clusters, costs
# [0.88](#ratio_stage1:.2f) times softmax attention (the cores pad every row to the largest
# row's $K$, so the rows that cluster most pay for the ones that cluster least). The hashing
# is small in MACs where $HW$ is large ([1.6](#hash_share1:.1f)% of softmax attention in
# stage 1) and not where it is small ([89](#hash_share4:.0f)% in stage 4); beyond its
# MACs it sorts and gathers, which a MAC count does not see (chapter 5 times them).
# CoaT-Lite's factorized attention, linear in $N$, costs $N/C_h$ times less than softmax
# attention: [128](#fact_stage1:.0f) times less in stage 1 and
# [16](#fact_stage2:.0f) times less in stage 2 (in stage 4, with 16 image tokens and
# $C_h = 40$, $N/C_h = 17/40 < 1$, so it costs more). The
# whole model costs [0.79](#gmacs_clustered:.2f) GMACs per
# image with clustered attention, [0.82](#gmacs_softmax:.2f) with softmax and
# [0.52](#gmacs_factorized:.2f) with factorized attention. Clustered, the model costs
# [0.97](#total_vs_softmax:.2f) times what it costs with softmax attention, and more than
# with factorized attention.
#
# ## Summary
#
# - Trained with clustering, Clustering CoaT Tiny spreads its queries apart: from
#   [0.12](#first_stage1:.2f) to [0.53](#last_stage1:.2f) clusters per token in stage
#   1 and from [0.63](#first_stage2:.2f) to [0.96](#last_stage2:.2f) in stage 2 over
#   [14](#epochs) epochs; stages 3 and 4 form one cluster per token throughout.
# - Where it does cluster (stage 1), clusters follow the image: uniform regions form a few
#   large clusters, edges and texture many singletons ([79](#singletons:.0f "live")% of stage 1's
#   clusters).
# - With $K \approx N$, prototype attention costs what softmax attention costs (here at least
#   [1.06](#ratio_min234:.2f) times it in stages 2 to 4), plus the hashing; CoaT-Lite's
#   factorized attention costs [128](#fact_stage1:.0f) times less in stage 1.
#
# ## Exercises
#
# 1. Count the clusters per stage with the bucket width halved ($r = 2$) and doubled
#    ($r = 8$), with the trained weights. Which stage is most sensitive?
# 2. Colour the tokens by cluster id instead of by prototype. What does the picture lose?
# 3. From the stage-1 counts alone, compute the MACs of the stage-1 attention core of the two
#    photos with the formula above, and check it against `ccoat.cost.audit`. How many times
#    factorized attention's MACs is it?

# %% tags=["hide-input"]
# Exercise 1: the trained weights, new hash projections of width r (seed 0).
softmax_model = kinds["softmax"]
widths = {}
for r in (2.0, 4.0, 8.0):
    m = ccoat.convert_attention(
        copy.deepcopy(softmax_model), "clustered", bucket_width=r, seed=0
    )
    with torch.no_grad(), ccoat.record_clusters(m) as recs:
        m(images[:B])
    widths[r] = {s: k / TOKENS[s] for s, k in clusters_per_stage(recs).items()}
sweep = pd.DataFrame(widths)  # K/HW, stages x widths
spread = sweep[2.0] - sweep[8.0]
assert spread.idxmax() == "stage1", "stage 1 is no longer the most sensitive"
assert (sweep[2.0] >= sweep[4.0]).all() and (sweep[4.0] >= sweep[8.0]).all()
for r in widths:
    glue(f"ex1_stage1_r{r:g}", sweep.loc["stage1", r])
glue("ex1_spread1", spread["stage1"])
glue("ex1_spread_rest", spread[["stage2", "stage3", "stage4"]].max())

# %% tags=["hide-input"]
# Exercise 2: adjacent ids against any two clusters; each cluster's nearest one.
rec = records["stages.0.blocks.0"]
ratios, far = [], []
for head in range(rec["num_clusters"].shape[1]):
    k = int(rec["num_clusters"][0, head])
    protos = rec["prototypes"][0, head, :k]
    distances = torch.cdist(protos, protos)  # (K, K)
    adjacent = distances.diagonal(1).mean()  # ids i and i + 1
    ratios.append(float(adjacent / (distances.sum() / (k * (k - 1)))))
    nearest = (distances + torch.eye(k) * distances.max()).argmin(1)
    far.append(((nearest - torch.arange(k)).abs() > 10).float().mean())
ratio_ids, far_ids = float(np.mean(ratios)), 100 * float(torch.stack(far).mean())
assert ratio_ids < 1, "adjacent ids are no longer closer than any two clusters"
assert far_ids > 10, "nearest clusters are no longer often far apart in id"
glue("ex2_ratio", ratio_ids)
glue("ex2_far", far_ids)

# %% tags=["hide-input"]
# Exercise 3: 2 (B h + padded slots) (1 + N) C_h per block.
s1 = shapes[0]
heads_, c_h, n_tok = s1.heads, s1.dim // s1.heads, 1 + s1.image_tokens
by_hand = 0
for name in stage1:
    k_pad = (
        tables["clustered"].attrs["clusters"][("stage1", block_index(name)[1])].padded
    )
    by_hand += 2 * (B * heads_ + k_pad) * n_tok * c_h  # rows = B*h class-token queries
counted = core.loc["stage1", "prototypes"] * B * 1e6
assert abs(by_hand - counted) <= 1e-6 * counted, (
    "the formula no longer matches the count"
)
glue("ex3_mmacs", by_hand / B / 1e6)
glue("ex3_vs_factorized", counted / (core.loc["stage1", "factorized"] * B * 1e6))

# %% [markdown]
# ```{admonition} Solution to exercise 1
# :class: dropdown
# Convert the trained weights to softmax attention, then back to `clustered` with
# `bucket_width=r` (a new hash family of width $r$: the committed offsets were drawn for
# $r = 4$, so loading them into another width would not be E2LSH of that width). On the two
# photos, stage 1 forms [0.91](#ex1_stage1_r2:.2f), [0.62](#ex1_stage1_r4:.2f) and
# [0.25](#ex1_stage1_r8:.2f) clusters per token at $r$ = 2, 4 and 8: a change of
# [0.66](#ex1_spread1:.2f) between $r = 2$ and $r = 8$, against at most
# [0.04](#ex1_spread_rest:.2f) in stages 2 to 4. Stage 1 is the most sensitive: the later
# stages' queries are far apart at either width, so a bucket twice as wide still separates
# them.
# ```
#
# ```{admonition} Solution to exercise 2
# :class: dropdown
# The partition stays (tokens with one id share one colour), but not the similarity between
# clusters. Ids are the ranks of the code tuples in lexicographic order: adjacent ids usually
# share their first codes, so their prototypes are closer than two clusters taken at random
# ([0.44](#ex2_ratio:.2f) times the mean distance, over the heads of the first photo's
# stage-1 block). But one order cannot keep every neighbour close: for
# [59](#ex2_far:.0f)% of the clusters, the nearest other prototype lies more than ten
# ids away. A colour scale over ids paints such neighbours in unrelated colours; the
# prototype colours put similar clusters in similar colours.
# ```
#
# ```{admonition} Solution to exercise 3
# :class: dropdown
# Per block, the core attends $h$ class-token queries and $h K$ prototype slots (every row
# padded to the block's largest $K$, $K_{\max}$) to $N = 1 + HW$ keys, then multiplies by
# the values: $2 (B h + \text{padded slots})\, N C_h$ MACs. Summed over stage 1's blocks this gives
# [232.7](#ex3_mmacs:.1f) M MACs per image, exactly what `ccoat.cost.audit` counts, and
# [111](#ex3_vs_factorized:.0f) times the MACs of factorized attention on the same stage.
# ```
