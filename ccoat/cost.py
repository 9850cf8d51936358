"""The cost audit: what every component of a CoaT-Lite forward pass costs.

The seed paper claims that clustering the queries makes CoaT lighter, and reports no numbers.
This module measures, for one forward pass of a ccoat model, per **component** and per
**stage**:

- **MACs** (multiply-accumulates) of the matrix products and convolutions, *counted* by torch's
  :class:`~torch.utils.flop_counter.FlopCounterMode` with its module breakdown, and *derived* by
  the closed forms of :func:`analytic_costs` (the two agree; the tests check it);
- **other operations**: the elementwise, reduction, sorting and gathering work that a MAC count
  does not see (softmax, LayerNorm, GELU, residual adds, and for the clustered kinds the
  hashing's floor, the sort, the scatter-mean and the broadcast), by documented analytic counts;
- **parameters** per component (:func:`parameters`).

What a pass *takes* on a machine (time, throughput, peak memory) is measured by
:mod:`ccoat.measure`; the figures are drawn by :mod:`ccoat.plotting`.

Components
----------
``patch_embed`` (strided conv of each stage), ``cpe`` (conv position encoding), ``norm`` (every
LayerNorm), ``qkv``, ``hashing`` / ``clustering`` / ``prototypes`` / ``broadcast`` (the
clustered kinds' extra steps), ``attention`` (the attention core proper:
``q @ (softmax_N(k)ᵀ v)``, ``softmax(q kᵀ) v``, or the same with prototypes in place of the
queries), ``crpe`` (conv relative position encoding ``q ⊙ DWConv(v)``), ``proj`` (output
projection), ``mlp``, ``residual`` (the two residual adds of each block) and ``head``;
:func:`ccoat.measure.component_times` adds ``other`` for the time no named module covers.

Conventions
-----------
**MACs.** One MAC is one multiply-accumulate. A matrix product
``(rows×inner) @ (inner×cols)`` is ``rows·inner·cols`` MACs; a convolution is
``output elements × C_in/groups × kernel height × kernel width`` MACs. This is what timm
publishes as "GMACs" and half of what ``FlopCounterMode`` reports as FLOPs (it counts a
multiply-accumulate as two FLOPs); :func:`counted_macs` halves it. Bias adds are not MACs.
Attention through ``scaled_dot_product_attention`` counts its two products,
``2·N_q·N_k·C_head`` per query row (one image, one head).

**Other operations** (analytic only; ``FlopCounterMode`` does not count them), per element:

============================  ==================================================================
bias add, residual add         1
scale by a constant            1
Hadamard product (CRPE)        1, and 1 for adding it to the core's output
softmax                        5 (max, subtract, exp, sum, divide)
LayerNorm                      7 (mean: add; centre: subtract; variance: multiply, add;
                               normalise: multiply; affine: multiply, add)
GELU (erf form)                5 (scale, erf, add, multiply, multiply)
hashing                        3 per code (add ``b``, divide by ``r``, floor)
clustering                     4 per code (its range, shift, multiply-add into the query's
                               key), ``⌈log₂ M⌉`` comparisons per query for the sort of all
                               ``M = B·h·HW`` keys (every image query of the pass), 6 per
                               query for ranks, ids and counts; with a cap, the merge's
                               prototypes, sort of cluster sizes, and nearest-kept search (its
                               ``cdist`` is MACs)
prototypes (scatter-mean)      1 per query element accumulated, 1 per query counted,
                               1 per prototype element divided
broadcast (gather)             1 per output element copied
============================  ==================================================================

A transcendental (exp, erf) counts as one operation, like an add: the count says how much
*elementwise traffic* a step makes, which is what decides its wall-clock on real hardware, not
how many cycles one element takes. Data movement other than the broadcast (reshapes, the class
token's concatenation, padding) is not counted.

Token-clustered models
----------------------
A block converted by :func:`ccoat.cluster_tokens` runs its norms, ``qkv``, ``attention``,
``proj`` and ``mlp`` on the class token and ``K`` prototypes and its ``cpe`` and ``crpe`` on the
full grid; forming the clusters is its own component (``hashing`` for LSH's codes,
``clustering`` for bipartite matching's similarity products and LSH's sorts; pool windows cost
nothing), and so are the merges (``prototypes``) and the broadcasts back to the grid
(``broadcast``). ``K`` depends only on ``keep`` and the grid, but LSH and bipartite matching
need values, so these models are counted on a real pass too.

Clustered kinds
---------------
The cost of the clustered kinds depends on the data: the number of clusters a query row forms is
adaptive. :func:`counted_macs` therefore runs a real forward pass for them (on ``images``, by
default two photos shipped with scikit-learn, resized), reads what each block formed through
``ccoat.clustering.record_clusters`` (:func:`cluster_counts`), and :func:`analytic_costs` takes
those counts as input. The cores pad every query row to the largest row's number of clusters
and compute on the padding too, so the padded width ``K_max`` is what the MACs follow. Kinds
without clustering are counted on the ``meta`` device: no memory, no arithmetic.
"""
from __future__ import annotations

