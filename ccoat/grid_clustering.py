"""Grid token clustering: a stage of CoaT-Lite run on a coarser grid of its tokens.

The other token clustering methods (:mod:`ccoat.token_clustering`) run a block's projections,
attention and MLP on ``K`` prototypes but keep the stage's two convolutions, CPE and CRPE, on
the full grid, and merge and broadcast in every block: the savings stop at the sub-layers.
Lowering the image's resolution cuts *every* token of every stage, convolutions included. Grid
clustering keeps that regularity inside a stage and stays content-adaptive:

1. **Cluster** (at the start of the stage, after its patch embedding): the ``H x W`` image
   tokens are summarised by an ``H' x W'`` grid of centroids ``c_j``, ``H' = H / S_h``,
   ``W' = W / S_w`` for a cell of ``S_h x S_w`` tokens (``keep = 1 / (S_h S_w)``). The
   centroids start as the mean of their cell (average pooling) and take ``steps`` rounds of a
   *local* k-means: each token is softly assigned to the 3 x 3 centroids around its own cell
   (weights ``alpha_ij``: a softmax of cosine similarities over the temperature ``tau``; a
   token never joins a distant centroid), and each centroid becomes the weighted mean of the
   tokens assigned to it. This is Expedit's idea (Liang et al., 2022: local k-means from
   pooled centroids); the code here is ccoat's own.
2. **Run the stage on the grid**: the class token and the ``H' x W'`` centroids go through
   every block of the stage unchanged, CPE and CRPE included, as if the image were ``S_h``
   times smaller in this stage.
3. **Rebuild the full grid** (at the end of the stage, before the next stage's patch
   embedding): every token gets its own value plus the change its centroids underwent in the
   stage, weighed by its assignment, ``x_i + sum_j alpha_ij (y_j - c_j)``. A token keeps its
   detail and receives what the stage computed for its neighbourhood; for a cell of one token
   the stage is CoaT-Lite's exactly.

Public interface: :class:`GridClustering` (the local k-means) and :class:`GridRebuild`, modules
without parameters, so that ``ccoat.cost`` counts their products as ``clustering`` and
``broadcast``; :func:`cell_for` (the cell of a budget); :class:`GridClusteredStage` (what
:func:`ccoat.cluster_tokens` puts in place of a stage for ``method="grid"``);
:func:`check_grid_options`; and the helpers that the chapter uses by name (:func:`to_cells`,
:func:`from_cells`, :func:`candidates`, :func:`gather_back`).
"""
from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint

from . import checks

GRID_OPTIONS = ("steps", "temperature")
NEIGHBOURS = 9  # the 3 x 3 centroids around a token's own cell


def cell_for(keep: float) -> tuple[int, int]:
    """The cell ``(S_h, S_w)`` of tokens that one centroid summarises at a budget ``keep``:
    ``1 / keep`` must be a whole number ``n``; the cell is the most nearly square ``S_h x S_w
    = n`` with ``S_h >= S_w`` (keep 0.25: 2 x 2; keep 0.5: 2 x 1; keep 0.125: 4 x 2)."""
    n = 1 / keep
    if not 0 < keep <= 1 or abs(n - round(n)) > 1e-9:
        raise ValueError(f"grid clustering needs keep = 1/n for a whole number n (0.5, 0.25, "
                         f"0.125, ...): a centroid summarises a cell of n tokens; got {keep!r}")
    n = round(n)
    s_w = max(d for d in range(1, math.isqrt(n) + 1) if n % d == 0)
    return n // s_w, s_w


def check_grid_options(options: dict) -> None:
    """``ValueError`` naming the option for anything :class:`GridClustering` could not use."""
    unknown = sorted(set(options) - set(GRID_OPTIONS))
    if unknown:
        raise ValueError(f"unknown options {unknown} for token clustering 'grid'; expected some "
                         f"of {list(GRID_OPTIONS)}")
    checks.integer("steps (rounds of the local k-means)", options.get("steps", 1), 1)
    checks.number("temperature", options.get("temperature", 0.02), above=0)


