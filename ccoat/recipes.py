"""Training recipes: the settings of every run the book trains or reports, in one place.

Like nanoGPT's ``config/``, a recipe is settings only: the :class:`~ccoat.train.TrainConfig`
fields it fixes (the others keep their defaults). A chapter sizes its run by the profile
(:mod:`ccoat.profile`), so its recipe comes in one size per profile, named ``NAME-PROFILE``:

- ``cifar10-smoke|cpu|gpu``: the training chapter's runs; the chapter adds the model (three
  attention kinds, one recipe). The smoke size trains on ``digits``, which every install has;
- ``imagenette-smoke|cpu|gpu``: the CoaT-Lite Tiny that the Imagenette and clusters chapters
  convert to other attention kinds;
- ``cifar10-gpu-budget``: the training chapter's equal-GPU-time runs (one size: one GPU).

``python -m ccoat.train --recipe NAME`` starts from a recipe (options given override it);
from Python, :func:`cifar10` and :func:`imagenette` return the active profile's size as a
``TrainConfig``, and :func:`recipe` any recipe's settings as a dict.

Progress bars are not a setting of a recipe: the book turns them off (``progress=False``).
"""
from __future__ import annotations

from .profile import PROFILES, get_profile
from .train import TrainConfig

_IMAGENETTE = dict(model="coat_lite_tiny", data="imagenette", batch_size=64, lr=2e-3,
                   warmup_epochs=0.5, num_workers=2, seed=0)

RECIPES: dict[str, dict] = {
    # The training chapter: the same recipe for three attention kinds. smoke: a few updates on
    # the digits; cpu: two short epochs on a CIFAR-10 subset; gpu: the full recipe, with
    # RandAugment, Mixup/CutMix and an EMA of the weights.
    "cifar10-smoke": dict(
        data="digits", epochs=2, batch_size=16, train_subset=64, val_subset=64,
        steps_per_epoch=2, num_workers=0, warmup_epochs=0.5, seed=0),
    "cifar10-cpu": dict(
        data="cifar10", epochs=2, batch_size=64, train_subset=1000, val_subset=500,
        num_workers=1, warmup_epochs=0.5, seed=0),
    "cifar10-gpu": dict(
        data="cifar10", epochs=100, batch_size=256, lr=2e-3, warmup_epochs=5,
        randaugment="rand-m9-mstd0.5", mixup=0.8, cutmix=1.0, ema_decay=0.9998, num_workers=4,
        seed=0),
    # CIFAR-10 on one GPU for a fixed wall-clock budget (the equal-GPU-time comparison of the
    # training chapter): the splits live on the GPU as uint8 and are cropped and flipped there,
    # bf16 autocast, the learning rate warms up for two epochs and then follows a cosine in
    # training seconds that ends when the budget is spent. --epochs is only an upper bound.
    "cifar10-gpu-budget": dict(
        model="coat_lite_tiny_cifar", data="cifar10", epochs=1000, time_budget_s=420.0,
        batch_size=512, lr=2e-3, min_lr=1e-5, weight_decay=0.05, warmup_epochs=2.0,
        label_smoothing=0.1, clip_grad=1.0, drop_path=0.1, amp="bf16", data_on_device=True,
        num_workers=8, seed=0, device="cuda"),
    # CoaT-Lite Tiny with factorized attention on Imagenette, the model that the Imagenette and
    # clusters chapters convert. smoke: a few updates at 64 px; cpu: 4 epochs at 64 px
    # (minutes on 2 cores); gpu: 30 epochs at 224 px.
    "imagenette-smoke": _IMAGENETTE | dict(img_size=64, epochs=1, train_subset=256,
                                           val_subset=128, steps_per_epoch=3),
    "imagenette-cpu": _IMAGENETTE | dict(img_size=64, epochs=4),
    "imagenette-gpu": _IMAGENETTE | dict(img_size=224, epochs=30),
}


def recipe(name: str, **overrides) -> dict:
    """The recipe ``name`` with ``overrides`` applied (any :class:`TrainConfig` field)."""
    if name not in RECIPES:
        raise ValueError(f"unknown recipe {name!r}; expected one of {', '.join(RECIPES)}")
    return {**RECIPES[name], **overrides}


def cifar10(profile: str | None = None, **overrides) -> TrainConfig:
    """The training chapter's recipe at ``profile`` (default: the active one); give ``model``
    (and ``attention``) to choose what it trains."""
    return TrainConfig(**recipe(_sized("cifar10", profile), **overrides))


def imagenette(profile: str | None = None, **overrides) -> TrainConfig:
    """The Imagenette CoaT-Lite Tiny at ``profile`` (default: the active one)."""
    return TrainConfig(**recipe(_sized("imagenette", profile), **overrides))


def _sized(name: str, profile: str | None) -> str:
    profile = profile or get_profile()
    if profile not in PROFILES:
        raise ValueError(f"profile must be one of {', '.join(PROFILES)}, got {profile!r}")
    return f"{name}-{profile}"
