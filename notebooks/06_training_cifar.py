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
# # Training Clustering CoaT on CIFAR-10
#
# The chapters so far built CoaT-Lite {cite:p}`xu2021coat` and its clustered attention
# {cite:p}`zheng2021act` and measured what they cost. Here we train them: the small-image
# CoaT-Lite Tiny with its factorized attention, the same network with exact softmax attention
# {cite:p}`vaswani2017attention`, and Clustering CoaT, all with one recipe and one seed, and we
# compare how fast they learn and how accurate they get.
#
# **Learning objectives**
#
# - write the learning-rate schedule of a vision-transformer recipe (linear warm-up, cosine
#   decay) by hand, and check it against timm's scheduler, which `ccoat.train` uses;
# - train three attention kinds with `ccoat.train.train(config)` under the active profile
#   (seconds in CI, minutes on a CPU, the full recipe on a GPU) and read their learning curves
#   against epochs and against wall-clock time;
# - read the committed real runs from `results/`, together with the record of how each was made.

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

import math
import textwrap

import matplotlib.pyplot as plt
import pandas as pd
import timm
import torch
from IPython.display import Markdown, display
from timm.scheduler import CosineLRScheduler

from ccoat import data as cdata
from ccoat import recipes
from ccoat import train as ctrain
from ccoat.plotting import KIND_COLORS, set_theme
from ccoat.provenance import shorten_paths
from ccoat.runfolder import read_run
from ccoat.stats import accuracy_interval

set_theme()
torch.manual_seed(0)
PROFILE = ccoat.get_profile()
print(f"profile: {PROFILE}, torch {torch.__version__}, timm {timm.__version__}")

# %% [markdown]
# ## The learning-rate schedule
#
# Transformers trained from scratch are fragile in their first updates: the attention
# logits and the LayerNorm statistics are still random, and a full-size step can push them
# somewhere they never recover from. The usual recipe {cite:p}`touvron2021deit` therefore
# *warms up*: the learning rate grows linearly from almost zero over the first updates, then
# decays along half a cosine to a small floor. With peak rate $\eta$, floor $\eta_{min}$,
# $W$ warm-up updates and $T$ updates after them, update $t$ uses
#
# $$\eta_t = \begin{cases} \eta_0 + (\eta - \eta_0)\, t / W & t < W \\
#   \eta_{min} + \tfrac12 (\eta - \eta_{min}) \left(1 + \cos\left(\pi \tfrac{t - W}{T}\right)\right) & t \ge W.
# \end{cases}$$


# %%
def warmup_cosine(
    t: int, peak: float, floor: float, warmup: int, total: int, start: float
) -> float:
    """The learning rate at update ``t``: warm-up, then cosine down to ``floor``."""
    if t < warmup:
        return start + (peak - start) * t / warmup
    return floor + 0.5 * (peak - floor) * (
        1 + math.cos(math.pi * (t - warmup) / total)
    )


peak, floor, warmup, total = 1e-3, 1e-5, 50, 450
ours = [
    warmup_cosine(t, peak, floor, warmup, total, peak * 1e-3)
    for t in range(warmup + total)
]

# The same schedule from timm, configured as ccoat.train does (stepped per update).
optimizer = torch.optim.AdamW([torch.zeros(1, requires_grad=True)], lr=peak)
scheduler = CosineLRScheduler(
    optimizer,
    t_initial=total,
    lr_min=floor,
    warmup_t=warmup,
    warmup_lr_init=peak * 1e-3,
    warmup_prefix=True,
    t_in_epochs=False,
)
theirs = []
for t in range(warmup + total):
    scheduler.step_update(num_updates=t)
    theirs.append(optimizer.param_groups[0]["lr"])
torch.testing.assert_close(torch.tensor(ours), torch.tensor(theirs))

fig, ax = plt.subplots(figsize=(6, 3))
ax.plot(ours, label="by hand")
ax.plot(theirs, "--", label="timm CosineLRScheduler")
ax.set(xlabel="update", ylabel="learning rate", title="Warm-up, then cosine decay")
ax.legend()
plt.show()

# %% [markdown]
# ## The data
#
# In CI the smoke profile trains on `digits`, scikit-learn's hand-written digits upsampled to
# 32x32, which every installation has. The cpu and gpu profiles train on CIFAR-10: 50,000
# training and 10,000 test images of 32x32 pixels in ten classes. On this project's machines
# CIFAR-10 is read from a JPEG copy kept as an ImageFolder tree (results on it are reported as
# "CIFAR-10 (JPEG copy)"); on Colab torchvision downloads the original.

