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
# # Cost audit: measuring
#
# The previous chapter counted what a CoaT-Lite forward pass costs. Does measured time follow
# the count? **No: on a 2-core CPU the clustered kinds take about
# [1.5](#cpu_clustered_per_mac:.1f) times CoaT-Lite's time per MAC, and on an H100 at
# batch 1 exact softmax attention runs at [0.56](#gpu_softmax_per_mac:.2f) times
# CoaT-Lite's time per MAC. Clustered attention is slower than CoaT-Lite at every size and batch
# measured, on both machines; with random-init weights it overtakes exact softmax attention
# from [128](#cpu_cross_fwd) px on the CPU and from [320](#gpu_cross_fwd_32) px at batch
# 32 on the GPU.** The conclusions come from committed measurements (their command, commit,
# machine and date are printed with them); a timing live on your machine is shown with its
# spread, as "your machine".
#
# **Prerequisites**: {doc}`05_cost_audit` and chapters 1 to 4.
#
# **Learning objectives**
#
# - put counted cost next to measured time, per component and per attention kind, and see
#   where the two disagree;
# - read a timing with its spread, and prefer a committed, interleaved measurement for
#   conclusions;
# - find, from measurements, the input resolution from which clustered attention is faster
#   than exact softmax attention, on a CPU and on a GPU.

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
import textwrap

import matplotlib.pyplot as plt
import pandas as pd
import torch

import ccoat
from ccoat import cost, measure, sweep
from ccoat.model import CLUSTERED_KINDS
from ccoat.plotting import KIND_COLORS, plot_sweep, set_theme
from ccoat.prose import glue
from ccoat.provenance import describe, results_file
from ccoat.runfolder import read_run

set_theme()
torch.manual_seed(0)
print(f"profile: {ccoat.get_profile()}, torch {torch.__version__}")

# %% [markdown]
# ## The committed measurements
#
# Three files, each with the record of how it was made: the per-component times of
# `benchmarks/cost_components.py` (CoaT-Lite Tiny and Clustering CoaT Tiny, random-init weights
# shared by both, median of 5 passes on a 2-core CPU), and the resolution sweeps on that CPU
# and on one H100 GPU (recorded as `python -m ccoat.bench`, the command's name then; it is
# `python -m ccoat.sweep` today).


# %%
def committed(name: str) -> str:
    return str(results_file(name, CCOAT_REPO, required=True))


parts, parts_record = sweep.load_component_times(
    committed("cost_components_tiny.json")
)
cpu_rows, _, cpu_record = sweep.load(committed("cost_cpu.json"))
gpu_rows, _, gpu_record = sweep.load(committed("cost_gpu.json"))
for name, record in [
    ("components", parts_record),
    ("CPU sweep", cpu_record),
    ("GPU sweep", gpu_record),
]:
    print(textwrap.fill(f"{name}: " + describe(record), 87, break_on_hyphens=False))

# %% [markdown]
# The sweeps built their models with random-init weights (`sweep.build_models`), and a
# clustered kind's cost depends on how many clusters its queries form. The trained CoaT-Lite
# Tiny of {doc}`05_cost_audit` forms [1296](#trained_clusters:.0f) clusters per row in stage
# 1 at 224 px where the sweep's untrained model formed [182](#sweep_clusters:.0f), and its
# clustered attention needs [2.02](#trained_macs_x:.2f)× CoaT-Lite's MACs against
# [1.24](#sweep_macs_x:.2f)× in the sweep. So for clustered attention the sweeps' times
# understate what a trained model costs; where they show it slower, a trained one is slower
# still.

# %%
sweep_224 = sweep.at(cpu_rows).query("img_size == 224").set_index("kind")
coat_run = read_run("imagenette128_gpu_coat_lite_tiny", CCOAT_REPO)
torch.manual_seed(1)  # one repeatable draw of the hash projections
trained_audit = cost.audit(coat_run.load_model(attention="clustered"), 224)
trained_clusters = cost.stage_clusters_per_row(trained_audit.attrs["clusters"])
trained_x = trained_audit.macs.sum() / cost.macs(coat_run.load_model(), 224)["total"]
sweep_x = sweep_224.loc["clustered", "macs"] / sweep_224.loc["factorized", "macs"]
assert trained_x > sweep_x, "trained weights should form more clusters: more MACs"
glue("trained_clusters", trained_clusters)
glue("sweep_clusters", sweep_224.loc["clustered", "clusters_per_row_stage1"])
glue("trained_macs_x", trained_x)
glue("sweep_macs_x", sweep_x)

