"""Training: one function for the notebooks, one command line for everyone.

``fit(config) -> TrainRun`` runs the recipe the book uses for every model:

- AdamW with weight decay (none on norms, biases and class tokens), a linear warm-up then a
  cosine decay (timm's :class:`~timm.scheduler.CosineLRScheduler`, stepped every update);
- cross-entropy with label smoothing (soft targets under Mixup/CutMix), gradient clipping;
- automatic mixed precision on a GPU (bf16 where the GPU computes it natively, else fp16 with a
  gradient scaler);
- optional ``torch.compile``, channels-last, EMA of the weights (timm's ``ModelEmaV3``),
  Mixup/CutMix and RandAugment (timm's);
- one JSON line of metrics per epoch in ``out/metrics.jsonl``, ``out/run.json`` with the run's
  provenance, and ``out/last.pt``, a checkpoint written atomically (temporary file, then
  rename) with the model, optimizer, scheduler, scaler, EMA and every RNG state. The folder is
  locked while the run trains and stays consistent whenever it stops (:mod:`ccoat.runfolder`).

:func:`fit` reads top to bottom, as nanoGPT's ``train.py`` does, in phases of one
:class:`_Run`: where the process runs, what it continues from, the data, the model, what makes
an update, then per epoch one pass of training, the evaluation and the checkpoint. What an
option means (its device, its precision, whether it may change on resume, the command line) is
:class:`~ccoat.recipes.TrainConfig`'s; what a run continues from, and what it refuses to
continue, is the run folder's (:mod:`ccoat.runfolder`); the scoring is :mod:`ccoat.evaluate`'s.

Resuming (``resume=True``) continues from the last completed epoch so that an interrupted run
ends with exactly the weights of an uninterrupted one: each epoch's shuffling is a function of
``(seed, epoch)`` (a ``DistributedSampler``, even on one process), and the torch, numpy and
python RNG states (augmentation, dropout, Mixup) are saved and restored.

Launched by ``torchrun`` (``WORLD_SIZE > 1``) the same code trains with DDP: every process sees
its share of each global batch (``batch_size`` is the global batch), gradients are averaged,
and only rank 0 writes files and progress bars.

Command line: ``python -m ccoat.train --model coat_lite_tiny_cifar --data cifar10 --epochs 10
--batch-size 128 --out runs/x``; ``--eval-only --resume CKPT`` scores a checkpoint.
"""
from __future__ import annotations

import dataclasses
import json
import math
import os
import random
import sys
import time
import typing
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from timm.data import Mixup
from timm.loss import SoftTargetCrossEntropy
from timm.scheduler import CosineLRScheduler
from timm.utils import ModelEmaV3
from torch import nn
from torch.utils.data import DistributedSampler
from tqdm.auto import tqdm

from . import data as cdata
from .checks import one_line
from .evaluate import (
    all_reduce_sum,
    dataset_label,
    evaluate,
    load_model_state,
    score_into_folder,
)
from .provenance import provenance
from .recipes import (
    TrainConfig,
    amp_dtype,
    check_given_model,
    model_given,
    model_options,
    parse_args,
    refuse_unused_options,
    resolve_device,
)
from .registry import create_model, unwrap
from .runfolder import (
    RunFolder,
    RunFolderBusy,
    checkpoint_path,
    data_and_kind_differences,
    held,
    refuse_differences,
    resume_point,
    rng_state,
    set_rng_state,
    what_is_kept,
    with_saved_options,
)
from .weights import load_weights

# ---------------------------------------------------------------------------------------------
# Pieces of the recipe


def param_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """Weight decay on weight matrices and conv kernels only, not on norms, biases, tokens."""
    skip = set(getattr(model, "no_weight_decay", lambda: set())())
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        (no_decay if p.ndim <= 1 or name in skip or name.endswith("cls_token") else decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay},
            {"params": no_decay, "weight_decay": 0.0}]


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