# %%
DATA = ccoat.choose(smoke="digits", cpu="cifar10", gpu="cifar10")
# $CCOAT_DATA, else the offline copy beside the checkout, else None (download)
DATA_DIR = cdata.data_root()
DATA_DIR = str(DATA_DIR) if DATA_DIR else None
train_set, val_set, info = cdata.build_datasets(DATA, DATA_DIR, augment=False)
# relative to the data root
source = shorten_paths(str(info.source), cdata.data_root(DATA_DIR))
print(
    f"{info.name}: {info.n_train} train / {info.n_val} val images, {info.num_classes} "
    f"classes, {info.img_size}x{info.img_size} px"
)
print(f"read from {source}")

mean, std = (
    torch.tensor(info.mean)[:, None, None],
    torch.tensor(info.std)[:, None, None],
)
fig, axes = plt.subplots(2, 8, figsize=(10, 3))
for ax, i in zip(axes.flat, torch.randperm(len(train_set))[:16].tolist()):
    image, label = train_set[i]
    ax.imshow((image * std + mean).clamp(0, 1).permute(1, 2, 0))
    ax.set_title(info.classes[label], fontsize=8)
    ax.axis("off")
fig.suptitle(f"{info.name}: training images")
plt.show()

# %% [markdown]
# ## One recipe, three attention kinds
#
# `ccoat.train.train(config)` runs the whole recipe: AdamW with weight decay, the schedule
# above, label smoothing, gradient clipping, mixed precision on a GPU, a checkpoint per epoch,
# and one line of metrics per epoch. We train the same network three times, changing only
# the attention core: CoaT's factorized attention, exact softmax attention, and the clustered
# attention of Clustering CoaT. Every run starts from the same seed.
#
# The size of the work follows the profile: the recipe is kept in `ccoat.recipes`, one size
# per profile (`cifar10-smoke`, `cifar10-cpu`, `cifar10-gpu`). The gpu size is the full
# recipe; the cpu size trains briefly on a subset; smoke runs a few updates on the digits to
# show that every cell works. The table shows what each size sets (the rest are
# `TrainConfig`'s defaults); this build trains with its profile's column, except that at the
# `gpu` profile it stops after four epochs (one of warm-up), so the chapter stays a few
# minutes long on a Colab GPU: the full recipe is one command per model,
# `python -m ccoat.train --recipe cifar10-gpu --model coat_lite_tiny_cifar --out runs/c10`,
# and the committed runs below trained longer.

# %%
sizes = {
    profile: recipes.recipe(f"cifar10-{profile}")
    for profile in ("smoke", "cpu", "gpu")
}
display(
    pd.DataFrame(sizes).fillna("").rename(columns={PROFILE: f"{PROFILE} (this build)"})
)

# the chapter's live run: the profile's recipe, shortened at the gpu profile
LIVE = ccoat.choose(smoke={}, cpu={}, gpu=dict(epochs=4, warmup_epochs=1))
MODELS = {
    "factorized": dict(model="coat_lite_tiny_cifar"),
    "softmax": dict(model="coat_lite_tiny_cifar", attention="softmax"),
    "clustered": dict(model="ccoat_lite_tiny_cifar"),
}

# %%
histories = {}
for kind, model_args in MODELS.items():
    # progress=False: no progress bars in the book (each run's result is printed below)
    config = recipes.cifar10(data_dir=DATA_DIR, progress=False, **model_args, **LIVE)
    histories[kind] = pd.DataFrame(ctrain.train(config))
    last = histories[kind].iloc[-1]
    print(
        f"{kind:>10}: val top-1 {last.val_top1:.1f}% after {int(last.epoch)} epochs, "
        f"{last.elapsed_s:.0f} s, {last.images_per_s:.0f} training images/s"
    )

# %% [markdown]
# ## Learning curves
#
# Accuracy against epochs compares what each kind learns from the same data; accuracy against
# wall-clock time compares what each buys for the same compute, which is the question clustered
# attention is meant to answer.


# %%
def plot_curves(histories: dict, title: str) -> None:
    fig, axes = plt.subplots(1, 3, figsize=(11, 3.8))
    for kind, h in histories.items():
        color = KIND_COLORS.get(kind)
        axes[0].plot(h.epoch, h.train_loss, "o-", color=color, label=kind)
        axes[1].plot(h.epoch, h.val_top1, "o-", color=color, label=kind)
        axes[2].plot(h.elapsed_s / 60, h.val_top1, "o-", color=color, label=kind)
    axes[0].set(xlabel="epoch", ylabel="training loss")
    axes[1].set(xlabel="epoch", ylabel="val top-1 (%)")
    axes[2].set(xlabel="wall-clock time (min)", ylabel="val top-1 (%)")
    axes[0].legend()
    fig.suptitle(title)
    fig.tight_layout()
    plt.show()