# %% [markdown]
# ## MACs are not time
#
# A MAC count is a model of time. `measure.component_times` measures the time of each
# component in a forward pass instead: hooks read the clock as each module starts and ends,
# and what no module covers (residual adds, reshapes) is "other". The committed measurement
# for CoaT-Lite Tiny at 224 px, batch 1:


# %%
def shares(model: str, img_size: int) -> pd.DataFrame:
    sel = parts[(parts.model == model) & (parts.img_size == img_size)]
    return sel.set_index("component")[["macs_share", "time_share"]].rename(
        columns={"macs_share": "share of MACs", "time_share": "share of time"}
    )


coat = shares("coat_lite_tiny", 224)
ax = coat.plot.bar(figsize=(9, 3.8), rot=30)
ax.set_ylabel("share of the forward pass")
ax.set_title(
    f"CoaT-Lite Tiny, 224 px, batch 1: counted vs measured ({parts_record['device']})"
)
ax.yaxis.set_major_formatter(plt.matplotlib.ticker.PercentFormatter(1.0))
plt.tight_layout()

# %%
mlp, dw = coat.loc["mlp"], coat.loc["cpe"] + coat.loc["crpe"]
assert mlp["share of time"] < 0.6 * mlp["share of MACs"], "MLP: less time than MACs"
assert dw["share of time"] > 3 * dw["share of MACs"], "depthwise: more time than MACs"
glue("mlp_macs", mlp["share of MACs"])
glue("mlp_time", mlp["share of time"])
glue("dw_macs", dw["share of MACs"])
glue("dw_time", dw["share of time"])
glue("core_time", coat.loc["attention", "share of time"])
glue("other_time", coat.loc["other", "share of time"])
glue("crpe_time", coat.loc["crpe", "share of time"])
coat_224 = parts.query("model == 'coat_lite_tiny' and img_size == 224")
glue("pass_ms", coat_224.pass_seconds.iloc[0] * 1e3)

# %% [markdown]
# One forward pass took [48](#pass_ms:.0f) ms on that CPU. The MLP's
# **[70%](#mlp_macs:.0%)** of the MACs took **[34%](#mlp_time:.0%)** of the time;
# the depthwise convolutions (CPE and CRPE), **[1.8%](#dw_macs:.1%)** of the MACs, took
# **[14%](#dw_time:.0%)**, and the attention core [6%](#core_time:.0%). What no
# module covers, "other", took [24%](#other_time:.0%) with no MACs at all. Dense matrix
# products run near the machine's peak; depthwise convolutions, softmaxes and reshapes move
# much data for little arithmetic, so they cost far more time than their MACs say.
#
# ### Your machine
#
# The same split, timed live here. One timing of a short pass is a sample, not a fact: two
# runs of a single-pass version of this cell on the same shared machine gave CRPE 4.5% and 30%
# of the time (the committed file says [9.5%](#crpe_time:.1%)). So the cell times several
# passes, and the bars show the median
# share with a line from the smallest to the largest. Read it as a picture of your machine,
# not as a conclusion; the text above rests on the committed file.

# %%
passes = ccoat.choose(smoke=3, cpu=9, gpu=9)
# random-init weights: a timing needs no training
model = ccoat.create_model("coat_lite_tiny").eval()
measure.component_times(model, 224, 1, repeats=1, warmup=1)  # warm-up, not kept
live, totals = [], []
for _ in range(passes):
    times = measure.component_times(model, 224, 1, repeats=1, warmup=0)
    totals.append(times.pop(("total", "all")))
    live.append(pd.Series(times).groupby(level=0).sum() / totals[-1])
live = pd.DataFrame(live).fillna(0)
live = live[[c for c in cost.COMPONENTS if c in live.columns]]

# %%
median = live.median()
ax = median.plot.bar(
    figsize=(9, 3.8), rot=30, color="tab:orange", label="share of time (median)"
)
ax.errorbar(
    range(len(median)),
    median,
    yerr=[median - live.min(), live.max() - median],
    fmt="none",
    color="k",
    capsize=3,
    label="range",
)
ax.yaxis.set_major_formatter(plt.matplotlib.ticker.PercentFormatter(1.0))
ax.set_title(f"your machine: CoaT-Lite Tiny, 224 px, batch 1, {passes} passes")
ax.legend()
plt.tight_layout()
print(f"pass: median {pd.Series(totals).median() * 1e3:.0f} ms, ", end="")
print(f"range {min(totals) * 1e3:.0f}-{max(totals) * 1e3:.0f} ms")