import contextlib
import math
import re
from collections import Counter, defaultdict
from dataclasses import dataclass, replace

import torch
import torch.nn as nn
from torch.func import functional_call
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.flop_counter import FlopCounterMode

from . import checks
from .clustering import block_index, record_clusters
from .data import sample_photos
from .grid_clustering import NEIGHBOURS, GridClusteredStage
from .model import CLUSTERED_KINDS
from .token_clustering import TokenClusteredBlock, cluster_count

COMPONENTS = ("patch_embed", "cpe", "norm", "qkv", "hashing", "clustering", "prototypes",
              "attention", "broadcast", "crpe", "proj", "mlp", "residual", "head", "other")
CLUSTERING_COMPONENTS = ("hashing", "clustering", "prototypes", "broadcast")
STAGES = ("stage1", "stage2", "stage3", "stage4", "head")

# Analytic operation counts per element (see the module docstring).
OPS_LAYERNORM = 7
OPS_SOFTMAX = 5
OPS_GELU = 5
OPS_HASH_PER_CODE = 3  # add b, divide by r, floor
OPS_PACK_PER_CODE = 4  # range of the code (aminmax), shift, multiply-add into the key


# ---------------------------------------------------------------------------------------------
# Shapes and bad input


def as_hw(img_size) -> tuple[int, int]:
    """An image size as ``(H, W)``: an int is a square side, a pair is ``(H, W)``;
    ``ValueError`` for anything else."""
    if checks.is_integer(img_size):
        return img_size, img_size
    if isinstance(img_size, (tuple, list)) and len(img_size) == 2 and \
            all(map(checks.is_integer, img_size)):
        return int(img_size[0]), int(img_size[1])
    raise ValueError(f"img_size must be an int or a pair (H, W) of ints, got {img_size!r}")


def check_input(model: nn.Module, img_size=224, batch_size: int = 1) -> tuple[int, int]:
    """Return ``(H, W)``; raise ``ValueError`` saying what was expected for a size the model
    cannot take or a batch size below 1."""
    checks.integer("batch_size", batch_size, 1)
    H, W = as_hw(img_size)
    stride = model.config.stride
    if H < 1 or W < 1 or H % stride or W % stride:
        raise ValueError(f"image side must be a positive multiple of {stride} for this model "
                         f"(patch {model.config.patch_size}, then three 2x2 patch merges), "
                         f"got {H}x{W}")
    return H, W


@dataclass(frozen=True)
class StageShape:
    """What one stage computes on: its grid, tokens and widths."""

    name: str
    grid: tuple[int, int]  # (H, W) of the stage's image tokens
    in_chans: int
    patch: int
    dim: int
    heads: int
    depth: int
    hidden: int  # MLP width
    crpe_windows: dict
    kind: str

    @property
    def image_tokens(self) -> int:
        return self.grid[0] * self.grid[1]

    @property
    def tokens(self) -> int:  # class token + image tokens
        return 1 + self.image_tokens


def stage_shapes(model: nn.Module, img_size=224) -> list[StageShape]:
    """The four stages of ``model`` on an ``img_size`` input."""
    H, W = check_input(model, img_size)
    config, kinds = model.config, model.attention_kinds
    shapes, in_chans = [], model.in_chans
    for i, (dim, depth, ratio, patch) in enumerate(zip(
            config.embed_dims, config.depths, config.mlp_ratios, config.stage_patches)):
        H, W = H // patch, W // patch
        shapes.append(StageShape(STAGES[i], (H, W), in_chans, patch, dim, config.num_heads, depth,
                                 int(dim * ratio), dict(config.crpe_windows), kinds[i]))
        in_chans = dim
    return shapes


def _clustering_options(model: nn.Module) -> tuple[list, list]:
    """``n_hashes`` and ``max_clusters`` of each stage's clustered core (None for other kinds)."""
    cores = [stage.blocks[0].attn.core for stage in model.stages]
    return ([core.hasher.n_hashes if hasattr(core, "hasher") else None for core in cores],
            [getattr(core, "max_clusters", None) for core in cores])


def _log2(n: int) -> int:
    """Comparisons per element of a sort of ``n`` elements: ``ceil(log2 n)``."""
    return max(1, math.ceil(math.log2(max(n, 1))))


# ---------------------------------------------------------------------------------------------
# Counting with FlopCounterMode

