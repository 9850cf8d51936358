"""ACT's "no retraining" drop-in: change the attention of a CoaT-Lite that already exists.

Every attention kind of ccoat has the same parameters (qkv, proj, the stage's CPE and CRPE);
only the *core* that turns ``q, k, v`` into an output differs. Converting a model therefore
swaps each block's core and keeps every weight, so a trained CoaT-Lite can be run with
clustered attention as ACT ran a trained DETR.
"""
from __future__ import annotations

import torch.nn as nn
from timm.models.coat import CoaT

from .model import (
    ATTENTION_KINDS,
    CLUSTERED_KINDS,
    CoaTLite,
    CoaTLiteConfig,
    make_core,
)
from .timm_weights import load_timm_weights


def _config_of_timm_coat(model: nn.Module) -> CoaTLiteConfig:
    """The :class:`CoaTLiteConfig` of a timm CoaT-Lite, read from its modules."""
    if getattr(model, "parallel_blocks", None) is not None:
        raise ValueError("expected a CoaT-Lite (serial blocks only), got a timm CoaT with parallel "
                         "blocks")
    if getattr(model, "return_interm_layers", False):
        raise ValueError("expected a timm CoaT-Lite classifier, got one built for intermediate "
                         "features (return_interm_layers=True)")
    dims = tuple(int(d) for d in model.embed_dims)
    blocks = [getattr(model, f"serial_blocks{i}") for i in range(1, 5)]
    return CoaTLiteConfig(
        embed_dims=dims,
        depths=tuple(len(b) for b in blocks),
        mlp_ratios=tuple(b[0].mlp.fc1.out_features / d for b, d in zip(blocks, dims)),
        num_heads=blocks[0][0].factoratt_crpe.num_heads,
        patch_size=model.patch_embed1.proj.kernel_size[0],
        crpe_windows=dict(model.crpe1.window),
    )


def _stage_kinds(kind, n_stages: int = 4) -> list[str]:
    """One attention kind for every stage, or a list/tuple of one per stage -> a list of four."""
    kinds = list(kind) if isinstance(kind, (list, tuple)) else [kind] * n_stages
    if len(kinds) != n_stages:
        raise ValueError(f"attention kinds per stage need {n_stages} entries, got {len(kinds)}: "
                         f"{kind!r}")
    bad = [k for k in kinds if not isinstance(k, str) or k not in ATTENTION_KINDS]
    if bad:
        raise ValueError(f"attention kind must be one of {ATTENTION_KINDS} (or a list of {n_stages}"
                         f" of them, one per stage), got {kind!r}")
    return kinds


def _check_ccoat(model: CoaTLite, kinds: list[str], options: dict) -> None:
    """Refuse, before any core is replaced, what the blocks of ``model`` cannot compute."""
    if options and not any(k in CLUSTERED_KINDS for k in kinds):
        raise ValueError(f"clustering options {sorted(options)} need a clustered attention kind "
                         f"in some stage, got {kinds}")
    for i, (stage, kind) in enumerate(zip(model.stages, kinds)):
        for j, block in enumerate(stage.blocks):
            # A block that runs its attention itself (a token-clustered block) says which
            # kinds it computes; giving it another core would report a kind it does not run.
            supported = getattr(block, "supported_kinds", ATTENTION_KINDS)
            if kind not in supported:
                raise ValueError(f"stage {i + 1} block {j} ({type(block).__name__}) computes "
                                 f"only {tuple(supported)} attention, got {kind!r}")


def convert_attention(model: nn.Module, kind, **options) -> CoaTLite:
    """Give every block of a CoaT-Lite the attention ``kind``, keeping every weight.

    ``kind`` is one attention kind, or a list/tuple of four, one per stage.

    - a ccoat :class:`~ccoat.model.CoaTLite` is converted **in place** (its cores are replaced)
      and returned; a kind that a block cannot compute (a token-clustered block runs only
      factorized or softmax attention on its prototypes) is refused before anything changes;
    - a timm CoaT-Lite (``timm.models.coat.CoaT`` without parallel blocks) is **not modified**:
      a ccoat model of the same configuration is built, given the timm weights
      (:func:`~ccoat.timm_weights.load_timm_weights`), converted and returned, on the timm
      model's device and dtype, in its train/eval mode.

    ``options`` are the clustering options of the clustered kinds (``n_hashes``,
    ``bucket_width``, ``max_clusters``, ``redraw``, ``seed``), given to the stages of a
    clustered kind; new hash projections are drawn from torch's generator (or ``seed``).
    """
    kinds = _stage_kinds(kind)
    if isinstance(model, CoaTLite):
        _check_ccoat(model, kinds, options)
        # Every new core is built (and its options checked) before the first one is swapped in.
        cores = [[make_core(k, head_dim=block.attn.qkv.in_features // block.attn.num_heads,
                            **(options if k in CLUSTERED_KINDS else {}))
                  for block in stage.blocks] for stage, k in zip(model.stages, kinds)]
        for stage, stage_cores in zip(model.stages, cores):
            for block, core in zip(stage.blocks, stage_cores):
                block.attn.core = core.to(device=block.attn.qkv.weight.device)
                block.attn.core.train(block.attn.training)
        return model
    if not isinstance(model, CoaT):
        raise ValueError(f"expected a ccoat CoaTLite or a timm CoaT-Lite, got {type(model).__name__}")
    config = _config_of_timm_coat(model)
    ref = next(model.parameters())
    in_chans = model.patch_embed1.proj.in_channels  # timm < 1.0.2x has no CoaT.in_chans
    converted = CoaTLite(config, num_classes=model.num_classes, in_chans=in_chans,
                         attention=kinds, **options)
    load_timm_weights(converted, model)
    return converted.to(device=ref.device, dtype=ref.dtype).train(model.training)