# %% [markdown]
# ## Cost and time against resolution
#
# The two sweeps time CoaT-Lite Tiny with every attention kind at growing inputs: on the CPU at
# batch 1 from 128 to 1024 px, on the GPU at batch 1 up to 1024 px and at batch 32 up to 640 px
# (the GPU sweep ran for the 290 seconds its session could give it; every row it holds is
# complete). At 1024 px the first stage has 65,537
# tokens, so exact softmax attention forms $65537^2$ scores per head; passes that a sweep
# estimated to exceed its time or memory limit were skipped, and the table says why. Both
# sweeps time the kinds of one resolution *interleaved* (one pass of each kind in turn), and
# record each kind's time over CoaT-Lite's in the same round, the measure least moved by a
# busy machine.

# %%
sweeps = {"CPU": cpu_rows, "GPU": gpu_rows}
skipped = pd.concat(
    {
        name: rows[rows.fwd_skipped.notna() | rows.train_skipped.notna()]
        for name, rows in sweeps.items()
    }
)
skipped = skipped[["kind", "img_size", "batch_size", "fwd_skipped", "train_skipped"]]
skipped = skipped.fillna("measured").droplevel(1).rename_axis("sweep")
for column in ("fwd_skipped", "train_skipped"):  # keep the table within the page
    skipped[column] = skipped[column].map(lambda s: textwrap.shorten(s, 40))
skipped

# %% [markdown]
# The counted cost is the same on both machines; the time relative to CoaT-Lite is not.

# %%
panels = [("CPU", cpu_rows, 1), ("GPU", gpu_rows, 1), ("GPU", gpu_rows, 32)]
fig, axes = plt.subplots(2, 2, figsize=(10, 7))
axes = axes.ravel()
plot_sweep(cpu_rows, "macs", ax=axes[0], label="MACs (counted)")
axes[0].set_title("counted cost, batch 1")
for ax, (name, rows, batch) in zip(axes[1:], panels):
    plot_sweep(rows, "fwd_vs_factorized", ax=ax, batch_size=batch, label="")
    ax.axhline(1, color="k", lw=0.8)
    ax.set_title(f"{name}, batch {batch}")
    ax.set_ylabel("forward time / CoaT-Lite's, same round")
    if ax is not axes[1]:
        ax.get_legend().remove()
fig.suptitle(
    f"CoaT-Lite Tiny by attention kind: {cpu_record['device']} and "
    f"{gpu_record['device']}"
)
fig.tight_layout()

# %%
fig, axes = plt.subplots(1, 3, figsize=(14, 3.8), sharey=True)
for ax, (name, rows, batch) in zip(axes, panels):
    plot_sweep(rows, "fwd_s", ax=ax, batch_size=batch)
    ax.set_title(f"{name}, batch {batch}: forward time")
    ax.set_ylabel("forward time per batch (s)")
    if ax is not axes[0]:
        ax.get_legend().remove()
fig.tight_layout()

# %%
ratio = {
    name: rows.set_index(["kind", "img_size", "batch_size"]).fwd_vs_factorized
    for name, rows in sweeps.items()
}
for name, rows in sweeps.items():
    clustered = rows[rows.kind.isin(CLUSTERED_KINDS)].fwd_vs_factorized.dropna()
    assert (clustered > 1).all(), f"{name}: a clustered kind beat CoaT-Lite somewhere"
gpu_max = gpu_rows[gpu_rows.batch_size == 32].img_size.max()
glue("gpu_clustered_224", ratio["GPU"]["clustered", 224, 32])
glue("gpu_softmax_224", ratio["GPU"]["softmax", 224, 32])
glue("gpu_max_px", int(gpu_max))
glue("gpu_clustered_max", ratio["GPU"]["clustered", gpu_max, 32])
glue("gpu_softmax_max", ratio["GPU"]["softmax", gpu_max, 32])
glue("cpu_clustered_224", ratio["CPU"]["clustered", 224, 1])
glue("cpu_softmax_224", ratio["CPU"]["softmax", 224, 1])
coat_gpu = sweep.at(gpu_rows, batch_size=1).query("kind == 'factorized'")
coat_gpu = coat_gpu.set_index("img_size").fwd_s
assert coat_gpu[768] < 1.2 * coat_gpu[224], "batch 1 on the GPU should be launch-bound"
glue("gpu_coat_224_ms", coat_gpu[224] * 1e3)
glue("gpu_coat_768_ms", coat_gpu[768] * 1e3)

