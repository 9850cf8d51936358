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
# # Locality-sensitive hashing from scratch
#
# Clustering CoaT groups similar queries before attention, as ACT {cite:p}`zheng2021act` does,
# and it finds the groups with *locality-sensitive hashing* (LSH): a random function that gives
# nearby points the same value more often than distant ones. No pairwise distances are computed;
# each point is hashed once, and points with equal hashes form a cluster. This chapter builds
# the hash family ACT uses, E2LSH {cite:p}`datar2004e2lsh`, by hand. What to take from it:
# the number of clusters is not chosen but found, and it is set by the bucket width $r$ and
# the number of hashes together.
#
# **Prerequisites.** Chapter 1 (queries, heads); the normal distribution.
#
# **Learning objectives**
#
# - write the E2LSH hash $h(x) = \lfloor (a \cdot x + b)/r \rfloor$ in plain PyTorch;
# - compare the collision probability of two points against their distance with the closed
#   form of Datar et al., and measure it;
# - see what the bucket width $r$ and the number of hashes do to the clusters;
# - turn tuples of codes into cluster ids without collisions, and check `ccoat.hashing`
#   against the hand-written version.

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
from ccoat import hashing

import math

import matplotlib.pyplot as plt
import torch

from ccoat.plotting import set_theme
from ccoat.prose import glue

set_theme()
torch.manual_seed(0)
PROFILE = ccoat.get_profile()
print(f"profile: {PROFILE}, torch {torch.__version__}")

# %% [markdown]
# ## One hash function
#
# E2LSH projects a point $x \in \mathbb{R}^d$ on a random direction $a \sim \mathcal{N}(0, I)$,
# shifts it by a random offset $b \sim U[0, r)$, and cuts the line into buckets of width $r$:
#
# $$h(x) = \left\lfloor \frac{a \cdot x + b}{r} \right\rfloor .$$
#
# Two points land in the same bucket when their projections are close *and* no bucket border
# falls between them. Drawn in the plane, one hash function paints parallel stripes.


# %%
def e2lsh(x, a, b, r):
    """x: (M, d), a: (d, n), b: (n,) -> integer codes (M, n)."""
    return torch.floor((x @ a + b) / r).long()


d, r = 2, 1.0
a, b = torch.randn(d, 1), torch.rand(1) * r
grid = torch.stack(
    torch.meshgrid(
        torch.linspace(-3, 3, 300), torch.linspace(-3, 3, 300), indexing="xy"
    ),
    dim=-1,
).reshape(-1, 2)  # (90000, 2)
codes = e2lsh(grid, a, b, r)
print("bucket codes on the grid:", codes.min().item(), "to", codes.max().item())

# %% [markdown]
# With several hash functions a point's code is a tuple, one integer per function, and the
# points that share the whole tuple form a cell: the stripes of all functions intersected.

# %%
n_show = 3
a3, b3 = torch.randn(d, n_show), torch.rand(n_show) * r
codes3 = e2lsh(grid, a3, b3, r)
_, cell = torch.unique(codes3, dim=0, return_inverse=True)

fig, axes = plt.subplots(1, 2, figsize=(10, 4.5))
for ax, values, title in [
    (axes[0], codes[:, 0], "one hash: stripes"),
    (axes[1], cell, f"{n_show} hashes: cells"),
]:
    ax.imshow(
        (values % 9).reshape(300, 300).numpy(),
        extent=(-3, 3, -3, 3),
        origin="lower",
        cmap="tab10",
        interpolation="nearest",
    )
    ax.set(xlabel="$x_1$", ylabel="$x_2$", title=title)
    ax.grid(False)
fig.suptitle(f"E2LSH buckets in the plane, bucket width r = {r}")
fig.tight_layout()

# %% [markdown]
# ## Collision probability against distance
#
# Because $a$ is Gaussian, $a \cdot x - a \cdot y \sim \mathcal{N}(0, c^2)$ for two points at
# distance $c = \lVert x - y \rVert$ (the Gaussian is *2-stable*). Averaging over the offset
# $b$, Datar et al. find the probability that one hash function gives both points the same code:
#
# $$p(c) = 1 - 2\,\Phi(-r/c) - \frac{2}{\sqrt{2\pi}\, r/c}\left(1 - e^{-r^2/(2c^2)}\right),$$
#
# with $\Phi$ the standard normal CDF. It depends only on $c/r$: the bucket width is the unit
# of distance. We measure it: pairs at a set distance in $d = 8$ dimensions (CoaT-Lite's
# first-stage head size), each hashed by many independent functions.