# ---------------------------------------------------------------------------------------------
# One update, and the schedule of a run sized by time


def train_step(model: nn.Module, images: torch.Tensor, target: torch.Tensor, optimizer,
               criterion, scaler=None, clip_grad: float | None = None,
               dtype: torch.dtype | None = None, clip_params=None) -> float:
    """One update: forward (under autocast when ``dtype``), loss, backward, clip, step.

    Returns the loss as a float. ``scaler`` is a ``GradScaler`` (needed for fp16 only).
    """
    with torch.autocast(images.device.type, dtype=dtype, enabled=dtype is not None):
        logits = model(images)
        loss = criterion(logits.float(), target)
    optimizer.zero_grad(set_to_none=True)
    if scaler is None:
        scaler = torch.amp.GradScaler(images.device.type, enabled=False)
    scaler.scale(loss).backward()
    if clip_grad:
        scaler.unscale_(optimizer)
        nn.utils.clip_grad_norm_(list(clip_params if clip_params is not None else model.parameters()),
                                 clip_grad)
    scaler.step(optimizer)
    scaler.update()
    return loss.item()


class TimeBudgetSchedule:
    """The learning rate of a run sized by wall-clock time rather than by epochs.

    A linear warm-up over the first ``warmup_updates`` updates (from ``lr * 1e-3``), then a
    cosine from ``lr`` to ``min_lr`` over the training seconds left until ``budget_s``: two
    models given the same budget both finish their schedule when it is spent, whatever their
    speed. Training time is measured by the caller (the loss is read back every update, so the
    device has finished that update's work).
    """

    def __init__(self, optimizer, lr: float, min_lr: float, budget_s: float, warmup_updates: int):
        self.optimizer, self.lr, self.min_lr = optimizer, lr, min_lr
        self.budget_s, self.warmup_updates = float(budget_s), int(warmup_updates)
        self.warmup_end_s: float | None = None  # training seconds when the warm-up ended
        self._set(lr * 1e-3 if warmup_updates else lr)

    def _set(self, lr: float) -> None:
        for group in self.optimizer.param_groups:
            group["lr"] = lr

    def lr_at(self, updates: int, train_s: float) -> float:
        if updates < self.warmup_updates:
            return self.lr * (1e-3 + (1 - 1e-3) * updates / self.warmup_updates)
        start = self.warmup_end_s if self.warmup_end_s is not None else train_s
        progress = min(max((train_s - start) / max(self.budget_s - start, 1e-9), 0.0), 1.0)
        return self.min_lr + 0.5 * (self.lr - self.min_lr) * (1 + math.cos(math.pi * progress))

    def step_update(self, updates: int, train_s: float) -> None:
        if updates >= self.warmup_updates and self.warmup_end_s is None:
            self.warmup_end_s = train_s
        self._set(self.lr_at(updates, train_s))

    def state_dict(self) -> dict:
        return {"warmup_end_s": self.warmup_end_s, "budget_s": self.budget_s}

    def load_state_dict(self, state: dict) -> None:
        self.warmup_end_s = state["warmup_end_s"]


# ---------------------------------------------------------------------------------------------
# fit, top to bottom


@dataclass
class TrainRun:
    """What :func:`fit` hands back: the trained model (unwrapped), per-epoch history, the data."""
    model: nn.Module
    history: list[dict]
    info: cdata.DataInfo
    ema: nn.Module | None = None


