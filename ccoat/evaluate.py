"""Scoring: how many test images a model gets right, how sure that number is, and how fast.

- :func:`accuracy` counts top-k hits in a batch; :class:`ClusterStats` averages, per stage,
  the clusters a clustered model formed;
- :func:`evaluate` scores a model on a loader: loss, top-1 and top-5 (%), images/s, the
  clusters per stage of a clustered model, and with ``interval=True`` the bootstrap 95%
  interval of top-1 and the per-image predictions that pair two models on the same images
  (:mod:`ccoat.stats`);
- :func:`eval_json` writes a result as a run folder's ``eval.json`` holds it;
- :func:`evaluate_checkpoint` scores a checkpoint written by :func:`ccoat.train.fit` (or a run
  folder's ``model.safetensors``) on its val split, refusing one made otherwise than the
  caller says; :func:`score_into_folder` is ``python -m ccoat.train --eval-only``, which
  writes that score into the run folder.

Training builds on this module (:mod:`ccoat.train` scores every epoch with :func:`evaluate`),
and takes from it the pieces both need: sums across processes (:func:`all_reduce_sum`), a
checkpoint's weights loaded with one error (:func:`load_model_state`), and the name results on
the data must carry (:func:`dataset_label`).
"""
from __future__ import annotations

import dataclasses
import json
import os
import sys
import time
from pathlib import Path

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from . import data as cdata
from .clustering import block_index, record_clusters
from .provenance import provenance, write_atomic
from .recipes import TrainConfig, amp_dtype, model_options, resolve_device
from .registry import create_model, unwrap
from .runfolder import (
    WEIGHTS_FILE,
    RunFolder,
    checkpoint_path,
    export_weights,
    held,
    load_checkpoint,
    refuse_differences,
    weights_checkpoint,
)
from .stats import bootstrap_interval

# ---------------------------------------------------------------------------------------------
# Scoring a model


def accuracy(logits: torch.Tensor, target: torch.Tensor, topk=(1, 5)) -> list[int]:
    """Number of samples whose label is among the ``k`` highest logits, for each ``k``."""
    k_max = min(max(topk), logits.shape[1])
    pred = logits.topk(k_max, dim=1).indices  # (B, k_max)
    hit = pred == target[:, None]
    return [int(hit[:, :min(k, k_max)].any(dim=1).sum()) for k in topk]


class ClusterStats:
    """Mean number of clusters per stage, accumulated over the batches of an evaluation.

    ``records`` is what ``ccoat.clustering.record_clusters`` fills: for each clustered block
    ``"stages.i.blocks.j"`` the last forward pass's ``num_clusters`` ``(B, heads)``. Call
    :meth:`collect` after every batch; :meth:`summary` averages over images, heads and the
    blocks of each stage: ``{"stage1": ..., "stage4": ...}`` (empty for a model without
    clustered attention).
    """

    def __init__(self, records: dict | None = None):
        self.records = records if records is not None else {}
        self.sums: dict[str, float] = {}
        self.counts: dict[str, int] = {}

    def collect(self) -> None:
        for name, record in self.records.items():
            stage = f"stage{block_index(name)[0] + 1}"
            n = record["num_clusters"].float()
            self.sums[stage] = self.sums.get(stage, 0.0) + float(n.sum())
            self.counts[stage] = self.counts.get(stage, 0) + n.numel()

    def summary(self) -> dict[str, float]:
        return {stage: self.sums[stage] / self.counts[stage] for stage in sorted(self.sums)}


@torch.no_grad()
def evaluate(model: nn.Module, loader, device=None, dtype: torch.dtype | None = None,
             channels_last: bool = False, progress: bool = False, desc: str = "eval",
             interval: bool = False) -> dict:
    """Loss, top-1 and top-5 accuracy (%) and throughput (images/s) of ``model`` on ``loader``.

    Under DDP each process evaluates its share and the sums are all-reduced. ``interval=True``
    adds ``top1_ci95``, the bootstrap 95% interval of top-1 over the images, and the per-image
    ``predictions`` (top-1 class) and ``labels`` in the loader's order, so that two models scored
    on the same images can be compared pairwise (:func:`ccoat.stats.paired_difference`; one
    process only).
    A model with clustered attention also reports ``clusters_per_stage``.
    """
    device = torch.device(device or next(model.parameters()).device)
    was_training = model.training
    model.eval()
    loss_sum, top1, top5, n = 0.0, 0, 0, 0
    predictions, labels = [], []  # per image, in the loader's order
    start = time.perf_counter()
    with record_clusters(unwrap(model)) as records:
        clusters = ClusterStats(records)
        for images, target in tqdm(loader, desc=desc, leave=False, disable=not progress):
            images, target = images.to(device, non_blocking=True), target.to(device, non_blocking=True)
            if channels_last:
                images = images.contiguous(memory_format=torch.channels_last)
            with torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
                logits = model(images)
            loss_sum += float(F.cross_entropy(logits.float(), target, reduction="sum"))
            c1, c5 = accuracy(logits, target)
            predictions.append(logits.argmax(dim=1).cpu())
            labels.append(target.cpu())
            top1, top5, n = top1 + c1, top5 + c5, n + len(target)
            clusters.collect()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elapsed = time.perf_counter() - start
    loss_sum, top1, top5, n = all_reduce_sum([loss_sum, top1, top5, n], device)
    model.train(was_training)
    if n == 0:
        raise ValueError(f"{desc}: the loader gave no images to evaluate")
    result = {"loss": loss_sum / n, "top1": 100.0 * top1 / n, "top5": 100.0 * top5 / n,
              "images": int(n),
              "images_per_s": n / elapsed if elapsed > 0 else float("nan"), "time_s": elapsed}
    if clusters.summary():
        result["clusters_per_stage"] = clusters.summary()
    if interval and predictions and not (dist.is_available() and dist.is_initialized()):
        predictions, labels = torch.cat(predictions), torch.cat(labels)
        result["top1_ci95"] = list(bootstrap_interval(predictions == labels))
        result["predictions"], result["labels"] = predictions.tolist(), labels.tolist()
    return result


