"""Token clustering: run a CoaT block's projections, attention and MLP on cluster prototypes.

Clustering the *queries* (ACT, :mod:`ccoat.clustering`) can only shrink the attention core, 1.4%
of CoaT-Lite Tiny's MACs. The qkv and output projections and the MLP, about 90%, still run on
every token. Clustering the **tokens** shrinks them all: a block merges the image tokens into
``K`` prototypes (the size-weighted mean of each cluster), runs its sub-layers on the class
token and the prototypes, and broadcasts each prototype's update back to the tokens of its
cluster. The residual stream keeps full resolution, and the stage's two convolutions, CPE and
CRPE, see the full grid (as TCFormer scatters tokens back to a map for its convolutions).

Three ways to form ``K = round(keep * HW)`` clusters of a stage's ``HW`` image tokens, each with
a fixed number of clusters per image, so shapes depend only on ``keep``, never on the data:

- ``"pool"``: fixed windows of neighbouring tokens (the trivial baseline);
- ``"bipartite"``: ToMe's bipartite soft matching (Bolya et al., 2023), in rounds of at most
  half the tokens;
- ``"lsh"``: the seed's E2LSH codes of the tokens (:mod:`ccoat.hashing`), read as a sort order:
  tokens with equal codes are neighbours in it, and the order is cut into ``K`` equal runs.

A fourth, ``"grid"`` (:mod:`ccoat.grid_clustering`), works on whole stages instead of blocks:
the stage's tokens are clustered once onto a coarser regular grid of centroids, every block
of the stage (CPE and CRPE included) runs on that grid, and the full grid is rebuilt at the end.

The CRPE term ``q ⊙ DWConv(v)`` is computed on the full grid from each token's prototype and
averaged back over the cluster, so within a cluster it is the cluster's mean: the one place
where a block on clusters of equal tokens differs from the block on all tokens (a window's
border sees other neighbours than its inside).

Attention on prototypes is *proportional* (ToMe): a prototype of ``s`` tokens enters the keys'
softmax with weight ``s`` (``log s`` added to its logits), which is exact for CoaT's factorized
attention when the tokens of a cluster are equal.

Public interface: :func:`cluster_tokens` converts a trained CoaT-Lite without retraining;
:func:`record_token_clusters` records the assignments for figures.
"""
from __future__ import annotations

import contextlib
import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from . import checks
from .grid_clustering import GridClusteredStage, cell_for, check_grid_options
from .hashing import draw_projections, e2lsh_codes

BLOCK_METHODS = ("pool", "bipartite", "lsh")  # clusters formed and used inside each block
METHODS = (*BLOCK_METHODS, "grid")
LSH_OPTIONS = ("n_hashes", "bucket_width", "seed")  # what LSHOrder takes
SCOPES = ("block", "stage")


# ---------------------------------------------------------------------------------------------
# Merge and unmerge