# %% [markdown]
# At 224 px on the CPU, clustered attention takes [2.0](#cpu_clustered_224:.1f)× CoaT-Lite's
# forward time and exact softmax attention [4.6](#cpu_softmax_224:.1f)×. On the GPU at
# batch 32 and 224 px the two take [3.9](#gpu_clustered_224:.1f)× and
# [3.7](#gpu_softmax_224:.1f)×, and at [640](#gpu_max_px) px
# [3.7](#gpu_clustered_max:.1f)× and [41.4](#gpu_softmax_max:.1f)×. Both clustered
# kinds are slower than CoaT-Lite at every size and batch measured, on both machines. Time on
# a GPU follows other rules: at batch 1 CoaT-Lite's pass takes [7.3](#gpu_coat_224_ms:.1f)
# ms at 224 px and [7.7](#gpu_coat_768_ms:.1f) ms at 768 px, because its many small
# kernels cost their launch time whatever their size; and exact softmax attention runs
# through fused kernels that never store the score matrix.
#
# ## FLOPs next to wall-clock
#
# If time followed MACs, a kind that needs twice CoaT-Lite's MACs would take twice its time.
# Each point below is one attention kind at one resolution: its MACs and its measured forward
# time, both relative to factorized attention (CoaT-Lite) at the same resolution and batch
# size (the time as the median over rounds of the per-round ratio). On the diagonal, time
# follows MACs; above it, the kind is slower than its MACs say; below it, faster. Each kind's
# points are joined from the smallest resolution to the largest, which is labelled.


# %%
def scatter_relative(ax, rel, title: str):
    """Each kind's points joined in order of px; the largest px labelled."""
    others = rel[(rel.kind != "factorized") & rel.fwd_vs_factorized.notna()]
    for kind, group in others.groupby("kind", sort=False):
        group = group.sort_values("img_size")
        x, y = group.macs_vs_factorized, group.fwd_vs_factorized
        color = KIND_COLORS[kind]
        ax.plot(x, y, "o-", color=color, label=kind, ms=5, lw=1)
        ax.annotate(
            f"{group.img_size.iloc[-1]} px",
            (x.iloc[-1], y.iloc[-1]),
            color=color,
            fontsize=8,
            xytext=(5, -3),
            textcoords="offset points",
        )
    ax.plot(
        [0.5, 100], [0.5, 100], color="grey", lw=1, ls="--", label="time follows MACs"
    )
    ax.set(xscale="log", yscale="log", xlim=(0.5, 100), ylim=(0.5, 100), title=title)
    ax.set_xlabel("MACs / CoaT-Lite's")


# %%
fig, axes = plt.subplots(1, 3, figsize=(15, 4.6), sharey=True)
for ax, (name, rows, batch) in zip(axes, panels):
    rel = sweep.relative_to_factorized(sweep.at(rows, batch_size=batch))
    scatter_relative(ax, rel, f"{name}, batch {batch}")
axes[0].set_ylabel("forward time / CoaT-Lite's")
axes[0].legend(fontsize="small")
fig.tight_layout()

# %%
per_mac = pd.concat({name: sweep.time_per_mac(rows) for name, rows in sweeps.items()})
per_mac = per_mac.droplevel(1).rename_axis(["sweep", "batch", "kind"])
cpu_pm, gpu_pm = per_mac.loc["CPU", "median"], per_mac.loc["GPU", "median"]
assert (cpu_pm > 1.1).all(), "on the CPU every kind should be slower than its MACs say"
assert gpu_pm[1, "softmax"] < 0.9, (
    "GPU batch 1: fused softmax faster than its MACs say"
)
assert (gpu_pm.loc[1][list(CLUSTERED_KINDS)] > 2).all(), (
    "clustered kinds far slower per MAC"
)
glue("cpu_softmax_per_mac", cpu_pm[1, "softmax"])
glue("cpu_clustered_per_mac", cpu_pm[1, "clustered"])
glue("cpu_cf_per_mac", cpu_pm[1, "clustered_factorized"])
glue("gpu_softmax_per_mac", gpu_pm[1, "softmax"])
glue("gpu_clustered_per_mac", gpu_pm[1, "clustered"])
glue("gpu_cf_per_mac", gpu_pm[1, "clustered_factorized"])
per_mac.style.format("{:.2f}", subset=["median", "low", "high"]).set_caption(
    "time per MAC relative to CoaT-Lite's: median, lowest and highest over resolutions"
)

