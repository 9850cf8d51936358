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
# # What the clusters look like
#
# Clustering attention rests on one bet: that many queries in an image are nearly the same, so
# one prototype can stand for them. This chapter looks at the clusters a trained model forms:
# over which parts of an image, in which heads and stages, and how many.
#
# **Learning objectives**
#
# - draw a trained model's clusters and prototypes over real images, per stage and head;
# - measure how the number of clusters varies across images, blocks and heads;
# - relate cluster counts to the cost savings the seed hoped for.

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

import textwrap

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns
import timm
import torch
from IPython.display import Markdown, display

from ccoat import data as cdata
from ccoat.clustering import block_index
from ccoat.plotting import KIND_COLORS, block_label, set_theme
from ccoat.runfolder import first_run

set_theme()
PROFILE = ccoat.get_profile()
DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
print("profile:", PROFILE)

# %% [markdown]
# ## A trained model
#
# The chapter on Imagenette read the committed reference CoaT-Lite Tiny, trained at 128 px with
# factorized attention (`results/imagenette128_*_coat_lite_tiny`, the `gpu` recipe's where one
# is committed). We load its weights, convert it to the seed's clustered attention without
# retraining, and watch its clusters.


# %%
def reference_run(model_name):
    """model_name's committed run: the gpu recipe's, else the cpu one's, else None."""
    sizes = ("gpu", "cpu")
    return first_run([f"imagenette128_{s}_{model_name}" for s in sizes], CCOAT_REPO)


run = reference_run("coat_lite_tiny")
IMG_SIZE = run.run["data"]["img_size"]
print(
    textwrap.fill(
        f"val top-1 of the trained model: {run.eval['top1']:.1f}% on "
        f"{run.eval['images']} Imagenette val images at {IMG_SIZE} px, after "
        f"{len(run.metrics)} epoch(s) ({run.path.name})",
        88,
    )
)
model = run.load_model("clustered", seed=0).to(DEVICE)

_, val_set, info = cdata.build_datasets(
    "imagenette", cdata.data_root(), img_size=IMG_SIZE
)
n_images = ccoat.choose(smoke=8, cpu=64, gpu=256)
images, labels = next(
    iter(
        cdata.make_loader(
            cdata.subset(val_set, n_images, seed=1), batch_size=n_images, train=False
        )
    )
)
with torch.no_grad(), ccoat.record_clusters(model) as records:
    model(images.to(DEVICE))
records = {name: {k: v.cpu() for k, v in rec.items()} for name, rec in records.items()}
print(textwrap.fill("blocks recorded: " + ", ".join(records), 80))

# %% [markdown]
# ## Clusters over the image
#
# Each token of a stage covers a patch of the image (4×4 pixels in stage 1, 8×8 in stage 2, ...).
# Below, every token is painted with the colour of **its cluster's prototype**: the prototype
# vectors are projected to three dimensions (their first principal components, per head) and
# read as RGB. Tokens in one cluster share one colour exactly; similar prototypes look alike.

# %%
mean, std = (
    torch.tensor(info.mean)[:, None, None],
    torch.tensor(info.std)[:, None, None],
)


def show_image(ax, i):
    ax.imshow((images[i] * std + mean).clamp(0, 1).permute(1, 2, 0).numpy())


def prototype_colours(rec, i, head):
    """(H*W, 3) colours: each token's prototype's first three principal components."""
    ids, protos = (
        rec["ids"][i, head],
        rec["prototypes"][i, head, : int(rec["num_clusters"][i, head])],
    )
    centred = protos - protos.mean(0)
    if len(protos) < 2:
        return torch.full((len(ids), 3), 0.5)
    _, _, v = torch.pca_lowrank(
        centred, q=min(3, len(protos) - 1, centred.shape[1]), center=False
    )
    pcs = centred @ v
    pcs = torch.nn.functional.pad(pcs, (0, 3 - pcs.shape[1]))
    lo, hi = pcs.min(0).values, pcs.max(0).values
    return ((pcs - lo) / (hi - lo).clamp_min(1e-6))[ids]


def grid_of(rec):
    n = rec["ids"].shape[-1]
    side = int(round(n**0.5))
    return side, n // side


i = 0
blocks = [name for name in records if name.endswith("blocks.0")]
fig, axes = plt.subplots(len(blocks), 5, figsize=(12, 2.6 * len(blocks)))
for row, name in enumerate(blocks):
    rec = records[name]
    H, W = grid_of(rec)
    show_image(axes[row, 0], i)
    axes[row, 0].set_ylabel(f"stage {block_index(name)[0] + 1}")
    for col, head in enumerate([0, 2, 5, 7]):
        colours = prototype_colours(rec, i, head).reshape(H, W, 3)
        axes[row, col + 1].imshow(colours.numpy(), interpolation="nearest")
        k = int(rec["num_clusters"][i, head])
        axes[row, col + 1].set_title(f"head {head}: {k} of {H * W}", fontsize=9)
for ax in axes.flat:
    ax.set_xticks([]), ax.set_yticks([])
