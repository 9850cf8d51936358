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
# # Training on CIFAR-10: does Clustering CoaT train in less time?
#
# The seed's one concrete promise is that Clustering CoaT "can be trained with less training
# time". The fair test gives CoaT-Lite Tiny and Clustering CoaT Tiny the same GPU for the same
# number of seconds and asks which is more accurate when the time is up. **The answer: it does
# not.** In [420](#budget_s:.0f) s of H100 training each, Clustering CoaT made
# [0.62](#update_ratio:.2f)× as many updates as CoaT-Lite and ended
# [2.1](#gap:.1f) points behind it (paired 95% interval [1.5](#gap_low:.1f) to
# [2.7](#gap_high:.1f)) on the same 10,000 test images of CIFAR-10 (JPEG copy).
#
# **Prerequisites.** The models of chapters 1–4; the cost chapter's explanation of why
# clustering the queries adds work. The learning-rate schedules are built by hand in the
# appendix "Learning-rate schedules".
#
# **Learning objectives**
#
# - train any attention kind with `ccoat.train.fit` and read its per-epoch record;
# - compare two models at equal training time, and compare them image by image
#   (`ccoat.stats.paired_difference`);
# - read how many clusters trained queries form, and what that means for the cost.

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

import matplotlib.pyplot as plt
import pandas as pd
import timm
import torch
from IPython.display import display

from ccoat import data as cdata
from ccoat import recipes
from ccoat import train as ctrain
from ccoat.plotting import KIND_COLORS, set_theme
from ccoat.prose import glue
from ccoat.provenance import describe, shorten_paths
from ccoat.runfolder import read_run
from ccoat.stats import paired_difference

set_theme()
torch.manual_seed(0)
PROFILE = ccoat.get_profile()
print(f"profile: {PROFILE}, torch {torch.__version__}, timm {timm.__version__}")

# %% [markdown]
# ## The data
#
# CIFAR-10 has 50,000 training and 10,000 test images of 32×32 pixels in ten classes
# {cite:p}`krizhevsky2009cifar`. On this project's machines it is read from a JPEG copy kept as
# an ImageFolder tree, so results on it are reported as "CIFAR-10 (JPEG copy)"; on Colab
# torchvision downloads the original. At the `smoke` profile (the tests) the chapter reads
# scikit-learn's hand-written digits instead, which every installation has.

# %%
DATA = ccoat.choose(smoke="digits", cpu="cifar10", gpu="cifar10")
DATA_DIR = (
    cdata.data_root()
)  # $CCOAT_DATA, else the copy beside the checkout, else None
DATA_DIR = str(DATA_DIR) if DATA_DIR else None
train_set, val_set, info = cdata.build_datasets(DATA, DATA_DIR, augment=False)
print(
    f"{info.name}: {info.n_train} train / {info.n_val} test images, "
    f"{info.num_classes} classes"
)
print("read from", shorten_paths(str(info.source), cdata.data_root(DATA_DIR)))

mean = torch.tensor(info.mean)[:, None, None]
std = torch.tensor(info.std)[:, None, None]
fig, axes = plt.subplots(2, 8, figsize=(10, 3))
for ax, i in zip(axes.flat, torch.randperm(len(train_set))[:16].tolist()):
    image, label = train_set[i]
    ax.imshow((image * std + mean).clamp(0, 1).permute(1, 2, 0))
    ax.set_title(info.classes[label], fontsize=8)
    ax.axis("off")
fig.suptitle(f"{info.name}: training images")
plt.show()

# %% [markdown]
# ## One training run, live
#
# `ccoat.train.fit(config)` runs a whole recipe: AdamW with weight decay, a warm-up then a
# cosine learning rate, label smoothing, gradient clipping, mixed precision on a GPU, and one
# record per epoch. The recipes live in `ccoat.recipes`, one size per profile. This build
# trains Clustering CoaT Tiny with its profile's size, to show the loop and the record it
# keeps; a run this short says nothing about the model, so the conclusions below come from
# the committed runs, trained to the end of their schedules.