# %%
def collision_probability(c_over_r):
    """Datar et al. (2004), Gaussian E2LSH: P[h(x) = h(y)] at distance c, width r."""
    s = 1.0 / torch.as_tensor(c_over_r, dtype=torch.float64)  # r / c
    Phi = torch.special.ndtr(-s)
    return (
        1 - 2 * Phi - 2 / (math.sqrt(2 * math.pi) * s) * (1 - torch.exp(-(s**2) / 2))
    )


def measured_collision(c, r, d=8, n_pairs=None, n_functions=None):
    n_pairs = n_pairs or ccoat.choose(smoke=200, cpu=2000, gpu=5000)
    n_functions = n_functions or ccoat.choose(smoke=200, cpu=500, gpu=1000)
    x = torch.randn(n_pairs, d) * 3
    u = torch.randn(n_pairs, d)
    y = x + c * u / u.norm(dim=1, keepdim=True)  # exactly at distance c
    a, b = torch.randn(d, n_functions), torch.rand(n_functions) * r
    return (e2lsh(x, a, b, r) == e2lsh(y, a, b, r)).double().mean().item()


# %%
ratios = torch.tensor(
    ccoat.choose(
        smoke=[0.1, 0.5, 1, 2, 4],
        cpu=[0.05, 0.1, 0.25, 0.5, 0.75, 1, 1.5, 2, 3, 4, 6],
        gpu=[0.05, 0.1, 0.25, 0.5, 0.75, 1, 1.5, 2, 3, 4, 6, 8],
    )
)
measured = torch.tensor(
    [measured_collision(float(c), r=1.0) for c in ratios], dtype=torch.float64
)
closed = collision_probability(ratios)
worst = (measured - closed).abs().max().item()
print(
    f"largest gap between measured and closed-form collision probability: {worst:.3f}"
)

# %%
fine = torch.logspace(-2.5, math.log10(float(ratios.max())), 300)
fig, ax = plt.subplots()
ax.plot(fine, collision_probability(fine), label="closed form (Datar et al. 2004)")
ax.plot(ratios, measured, "o", label="measured, d = 8")
ax.set(
    xlabel="distance / bucket width  (c / r)",
    ylabel="P[same code], one hash",
    title="E2LSH collision probability",
)
ax.legend()
plt.show()

# %% [markdown]
# The measured points sit on the curve (the gap is sampling noise, shrinking with more pairs).
# Nothing in the formula depends on the dimension $d$: only the distance counts.

# %% [markdown]
# ## What the number of hashes does
#
# A point's code is the tuple of $L$ independent hashes (`n_hashes` in ccoat), and two
# points share a cluster only if **all** $L$ codes agree: probability $p(c)^{L}$. More
# hashes sharpen the curve: close pairs still collide, middling pairs no longer do. ACT uses $L = 32$. The price is that a pair
# must be much closer than $r$ to share a cluster, so $r$ must grow with $L$ for the same
# clusters.

# %%
fig, ax = plt.subplots()
for n in (1, 4, 16, 32):
    ax.plot(fine, collision_probability(fine) ** n, label=f"L = {n} hashes")
ax.set(
    xlabel="distance / bucket width  (c / r)",
    ylabel="P[same cluster]",
    xscale="log",
    title="All n codes must agree: p(c)ⁿ",
)
ax.legend()
plt.show()

# %%
half = {
    n: fine[(collision_probability(fine) ** n - 0.5).abs().argmin()].item()
    for n in (1, 32)
}
glue("half_1", half[1])
glue("half_32", half[32])
glue("wider", half[1] / half[32])

# %% [markdown]
# A pair collides with probability one half at $c \approx$ [0.68](#half_1:.2f) $r$ with
# one hash, and at $c \approx$ [0.027](#half_32:.3f) $r$ with 32: for the same clusters,
# 32 hashes need a bucket about **[25](#wider:.0f)×** wider.

# %% [markdown]
# ## What the bucket width does to the number of clusters
#
# The number of clusters is **adaptive**: it is however many distinct code tuples the points
# produce. Narrow buckets split the points into many clusters (in the limit, one per point);
# wide buckets put them all together. Here for 1,000 Gaussian points in $d = 8$.

# %%
points = torch.randn(1, 1, 1000, 8)
widths = ccoat.choose(
    smoke=[0.25, 1, 4, 16, 64],
    cpu=[0.25, 0.5, 1, 2, 4, 8, 16, 32, 64],
    gpu=[0.25, 0.5, 1, 2, 4, 8, 16, 32, 64, 128],
)
fig, ax = plt.subplots()
for n in (4, 16, 32):
    counts = [
        hashing.E2LSH(8, n, w, seed=0)(points).num_clusters.item() for w in widths
    ]
    ax.plot(widths, counts, "o-", label=f"L = {n} hashes")