def fit(config: TrainConfig | dict, model: nn.Module | None = None) -> TrainRun:
    """Train per ``config`` (optionally a given ``model``), returning the model and history.

    A given ``model`` built by :func:`ccoat.create_model` must be ``config.model`` (its name
    is what ``run.json`` and the checkpoint record, and what rebuilds the model to score it);
    one built otherwise (a model of the caller's own size) is trained and recorded as what it
    is, ``model_given`` (its class and parameter count), beside ``config.model``.

    With ``out``, the run folder is locked for the run's duration (another run into it raises
    :class:`~ccoat.runfolder.RunFolderBusy`) and kept consistent whenever the run stops
    (:mod:`ccoat.runfolder`).
    """
    config = (TrainConfig(**config) if isinstance(config, dict) else config).validate()
    check_given_model(config, model)
    if config.threads:
        torch.set_num_threads(config.threads)
    run = _launch(config)
    with held(run.folder, config.command):
        for path in run.folder.remove_temporaries() if run.folder is not None else ():
            print(f"removed {path}, left by a write that never finished", file=sys.stderr)
        ckpt, saved_run_json = resume_point(config, run.main_process)
        # The phases come in the order the RNG sees them: the seed, the data's subsets, the
        # model's initialisation, then a checkpoint's saved states.
        seed_everything(config.seed)
        run.data = _data(run)
        run.model = _model(config, model, run.data.info, run.device, resumed=ckpt is not None)
        _update_parts(run)
        if ckpt is not None:
            _continue_from(run, ckpt)
        run.wrapped = _wrap(run)
        if run.folder is not None:
            _begin_folder(run, ckpt, saved_run_json)
        end = config.epochs if config.stop_after is None else min(config.epochs, config.stop_after)
        for epoch in range(run.first_epoch, end):
            if config.time_budget_s and run.so_far("train_elapsed_s") >= config.time_budget_s:
                break
            metrics = _epoch(run, epoch)
            run.history.append(metrics)
            if run.verbose:
                print(json.dumps({k: (round(v, 4) if isinstance(v, float) else v)
                                  for k, v in metrics.items()}), flush=True)
            if run.folder is not None:  # the checkpoint first, then metrics.jsonl from its history
                run.folder.write_epoch(_checkpoint(run, epoch))
    return TrainRun(model=run.model, history=run.history, info=run.data.info,
                    ema=run.ema.module if run.ema else None)


@dataclass
class _Data:
    """The splits as this process's loaders, and how many updates make an epoch."""

    info: cdata.DataInfo
    train_loader: typing.Iterable
    val_loader: typing.Iterable
    train_sampler: DistributedSampler  # set_epoch(epoch) shuffles for that epoch
    steps_per_epoch: int


@dataclass
class _Run:
    """One run as :func:`fit` builds it, phase by phase: where this process runs, the data and
    the model, what makes an update, and how far the run has come."""

    config: TrainConfig
    rank: int  # this process's, among ``world`` (torchrun's; 0 of 1 without it)
    world: int
    device: torch.device
    folder: RunFolder | None  # rank 0's run folder; None elsewhere, and without ``out``
    data: _Data | None = None
    model: nn.Module | None = None  # the model itself: what a checkpoint keeps
    wrapped: nn.Module | None = None  # what the epochs run: the model under DDP, compiled
    # What makes an update: the loss, the optimizer and its schedule, the precision, the EMA.
    criterion: nn.Module | None = None
    mixup: Mixup | None = None
    optimizer: torch.optim.Optimizer | None = None
    schedule: CosineLRScheduler | TimeBudgetSchedule | None = None
    dtype: torch.dtype | None = None  # of autocast; None: full precision
    scaler: torch.amp.GradScaler | None = None  # fp16 only
    ema: ModelEmaV3 | None = None
    # How far the run has come: the epoch this launch starts at, the epochs done (as
    # ``metrics.jsonl`` holds them) and the updates made.
    first_epoch: int = 0
    history: list[dict] = field(default_factory=list)
    updates: int = 0

    @property
    def main_process(self) -> bool:
        return self.rank == 0

    @property
    def verbose(self) -> bool:
        """Progress bars and a line of metrics per epoch: rank 0's, with ``--progress``."""
        return self.config.progress and self.main_process

    def so_far(self, name: str) -> float:
        """``elapsed_s`` or ``train_elapsed_s`` at the end of the last epoch done."""
        return self.history[-1].get(name, 0.0) if self.history else 0.0