# %%
sizes = pd.DataFrame(
    {p: recipes.recipe(f"cifar10-{p}") for p in ("smoke", "cpu", "gpu")}
)
differs = sizes.astype(str).nunique(axis=1) > 1  # the rows the profile changes
display(sizes[differs].fillna("").rename_axis("recipe cifar10-<profile>"))
config = recipes.cifar10(
    data_dir=DATA_DIR,
    progress=False,
    model="ccoat_lite_tiny_cifar",
    **ccoat.choose(smoke={}, cpu={}, gpu=dict(epochs=2, warmup_epochs=1)),
)
live = pd.DataFrame(ctrain.fit(config).history)
clusters = pd.json_normalize(live.clusters_per_stage.tolist()).add_prefix("K, ")
record = pd.concat([live[["epoch", "train_loss", "val_top1"]], clusters], axis=1)
record.round({"train_loss": 3, "val_top1": 1, **dict.fromkeys(clusters, 1)})

# %% [markdown]
# Each epoch's record also holds how many clusters the queries formed, per stage, averaged
# over the images, the heads and the blocks (`clusters_per_stage`). We come back to it below.
#
# ## Equal GPU time
#
# Both committed runs had one NVIDIA H100 for 420 seconds of training, with the recipe
# `cifar10-gpu-budget` (batch 512): the whole training set held on the GPU and cropped and flipped there
# (reading images never slows a model down), bf16, and a learning rate that warms up for two
# epochs and then follows a cosine in *seconds*, so that each model ends its schedule when its
# budget is spent. The two ran one after the other, alone on the GPU. Every epoch was scored on
# all 10,000 test images. One command per model:
#
# ```bash
# python -m ccoat.train --recipe cifar10-gpu-budget --model coat_lite_tiny_cifar --out runs/a
# python -m ccoat.train --recipe cifar10-gpu-budget --model ccoat_lite_tiny_cifar --out runs/b
# ```

# %%
budget = {
    kind: read_run(f"gpu_budget_cifar10_{name}_lite_tiny_cifar", CCOAT_REPO)
    for kind, name in (("factorized", "coat"), ("clustered", "ccoat"))
}
labels = {"factorized": "CoaT-Lite Tiny", "clustered": "Clustering CoaT Tiny"}
fig, axes = plt.subplots(1, 2, figsize=(8.5, 3.4), sharey=True)
for kind, r in budget.items():
    m, color = r.metrics, KIND_COLORS[kind]
    axes[0].plot(m.train_elapsed_s, m.val_top1, color=color, label=labels[kind])
    axes[1].plot(m.epoch, m.val_top1, color=color, label=labels[kind])
    print(f"{labels[kind]}: {describe(r.run)}")
axes[0].set(
    xlabel="training time on the H100 (s)", ylabel="test top-1 (%)", ylim=(40, 90)
)
axes[1].set(xlabel="epoch")
axes[1].legend(loc="lower right", fontsize=8)
fig.suptitle("CIFAR-10 (JPEG copy), 420 s of training each")
plt.show()

# %%
coat, clus = budget["factorized"], budget["clustered"]
end_coat, end_clus = coat.metrics.iloc[-1], clus.metrics.iloc[-1]
update_ratio = end_clus.updates / end_coat.updates
d = paired_difference(clus.hits(), coat.hits())  # Clustering CoaT minus CoaT-Lite
passed = coat.metrics[coat.metrics.val_top1 >= clus.eval["top1"]].iloc[0]
assert update_ratio < 1 and d.high < 0, (
    "Clustering CoaT no longer trails at equal time"
)
glue("budget_s", end_coat.train_elapsed_s)
glue("update_ratio", update_ratio)
glue("epochs_coat", int(end_coat.epoch))
glue("epochs_clus", int(end_clus.epoch))
glue("top1_coat", coat.eval["top1"])
glue("top1_clus", clus.eval["top1"])
glue("gap", -d.delta)  # points behind CoaT-Lite, and its paired interval
glue("gap_low", -d.high)
glue("gap_high", -d.low)
glue("paired", str(d))
glue("passed_s", passed.train_elapsed_s)
print(d)