ax.set(
    xscale="log",
    yscale="log",
    xlabel="bucket width r",
    ylabel="clusters among 1,000 points",
    title="Adaptive number of clusters",
)
ax.legend()
plt.show()

# %% [markdown]
# ## From code tuples to cluster ids
#
# A cluster is a set of points with equal code tuples, so we need one integer per distinct
# tuple. ACT's code packs a tuple into one integer by adding the codes, shifted,
# $\mathrm{key} = \sum_j \mathrm{code}_j \cdot 2^{s j}$. Codes can be negative and larger than
# $2^s$, so different tuples can give the same key, and unrelated points then share a cluster.


# %%
def shifted_sum(codes, shift=1):
    return (codes * 2 ** (shift * torch.arange(codes.shape[-1]))).sum(-1)


tuples = torch.tensor([[2, 0], [0, 1], [-1, 1], [1, 0]])
print("tuples:", tuples.tolist(), "-> shifted-sum keys:", shifted_sum(tuples).tolist())

# %% [markdown]
# A key that cannot collide is the tuple itself. Sorting the tuples (lexicographically) and
# numbering the distinct ones gives ids; `torch.unique(dim=0, return_inverse=True)` does exactly
# that. To cluster the queries of every (image, head) row at once, put the row number in front:
# the rows then get contiguous ranges of ids, and subtracting each row's first id numbers its
# clusters from 0.


# %%
def cluster_ids_by_hand(codes):
    """codes (B, heads, N, n) -> ids (B, heads, N), numbered from 0 within each row."""
    B, h, N, n = codes.shape
    row = torch.arange(B * h).repeat_interleave(N)[:, None]  # (B*h*N, 1)
    table = torch.cat([row, codes.reshape(-1, n)], dim=1)  # (B*h*N, 1 + n)
    _, ids = torch.unique(table, dim=0, return_inverse=True)
    ids = ids.view(B * h, N)
    return (ids - ids.amin(dim=1, keepdim=True)).view(B, h, N)


print(
    "ids of the four tuples:",
    cluster_ids_by_hand(tuples.view(1, 1, 4, 2)).flatten().tolist(),
)

# %% [markdown]
# `ccoat.hashing` computes the same ids faster: it writes each tuple as one integer in a
# *mixed radix*, every code shifted to start at 0 and given exactly the number of values it
# takes, and replaces the integer by its rank among the distinct ones whenever the next code
# would overflow 64 bits; ranks keep the order, so nothing can collide. We check it against the
# hand-written version, and the library's E2LSH codes against ours.

# %%
B, heads, N, n_hashes, width = (
    2,
    8,
    ccoat.choose(smoke=256, cpu=3136, gpu=3136),
    32,
    4.0,
)
queries = torch.randn(B, heads, N, 8) * 0.5
lsh = hashing.E2LSH(8, n_hashes, width, seed=0)
ours = e2lsh(queries.reshape(-1, 8), lsh.projections, lsh.offsets, width).view(
    B, heads, N, -1
)
torch.testing.assert_close(lsh.codes(queries).long(), ours)
clusters = lsh(queries)
assert torch.equal(clusters.ids, cluster_ids_by_hand(ours))
glue("B", B)
glue("heads", heads)
glue("N", N)
glue("fewest", clusters.num_clusters.min().item())
glue("most", clusters.num_clusters.max().item())
assert clusters.num_clusters.min() > 0.8 * N, "at the default, mostly singletons"

# %% [markdown]
# `ccoat.hashing` agrees with the hand-written codes and ids: [2](#B) images ×
# [8](#heads) heads × [3136](#N "live") queries form between **[2798](#fewest "live")**
# and **[2839](#most "live")** clusters per row. At ccoat's default, $r$ = 4 and 32 hashes,
# almost every one of these queries (Gaussian, standard deviation 0.5) is its own cluster;
# the plot of cluster counts above says the same for 1,000 points. How many queries share a
# cluster depends on their scale against $r$, which is why chapter 3 measures it on a
# trained model's queries.