plot_curves(histories, f"This notebook's runs ({PROFILE} profile, {info.name})")

# %%
summary = pd.DataFrame(
    {
        kind: h.iloc[-1][["val_top1", "val_top5", "images_per_s", "elapsed_s"]]
        for kind, h in histories.items()
    }
).T
display(summary.round(2))
fastest = summary.images_per_s.idxmax()
display(
    Markdown(
        f"In this run the fastest to train was **{fastest}** attention at "
        f"{summary.images_per_s.max():.0f} images/s; the best val top-1 was "
        f"{summary.val_top1.max():.1f}% (**{summary.val_top1.idxmax()}**). With the "
        f"{PROFILE} profile's few updates these numbers say little about the models; "
        "the committed runs below trained longer."
    )
)

# %% [markdown]
# ## The committed real runs
#
# Longer runs are too slow for a notebook on a CPU, so they were run once from the command line
# and their metrics committed under `results/`, each beside a `run.json` that records the
# command, the git commit, the machine, the profile, the dataset and the date. During training
# each epoch was evaluated on a fixed subset of the test split; the final checkpoint was then
# evaluated on the whole test split (`eval.json`, made by `python -m ccoat.train --eval-only`).
# We plot what those files hold; nothing here is typed by hand.

# %%
# The committed runs; without a checkout (Colab) they are fetched from the repository.
RUN_NAMES = ["cifar10_coat_lite_tiny_cifar", "cifar10_ccoat_lite_tiny_cifar"]
runs, records, commands = {}, [], []
for name in RUN_NAMES:
    committed = read_run(name, CCOAT_REPO)  # run.json, metrics.jsonl, eval.json
    if committed is None:
        continue
    run = committed.run
    root = run["config"]["data_dir"]  # the data root of the machine that ran it
    kind = (run.get("attention_kinds") or ["?"])[0]
    runs[kind] = committed.metrics
    records.append(
        {
            "run": name,
            "kind": kind,
            "epochs": len(runs[kind]),
            "last epoch's val top-1 (%)": round(runs[kind].val_top1.iloc[-1], 2),
            "val images per epoch": run["data"]["n_val"]
            if not run["config"]["val_subset"]
            else run["config"]["val_subset"],
            "dataset": shorten_paths(run["dataset"], root),
            "device": run["device"],
            "threads": run["threads"],
            "commit": run["git_commit"][:10],
            "date": run["date"][:10],
        }
    )
    commands.append(f"{name}, trained by: {shorten_paths(run['command'], root)}")
    # the final checkpoint, all test images
    final = committed.eval
    if final is not None:
        lo, hi = final.get("top1_ci95") or accuracy_interval(
            final["top1"], final["images"]
        )
        records[-1].update(
            {
                "test top-1 (%), all images": round(final["top1"], 2),
                "95% interval": f"{lo:.1f}–{hi:.1f}",
                "test images": final["images"],
            }
        )
        commands.append(
            f"{name}, evaluated by: "
            f"{shorten_paths(final['provenance']['command'], root)}"
        )
if records:
    # one column per run: fits the page
    display(pd.DataFrame(records).set_index("run").T)
    print(
        "\n".join(
            textwrap.fill(c, 88, subsequent_indent="    ", break_on_hyphens=False)
            for c in commands
        )
    )
    plot_curves(runs, "Committed runs (see the table for how each was made)")
else:
    print("no committed runs found in results/ or in the repository")

# %% [markdown]
# For the clustered model each epoch's line also records how many clusters the queries formed,
# averaged over the validation images, the heads and the blocks of each stage. Set against the
# number of image tokens of the stage, it shows where clustering actually shrinks the attention.

