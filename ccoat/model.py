"""CoaT-Lite (Xu et al., 2021), written from its concepts, and its Clustering CoaT variants.

A CoaT-Lite is four stages. Each stage

1. embeds patches of the previous feature map (a strided convolution, then LayerNorm),
2. puts a learned class token in front of the image tokens,
3. runs serial blocks ``x += ConvAttention(LN(CPE(x))); x += MLP(LN(x))``, whose CPE and CRPE
   convolutions are shared by all blocks of the stage,
4. drops the class token and hands the image grid to the next stage.

The class token of the last stage, after a LayerNorm, is classified by a linear head.

The patch strides are ``patch_size, 2, 2, 2``, so an input side must be divisible by
``8 * patch_size``: 32 for the ImageNet models (``patch_size=4``), 16 for the small-image
models named ``*_cifar`` (``patch_size=2``, grids 16, 8, 4, 2 for a 32x32 image).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from functools import partial

import torch
import torch.fx
import torch.nn as nn
from timm.layers import DropPath, trunc_normal_
from torch.utils.checkpoint import checkpoint

from . import checks
from .attention import (
    DEFAULT_CRPE_WINDOWS,
    ConvAttention,
    ConvPosEnc,
    ConvRelPosEnc,
    FactorizedCore,
    SoftmaxCore,
)
from .clustering import (
    CLUSTERING_OPTIONS,
    ClusteredCore,
    ClusteredCoreBase,
    ClusteredFactorizedCore,
)

# The one table of attention kinds: name -> core. Every kind has the same parameters (qkv, proj,
# the stage's CPE and CRPE); only the core differs, so one set of weights runs as any kind.
ATTENTION_CORES = {
    "factorized": FactorizedCore,  # CoaT's own: q (softmax(k)ᵀ v)
    "softmax": SoftmaxCore,  # exact attention, softmax(q kᵀ) v
    "clustered": ClusteredCore,  # the seed's: prototypes of LSH clusters of the queries
    "clustered_factorized": ClusteredFactorizedCore,  # the same inside CoaT's product
}
ATTENTION_KINDS = tuple(ATTENTION_CORES)
# The kinds whose core clusters the queries (and takes CLUSTERING_OPTIONS).
CLUSTERED_KINDS = tuple(kind for kind, core in ATTENTION_CORES.items()
                        if issubclass(core, ClusteredCoreBase))


def make_core(kind: str, head_dim: int | None = None, **options) -> nn.Module:
    """The attention core of ``kind``; ``options`` (:data:`~ccoat.clustering.CLUSTERING_OPTIONS`)
    go to the clustered kinds, whose hash projections ``head_dim`` (one head's width) sizes."""
    if kind not in ATTENTION_CORES:
        raise ValueError(f"attention kind must be one of {ATTENTION_KINDS}, got {kind!r}")
    if kind not in CLUSTERED_KINDS:
        if options:
            raise ValueError(f"attention kind {kind!r} takes no options, got {sorted(options)}")
        return ATTENTION_CORES[kind]()
    unknown = sorted(set(options) - set(CLUSTERING_OPTIONS))
    if unknown:
        raise ValueError(f"unknown clustering options {unknown}; expected some of "
                         f"{sorted(CLUSTERING_OPTIONS)}")
    if head_dim is None:
        raise ValueError("a clustered core needs head_dim (the size of one head's queries)")
    return ATTENTION_CORES[kind](head_dim, **options)


@dataclass(frozen=True)
class CoaTLiteConfig:
    """The numbers that tell one CoaT-Lite from another."""

    embed_dims: tuple[int, int, int, int]
    depths: tuple[int, int, int, int]  # serial blocks per stage
    mlp_ratios: tuple[float, float, float, float]
    num_heads: int = 8
    patch_size: int = 4  # first stage's patch; stages 2-4 use 2
    crpe_windows: dict = field(default_factory=lambda: dict(DEFAULT_CRPE_WINDOWS))

    @property
    def stage_patches(self) -> tuple[int, int, int, int]:
        """Each stage's patch embedding stride: ``patch_size``, then 2x2 merges."""
        return (self.patch_size, 2, 2, 2)

    @property
    def stride(self) -> int:
        """Total downsampling of the last stage; input sides must be divisible by it."""
        return self.patch_size * 8


# The four CoaT-Lite sizes, as in the paper and timm.
CONFIGS = {
    "tiny": CoaTLiteConfig((64, 128, 256, 320), (2, 2, 2, 2), (8, 8, 4, 4)),
    "mini": CoaTLiteConfig((64, 128, 320, 512), (2, 2, 2, 2), (8, 8, 4, 4)),
    "small": CoaTLiteConfig((64, 128, 320, 512), (3, 4, 6, 3), (8, 8, 4, 4)),
    "medium": CoaTLiteConfig((128, 256, 320, 512), (3, 6, 10, 8), (4, 4, 4, 4)),
}
# Small-image (CIFAR, 32x32) variants: the same sizes with a 2x2 first patch.
CIFAR_PATCH_SIZE = 2


def config_for(size: str, small_image: bool = False) -> CoaTLiteConfig:
    config = CONFIGS[size]
    return replace(config, patch_size=CIFAR_PATCH_SIZE) if small_image else config


class PatchEmbed(nn.Module):
    """Non-overlapping ``patch x patch`` convolution, flattened to tokens, then LayerNorm."""

    def __init__(self, in_chans: int, dim: int, patch_size: int):
        super().__init__()
        self.patch_size = patch_size
        self.proj = nn.Conv2d(in_chans, dim, patch_size, stride=patch_size)
        self.norm = nn.LayerNorm(dim)  # eps 1e-5, as CoaT's patch embedding

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, tuple[int, int]]:
        x = self.proj(x)  # (B, C, H, W)
        size = (x.shape[2], x.shape[3])
        return self.norm(x.flatten(2).transpose(1, 2)), size  # (B, H*W, C)