# %% [markdown]
# On the CPU every kind is slower than its MACs say: per MAC, exact softmax attention takes
# [1.76](#cpu_softmax_per_mac:.2f)× CoaT-Lite's time, clustered attention
# [1.53](#cpu_clustered_per_mac:.2f)× and clustered factorized attention
# [1.52](#cpu_cf_per_mac:.2f)× (medians over resolutions). On the GPU at batch 1, exact
# softmax attention is *faster* than its MACs say ([0.56](#gpu_softmax_per_mac:.2f)×): its
# $N^2$ products run in one fused kernel, which keeps the GPU busy where CoaT-Lite's many small
# operations do not. The clustered kinds take [2.6](#gpu_clustered_per_mac:.1f)× and
# [4.2](#gpu_cf_per_mac:.1f)× there: their hashing, sort, scatter-mean and gather have
# almost no MACs but take time. A MAC count ranks the kinds, but it does not price them.
#
# ## Memory
#
# Clustering the queries saves no memory: beyond the first configuration measured, the forward
# pass's peak is the same for every kind on both machines, and on the CPU training with a
# clustered kind needs slightly more. The reason is that the peak (tensor storage created by
# the pass, beyond weights and input) is set by the largest activation alive at one time;
# with a fused attention kernel that is not the attention at all.

# %%
memory = pd.concat(
    {
        (name, mode): sweep.at(rows).pivot_table(
            index="img_size", columns="kind", values=f"peak_mem_{mode}_bytes"
        )
        / 2**20
        for name, rows in sweeps.items()
        for mode in ("fwd", "train")
    },
    axis=1,
).T.rename_axis(["sweep", "pass", "kind"])
print(f"method: CPU {cpu_rows.memory_method.dropna().iloc[0]}, ", end="")
print(f"GPU {gpu_rows.memory_method.dropna().iloc[0]}")
memory.style.format("{:.0f}", na_rep="—").set_caption(
    "peak memory (MiB), batch 1; columns: input px; —: not measured"
)

# %%
cpu_mem = sweep.peak_memory_ratios(cpu_rows)
gpu_mem = sweep.peak_memory_ratios(gpu_rows)
assert (cpu_mem["forward spread"] < 1e-3).all(), "CPU forward peaks should be equal"
assert (gpu_mem["forward spread"].drop(224) < 1e-3).all(), "GPU: equal beyond 224 px"
stage1 = cost.stage_shapes(model, 224)[0]
hidden_bytes = stage1.tokens * stage1.hidden * 4  # the stage-1 MLP's hidden activation
peak_224 = memory.loc[("CPU", "fwd"), 224].max() * 2**20
glue("cpu_peak_224", peak_224 / 2**20)
glue("peak_over_hidden", peak_224 / hidden_bytes)
glue("hidden_mib", hidden_bytes / 2**20)
glue("hidden_channels", stage1.hidden)
gpu_224 = memory.loc[("GPU", "fwd"), 224]
glue("gpu_first_peak", gpu_224["factorized"])
glue("gpu_other_peak", gpu_224.drop("factorized").max())
train_224 = cpu_mem.loc[224]
glue("train_clustered", train_224["training / factorized: clustered"])
glue("train_cf", train_224["training / factorized: clustered_factorized"])
glue("train_softmax", train_224["training / factorized: softmax"])
clustered_kinds = train_224.filter(like="clustered")  # both clustered kinds
assert (clustered_kinds > 1).all(), "the clustered kinds train in more memory"

