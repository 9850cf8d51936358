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
# # Cost audit: counting
#
# The seed paper proposes Clustering CoaT as a *lighter* CoaT, and reports no numbers. Can
# clustering the queries make a CoaT-Lite forward pass cheaper? **On paper, no: the part of the
# pass that sees each query separately is [0.7%](#query_side:.1%) of CoaT-Lite Tiny's
# multiply-accumulates at 224 px, and hashing the queries with E2LSH costs more than the most
# that clustering them could save there. In exact softmax attention, where ACT applied it,
# the same clustering saves [53](#softmax_saving_x:.0f) times what its hashing costs.**
# This chapter builds the instrument that says so, `ccoat.cost`, checks it against hand counts
# and against timm's published numbers, and reads it; the next chapter
# ({doc}`05b_measuring`) puts the counts next to measured time.
#
# **Prerequisites**: chapters 1 to 4 (conv-attention, E2LSH, clustering attention, Clustering
# CoaT).
#
# **Learning objectives**
#
# - count the multiply-accumulates (MACs) of every component of a CoaT-Lite block by hand, and
#   check the count against PyTorch's `FlopCounterMode`;
# - see where CoaT-Lite's cost goes, and what share of it the seed's clustering module can
#   touch at all;
# - compare the attention kinds' counted cost, component by component;
# - state the cost model of clustering the queries, and check it against the counts.

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
import matplotlib.pyplot as plt
import pandas as pd
import torch
from torch.utils.flop_counter import FlopCounterMode

import ccoat
from ccoat import cost
from ccoat.plotting import plot_components, set_theme
from ccoat.prose import glue
from ccoat.runfolder import read_run

set_theme()
torch.manual_seed(0)
KINDS = ccoat.ATTENTION_KINDS
print(f"profile: {ccoat.get_profile()}, torch {torch.__version__}")
print(f"attention kinds here: {', '.join(KINDS)}")

# %% [markdown]
# ## Counting one block by hand
#
# A multiply-accumulate (MAC) is one $a \leftarrow a + x\,y$. A matrix product of an
# $m \times k$ by a $k \times n$ matrix takes $mkn$ of them; a convolution takes, for every
# output element, one per input channel of its group and per kernel tap. These are the
# operations that dominate a transformer, and the quantity timm publishes as "GMACs".
#
# Take a block of CoaT-Lite Tiny's first stage at 224 px: a $56 \times 56$ grid ($H = W = 56$),
# $N = 1 + HW$ tokens (with the class token) of $C = 64$ channels, $h = 8$ heads of
# $C_h = C/h = 8$ channels, an MLP of width $8C$. Per component (the weights are random here:
# a count does not depend on them):

