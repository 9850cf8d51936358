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
# # An ImageNet subset: Imagenette
#
# Imagenette is ten easy classes of ImageNet (tench, English springer, cassette player, chain
# saw, church, French horn, garbage truck, gas pump, golf ball, parachute), about 9,500 training
# and 3,900 validation images. At 128 px a CoaT-Lite's first stage sees a 32×32 grid, 1,024
# tokens: enough for clustering to have something to cluster.
#
# **Learning objectives**
#
# - read the committed reference models (CoaT-Lite Tiny and Clustering CoaT Tiny, one recipe)
#   and compare them with their uncertainty;
# - convert a trained CoaT-Lite to each attention kind **without retraining**, as ACT did with
#   DETR, and see what it costs in accuracy;
# - see how the bucket width trades accuracy for the number of clusters on real images;
# - know the commands that train the reference models and that score timm's ImageNet weights.

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
import logging
import textwrap

import matplotlib.pyplot as plt
from matplotlib.ticker import MaxNLocator
import pandas as pd
import torch
from IPython.display import display

from ccoat import data as cdata
from ccoat import recipes
from ccoat import train as ctrain
from ccoat.model import CLUSTERED_KINDS
from ccoat.plotting import KIND_COLORS, glue, set_theme
from ccoat.provenance import describe, results_file, shorten_paths
from ccoat.runfolder import first_run
from ccoat.stats import distinguishable
from ccoat.timm_weights import imagenet_indices, restrict_classes

set_theme()
# Smoke runs train one epoch; timm's scheduler then warns that its cosine does nothing.
logging.getLogger("timm.scheduler").setLevel(logging.ERROR)
PROFILE = ccoat.get_profile()
DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
print("profile:", PROFILE, "| device:", DEVICE)

# %% [markdown]
# ## The reference models
#
# Training a vision transformer well takes more than a book build can spend, so the reference
# models are trained once from the command line, with one recipe for both
# (`imagenette128-cpu` or `imagenette128-gpu` in `ccoat.recipes`), and their files committed
# under `results/`: `run.json` (how the run was made), `metrics.jsonl` (one line per epoch),
# `eval.json` (the final weights scored on all validation images, with a bootstrap 95%
# interval) and `model.safetensors` (the weights in half precision, which
# `CommittedRun.load_model` loads into any attention kind). The chapter takes the `gpu`
# recipe's pair where one is committed, else the `cpu` recipe's.


# %%
def reference_run(model_name):
    """model_name's committed run: the gpu recipe's, else the cpu one's, else None."""
    sizes = ("gpu", "cpu")
    return first_run([f"imagenette128_{s}_{model_name}" for s in sizes], CCOAT_REPO)


references = {
    "CoaT-Lite Tiny": reference_run("coat_lite_tiny"),
    "Clustering CoaT Tiny": reference_run("ccoat_lite_tiny"),
}
references = {name: r for name, r in references.items() if r is not None}
DATA_ROOT = cdata.data_root()
rows = {}
for name, r in references.items():
    config, final = r.run["config"], r.eval
    rows[name] = {
        "recipe": r.run["command"].split("--recipe ")[-1].split()[0],
        "epochs": len(r.metrics),
        "val top-1 (%), all images": f"{final['top1']:.1f}",
        "95% interval": "{:.1f}–{:.1f}".format(*final["top1_ci95"]),
        "val top-5 (%)": f"{final['top5']:.1f}",
        "val images": final["images"],
        "training images/s": f"{r.metrics.images_per_s.median():.1f}",
        "device, threads": f"{r.run['device']}, {r.run['threads']}",
        "commit, date": f"{r.run['git_commit'][:8]}, {r.run['date'][:10]}",
    }
display(pd.DataFrame(rows))
for name, r in references.items():
    command = shorten_paths(r.run["command"], r.run["config"]["data_dir"])
    print(textwrap.fill(f"{name}: {command}", 88, subsequent_indent="    "))

