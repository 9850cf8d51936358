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


# ---------------------------------------------------------------------------------------------
# timm's ImageNet-trained CoaT-Lite, for users whose machine reaches the Hugging Face Hub


class PretrainedUnavailable(RuntimeError):
    """timm's pretrained weights could not be had here (no network, no cached copy)."""


def timm_pretrained(name: str = "coat_lite_tiny", *, timeout: float = 5.0, **kwargs) -> nn.Module:
    """timm's model ``name`` with its ImageNet-1k weights (``kwargs`` go to
    ``timm.create_model``); :func:`load_timm_weights` moves them into a ccoat model, as
    ``ccoat.create_model(name, pretrained=True)`` does.

    A copy in the Hugging Face cache is used as it is. Otherwise the Hub's host is tried once for
    ``timeout`` seconds before anything is downloaded, so an offline machine gets
    :class:`PretrainedUnavailable` at once instead of a minute of retries.
    """
    import timm
    from huggingface_hub import constants, try_to_load_from_cache

    cfg = timm.models.get_pretrained_cfg(name)
    if cfg is None or not cfg.hf_hub_id:
        raise ValueError(f"timm has no pretrained weights for {name!r}; expected a CoaT-Lite "
                         f"name such as 'coat_lite_tiny'")
    overlay = None
    for filename in ("model.safetensors", "pytorch_model.bin"):
        cached = try_to_load_from_cache(cfg.hf_hub_id, filename)
        if isinstance(cached, str):
            overlay = dict(file=cached, hf_hub_id=None)
            break
    if overlay is None:
        _check_reachable(constants.ENDPOINT, timeout, name)
    try:
        return timm.create_model(name, pretrained=True, pretrained_cfg_overlay=overlay, **kwargs)
    except Exception as error:  # noqa: BLE001 (the Hub and timm raise many kinds of errors)
        raise PretrainedUnavailable(f"timm's ImageNet weights for {name} could not be loaded: "
                                    f"{type(error).__name__}: {error}") from error


def _check_reachable(endpoint: str, timeout: float, name: str) -> None:
    import socket
    from urllib.parse import urlparse

    url = urlparse(endpoint)
    host, port = url.hostname, url.port or (443 if url.scheme == "https" else 80)
    try:
        socket.create_connection((host, port), timeout=timeout).close()
    except OSError as error:
        raise PretrainedUnavailable(
            f"timm's ImageNet weights for {name} could not be fetched: {host}:{port} is not "
            f"reachable from this machine ({type(error).__name__}: {error}), and the Hugging "
            "Face cache has no copy") from error


def imagenet_indices(wnids: list[str]) -> list[int]:
    """The ImageNet-1k output index of each wnid (timm's class list, shipped with timm)."""
    from timm.data import ImageNetInfo

    order = ImageNetInfo().label_names()
    unknown = [w for w in wnids if w not in order]
    if unknown:
        raise ValueError(f"not ImageNet-1k wnids: {unknown[:5]} (expected names such as "
                         f"'n01440764')")
    return [order.index(w) for w in wnids]


def restrict_classes(model: nn.Module, indices: list[int]) -> nn.Module:
    """Keep only the outputs ``indices`` of ``model``'s classifier (in that order), in place:
    its logits become the chosen columns of the full model's logits."""
    head = model.head
    if not isinstance(head, nn.Linear) or max(indices, default=-1) >= head.out_features:
        raise ValueError(f"expected a linear head with more than {max(indices, default=0)} "
                         f"outputs, got {head}")
    keep = torch.as_tensor(indices, dtype=torch.long, device=head.weight.device)
    new = nn.Linear(head.in_features, len(indices), bias=head.bias is not None)
    new = new.to(device=head.weight.device, dtype=head.weight.dtype)
    with torch.no_grad():
        new.weight.copy_(head.weight[keep])
        if head.bias is not None:
            new.bias.copy_(head.bias[keep])
    model.head = new
    if hasattr(model, "num_classes"):
        model.num_classes = len(indices)
    return model