# %%
C, heads, ratio, side = 64, 8, 8, 224 // 4
HW, N, Ch, hidden = side * side, 1 + side * side, C // heads, ratio * C
by_hand = {
    "cpe": HW * C * 3 * 3,  # depthwise 3x3 on the grid
    "qkv": N * C * 3 * C,  # (N, C) @ (C, 3C)
    # softmax(k)ᵀ v, then q @ context, per head
    "attention": heads * (Ch * N * Ch + N * Ch * Ch),
    # depthwise 3/5/7 on 2/3/3 heads
    "crpe": HW * Ch * (2 * 3 * 3 + 3 * 5 * 5 + 3 * 7 * 7),
    "proj": N * C * C,
    "mlp": N * C * hidden + N * hidden * C,  # fc1, fc2
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
names = {"macs": "MACs (counted)", "macs_analytic": "MACs (closed form)"}
names |= {"ops": "other operations", "params": "parameters"}
tiny.head(10).rename(columns=names).style.format(
    "{:,.0f}", subset=list(names.values())
)

# %% [markdown]
# The whole model's count can be checked against an independent number: timm's model cards
# {cite:p}`wightman2019timm` give CoaT-Lite Tiny, Mini, Small and Medium as 1.6, 2.0, 4.0 and 9.8
# GMACs at 224 px. The table puts `ccoat.cost`'s count beside them; the largest difference is
# [1.4%](#timm_difference:.1%).

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
assert sizes["difference"].abs().max() < 0.03, "the count should match timm's to 3%"
glue("timm_difference", sizes["difference"].abs().max())
sizes.style.format(
    {
        "ccoat.cost GMACs": "{:.3f}",
        "published GMACs": "{:.1f}",
        "parameters (M)": "{:.2f}",
        "difference": "{:+.1%}",
    }
)

# %% [markdown]
# ## Where CoaT-Lite's cost goes
#
# Each bar is one stage of CoaT-Lite Tiny at 224 px; the segments are its components.

# %%
fig, axes = plt.subplots(1, 3, figsize=(14, 4))
handles = {}  # one legend for the three panels: every component of any of them
for ax, value in zip(axes, ("macs", "ops", "params")):
    plot_components(tiny, value=value, ax=ax)
    for handle, label in zip(*ax.get_legend_handles_labels()):
        handles.setdefault(label, handle)
    ax.get_legend().remove()
fig.legend(
    handles.values(), handles.keys(), loc="center left", bbox_to_anchor=(1, 0.5)
)
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
assert share["mlp"] > 0.5 and query_side < 0.01, (
    "the MLP dominates; q @ context is tiny"
)
glue("mlp_share", share["mlp"])
glue("proj_share", share["qkv"] + share["proj"])
glue("core_share", share["attention"])
glue("query_side", query_side)
glue("crpe_share", share["crpe"])

# %% [markdown]
# The MLP holds **[70%](#mlp_share:.0%)** of CoaT-Lite Tiny's MACs and the qkv and output
# projections **[22%](#proj_share:.0%)**. The attention core — everything the seed's
# module replaces — holds **[1.4%](#core_share:.1%)**, and the query-side product
# $q\,(\mathrm{softmax}(k)^\top v)$, the only part that sees each query separately,
# **[0.7%](#query_side:.1%)**. The CRPE term $q \odot \mathrm{DWConv}(v)$ also needs every
# query ([1.4%](#crpe_share:.1%)). A clustering that cost nothing would save at most
# [0.7%](#query_side:.1%) of CoaT-Lite's MACs.

# %% [markdown]
# ## The attention kinds side by side
#
# The same model with each attention kind and one set of weights: `factorized` (CoaT-Lite),
# `softmax` (exact attention), `clustered` (the seed's module: E2LSH clusters of the queries,
# prototypes attend to all keys with softmax, the result is broadcast back) and
# `clustered_factorized` (prototypes in place of the queries in CoaT's factorized product).
# The clustered kinds form as many clusters as their queries fall into distinct hash buckets,
# so their cost depends on the weights and the images. The weights are trained ones:
# CoaT-Lite Tiny trained on Imagenette at 128 px (the committed run
# `imagenette128_gpu_coat_lite_tiny`, see `results/README.md`), loaded into every kind.
# `cost.audit` runs them on one photo shipped with scikit-learn (`china.jpg`, batch 1), and
# reports, besides the
# MACs, the steps that have almost none — hashing, clustering (a sort), prototypes (a
# scatter-mean) and broadcast (a gather).

# %%
audit_sizes = ccoat.choose(smoke=[224], cpu=[224, 448], gpu=[224, 448])
coat_run = read_run("imagenette128_gpu_coat_lite_tiny", CCOAT_REPO)
models = {}
for kind in KINDS:
    torch.manual_seed(
        1
    )  # one repeatable draw of the clustered kinds' hash projections
    models[kind] = coat_run.load_model(attention=kind)
audits, cluster_info = [], {}
for img_size in audit_sizes:
    for kind, m in models.items():
        table = cost.audit(m, img_size)
        audits.append(table.assign(kind=kind, img_size=img_size))
        cluster_info[(kind, img_size)] = table.attrs["clusters"]
audits = pd.concat(audits, ignore_index=True)

# %%
fig, axes = plt.subplots(2, len(KINDS), figsize=(3.6 * len(KINDS), 7.5), sharey="row")
for col, kind in enumerate(KINDS):
    sel = audits[(audits.kind == kind) & (audits.img_size == 224)]
    plot_components(sel, value="macs", ax=axes[0, col], title=kind)
    plot_components(sel, value="ops", ax=axes[1, col])
    for row in range(2):
        if col < len(KINDS) - 1:
            axes[row, col].get_legend().remove()
fig.suptitle(
    "CoaT-Lite Tiny at 224 px by attention kind: MACs (top) and other "
    "operations (bottom) per stage and component"
)
fig.tight_layout()

# %% [markdown]
# The clustered cores pad every query row to the largest row's number of clusters,
# $K_{\max}$, and their prototype attention multiplies $1 + K_{\max}$ queries per row (the
# class token keeps its own) with all $N$ keys and values: $2(1 + K_{\max}) N C_h$ MACs per
# row. We check the audit's count
# against that formula with the cluster counts it recorded.

# %%
table = audits[(audits.kind == "clustered") & (audits.img_size == 224)]
blocks = cluster_info[("clustered", 224)]
sh = cost.stage_shapes(models["clustered"], 224)[0]
formula = sum(
    2 * (c.rows + c.padded) * sh.tokens * (sh.dim // sh.heads)
    for (stage, _), c in blocks.items()
    if stage == "stage1"
)
is_core = (table.component == "attention") & (table.stage == "stage1")
counted_attention = table[is_core].macs.item()
assert counted_attention == formula, (counted_attention, formula)
per_row = [c.per_row for (stage, _), c in blocks.items() if stage == "stage1"]
assert max(per_row) < sh.image_tokens, (
    "clustering should form fewer clusters than queries"
)
glue("s1_queries", sh.image_tokens)
glue("s1_clusters_low", min(per_row))
glue("s1_clusters_high", max(per_row))
glue("s1_prototype_macs", counted_attention / 1e6)

# %% [markdown]
# In stage 1 at 224 px, the [3136](#s1_queries) image queries of each head fall into
# **[1143](#s1_clusters_low:.0f) to [1449](#s1_clusters_high:.0f)** clusters per row
# (the mean over the 8 heads of each block, lowest and highest block); prototype attention counts
# [1317.8](#s1_prototype_macs:.1f) M MACs, as the formula says.

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
# (cost-model)=
# ## The cost model
#
# The table's two clustered rows differ in what clustering replaces. A short derivation says
# why, and it holds for any image, any number of clusters and any bucket width.
#
# ```{admonition} The cost model
# Take one head of one block: $N$ queries, keys and values of $C_h$ channels, and $K$
# clusters (prototypes) formed among the queries.
#
# *Factorized attention* (CoaT-Lite) computes the context $\mathrm{softmax}(k)^\top v$
# ($N C_h^2$ MACs, over all keys whatever the queries do) and then $q$ times the context,
# $N C_h^2$ MACs. Clustering the queries replaces the second product by the same product on
# $K$ prototypes, so it saves at most
#
# $$\text{saving}_\text{factorized} = (N - K)\, C_h^2 .$$
#
# *E2LSH* multiplies every image query by $L$ random projections before it can
# cluster anything: $HW\, L\, C_h$ MACs for the projections alone (the class token is not
# hashed; $HW = N - 1$). Whenever
# $L \ge C_h$, hashing costs more than the largest possible saving. With ACT's
# $L = 32$ and CoaT-Lite Tiny's first stage, $C_h = 8$:
#
# $$HW \cdot 32 \cdot 8 \;>\; HW \cdot 64 \;\ge\; (N - K) \cdot 64 ,$$
#
# (the last step because a row forms at least one cluster, $K \ge 1$), whatever $K$ or the
# bucket width $r$: clustering the queries of factorized attention cannot
# save MACs there.
#
# *Softmax attention* multiplies every query by all $N$ keys and then by all $N$ values,
# $2 N C_h$ MACs per query. On $K$ prototypes instead of $N$ queries it saves
#
# $$\text{saving}_\text{softmax} = 2\,(N - K)\, N\, C_h ,$$
#
# which grows with $N^2$, while hashing grows with $N$: this is where ACT's clustering pays.
# ```
#
# The counted numbers obey it. Summed over every block and head of CoaT-Lite Tiny at 224 px,
# clustering the queries of factorized attention saves
# [2.1](#cm_factorized_saving:.1f) M MACs (it could save at most
# [10.9](#cm_factorized_most:.1f) M, the whole query-side product) and its hashing costs
# [23.5](#cm_hashing:.1f) M. In softmax attention the same clustering saves
# [1255](#cm_softmax_saving:.0f) M MACs, [53](#softmax_saving_x:.0f) times its
# hashing.

# %%
counts = {kind: cost.macs(m, 224) for kind, m in models.items()}
hashing = counts["clustered_factorized"]["hashing"]
assert hashing == counts["clustered"]["hashing"], "both kinds hash the same queries"
saving_factorized = (
    counts["factorized"]["attention"] - counts["clustered_factorized"]["attention"]
)
most = counts["factorized"]["attention"] / 2  # q @ context: half of the core
saving_softmax = counts["softmax"]["attention"] - counts["clustered"]["attention"]
assert saving_factorized <= most < hashing, (
    "hashing exceeds the largest possible saving"
)
assert saving_softmax > 10 * hashing, "in softmax attention the saving dwarfs hashing"
glue("cm_factorized_saving", saving_factorized / 1e6)
glue("cm_factorized_most", most / 1e6)
glue("cm_hashing", hashing / 1e6)
glue("cm_softmax_saving", saving_softmax / 1e6)
glue("softmax_saving_x", saving_softmax / hashing)

# %% [markdown]
# The same holds stage by stage where $C_h \le L$. CoaT-Lite Tiny's heads have
# $C_h$ = 8, 16, 32 and 40 channels in its four stages; in stage 4, where $C_h = 40$, the
# bound allows a saving larger than the hashing, but that stage has only
# [50](#s4_tokens) tokens. In one block of stage 1, hashing costs
# [6.42](#block_hashing:.2f) M MACs, and clustering saves [0.77](#block_saving:.2f) M
# of the [1.61](#block_most:.2f) M that $q$ times the context costs. The cell below
# checks, on the audit's counts, that hashing costs more than clustering saves in every
# stage where $C_h \le L$ (at $C_h = L$, hashing the $HW$ image
# queries costs $HW\,C_h^2$ and clustering them saves at most $(HW - K)\,C_h^2$; the class
# token is neither hashed nor clustered).


# %%
def stage_macs(kind: str, component: str):
    sel = audits[(audits.kind == kind) & (audits.img_size == 224)]
    return sel[sel.component == component].groupby("stage").macs.sum()


shapes = cost.stage_shapes(model, 224)
factorized_core = stage_macs("factorized", "attention")
saved = factorized_core - stage_macs("clustered_factorized", "attention")
hashed = stage_macs("clustered_factorized", "hashing")
for sh in shapes:
    if sh.dim // sh.heads <= 32:  # C_h <= n_hashes
        assert hashed[sh.name] > saved[sh.name], f"{sh.name}: hashing > saving"
glue("s4_tokens", shapes[3].tokens)
depth = shapes[0].depth  # one block of stage 1: the stage's count over its blocks
glue("block_hashing", hashed["stage1"] / depth / 1e6)
glue("block_saving", saved["stage1"] / depth / 1e6)
glue("block_most", factorized_core["stage1"] / 2 / depth / 1e6)
names = [sh.name for sh in shapes]
pd.DataFrame(
    {
        "C_h": [sh.dim // sh.heads for sh in shapes],
        "tokens N": [sh.tokens for sh in shapes],
        "hashing (M MACs)": hashed[names].to_numpy() / 1e6,
        "saving (M MACs)": saved[names].to_numpy() / 1e6,
    },
    index=names,
).round(2)

# %% [markdown]
# ## Summary
#
# - A MAC count is exact and cheap: `FlopCounterMode` counts matrix products and convolutions
#   per module, closed forms give the same numbers, and the whole-model count is within
#   [1.4%](#timm_difference:.1%) of timm's published GMACs.
# - In CoaT-Lite Tiny at 224 px the MLP holds [70%](#mlp_share:.0%) of the MACs and the
#   projections [22%](#proj_share:.0%); the attention core, already linear in $N$, holds
#   [1.4%](#core_share:.1%), and the query-side product that clustering the queries can
#   shrink [0.7%](#query_side:.1%).
# - {ref}`The cost model <cost-model>`: clustering the queries of factorized attention saves at
#   most $(N-K)\,C_h^2$ per head, less than E2LSH's $N\,L\,C_h$ whenever
#   $L \ge C_h$; counted, it saves [2.1](#cm_factorized_saving:.1f) M MACs
#   for [23.5](#cm_hashing:.1f) M of hashing. In softmax attention it saves
#   $2(N-K)\,N\,C_h$, [53](#softmax_saving_x:.0f) times its hashing at 224 px.
# - Counted cost is not time: {doc}`05b_measuring` measures it.
#
# ## Exercises
#
# 1. Using the closed forms in `help(ccoat.cost.analytic_costs)`, find the resolution at which
#    softmax attention's MACs in stage 1 equal those of the stage's MLP.
# 2. From the cost model, how many hashes at most could E2LSH use for clustering the queries
#    of stage 1's factorized attention to save MACs at all? Check it by counting the trained
#    model as `clustered_factorized` with `n_hashes=4`.
# 3. Suppose every query row of every block formed exactly 64 clusters. Pass
#    `cost.analytic_costs` a `clusters` dictionary of `cost.BlockClusters(total=8 * 64,
#    padded=8 * 64, before_cap=8 * 64, rows=8)` per `(stage, block)`: what share of softmax
#    attention's MACs in the attention core at 1024 px does the clustered core need then?

# %% tags=["hide-input"]
# Exercise 1: per block, softmax attention (2·N²·C) = the MLP (2·N·C·8C) at N = 8C.
equal_tokens = 8 * C
equal_px = 4 * (equal_tokens - 1) ** 0.5  # N = 1 + (px / 4)²
softmax_model = models["softmax"]
s1 = {}
for px in (64, 96):  # inputs are multiples of 32
    t = cost.audit(softmax_model, px)
    t = t[t.stage == "stage1"].set_index("component").macs
    s1[px] = t["attention"] / t["mlp"]
assert s1[64] < 1 < s1[96], s1
glue("ex1_tokens", equal_tokens)
glue("ex1_px", equal_px)
glue("ex1_ratio_64", s1[64])
glue("ex1_ratio_96", s1[96])

# %% [markdown]
# ```{admonition} Solution to exercise 1
# :class: dropdown
# Per block, softmax attention costs $2N^2C$ MACs ($q k^\top$, then the scores times $v$) and
# the MLP $2NC \cdot 8C$. They are equal when $N = 8C$ = [512](#ex1_tokens) tokens, that is
# $1 + (\text{px}/4)^2 = 512$: about [90](#ex1_px:.0f) px. CoaT-Lite takes multiples of
# 32: at 64 px stage 1's softmax attention is [0.50](#ex1_ratio_64:.2f) times its MLP, at
# 96 px [1.13](#ex1_ratio_96:.2f) times; from 96 px on, attention costs more.
# ```

# %% tags=["hide-input"]
# Exercise 2: (N - K)·C_h² > N·n_hashes·C_h needs n_hashes < C_h·(N - K)/N < C_h = 8.
torch.manual_seed(1)
few = coat_run.load_model(attention="clustered_factorized", n_hashes=4)
few_macs = cost.macs(few, 224)
few_saving = counts["factorized"]["attention"] - few_macs["attention"]
assert few_macs["hashing"] < few_saving, "with 4 hashes, clustering should save MACs"
assert few_macs["total"] < counts["factorized"]["total"], "and the whole pass too"
glue("ex2_hashing", few_macs["hashing"] / 1e6)
glue("ex2_saving", few_saving / 1e6)
glue("ex2_total", 1 - few_macs["total"] / counts["factorized"]["total"])

# %% [markdown]
# ```{admonition} Solution to exercise 2
# :class: dropdown
# Hashing costs $N\,L\,C_h$ per head and the saving is at most $(N-K)\,C_h^2$,
# so a saving needs $L < C_h\,(N-K)/N$, below $C_h = 8$: seven hashes at most,
# and fewer the more clusters form. With 4 hashes the counted hashing is
# [2.9](#ex2_hashing:.1f) M MACs and the saving [7.3](#ex2_saving:.1f) M: the pass
# needs [0.28%](#ex2_total:.2%) fewer MACs than CoaT-Lite's. Fewer hashes make coarser
# buckets, so the clusters mix less similar queries: the saving is real and tiny, and what it
# does to accuracy is another question.
# ```

# %% tags=["hide-input"]
# Exercise 3: 64 clusters in each of the 8 rows (batch 1 x 8 heads) of every block.
row64 = cost.BlockClusters(total=8 * 64, padded=8 * 64, before_cap=8 * 64, rows=8)
clustered = models["clustered"]
every_block = {
    (sh.name, b): row64
    for sh in cost.stage_shapes(clustered, 1024)
    for b in range(sh.depth)
}
with_64 = cost.analytic_costs(clustered, 1024, clusters=every_block)
exact = cost.analytic_costs(models["softmax"], 1024)


def attention_macs(costs):
    return sum(v["macs"] for (comp, _), v in costs.items() if comp == "attention")


ex3_share = attention_macs(with_64) / attention_macs(exact)
assert ex3_share < 0.01, ex3_share
glue("ex3_share", ex3_share)

# %% [markdown]
# ```{admonition} Solution to exercise 3
# :class: dropdown
# Prototype attention then multiplies $1 + 64$ queries per row with all $N$ keys and values,
# against $N$ queries for softmax attention: at 1024 px stage 1 has $N$ = 65,537 tokens, so
# the ratio there is $65/65537$. Over all stages clustered attention's core needs
# [0.16%](#ex3_share:.2%) of softmax attention's MACs (the hashing comes on top).
# ```