PER_IMAGE = ("predictions", "labels")  # eval.json's per-image lists, one line each


def eval_json(result: dict) -> str:
    """``result`` as ``eval.json`` holds it: indented, with each per-image list on one line (a
    10,000-image test set would otherwise take 20,000 lines)."""
    head = json.dumps({k: v for k, v in result.items() if k not in PER_IMAGE}, indent=2)
    tails = [f'  "{k}": {json.dumps(result[k], separators=(",", ":"))}'
             for k in PER_IMAGE if k in result]
    if not tails:
        return head + "\n"
    return head[:-2] + (",\n" if len(head) > 2 else "\n") + ",\n".join(tails) + "\n}\n"


def all_reduce_sum(values: list[float], device) -> list[float]:
    """``values`` summed over every process under DDP (each process's share of a count or a
    loss); the values themselves on one process."""
    if not (dist.is_available() and dist.is_initialized()):
        return values
    t = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(t)
    return t.tolist()


# ---------------------------------------------------------------------------------------------
# Scoring a checkpoint


def evaluate_checkpoint(checkpoint: str | os.PathLike, data: str | None = None, data_dir=None,
                        batch_size: int = 256, num_workers: int = 2, device: str = "auto",
                        use_ema: bool = False, val_subset: int | None = None,
                        progress: bool = True, expect: dict | None = None) -> dict:
    """Top-1/top-5 (%) and throughput of a checkpoint written by :func:`ccoat.train.fit`, on its
    val split.

    ``data`` and ``expect`` (options such as ``model``, ``attention``, ``img_size``) say what the
    caller means to evaluate: a checkpoint made otherwise is refused, listing each difference.
    ``checkpoint`` is a ``last.pt`` or a run folder's ``model.safetensors``. The run's mixed
    precision is used on a GPU; a CPU scores in float32. The data root is ``data_dir`` if given,
    else ``$CCOAT_DATA``, else the run's own if it exists on this machine (a committed run's is
    another machine's), else the default. A run that has not trained all its epochs is scored,
    and a line on stderr says so (``epochs_planned`` in the result).
    ``use_ema`` on a checkpoint without EMA weights is an error, as is ``val_subset`` < 1."""
    if val_subset is not None and (not isinstance(val_subset, int) or val_subset < 1):
        raise ValueError(f"val_subset (--val-subset) must be an integer >= 1 or None, got {val_subset!r}")
    device = resolve_device(device, 0)
    ckpt = weights_checkpoint(checkpoint) if str(checkpoint).endswith(".safetensors") \
        else load_checkpoint(checkpoint)
    config = TrainConfig(**{k: v for k, v in ckpt["config"].items()
                            if k in {f.name for f in dataclasses.fields(TrainConfig)}})
    expect = dict(expect or {}, **({"data": data} if data is not None else {}))
    saved = dict(ckpt["config"], img_size=ckpt["data"].get("img_size"))
    refuse_differences(checkpoint, [f"{k}: checkpoint {saved.get(k)!r}, now {v!r}"
                                    for k, v in expect.items() if saved.get(k) != v],
                       action="evaluate")
    if use_ema and ckpt.get("ema") is None:
        raise ValueError(f"--ema: checkpoint {checkpoint} holds no EMA weights (its run had "
                         f"ema_decay={config.ema_decay})")
    _, val_set, info = cdata.build_datasets(config.data, _data_root(data_dir, config.data_dir),
                                            config.img_size)
    val_set = cdata.subset(val_set, val_subset, seed=config.seed)
    model = create_model(config.model, num_classes=info.num_classes, img_size=info.img_size,
                         **model_options(ckpt["config"]))
    load_model_state(model, ckpt["ema"] if use_ema else ckpt["model"], checkpoint, ckpt["config"])
    model.to(device)
    loader = cdata.make_loader(val_set, batch_size, False, num_workers)
    dtype = amp_dtype(config.amp, device) if device.type == "cuda" else None  # CPU: float32
    result = evaluate(model, loader, device, dtype, progress=progress, interval=True)
    unfinished = _unfinished(ckpt, config)
    if unfinished:
        print(f"note: {checkpoint} {unfinished}", file=sys.stderr, flush=True)
    return {"checkpoint": str(checkpoint), "model": config.model, "epoch": ckpt["epoch"] + 1,
            "epochs_planned": config.epochs, "weights": "ema" if use_ema else "model",
            "dataset": dataset_label(info), **result}