def to_cells(tokens: torch.Tensor, size, cell) -> torch.Tensor:
    """Tokens ``(B, HW, C)`` -> per cell ``(B, H'W', S_h S_w, C)``, row-major in both."""
    (H, W), (sh, sw) = size, cell
    B, _, C = tokens.shape
    t = tokens.reshape(B, H // sh, sh, W // sw, sw, C).permute(0, 1, 3, 2, 4, 5)
    return t.reshape(B, (H // sh) * (W // sw), sh * sw, C)


def from_cells(cells: torch.Tensor, size, cell) -> torch.Tensor:
    """The inverse of :func:`to_cells`: ``(B, H'W', S_h S_w, C)`` -> ``(B, HW, C)``."""
    (H, W), (sh, sw) = size, cell
    B, C = cells.shape[0], cells.shape[-1]
    t = cells.reshape(B, H // sh, W // sw, sh, sw, C).permute(0, 1, 3, 2, 4, 5)
    return t.reshape(B, H * W, C)


def candidates(grid: torch.Tensor) -> torch.Tensor:
    """Centroids ``(B, H', W', C)`` -> each cell's 3 x 3 neighbours ``(B, H'W', 9, C)``, row by
    row from the upper left (zeros off the grid)."""
    B, h, w, C = grid.shape
    padded = F.pad(grid, (0, 0, 1, 1, 1, 1))
    shifted = [padded[:, i:i + h, j:j + w] for i in range(3) for j in range(3)]
    return torch.stack(shifted, 3).reshape(B, h * w, NEIGHBOURS, C)


def gather_back(shares: torch.Tensor, coarse) -> torch.Tensor:
    """Each cell's share for its 3 x 3 neighbours ``(B, H'W', 9, C)`` summed into the centroids
    ``(B, H', W', C)``: the adjoint of :func:`candidates`."""
    B, _, _, C = shares.shape
    h, w = coarse
    padded = shares.new_zeros(B, h + 2, w + 2, C)
    per_cell = shares.view(B, h, w, NEIGHBOURS, C)
    for i in range(3):
        for j in range(3):
            padded[:, i:i + h, j:j + w] += per_cell[:, :, :, 3 * i + j]
    return padded[:, 1:h + 1, 1:w + 1]


class GridClustering(nn.Module):
    """Local k-means of an ``(H, W)`` grid of tokens onto an ``(H/S_h, W/S_w)`` grid of centroids.

    The tokens of one cell all see the same 3 x 3 candidate centroids, so both steps of a round
    are one batched matrix product per cell: similarities ``(S_h S_w) x C`` by ``C x 9``, and
    the weighted sums back. :func:`candidates` gathers a cell's candidates (nine shifted views
    of the padded grid), :func:`gather_back` adds each cell's share into the centroids (its
    adjoint); a candidate off the grid gets weight 0. Everything stays channels-last, as the
    tokens come, so no step transposes a whole grid (``F.unfold`` and ``F.fold`` would: three
    times slower on a CPU).
    """

    def __init__(self, cell: tuple[int, int], steps: int = 1, temperature: float = 0.02):
        super().__init__()
        check_grid_options({"steps": steps, "temperature": temperature})
        self.cell, self.steps, self.temperature = tuple(cell), steps, float(temperature)

    def coarse_size(self, size: tuple[int, int]) -> tuple[int, int]:
        (H, W), (sh, sw) = size, self.cell
        if H % sh or W % sw:
            raise ValueError(f"grid clustering with cells of {sh}x{sw} tokens needs a stage grid "
                             f"divisible by them; this stage's grid is {H}x{W} (choose an image "
                             f"size or keep that divides it)")
        return H // sh, W // sw

    def assign(self, unit: torch.Tensor, centroids: torch.Tensor) -> torch.Tensor:
        """Soft assignment ``(B, H'W', S_h S_w, 9)`` of each token (``unit``: the cells of
        unit-length tokens) to its cell's candidates among ``centroids (B, H', W', C)``."""
        cand = candidates(F.normalize(centroids, dim=-1))  # (B, hw, 9, C)
        off_grid = candidates(centroids.new_ones(1, *centroids.shape[1:3], 1)) == 0
        sim = unit @ cand.transpose(2, 3)  # cosine similarities (B, hw, s, 9)
        return (sim / self.temperature).masked_fill(off_grid.transpose(2, 3), -math.inf).softmax(-1)

    @staticmethod
    def update(cells: torch.Tensor, weights: torch.Tensor, coarse) -> torch.Tensor:
        """Centroids ``(B, H', W', C)``: the weighted means of the tokens assigned to them."""
        total = gather_back(weights.transpose(2, 3) @ cells, coarse)  # (B, H', W', C)
        mass = gather_back(weights.sum(2)[..., None], coarse)  # (B, h, w, 1)
        return total / mass.clamp(min=1e-6)

    def forward(self, tokens: torch.Tensor, size) -> tuple[torch.Tensor, torch.Tensor, tuple]:
        """Image tokens ``(B, HW, C)`` -> centroids ``(B, H'W', C)``, the assignment
        ``(B, H'W', S_h S_w, 9)`` that formed them, and ``(H', W')``."""
        coarse = self.coarse_size(size)
        cells = to_cells(tokens, size, self.cell)  # (B, hw, s, C)
        unit = F.normalize(cells, dim=-1)
        centroids = cells.mean(2).view(cells.shape[0], *coarse, cells.shape[-1])
        for _ in range(self.steps):
            weights = self.assign(unit, centroids)
            centroids = self.update(cells, weights, coarse)
        return centroids.flatten(1, 2), weights, coarse

    def nearest(self, weights: torch.Tensor, size, coarse) -> torch.Tensor:
        """The centroid each token weighs most, ``(B, HW)`` in ``[0, H'W')`` (for figures)."""
        h, w = coarse
        k = weights.argmax(-1)  # (B, hw, s): which of the 3 x 3 candidates
        cell = torch.arange(h * w, device=k.device)[None, :, None]
        row = cell // w + k // 3 - 1
        col = cell % w + k % 3 - 1
        return from_cells((row * w + col)[..., None], size, self.cell)[..., 0]


class GridRebuild(nn.Module):
    """The full grid again: ``tokens (B, HW, C)`` plus the ``change (B, H'W', C)`` of the
    centroids each token was assigned to, weighed by its assignment (a module without
    parameters, so that ``ccoat.cost`` counts its product as ``broadcast``)."""

    def __init__(self, cell: tuple[int, int]):
        super().__init__()
        self.cell = tuple(cell)

    def forward(self, tokens, change, weights, size, coarse) -> torch.Tensor:
        grid = change.reshape(change.shape[0], *coarse, change.shape[-1])
        spread = weights @ candidates(grid)  # (B, hw, s, C)
        return tokens + from_cells(spread, size, self.cell)


class GridClusteredStage(nn.Module):
    """A CoaT-Lite stage whose blocks run on a coarser grid of centroids (see the module).

    It holds the stage's own modules under their own names (``patch_embed``, ``cls_token``,
    ``cpe``, ``crpe``, ``blocks``), so a state dict loads into either, and returns what a stage
    returns: tokens ``(B, 1 + H*W, C)`` on the full grid and ``(H, W)``.
    """

    def __init__(self, stage: nn.Module, keep: float, **options):
        super().__init__()
        check_grid_options(options)
        self.patch_embed, self.cls_token = stage.patch_embed, stage.cls_token
        self.cpe, self.crpe, self.blocks = stage.cpe, stage.crpe, stage.blocks
        self.grad_checkpointing = stage.grad_checkpointing
        self.keep = keep
        self.clustering = GridClustering(cell_for(keep), **options)
        self.rebuild = GridRebuild(self.clustering.cell)
        self.records: list[dict] = []  # one dict per open ccoat.record_token_clusters
        self.train(stage.training)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, tuple[int, int]]:
        tokens, size = self.patch_embed(x)
        if self.clustering.cell == (1, 1):  # a centroid per token: CoaT-Lite's stage
            centroids, weights, coarse = tokens, None, size
        else:
            centroids, weights, coarse = self.clustering(tokens, size)
        if self.records:
            self._record(tokens, weights, size, coarse)
        y = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), centroids], dim=1)
        for block in self.blocks:
            if self.grad_checkpointing and torch.is_grad_enabled():
                y = checkpoint(block, y, coarse, self.cpe, self.crpe, use_reentrant=False)
            else:
                y = block(y, coarse, self.cpe, self.crpe)
        if weights is None:
            return y, size
        full = self.rebuild(tokens, y[:, 1:] - centroids, weights, size, coarse)
        return torch.cat([y[:, :1], full], dim=1), size

    def _record(self, tokens, weights, size, coarse) -> None:
        """What :func:`ccoat.record_token_clusters` keeps, in the other methods' terms:
        ``assign (B, HW)`` (each token's heaviest centroid) and ``sizes (B, H'W')`` (each
        centroid's assigned weight), with the grid ``size``, ``coarse`` and ``weights``."""
        if weights is None:
            assign = torch.arange(tokens.shape[1], device=tokens.device).expand(
                tokens.shape[0], -1)
            sizes = torch.ones(assign.shape, device=tokens.device)
        else:
            assign = self.clustering.nearest(weights, size, coarse)
            sizes = gather_back(weights.sum(2)[..., None], coarse).flatten(1)
            weights = weights.detach()
        for record in self.records:
            record.update(assign=assign, sizes=sizes.detach(), size=size, coarse=coarse,
                          weights=weights)