# %%
fig, axes = plt.subplots(1, 2, figsize=(9, 3.4))
for name, r in references.items():
    kind = r.run["attention_kinds"][0]
    m, final, color = r.metrics, r.eval, KIND_COLORS.get(kind)
    axes[0].plot(m.epoch, m.train_loss, "o-", color=color, label=name)
    axes[1].plot(m.epoch, m.val_top1, "o-", color=color, label=f"{name}, val subset")
    lo, hi = final["top1_ci95"]
    axes[1].errorbar(
        m.epoch.iloc[-1] + 0.08,
        final["top1"],
        yerr=[[final["top1"] - lo], [hi - final["top1"]]],
        fmt="s",
        color=color,
        capsize=3,
        label=f"{name}, all val images",
    )
axes[0].set(xlabel="epoch", ylabel="training loss")
axes[1].set(xlabel="epoch", ylabel="val top-1 (%)")
axes[1].legend(fontsize=7)
for ax in axes:
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # whole epochs
fig.suptitle("Imagenette at 128 px: the committed reference runs")
fig.tight_layout()
plt.show()

# %%
pair = references.get("CoaT-Lite Tiny"), references.get("Clustering CoaT Tiny")
facts = dict.fromkeys(
    [
        "ref_epochs",
        "ref_device",
        "ref_top1",
        "ref_ci",
        "seed_top1",
        "seed_ci",
        "ref_gap",
    ],
    "n/a",
)
facts["ref_verdict"] = "the comparison waits for both runs to be committed"
facts["ref_speed"] = "n/a"
if all(pair):
    a, b = (r.eval for r in pair)
    separated = distinguishable(a["top1"], a["top1_ci95"], b["top1"], b["top1_ci95"])
    gap = a["top1"] - b["top1"]
    epochs = len(pair[0].metrics)
    speed = (
        pair[1].metrics.images_per_s.median() / pair[0].metrics.images_per_s.median()
    )
    facts.update(
        ref_epochs=f"{epochs} epoch{'s' if epochs > 1 else ''}",
        ref_device=pair[0].run["device"],
        ref_top1=f"{a['top1']:.1f}",
        ref_ci="{:.1f}–{:.1f}".format(*a["top1_ci95"]),
        seed_top1=f"{b['top1']:.1f}",
        seed_ci="{:.1f}–{:.1f}".format(*b["top1_ci95"]),
        ref_gap=f"{abs(gap):.1f}",
        ref_speed=f"{speed:.2f}",
        ref_verdict=(
            f"{'CoaT-Lite' if gap > 0 else 'Clustering CoaT'} is ahead by more than "
            "the validation set's uncertainty"
            if separated
            else "the difference is inside the intervals: the two are not "
            "distinguishable on these images"
        ),
    )
longest = first_run(["imagenette128_gpu_coat_lite_tiny_e70"], CCOAT_REPO)
facts["long_run"] = "No longer run of CoaT-Lite is committed."
if longest is not None:
    e, planned = longest.eval, longest.run["config"]["epochs"]
    facts["long_run"] = (
        f"The longest-trained CoaT-Lite Tiny committed ran {len(longest.metrics)} of "
        f"{planned} planned epochs of the same recipe on {longest.run['device']} "
        "before its "
        f"time ran out: {e['top1']:.1f}% top-1 on all val images "
        "({:.1f}–{:.1f}).".format(*e["top1_ci95"])
    )
for name, value in facts.items():
    glue(name, value)

# %% [markdown]
# After {glue:text}`ref_epochs` of the same recipe on {glue:text}`ref_device`,
# CoaT-Lite Tiny reaches **{glue:text}`ref_top1`%** top-1 on all validation images
# (interval {glue:text}`ref_ci`) and Clustering CoaT Tiny, trained from scratch with clustered
# attention, **{glue:text}`seed_top1`%** ({glue:text}`seed_ci`): a gap of
# {glue:text}`ref_gap` points, and {glue:text}`ref_verdict`. The runs recorded Clustering
# CoaT's training at {glue:text}`ref_speed`× CoaT-Lite's images per second, on a machine
# shared with other runs (`results/README.md` says how each pair ran); the speed references
# are the cost chapters' alternating timings. The table says how long each model trained: a
# few epochs is far from convergence (fastai's ResNets reach 87% on Imagenette at 128 px in 5
# epochs; the `gpu` recipe aims at 85% for CoaT-Lite Tiny), so read the gap as one between
# briefly trained models. {glue:text}`long_run`
#
# ## A short live run
#
# The same machinery trains live, sized by the profile (`ccoat.recipes.imagenette`: a few
# updates on a subset at the `smoke` and `cpu` profiles, ten epochs at `gpu`). It shows the
# recipe running; the models converted below are the committed ones.

