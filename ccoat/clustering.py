"""Adaptive clustering attention (ACT, Zheng et al. 2020) as a CoaT attention core.

ACT does not give every query its own attention row. It groups similar queries with E2LSH
(:mod:`ccoat.hashing`), replaces each group by its **prototype** (the mean of its queries),
computes attention for the prototypes only, and **broadcasts** each prototype's output back to
the queries of its cluster. With ``K`` clusters among a row's ``HW`` image queries, softmax
attention on ``N = 1 + HW`` keys costs ``O(K N C)`` instead of ``O(N² C)``.

Two cores use it, with the interface of :mod:`ccoat.attention` (``forward(q, k, v, size)`` on
``(B, heads, N, C_head)`` tensors, token 0 the class token):

- ``clustered``: the seed's module, ``softmax(P kᵀ · scale) v`` for the prototypes ``P``
  (through torch's ``scaled_dot_product_attention``), broadcast to the members;
- ``clustered_factorized``: prototypes in place of the queries in CoaT's factorized product
  ``scale · P (softmax_N(k)ᵀ v)``.

The class token is what CoaT-Lite classifies, so it is never merged with image tokens: it is a
cluster of its own and gets its exact attention row; the image tokens' queries are clustered.
The CRPE term ``q ⊙ DWConv(v)`` is added by :class:`ccoat.attention.ConvAttention` with every
token's own query, outside the core, as in the seed's Figure 2.

Queries that are not finite have no bucket: the cores raise ``ValueError`` with their count.
"""
from __future__ import annotations

import contextlib

import torch
import torch.fx
import torch.nn as nn
import torch.nn.functional as F

from . import checks
from .attention import factorized_attention
from .hashing import DEFAULT_BUCKET_WIDTH, DEFAULT_N_HASHES, E2LSH, Clusters

# What a clustered core takes besides head_dim (checked by ccoat.model.make_core).
CLUSTERING_OPTIONS = ("n_hashes", "bucket_width", "max_clusters", "redraw", "seed")


def _row_offsets(clusters: Clusters) -> torch.Tensor:
    """Index of every token's cluster in a flat ``(B * heads * K_max)`` list of clusters."""
    B, h, N = clusters.ids.shape
    K = clusters.max_clusters
    rows = torch.arange(B * h, device=clusters.ids.device).view(B, h, 1) * K
    return (clusters.ids + rows).reshape(-1)  # (B*heads*H*W,)


def prototypes(x: torch.Tensor, clusters: Clusters) -> torch.Tensor:
    """The mean of each cluster's vectors, the prototypes ``P``: ``(B, heads, H*W, C_head)``
    -> ``(B, heads, K_max, C_head)``.

    ``K_max = clusters.max_clusters``; the slots past a row's own ``K`` clusters are zero.
    A sum by ``index_add`` then a division, so gradients flow to every member (each gets
    ``1 / s`` of its prototype's gradient, ``s`` its cluster's size). Summed in float32 for
    low-precision inputs.
    """
    B, h, N, C = x.shape
    K = clusters.max_clusters
    sums = x.new_zeros(B * h * K, C, dtype=torch.float32)
    sums = sums.index_add(0, _row_offsets(clusters), x.reshape(-1, C).float())
    counts = clusters.counts.reshape(-1, 1).clamp(min=1)
    return (sums / counts).to(x.dtype).view(B, h, K, C)


def broadcast(y: torch.Tensor, clusters: Clusters) -> torch.Tensor:
    """Give every token its cluster's row: ``(B, heads, K_max, C_head)`` ->
    ``(B, heads, H*W, C_head)``."""
    C = y.shape[-1]
    return torch.gather(y, 2, clusters.ids.unsqueeze(-1).expand(-1, -1, -1, C))