# %% [markdown]
# CoaT-Lite Tiny finished [70](#epochs_coat) epochs and scored
# **[87.27](#top1_coat:.2f)%**; Clustering CoaT Tiny finished [43](#epochs_clus) and
# scored **[85.17](#top1_clus:.2f)%**. Image by image, Clustering CoaT minus CoaT-Lite is
# [Δ = −2.1 points [−2.7, −1.5], McNemar p = 4.9e−11](#paired): a gap that the 10,000 test
# images resolve. (`ccoat.stats.paired_difference` resamples the test images, a bootstrap, for
# the 95% interval of the difference; McNemar's exact test asks whether the images that only
# one model gets right are split evenly between the two; see the glossary.) CoaT-Lite had
# passed Clustering CoaT's final accuracy after [196](#passed_s:.0f) s of its 420.
# Clustering CoaT replaces CoaT-Lite's factorized attention with softmax attention of its
# prototypes over all keys, and adds hashing, sorting and gathering to every block. With as
# many prototypes as the queries form below, that is more work than CoaT-Lite's, not less
# (chapter 5 counts it), so each update takes longer, and in the same time it learns less.
#
# Per epoch (right) the two curves are not on one schedule: each run's learning rate follows
# its own clock, so at a given epoch CoaT-Lite's rate is still higher. The fair reading is the
# left panel.

# %% [markdown]
# ## How many clusters do trained queries form?
#
# Clustering pays only if many queries share a prototype: $K \ll HW$. The committed
# Clustering CoaT run recorded, after every epoch, the clusters its queries formed per stage.
# Divided by the stage's number of image tokens ($HW$ = 256, 64, 16 and 4 at 32 px), it reads
# as the fraction of the attention work clustering keeps (stages 2–4 overlap near 1):

# %%
tokens = {"stage1": 16 * 16, "stage2": 8 * 8, "stage3": 4 * 4, "stage4": 2 * 2}
per_token = pd.DataFrame(
    [
        {s: row[s] / n for s, n in tokens.items()}
        for row in clus.metrics.clusters_per_stage
    ],
    index=clus.metrics.epoch,
)
fig, ax = plt.subplots(figsize=(6.5, 3.2))
per_token.plot(ax=ax, style=["o-", "s-", "^-", "x-"], ms=4, lw=1)
ax.set(xlabel="epoch", ylabel="clusters per image token ($K/HW$)", ylim=(0, 1.05))
ax.set_title("Clustering CoaT Tiny, equal-time run: clusters per token, by stage")
plt.show()
first, final = per_token.iloc[0], per_token.iloc[-1]
assert (
    final.stage1 > first.stage1 and (final[["stage2", "stage3", "stage4"]] > 0.9).all()
)
glue("k1_first", first.stage1)
glue("k1_final", final.stage1)
glue("k2_final", final.stage2)

# %% [markdown]
# Training pulls the queries apart. In stage 1 the clusters per token grew from
# [29%](#k1_first:.0%) after the first epoch to [92%](#k1_final:.0%) at the end;
# stages 2–4 ended with about one cluster per token (stage 2: [100%](#k2_final:.0%)).
# With $K \approx HW$ a prototype stands for one query, so the clustered attention does the
# work of softmax attention *plus* the hashing and the clustering, more than CoaT-Lite's
# factorized attention ever does.
#
# ## Summary
#
# - Given the same [420](#budget_s:.0f) s of H100 training, Clustering CoaT Tiny made
#   [0.62](#update_ratio:.2f)× as many updates as CoaT-Lite Tiny and scored
#   [85.17](#top1_clus:.2f)% against [87.27](#top1_coat:.2f)% on the same test images
#   ([Δ = −2.1 points [−2.7, −1.5], McNemar p = 4.9e−11](#paired)). The seed's claim of less training time does not hold here.
# - Trained queries spread apart: by the end, stages 2–4 form about one cluster per token and
#   stage 1 [92%](#k1_final:.0%) of one, so clustering saves almost no attention work.
# - `ccoat.train.fit` trains any attention kind with one recipe; each epoch leaves a record,
#   and `--resume` continues with exactly the weights an uninterrupted run would have. The
#   README shows multi-GPU training with `torchrun`.
#
# ## Exercises
#
# 1. From the equal-time records, how many training images per second did each model
#    process over its whole budget? (Each `metrics.jsonl` line holds `updates`; the batch size
#    is in `run.json`.)
# 2. Interrupt a run after one epoch (`stop_after=1`), resume it (`resume=True`), and check
#    with `torch.equal` that its final weights equal those of an uninterrupted run.
# 3. Clustering CoaT's stage 1 keeps about [92%](#k1_final:.0%) of the tokens as
#    clusters. If stage 1's attention were *softmax* attention of $HW$ = 256 queries, what
#    fraction of its score computations would $K$ prototypes save?