class Mlp(nn.Module):
    """The transformer's feed-forward network: Linear, GELU, Linear."""

    def __init__(self, dim: int, hidden_dim: int, drop: float = 0.0):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden_dim)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden_dim, dim)
        self.drop = nn.Dropout(drop)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.drop(self.fc2(self.drop(self.act(self.fc1(x)))))


class SerialBlock(nn.Module):
    """``x = CPE(x); x += ConvAttention(LN(x)); x += MLP(LN(x))``.

    CPE and CRPE belong to the stage and are passed in: CoaT shares them among its blocks.
    """

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float, drop_path: float = 0.0,
                 attention: str = "factorized", **attention_options):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = ConvAttention(dim, num_heads,
                                  core_layer=partial(make_core, attention, **attention_options))
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()

    def forward(self, x: torch.Tensor, size: tuple[int, int], cpe: ConvPosEnc,
                crpe: ConvRelPosEnc) -> torch.Tensor:
        x = cpe(x, size)
        x = x + self.drop_path(self.attn(self.norm1(x), size, crpe))
        return x + self.drop_path(self.mlp(self.norm2(x)))


class Stage(nn.Module):
    """Patch embedding, class token, and serial blocks that share one CPE and one CRPE."""

    def __init__(self, in_chans: int, dim: int, depth: int, patch_size: int, num_heads: int,
                 mlp_ratio: float, crpe_windows: dict, drop_paths: list[float],
                 attention: str = "factorized", **attention_options):
        super().__init__()
        self.patch_embed = PatchEmbed(in_chans, dim, patch_size)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.cpe = ConvPosEnc(dim)
        self.crpe = ConvRelPosEnc(dim // num_heads, num_heads, crpe_windows)
        self.blocks = nn.ModuleList(
            SerialBlock(dim, num_heads, mlp_ratio, drop_paths[i], attention, **attention_options)
            for i in range(depth)
        )

        self.grad_checkpointing = False

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, tuple[int, int]]:
        """``(B, C_in, H_in, W_in)`` -> tokens ``(B, 1 + H*W, C)``, class token first, and ``(H, W)``."""
        x, size = self.patch_embed(x)
        x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x], dim=1)
        for block in self.blocks:
            if self.grad_checkpointing and torch.is_grad_enabled():
                # Keep only the block's input; its activations are recomputed in the backward.
                x = checkpoint(block, x, size, self.cpe, self.crpe, use_reentrant=False)
            else:
                x = block(x, size, self.cpe, self.crpe)
        return x, size


