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
# # Cost audit
#
# The seed paper proposes Clustering CoaT as a *lighter* CoaT, and reports no numbers. Before
# asking whether clustering saves, we need an instrument that says where a CoaT-Lite forward
# pass spends its work. This chapter builds that instrument, `ccoat.cost`, checks it against
# hand counts and against timm's published numbers, and reads it: per component, per stage,
# per attention kind and per input resolution, in counted multiply-accumulates and in measured
# seconds.
#
# **Learning objectives**
#
# - count the multiply-accumulates (MACs) of every component of a CoaT-Lite block by hand, and
#   check the count against PyTorch's `FlopCounterMode`;
# - see where CoaT-Lite's cost goes, and what share of it the seed's clustering module can
#   touch at all;
# - put counted cost next to measured time, and see where the two disagree;
# - find, from measurements, the input resolution from which clustered attention is faster than
#   exact softmax attention.

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
from IPython.display import Markdown, display
from torch.utils.flop_counter import FlopCounterMode

import ccoat
from ccoat import cost, measure, sweep
from ccoat.model import CLUSTERED_KINDS
from ccoat.plotting import KIND_COLORS, glue, plot_components, plot_sweep, set_theme
from ccoat.provenance import describe, results_file

set_theme()
torch.manual_seed(0)
PROFILE = ccoat.get_profile()
KINDS = ccoat.ATTENTION_KINDS
print(f"profile: {PROFILE}, torch {torch.__version__}")
print(f"attention kinds here: {', '.join(KINDS)}")

# %% [markdown]
# ## Counting one block by hand
#
# A multiply-accumulate (MAC) is one $a \leftarrow a + x\,y$. A matrix product of an
# $m \times k$ by a $k \times n$ matrix takes $mkn$ of them; a convolution takes, for every
# output element, one per input channel of its group and per kernel tap. These are the
# operations that dominate a transformer, and the quantity timm publishes as "GMACs".
#
# Take a block of CoaT-Lite Tiny's first stage at 224 px: a $56 \times 56$ grid, $N = 1 + 56^2$
# tokens (with the class token) of $C = 64$ channels, $h = 8$ heads of $C_h = 8$, an MLP of
# width $D = 8C$. Per component:

# %%
C, heads, ratio, side = 64, 8, 8, 224 // 4
HW, N, Ch, D = side * side, 1 + side * side, C // heads, ratio * C
by_hand = {
    "cpe": HW * C * 3 * 3,  # depthwise 3x3 on the grid
    "qkv": N * C * 3 * C,  # (N, C) @ (C, 3C)
    "attention": heads
    * (Ch * N * Ch + N * Ch * Ch),  # softmax(k)ᵀ v, then q @ context
    "crpe": HW
    * Ch
    * (2 * 3 * 3 + 3 * 5 * 5 + 3 * 7 * 7),  # depthwise 3/5/7 on 2/3/3 heads
    "proj": N * C * C,
    "mlp": N * C * D + N * D * C,  # fc1, fc2
}
for name, value in by_hand.items():
    print(f"{name:>9}: {value / 1e6:7.2f} M MACs")

# %% [markdown]
# `FlopCounterMode` intercepts every matrix product and convolution that PyTorch dispatches and
# counts its FLOPs (two per MAC), and it knows which module was running. We run the block of
# `ccoat`'s CoaT-Lite Tiny under it and read the count per submodule.

# %%
model = ccoat.create_model("coat_lite_tiny").eval()
stage = model.stages[0]
x = torch.randn(1, N, C)
with torch.no_grad(), FlopCounterMode(display=False, depth=None) as counter:
    stage.blocks[0](x, (side, side), stage.cpe, stage.crpe)
