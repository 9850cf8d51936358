"""Moving weights between timm's CoaT-Lite and ccoat's.

timm names parameters after the original CoaT code (``patch_embed1``, ``serial_blocks1.0``,
``factoratt_crpe``, ...); ccoat groups them by stage (``stages.0.patch_embed``,
``stages.0.blocks.0.attn``, ...). The mapping below is the whole difference: the tensors are the
same, so a model that loads timm's weights computes timm's logits.
"""
from __future__ import annotations

import re

import torch
import torch.nn as nn

# timm key pattern -> ccoat key template. Stage numbers are 1-based in timm.
_RULES = [
    (r"patch_embed(\d)\.(proj|norm)\.(.+)", "stages.{s}.patch_embed.{1}.{2}"),
    (r"cls_token(\d)", "stages.{s}.cls_token"),
    (r"cpe(\d)\.proj\.(.+)", "stages.{s}.cpe.proj.{1}"),
    (r"crpe(\d)\.conv_list\.(\d+)\.(.+)", "stages.{s}.crpe.convs.{1}.{2}"),
    (r"serial_blocks(\d)\.(\d+)\.(norm1|norm2)\.(.+)", "stages.{s}.blocks.{1}.{2}.{3}"),
    (r"serial_blocks(\d)\.(\d+)\.factoratt_crpe\.(qkv|proj)\.(.+)", "stages.{s}.blocks.{1}.attn.{2}.{3}"),
    (r"serial_blocks(\d)\.(\d+)\.mlp\.(fc1|fc2)\.(.+)", "stages.{s}.blocks.{1}.mlp.{2}.{3}"),
    (r"norm4\.(.+)", "norm.{0}"),
    (r"head\.(.+)", "head.{0}"),
]
# Keys that are copies of a stage's shared CPE/CRPE, seen again through each block.
_SHARED_COPIES = re.compile(r"serial_blocks\d\.\d+\.(cpe|factoratt_crpe\.crpe)\.")


def timm_key_to_ccoat(key: str) -> str | None:
    """Map one timm CoaT-Lite key to ccoat's; ``None`` for keys that repeat a shared module."""
    if _SHARED_COPIES.match(key):
        return None
    for pattern, template in _RULES:
        m = re.fullmatch(pattern, key)
        if m:
            groups = m.groups()
            if "{s}" in template:  # groups[0] is timm's 1-based stage number
                return template.format(None, *groups[1:], s=int(groups[0]) - 1)
            return template.format(*groups)
    raise ValueError(f"not a CoaT-Lite parameter: {key!r} (is this a CoaT model with parallel blocks?)")


def convert_timm_state_dict(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """timm CoaT-Lite state dict -> ccoat state dict (same tensors, ccoat's names)."""
    out = {}
    for key, value in state_dict.items():
        new_key = timm_key_to_ccoat(key)
        if new_key is not None:
            out[new_key] = value
    return out


def load_timm_weights(model: nn.Module, source) -> nn.Module:
    """Load a timm CoaT-Lite (a model or its ``state_dict``) into a ccoat model, in place.

    Every parameter must match by name and shape; anything else is a ``ValueError`` that names
    the keys. Buffers of the clustered attention kinds (hash projections) are left as they are.
    """
    state_dict = source.state_dict() if isinstance(source, nn.Module) else source
    if not isinstance(state_dict, dict):
        raise ValueError(f"expected a timm CoaT-Lite model or its state_dict, got {type(source).__name__}")
    converted = convert_timm_state_dict(state_dict)
    own = model.state_dict()
    params = {name for name, _ in model.named_parameters()}
    missing = sorted(params - set(converted))
    unexpected = sorted(set(converted) - set(own))
    if missing or unexpected:
        raise ValueError(
            "timm weights do not fit this model: "
            f"missing {missing[:5]}{' ...' if len(missing) > 5 else ''}, "
            f"unexpected {unexpected[:5]}{' ...' if len(unexpected) > 5 else ''} "
            "(same size and num_classes expected)"
        )
    for key, value in converted.items():
        if own[key].shape != value.shape:
            raise ValueError(f"shape of {key}: model has {tuple(own[key].shape)}, "
                             f"timm weights have {tuple(value.shape)}")
    model.load_state_dict(converted, strict=False)
    return model