def _check_image_batch(x, in_chans: int, stride: int) -> None:
    """``ValueError`` saying what was expected when ``x`` is not a valid image batch.

    A plain function that ``torch.fx`` keeps as one call (``torch.fx.wrap`` below), so that a
    traced model checks its input as the eager one does.
    """
    if not isinstance(x, torch.Tensor) or x.dim() != 4:
        got = f"a {x.dim()}-D tensor of shape {tuple(x.shape)}" if isinstance(x, torch.Tensor) \
            else type(x).__name__
        raise ValueError(f"expected a 4-D image batch (B, C, H, W), got {got}")
    if x.shape[1] != in_chans:
        raise ValueError(f"expected {in_chans} input channels, got {x.shape[1]} "
                         f"(input shape {tuple(x.shape)})")
    if x.shape[0] == 0:
        raise ValueError(f"expected at least one image, got an empty batch of shape {tuple(x.shape)}")
    H, W = x.shape[-2:]
    if H % stride or W % stride or H == 0 or W == 0:
        raise ValueError(f"image side must be divisible by {stride}, got {H}x{W}")


torch.fx.wrap("_check_image_batch")


def _to_grid(tokens: torch.Tensor, size) -> torch.Tensor:
    """Tokens ``(B, 1 + H*W, C)`` -> image grid ``(B, C, H, W)``, the class token dropped."""
    return tokens[:, 1:].transpose(1, 2).reshape(tokens.shape[0], -1, *size)


def _take_indices(n: int, indices) -> list[int]:
    """timm's convention: ``None`` all ``n``, an int the last ``indices``, a sequence those
    (negative counts from the end); ``ValueError`` for an index out of range."""
    if indices is None:
        return list(range(n))
    if checks.is_integer(indices):
        if not 0 < indices <= n:
            raise ValueError(f"expected to take 1..{n} stages, got {indices}")
        return list(range(n - indices, n))
    taken = sorted({i + n if i < 0 else i for i in indices})
    if not taken or taken[0] < 0 or taken[-1] >= n:
        raise ValueError(f"expected stage indices in -{n}..{n - 1}, got {list(indices)}")
    return taken


def _as_stage_list(value, name: str) -> list:
    if isinstance(value, (list, tuple)):
        if len(value) != 4:
            raise ValueError(f"{name} per stage needs 4 entries, got {len(value)}: {value!r}")
        return list(value)
    return [value] * 4