# Module path inside the model -> component. Shared CPE/CRPE are named by the stage that owns
# them; parts of a clustered core are matched by the name of the core's child module.
_COMPONENT_RULES = [
    (re.compile(r"^stages\.(\d)\.patch_embed\.proj$"), "patch_embed"),
    (re.compile(r"^stages\.(\d)\.cpe\.proj$"), "cpe"),
    (re.compile(r"^stages\.(\d)\.crpe\.convs\.\d+$"), "crpe"),
    (re.compile(r"^stages\.(\d)\.blocks\.\d+\.attn\.qkv$"), "qkv"),
    (re.compile(r"^stages\.(\d)\.blocks\.\d+\.attn\.proj$"), "proj"),
    (re.compile(r"^stages\.(\d)\.blocks\.\d+\.mlp\.fc[12]$"), "mlp"),
    (re.compile(r"^stages\.(\d)\.(?:blocks\.\d+\.norm[12]|patch_embed\.norm)$"), "norm"),
    # A token-clustered block (ccoat.token_clustering): LSH codes of its tokens, bipartite
    # matching, and the attention core on its prototypes (its qkv, proj, mlp match above).
    (re.compile(r"^stages\.(\d)\.blocks\.\d+\.lsh$"), "hashing"),
    (re.compile(r"^stages\.(\d)\.blocks\.\d+\.matching$"), "clustering"),
    (re.compile(r"^stages\.(\d)\.blocks\.\d+\.prototype_attention$"), "attention"),
    # A grid-clustered stage (ccoat.grid_clustering): its local k-means and the rebuild of the
    # full grid (its blocks match above, on the coarse grid).
    (re.compile(r"^stages\.(\d)\.clustering$"), "clustering"),
    (re.compile(r"^stages\.(\d)\.rebuild$"), "broadcast"),
    (re.compile(r"^head$"), "head"),
    (re.compile(r"^norm$"), "norm"),
]
_CORE = re.compile(r"^stages\.(\d)\.blocks\.\d+\.attn\.core(?:\.(\w+))?")
# Child module names of a clustered core -> component.
CORE_CHILD_COMPONENTS = {
    "hasher": "hashing", "hashing": "hashing", "lsh": "hashing", "e2lsh": "hashing",
}


def _cdist_flops(x1_shape, x2_shape, *args, out_shape=None, **kwargs) -> int:
    """``cdist`` of ``(..., rows1, width)`` and ``(..., rows2, width)``: one
    ``rows1 x width x rows2`` product (2 FLOPs/MAC)."""
    return 2 * math.prod(out_shape) * x1_shape[-1]


def _sdpa_flops(query_shape, key_shape, value_shape, *args, **kwargs) -> int:
    """Attention of ``(B, h, N_q, C_head)`` queries on ``(B, h_kv, N_k, C_head)`` keys and
    ``(B, h_kv, N_k, C_v)`` values: ``q kᵀ`` and ``(·) v`` for every query head, 2 FLOPs/MAC."""
    B, h, n_q, c = query_shape
    n_k, c_v = key_shape[-2], value_shape[-1]
    return 2 * B * h * n_q * n_k * (c + c_v)


# The fused kernels behind ``scaled_dot_product_attention``, all with (B, heads, N, C_head)
# inputs. Which one runs depends on the device, the dtype, the shapes and the torch version;
# torch's own counter has formulas for some of them, not the same ones in every version (torch
# 2.11 counted 0 for attention that torch 2.15 counts right). ccoat registers its formula for
# every one that the installed torch has, so the count is the same on every supported torch.
# The math fallback decomposes into matrix products, which every torch counts; it is listed in
# case a torch dispatches it whole.
SDPA_OPS = tuple(
    getattr(torch.ops.aten, name) for name in (
        "_scaled_dot_product_flash_attention",
        "_scaled_dot_product_flash_attention_for_cpu",
        "_scaled_dot_product_efficient_attention",
        "_scaled_dot_product_cudnn_attention",
        "_scaled_dot_product_fused_attention_overrideable",
        "_scaled_dot_product_attention_math",
        "_scaled_dot_product_attention_math_for_mps",
    ) if hasattr(torch.ops.aten, name)
)

# Operators FlopCounterMode does not know (or not on every torch), and which of them belong to
# the clustering step. (cdist takes the matrix-product route, _euclidean_dist, when either side
# has over 25 rows.)
_EXTRA_FLOP_FORMULAS = {torch.ops.aten._cdist_forward: _cdist_flops,
                        torch.ops.aten._euclidean_dist: _cdist_flops,
                        **{op: _sdpa_flops for op in SDPA_OPS}}
_CLUSTERING_OPS = {"aten._cdist_forward", "aten._euclidean_dist"}


class _UncountedAttention(TorchDispatchMode):
    """Raise instead of letting an attention kernel that ``registry`` has no formula for count 0
    (a fused kernel of a newer torch): a MAC count that silently drops the attention is wrong."""

    def __init__(self, registry):
        super().__init__()
        self.registry = registry

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        packet = func._overloadpacket
        name = str(packet)
        if "attention" in name and "backward" not in name and packet not in self.registry:
            raise RuntimeError(f"ccoat.cost has no FLOP formula for {name} (torch "
                               f"{torch.__version__}); add it to ccoat.cost.SDPA_OPS")
        return func(*args, **(kwargs or {}))