def limit_clusters(x: torch.Tensor, clusters: Clusters, max_clusters: int) -> Clusters:
    """Cap the clusters of every row at ``max_clusters``.

    The merge rule: a row keeps its ``max_clusters`` largest clusters (ties: the earlier id,
    i.e. the smaller code tuple); every other cluster joins, as a whole, the kept cluster whose
    prototype is nearest (Euclidean) to its own prototype. Members are never split, so queries
    that LSH put together stay together. Kept clusters keep their relative order; ids stay
    contiguous. Rows already within the cap are unchanged.
    """
    if clusters.max_clusters <= max_clusters:
        return clusters
    B, h, N, C = x.shape
    K = clusters.max_clusters
    counts = clusters.counts.view(B * h, K)
    protos = prototypes(x, clusters).view(B * h, K, C).float()
    order = torch.argsort(counts, dim=1, descending=True, stable=True)
    kept_slots = order[:, :max_clusters]  # (rows, K_cap): largest first
    keep = torch.zeros_like(counts, dtype=torch.bool).scatter_(1, kept_slots, True) & (counts > 0)
    new_id = keep.long().cumsum(1) - 1  # (rows, K_max): new id of each kept cluster, in old order
    # Nearest kept prototype for every cluster.
    kept_protos = torch.gather(protos, 1, kept_slots.unsqueeze(-1).expand(-1, -1, C))
    distance = torch.cdist(protos, kept_protos)  # (rows, K_max, K_cap)
    distance = distance.masked_fill(~torch.gather(keep, 1, kept_slots).unsqueeze(1), float("inf"))
    nearest_slot = torch.gather(kept_slots, 1, distance.argmin(-1))  # (rows, K_max)
    mapping = torch.where(keep, new_id, torch.gather(new_id, 1, nearest_slot))
    ids = torch.gather(mapping, 1, clusters.ids.view(B * h, N))
    num_clusters = keep.sum(1)
    new_counts = torch.zeros(B * h, max_clusters, dtype=torch.long, device=x.device)
    new_counts.scatter_add_(1, ids, torch.ones_like(ids))
    K_new = int(num_clusters.max())
    return Clusters(ids.view(B, h, N), new_counts[:, :K_new].reshape(B, h, K_new),
                    num_clusters.view(B, h))


# ---------------------------------------------------------------------------------------------
# Introspection: which queries went together, for the book's figures.

def block_qkv(model: nn.Module, images: torch.Tensor, stage: int = 0, block: int = 0):
    """The queries, keys and values that a block of a ccoat CoaT-Lite computes for ``images``.

    Runs the model up to block ``block`` of stage ``stage`` and returns ``q, k, v`` of shape
    ``(B, heads, 1 + H*W, C_head)`` (class token first) and the grid ``(H, W)``: the real
    features the clustering sees, for the book and the benchmarks.
    """
    n_stages = len(model.stages)
    if not 0 <= stage < n_stages or not 0 <= block < len(model.stages[stage].blocks):
        raise ValueError(f"expected stage in 0..{n_stages - 1} and a block of that stage, "
                         f"got stage={stage}, block={block}")
    x, B = images, images.shape[0]
    for i in range(stage):
        x, size = model.stages[i](x)
        x = x[:, 1:].transpose(1, 2).reshape(B, -1, *size)  # back to an image grid
    st = model.stages[stage]
    x, size = st.patch_embed(x)
    x = torch.cat([st.cls_token.expand(B, -1, -1), x], dim=1)  # (B, 1 + H*W, C)
    for blk in st.blocks[:block]:
        x = blk(x, size, st.cpe, st.crpe)
    attn = st.blocks[block].attn
    x = st.blocks[block].norm1(st.cpe(x, size))
    C = x.shape[-1]
    qkv = attn.qkv(x).reshape(B, x.shape[1], 3, attn.num_heads, C // attn.num_heads)
    q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)  # each (B, heads, 1 + H*W, C_head)
    return q, k, v, size


class record_clusters(contextlib.AbstractContextManager):
    """Within ``with record_clusters(model) as records:``, every clustered core of ``model``
    stores, for each forward pass, its image tokens' ``ids`` ``(B, heads, H*W)``, ``counts``,
    ``num_clusters`` and ``prototypes`` ``(B, heads, K_max, C_head)`` (detached) in
    ``records["stages.i.blocks.j"]``; a later pass overwrites an earlier one. Records opened
    inside one another each get every pass (``ccoat.cost`` records while a caller may be
    recording too). Outside the context the cores keep nothing (one empty-list test per call).
    """

    def __init__(self, model: nn.Module):
        if not isinstance(model, nn.Module):
            raise TypeError(f"record_clusters expects a model (a torch nn.Module), got "
                            f"{type(model).__name__}")
        self.records: dict[str, dict[str, torch.Tensor]] = {}
        self.cores = [
            (name.removesuffix(".attn.core").removesuffix(".core"), module)
            for name, module in model.named_modules() if isinstance(module, ClusteredCoreBase)
        ]

    def __enter__(self) -> dict:
        for name, core in self.cores:
            core._recorders.append((self.records, name))
        return self.records

    def __exit__(self, *exc) -> None:
        for _, core in self.cores:
            core._recorders[:] = [r for r in core._recorders if r[0] is not self.records]


def block_index(name: str) -> tuple[int, int]:
    """``"stages.i.blocks.j"`` (or a module path below it) -> ``(i, j)``, both from 0."""
    parts = name.split(".")
    if len(parts) < 4 or parts[0] != "stages" or parts[2] != "blocks" or not (
            parts[1].isdigit() and parts[3].isdigit()):
        raise ValueError(f"expected a block path 'stages.i.blocks.j', got {name!r}")
    return int(parts[1]), int(parts[3])


def clusters_per_row(records: dict) -> dict[str, float]:
    """Mean number of clusters per query row (one image, one head) of each block in
    ``records`` (from :class:`record_clusters`), in the model's block order."""
    return {name: record["num_clusters"].float().mean().item()
            for name, record in sorted(records.items(), key=lambda item: block_index(item[0]))}


