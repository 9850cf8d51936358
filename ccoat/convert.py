"""ACT's "no retraining" drop-in: change the attention of a CoaT-Lite that already exists.

Every attention kind of ccoat has the same parameters (qkv, proj, the stage's CPE and CRPE);
only the *core* that turns ``q, k, v`` into an output differs. Converting a model therefore
swaps each block's core and keeps every weight, so a trained CoaT-Lite can be run with
clustered attention as ACT ran a trained DETR.
"""
from __future__ import annotations

import torch.nn as nn
from timm.models.coat import CoaT

from .model import CoaTLite, CoaTLiteConfig, make_core
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


def convert_attention(model: nn.Module, kind: str, **options) -> CoaTLite:
    """Give every block of a CoaT-Lite the attention ``kind``, keeping every weight.

    - a ccoat :class:`~ccoat.model.CoaTLite` is converted **in place** (its cores are replaced)
      and returned;
    - a timm CoaT-Lite (``timm.models.coat.CoaT`` without parallel blocks) is **not modified**:
      a ccoat model of the same configuration is built, given the timm weights
      (:func:`~ccoat.timm_weights.load_timm_weights`), converted and returned, on the timm
      model's device and dtype, in its train/eval mode.

    ``options`` are the clustering options of the clustered kinds (``n_hashes``,
    ``bucket_width``, ``max_clusters``, ``redraw``, ``seed``); new hash projections are drawn
    from torch's generator (or ``seed``).
    """
    if isinstance(model, CoaTLite):
        for stage in model.stages:
            for block in stage.blocks:
                attn = block.attn
                core = make_core(kind, head_dim=attn.qkv.in_features // attn.num_heads, **options)
                ref = attn.qkv.weight
                attn.core = core.to(device=ref.device)
                attn.core.train(attn.training)
        return model
    if not isinstance(model, CoaT):
        raise ValueError(f"expected a ccoat CoaTLite or a timm CoaT-Lite, got {type(model).__name__}")
    config = _config_of_timm_coat(model)
    ref = next(model.parameters())
    in_chans = model.patch_embed1.proj.in_channels  # timm < 1.0.2x has no CoaT.in_chans
    converted = CoaTLite(config, num_classes=model.num_classes, in_chans=in_chans,
                         attention=kind, **options)
    load_timm_weights(converted, model)
    return converted.to(device=ref.device, dtype=ref.dtype).train(model.training)