# %% tags=["hide-input"]
# Exercise 1: images per second over the whole budget.
batch = {k: r.run["config"]["batch_size"] for k, r in budget.items()}
rate = {
    k: r.metrics.updates.iloc[-1] * batch[k] / r.metrics.train_elapsed_s.iloc[-1]
    for k, r in budget.items()
}
assert rate["clustered"] < rate["factorized"]
glue("rate_coat", rate["factorized"])
glue("rate_clus", rate["clustered"])
glue("batch", batch["factorized"])
# Exercise 3: K/N of the N x N scores remain; the rest is saved.
glue("saved_scores", 1 - final.stage1)

# %% tags=["hide-input"]
# Exercise 2: a tiny run on the digits, interrupted and resumed, vs a straight one.
import tempfile

tiny = dict(
    model="coat_lite_tiny_cifar",
    data="digits",
    epochs=2,
    batch_size=32,
    steps_per_epoch=3,
    val_subset=32,
    num_workers=0,
    progress=False,
    seed=0,
)
with tempfile.TemporaryDirectory() as tmp:
    straight = ctrain.fit({**tiny, "out": f"{tmp}/a"}).model
    ctrain.fit({**tiny, "out": f"{tmp}/b", "stop_after": 1})
    resumed = ctrain.fit({**tiny, "out": f"{tmp}/b", "resume": True}).model
same = all(
    torch.equal(p, q)
    for p, q in zip(straight.state_dict().values(), resumed.state_dict().values())
)
assert same, "resuming no longer gives the uninterrupted run's weights"

# %% [markdown]
# ```{admonition} Solution to exercise 1
# :class: dropdown
# Updates times the batch size ([512](#batch)) over the training seconds: CoaT-Lite Tiny
# processed [8,243](#rate_coat:,.0f) images/s and Clustering CoaT Tiny
# [5,073](#rate_clus:,.0f) images/s. (The per-epoch `images_per_s` of the first epochs is
# lower for both: it includes the warm-up of the GPU kernels.)
# ```
#
# ````{admonition} Solution to exercise 2
# :class: dropdown
# ```python
# tiny = dict(model="coat_lite_tiny_cifar", data="digits", epochs=2, batch_size=32,
#             steps_per_epoch=3, val_subset=32, num_workers=0, progress=False, seed=0)
# straight = ctrain.fit({**tiny, "out": "runs/a"}).model
# ctrain.fit({**tiny, "out": "runs/b", "stop_after": 1})
# resumed = ctrain.fit({**tiny, "out": "runs/b", "resume": True}).model
# all(torch.equal(p, q) for p, q in zip(straight.state_dict().values(),
#                                       resumed.state_dict().values()))  # True
# ```
# The checkpoint holds the weights, the optimiser, the schedule and every random state, so the
# resumed run draws the same batches and augmentations as the straight one.
# ````
#
# ```{admonition} Solution to exercise 3
# :class: dropdown
# Softmax attention computes an $HW \times HW$ score matrix (leaving out the class token);
# with $K$ prototypes it computes $K \times HW$, so it saves $1 - K/HW$ = [8%](#saved_scores:.0%) of the scores, before the
# hashing is paid for. Against CoaT's factorized attention, which computes no $HW \times HW$
# matrix at all, there is no such saving to be had.
# ```