def load_model_state(model: nn.Module, state: dict, path, saved_config: dict) -> None:
    """``load_state_dict`` of a checkpoint's weights (its ``config`` is ``saved_config``), with
    one error naming the checkpoint's model instead of a line per mismatched tensor."""
    try:
        model.load_state_dict(state)
    except RuntimeError as error:
        lines = [l.strip() for l in str(error).splitlines()[1:] if l.strip()]
        raise ValueError(
            f"checkpoint {path} holds a {saved_config.get('model')} (attention "
            f"{saved_config.get('attention') or 'its default'}) whose weights do not fit the model "
            f"being built ({len(lines)} mismatches, first: {lines[0] if lines else error})") from error


def dataset_label(info: cdata.DataInfo) -> str:
    """How results on this data must be named: an ImageFolder copy of CIFAR-10 in JPEG is
    "CIFAR-10 (JPEG copy)", not CIFAR-10 (its pixels differ slightly from the original's)."""
    if info.name in ("cifar10", "cifar100") and Path(info.source, "train").is_dir():
        first_class = next(p for p in sorted(Path(info.source, "train").iterdir()) if p.is_dir())
        first_file = next(iter(sorted(first_class.iterdir())), None)
        if first_file is not None and first_file.suffix.lower() in (".jpg", ".jpeg"):
            return f"{'CIFAR-10' if info.name == 'cifar10' else 'CIFAR-100'} (JPEG copy) at {info.source}"
        return f"{info.name} (ImageFolder copy) at {info.source}"
    return f"{info.name} at {info.source}"


def _data_root(given: str | None, stored: str | None) -> str | None:
    """Where to read a checkpoint's data: the root given, else ``$CCOAT_DATA`` (None: the data
    module reads it), else the run's own root where it exists here, else None (the default)."""
    if given or os.environ.get(cdata.DATA_ENV):
        return given
    return stored if stored and Path(stored).is_dir() else None


def _unfinished(ckpt: dict, config: TrainConfig) -> str | None:
    """Why the checkpoint's run is unfinished (its epochs done of those planned), or None. A
    run under a time budget is finished once the budget is spent, whatever ``epochs`` says."""
    done, history = ckpt["epoch"] + 1, ckpt.get("history") or []
    if done >= config.epochs:
        return None
    if config.time_budget_s and history and \
            history[-1].get("train_elapsed_s", 0.0) >= config.time_budget_s:
        return None
    return (f"is of an unfinished run: {done} of {config.epochs} planned epochs done; its score "
            f"is not the run's final one")


def score_into_folder(config: TrainConfig, use_ema: bool, explicit: set[str]) -> int:
    """``python -m ccoat.train --eval-only``: score the checkpoint named by ``--resume``, else
    ``OUT/last.pt``, against the options ``explicit``ly given; with ``--out``, write
    ``eval.json`` (and the scored weights) there, holding the folder's lock so that a run
    training into it is not written over. ``use_ema``: the EMA weights (``--ema``)."""
    ckpt = checkpoint_path(config) or (Path(config.out) / "last.pt" if config.out else None)
    if ckpt is None or not ckpt.exists():
        raise ValueError(f"--eval-only needs --resume CHECKPOINT (a last.pt, or a run folder's "
                         f"model.safetensors) or --out with last.pt; got {ckpt}")
    if config.threads:
        torch.set_num_threads(config.threads)
    expect = {k: getattr(config, k) for k in ("model", "attention", "data", "img_size")
              if k in explicit}
    with held(RunFolder(config.out) if config.out else None, config.command) as folder:
        result = evaluate_checkpoint(ckpt, data_dir=config.data_dir, batch_size=config.batch_size,
                                     num_workers=config.num_workers, device=config.device,
                                     use_ema=use_ema, val_subset=config.val_subset,
                                     progress=config.progress, expect=expect)
        result["provenance"] = provenance(dataset=result["dataset"], command=config.command)
        print(json.dumps({k: v for k, v in result.items() if k not in PER_IMAGE}, indent=2))
        if folder is not None:
            write_atomic(folder.path / "eval.json", eval_json(result))
            # the scored weights in half precision, the file a committed run keeps
            if ckpt.suffix != ".safetensors":
                export_weights(ckpt, folder.path / WEIGHTS_FILE, use_ema=use_ema)
    return 0