@contextlib.contextmanager
def flop_counter(depth: int | None = None):
    """A :class:`~torch.utils.flop_counter.FlopCounterMode` that counts what ccoat's cost model
    counts on every supported torch: torch's formulas plus ccoat's for ``cdist`` and for every
    fused attention kernel (:data:`SDPA_OPS`). An attention kernel without a formula raises.

    ``with ccoat.cost.flop_counter() as counter: ...; counter.get_total_flops()`` (FLOPs, two
    per MAC).
    """
    counter = FlopCounterMode(display=False, depth=depth, custom_mapping=_EXTRA_FLOP_FORMULAS)
    with counter, _UncountedAttention(counter.flop_registry):
        yield counter


def component_of(path: str) -> tuple[str, str] | None:
    """``"stages.0.blocks.1.attn.qkv"`` -> ``("qkv", "stage1")``; None for container modules."""
    for pattern, component in _COMPONENT_RULES:
        match = pattern.match(path)
        if match:
            return component, (STAGES[int(match.group(1))] if match.groups() else "head")
    match = _CORE.match(path)
    if match:
        child = match.group(2)
        if child is None:
            return "attention", STAGES[int(match.group(1))]
        return CORE_CHILD_COMPONENTS.get(child, "attention"), STAGES[int(match.group(1))]
    return None


def has_clustering(model: nn.Module) -> bool:
    """Whether a pass of ``model`` clusters: queries (a clustered kind) or tokens."""
    return (any(kind in CLUSTERED_KINDS for kind in model.attention_kinds)
            or bool(_token_clustered_blocks(model))
            or any(isinstance(stage, GridClusteredStage) for stage in model.stages))


def _token_clustered_blocks(model: nn.Module) -> dict[tuple[int, int], TokenClusteredBlock]:
    """The token-clustered blocks of ``model`` by ``(stage index, block index)``."""
    return {(s, b): block for s, stage in enumerate(model.stages)
            for b, block in enumerate(stage.blocks) if isinstance(block, TokenClusteredBlock)}


def counted_macs(model: nn.Module, img_size=224, batch_size: int = 1,
                 images: torch.Tensor | None = None) -> dict[tuple[str, str], int]:
    """MACs per ``(component, stage)`` of one forward pass, counted by ``FlopCounterMode``.

    Every FLOP the counter sees is attributed to exactly one component (the innermost module
    that a rule names; a core's own FLOPs are ``attention``); a FLOP left over would be an error.
    """
    return _count(model, img_size, batch_size, images)[0]


def _count(model, img_size, batch_size, images):
    """``(MACs per (component, stage), clusters per (stage, block) or None)`` from one pass."""
    check_input(model, img_size, batch_size)
    root = type(model).__name__ + "."
    clusters = None
    with torch.no_grad(), _own_random_state(model):
        if has_clustering(model):  # the cost depends on the data: run it for real
            x = images_for(model, img_size, batch_size, images)
            with _ClusterRecorder(model) as recorder, flop_counter() as counter:
                model(x)
            clusters = recorder.clusters
        else:  # shapes only: no memory, no arithmetic
            H, W = as_hw(img_size)
            meta = {name: torch.empty_like(t, device="meta")
                    for name, t in [*model.named_parameters(), *model.named_buffers()]}
            x = torch.empty(batch_size, model.in_chans, H, W, device="meta")
            with flop_counter() as counter:
                functional_call(model, meta, (x,))

    # FLOPs per module path and operator. A module's own FLOPs are its count minus that of its
    # named children (a core's hasher); within a core, the operators of the cluster cap's
    # merge step (cdist) are "clustering" and the rest "attention".
    per_path = {name[len(root):]: ops for name, ops in counter.get_flop_counts().items()
                if name.startswith(root)}
    per_component: dict[tuple[str, str], int] = defaultdict(int)
    attributed = 0
    for path, ops in per_path.items():
        key = component_of(path)
        if key is None:
            continue
        own = Counter({str(op): n for op, n in ops.items()})
        for child, child_ops in per_path.items():
            if (child.startswith(path + ".") and child.count(".") == path.count(".") + 1
                    and component_of(child) is not None):
                own.subtract({str(op): n for op, n in child_ops.items()})
        for op, flops in own.items():
            component = "clustering" if key[0] == "attention" and op in _CLUSTERING_OPS else key[0]
            per_component[(component, key[1])] += flops // 2
            attributed += flops
    total = counter.get_total_flops()
    if attributed != total:
        raise RuntimeError(f"FlopCounterMode saw {total} FLOPs but only {attributed} belong to a "
                           f"known component: a module of {type(model).__name__} is not covered "
                           "by ccoat.cost's rules")
    return dict(per_component), clusters


