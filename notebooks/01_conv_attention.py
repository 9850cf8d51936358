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
# # Conv-attention from scratch
#
# CoaT {cite:p}`xu2021coat` replaces the attention of a vision transformer with
# *conv-attention*: a factorized attention that is linear in the number of tokens, plus two
# depthwise convolutions that give the model a sense of position. Clustering CoaT changes only
# the attention part of this module, so we first build the whole module by hand.
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

from ccoat.plotting import KIND_COLORS, glue, set_theme

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
# Relative difference between factorized and softmax attention on these random tokens:
# **{glue:text}`rel:.2f`** — a different operator, not an approximation.

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
# blocks, head) independently of timm's implementation. Loading timm's weights into it must
# give timm's logits.

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
# CoaT-Lite Tiny: {glue:text}`params_m:.2f` M parameters in both; the largest difference
# between ccoat's and timm's logits is **{glue:text}`gap:.1e`** (float32).

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


cores = {"factorized": ca.factorized_attention, "softmax": ca.softmax_attention}
rows = []
with torch.no_grad():
    for side in sides:
        n = side * side + 1
        qq, kk, vv = torch.randn(3, 1, heads, n, Ch).unbind(0)
        times = measure.medians(
            measure.alternate(
                {kind: lambda fn=fn: fn(qq, kk, vv) for kind, fn in cores.items()},
                repeats,
                warmup=1,
            )
        )
        for kind, fn in cores.items():
            macs = counted_macs(fn, qq, kk, vv)
            rows.append(dict(kind=kind, N=n, macs=macs, seconds=times[kind]))

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
    axes[1].loglog(
        n, [r["seconds"] * 1e3 for r in sel], "o-", color=KIND_COLORS[kind], label=kind
    )
axes[0].set(xlabel="tokens N", ylabel="MACs (counted)", title="Counted cost")
axes[1].set(
    xlabel="tokens N",
    ylabel="time per call (ms, median)",
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

# %% [markdown]
# At $N$ = {glue:text}`n_last` tokens the counted cost of softmax attention is
# **{glue:text}`macs_ratio:.0f`×** that of factorized attention and its measured time
# **{glue:text}`time_ratio:.1f`×**. Measured times bend away from the counts at small $N$,
# where fixed per-call overheads dominate: a FLOP count is a model of time, not a
# measurement of it.

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
# 1. Show that `factorized_attention` equals softmax attention when every key is the same
#    vector. What does the output become?
# 2. Replace the CRPE windows `{3: 2, 5: 3, 7: 3}` with `{3: 8}`. How many parameters does a
#    stage's CRPE lose?
# 3. At what $N$ does softmax attention's counted cost pass that of one $C \times 4C$ MLP layer
#    applied to every token, for $C = 64$?
# 4. Time `factorized_attention` for $C_h = 8, 32, 64$ at fixed $N$. Is the growth quadratic in
#    $C_h$ on your machine?