# %%
demo = recipes.imagenette(
    data_dir=str(DATA_ROOT) if DATA_ROOT else None, progress=False
)
history = ctrain.train(demo)
last = history[-1]
used = f"{demo.train_subset or 'all'} training images at {demo.img_size} px"
print(
    textwrap.fill(
        f"{demo.model}, {demo.epochs} epoch(s) on {used}: val top-1 "
        f"{last['val_top1']:.1f}% on {demo.val_subset or 'all'} val images, "
        f"{last['images_per_s']:.0f} training images/s",
        88,
    )
)

# %% [markdown]
# ## Converting without retraining
#
# We take the reference CoaT-Lite Tiny, trained with CoaT's factorized attention, and give
# every block another attention kind, keeping every weight: exact softmax attention, the
# seed's clustered attention, and clustered-factorized attention (CoaT's operator on cluster
# prototypes). `benchmarks/convert_reference.py` scored each on a fixed random subset of the
# validation images, with its bootstrap interval, and committed the result; this build first
# repeats the conversion live on a few images, to show the code path, then plots the committed
# study.

# %%
coat_run = references["CoaT-Lite Tiny"]
model = coat_run.load_model().to(DEVICE)  # factorized: the kind it was trained with
IMG_SIZE = coat_run.run["data"]["img_size"]
_, val_set, info = cdata.build_datasets("imagenette", DATA_ROOT, img_size=IMG_SIZE)
print(
    f"Imagenette: {info.n_val} val images at {IMG_SIZE} px, from "
    f"{shorten_paths(str(info.source), DATA_ROOT)}"
)
live_images = ccoat.choose(smoke=16, cpu=64, gpu=None)  # None: all of them
val_loader = cdata.make_loader(
    cdata.subset(val_set, live_images, seed=0),
    batch_size=32,
    train=False,
    num_workers=1,
)


def convert_and_score(kind, **options):
    """Top-1 (with interval) and clusters of model converted to kind, on val_loader."""
    if kind in CLUSTERED_KINDS:
        options.setdefault("seed", 0)  # the hash projections, drawn reproducibly
    converted = ccoat.convert_attention(copy.deepcopy(model), kind, **options)
    return ctrain.evaluate(converted, val_loader, DEVICE, interval=True)


live = {kind: convert_and_score(kind) for kind in ccoat.ATTENTION_KINDS}
display(
    pd.DataFrame(
        {
            kind: {
                "top-1 (%)": f"{r['top1']:.1f}",
                "95% interval": "{:.1f}–{:.1f}".format(*r["top1_ci95"]),
                "stage-1 clusters per row": (
                    f"{r['clusters_per_stage']['stage1']:.0f}"
                    if "clusters_per_stage" in r
                    else "—"
                ),
            }
            for kind, r in live.items()
        }
    ).rename_axis(f"live, {len(val_loader.dataset)} val images")
)

# %%
study_file = results_file(f"{coat_run.name}/conversion.json", CCOAT_REPO)
record = json.loads(study_file.read_text()) if study_file else {"rows": []}
# an interrupted study holds the configurations it finished: draw what is there
study = pd.DataFrame(
    record["rows"],
    columns=["kind", "bucket_width", "top1", "top1_ci95", "clusters_per_stage"],
)
kinds = study[study.bucket_width.isna()].set_index("kind")
sweep = study[study.bucket_width.notna()].sort_values("bucket_width")
stage1 = [c["stage1"] for c in sweep.clusters_per_stage]


def with_errors(ax, x, rows, **style):
    if rows.empty:
        return
    lo, hi = (pd.Series(v, rows.index) for v in zip(*rows.top1_ci95))
    ax.errorbar(
        x, rows.top1, yerr=[rows.top1 - lo, hi - rows.top1], capsize=3, **style
    )


