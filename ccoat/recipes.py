"""Training recipes by name: the settings of a run that the book reports, kept in one place.

A recipe is a dict of :class:`~ccoat.train.TrainConfig` fields. ``python -m ccoat.train --recipe
NAME`` starts from it (options given on the command line override it), and
``ccoat.train.fit(recipe(NAME, model=...))`` does the same from Python.
"""
from __future__ import annotations

RECIPES: dict[str, dict] = {
    # CIFAR-10 on one GPU for a fixed wall-clock budget (the equal-GPU-time comparison of the
    # training chapter): the splits live on the GPU as uint8 and are cropped and flipped there,
    # bf16 autocast, the learning rate warms up for two epochs and then follows a cosine in
    # training seconds that ends when the budget is spent. --epochs is only an upper bound.
    "cifar10-gpu-budget": dict(
        model="coat_lite_tiny_cifar", data="cifar10", epochs=1000, time_budget_s=420.0,
        batch_size=512, lr=2e-3, min_lr=1e-5, weight_decay=0.05, warmup_epochs=2.0,
        label_smoothing=0.1, clip_grad=1.0, drop_path=0.1, amp="bf16", data_on_device=True,
        num_workers=8, seed=0, device="cuda"),
}


def recipe(name: str, **overrides) -> dict:
    """The recipe ``name`` with ``overrides`` applied (any :class:`TrainConfig` field)."""
    if name not in RECIPES:
        raise ValueError(f"unknown recipe {name!r}; expected one of {', '.join(RECIPES)}")
    return {**RECIPES[name], **overrides}