def _launch(config: TrainConfig) -> _Run:
    """This process's place: its rank, the number of processes, its device (resolved here,
    once), rank 0's run folder; under torchrun the process group is joined."""
    rank, world, local_rank = (int(os.environ.get(name, default)) for name, default in
                               (("RANK", "0"), ("WORLD_SIZE", "1"), ("LOCAL_RANK", "0")))
    device = resolve_device(config.device, local_rank)
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    if config.batch_size % world:
        raise ValueError(f"batch_size must be divisible by the number of processes ({world}), "
                         f"got {config.batch_size}")
    folder = RunFolder(config.out) if config.out and rank == 0 else None
    return _Run(config, rank, world, device, folder)


def _data(run: _Run) -> _Data:
    """Every process builds the same splits; the sampler gives each its share. It shuffles the
    train split as a function of ``(seed, epoch)``, even on one process, so a resumed run sees
    the batches an uninterrupted one would."""
    config, device = run.config, run.device
    train_set, val_set, info = cdata.build_datasets(config.data, config.data_dir, config.img_size,
                                                    randaugment=config.randaugment,
                                                    augment=config.augment)
    train_set = cdata.subset(train_set, config.train_subset, seed=config.seed)
    val_set = cdata.subset(val_set, config.val_subset, seed=config.seed)
    local_batch = config.batch_size // run.world
    if len(train_set) < config.batch_size:
        raise ValueError(f"the train split has {len(train_set)} images, fewer than one batch "
                         f"of {config.batch_size}")
    train_sampler = DistributedSampler(train_set, num_replicas=run.world, rank=run.rank,
                                       shuffle=True, seed=config.seed, drop_last=True)
    val_sampler = DistributedSampler(val_set, num_replicas=run.world, rank=run.rank,
                                     shuffle=False) if run.world > 1 else None
    if config.data_on_device:
        train_loader = cdata.device_loader(train_set, info, local_batch, True, device, train_sampler,
                                           config.augment, config.seed, config.num_workers)
        val_loader = cdata.device_loader(val_set, info, local_batch, False, device, val_sampler,
                                         num_workers=config.num_workers)
    else:
        pin = device.type == "cuda"
        train_loader = cdata.make_loader(train_set, local_batch, True, config.num_workers,
                                         train_sampler, pin)
        val_loader = cdata.make_loader(val_set, local_batch, False, config.num_workers,
                                       val_sampler, pin)
    steps_per_epoch = len(train_loader)
    if config.steps_per_epoch:
        steps_per_epoch = min(steps_per_epoch, config.steps_per_epoch)
    return _Data(info, train_loader, val_loader, train_sampler, steps_per_epoch)


def _model(config: TrainConfig, model: nn.Module | None, info: cdata.DataInfo,
           device: torch.device, *, resumed: bool = False) -> nn.Module:
    """The model given, or a new one of ``config.model`` (initialised from the seeded RNG), with
    the weights of ``config.init`` if it names a file (a fine-tune) and the run does not resume
    (a checkpoint's weights replace them then)."""
    if model is None:
        model = create_model(config.model, num_classes=info.num_classes, img_size=info.img_size,
                             drop_path_rate=config.drop_path, **model_options(config))
    stride = getattr(getattr(unwrap(model), "config", None), "stride", None)
    if stride and info.img_size % stride:  # else the first forward pass fails, the run begun
        raise ValueError(f"img_size (--img-size) must be divisible by {stride} (the stride of "
                         f"{config.model}'s last stage), got {info.img_size}")
    if config.init and not resumed:
        load_weights(model, config.init)  # ValueError, model untouched, if they do not fit
    model.to(device)
    if config.channels_last:
        model.to(memory_format=torch.channels_last)
    return model