if "factorized" in kinds.index:
    base = kinds.loc["factorized"]
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
    axes[0].bar(kinds.index, kinds.top1, color=[KIND_COLORS[k] for k in kinds.index])
    with_errors(axes[0], kinds.index, kinds, fmt="none", color="black")
    axes[0].set(ylabel="top-1 accuracy (%)", title="Same weights, converted")
    axes[0].tick_params(axis="x", rotation=20)
    color = KIND_COLORS["clustered_factorized"]
    with_errors(
        axes[1], stage1, sweep, fmt="o-", color=color, label="clustered_factorized"
    )
    for i, (x, y, r) in enumerate(zip(stage1, sweep.top1, sweep.bucket_width)):
        offset = 7 if i % 2 else -13  # labels above and below in turn
        axes[1].annotate(
            f"r={r:g}",
            (x, y),
            fontsize=8,
            xytext=(0, offset),
            textcoords="offset points",
        )
    color = KIND_COLORS["factorized"]
    axes[1].axhline(base.top1, color=color, ls="--", label="factorized (trained)")
    axes[1].axhspan(*base.top1_ci95, color=color, alpha=0.12)
    axes[1].set(
        xscale="log",
        xlabel=f"clusters per head in stage 1 (of {(IMG_SIZE // 4) ** 2} tokens)",
        ylabel="top-1 accuracy (%)",
        title="Bucket width r against clusters",
    )
    axes[1].legend(fontsize="small")
    fig.suptitle(
        f"Imagenette val ({record['val_images']} images), the reference CoaT-Lite "
        "Tiny converted; bars: 95% intervals",
        fontsize=10,
    )
    fig.tight_layout()
    plt.show()
    print(textwrap.fill("made by: " + describe(record["provenance"]), 88))
else:
    print(f"results/{coat_run.name}/conversion.json holds no study yet")

# %%
facts = {"conv_images": str(record.get("val_images", "n/a"))}
for kind in ("factorized", "softmax", "clustered", "clustered_factorized"):
    facts[f"conv_{kind}"] = facts[f"conv_{kind}_vs"] = "n/a"
    if kind in kinds.index and "factorized" in kinds.index:
        row, base = kinds.loc[kind], kinds.loc["factorized"]
        same = not distinguishable(base.top1, base.top1_ci95, row.top1, row.top1_ci95)
        facts[f"conv_{kind}"] = f"{row.top1:.1f}"
        facts[f"conv_{kind}_vs"] = (
            "within the intervals" if same else f"{row.top1 - base.top1:+.1f} points"
        )
facts["sweep_lo"] = facts["sweep_hi"] = "n/a"
facts["sweep_trend"] = "the sweep is not in the committed study"
if len(sweep) >= 2:
    spread = sweep.top1.max() - sweep.top1.min()
    widest = max(hi - lo for lo, hi in sweep.top1_ci95)
    facts.update(
        sweep_lo=f"{sweep.top1.min():.1f}",
        sweep_hi=f"{sweep.top1.max():.1f}",
        sweep_trend=(
            "no clear trend: the accuracies differ by less than one interval's width"
            if spread <= widest
            else "accuracy moves with the clusters by more than one interval's width"
        ),
    )
for name, value in facts.items():
    glue(name, value)

# %% [markdown]
# On {glue:text}`conv_images` validation images the trained model reaches
# {glue:text}`conv_factorized`% with its own factorized attention. Converted without retraining,
# softmax attention gives {glue:text}`conv_softmax`% ({glue:text}`conv_softmax_vs`), the
# seed's clustered attention {glue:text}`conv_clustered`%
# ({glue:text}`conv_clustered_vs`) and clustered-factorized attention
# {glue:text}`conv_clustered_factorized`% ({glue:text}`conv_clustered_factorized_vs`).
# Over the bucket widths, top-1 spans {glue:text}`sweep_lo`–{glue:text}`sweep_hi`%:
# {glue:text}`sweep_trend`.
#
# ## timm's ImageNet-trained CoaT-Lite
#
# The cleanest test of a drop-in conversion starts from a really trained model: timm's
# `coat_lite_tiny` ImageNet-1k weights (77.5% top-1 on ImageNet). Its 1,000 outputs include
# Imagenette's ten classes (the folder names are ImageNet's wnids), so keeping those ten rows of
# its classifier (`ccoat.timm_weights.restrict_classes`) scores it on Imagenette as it is, at
# its own 224 px. Where the weights cannot be fetched, `ccoat.create_model(...,
# pretrained=True)` says so at once.