# %%
clustered_runs = {k: h for k, h in runs.items() if "clusters_per_stage" in h}
if clustered_runs:
    fig, ax = plt.subplots(figsize=(6, 3.5))
    tokens = [16 * 16, 8 * 8, 4 * 4, 2 * 2]  # image tokens per stage of a 32 px image
    stages = [f"stage{i}" for i in range(1, 5)]
    ax.plot(range(1, 5), tokens, "k--", label="image tokens (no clustering)")
    for kind, h in clustered_runs.items():
        for _, row in h.iterrows():
            ax.plot(
                range(1, 5),
                [row.clusters_per_stage[s] for s in stages],
                "o-",
                color=KIND_COLORS.get(kind),
                alpha=0.4 + 0.6 * row.epoch / h.epoch.max(),
                label=f"{kind}, epoch {int(row.epoch)}",
            )
    ax.set(
        xlabel="stage",
        ylabel="clusters (mean over images and heads)",
        yscale="log",
        xticks=range(1, 5),
        title="Clusters per stage, committed clustered run",
    )
    ax.legend(fontsize=8)
    plt.show()
    last = next(iter(clustered_runs.values())).iloc[-1].clusters_per_stage
    display(
        Markdown(
            "After the last epoch the queries formed "
            + ", ".join(
                f"{last[s]:.1f} clusters for {n} tokens in stage {s[5:]}"
                for s, n in zip(stages, tokens)
            )
            + "."
        )
    )
else:
    print("no committed clustered run with cluster counts here")

# %% [markdown]
# ## Equal GPU time: does Clustering CoaT train in less time?
#
# The seed paper's one claim is that Clustering CoaT "can be trained with less training time".
# The fair test gives both models the same GPU for the same number of seconds and asks which
# is more accurate when the time is up. Both runs below had one NVIDIA H100 for the same
# number of training seconds, with the recipe `cifar10-gpu-budget` of `ccoat.recipes`: the
# whole training set held on the GPU and cropped and flipped there (reading images never
# slows a model down), bf16, and a learning rate that warms up for two epochs and then follows
# a cosine in *seconds*, so that each model ends its schedule when its budget is spent. Every
# epoch was scored on all 10,000 test images; the error bars are bootstrap 95% intervals of
# the final scores (`ccoat.stats.bootstrap_interval`). One command per model:
#
# ```
# python -m ccoat.train --recipe cifar10-gpu-budget --model coat_lite_tiny_cifar \
#     --out runs/a
# python -m ccoat.train --recipe cifar10-gpu-budget --model ccoat_lite_tiny_cifar \
#     --out runs/b
# ```

# %%
from ccoat.plotting import glue
from ccoat.stats import distinguishable

# The committed runs; without a checkout (Colab) they are fetched from the repository.
budget_runs = {}
for name in [
    "gpu_budget_cifar10_coat_lite_tiny_cifar",
    "gpu_budget_cifar10_ccoat_lite_tiny_cifar",
]:
    committed = read_run(name, CCOAT_REPO)
    if committed is not None and committed.eval is not None:
        budget_runs[committed.run["attention_kinds"][0]] = committed

fig, axes = plt.subplots(1, 2, figsize=(8.5, 3.4), sharey=True)
for kind, r in budget_runs.items():
    m, final, color = r.metrics, r.eval, KIND_COLORS.get(kind)
    label = f"{r.run['config']['model']} ({kind})"
    axes[0].plot(m.train_elapsed_s, m.val_top1, color=color, label=label)
    axes[1].plot(m.epoch, m.val_top1, color=color, label=label)
    lo, hi = final["top1_ci95"]
    error = [[final["top1"] - lo], [hi - final["top1"]]]
    axes[0].errorbar(
        m.train_elapsed_s.iloc[-1],
        final["top1"],
        yerr=error,
        fmt="o",
        color=color,
        capsize=3,
    )
axes[0].set(xlabel="GPU training time (s)", ylabel="test top-1 (%)", ylim=(60, 90))
axes[1].set(xlabel="epoch")
axes[1].legend(loc="lower right", fontsize=8)
if budget_runs:
    device = next(iter(budget_runs.values())).run["device"]
    fig.suptitle(f"CIFAR-10 (JPEG copy), equal training time on one {device}")
plt.show()

# %%
if {"factorized", "clustered"} <= set(budget_runs):
    base, seed = budget_runs["factorized"], budget_runs["clustered"]
    a, b = base.eval, seed.eval
    separated = distinguishable(a["top1"], a["top1_ci95"], b["top1"], b["top1_ci95"])
    better = "CoaT-Lite" if a["top1"] > b["top1"] else "Clustering CoaT"
    reached = base.metrics[base.metrics.val_top1 >= b["top1"]]
    speed = seed.metrics.images_per_s.median() / base.metrics.images_per_s.median()
    glue("budget_s", base.run["config"]["time_budget_s"])
    glue("base_top1", a["top1"])
    glue("base_ci", f"{a['top1_ci95'][0]:.1f}–{a['top1_ci95'][1]:.1f}")
    glue("seed_top1", b["top1"])
    glue("seed_ci", f"{b['top1_ci95'][0]:.1f}–{b['top1_ci95'][1]:.1f}")
    glue("base_epochs", len(base.metrics))
    glue("seed_epochs", len(seed.metrics))
    glue("speed_ratio", speed)
    glue("reach_s", reached.train_elapsed_s.iloc[0] if len(reached) else float("nan"))
    same_epoch = base.metrics.iloc[len(seed.metrics) - 1]  # CoaT-Lite at that epoch
    glue("base_same_epoch", same_epoch.val_top1)
    glue("base_same_epoch_lr", same_epoch.lr)
    glue(
        "verdict",
        (
            f"{better} is more accurate at equal training time, by more than the "
            "test set's uncertainty"
            if separated
            else "the two are not distinguishable at equal training time"
        ),
    )
    glue(
        "claim",
        "does not hold"
        if separated and better == "CoaT-Lite"
        else "holds"
        if separated
        else "is not shown",
    )