def _own_random_state(model: nn.Module):
    """Leave torch's random state as it was: a counting pass may draw (a clustered core with
    ``redraw=True`` draws new hash projections every pass), and counting must not change what
    a later seeded computation draws."""
    devices = sorted({p.device.index or 0 for p in model.parameters() if p.device.type == "cuda"})
    return torch.random.fork_rng(devices=devices)


def images_for(model, img_size, batch_size, images):
    """The batch a pass of ``model`` runs on, on its device: ``images`` checked against
    ``(batch_size, C, H, W)``, or, when None, :func:`ccoat.data.sample_photos` of that size."""
    if images is None:
        images = sample_photos(img_size, batch_size)
    if images.shape[0] != batch_size or tuple(images.shape[-2:]) != as_hw(img_size):
        raise ValueError(f"images must have shape ({batch_size}, {model.in_chans}, "
                         f"{'x'.join(map(str, as_hw(img_size)))}), got {tuple(images.shape)}")
    device = next(model.parameters()).device
    return images.to(device)


@dataclass(frozen=True)
class BlockClusters:
    """What one block's clustering formed, over all its ``rows = B * heads`` query rows.

    ``total``: clusters summed over rows (the ``K`` of every row); ``padded``: ``rows * K_max``,
    with ``K_max`` the width the cores compute with (every row is padded to the largest row's
    ``K``), so prototype attention runs on ``rows * (1 + K_max)`` queries (the class token is a
    cluster of its own). ``before_cap``: the same before the cap ``K_cap`` (``max_clusters``)
    merged clusters (equal to ``padded`` without a cap).
    """

    total: int
    padded: int
    before_cap: int
    rows: int

    @property
    def per_row(self) -> float:
        return self.total / self.rows