# %%
try:
    imagenet = ccoat.create_model("coat_lite_tiny", pretrained=True)
    fetched = None
except ccoat.PretrainedUnavailable as error:
    imagenet, fetched = None, str(error)
    print(textwrap.fill(fetched, 88))
if imagenet is not None:
    restrict_classes(imagenet, imagenet_indices(info.classes))
    _, val_224, _ = cdata.build_datasets("imagenette", DATA_ROOT, img_size=224)
    loader_224 = cdata.make_loader(
        cdata.subset(val_224, ccoat.choose(smoke=16, cpu=128, gpu=None), seed=0),
        batch_size=32,
        train=False,
        num_workers=1,
    )
    scored = {}
    for kind in ccoat.ATTENTION_KINDS:
        options = {"seed": 0} if kind in CLUSTERED_KINDS else {}
        converted = ccoat.convert_attention(copy.deepcopy(imagenet), kind, **options)
        scored[kind] = ctrain.evaluate(converted, loader_224, DEVICE, interval=True)
    display(
        pd.DataFrame(
            {
                k: {
                    "top-1 (%)": f"{r['top1']:.1f}",
                    "95% interval": "{:.1f}–{:.1f}".format(*r["top1_ci95"]),
                }
                for k, r in scored.items()
            }
        ).rename_axis(
            f"ImageNet weights, {len(loader_224.dataset)} val images, 224 px"
        )
    )
glue(
    "pretrained_state",
    "were fetched, and the table above scores them converted to each kind"
    if imagenet is not None
    else "could not be fetched on the machine that built this page (it reaches no "
    "model hub), so this section shows no numbers; on Colab, or any machine with "
    "internet access, the same cell downloads them and scores every kind",
)

# %% [markdown]
# timm's weights {glue:text}`pretrained_state`.
#
# ## The commands
#
# The reference pair, at the `gpu` recipe (minutes on one GPU; with 2 CPU cores it is days),
# then the final weights scored on all validation images, which also writes
# `model.safetensors`:
#
# ```bash
# python -m ccoat.train --recipe imagenette128-gpu --out results/imagenette128_gpu_coat_lite_tiny
# python -m ccoat.train --recipe imagenette128-gpu --model ccoat_lite_tiny \
#     --out results/imagenette128_gpu_ccoat_lite_tiny
# python -m ccoat.train --eval-only --out results/imagenette128_gpu_coat_lite_tiny
# python benchmarks/convert_reference.py --run imagenette128_gpu_coat_lite_tiny
# ```
#
# (`--eval-only` once per run folder.) A run that stops continues with `--resume` in its
# folder, and a finished one trains further with `--resume --epochs N`: the learning-rate
# schedule is rebuilt for the new length.
#
# ## Summary
#
# - The reference models are committed files: every number above is read from them or
#   computed from them in this build, and the table says how each was made.
# - A CoaT-Lite trained with factorized attention converts to every attention kind with the
#   same weights; the cost of the conversion is measured above, with its uncertainty.
# - A difference inside the bootstrap intervals is not a difference these validation images
#   can show.
#
# ## Exercises
#
# 1. Fine-tune the converted `clustered` model for one epoch (`ccoat.train.fit(recipe,
#    model=...)`). How much accuracy comes back?
# 2. Load the Clustering CoaT reference (`reference_run("ccoat_lite_tiny").load_model()`) and
#    convert it to factorized attention. Does a model trained with clustering lose accuracy
#    without it?
# 3. Use `max_clusters` instead of the bucket width to control the cost. Which of the two
#    gives the better accuracy at the same number of clusters?