flops = {name: sum(ops.values()) for name, ops in counter.get_flop_counts().items()}
counted = {
    "cpe": flops["ConvPosEnc"],
    "qkv": flops["SerialBlock.attn.qkv"],
    "attention": flops["SerialBlock.attn.core"],
    "crpe": flops["ConvRelPosEnc"],
    "proj": flops["SerialBlock.attn.proj"],
    "mlp": flops["SerialBlock.mlp"],
}
counted = {name: value // 2 for name, value in counted.items()}  # FLOPs -> MACs
assert counted == by_hand, (counted, by_hand)
print("FlopCounterMode's count equals the hand count for every component of the block")

# %% [markdown]
# `ccoat.cost.audit` does this for the whole model: it counts with `FlopCounterMode` (on the
# `meta` device, so nothing is computed), derives the same numbers from closed forms, and adds
# what a MAC count cannot see — the softmax, LayerNorms, GELU and residual adds, counted as
# *other operations* by a documented convention (see `help(ccoat.cost)`). Its stage-1 rows are
# our block times the stage's two blocks.

# %%
tiny = cost.audit(model, img_size=224)
stage1 = tiny[tiny.stage == "stage1"].set_index("component")
for name, value in by_hand.items():
    torch.testing.assert_close(float(stage1.loc[name, "macs"]), 2.0 * value)
    torch.testing.assert_close(float(stage1.loc[name, "macs_analytic"]), 2.0 * value)
print("ccoat.cost agrees with the hand count (counted and analytic)")
tiny.head(10)

# %% [markdown]
# The whole model's count can be checked against an independent number: timm's model cards
# give CoaT-Lite Tiny, Mini, Small and Medium as 1.6, 2.0, 4.0 and 9.8 GMACs at 224 px.

# %%
published = {"tiny": 1.6, "mini": 2.0, "small": 4.0, "medium": 9.8}
sizes = []
for size, gmacs in published.items():
    m = ccoat.create_model(f"coat_lite_{size}")
    sizes.append(
        {
            "model": f"coat_lite_{size}",
            "published GMACs": gmacs,
            "ccoat.cost GMACs": cost.macs(m)["total"] / 1e9,
            "parameters (M)": cost.parameters(m)["total"] / 1e6,
        }
    )
sizes = pd.DataFrame(sizes).set_index("model")
sizes["difference"] = sizes["ccoat.cost GMACs"] / sizes["published GMACs"] - 1
assert sizes["difference"].abs().max() < 0.03
sizes.style.format(
    {"ccoat.cost GMACs": "{:.3f}", "parameters (M)": "{:.2f}", "difference": "{:+.1%}"}
)

# %% [markdown]
# ## Where CoaT-Lite's cost goes
#
# Each bar is one stage of CoaT-Lite Tiny at 224 px; the segments are its components.

# %%
fig, axes = plt.subplots(1, 3, figsize=(14, 4))
for ax, value in zip(axes, ("macs", "ops", "params")):
    plot_components(tiny, value=value, ax=ax)
    if ax is not axes[-1]:
        ax.get_legend().remove()
axes[0].set_title("multiply-accumulates")
axes[1].set_title("other operations")
axes[2].set_title("parameters")
fig.suptitle("CoaT-Lite Tiny at 224 px, per stage and component")
fig.tight_layout()

# %%
share = tiny.groupby("component")["macs"].sum() / tiny["macs"].sum()
# The seed clusters the queries. In factorized attention a query meets the values only
# in q @ context: N·C·C_h MACs per block, half of the core's count.
query_side = (
    sum(
        sh.depth * sh.tokens * sh.dim * (sh.dim // sh.heads)
        for sh in cost.stage_shapes(model, 224)
    )
    / tiny["macs"].sum()
)
glue("mlp_share", share["mlp"])
glue("proj_share", share["qkv"] + share["proj"])
glue("core_share", share["attention"])
glue("query_side", query_side)
glue("crpe_share", share["crpe"])

# %% [markdown]
# The MLP holds **{glue:text}`mlp_share:.0%`** of CoaT-Lite Tiny's MACs and the qkv and output
# projections **{glue:text}`proj_share:.0%`**. The attention core — everything the seed's
# module replaces — holds **{glue:text}`core_share:.1%`**, and the query-side product
# $q\,(\mathrm{softmax}(k)^\top v)$, the only part that sees each query,
# **{glue:text}`query_side:.1%`**. The CRPE term $q \odot \mathrm{DWConv}(v)$ also needs every
# query ({glue:text}`crpe_share:.1%`).

# %% [markdown]
# ## MACs are not time
#
# A MAC count is a model of time. `measure.component_times` measures the time of each component
# in a forward pass instead (hooks read the clock as each module starts and ends; what no
# module covers — residual adds, reshapes — is "other").

# %%
repeats = ccoat.choose(smoke=1, cpu=5, gpu=5)
times = measure.component_times(model, 224, 1, repeats=repeats, warmup=1)
total_time = times.pop(("total", "all"))
time_share = pd.Series(times).groupby(level=0).sum() / total_time
compare = pd.DataFrame({"share of MACs": share, "share of time": time_share}).fillna(0)
compare = compare.loc[[c for c in cost.COMPONENTS if c in compare.index]]
ax = compare.plot.bar(figsize=(9, 3.8), rot=30)
ax.set_ylabel("share of the forward pass")
ax.set_title(
    "CoaT-Lite Tiny, 224 px, batch 1: counted vs measured "
    f"({'GPU' if torch.cuda.is_available() else 'CPU'})"
)
ax.yaxis.set_major_formatter(plt.matplotlib.ticker.PercentFormatter(1.0))
plt.tight_layout()

# %%
glue("pass_ms", total_time * 1e3)
glue("mlp_time", time_share.get("mlp", 0))
glue("dw_share", share["cpe"] + share["crpe"])
glue("dw_time", time_share.get("cpe", 0) + time_share.get("crpe", 0))
glue("core_time", time_share.get("attention", 0))

# %% [markdown]
# One forward pass took {glue:text}`pass_ms:.0f` ms here. The MLP's
# **{glue:text}`mlp_share:.0%`** of the MACs took **{glue:text}`mlp_time:.0%`** of the time;
# the depthwise convolutions (CPE and CRPE), **{glue:text}`dw_share:.1%`** of the MACs, took
# **{glue:text}`dw_time:.0%`**, and the attention core **{glue:text}`core_time:.0%`**. Dense
# matrix products run near the machine's peak; depthwise convolutions, softmaxes and reshapes
# move much data for little arithmetic, so they cost far more time than their MACs say.

# %% [markdown]
# ## The attention kinds side by side
#
# The same model with each attention kind and one set of weights: `factorized` (CoaT-Lite),
# `softmax` (exact attention), `clustered` (the seed's module: E2LSH clusters of the queries,
# prototypes attend to all keys with softmax, the result is broadcast back) and
# `clustered_factorized` (prototypes in place of the queries in CoaT's factorized product).
# The clustered kinds form as many clusters as their queries fall into distinct hash buckets,
# so their cost depends on the images: `cost.audit` runs them on two photos shipped with
# scikit-learn, and reports, besides the MACs, the steps that have almost none — hashing,
# clustering (a sort), prototypes (a scatter-mean) and broadcast (a gather).

# %%
audit_sizes = ccoat.choose(smoke=[224], cpu=[224, 448], gpu=[224, 448])
models = sweep.build_models("coat_lite_tiny", KINDS, "cpu")
audits, cluster_info = [], {}
for img_size in audit_sizes:
    for kind, m in models.items():
        table = cost.audit(m, img_size)
        audits.append(table.assign(kind=kind, img_size=img_size))
        cluster_info[(kind, img_size)] = table.attrs["clusters"]
audits = pd.concat(audits, ignore_index=True)

fig, axes = plt.subplots(2, len(KINDS), figsize=(3.6 * len(KINDS), 7.5))
for col, kind in enumerate(KINDS):
    sel = audits[(audits.kind == kind) & (audits.img_size == audit_sizes[0])]
    plot_components(sel, value="macs", ax=axes[0, col], title=kind)
    plot_components(sel, value="ops", ax=axes[1, col])
    for row in range(2):
        if col < len(KINDS) - 1:
            axes[row, col].get_legend().remove()
fig.suptitle(
    f"CoaT-Lite Tiny at {audit_sizes[0]} px by attention kind: MACs (top) and other "
    "operations (bottom) per stage and component"
)
fig.tight_layout()

# %% [markdown]
# The clustered cores pad every query row to the largest row's number of clusters $K$, and
# their prototype attention multiplies $1 + K$ queries per row (the class token keeps its own)
# with all $N$ keys and values: $2(1 + K) N C_h$ MACs per row. We check the audit's count
# against that formula with the cluster counts it recorded.

# %%
if "clustered" in KINDS:
    table = audits[(audits.kind == "clustered") & (audits.img_size == audit_sizes[0])]
    blocks = cluster_info[("clustered", audit_sizes[0])]
    sh = cost.stage_shapes(models["clustered"], audit_sizes[0])[0]
    formula = sum(
        2 * (c.rows + c.padded) * sh.tokens * (sh.dim // sh.heads)
        for (stage, _), c in blocks.items()
        if stage == "stage1"
    )
    counted_attention = table[
        (table.component == "attention") & (table.stage == "stage1")
    ].macs.item()
    assert counted_attention == formula
    per_row = [c.per_row for (stage, _), c in blocks.items() if stage == "stage1"]
    display(
        Markdown(
            f"Stage 1 at {audit_sizes[0]} px: {sh.image_tokens} image queries per "
            f"head fall into **{min(per_row):.0f}–{max(per_row):.0f}** clusters per "
            "row (mean over the batch and heads of each block); prototype attention "
            f"counts {counted_attention / 1e6:.1f} M MACs, as the formula says."
        )
    )

# %%
per_kind = (
    audits.pivot_table(
        index=["img_size", "kind"], columns="component", values="macs", aggfunc="sum"
    ).fillna(0)
    / 1e9
)
per_kind["total"] = per_kind.sum(axis=1)
per_kind = per_kind[[c for c in [*cost.COMPONENTS, "total"] if c in per_kind.columns]]
# Components with no MACs to three decimals (their cost is in "other operations") are
# left out of the table, so that it fits the page; the caption names them.
none = [c for c in per_kind.columns if (per_kind[c].round(3) == 0).all()]
per_kind = per_kind.drop(columns=none).rename_axis(index=["px", "kind"], columns=None)
per_kind.columns = [c.replace("_", " ") for c in per_kind.columns]  # lets headers wrap
per_kind.style.format("{:.3f}").set_caption(
    f"GMACs per component (0.000 for every kind: {', '.join(none)})"
)

# %% [markdown]
# ## Cost and time against resolution
#
# The sweep below was produced by `python -m ccoat.sweep` at the `cpu` profile (the command,
# commit, machine and date are in the file's record, printed below): CoaT-Lite Tiny, batch 1,
# every attention kind, inputs of 128 to 1024 px. At 1024 px the first stage has 65,537
# tokens, so exact softmax attention forms $65537^2$ scores per head; passes that the sweep
# estimated to exceed its time limit were skipped, and the table says why. The machine is a
# shared 2-core CPU: absolute times wander with its load, so the sweep times the kinds of one
# resolution *interleaved* (one pass of each kind in turn), which keeps their ratios fair.

# %%
sweep_name = (
    "cost_gpu.json"
    if PROFILE == "gpu" and torch.cuda.is_available()
    else "cost_cpu.json"
)
rows, components, record = sweep.load(
    results_file(sweep_name, CCOAT_REPO, required=True)
)
print(textwrap.fill("from: " + describe(record), 80, break_on_hyphens=False))
skipped = rows[rows.fwd_skipped.notna() | rows.train_skipped.notna()]
skipped[["kind", "img_size", "fwd_skipped", "train_skipped"]].fillna("measured")

# %%
fig, axes = plt.subplots(2, 2, figsize=(12, 8))
plot_sweep(rows, "macs", ax=axes[0, 0], label="MACs (counted)")
plot_sweep(
    rows,
    "fwd_vs_factorized",
    ax=axes[0, 1],
    label="forward time / factorized's, same round",
)
plot_sweep(rows, "fwd_s", ax=axes[1, 0])
plot_sweep(rows, "train_s", ax=axes[1, 1])
axes[0, 0].set_title("counted cost")
axes[0, 1].set_title("measured forward time relative to CoaT-Lite")
axes[1, 0].set_title("measured forward time")
axes[1, 1].set_title("measured forward + backward time")
fig.suptitle(f"CoaT-Lite Tiny, batch 1, by attention kind ({record['device']})")
fig.tight_layout()

# %% [markdown]
# ### The same sweep on a GPU
#
# Time on a GPU follows other rules: many small kernels cost their launch time whatever their
# size, and exact softmax attention runs through fused kernels that never store the score
# matrix. `python -m ccoat.sweep --profile gpu` ran on one H100 for the 290 seconds the
# session could give it, so the file holds CoaT-Lite Tiny only (batch 1 up to 1024 px,
# batch 32 up to 640 px); what it measured is complete for those rows.

# %%
gpu_rows, _, gpu_record = sweep.load(
    results_file("cost_gpu.json", CCOAT_REPO, required=True)
)
fig, axes = plt.subplots(1, 2, figsize=(10, 3.6), sharey=True)
for ax, batch in zip(axes, (1, 32)):
    plot_sweep(
        gpu_rows,
        "fwd_vs_factorized",
        ax=ax,
        batch_size=batch,
        label="forward time / factorized's",
    )
    ax.axhline(1, color="k", lw=0.8)
    ax.set_title(f"batch {batch}")
fig.suptitle(
    f"CoaT-Lite Tiny by attention kind, {gpu_record['device']}, "
    f"torch {gpu_record['torch']}"
)
fig.tight_layout()
plt.show()

at = gpu_rows.set_index(["kind", "img_size", "batch_size"]).fwd_vs_factorized
glue("gpu_clustered_224", at["clustered", 224, 32])
glue("gpu_softmax_224", at["softmax", 224, 32])
gpu_max = gpu_rows[gpu_rows.batch_size == 32].img_size.max()
glue("gpu_max_px", gpu_max)
glue("gpu_clustered_max", at["clustered", gpu_max, 32])
glue("gpu_softmax_max", at["softmax", gpu_max, 32])
clustered = gpu_rows[gpu_rows.kind == "clustered"].fwd_vs_factorized
glue(
    "gpu_vs_coat",
    "slower than CoaT-Lite at every size and batch measured"
    if (clustered > 1).all()
    else "faster than CoaT-Lite at some sizes",
)
won = sweep.crossover(gpu_rows, "clustered", "softmax", "fwd_s", batch_size=32)
glue(
    "gpu_vs_softmax",
    f"from {won[0]} px on" if won[0] is not None else "at no size measured",
)

# %% [markdown]
# At batch 32 and 224 px, clustered attention takes {glue:text}`gpu_clustered_224:.1f`×
# CoaT-Lite's forward time on the GPU and exact softmax attention
# {glue:text}`gpu_softmax_224:.1f`×; at {glue:text}`gpu_max_px` px the two take
# {glue:text}`gpu_clustered_max:.1f`× and {glue:text}`gpu_softmax_max:.1f`×. Clustered
# attention is {glue:text}`gpu_vs_coat`, as on the CPU; at batch 32 it is faster than
# softmax attention {glue:text}`gpu_vs_softmax`.

# %% [markdown]
# ## FLOPs next to wall-clock
#
# If time followed MACs, a kind that needs twice CoaT-Lite's MACs would take twice its time.
# Each point below is one attention kind at one resolution: its MACs and its measured forward
# time, both relative to factorized attention (CoaT-Lite) at the same resolution, timed in the
# same interleaved run (the median over rounds of the time ratio). On the diagonal, time follows MACs; above it, the kind is slower than
# its MACs say; below it, faster.

# %%
base = rows[rows.kind == "factorized"].set_index("img_size")
rows["MACs / CoaT-Lite"] = rows.macs / rows.img_size.map(base.macs)
rows["time / CoaT-Lite"] = rows.fwd_vs_factorized  # median of per-round ratios
others = rows[(rows.kind != "factorized") & rows["time / CoaT-Lite"].notna()]
fig, ax = plt.subplots(figsize=(6.5, 5))
for kind, group in others.groupby("kind", sort=False):
    ax.scatter(
        group["MACs / CoaT-Lite"],
        group["time / CoaT-Lite"],
        color=KIND_COLORS[kind],
        label=kind,
        s=40,
    )
    ends = group[group.img_size.isin([group.img_size.min(), group.img_size.max()])]
    for (
        _,
        r,
    ) in ends.iterrows():  # label each kind's smallest and largest size: no overlaps
        ax.annotate(
            f"{r.img_size}",
            (r["MACs / CoaT-Lite"], r["time / CoaT-Lite"]),
            fontsize=7,
            xytext=(3, 3),
            textcoords="offset points",
        )
lims = [
    0.8,
    max(others["MACs / CoaT-Lite"].max(), others["time / CoaT-Lite"].max()) * 1.3,
]
ax.plot(lims, lims, color="grey", lw=1, ls="--", label="time follows MACs")
ax.set(
    xscale="log",
    yscale="log",
    xlabel="MACs relative to CoaT-Lite (factorized)",
    ylabel="forward time relative to CoaT-Lite",
    title="Counted cost against measured time\n"
    f"(labels: smallest and largest input px; {record['device']})",
)
ax.legend(fontsize="small")
fig.tight_layout()
ratios = others.pivot_table(
    index="img_size", columns="kind", values=["MACs / CoaT-Lite", "time / CoaT-Lite"]
)
ratios = ratios.rename(
    columns={"MACs / CoaT-Lite": "MACs", "time / CoaT-Lite": "time"}
).T
ratios.index.names = ["relative to CoaT-Lite", "kind"]
ratios.style.format("{:.2f}").set_caption("columns: input px")

# %%
others = others.assign(per_mac=others["time / CoaT-Lite"] / others["MACs / CoaT-Lite"])
verdicts = []
for kind, group in others.groupby("kind", sort=False):
    med, lo, hi = group.per_mac.median(), group.per_mac.min(), group.per_mac.max()
    reading = (
        "slower than its MACs say"
        if med > 1.1
        else "faster than its MACs say"
        if med < 0.9
        else "about as its MACs say"
    )
    verdicts.append(
        f"- **{kind}**: {med:.2f}× CoaT-Lite's time per MAC (median over {len(group)} "
        f"resolutions; {lo:.2f}–{hi:.2f}): {reading}."
    )
display(
    Markdown(
        "\n".join(verdicts) + "\n\n"
        "The clustered kinds' hashing, sort, scatter-mean and gather have almost no "
        "MACs but take time (the component times above show them); exact softmax "
        "attention runs its $N^2$ products in one fused kernel (PyTorch's flash "
        "attention for the CPU), whose rate differs from that of CoaT-Lite's many "
        "small operations. A MAC count ranks the kinds, but it does not price them."
    )
)

# %% [markdown]
# Memory tells the same story from another side. The forward pass's peak (tensor storage
# created by the pass, beyond weights and input) is set by the largest activation alive at one
# time; with a fused attention kernel that is not the attention at all.

# %%
memory = (
    rows.pivot_table(
        index="img_size",
        columns="kind",
        values=["peak_mem_fwd_bytes", "peak_mem_train_bytes"],
    )
    / 2**20
)
print(f"method: {rows.memory_method.dropna().iloc[0]}")
memory = memory.rename(
    columns={"peak_mem_fwd_bytes": "forward", "peak_mem_train_bytes": "training"}
).T
memory.index.names = ["pass", "kind"]
memory.style.format("{:.0f}", na_rep="skipped").set_caption(
    "peak memory (MiB), batch 1; columns: input px"
)

# %%
fwd = rows.pivot_table(index="img_size", columns="kind", values="peak_mem_fwd_bytes")
train = rows.pivot_table(
    index="img_size", columns="kind", values="peak_mem_train_bytes"
)
same = (fwd.max(axis=1) - fwd.min(axis=1)) / fwd.max(axis=1)
stage1 = cost.stage_shapes(model, 224)[0]
# the stage-1 MLP's hidden activation, float32
hidden_bytes = stage1.tokens * stage1.hidden * 4
spread = (
    "are equal to within 0.1%"
    if same.max() < 1e-3
    else f"differ by at most **{same.max():.1%}**"
)
display(
    Markdown(
        f"At every resolution measured, the forward peaks of the kinds {spread}: at "
        f"224 px the peak is {fwd.loc[224].max() / 2**20:.1f} MiB, "
        f"{fwd.loc[224].max() / hidden_bytes:.1f}× the stage-1 MLP's hidden "
        f"activation ({hidden_bytes / 2**20:.1f} MiB, tokens × {stage1.hidden} "
        "channels × 4 bytes). Training keeps activations for the backward pass; at "
        "224 px its peak is "
        + ", ".join(
            f"{train.loc[224, k] / train.loc[224, 'factorized']:.3f}× CoaT-Lite's for "
            f"{k}"
            for k in train.columns
            if k != "factorized"
        )
        + "."
    )
)

# %% [markdown]
# ## What the numbers say
#
# The numbers above, in words (each computed from the tables of this chapter); the verdict on
# the seed's claim is drawn once, in the conclusions chapter, from these same files:

# %%
at_224 = rows[rows.img_size == 224].set_index("kind")
lines = [
    "1. **What the seed's module can touch.** At 224 px the attention core is "
    f"{share['attention']:.1%} of CoaT-Lite Tiny's MACs, and the query-side product "
    f"that clustering the queries can shrink is {query_side:.1%}. A clustering that "
    f"cost nothing would save at most {query_side:.1%} of CoaT-Lite's MACs; the MLP "
    f"({share['mlp']:.0%}) and the projections ({share['qkv'] + share['proj']:.0%}) "
    "see every token whatever the attention does.",
]
for kind in [k for k in CLUSTERED_KINDS if k in at_224.index]:
    faster = rows[(rows.kind == kind)].set_index("img_size").fwd_vs_factorized < 1
    lines.append(
        f"{len(lines) + 1}. **{kind} against CoaT-Lite.** At 224 px it needs "
        f"{at_224.loc[kind, 'macs'] / at_224.loc['factorized', 'macs']:.2f}× "
        f"CoaT-Lite's MACs and {at_224.loc[kind, 'fwd_vs_factorized']:.2f}× its "
        f"forward time; it is faster than CoaT-Lite at {int(faster.sum())} of the "
        f"{int(faster.notna().sum())} resolutions measured."
    )
soft_ratio = (
    rows[rows.kind == "softmax"].set_index("img_size").fwd_vs_factorized.dropna()
)
lines.append(
    f"{len(lines) + 1}. **Where clustering has room.** Exact softmax attention takes "
    f"{soft_ratio.iloc[0]:.1f}× CoaT-Lite's forward time at {soft_ratio.index[0]} px "
    f"and {soft_ratio.iloc[-1]:.1f}× at {soft_ratio.index[-1]} px, the largest size "
    "the sweep measured it at (beyond, its estimated time passed the sweep's limit)."
)
if "clustered" in set(rows.kind):
    # Times relative to factorized attention in the same round: the fairest comparison.
    for metric, what in (
        ("fwd_vs_factorized", "forward"),
        ("train_vs_factorized", "forward + backward"),
    ):
        at, table = sweep.crossover(rows, "clustered", "softmax", metric)
        if at is None:
            text = (
                "clustered attention is not faster at any resolution where both were "
                "measured"
            )
        else:
            first = "the smallest size measured, " if at == table.index.min() else ""
            there = table.loc[at, "clustered"] / table.loc[at, "softmax"]
            text = (
                f"clustered attention is faster from **{at} px** ({first}{there:.2f}× "
                "softmax's time there) at every larger size where both were measured "
                f"(up to {table.index.max()} px, where it takes "
                f"{table['clustered'].iloc[-1] / table['softmax'].iloc[-1]:.2f}×)"
            )
        lines.append(
            f"{len(lines) + 1}. **Clustered against softmax attention, {what}** "
            f"({record['device']}): {text}."
        )
display(Markdown("\n".join(lines)))

# %% [markdown]
# ## Summary
#
# - A MAC count is exact and cheap: `FlopCounterMode` counts matrix products and convolutions
#   per module, and closed forms give the same numbers (the tests check both, and timm's
#   published GMACs).
# - In CoaT-Lite the MLP and the projections dominate the count; the attention core, already
#   linear in the number of tokens, is a small share, and the part that sees each query smaller
#   still.
# - Time does not follow MACs: depthwise convolutions, softmaxes, LayerNorms and reshapes cost
#   more time than their MACs suggest, and a kernel's efficiency changes with its shape.
# - The resolution sweep measured, size by size, clustered attention's time against exact
#   softmax attention's and CoaT-Lite's factorized attention's; the verdict on the seed's
#   claim is drawn once, in the conclusions chapter.
#
# ## Exercises
#
# 1. Using the closed forms in `help(ccoat.cost.analytic_costs)`, find the resolution at which
#    softmax attention's MACs in stage 1 equal those of the stage's MLP.
# 2. Re-run `measure.component_times` with batch size 8. Which components' share of time changes
#    most, and why?
# 3. Suppose every query row of every block formed exactly 64 clusters. Pass
#    `cost.analytic_costs` a `clusters` dictionary of `cost.BlockClusters(total=8 * 64,
#    padded=8 * 64, before_cap=8 * 64, rows=8)` per `(stage, block)`: what share of softmax
#    attention's MACs at 1024 px does clustered attention need then?
# 4. Run `python -m ccoat.sweep --profile smoke` and compare its forward times with the file read
#    above. How much do two runs on the same machine differ?