class CoaTLite(nn.Module):
    """CoaT-Lite with a choice of attention core per stage.

    ``attention`` is one kind for all stages or a list of four; clustering options
    (``n_hashes``, ``bucket_width``, ``max_clusters``, ...) go to the clustered kinds.

    It has timm's model interface: ``pretrained_cfg``/``default_cfg`` (set by
    :func:`ccoat.create_model`), ``feature_info``, ``forward_features``, ``forward_head``,
    ``forward_intermediates``, ``get_classifier``/``reset_classifier``, ``no_weight_decay``,
    ``set_grad_checkpointing``; ``features_only=True`` gives :class:`CoaTLiteFeatures`. Where it
    cannot behave as a timm model:

    - ``torch.fx`` traces the factorized and softmax kinds, not the clustered ones: how many
      clusters a row of queries forms (the prototypes' shape) depends on the query values, and
      a symbolic trace has no values (an error says so);
    - ``torch.compile`` compiles every kind, but the clustered kinds break the graph where the
      cluster count is read back to size the prototypes (and where the code ranges size the
      packing of the hash codes);
    - checkpointing a clustered core with ``redraw=True`` and its own ``seed`` would draw other
      projections when recomputed, so :meth:`set_grad_checkpointing` refuses it.
    """

    def __init__(self, config: CoaTLiteConfig, num_classes: int = 1000, in_chans: int = 3,
                 img_size: int = 224, attention="factorized", drop_rate: float = 0.0,
                 drop_path_rate: float = 0.0, **attention_options):
        super().__init__()
        for option, value in (("num_classes", num_classes), ("in_chans", in_chans)):
            checks.integer(option, value, 0, what="a whole number >= 0")
        self.config = config
        self.in_chans = in_chans
        self.num_classes = num_classes
        self.default_img_size = img_size
        self.num_features = self.head_hidden_size = config.embed_dims[-1]
        self.global_pool = "token"  # the class token is what the head classifies
        self.grad_checkpointing = False
        # timm's per-stage feature description: channels, stride from the input, module.
        self.feature_info = [
            dict(num_chs=dim, reduction=math.prod(config.stage_patches[:i + 1]),
                 module=f"stages.{i}")
            for i, dim in enumerate(config.embed_dims)
        ]
        kinds = _as_stage_list(attention, "attention")
        if attention_options and not any(k in CLUSTERED_KINDS for k in kinds):
            raise ValueError(f"clustering options {sorted(attention_options)} need a clustered "
                             f"attention kind in some stage, got {kinds}")
        drop_paths = torch.linspace(0, drop_path_rate, sum(config.depths)).tolist()

        stages, in_dim, first = [], in_chans, 0
        for i, (dim, depth) in enumerate(zip(config.embed_dims, config.depths)):
            stages.append(Stage(
                in_dim, dim, depth, config.stage_patches[i], config.num_heads,
                config.mlp_ratios[i], config.crpe_windows, drop_paths[first:first + depth],
                kinds[i], **(attention_options if kinds[i] in CLUSTERED_KINDS else {}),
            ))
            in_dim, first = dim, first + depth
        self.stages = nn.ModuleList(stages)
        self.norm = nn.LayerNorm(self.num_features, eps=1e-6)
        self.head_drop = nn.Dropout(drop_rate)
        self.head = nn.Linear(self.num_features, num_classes) if num_classes > 0 else nn.Identity()
        self._init_weights()

    def _init_weights(self) -> None:
        for stage in self.stages:
            trunc_normal_(stage.cls_token, std=0.02)
        for m in self.modules():
            if isinstance(m, nn.Linear):
                trunc_normal_(m.weight, std=0.02)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.LayerNorm):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    @torch.jit.ignore
    def no_weight_decay(self) -> set[str]:
        return {f"stages.{i}.cls_token" for i in range(4)}

    @torch.jit.ignore
    def group_matcher(self, coarse: bool = False) -> dict:
        """timm's layer groups (for layer-wise learning-rate decay): stem, then each stage."""
        return dict(stem=r"^stages\.0\.(patch_embed|cls_token|cpe|crpe)",
                    blocks=[(r"^stages\.(\d+)" if coarse else r"^stages\.(\d+)\.blocks\.(\d+)", None),
                            (r"^norm", (99999,))])

    @torch.jit.ignore
    def set_grad_checkpointing(self, enable: bool = True) -> None:
        """Recompute each block's activations in the backward instead of keeping them."""
        if enable:
            private = [name for name, m in self.named_modules()
                       if getattr(m, "redraw", False) and getattr(m, "generator", None) is not None]
            if private:
                raise ValueError("gradient checkpointing would redraw other hash projections when it "
                                 f"recomputes the blocks of {private[0]} (redraw=True with a seed); "
                                 "use redraw=False or no seed")
        self.grad_checkpointing = bool(enable)
        for stage in self.stages:
            stage.grad_checkpointing = bool(enable)

    @property
    def attention_kinds(self) -> list[str]:
        return [stage.blocks[0].attn.kind for stage in self.stages]

    def check_input(self, x: torch.Tensor) -> None:
        """Raise ``ValueError`` saying what was expected when ``x`` is not a valid image batch."""
        _check_image_batch(x, self.in_chans, self.config.stride)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Images ``(B, C, H, W)`` -> last stage's normalised tokens ``(B, 1 + H/32*W/32, C)``."""
        self.check_input(x)
        for i, stage in enumerate(self.stages):
            x, size = stage(x)
            if i < len(self.stages) - 1:  # drop the class token, back to an image grid
                x = _to_grid(x, size)
        return self.norm(x)

    def forward_intermediates(self, x: torch.Tensor, indices=None, norm: bool = False,
                              stop_early: bool = False, output_fmt: str = "NCHW",
                              intermediates_only: bool = False):
        """The stage maps ``(B, C_i, H_i, W_i)`` (class token dropped), as timm's models give them.

        ``indices``: ``None`` all four stages, an int the last ``indices``, or a list of stage
        indices. ``norm`` applies the final LayerNorm to the last stage's map (the only stage it
        belongs to, as in timm's CoaT-Lite). Returns the maps, or ``(final tokens, maps)`` unless
        ``intermediates_only``; with ``stop_early`` the stages past the last index are not run
        and the final tokens are the last stage run.
        """
        if output_fmt != "NCHW":
            raise ValueError(f"output_fmt must be 'NCHW', got {output_fmt!r}")
        take = _take_indices(len(self.stages), indices)
        self.check_input(x)
        last = take[-1] if stop_early or intermediates_only else len(self.stages) - 1
        maps = []
        for i, stage in enumerate(self.stages[:last + 1]):
            x, size = stage(x)
            if i in take:
                tokens = self.norm(x) if norm and i == len(self.stages) - 1 else x
                maps.append(_to_grid(tokens, size))
            if i < last:
                x = _to_grid(x, size)
        if intermediates_only:
            return maps
        return (self.norm(x) if last == len(self.stages) - 1 else x), maps

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = self.head_drop(x[:, 0])  # the class token
        return x if pre_logits else self.head(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))

    @torch.jit.ignore
    def get_classifier(self) -> nn.Module:
        return self.head

    def reset_classifier(self, num_classes: int, global_pool: str | None = None) -> None:
        """A new head for ``num_classes`` (0: none, ``forward`` gives the pooled features).

        ``global_pool`` may only be ``"token"``: CoaT-Lite classifies its class token.
        """
        if global_pool not in (None, "token"):
            raise ValueError(f"global_pool must be 'token' (CoaT-Lite classifies its class "
                             f"token), got {global_pool!r}")
        self.num_classes = num_classes
        weight = self.stages[0].cls_token
        self.head = (nn.Linear(self.num_features, num_classes, device=weight.device, dtype=weight.dtype)
                     if num_classes > 0 else nn.Identity())
        self.head.train(self.training)


class CoaTLiteFeatures(nn.Module):
    """``features_only=True``: a CoaT-Lite that returns its stage maps ``[(B, C_i, H_i, W_i)]``.

    As timm's feature extractors: ``feature_info`` (a :class:`timm.models.FeatureInfo`:
    ``channels()``, ``reduction()``, ``module_name()``) describes the ``out_indices`` stages;
    stages past the last one asked for, the final norm and the head are removed.
    """

    def __init__(self, model: CoaTLite, out_indices=(0, 1, 2, 3)):
        super().__init__()
        from timm.models import FeatureInfo

        self.out_indices = _take_indices(len(model.stages), out_indices)
        model.stages = model.stages[:self.out_indices[-1] + 1]
        model.norm = nn.Identity()
        model.reset_classifier(0)
        self.model = model
        self.feature_info = FeatureInfo(model.feature_info, self.out_indices)
        self.pretrained_cfg = self.default_cfg = getattr(model, "pretrained_cfg", {})

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        self.model.set_grad_checkpointing(enable)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        return self.model.forward_intermediates(x, self.out_indices, intermediates_only=True)
