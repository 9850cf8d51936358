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
# # Conv-attention from scratch
#
# CoaT {cite:p}`xu2021coat` replaces the attention of a vision transformer with
# *conv-attention*: a factorized attention that is linear in the number of tokens, plus two
# depthwise convolutions that give the model a sense of position. Clustering CoaT changes only
# the attention part of this module, so we first build the whole module by hand. The chapter's
# answer, which the rest of the book leans on: CoaT's attention is already *linear* in the
# number of tokens, so there is little attention work left for clustering to save.
#
# **Prerequisites.** PyTorch tensors and modules; the attention of a transformer
# {cite:p}`vaswani2017attention`.
#
# **Learning objectives**
#
# - write factorized attention, the conv relative position encoding (CRPE) and the conv
#   position encoding (CPE) in plain PyTorch, with the shape of every tensor;
# - check each piece against `ccoat`'s version, and `ccoat`'s whole CoaT-Lite against timm's;
# - see why factorized attention costs $O(N C^2)$ while softmax attention costs $O(N^2 C)$,
#   counted and timed.

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
from ccoat import attention as ca
from ccoat import measure

import matplotlib.pyplot as plt
import timm
import torch
import torch.nn.functional as F

from ccoat.plotting import KIND_COLORS, set_theme
from ccoat.prose import glue

set_theme()
torch.manual_seed(0)
PROFILE = ccoat.get_profile()
print(f"profile: {PROFILE}, torch {torch.__version__}, timm {timm.__version__}")

# %% [markdown]
# ## Tokens, heads and the class token
#
# A CoaT stage sees an image as an $H \times W$ grid of $C$-dimensional tokens, with one learned
# *class token* in front: $N = 1 + HW$ tokens. Attention splits the channels into $h$ heads of
# $C_h = C/h$ channels. We take the first stage of CoaT-Lite at 224 px: a $56 \times 56$ grid of
# 64 channels and 8 heads.

# %%
B, C, heads, H, W = 2, 64, 8, 56, 56
N, Ch = 1 + H * W, C // heads
# (B, N, C): class token first, then the grid in row-major order
x = torch.randn(B, N, C)
qkv = torch.nn.Linear(C, 3 * C)
# each (B, heads, N, C_h)
q, k, v = qkv(x).reshape(B, N, 3, heads, Ch).permute(2, 0, 3, 1, 4)
print("q, k, v:", tuple(q.shape))

# %% [markdown]
# ## Factorized attention
#
# Softmax attention forms the $N \times N$ map $\mathrm{softmax}(q k^\top / \sqrt{C_h})$ and
# multiplies it with $v$. CoaT instead applies the softmax to the **keys alone**, over the
# tokens, and multiplies in the other order:
#
# $$\mathrm{FactorAtt}(q, k, v) = \frac{1}{\sqrt{C_h}}\; q \,\big(\mathrm{softmax}_N(k)^\top v\big).$$
#
# The bracket is a $C_h \times C_h$ matrix — a summary of all values, weighted by the keys —
# and every query reads from that summary. Nothing of size $N \times N$ is ever formed.


# %%
def factorized_attention(q, k, v):
    # (B, heads, C_h, C_h): one summary per head
    context = k.softmax(dim=2).transpose(-1, -2) @ v
    return (q @ context) * Ch**-0.5  # (B, heads, N, C_h)


out = factorized_attention(q, k, v)
torch.testing.assert_close(out, ca.factorized_attention(q, k, v))
print("factorized attention matches ccoat:", tuple(out.shape))

# %% [markdown]
# It is **not** softmax attention computed a cheaper way: the two give different outputs. The
# softmax over tokens of $k$ makes each channel of the key a distribution over positions,
# and the query then mixes those channel summaries linearly.

# %%
exact = F.scaled_dot_product_attention(q, k, v)
glue("rel", ((out - exact).norm() / exact.norm()).item())