def _update_parts(run: _Run) -> None:
    """What makes an update, on ``run``: the loss (label-smoothed cross-entropy, or soft targets
    under Mixup/CutMix), AdamW and its schedule, the precision (autocast dtype, the gradient
    scaler fp16 needs) and the EMA of the weights."""
    config = run.config
    run.optimizer = torch.optim.AdamW(param_groups(run.model, config.weight_decay), lr=config.lr)
    run.dtype = amp_dtype(config.amp, run.device)
    if config.mixup > 0 or config.cutmix > 0:
        run.mixup = Mixup(mixup_alpha=config.mixup, cutmix_alpha=config.cutmix,
                          label_smoothing=config.label_smoothing,
                          num_classes=run.data.info.num_classes)
    run.schedule = _schedule(config, run.optimizer, run.data.steps_per_epoch)
    run.scaler = torch.amp.GradScaler(run.device.type, enabled=run.dtype == torch.float16)
    if config.ema_decay:
        run.ema = ModelEmaV3(run.model, decay=config.ema_decay, device=run.device)
    run.criterion = SoftTargetCrossEntropy() if run.mixup else \
        nn.CrossEntropyLoss(label_smoothing=config.label_smoothing)


def _schedule(config: TrainConfig, optimizer, steps_per_epoch: int):
    """A linear warm-up, then a cosine that reaches ``min_lr`` at the run's last update, or
    under a time budget when its seconds are spent (:class:`TimeBudgetSchedule`)."""
    warmup_updates = round(config.warmup_epochs * steps_per_epoch)
    if config.time_budget_s:
        return TimeBudgetSchedule(optimizer, config.lr, config.min_lr, config.time_budget_s,
                                  warmup_updates)
    total_updates = config.epochs * steps_per_epoch
    warmup_updates = min(warmup_updates, total_updates - 1)
    return CosineLRScheduler(
        optimizer, t_initial=max(total_updates - warmup_updates, 1), lr_min=config.min_lr,
        warmup_t=warmup_updates, warmup_lr_init=config.lr * 1e-3, warmup_prefix=True,
        t_in_epochs=False)


def _continue_from(run: _Run, ckpt: dict) -> None:
    """Load a checkpoint made on the same data and attention kinds: the weights, optimizer,
    schedule, scaler and EMA, how far it had come, and last the RNG states, so that nothing
    drawn after them differs from the uninterrupted run."""
    path = checkpoint_path(run.config)
    refuse_differences(path, data_and_kind_differences(
        ckpt, run.data.info, getattr(run.model, "attention_kinds", None)), "resume")
    load_model_state(run.model, ckpt["model"], path, ckpt["config"])
    run.optimizer.load_state_dict(ckpt["optimizer"])
    run.first_epoch, run.history, run.updates = ckpt["epoch"] + 1, ckpt["history"], ckpt["updates"]
    _continue_schedule(run, ckpt, path)
    run.scaler.load_state_dict(ckpt["scaler"])
    if run.ema is not None:
        if ckpt.get("ema") is None:
            raise ValueError(f"ema_decay (--ema-decay) is {run.config.ema_decay}, but {path} "
                             f"holds no EMA weights")
        run.ema.module.load_state_dict(ckpt["ema"])
    set_rng_state(ckpt["rng"])


def _continue_schedule(run: _Run, ckpt: dict, path: Path) -> None:
    """The checkpoint's schedule; for a run of another length (``epochs``), the schedule rebuilt
    for this one, taken up at the same update. A time budget's schedule keeps its warm-up's end
    and follows this run's budget."""
    config = run.config
    saved_length = ckpt["config"].get("time_budget_s" if config.time_budget_s else "epochs")
    message = None
    if config.time_budget_s:
        run.schedule.load_state_dict(ckpt["scheduler"])
        if saved_length != config.time_budget_s:
            message = (f"time_budget_s: {saved_length} in {path}, now {config.time_budget_s}: "
                       f"the learning-rate schedule follows the new budget from the next update")
    elif saved_length == config.epochs:
        run.schedule.load_state_dict(ckpt["scheduler"])
    else:
        run.schedule.step_update(num_updates=run.updates)
        message = (f"epochs: {saved_length} in {path}, now {config.epochs}: the learning-rate "
                   f"schedule is rebuilt for {config.epochs} epochs and continues at update "
                   f"{run.updates} (lr {run.optimizer.param_groups[0]['lr']:.3g})")
    if message and run.main_process:
        print(message, file=sys.stderr, flush=True)


