"""E2LSH: grouping similar queries by hashing them, the first half of ACT's adaptive clustering.

The family of Datar et al. (2004) for Euclidean distance hashes a vector ``x`` to the code

    floor((a · x + b) / r),    a ~ N(0, I),  b ~ U[0, r),

a random projection cut into buckets of width ``r`` (``bucket_width``) at a random offset. Two
points at distance ``c`` collide with a probability that falls with ``c / r``; ``L``
(``n_hashes``) independent functions make the code of a point a tuple of ``L`` integers, and
points whose tuples are equal form a cluster. The number of clusters is *adaptive*: it is
however many distinct tuples a row of queries produces, few when the queries are alike, many
when not.

Turning tuples into cluster ids. ACT's original code adds shifted codes into one integer,
which can map two different tuples to the same key (two different queries then share a
prototype for no geometric reason). Here a tuple becomes one integer by *mixed-radix packing*:
every code is shifted to start at 0, and digits are appended with exactly the radix they need,
``key = key * range_j + digit_j``; when the next digit would overflow int64, the key is first
replaced by its rank among the distinct keys (a sort), which loses nothing. The row index (one
row per batch element and head) is the leading digit, so the final ranks are the lexicographic
order of ``(row, code_1, ..., code_L)``: ids are contiguous per row, and subtracting each row's
first id gives ids ``0 .. K - 1`` for a row of ``K`` clusters. It is the same result as
``torch.unique(rows, dim=0, return_inverse=True)`` on the tuples, for a few 1-D sorts instead of
a row-wise sort (tested to agree); everything is vectorised over batch and heads.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn as nn

from . import checks

# Bucket width used when none is given, chosen by measurement (ACT used r = 8 on DETR's
# queries). CoaT-Lite's queries at initialisation have a per-channel std of about
# 0.02 * sqrt(dim) (0.02-std qkv weights on LayerNorm'd tokens): ~0.16 in stage 1, a norm of
# ~0.45 per head of 8 channels. With 32 hashes a pair shares a cluster only when it is much
# closer than r (p(c/r)^32, notebook 02), so r must be large against the query spread. On the
# sample photos through a random-init CoaT-Lite-Tiny stage 1 (notebook 03 and
# benchmarks/bench_clustered_attention.py, numbers in benchmarks/README.md), r = 4 forms
# clusters for a few percent of the tokens at an error well below a single cluster's; halving r
# about halves the error but multiplies the clusters (and the attention cost) about four-fold,
# doubling it leaves a few dozen clusters, too few to follow the image. Training changes the
# query norm, and r must follow it.
DEFAULT_BUCKET_WIDTH = 4.0
DEFAULT_N_HASHES = 32

_INT64_BITS = 62  # headroom below 2**63 for key * radix + digit


def check_hash_options(n_hashes, bucket_width) -> None:
    """``ValueError`` unless ``n_hashes`` is an int >= 1 and ``bucket_width`` a finite float > 0."""
    checks.integer("n_hashes", n_hashes, 1)
    try:
        width = float(bucket_width)
    except (TypeError, ValueError):
        raise ValueError(f"bucket_width must be a positive number, got {bucket_width!r}") from None
    if not (width > 0 and width < float("inf")):
        raise ValueError(f"bucket_width must be a finite number > 0, got {bucket_width!r}")


def draw_projections(dim: int, n_hashes: int, bucket_width: float,
                     generator: torch.Generator | None = None, device=None):
    """One E2LSH family: ``a`` of shape ``(dim, n_hashes)`` from N(0, 1), ``b`` from U[0, r)."""
    a = torch.randn(dim, n_hashes, generator=generator, device=device)
    b = torch.rand(n_hashes, generator=generator, device=device) * bucket_width
    return a, b


def e2lsh_codes(x: torch.Tensor, projections: torch.Tensor, offsets: torch.Tensor,
                bucket_width: float) -> torch.Tensor:
    """``floor((x a + b) / r)`` for every vector of ``x (..., dim)`` -> codes ``(..., n_hashes)``.

    Computed in float32 whatever the dtype of ``x`` (bf16 rounding would move points across
    bucket borders); the codes are integers held as floats (NaN where ``x`` is not finite,
    which :func:`clusters_from_codes` refuses).
    """
    if x.shape[-1] != projections.shape[0]:
        raise ValueError(f"expected vectors of dimension {projections.shape[0]} (the hash "
                         f"projections' dimension), got shape {tuple(x.shape)}")
    x = x.detach()  # codes carry no gradient (floor's is zero everywhere it is defined)
    with torch.autocast(device_type=x.device.type, enabled=False):
        projected = torch.addmm(offsets.float(), x.reshape(-1, x.shape[-1]).float(),
                                projections.float())  # (M, n_hashes)
    return torch.floor(projected / bucket_width).view(*x.shape[:-1], -1)


def dense_rank(key: torch.Tensor, count: bool = True) -> tuple[torch.Tensor, int | None]:
    """Rank of every entry of a 1-D tensor among its distinct values: ``(ranks, n_distinct)``.

    Order-preserving (equal values share a rank, smaller values get smaller ranks), so it can
    replace a key without changing any comparison. One sort; ``torch.unique(return_inverse=True)``
    does the same but is much slower on CPU for large inputs. ``count=False`` returns ``None``
    for ``n_distinct``: reading it is a device-to-host copy (and a ``torch.compile`` graph break).
    """
    if key.numel() == 0:
        return torch.zeros_like(key, dtype=torch.long), 0 if count else None
    sorted_key, order = torch.sort(key)
    new_value = torch.ones_like(sorted_key, dtype=torch.long)
    new_value[0] = 0
    new_value[1:] = sorted_key[1:] != sorted_key[:-1]
    ranks_sorted = new_value.cumsum(0)
    ranks = torch.empty_like(ranks_sorted)
    ranks[order] = ranks_sorted
    return ranks, (int(ranks_sorted[-1]) + 1 if count else None)


@dataclass
class Clusters:
    """Which cluster every query belongs to, per (batch, head) row.

    - ``ids``: ``(B, heads, H*W)`` int64, ``0 .. K - 1`` within a row of ``K`` clusters;
    - ``counts``: ``(B, heads, K_max)`` int64, members per cluster (its size ``s``),
      ``K_max = num_clusters.max()`` (slots past a row's own ``K`` are 0);
    - ``num_clusters``: ``(B, heads)`` int64, the ``K`` of each row.
    """

    ids: torch.Tensor
    counts: torch.Tensor
    num_clusters: torch.Tensor

    @property
    def max_clusters(self) -> int:
        return self.counts.shape[-1]


def clusters_from_codes(codes: torch.Tensor, points: torch.Tensor | None = None) -> Clusters:
    """Integer code tuples ``(B, heads, H*W, n_hashes)`` -> :class:`Clusters`.

    Tokens share a cluster exactly when their tuples are equal (within the same row).
    Non-finite codes are a ``ValueError``, which counts the non-finite values of ``points``
    (the hashed vectors) when given.
    """
    if codes.dim() != 4:
        raise ValueError(f"expected codes of shape (B, heads, N, n_hashes), got {tuple(codes.shape)}")
    B, h, N, n = codes.shape
    rows, M = B * h, B * h * N
    device = codes.device
    if M == 0:
        empty = torch.zeros(B, h, 0, dtype=torch.long, device=device)
        return Clusters(empty, empty, torch.zeros(B, h, dtype=torch.long, device=device))
    flat = codes.reshape(M, n)  # (M, n_hashes): every query of every row
    # The range of every hash function, read back once (the packing below is sized by it);
    # the finiteness check uses the same numbers, with no second read-back.
    low, high = torch.aminmax(flat, dim=0)  # per hash function
    low, high = torch.stack([low, high]).tolist()
    if not all(math.isfinite(v) for v in (*low, *high)):
        bad = int((~torch.isfinite(points)).sum()) if points is not None else 0
        if bad:
            raise ValueError(f"cannot hash non-finite queries: {bad} NaN/inf values in a "
                             f"tensor of shape {tuple(points.shape)} (expected finite values)")
        raise ValueError("expected finite hash codes, got NaN/inf (codes overflow float32 when "
                         "bucket_width is too small for the queries)")
    radices = [int(h - lo) + 1 for lo, h in zip(low, high)]

    # The leading digit: which (batch, head) row a token belongs to. Then each code, shifted to
    # start at 0, as one more digit: key = key * radix_j + digit_j.
    key = torch.arange(rows, device=device).repeat_interleave(N)
    key_range = rows
    for j, radix in enumerate(radices):
        if radix == 1:
            continue  # every token has the same code: the digit tells nothing apart
        if radix > M:  # a huge range (tiny bucket width): the column's ranks keep its order
            digit, radix = dense_rank(flat[:, j])
        else:  # exact: integers within M of each other (Sterbenz's lemma for large floats)
            digit = (flat[:, j] - low[j]).long()
        if key_range * radix >= 2 ** _INT64_BITS:
            key, key_range = dense_rank(key)  # shrink to at most M values, losslessly
        key = key * radix + digit
        key_range *= radix
    global_ids, _ = dense_rank(key, count=False)  # lexicographic rank of (row, code_1, ..., code_L)
    global_ids = global_ids.view(rows, N)
    # Each row's ids form one contiguous range: shift it to start at 0.
    first = global_ids.amin(1, keepdim=True)
    ids = global_ids - first
    num_clusters = global_ids.amax(1) - first.squeeze(1) + 1
    K = int(num_clusters.max())
    counts = torch.zeros(rows, K, dtype=torch.long, device=device)
    counts.scatter_add_(1, ids, torch.ones_like(ids))
    return Clusters(ids.view(B, h, N), counts.view(B, h, K), num_clusters.view(B, h))


class E2LSH(nn.Module):
    """``n_hashes`` E2LSH functions of width ``bucket_width`` on vectors of size ``dim``.

    ``redraw=False`` (default): the projections are drawn once, at construction, and kept as
    buffers, so they are saved with the model and the clustering is a fixed function of the
    queries. ``redraw=True``: fresh projections every call, as ACT's code does; the stored ones
    are then unused. Draws come from ``torch.Generator().manual_seed(seed)`` when ``seed`` is
    given, else from torch's global generator (so ``torch.manual_seed`` makes them repeatable).
    """

    def __init__(self, dim: int, n_hashes: int = DEFAULT_N_HASHES,
                 bucket_width: float = DEFAULT_BUCKET_WIDTH, redraw: bool = False,
                 seed: int | None = None):
        super().__init__()
        check_hash_options(n_hashes, bucket_width)
        checks.integer("dim", dim, 1)
        self.dim = dim
        self.n_hashes = n_hashes
        self.bucket_width = float(bucket_width)
        self.redraw = bool(redraw)
        self.generator = torch.Generator().manual_seed(seed) if seed is not None else None
        a, b = draw_projections(dim, n_hashes, self.bucket_width, self.generator)
        self.register_buffer("projections", a)  # (dim, n_hashes)
        self.register_buffer("offsets", b)  # (n_hashes,)

    def extra_repr(self) -> str:
        return (f"dim={self.dim}, n_hashes={self.n_hashes}, bucket_width={self.bucket_width}, "
                f"redraw={self.redraw}")

    def codes(self, x: torch.Tensor) -> torch.Tensor:
        """``(..., dim)`` -> integer codes ``(..., n_hashes)`` (held as float32)."""
        if self.redraw:
            a, b = draw_projections(self.dim, self.n_hashes, self.bucket_width, self.generator)
            a, b = a.to(x.device), b.to(x.device)
        else:
            a, b = self.projections, self.offsets
        return e2lsh_codes(x, a, b, self.bucket_width)

    def forward(self, x: torch.Tensor) -> Clusters:
        """Queries ``(B, heads, H*W, dim)`` -> their :class:`Clusters`."""
        if x.dim() != 4:
            raise ValueError(f"expected queries of shape (B, heads, N, {self.dim}), got {tuple(x.shape)}")
        return clusters_from_codes(self.codes(x), points=x)