# %% [markdown]
# ## Summary
#
# - E2LSH hashes a point by a random projection cut into buckets of width $r$ at a random
#   offset. One function gives two points at distance $c$ the same code with probability
#   $p(c/r)$, Datar et al.'s closed form, which the measurement follows.
# - A cluster needs all $L$ codes equal: probability $p^{L}$. More hashes make the clusters
#   tighter; the bucket width sets the scale of distance they are measured in.
# - The number of clusters is not chosen but found: the number of distinct code tuples.
# - Tuples must become ids without collisions: sort them (`torch.unique`), or pack them as
#   `ccoat.hashing` does, never add shifted codes.
#
# ## Exercises
#
# 1. Show from the closed form that $p(c) \to 1$ as $c/r \to 0$, and find how $p(c)$ falls
#    for $c \gg r$.
# 2. Measure the collision probability in $d = 2$ and $d = 64$ at the same $c/r$. Does it change?
# 3. For $L = 32$, which bucket width makes two points at distance 1 share a
#    cluster half the time?
# 4. Codes lie in $[0, M)$. What is the smallest shift $s$ for which shifted-sum keys cannot
#    collide? Why does that not help ACT, whose codes can be negative, and whose 32 codes must
#    fit one 64-bit key?

# %% tags=["hide-input"]
# Exercise 1: the two limits, against the closed form.
tiny, huge = torch.tensor(1e-3), torch.tensor(1e3)
assert collision_probability(tiny) > 0.999
tail = collision_probability(huge) / (1 / (math.sqrt(2 * math.pi) * huge))
assert abs(tail - 1) < 1e-3
# Exercise 2: the same c/r in 2 and 64 dimensions.
d2, d64 = measured_collision(1.0, 1.0, d=2), measured_collision(1.0, 1.0, d=64)
assert abs(d2 - d64) < 0.05 and abs(d2 - collision_probability(1.0).item()) < 0.05
glue("d2", d2)
glue("d64", d64)
glue("closed_1", collision_probability(1.0).item())
# Exercise 3: p(1/r)**32 = 1/2, by bisection on r.
lo, hi = 1.0, 1000.0
for _ in range(60):
    mid = (lo + hi) / 2
    lo, hi = (mid, hi) if collision_probability(1 / mid) ** 32 < 0.5 else (lo, mid)
glue("half_width", hi)
# Exercise 4: s = ceil(log2 M) makes the keys base-2**s numbers: no collision (M = 5).
M, s4 = 5, math.ceil(math.log2(5))
grid = torch.cartesian_prod(torch.arange(M), torch.arange(M))
assert shifted_sum(grid, shift=s4).unique().numel() == M * M
assert shifted_sum(grid, shift=s4 - 1).unique().numel() < M * M

# %% [markdown]
# ```{admonition} Solution to exercise 1
# :class: dropdown
# Write $s = r/c$. As $c/r \to 0$, $s \to \infty$: $\Phi(-s) \to 0$ and the last term
# vanishes like $1/s$, so $p \to 1$. For $c \gg r$, $s \to 0$: $1 - 2\Phi(-s) \approx
# 2s/\sqrt{2\pi}$ and $\frac{2}{\sqrt{2\pi}\,s}(1 - e^{-s^2/2}) \approx s/\sqrt{2\pi}$, so
# $p(c) \approx \frac{1}{\sqrt{2\pi}}\,\frac{r}{c}$: it falls only as $1/c$, which is why one
# hash is not enough and ACT takes 32.
# ```
#
# ```{admonition} Solution to exercise 2
# :class: dropdown
# No: $a \cdot x - a \cdot y$ is $\mathcal{N}(0, c^2)$ in any dimension. At $c/r = 1$ this
# build measured [0.366](#d2:.3f "live") in $d = 2$ and [0.369](#d64:.3f "live") in $d = 64$, against
# the closed form's [0.369](#closed_1:.3f).
# ```
#
# ```{admonition} Solution to exercise 3
# :class: dropdown
# Solve $p(1/r)^{32} = 1/2$, i.e. $p(1/r) = 2^{-1/32} \approx 0.979$: bisection gives
# $r \approx$ [37.2](#half_width:.1f). Points must be about that many times closer than
# the bucket width to share a cluster as often as not.
# ```
#
# ```{admonition} Solution to exercise 4
# :class: dropdown
# $s = \lceil \log_2 M \rceil$: each code then fits its own $s$ bits, and the key is the
# tuple written in base $2^s$ (the code cell checks $M = 5$, $s = 3$, and that $s = 2$
# collides). It does not help ACT: negative codes borrow from the next code's bits, and 32
# codes of $s$ bits need $32 s \le 63$ bits, so $s = 1$: only codes 0 and 1 would be safe.
# ```