def _wrap(run: _Run) -> nn.Module:
    """What the epochs run: the model under DDP across processes, compiled if asked; its
    parameters stay the model's."""
    wrapped = run.model
    if run.world > 1:
        wrapped = nn.parallel.DistributedDataParallel(
            run.model, device_ids=[run.device.index] if run.device.type == "cuda" else None)
    if run.config.compile:
        wrapped = torch.compile(wrapped)
    return wrapped


def _begin_folder(run: _Run, ckpt: dict | None, saved_run_json: dict | None) -> None:
    """Rank 0, once data and model are ready: move aside the run being replaced, write
    ``run.json`` (keeping a resumed run's first launch in it) and the checkpoint's epochs."""
    config = run.config
    run.folder.make_room(checkpoint_path(config) if ckpt is not None else None,
                         continued=ckpt is not None or saved_run_json is not None,
                         overwrite=config.overwrite)
    run_json = provenance(
        dataset=dataset_label(run.data.info), device=run.device, command=config.command,
        config=dataclasses.asdict(config),
        data=dataclasses.asdict(run.data.info) | {"classes": None}, world_size=run.world,
        steps_per_epoch=run.data.steps_per_epoch,
        parameters=sum(p.numel() for p in run.model.parameters()),
        attention_kinds=getattr(run.model, "attention_kinds", None),
        model_given=model_given(run.model),
        resumed_from_epoch=run.first_epoch if ckpt is not None else None)
    run.folder.begin(run_json, run.history, resumed=ckpt is not None)


def _epoch(run: _Run, epoch: int) -> dict:
    """One epoch: a pass of training, the evaluation (and the EMA's), its line of metrics."""
    start = time.perf_counter()
    loss, seen, data_wait, train_time = _train_pass(run, epoch, start)
    val = evaluate(run.wrapped, run.data.val_loader, run.device, run.dtype,
                   run.config.channels_last, progress=run.verbose, desc="val")
    epoch_time = time.perf_counter() - start
    metrics = {
        "epoch": epoch + 1, "train_loss": loss, "val_loss": val["loss"],
        "val_top1": val["top1"], "val_top5": val["top5"],
        "images_per_s": seen / train_time, "val_images_per_s": val["images_per_s"],
        "data_wait_s": data_wait, "train_time_s": train_time,
        "epoch_time_s": epoch_time, "elapsed_s": run.so_far("elapsed_s") + epoch_time,
        "train_elapsed_s": run.so_far("train_elapsed_s") + train_time,
        "lr": run.optimizer.param_groups[0]["lr"], "updates": run.updates,
    }
    if "clusters_per_stage" in val:
        metrics["clusters_per_stage"] = val["clusters_per_stage"]
    if run.ema is not None:
        ema_val = evaluate(run.ema.module, run.data.val_loader, run.device, run.dtype,
                           run.config.channels_last)
        metrics.update(val_top1_ema=ema_val["top1"], val_top5_ema=ema_val["top5"])
    return metrics