class _ClusterRecorder:
    """``ccoat.clustering.record_clusters`` (clusters the cores used) plus a forward hook on
    every hasher (clusters before the cap) -> :class:`BlockClusters` per ``(stage, block)``."""

    def __init__(self, model: nn.Module):
        self.model = model
        self.recording = record_clusters(model)
        self.before_cap: dict[str, int] = {}
        self.clusters: dict[tuple[str, int], BlockClusters] = {}

    def __enter__(self):
        self.records = self.recording.__enter__()
        self.handles = []
        for name, module in self.model.named_modules():
            if name.endswith(".attn.core") and hasattr(module, "hasher"):
                block = name.removesuffix(".attn.core")
                self.handles.append(module.hasher.register_forward_hook(
                    lambda m, args, out, block=block: self.before_cap.__setitem__(
                        block, out.max_clusters)))
        return self

    def __exit__(self, *exc):
        for handle in self.handles:
            handle.remove()
        self.recording.__exit__(*exc)
        for block, entry in self.records.items():
            s, b = block_index(block)
            num = entry["num_clusters"]  # (B, heads)
            padded = num.numel() * entry["counts"].shape[-1]
            self.clusters[(STAGES[s], b)] = BlockClusters(
                int(num.sum()), padded, num.numel() * self.before_cap.get(block, padded // num.numel()),
                num.numel())
        return False


def cluster_counts(model: nn.Module, img_size=224, batch_size: int = 1,
                   images: torch.Tensor | None = None) -> dict[tuple[str, int], BlockClusters]:
    """What the clustering formed in each ``(stage, block)`` of a forward pass on ``images``."""
    check_input(model, img_size, batch_size)
    x = images_for(model, img_size, batch_size, images)
    with torch.no_grad(), _ClusterRecorder(model) as recorder:
        model(x)
    return recorder.clusters


def stage_clusters_per_row(clusters: dict[tuple[str, int], BlockClusters] | None,
                           stage: str = "stage1") -> float | None:
    """Mean clusters per query row (one image, one head) over the blocks of ``stage``, from
    :func:`cluster_counts` or an :func:`audit` table's ``attrs["clusters"]``; None when no
    block of ``stage`` clustered."""
    per_row = [c.per_row for (s, _), c in (clusters or {}).items() if s == stage]
    return sum(per_row) / len(per_row) if per_row else None


# ---------------------------------------------------------------------------------------------
# Analytic counts


def analytic_costs(model: nn.Module, img_size=224, batch_size: int = 1,
                   clusters: dict[tuple[str, int], BlockClusters] | None = None
                   ) -> dict[tuple[str, str], dict[str, float]]:
    """Closed-form MACs and other operations per ``(component, stage)``.

    ``clusters`` gives, for the clustered kinds, what each ``(stage, block)`` formed
    (:func:`cluster_counts`); a block without an entry is costed as if every query were its
    own cluster (the most a clustered core can cost).

    Per block, with ``N = 1 + H·W`` tokens, width ``C``, ``h`` heads of ``C_head = C/h``
    channels, MLP width ``D``, batch ``B``: ``qkv = 3BNC²``, ``proj = BNC²``, ``mlp = 2BNCD``,
    ``cpe = 9BHWC``, ``crpe = BHW·Σ_w h_w·C_head·w²`` (``h_w`` heads of window ``w``); the
    core: factorized ``2BNC·C_head``, softmax ``2BN²C``. The clustered kinds, with ``L``
    hashes and ``Q = Bh(1 + K_max)`` queries (the class token and ``K_max`` prototype slots
    per row, ``K_max`` the padded width): hashing ``BHWCL`` (every image query against ``L``
    projections), clustered ``2QN·C_head`` (queries × keys, then × values),
    clustered-factorized ``BNC·C_head + Q·C_head²`` (CoaT's context over all tokens, then the
    queries); with a cap of ``K_cap`` clusters below the ``K₀`` formed (the padded width
    before the cap), the merge step's ``cdist`` ``Bh·K₀·K_cap·C_head``.
    """
    check_input(model, img_size, batch_size)
    B, clusters = batch_size, clusters or {}
    n_hashes, max_clusters = _clustering_options(model)
    token_blocks = _token_clustered_blocks(model)
    costs: dict[tuple[str, str], dict[str, float]] = defaultdict(lambda: {"macs": 0.0, "ops": 0.0})

    def add(component, stage, n_macs=0.0, n_ops=0.0):
        costs[(component, stage)]["macs"] += n_macs
        costs[(component, stage)]["ops"] += n_ops

    for s, sh in enumerate(stage_shapes(model, img_size)):
        st, N, HW, C, h = sh.name, sh.tokens, sh.image_tokens, sh.dim, sh.heads
        c = C // h
        add("patch_embed", st, B * HW * C * sh.in_chans * sh.patch ** 2, B * HW * C)  # + bias
        add("norm", st, 0, OPS_LAYERNORM * B * HW * C)  # the patch embedding's LayerNorm
        grid = model.stages[s]
        if isinstance(grid, GridClusteredStage) and grid.clustering.cell != (1, 1):
            sh = _grid_costs(add, sh, B, grid)  # the blocks then run on the coarse grid
            N, HW = sh.tokens, sh.image_tokens
        crpe_macs = B * HW * sum(heads * c * w * w for w, heads in sh.crpe_windows.items())
        for b in range(sh.depth):
            if (s, b) in token_blocks:  # sub-layers on the class token and K prototypes
                _token_clustered_block_costs(add, sh, B, token_blocks[(s, b)])
                continue
            _block_sublayer_costs(add, sh, B, crpe_macs)
            rows, M = B * h, B * HW * h  # query rows; image-token queries in all rows
            if sh.kind == "factorized":
                # softmax over the keys' tokens; the scale is folded into the C_head x C_head
                # context
                add("attention", st, 2 * B * N * C * c, OPS_SOFTMAX * B * N * C + B * C * c)
            elif sh.kind == "softmax":
                add("attention", st, 2 * B * N * N * C, (OPS_SOFTMAX + 1) * rows * N * N)
            elif sh.kind in CLUSTERED_KINDS:
                L, cap = n_hashes[s], max_clusters[s]
                # Without a count, assume every image query is its own cluster (the most).
                bc = clusters.get((st, b)) or BlockClusters(M, M, M, rows)
                K, K0 = bc.padded // rows, bc.before_cap // rows  # per row, after / before cap
                add("hashing", st, B * HW * C * L, OPS_HASH_PER_CODE * M * L)
                add("clustering", st, 0, M * (OPS_PACK_PER_CODE * L + _log2(M) + 6))
                if cap is not None and K0 > cap:  # merge into the cap: prototypes, cdist, sort
                    add("clustering", st, rows * K0 * cap * c,
                        M * c + rows * K0 * (c + _log2(K0) + cap) + 2 * M)
                add("prototypes", st, 0, M * c + rows * K * c)  # scatter-add, divide
                add("broadcast", st, 0, M * c)  # gather
                Q = rows * (1 + K)  # the class token's query and K_max prototype slots per row
                if sh.kind == "clustered":
                    add("attention", st, 2 * Q * N * c, (OPS_SOFTMAX + 1) * Q * N)
                else:  # softmax_N(k)ᵀ v over all tokens as in CoaT, then prototypes @ context
                    add("attention", st, B * N * C * c + Q * c * c,
                        OPS_SOFTMAX * B * N * C + rows * c * c)
            else:
                raise ValueError(f"no cost model for attention kind {sh.kind!r}")
    C4 = model.config.embed_dims[-1]
    add("norm", "head", 0, OPS_LAYERNORM * B * (1 + stage_shapes(model, img_size)[-1].image_tokens) * C4)
    if isinstance(model.head, nn.Linear):
        add("head", "head", B * C4 * model.head.out_features, B * model.head.out_features)
    return dict(costs)


def _block_sublayer_costs(add, sh: StageShape, B: int, crpe_macs: float) -> None:
    """A block's sub-layers around its attention core, on ``sh``'s tokens (a grid-clustered
    stage's coarse grid): CPE, the two norms, qkv, CRPE, the projection, the MLP and the
    residuals."""
    st, N, HW, C, D = sh.name, sh.tokens, sh.image_tokens, sh.dim, sh.hidden
    add("cpe", st, 9 * B * HW * C, 2 * B * HW * C)  # + bias, + residual
    add("norm", st, 0, 2 * OPS_LAYERNORM * B * N * C)
    add("qkv", st, 3 * B * N * C * C, 3 * B * N * C)
    add("crpe", st, crpe_macs, 2 * B * HW * C + B * N * C)  # bias, ⊙, + core output
    add("proj", st, B * N * C * C, B * N * C)
    add("mlp", st, 2 * B * N * C * D, B * N * (D + C) + OPS_GELU * B * N * D)
    add("residual", st, 0, 2 * B * N * C)


def _grid_costs(add, sh: StageShape, B: int, stage: GridClusteredStage) -> StageShape:
    """A grid-clustered stage (:mod:`ccoat.grid_clustering`) beyond its patch embedding: the
    local k-means (``clustering``), the rebuild of the full grid (``broadcast``); returns the
    shape its blocks run on, the coarse grid.

    With ``HW`` image tokens of width ``C``, ``H'W'`` centroids (the coarse grid) and 9
    candidates per token, each of ``steps`` rounds costs two ``HW x 9 x C`` products
    (similarities; weighted sums) and, per element: normalising tokens and candidates (3),
    dividing by the temperature, masking and the softmax over 9 (7), summing the weights,
    folding the shares and the mass into the centroids and dividing (``9C + 9`` per centroid,
    9 per token); the start is a mean over each cell (1 per token element). The rebuild is one
    ``HW x 9 x C`` product and an add."""
    st, HW, C = sh.name, sh.image_tokens, sh.dim
    clustering = stage.clustering
    h, w = clustering.coarse_size(sh.grid)
    n, k = h * w, NEIGHBOURS
    per_step = 3 * HW * C + 3 * n * k * C + 7 * HW * k + HW * k + n * k * (C + 1) + n * (C + 1)
    add("clustering", st, B * 2 * HW * k * C * clustering.steps,
        B * (HW * C + clustering.steps * per_step))
    add("broadcast", st, B * HW * k * C, B * (HW * C + n * C))  # + tokens; change = y - c
    return replace(sh, grid=(h, w))


def _token_clustered_block_costs(add, sh: StageShape, B: int, block: TokenClusteredBlock) -> None:
    """One token-clustered block (:mod:`ccoat.token_clustering`): norms, qkv, the attention
    core, proj and MLP on ``1 + K`` tokens (the class token and ``K`` prototypes); CPE and
    CRPE on the full grid; the merges (``prototypes``), the broadcasts to the grid
    (``broadcast``), and, in a block that forms its clusters, the forming."""
    st, N, HW, C, h, D = sh.name, sh.tokens, sh.image_tokens, sh.dim, sh.heads, sh.hidden
    c = C // h
    K = cluster_count(block.method, block.keep, sh.grid)
    M = 1 + K
    add("cpe", st, 9 * B * HW * C, 2 * B * HW * C)  # + bias, + residual
    add("norm", st, 0, 2 * OPS_LAYERNORM * B * M * C)
    add("qkv", st, 3 * B * M * C * C, 3 * B * M * C)
    crpe_macs = B * HW * sum(heads * c * w * w for w, heads in sh.crpe_windows.items())
    add("crpe", st, crpe_macs, 2 * B * HW * C + B * M * C)  # bias, ⊙ (full grid), + core output
    add("proj", st, B * M * C * C, B * M * C)
    add("mlp", st, 2 * B * M * C * D, B * M * (D + C) + OPS_GELU * B * M * D)
    add("residual", st, 0, 2 * B * N * C + B * K * C)  # two adds on the grid, prototypes += y
    if sh.kind == "factorized":  # + the proportional log-size bias on the keys
        add("attention", st, 2 * B * M * C * c, (OPS_SOFTMAX + 1) * B * M * C + B * C * c)
    else:  # softmax with the log-size bias as a mask
        add("attention", st, 2 * B * M * M * C, (OPS_SOFTMAX + 2) * B * h * M * M)
    # merge (weigh, scatter-add, count, divide) of the tokens and of CRPE's output
    add("prototypes", st, 0, 2 * (2 * B * HW * C + B * HW + B * K * C))
    add("broadcast", st, 0, 4 * B * HW * C)  # q and v to the grid for CRPE, two updates back
    if block.shared is None or block.lead:  # scope="stage": only the first block forms them
        _forming_costs(add, sh, B, block, K)


def _forming_costs(add, sh: StageShape, B: int, block: TokenClusteredBlock, K: int) -> None:
    """Forming ``K`` clusters of a stage's image tokens: ``pool`` costs nothing (windows from
    the shape); ``bipartite`` a ``⌈m/2⌉ x ⌊m/2⌋`` cosine-similarity product per round of ``m``
    units (``clustering``); ``lsh`` the E2LSH codes of every token (``hashing``) and a stable
    sort per hash (``clustering``)."""
    st, HW, C = sh.name, sh.image_tokens, sh.dim
    if block.method == "bipartite":
        m = HW
        while m > K:  # the rounds of ccoat.token_clustering.bipartite_clusters
            r, a, b = min(m - K, m // 2), (m + 1) // 2, m // 2
            # normalise, max over the second set, sort of the first, merge (weigh, scatter-add,
            # count, divide)
            ops = 3 * m * C + a * b + a * _log2(a) + 2 * m * C + m + (m - r) * C
            add("clustering", st, B * a * b * C, B * ops)
            m -= r
    elif block.method == "lsh":
        L = block.lsh.projections.shape[1]
        add("hashing", st, B * HW * C * L, B * (3 * HW * C + OPS_HASH_PER_CODE * HW * L))
        add("clustering", st, 0, B * L * HW * (_log2(HW) + 2) + B * HW)  # sorts, gathers, scatter


# ---------------------------------------------------------------------------------------------
# The audit: one table


def audit(model: nn.Module, img_size=224, batch_size: int = 1,
          images: torch.Tensor | None = None):
    """One row per ``(component, stage)``: counted and analytic MACs, other operations, and
    parameters. Returns a ``pandas.DataFrame`` (columns ``component, stage, macs,
    macs_analytic, ops, params``); the clustered kinds are run on ``images``."""
    import pandas as pd

    counted, clusters = _count(model, img_size, batch_size, images)
    analytic = analytic_costs(model, img_size, batch_size, clusters)
    params = parameters(model, by_stage=True)
    keys = sorted(set(counted) | set(analytic) | {k for k in params if isinstance(k, tuple)},
                  key=lambda k: (STAGES.index(k[1]), COMPONENTS.index(k[0])))
    rows = [{"component": comp, "stage": stage, "macs": counted.get((comp, stage), 0),
             "macs_analytic": analytic.get((comp, stage), {}).get("macs", 0.0),
             "ops": analytic.get((comp, stage), {}).get("ops", 0.0),
             "params": params.get((comp, stage), 0)} for comp, stage in keys]
    table = pd.DataFrame(rows)
    table.attrs["clusters"] = clusters  # per (stage, block), summed over batch and heads
    return table


def macs(model: nn.Module, img_size=224, batch_size: int = 1,
         images: torch.Tensor | None = None) -> dict[str, int]:
    """MACs of one forward pass per component, counted by ``FlopCounterMode``, plus ``"total"``.

    Components with no matrix product or convolution (``norm``, ``residual``, and the
    clustering, prototype and broadcast steps) have 0 MACs; their work is in the ``ops`` column
    of :func:`audit`.
    """
    counted = counted_macs(model, img_size, batch_size, images)
    out = {component: 0 for component in _components_of(model)}
    for (component, _), value in counted.items():
        out[component] = out.get(component, 0) + value
    out["total"] = sum(counted.values())
    return out


def _components_of(model: nn.Module) -> list[str]:
    clustered = has_clustering(model)
    return [c for c in COMPONENTS if c != "other" and (clustered or c not in CLUSTERING_COMPONENTS)]


def parameters(model: nn.Module, by_stage: bool = False) -> dict:
    """Parameter count per component (or per ``(component, stage)``), plus ``"total"``.

    A stage's class token is counted with its patch embedding; shared CPE/CRPE once per stage.
    """
    out: dict = defaultdict(int)
    for name, p in model.named_parameters():
        match = re.match(r"stages\.(\d)\.(.+)", name)
        stage = STAGES[int(match.group(1))] if match else "head"
        rest = match.group(2) if match else name
        if rest == "cls_token" or rest.startswith("patch_embed.proj"):
            component = "patch_embed"
        elif re.search(r"(^|\.)norm\d?\.", rest) or rest.startswith("norm."):
            component = "norm"
        else:
            key = component_of(re.sub(r"\.(weight|bias|[\w]+)$", "", name))
            component = key[0] if key else "other"
        out[(component, stage) if by_stage else component] += p.numel()
    out["total"] = sum(p.numel() for p in model.parameters())
    return dict(out)