# %% [markdown]
# Relative difference between the two outputs on these random tokens,
# $\lVert \mathrm{FactorAtt} - \mathrm{softmax} \rVert / \lVert \mathrm{softmax} \rVert$:
# **[1.10](#rel:.2f)** — a different operator, not an approximation.

# %% [markdown]
# ## Conv relative position encoding (CRPE)
#
# Factorized attention alone is blind to where tokens are. CoaT adds
# $\mathrm{CRPE}(q, v) = q \odot \mathrm{DWConv}(v)$: a depthwise convolution of the values over
# the image grid, multiplied elementwise by the query. Different heads use different windows:
# 2 heads a $3\times3$ window, 3 heads $5\times5$, 3 heads $7\times7$. The class token is not on
# the grid, so its row is zero.

# %%
windows = {3: 2, 5: 3, 7: 3}  # window -> number of heads
convs = torch.nn.ModuleList(
    torch.nn.Conv2d(n * Ch, n * Ch, w, padding=w // 2, groups=n * Ch)
    for w, n in windows.items()
)


def crpe(q, v, size):
    H, W = size
    # (B, heads*C_h, H, W)
    v_img = v[:, :, 1:].transpose(-1, -2).reshape(B, heads * Ch, H, W)
    # one part per window
    parts = v_img.split([n * Ch for n in windows.values()], dim=1)
    conv_v = torch.cat([conv(p) for conv, p in zip(convs, parts)], dim=1)
    # (B, heads, H*W, C_h)
    conv_v = conv_v.reshape(B, heads, Ch, H * W).transpose(-1, -2)
    return F.pad(q[:, :, 1:] * conv_v, (0, 0, 1, 0))  # zero row for the class token


# %%
library_crpe = ca.ConvRelPosEnc(Ch, heads, windows)
library_crpe.load_state_dict(
    {
        f"convs.{i}.{p}": getattr(c, p)
        for i, c in enumerate(convs)
        for p in ("weight", "bias")
    }
)
torch.testing.assert_close(crpe(q, v, (H, W)), library_crpe(q, v, (H, W)))
print(
    "CRPE matches ccoat; class-token row is zero:",
    bool((crpe(q, v, (H, W))[:, :, 0] == 0).all()),
)

# %% [markdown]
# ## Conv position encoding (CPE)
#
# Before attention, each block adds a $3\times3$ depthwise convolution of the image tokens to
# themselves. All blocks of a stage share one CPE and one CRPE.

# %%
cpe_conv = torch.nn.Conv2d(C, C, 3, padding=1, groups=C)


def cpe(x, size):
    cls_token, img = x[:, :1], x[:, 1:]
    feat = img.transpose(1, 2).reshape(B, C, *size)  # (B, C, H, W)
    feat = feat + cpe_conv(feat)
    return torch.cat([cls_token, feat.flatten(2).transpose(1, 2)], dim=1)


library_cpe = ca.ConvPosEnc(C)
library_cpe.proj.load_state_dict(cpe_conv.state_dict())
torch.testing.assert_close(cpe(x, (H, W)), library_cpe(x, (H, W)))
print("CPE matches ccoat")

# %% [markdown]
# ## The conv-attention module
#
# Put together: project to $q, k, v$, take factorized attention plus CRPE, project back.
# `ccoat.attention.ConvAttention` is exactly this, with the attention *core* as a swappable
# part (the later chapters put clustered attention there).

# %%
proj = torch.nn.Linear(C, C)


def conv_attention(x, size):
    q, k, v = qkv(x).reshape(B, N, 3, heads, Ch).permute(2, 0, 3, 1, 4)
    out = factorized_attention(q, k, v) + crpe(q, v, size)  # (B, heads, N, C_h)
    return proj(out.transpose(1, 2).reshape(B, N, C))


module = ca.ConvAttention(C, heads)
module.qkv.load_state_dict(qkv.state_dict())
module.proj.load_state_dict(proj.state_dict())
torch.testing.assert_close(conv_attention(x, (H, W)), module(x, (H, W), library_crpe))
print("conv-attention matches ccoat.attention.ConvAttention")

# %% [markdown]
# ## The whole CoaT-Lite, against timm
#
# `ccoat` assembles these modules into CoaT-Lite (patch embeddings, class tokens, serial
# blocks, head) independently of timm's implementation: four stages, each a strided patch
# embedding that shrinks the grid and widens the channels, then serial blocks of
# conv-attention and MLP; the last stage's class token feeds the head.
#
# ```{figure} /figures/coat_lite_pyramid.svg
# :name: fig-coat-lite-pyramid
# :alt: CoaT-Lite Tiny at 224 px: image, four stages (patch embedding, serial blocks), maps 56x56 to 7x7, class token, head.
# :width: 100%
#
# CoaT-Lite Tiny at 224 px (the seed's Figure 1), read from `ccoat.create_model("coat_lite_tiny")`
# by `book/figures/make_diagrams.py`.
# ```
#
# Loading timm's weights into it must give timm's logits.

# %%
reference = timm.create_model("coat_lite_tiny").eval()
model = ccoat.load_timm_weights(ccoat.create_model("coat_lite_tiny"), reference).eval()
images = torch.randn(2, 3, 224, 224)
with torch.no_grad():
    gap = (model(images) - reference(images)).abs().max().item()
assert gap <= 1e-5
glue("params_m", sum(p.numel() for p in model.parameters()) / 1e6)
glue("gap", gap)

# %% [markdown]
# CoaT-Lite Tiny: [5.72](#params_m:.2f) M parameters in both; the largest difference
# between ccoat's and timm's logits is **[9.5e-07](#gap:.1e "live")** (float32).

# %% [markdown]
# ## Why factorized attention is linear in $N$
#
# Per head, softmax attention multiplies $N \times C_h$ by $C_h \times N$ and $N \times N$ by
# $N \times C_h$: $2 N^2 C_h$ multiply-accumulates (MACs). Factorized attention multiplies
# $C_h \times N$ by $N \times C_h$ and $N \times C_h$ by $C_h \times C_h$: $2 N C_h^2$ MACs.
# With $C_h = 8$ in CoaT-Lite's first stage, softmax attention is $N / C_h$ times as costly.
# We count both with PyTorch's `FlopCounterMode` (which reports FLOPs, 2 per MAC), through
# `ccoat.cost.flop_counter`, which adds the formula for the fused attention kernels that some
# torch versions count as 0, and time them on this machine with `ccoat.measure.alternate`
# (the two in turn, round after round, the timer every comparison in this book uses), for
# stage-1 grids of growing images.

# %%
sides = ccoat.choose(
    smoke=[8, 16, 32], cpu=[8, 16, 32, 48, 64], gpu=[8, 16, 32, 48, 64, 96]
)
repeats = ccoat.choose(smoke=2, cpu=5, gpu=10)


def counted_macs(fn, *args):
    with ccoat.cost.flop_counter() as counter:
        fn(*args)
    return counter.get_total_flops() / 2


# %%
cores = {"factorized": ca.factorized_attention, "softmax": ca.softmax_attention}
rows = []
with torch.no_grad():
    for side in sides:
        n = side * side + 1
        qq, kk, vv = torch.randn(3, 1, heads, n, Ch).unbind(0)
        times = measure.alternate(
            {kind: lambda fn=fn: fn(qq, kk, vv) for kind, fn in cores.items()},
            repeats,
            warmup=1,
        )
        for kind, fn in cores.items():
            t = torch.tensor(times[kind])
            macs = counted_macs(fn, qq, kk, vv)
            rows.append(
                dict(
                    kind=kind,
                    N=n,
                    macs=macs,
                    seconds=t.median().item(),
                    low=t.min().item(),
                    high=t.max().item(),
                )
            )

# %%
# The counter sees the two matrix products; check them against the formulas above.
for r in rows:
    formula = 2 * heads * r["N"] * Ch * (Ch if r["kind"] == "factorized" else r["N"])
    assert r["macs"] == formula, (r, formula)
print("counted MACs equal 2·h·N·C_h² (factorized) and 2·h·N²·C_h (softmax) at every N")

# %%
fig, axes = plt.subplots(1, 2, figsize=(10, 4))
for kind in ("factorized", "softmax"):
    sel = [r for r in rows if r["kind"] == kind]
    n = [r["N"] for r in sel]
    axes[0].loglog(
        n, [r["macs"] for r in sel], "o-", color=KIND_COLORS[kind], label=kind
    )
    ms = [r["seconds"] * 1e3 for r in sel]
    spread = [
        [m - r["low"] * 1e3 for m, r in zip(ms, sel)],
        [r["high"] * 1e3 - m for m, r in zip(ms, sel)],
    ]
    axes[1].errorbar(n, ms, yerr=spread, fmt="o-", color=KIND_COLORS[kind], capsize=3)
    axes[1].set(xscale="log", yscale="log")
axes[0].set(xlabel="tokens N", ylabel="MACs (counted)", title="Counted cost")
axes[1].set(
    xlabel="tokens N",
    ylabel="time per call (ms): median, range",
    title="Measured time, CPU" if not torch.cuda.is_available() else "Measured time",
)
axes[0].legend()
fig.suptitle("Attention core alone, 8 heads of 8 channels, batch 1")
fig.tight_layout()

# %%
last = {r["kind"]: r for r in rows if r["N"] == max(x["N"] for x in rows)}
glue("n_last", last["softmax"]["N"])
glue("macs_ratio", last["softmax"]["macs"] / last["factorized"]["macs"])
glue("time_ratio", last["softmax"]["seconds"] / last["factorized"]["seconds"])
glue("repeats", repeats)

# %% [markdown]
# At $N$ = [4097](#n_last "live") tokens the counted cost of softmax attention is
# **[512](#macs_ratio:.0f "live")×** that of factorized attention and its measured time
# **[305.8](#time_ratio:.1f "live")×** on the machine that built this page. The counts are exact;
# the times are a live measurement ([5](#repeats "live") alternated rounds; the bars show the
# fastest and the slowest), and on a busy machine a point can jump by several times, so read
# the times for their trend only. They bend away from the counts at small $N$, where fixed
# per-call overheads dominate: a MAC count is a model of time, not a measurement of it.

# %% [markdown]
# ## Summary
#
# - Conv-attention is `proj(FactorAtt(q, k, v) + q ⊙ DWConv(v))`, after a CPE
#   `x + DWConv(x)`; the class token joins attention but not the convolutions.
# - Factorized attention summarises all values in a $C_h \times C_h$ matrix per head, so its
#   cost grows linearly with the number of tokens; softmax attention grows quadratically.
# - `ccoat`'s modules agree with the hand-written ones, and its CoaT-Lite reproduces timm's
#   logits from timm's weights.
#
# This matters for Clustering CoaT: clustering queries saves work in proportion to the work done
# *per query*. In factorized attention that work is one $C_h \times C_h$ product per query — the
# next chapters measure how much clustering can save there, and where it saves more.
#
# ## Exercises
#
# 1. Let every key be the same vector. What do softmax attention and `factorized_attention`
#    return then, and when do the two agree?
# 2. Replace the CRPE windows `{3: 2, 5: 3, 7: 3}` with `{3: 8}`. How many parameters does the
#    CRPE of a stage with $C_h = 8$ lose?
# 3. At what $N$ does softmax attention's counted cost pass that of one $C \times 4C$ MLP layer
#    applied to every token, for $C = 64$?
# 4. Count `factorized_attention`'s MACs for $C_h = 8, 32, 64$ at fixed $N$. How does the cost
#    grow with $C_h$? Then time it on your machine, with its spread.

# %% tags=["hide-input"]
# Exercise 1: identical keys.
q1, v1 = torch.randn(1, 1, 5, 8), torch.randn(1, 1, 5, 8)
k1 = torch.randn(1, 1, 1, 8).expand(1, 1, 5, 8)
mean_v = v1.mean(dim=2, keepdim=True)
torch.testing.assert_close(ca.softmax_attention(q1, k1, v1), mean_v.expand_as(v1))
scaled_sum = q1.sum(dim=-1, keepdim=True) * 8**-0.5
torch.testing.assert_close(ca.factorized_attention(q1, k1, v1), scaled_sum * mean_v)
# Exercise 2: the parameters of a stage's CRPE, 8 heads of C_h = 8.
params = {
    str(w): sum(p.numel() for p in ca.ConvRelPosEnc(8, 8, w).parameters())
    for w in ({3: 2, 5: 3, 7: 3}, {3: 8})
}
lost = params["{3: 2, 5: 3, 7: 3}"] - params["{3: 8}"]
assert lost == 8 * (2 * 9 + 3 * 25 + 3 * 49 - 8 * 9)
glue("crpe_lost", lost)
# Exercise 3: 2·N²·C (softmax, all heads) > N·C·4C (one MLP layer) from N > 2C.
c = 64
crossing = min(n for n in range(1, 1000) if 2 * n * n * c > n * c * 4 * c)
glue("crossing", crossing)
# Exercise 4: counted MACs at N = 257 for three head widths.
counts_ch = {
    ch: counted_macs(ca.factorized_attention, *torch.randn(3, 1, 1, 257, ch).unbind(0))
    for ch in (8, 32, 64)
}
assert counts_ch[64] / counts_ch[8] == 64
glue("ch_ratio", counts_ch[64] / counts_ch[8])

# %% [markdown]
# ```{admonition} Solution to exercise 1
# :class: dropdown
# With identical keys every score $q \cdot k$ of one query is the same, so softmax attention
# averages the values: every query gets $\bar v$. Factorized attention takes the softmax over
# the tokens of each key channel, which is uniform too, so $\operatorname{softmax}(k)^\top v$
# has $\bar v$ in every row, and query $q$ gets $(\sum_c q_c / \sqrt{C_h})\,\bar v$. The two
# agree only for queries whose scaled channel sum is 1: factorized attention is not softmax
# attention, even in this limit (the code cell above checks both formulas).
# ```
#
# ```{admonition} Solution to exercise 2
# :class: dropdown
# A depthwise $w \times w$ convolution over one head's $C_h$ channels has $C_h w^2$ weights
# (the biases stay). The windows `{3: 2, 5: 3, 7: 3}` have $8 (2 \cdot 9 + 3 \cdot 25 + 3
# \cdot 49) = 1920$ weights, `{3: 8}` have $8 \cdot 8 \cdot 9 = 576$: the stage loses
# [1344](#crpe_lost) parameters.
# ```
#
# ```{admonition} Solution to exercise 3
# :class: dropdown
# Softmax attention counts $2 N^2 C$ MACs over all heads ($2 h N^2 C_h$ with $h C_h = C$);
# a $C \times 4C$ layer on $N$ tokens counts $4 N C^2$. The first is larger once $N > 2C$:
# from $N$ = [129](#crossing) tokens for $C = 64$; the smallest square grid past it is
# 12 × 12 ($N$ = 145 with the class token).
# ```
#
# ```{admonition} Solution to exercise 4
# :class: dropdown
# Counted, $2 N C_h^2$ per head: going from $C_h = 8$ to 64 multiplies the count by
# [64](#ch_ratio:.0f), quadratic. Timed, small matrices run far from the machine's
# peak, so the measured growth is usually less than quadratic until $C_h$ is large; time it
# with `ccoat.measure.alternate` and report the median and the range.
# ```