def _train_pass(run: _Run, epoch: int, start: float) -> tuple[float, float, float, float]:
    """One pass over the epoch's batches, at most ``steps_per_epoch`` of them and none past a
    spent time budget, begun at ``start``: (mean training loss and images seen, over every
    process; seconds waiting for batches; seconds in all). ``run.updates`` counts."""
    config, data, device = run.config, run.data, run.device
    run.wrapped.train()
    data.train_sampler.set_epoch(epoch)
    loss_sum, seen, data_wait, fetched = 0.0, 0, 0.0, start
    bar = tqdm(total=data.steps_per_epoch, desc=f"epoch {epoch + 1}/{config.epochs}", leave=False,
               disable=not run.verbose, mininterval=2.0)
    budget_spent = False
    for step, (images, target) in enumerate(data.train_loader):
        if step >= data.steps_per_epoch or budget_spent:
            break
        data_wait += time.perf_counter() - fetched  # time the step waited for its batch
        images, target = images.to(device, non_blocking=True), target.to(device, non_blocking=True)
        if config.channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        soft_target = target
        if run.mixup is not None:
            images, soft_target = run.mixup(images, target)
        loss = train_step(run.wrapped, images, soft_target, run.optimizer, run.criterion,
                          run.scaler, config.clip_grad, run.dtype,
                          clip_params=run.model.parameters())
        if not math.isfinite(loss):
            raise FloatingPointError(f"loss is {loss} at epoch {epoch}, step {step}")
        run.updates += 1
        if config.time_budget_s:
            trained = run.so_far("train_elapsed_s") + time.perf_counter() - start
            run.schedule.step_update(run.updates, trained)
            budget_spent = trained >= config.time_budget_s  # this epoch ends here
        else:
            run.schedule.step_update(num_updates=run.updates)
        if run.ema is not None:
            run.ema.update(run.model, step=run.updates)
        loss_sum += loss * len(target)
        seen += len(target)
        bar.set_postfix(loss=f"{loss:.3f}", lr=f"{run.optimizer.param_groups[0]['lr']:.2e}")
        bar.update()
        fetched = time.perf_counter()
    bar.close()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    train_time = time.perf_counter() - start
    loss_sum, seen = all_reduce_sum([loss_sum, seen], device)
    return loss_sum / max(seen, 1), seen, data_wait, train_time


def _checkpoint(run: _Run, epoch: int) -> dict:
    """Everything a resumed run needs to go on as if it had never stopped."""
    return {
        "model": run.model.state_dict(), "optimizer": run.optimizer.state_dict(),
        "scheduler": run.schedule.state_dict(), "scaler": run.scaler.state_dict(),
        "ema": run.ema.module.state_dict() if run.ema is not None else None,
        "rng": rng_state(), "epoch": epoch, "updates": run.updates,
        "history": run.history, "config": dataclasses.asdict(run.config),
        "data": dataclasses.asdict(run.data.info),
        "attention_kinds": list(getattr(run.model, "attention_kinds", None) or []) or None,
        "model_given": model_given(run.model),
    }


# ---------------------------------------------------------------------------------------------
# Command line (its options are TrainConfig's fields: ccoat.recipes.parse_args)


def main(argv=None) -> int:
    """The command line. A refused option or file, or a failed write, ends it with one line
    ``error: ...`` (exit status 1) instead of a traceback; Ctrl-C with a line saying what the
    run folder keeps (exit status 130)."""
    config, args = parse_args(argv)
    try:
        config.validate(training=not args.eval_only)
        if args.eval_only:
            return score_into_folder(config, args.ema, args.explicit)
        if args.ema:
            raise ValueError("--ema evaluates a checkpoint's EMA weights: it needs --eval-only "
                             "(training keeps an EMA with --ema-decay)")
        if config.resume:
            config = with_saved_options(config, args.explicit)
        refuse_unused_options(config, args.explicit)
        fit(config)
    except (ValueError, OSError, RunFolderBusy) as error:
        raise SystemExit(f"error: {one_line(error)}") from None
    except KeyboardInterrupt:
        print(f"interrupted: {what_is_kept(config, args.eval_only)}", file=sys.stderr, flush=True)
        raise SystemExit(130) from None
    finally:
        if dist.is_available() and dist.is_initialized():
            dist.destroy_process_group()
    return 0


if __name__ == "__main__":
    sys.exit(main())