label = (
    timm.data.ImageNetInfo()
    .label_name_to_description(info.classes[labels[i]])
    .split(",")[0]
)
fig.suptitle(
    "First block of each stage: tokens coloured by their cluster's prototype; 'k of "
    f"N': clusters of tokens (a {label})"
)
fig.tight_layout()

# %% [markdown]
# ## How many clusters, across images, blocks and heads
#
# One picture can mislead; here are the cluster counts over all the validation images we ran,
# for every block and head, as a fraction of the tokens the block sees. A fraction of 1 means
# every query was alone in its cluster and clustering saved nothing.

# %%
rows = []
for name, rec in records.items():
    n_tokens = rec["ids"].shape[-1]
    stage = block_index(name)[0] + 1
    for img in range(rec["num_clusters"].shape[0]):
        for head in range(rec["num_clusters"].shape[1]):
            rows.append(
                dict(
                    block=block_label(name),
                    stage=stage,
                    head=head,
                    clusters=int(rec["num_clusters"][img, head]),
                    tokens=n_tokens,
                )
            )
counts = pd.DataFrame(rows)
counts["fraction"] = counts["clusters"] / counts["tokens"]

fig, ax = plt.subplots(figsize=(9, 4))
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
    ylabel="clusters / tokens",
    xlabel="block (s = stage, b = block)",
    title=f"Cluster counts, {n_images} validation images, 8 heads, default r",
)
fig.tight_layout()

# %%
per_stage = counts.groupby("stage")["fraction"].median()
display(
    Markdown(
        "Median clusters per token, by stage: "
        + ", ".join(f"stage {s}: **{f:.2f}**" for s, f in per_stage.items())
        + ". The seed's saving in the attention core scales with this fraction; "
        "a stage where it stays near 1 gains nothing from clustering and pays for "
        "the hashing."
    )
)

# %% [markdown]
# ## Cluster sizes
#
# Counts hide how the tokens are shared out: a few large clusters and many singletons give the
# same count as evenly sized ones. The distribution of cluster sizes in stage 1:

# %%
stage1 = [name for name in records if block_index(name)[0] == 0]
sizes = torch.cat(
    [records[n]["counts"][records[n]["counts"] > 0].flatten() for n in stage1]
).numpy()
fig, ax = plt.subplots()
ax.hist(
    sizes,
    bins=np.logspace(0, np.log10(max(sizes.max(), 2)), 30),
    color=KIND_COLORS["clustered"],
)
ax.set(
    xscale="log",
    yscale="log",
    xlabel="tokens in the cluster",
    ylabel="number of clusters",
    title="Cluster sizes in stage 1",
)
fig.tight_layout()
display(
    Markdown(
        f"In stage 1, **{(sizes == 1).mean():.0%}** of clusters are singletons and "
        f"the largest holds {int(sizes.max())} tokens."
    )
)

# %% [markdown]
# ## What this build's data can and cannot show
#
# The pictures are only as telling as the model behind them. Which case this build is in
# follows from its own numbers:

# %%
fraction_1, top1 = per_stage.loc[1], run.eval["top1"]
model_is = (
    f"the model is the committed reference ({len(run.metrics)} epoch(s) of the "
    f"`{run.path.name.split('_')[1]}` recipe at {IMG_SIZE} px, val top-1 {top1:.1f}%)"
)
if fraction_1 > 0.9:
    reading = (
        f"In stage 1 nearly every token is its own cluster (median {fraction_1:.2f} "
        "clusters per token), so the maps above show noise: with clusters this small "
        "they cannot show whether clusters follow regions of the image. Here "
        f"{model_is}; a longer-trained model (the `gpu` recipe) is needed to see "
        "that."
    )
elif fraction_1 > 0.5:
    reading = (
        f"In stage 1 a cluster holds few tokens (median {fraction_1:.2f} clusters per "
        "token): the maps show small groups of tokens, not whole regions, so they "
        f"say little about whether clusters follow the image. Here {model_is}."
    )
else:
    reading = (
        f"In stage 1 clusters hold several tokens each (median {fraction_1:.2f} "
        "clusters per token), so the maps can show where clusters follow the image: "
        "uniform areas in one colour, detailed ones broken into many. Here "
        f"{model_is}."
    )
display(
    Markdown(
        reading + " The counts and sizes above hold at any profile: they are "
        "measured, for this model, on these images."
    )
)

# %% [markdown]
# ## Summary
#
# - Whether clusters are regions of the image depends on the model: with few tokens per
#   cluster the maps show noise; the section above says which case this build is in.
# - The number of clusters differs between heads of one block, because each head hashes its own
#   queries, and between stages, because query scales differ.
# - The fraction of clusters per token is the quantity that decides the seed's saving; it is
#   measured here, not assumed.
#
# ## Exercises
#
# 1. Repeat the counts with `bucket_width` halved and doubled. Which stage is most sensitive?
# 2. Colour tokens by cluster id instead of prototype. What does the picture lose?
# 3. Compute, per block, the MACs of the attention core at the measured cluster counts, and
#    compare with factorized attention (see the cost chapter for the formulas).