# %% [markdown]
# On the CPU, at every resolution measured, the forward peaks of the four kinds are equal to
# within 0.1%: at 224 px the peak is [14.6](#cpu_peak_224:.1f) MiB,
# [2.4](#peak_over_hidden:.1f)× the stage-1 MLP's hidden activation
# ([6.1](#hidden_mib:.1f) MiB: tokens × [512](#hidden_channels) channels × 4 bytes).
# On the GPU they are equal from 320 px on; at 224 px, the first configuration that sweep
# measured, factorized attention's peak was [47.6](#gpu_first_peak:.1f) MiB against at
# most [14.6](#gpu_other_peak:.1f) MiB for the others. Training keeps activations for the
# backward pass; on the CPU at 224 px its peak is [1.024](#train_clustered:.3f)× CoaT-Lite's
# for clustered attention, [1.054](#train_cf:.3f)× for clustered factorized attention and
# [1.003](#train_softmax:.3f)× for exact softmax attention.
#
# ## Where clustered attention beats softmax attention
#
# `sweep.crossover` finds the smallest resolution from which clustered attention's time is
# below exact softmax attention's at every larger resolution where both were measured. The
# times compared are each kind's ratio to CoaT-Lite in the same round, the fairest comparison.

# %%
cross = {}
for name, rows in sweeps.items():
    for batch in sorted(rows.batch_size.unique()):
        for metric in ("fwd_vs_factorized", "train_vs_factorized"):
            px, _ = sweep.crossover(
                rows, "clustered", "softmax", metric, batch_size=batch
            )
            cross[(name, int(batch), metric.split("_")[0])] = px
cross = pd.Series(cross, name="from px").rename_axis(["sweep", "batch", "pass"])
assert cross.notna().all(), (
    "clustered attention should overtake softmax in every sweep"
)
assert cross["CPU", 1, "fwd"] == cpu_rows.img_size.min(), "on the CPU, from the start"
assert cross["GPU", 32, "fwd"] < cross["GPU", 1, "fwd"], "batch 32 crosses earlier"
glue("cpu_cross_fwd", int(cross["CPU", 1, "fwd"]))
glue("cpu_cross_train", int(cross["CPU", 1, "train"]))
glue("gpu_cross_fwd_1", int(cross["GPU", 1, "fwd"]))
glue("gpu_cross_fwd_32", int(cross["GPU", 32, "fwd"]))
glue("gpu_cross_train_32", int(cross["GPU", 32, "train"]))
cross.to_frame()

# %% [markdown]
# On the CPU, clustered attention's forward pass is faster than exact softmax attention's from
# [128](#cpu_cross_fwd) px, the smallest size measured, and its training step from
# [128](#cpu_cross_train) px. On the GPU, where fused kernels make softmax attention
# cheap, the forward pass crosses over only from [640](#gpu_cross_fwd_1) px at batch 1 and
# from [320](#gpu_cross_fwd_32) px at batch 32 (the training step from
# [224](#gpu_cross_train_32) px at batch 32). This is the room ACT's clustering has: not
# against CoaT-Lite, whose factorized attention is already linear in $N$, but against
# attention that is quadratic in it. These crossovers come from random-init models, whose
# queries form several times fewer clusters in stage 1 than trained ones (above); a trained
# Clustering CoaT crosses over later, if at all. The verdict on the seed's claim is drawn
# once, in the conclusions chapter, from these same files.

# %% [markdown]
# ## Summary
#
# - Time does not follow MACs. In CoaT-Lite Tiny at 224 px on a CPU the MLP holds
#   [70%](#mlp_macs:.0%) of the MACs and [34%](#mlp_time:.0%) of the time; the
#   depthwise convolutions [1.8%](#dw_macs:.1%) of the MACs and [14%](#dw_time:.0%) of
#   the time; what no module covers, [24%](#other_time:.0%) of the time.
# - Per MAC, clustered attention takes [1.53](#cpu_clustered_per_mac:.2f)× CoaT-Lite's
#   time on the CPU and [2.6](#gpu_clustered_per_mac:.1f)× on the GPU at batch 1; exact
#   softmax attention [1.76](#cpu_softmax_per_mac:.2f)× and
#   [0.56](#gpu_softmax_per_mac:.2f)×.
# - Both clustered kinds are slower than CoaT-Lite at every size and batch measured. Clustered
#   attention (random-init weights) beats exact softmax attention from
#   [128](#cpu_cross_fwd) px on the CPU, and
#   from [640](#gpu_cross_fwd_1) px (batch 1) and [320](#gpu_cross_fwd_32) px
#   (batch 32) on the GPU.
# - A live timing is a sample: show its spread, and draw conclusions from committed,
#   interleaved measurements whose record says how they were made.
#
# ## Exercises
#
# 1. From the committed sweeps, at which resolution does exact softmax attention's forward
#    pass first take more than 10 times CoaT-Lite's, on the CPU and on the GPU at batch 32?
# 2. How many images per second does CoaT-Lite Tiny's forward pass process on the GPU at
#    224 px, at batch 1 and at batch 32? Why so different?
# 3. In the time-per-MAC table, which kind's ratio varies most over the resolutions on the CPU
#    (highest over lowest), and why?
# 4. Run the "your machine" cell again while another program loads the CPU (or with more
#    passes). Which shares move most?