def merge(x: torch.Tensor, assign: torch.Tensor, num_clusters: int,
          sizes: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Size-weighted means of ``x (B, H*W, C)`` over clusters ``assign (B, H*W)`` in ``[0, K)``.

    ``sizes (B, H*W)`` weighs each token (default 1). Returns the prototypes ``(B, K, C)`` and
    the clusters' sizes ``(B, K)``; an empty cluster has size 0 and a zero prototype.
    """
    B, N, C = x.shape
    w = torch.ones(B, N, device=x.device, dtype=x.dtype) if sizes is None else sizes.to(x.dtype)
    total = x.new_zeros(B, num_clusters, C).scatter_add_(
        1, assign[..., None].expand(-1, -1, C), x * w[..., None])
    size = w.new_zeros(B, num_clusters).scatter_add_(1, assign, w)
    return total / size.clamp(min=1e-6)[..., None], size


def unmerge(prototypes: torch.Tensor, assign: torch.Tensor) -> torch.Tensor:
    """Give every token its cluster's prototype: ``(B, K, C)``, ``(B, H*W)`` ->
    ``(B, H*W, C)``."""
    return prototypes.gather(1, assign[..., None].expand(-1, -1, prototypes.shape[-1]))


# ---------------------------------------------------------------------------------------------
# Forming clusters: image tokens (B, H*W, C) on an (H, W) grid -> assignment (B, H*W) to K
# clusters (the argument k of the functions and modules below)


def clusters_kept(keep: float, n_tokens: int) -> int:
    """``K``, the clusters kept of ``n_tokens`` image tokens at a budget ``keep`` (at least 1)."""
    return max(1, min(n_tokens, round(keep * n_tokens)))


def pool_grid(size: tuple[int, int], k: int) -> tuple[int, int]:
    """Rows and columns of windows that cut an ``(H, W)`` grid into about ``K`` rectangles."""
    H, W = size
    gh = max(1, min(H, round(math.sqrt(k * H / W))))
    return gh, max(1, min(W, round(k / gh)))


def cluster_count(method: str, keep: float, size: tuple[int, int]) -> int:
    """How many clusters ``method`` forms of an ``(H, W)`` grid at ``keep``, whatever the data
    (``"pool"`` rounds to whole windows; the other two form exactly the budget)."""
    k = clusters_kept(keep, size[0] * size[1])
    if method == "pool":
        gh, gw = pool_grid(size, k)
        return gh * gw
    return k


def pool_clusters(x: torch.Tensor, size: tuple[int, int], k: int) -> tuple[torch.Tensor, int]:
    """Windows of neighbouring tokens: the grid cut into about ``K`` rectangles."""
    H, W = size
    gh, gw = pool_grid(size, k)
    rows = torch.arange(H, device=x.device) * gh // H
    cols = torch.arange(W, device=x.device) * gw // W
    assign = (rows[:, None] * gw + cols[None, :]).flatten()
    return assign.expand(x.shape[0], -1), gh * gw


def bipartite_clusters(x: torch.Tensor, size: tuple[int, int], k: int) -> tuple[torch.Tensor, int]:
    """ToMe's bipartite soft matching, repeated until ``K`` clusters are left.

    Each round splits the current ``m`` units into two alternate sets (even and odd positions),
    links every unit of the first to its most similar unit of the second (cosine similarity),
    and merges the ``min(m - K, ⌊m/2⌋)`` best-linked units of the first into their partners.
    """
    B, N, _ = x.shape
    assign = torch.arange(N, device=x.device).expand(B, -1)
    features, sizes, m = x, None, N
    while m > k:
        r = min(m - k, m // 2)
        metric = F.normalize(features, dim=-1)
        a, b = metric[:, ::2], metric[:, 1::2]  # (B, ceil(m/2), C), (B, floor(m/2), C)
        best, partner = (a @ b.transpose(1, 2)).max(dim=-1)  # (B, ceil(m/2))
        order = best.argsort(dim=-1, descending=True)
        merged, kept = order[:, :r], order[:, r:]
        n_b = b.shape[1]
        ids_a = torch.empty_like(partner)
        ids_a.scatter_(1, merged, partner.gather(1, merged))  # a merged unit joins its partner
        ids_a.scatter_(1, kept, n_b + torch.arange(kept.shape[1], device=x.device).expand(B, -1))
        ids = torch.empty(B, m, dtype=torch.long, device=x.device)
        ids[:, ::2] = ids_a
        ids[:, 1::2] = torch.arange(n_b, device=x.device)
        m -= r
        features, sizes = merge(features, ids, m, sizes)
        assign = ids.gather(1, assign)
    return assign, m


class BipartiteMatching(nn.Module):
    """:func:`bipartite_clusters` as a module without parameters, so that ``ccoat.cost`` can
    tell its similarity products from the block's attention."""

    def forward(self, x: torch.Tensor, size: tuple[int, int], k: int) -> tuple[torch.Tensor, int]:
        return bipartite_clusters(x, size, k)


class PrototypeAttention(nn.Module):
    """The attention core on ``[class token, prototypes]``: factorized or softmax, with ToMe's
    proportional weights (a prototype of ``s`` tokens enters the keys' softmax ``s`` times).
    A module without parameters, so that ``ccoat.cost`` counts its products as attention."""

    def forward(self, q, k, v, sizes: torch.Tensor, kind: str, proportional: bool = True):
        # q, k, v: (B, heads, 1 + K, C_head); sizes: (B, K)
        weight = F.pad(sizes, (1, 0), value=1.0)  # (B, 1 + K): the class token counts once
        bias = weight.clamp(min=1e-6).log()[:, None, :, None] if proportional else 0
        if kind == "factorized":  # softmax over tokens: a cluster of s tokens weighs s
            context = (k + bias).softmax(dim=2).transpose(-1, -2) @ v
            return q @ (context * q.shape[-1] ** -0.5)
        mask = bias.transpose(-1, -2).to(q.dtype) if proportional else None
        return F.scaled_dot_product_attention(q, k, v, attn_mask=mask)


class LSHOrder(nn.Module):
    """E2LSH codes of the (normalised) tokens as a sort order, cut into ``K`` equal runs."""

    def __init__(self, dim: int, n_hashes: int = 6, bucket_width: float = 0.5, seed: int = 0):
        super().__init__()
        a, b = draw_projections(dim, n_hashes, bucket_width, torch.Generator().manual_seed(seed))
        self.register_buffer("projections", a)
        self.register_buffer("offsets", b)
        self.bucket_width = bucket_width

    def forward(self, x: torch.Tensor, size: tuple[int, int], k: int) -> tuple[torch.Tensor, int]:
        B, N, _ = x.shape
        codes = e2lsh_codes(F.normalize(x.float(), dim=-1), self.projections, self.offsets,
                            self.bucket_width)  # (B, H*W, n_hashes)
        order = torch.arange(N, device=x.device).expand(B, -1)
        for h in reversed(range(codes.shape[-1])):  # lexicographic: a stable sort per hash
            key = codes[..., h].gather(1, order)
            order = order.gather(1, key.argsort(dim=1, stable=True))
        run = torch.arange(N, device=x.device) * k // N  # position in the order -> run
        assign = torch.empty_like(order)
        assign.scatter_(1, order, run.expand(B, -1))
        return assign, k


# ---------------------------------------------------------------------------------------------
# A serial block on clusters


def _per_head(t: torch.Tensor, heads: int) -> torch.Tensor:
    B, N, C = t.shape
    return t.reshape(B, N, heads, C // heads).transpose(1, 2)  # (B, heads, N, C_head)


def _joined(t: torch.Tensor) -> torch.Tensor:
    B, h, N, Ch = t.shape
    return t.transpose(1, 2).reshape(B, N, h * Ch)


class TokenClusteredBlock(nn.Module):
    """A CoaT-Lite serial block whose sub-layers run on the class token and ``K`` prototypes.

    It holds the block's own modules under their own names (``norm1``, ``attn``, ``norm2``,
    ``mlp``), so a state dict loads into either. The clusters are formed once per block from
    the tokens after the CPE and used for both sub-layers.

    ``supported_kinds``: the attention kinds it runs on prototypes. The clustered kinds would
    cluster the prototypes' queries a second time, which this block does not implement;
    :func:`ccoat.convert_attention` reads this to refuse them.
    """

    supported_kinds = ("factorized", "softmax")

    def __init__(self, block: nn.Module, method: str, keep: float, *, shared: dict | None = None,
                 lead: bool = True, **options):
        super().__init__()
        _check_block(block)
        _check_options(method, options)
        self.norm1, self.attn, self.norm2 = block.norm1, block.attn, block.norm2
        self.mlp, self.drop_path = block.mlp, block.drop_path
        self.method, self.keep = method, keep
        self.proportional = options.pop("proportional", True)
        self.lsh = LSHOrder(self.norm1.normalized_shape[0], **options) if method == "lsh" else None
        self.matching = BipartiteMatching() if method == "bipartite" else None
        self.prototype_attention = PrototypeAttention()
        # One dict per open record_token_clusters (nested ones all see the clusters).
        self.records: list[dict] = []
        # scope="stage": the stage's blocks share one dict; its first block (lead) forms the
        # clusters, the others reuse them. None: every block forms its own.
        self.shared, self.lead = shared, lead
        self.train(block.training)  # its new parts follow the block's train/eval mode

    def form_clusters(self, tokens: torch.Tensor, size) -> tuple[torch.Tensor, int]:
        if self.shared is not None and not self.lead:
            return self.shared["clusters"]
        clusters = self._form(tokens, size)
        if self.shared is not None:
            self.shared["clusters"] = clusters
        return clusters

    def _form(self, tokens: torch.Tensor, size) -> tuple[torch.Tensor, int]:
        k = clusters_kept(self.keep, tokens.shape[1])
        if self.method == "pool":
            return pool_clusters(tokens, size, k)
        if self.method == "bipartite":
            return self.matching(tokens, size, k)
        return self.lsh(tokens, size, k)

    def attention(self, t, sizes, assign, size, crpe) -> torch.Tensor:
        """Conv-attention of ``t = [class token, prototypes] (B, 1 + K, C)``."""
        attn = self.attn
        if attn.kind not in self.supported_kinds:  # a core swapped in by hand
            raise ValueError(f"a token-clustered block runs {self.supported_kinds} attention on "
                             f"prototypes, got {attn.kind!r}")
        B, M, C = t.shape
        q, k, v = attn.qkv(t).reshape(B, M, 3, C).unbind(2)
        q, k, v = (_per_head(z, attn.num_heads) for z in (q, k, v))  # (B, heads, 1 + K, C_head)
        out = self.prototype_attention(q, k, v, sizes, attn.kind, self.proportional)
        # CRPE on the full grid: every token carries its prototype's q and v.
        full = lambda z: torch.cat(  # noqa: E731
            [z[:, :, :1], _per_head(unmerge(_joined(z[:, :, 1:]), assign), attn.num_heads)], 2)
        rel = crpe(full(q), full(v), size)  # (B, heads, 1 + H*W, C_head)
        rel_proto, _ = merge(_joined(rel[:, :, 1:]), assign, M - 1)
        out = out + torch.cat([rel[:, :, :1], _per_head(rel_proto, attn.num_heads)], dim=2)
        return attn.proj(_joined(out))

    def forward(self, x: torch.Tensor, size, cpe, crpe) -> torch.Tensor:
        x = cpe(x, size)
        cls, tokens = x[:, :1], x[:, 1:]
        assign, k = self.form_clusters(tokens, size)
        prototypes, sizes = merge(tokens, assign, k)
        for record in self.records:
            record.update(assign=assign.detach(), sizes=sizes.detach(), size=size)
        y = self.attention(self.norm1(torch.cat([cls, prototypes], 1)), sizes, assign, size, crpe)
        y = self.drop_path(y)
        x = x + torch.cat([y[:, :1], unmerge(y[:, 1:], assign)], 1)
        # The clusters stay through the block: merging the updated tokens again would give
        # prototypes + update exactly (the update is one vector per cluster), so add it.
        prototypes = prototypes + y[:, 1:]
        y = self.drop_path(self.mlp(self.norm2(torch.cat([x[:, :1], prototypes], 1))))
        return x + torch.cat([y[:, :1], unmerge(y[:, 1:], assign)], 1)


# ---------------------------------------------------------------------------------------------
# Converting a model


def check_token_clustering(method, keep, stages, n_stages: int = 4) -> tuple[int, ...]:
    """The ``stages`` as a tuple, after checking what :func:`cluster_tokens` (and the command
    line's ``--token-clustering``, ``--keep``, ``--token-stages``) is given: ``ValueError``
    saying what was expected for a ``method`` not in :data:`METHODS`, a ``keep`` outside (0, 1]
    (for ``"grid"``, not ``1/n``), or stages that are not numbers from 1 to ``n_stages``."""
    if method not in METHODS:
        raise ValueError(f"token clustering method must be one of {METHODS}, got {method!r}")
    checks.number("keep", keep, above=0, at_most=1, what="a fraction in (0, 1]")
    if method == "grid":
        cell_for(keep)
    stages = tuple(stages)
    bad = [s for s in stages if not checks.is_integer(s) or not 1 <= s <= n_stages]
    if bad or not stages:
        raise ValueError(f"stages must be stage numbers from 1 to {n_stages}, got {stages!r}")
    return stages


def _check_options(method: str, options: dict) -> None:
    """``ValueError`` naming the option and its value for anything :class:`LSHOrder` or the
    block could not use as meant (a string width, NaN, zero hashes), before a module is built."""
    proportional = options.get("proportional", True)
    if not isinstance(proportional, bool):
        raise ValueError(f"proportional must be True or False, got {proportional!r}")
    rest = sorted(set(options) - {"proportional"})
    if method != "lsh":
        if rest:
            raise ValueError(f"token clustering method {method!r} takes no options, got {rest}")
        return
    unknown = sorted(set(rest) - set(LSH_OPTIONS))
    if unknown:
        raise ValueError(f"unknown options {unknown} for token clustering 'lsh'; expected some "
                         f"of {list(LSH_OPTIONS)} (and proportional)")
    checks.integer("n_hashes", options.get("n_hashes", 6), 1)
    checks.number("bucket_width", options.get("bucket_width", 0.5), above=0)
    checks.integer("seed", options.get("seed", 0))


def _check_block(block: nn.Module, where: str = "this block") -> None:
    if isinstance(block, TokenClusteredBlock):
        raise ValueError(f"{where} is already token-clustered")
    if block.attn.kind not in TokenClusteredBlock.supported_kinds:
        raise ValueError(f"token clustering runs factorized or softmax attention on "
                         f"prototypes; the attention of {where} is {block.attn.kind!r}")


def cluster_tokens(model: nn.Module, method: str, *, keep: float = 0.5, stages=(1, 2),
                   scope: str | None = None, **options) -> nn.Module:
    """Make the blocks of ``stages`` (numbered from 1) run on ``keep`` of their image tokens.

    ``model`` is a ccoat CoaT-Lite (converted in place and returned) or a timm CoaT-Lite
    (converted to ccoat first, every weight kept). ``scope`` (pool, bipartite, lsh; default
    ``"block"``): ``"block"``, every block forms its clusters from its own input; ``"stage"``,
    a stage's first block forms them and the stage's other blocks reuse them (no clustering
    cost after the first block, clusters that no longer follow the tokens). ``"grid"`` replaces
    whole stages (:class:`~ccoat.grid_clustering.GridClusteredStage`): its clusters are formed
    once per stage (``scope`` may only be ``"stage"``), and ``keep`` must be one over a whole
    number (0.5, 0.25, ...).
    ``options``: ``proportional`` (default True) and, for ``"lsh"``, ``n_hashes``,
    ``bucket_width`` and ``seed``; for ``"grid"``, ``steps`` and ``temperature``. No weight
    changes: with ``keep=1`` the model computes what it computed before.

    Every option and every block is checked before the first block is replaced, so a refused
    call leaves ``model`` as it was.
    """
    stages = check_token_clustering(method, keep, stages)
    scope = scope or ("stage" if method == "grid" else "block")
    if scope not in SCOPES or (method == "grid" and scope != "stage"):
        expected = ("stage",) if method == "grid" else SCOPES
        raise ValueError(f"scope for {method!r} must be one of {expected}, got {scope!r}")
    if method == "grid":
        cell_for(keep)
        check_grid_options(options)
    else:
        _check_options(method, options)
    if not hasattr(model, "stages"):  # a timm CoaT-Lite (left unmodified: a copy is converted)
        from .convert import convert_attention

        model = convert_attention(model, "factorized")
    for number in stages:
        if isinstance(model.stages[number - 1], GridClusteredStage):
            raise ValueError(f"stage {number} is already grid-clustered")
    if method == "grid":
        for number in stages:
            if any(isinstance(b, TokenClusteredBlock) for b in model.stages[number - 1].blocks):
                raise ValueError(f"stage {number} has token-clustered blocks; grid clustering "
                                 f"takes a stage of plain blocks")
        for number in stages:
            model.stages[number - 1] = GridClusteredStage(model.stages[number - 1], keep,
                                                          **options)
        return model
    for number in stages:
        for j, block in enumerate(model.stages[number - 1].blocks):
            _check_block(block, f"stage {number} block {j}")
    for number in stages:
        blocks = model.stages[number - 1].blocks
        shared = {} if scope == "stage" else None
        for j, block in enumerate(blocks):
            blocks[j] = TokenClusteredBlock(block, method, keep, shared=shared, lead=j == 0,
                                            **dict(options))
    return model


class record_token_clusters(contextlib.AbstractContextManager):
    """``with record_token_clusters(model) as records: model(x)`` fills, for every
    token-clustered block ``"stages.i.blocks.j"`` (and every grid-clustered stage
    ``"stages.i"``), the last pass's ``assign (B, H*W)``, cluster ``sizes (B, K)`` and grid
    ``size``; a grid stage adds its ``coarse`` grid and soft ``weights``. Records opened inside
    one another each get every pass."""

    def __init__(self, model: nn.Module):
        if not isinstance(model, nn.Module):
            raise TypeError(f"record_token_clusters expects a model (a torch nn.Module), got "
                            f"{type(model).__name__}")
        self.blocks = {name: m for name, m in model.named_modules()
                       if isinstance(m, (TokenClusteredBlock, GridClusteredStage))}
        self.records: dict[str, dict] = {}

    def __enter__(self) -> dict:
        for name, block in self.blocks.items():
            block.records.append(self.records.setdefault(name, {}))
        return self.records

    def __exit__(self, *exc) -> None:
        for name, block in self.blocks.items():
            mine = self.records[name]
            block.records[:] = [r for r in block.records if r is not mine]