def clusters_per_stage(records: dict) -> dict[str, float]:
    """Mean number of clusters per query row (one image, one head) of each stage that clusters,
    ``{"stage1": ..., ...}``: over its images, heads and blocks, from :class:`record_clusters`'
    ``records`` (a stage's blocks have the same rows, so this is also the mean of their
    :func:`clusters_per_row`)."""
    per_stage: dict[str, list[float]] = {}
    for name, mean in clusters_per_row(records).items():
        per_stage.setdefault(f"stage{block_index(name)[0] + 1}", []).append(mean)
    return {stage: sum(means) / len(means) for stage, means in per_stage.items()}


# ---------------------------------------------------------------------------------------------
# The cores.

def _check_qkv(q, k, v, head_dim: int) -> None:
    for name, t in (("q", q), ("k", k), ("v", v)):
        if t.dim() != 4:
            raise ValueError(f"expected {name} of shape (B, heads, N, C_head), got {tuple(t.shape)}")
    if q.shape[-1] != head_dim:
        raise ValueError(f"expected C_head = {head_dim} (the hash projections' dimension), "
                         f"got q of shape {tuple(q.shape)}")
    if k.shape != v.shape or q.shape[:2] != k.shape[:2] or q.shape[-1] != k.shape[-1]:
        raise ValueError("expected q, k, v with the same (B, heads, ·, C_head) and k, v of one shape, "
                         f"got q {tuple(q.shape)}, k {tuple(k.shape)}, v {tuple(v.shape)}")
    if q.shape[2] < 1:
        raise ValueError(f"expected at least the class token, got q of shape {tuple(q.shape)}")


class ClusteredCoreBase(nn.Module):
    """What the clustered cores share: cluster the image tokens' queries, attend with
    prototypes (:meth:`attend`, each core's own), broadcast back."""

    kind = ""

    def __init__(self, head_dim: int, n_hashes: int = DEFAULT_N_HASHES,
                 bucket_width: float = DEFAULT_BUCKET_WIDTH, max_clusters: int | None = None,
                 redraw: bool = False, seed: int | None = None):
        super().__init__()
        checks.integer("max_clusters", max_clusters, 1, none=True)
        self.head_dim = head_dim
        self.max_clusters = max_clusters
        self.hasher = E2LSH(head_dim, n_hashes, bucket_width, redraw=redraw, seed=seed)
        self._recorders: list[tuple[dict, str]] = []  # (records, block name) per open record

    def extra_repr(self) -> str:
        return f"max_clusters={self.max_clusters}"

    def attend(self, queries: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def cluster(self, q_img: torch.Tensor) -> Clusters:
        """The clusters of the image tokens' queries ``(B, heads, H*W, C_head)``."""
        clusters = self.hasher(q_img)
        if self.max_clusters is not None:
            clusters = limit_clusters(q_img, clusters, self.max_clusters)
        return clusters

    def forward(self, q, k, v, size=None):
        if isinstance(q, torch.fx.Proxy):
            raise TypeError(
                f"torch.fx cannot trace the {self.kind!r} attention kind: how many clusters a row "
                "of queries forms (the prototypes' shape) depends on the query values, which a "
                "symbolic trace does not have. Trace a factorized or softmax model, or use "
                "torch.compile, which runs the clustering between compiled graphs")
        _check_qkv(q, k, v, self.head_dim)
        q_cls, q_img = q[:, :, :1], q[:, :, 1:]
        clusters = self.cluster(q_img)
        protos = prototypes(q_img, clusters)  # (B, heads, K_max, C_head)
        out = self.attend(torch.cat([q_cls, protos], dim=2), k, v)  # (B, heads, 1 + K_max, C_head)
        for records, name in self._recorders:
            records[name] = {"ids": clusters.ids.detach(), "counts": clusters.counts.detach(),
                             "num_clusters": clusters.num_clusters.detach(),
                             "prototypes": protos.detach()}
        return torch.cat([out[:, :, :1], broadcast(out[:, :, 1:], clusters)], dim=2)


class ClusteredCore(ClusteredCoreBase):
    """The seed's clustering attention: ``softmax(P kᵀ · scale) v`` for prototypes ``P``."""

    kind = "clustered"

    def attend(self, queries, k, v):
        return F.scaled_dot_product_attention(queries, k, v)


class ClusteredFactorizedCore(ClusteredCoreBase):
    """CoaT's factorized attention with prototypes in place of the queries.

    ``scale · P (softmax_N(k)ᵀ v)`` is linear in ``P``, so a member's output is the mean of its
    cluster's exact factorized outputs: the clustering saves only the ``N C_head²`` product.
    """

    kind = "clustered_factorized"

    def attend(self, queries, k, v):
        return factorized_attention(queries, k, v)