# %% tags=["hide-input"]
def first_above(rows, batch: int, times: float = 10.0) -> int:
    sel = sweep.at(rows, batch_size=batch).query("kind == 'softmax'")
    sel = sel.dropna(subset=["fwd_vs_factorized"]).sort_values("img_size")
    return int(sel[sel.fwd_vs_factorized > times].img_size.iloc[0])


ex1_cpu, ex1_gpu = first_above(cpu_rows, 1), first_above(gpu_rows, 32)
assert ex1_cpu == ex1_gpu == 320, (ex1_cpu, ex1_gpu)
glue("ex1_px", ex1_cpu)
glue("ex1_cpu_x", ratio["CPU"]["softmax", 320, 1])
glue("ex1_gpu_x", ratio["GPU"]["softmax", 320, 32])
glue("ex1_cpu_224_x", ratio["CPU"]["softmax", 224, 1])

# %% [markdown]
# ```{admonition} Solution to exercise 1
# :class: dropdown
# On both: from [320](#ex1_px) px, where softmax attention takes
# [10.1](#ex1_cpu_x:.1f)× CoaT-Lite's forward time on the CPU and
# [10.3](#ex1_gpu_x:.1f)× on the GPU at batch 32 (at 224 px on the CPU,
# [4.6](#ex1_cpu_224_x:.1f)×). Stage 1 has $1 + (320/4)^2 = 6401$ tokens there, and the
# $N^2$ scores take over.
# ```

# %% tags=["hide-input"]
coat_rows = gpu_rows.query("kind == 'factorized' and img_size == 224")
images_per_s = coat_rows.set_index("batch_size").fwd_img_s
assert images_per_s[32] > 10 * images_per_s[1], images_per_s
glue("ex2_b1", images_per_s[1])
glue("ex2_b32", images_per_s[32])
glue("ex2_x", images_per_s[32] / images_per_s[1])

# %% [markdown]
# ```{admonition} Solution to exercise 2
# :class: dropdown
# [138](#ex2_b1:.0f) images per second at batch 1 and [2834](#ex2_b32:.0f) at batch
# 32, [21](#ex2_x:.0f) times as many. At batch 1 the GPU waits on kernel launches (the
# pass took [7.3](#gpu_coat_224_ms:.1f) ms at 224 px and [7.7](#gpu_coat_768_ms:.1f)
# ms at 768 px); a batch of 32 gives each kernel enough work to fill the device.
# ```

# %% tags=["hide-input"]
spread = per_mac.loc["CPU"].droplevel(0)
spread = spread["high"] / spread["low"]
assert spread.idxmax() == "softmax", spread
glue("ex3_softmax_low", per_mac.loc[("CPU", 1, "softmax"), "low"])
glue("ex3_softmax_high", per_mac.loc[("CPU", 1, "softmax"), "high"])
glue("ex3_next", spread.drop("softmax").max())
glue("ex3_x", spread["softmax"])

# %% [markdown]
# ```{admonition} Solution to exercise 3
# :class: dropdown
# Exact softmax attention: from [1.22](#ex3_softmax_low:.2f)× to
# [2.41](#ex3_softmax_high:.2f)× CoaT-Lite's time per MAC, a factor of
# [2.0](#ex3_x:.1f) (the other kinds at most [1.3](#ex3_next:.1f)). As the input
# grows, its $N^2$ products go from a small part of the pass to nearly all of it, and the rate
# of that one kernel replaces the rate of CoaT-Lite's mix of operations.
# ```
#
# ```{admonition} Solution to exercise 4
# :class: dropdown
# There is no single answer: it depends on your machine and its load, which is the point.
# Read the range lines: a component whose line is long beside its bar cannot carry a
# conclusion from one pass. The committed sweeps guard against load by timing the kinds
# interleaved and comparing them round by round.
# ```