else:
    for name in (
        "budget_s",
        "base_top1",
        "base_ci",
        "seed_top1",
        "seed_ci",
        "base_epochs",
        "seed_epochs",
        "speed_ratio",
        "reach_s",
        "verdict",
        "claim",
        "base_same_epoch",
        "base_same_epoch_lr",
    ):
        glue(name, "n/a")  # the committed runs are not reachable from here
    print("the committed equal-time runs (results/gpu_budget_cifar10_*) are not here")

# %% [markdown]
# With {glue:text}`budget_s:.0f` seconds each, CoaT-Lite finished
# {glue:text}`base_epochs` epochs and reached **{glue:text}`base_top1:.2f`%** top-1
# (interval {glue:text}`base_ci`); Clustering CoaT trained at {glue:text}`speed_ratio:.2f`×
# CoaT-Lite's images per second, finished {glue:text}`seed_epochs` epochs and reached
# **{glue:text}`seed_top1:.2f`%** ({glue:text}`seed_ci`). CoaT-Lite had passed Clustering
# CoaT's final accuracy after {glue:text}`reach_s:.0f` seconds. In short, {glue:text}`verdict`:
# on this GPU and data the seed's claim of less training time **{glue:text}`claim`**.
#
# Per epoch (right) the comparison is not an equal-schedule one: each run's learning rate
# follows its own clock. At epoch {glue:text}`seed_epochs`, where Clustering CoaT's budget
# ran out, CoaT-Lite had {glue:text}`base_same_epoch:.2f`% with its learning rate still at
# {glue:text}`base_same_epoch_lr:.1e`. Clustering the queries adds hashing, sorting and
# gathering to every block and removes almost none of the work (the cost chapter shows why),
# so each of its epochs costs more time.

# %% [markdown]
# ## Training on more than one machine
#
# The same function trains with PyTorch's DistributedDataParallel when started by `torchrun`:
# each process reads its share of every global batch (a `DistributedSampler`), gradients are
# averaged across processes, and only rank 0 writes metrics and checkpoints. On one machine
# with 4 GPUs:
#
# ```
# torchrun --nproc-per-node 4 -m ccoat.train --model ccoat_lite_tiny_cifar --data cifar10 \
#     --epochs 100 --batch-size 256 --out runs/ccoat_tiny
# ```
#
# The test suite checks the essential fact: two processes give the parameters that one
# process gives on the same global batch.
#
# ## Summary
#
# - A transformer recipe warms the learning rate up, then decays it along a cosine; our
#   hand-written schedule equals timm's, which `ccoat.train` uses.
# - `ccoat.train.train(config)` trains any attention kind with the same recipe and seed; each
#   epoch leaves a line of metrics and an atomically written checkpoint, from which `--resume`
#   continues with exactly the weights an uninterrupted run would have.
# - Comparing attention kinds needs both views: accuracy per epoch (what is learned from the
#   data) and accuracy per second (what the compute buys).
# - Given the same GPU for the same {glue:text}`budget_s:.0f` seconds, CoaT-Lite reached
#   {glue:text}`base_top1:.2f`% and Clustering CoaT {glue:text}`seed_top1:.2f`%: the seed's
#   claim of less training time {glue:text}`claim`.
#
# ## Exercises
#
# 1. Set the warm-up to zero (`recipes.cifar10("cpu", warmup_epochs=0, ...)`). How do the
#    first epochs change?
# 2. Train the clustered model with a cap of 8 clusters per stage
#    (`ccoat.create_model("ccoat_lite_tiny_cifar", max_clusters=8)` passed as `model=` to
#    `ccoat.train.fit`). What happens to accuracy and to images/s?
# 3. Interrupt a run with `stop_after=1`, resume it with `resume=True`, and check with
#    `torch.equal` that the final weights match an uninterrupted run.
