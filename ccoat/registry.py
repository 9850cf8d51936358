"""Model names, ``create_model``, and registration with timm's model registry.

Names:

- ``coat_lite_{tiny,mini,small,medium}``: CoaT-Lite, factorized attention (timm's models);
- ``ccoat_lite_{tiny,mini,small,medium}``: Clustering CoaT, clustered attention;
- either with ``_cifar``: the small-image variant for 32x32 inputs (a 2x2 first patch, so the
  four stages see 16x16, 8x8, 4x4 and 2x2 grids).

Importing :mod:`ccoat` registers every ``ccoat_lite_*`` name and every ``coat_lite_*_cifar`` name
with timm, so ``timm.create_model("ccoat_lite_tiny")`` works. The plain ``coat_lite_*`` names stay
timm's own (``timm.create_model("coat_lite_tiny")`` is timm's implementation, which the tests use
as the independent reference).
"""
from __future__ import annotations

import sys

import torch.nn as nn

from .model import CONFIGS, CoaTLite, CoaTLiteFeatures, config_for

SIZES = tuple(CONFIGS)
# CIFAR-10's per-channel mean and std, the *_cifar models' data config (the same numbers as
# ccoat.data.STATS["cifar10"], tested; the model rooms do not import the data instrument).
CIFAR10_STATS = ((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616))
# The default attention kind of each family.
FAMILIES = {"coat_lite": "factorized", "ccoat_lite": "clustered"}
MODEL_NAMES = tuple(
    f"{family}_{size}{suffix}" for family in FAMILIES for size in SIZES for suffix in ("", "_cifar")
)


def parse_name(name: str) -> tuple[str, str, bool]:
    """``"ccoat_lite_tiny_cifar"`` -> ``("ccoat_lite", "tiny", True)``."""
    if name not in MODEL_NAMES:
        raise ValueError(f"unknown model name {name!r}; expected one of {', '.join(MODEL_NAMES)}")
    small_image = name.endswith("_cifar")
    stem = name[: -len("_cifar")] if small_image else name
    family, size = stem.rsplit("_", 1)
    return family, size, small_image


def pretrained_cfg(name: str, num_classes: int = 1000, img_size: int | None = None,
                   in_chans: int = 3) -> dict:
    """timm's ``pretrained_cfg`` of a ccoat model: what ``timm.data.resolve_data_config`` and
    ``create_transform`` read (input size, mean/std, interpolation, crop) and where the first
    convolution and the classifier are.

    The ImageNet sizes take timm's CoaT-Lite evaluation settings (their pretrained weights load
    into every kind); the ``*_cifar`` models take CIFAR-10's statistics, 32x32 and no crop.
    """
    from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD

    _, size, small_image = parse_name(name)
    if img_size is None:
        img_size = 32 if small_image else 224
    mean, std = CIFAR10_STATS if small_image else (IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD)
    return {
        "architecture": name, "tag": "", "url": "",
        "hf_hub_id": None if small_image else f"timm/coat_lite_{size}.in1k",  # weights, via timm
        "num_classes": num_classes, "input_size": (in_chans, img_size, img_size), "pool_size": None,
        "crop_pct": 1.0 if small_image else 0.9, "crop_mode": "center",
        "interpolation": "bilinear" if small_image else "bicubic",
        "fixed_input_size": False,  # any side divisible by the model's stride
        "mean": tuple(mean), "std": tuple(std),
        "first_conv": "stages.0.patch_embed.proj", "classifier": "head", "license": "mit",
    }


def create_model(name: str, *, pretrained: bool = False, num_classes: int = 1000,
                 img_size: int | None = None, attention=None, features_only: bool = False,
                 out_indices=(0, 1, 2, 3), pretrained_cfg_overlay: dict | None = None,
                 token_clustering: str | None = None, keep: float = 0.5, token_stages=(1, 2),
                 **kwargs) -> nn.Module:
    """Build a CoaT-Lite or Clustering CoaT by name.

    ``attention`` overrides the family's default kind (one kind, or a list of four, one per
    stage); clustering options (``n_hashes``, ``bucket_width``, ``max_clusters``, ...) are
    keyword arguments. ``pretrained=True`` loads timm's ImageNet weights of the same size
    (through the Hugging Face hub, where the network allows). ``features_only=True`` gives the
    stage maps of ``out_indices`` (:class:`ccoat.model.CoaTLiteFeatures`), as timm does.
    The model's ``pretrained_cfg`` (and its alias ``default_cfg``) is :func:`pretrained_cfg`,
    updated with ``pretrained_cfg_overlay``. ``token_clustering`` (``"pool"``, ``"bipartite"``,
    ``"lsh"`` or ``"grid"``) makes the blocks of ``token_stages`` run on ``keep`` of their image tokens
    (:func:`ccoat.token_clustering.cluster_tokens`).
    """
    family, size, small_image = parse_name(name)
    if img_size is None:
        img_size = 32 if small_image else 224
    model = CoaTLite(config_for(size, small_image), num_classes=num_classes, img_size=img_size,
                     attention=attention or FAMILIES[family], **kwargs)
    if pretrained:
        if small_image:
            raise ValueError(f"no pretrained weights exist for the small-image model {name!r}")
        from .timm_weights import load_timm_weights, timm_pretrained

        # PretrainedUnavailable at once where the Hub cannot be reached and nothing is cached
        reference = timm_pretrained(f"coat_lite_{size}", num_classes=num_classes)
        load_timm_weights(model, reference)
    if token_clustering is not None:
        from .token_clustering import cluster_tokens

        cluster_tokens(model, token_clustering, keep=keep, stages=token_stages)
    cfg = pretrained_cfg(name, num_classes, img_size, model.in_chans)
    cfg.update(pretrained_cfg_overlay or {})
    model.pretrained_cfg = model.default_cfg = cfg
    if features_only:
        return CoaTLiteFeatures(model, out_indices)
    return model


def _timm_entry(name: str):
    def entry(pretrained: bool = False, **kwargs) -> nn.Module:
        for key in ("pretrained_cfg", "cache_dir"):
            kwargs.pop(key, None)  # timm's own bookkeeping, not model options
        return create_model(name, pretrained=pretrained, **kwargs)

    entry.__name__ = entry.__qualname__ = name
    entry.__module__ = __name__
    entry.__doc__ = f"ccoat's {name} (see ccoat.registry)."
    return entry


def register_with_timm() -> list[str]:
    """Register ccoat's names that timm does not have; return the names registered."""
    from timm.models import is_model, register_model

    registered = []
    for name in MODEL_NAMES:
        if name.startswith("coat_lite_") and not name.endswith("_cifar"):
            continue  # timm's own model; ours is reached through ccoat.create_model
        if not is_model(name):
            entry = _timm_entry(name)
            setattr(sys.modules[__name__], name, entry)
            register_model(entry)
        registered.append(name)
    return registered


def unwrap(model: nn.Module) -> nn.Module:
    """The model itself, out of DDP's wrapper and ``torch.compile``'s (its parameters are the
    same either way; its attributes, such as ``attention_kinds``, are the inner model's)."""
    model = getattr(model, "module", model)  # DDP
    return getattr(model, "_orig_mod", model)  # torch.compile


def registered_name(model: nn.Module) -> str | None:
    """The name :func:`create_model` built ``model`` from, or None for another model."""
    return (getattr(unwrap(model), "pretrained_cfg", None) or {}).get("architecture")
