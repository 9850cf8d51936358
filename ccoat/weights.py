"""Trained weights as small files: half-precision ``safetensors`` that any attention kind loads.

Every attention kind of ccoat has the same parameters (the kinds differ only in the core that
turns ``q, k, v`` into an output), so one file of a trained CoaT-Lite or Clustering CoaT loads
into a model of the same size with any kind. The file records the model name, size and number
of classes; :func:`load_weights` checks them, and every tensor's name, shape and kind (floating
point or integer), before it copies anything, so a wrong file never half-fills a model.

A file also records a SHA-256 of its tensors (``CHECKSUM_KEY``): a bit flipped on a disk or in a
transfer changes a weight without making the file unreadable, and is refused by the check.
Files written before the checksum existed (the first committed runs) have none and still load.
"""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import torch
import torch.nn as nn

from .provenance import write_atomic

CHECKSUM_KEY = "tensors_sha256"  # in the file's metadata, beside what the caller stores


def tensors_sha256(state: dict[str, torch.Tensor]) -> str:
    """A SHA-256 of the tensors' names, dtypes, shapes and bytes, in name order: what a file's
    tensors hash to whatever the order of its header."""
    digest = hashlib.sha256()
    for name in sorted(state):
        tensor = state[name].detach().to("cpu").contiguous()
        digest.update(f"{name}|{tensor.dtype}|{tuple(tensor.shape)}|".encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def save_weights(model: nn.Module, path: str | os.PathLike, *, dtype: torch.dtype = torch.float16,
                 metadata: dict | None = None) -> Path:
    """Write ``model``'s floating-point weights (in ``dtype``) and buffers to ``path``.

    ``metadata`` (model name, dataset, run folder, ...) is stored as JSON strings in the file's
    header; the number of classes is added from the model.
    """
    from safetensors.torch import save

    state = {}
    for name, tensor in model.state_dict().items():
        tensor = tensor.detach().to("cpu")
        state[name] = (tensor.to(dtype) if tensor.is_floating_point() else tensor).contiguous()
    num_classes = getattr(model, "num_classes", None)
    header = {k: json.dumps(v) for k, v in {**(metadata or {}), "num_classes": num_classes,
                                              CHECKSUM_KEY: tensors_sha256(state)}.items()}
    path = Path(path)
    write_atomic(path, save(state, metadata=header))  # all of the file or none of it
    return path


def read_metadata(path: str | os.PathLike) -> dict:
    """The metadata :func:`save_weights` stored in ``path`` (without the checksum)."""
    from safetensors import safe_open

    with _opened(path, safe_open) as f:
        metadata = _metadata(path, f)
    metadata.pop(CHECKSUM_KEY, None)
    return metadata


def _metadata(path, f) -> dict:
    try:
        return {k: json.loads(v) for k, v in (f.metadata() or {}).items()}
    except ValueError as error:
        raise ValueError(f"{path}: its metadata is not JSON ({error})") from error


def read_tensors(path: str | os.PathLike) -> tuple[dict[str, torch.Tensor], dict]:
    """Every tensor of a weights file, as stored, and its metadata; ``ValueError`` naming the
    file when it cannot be read or its tensors do not hash to its checksum (a file without one,
    written before it existed, is read unchecked)."""
    from safetensors import safe_open

    with _opened(path, safe_open) as f:
        try:
            found = {name: f.get_tensor(name) for name in f.keys()}
        except Exception as error:  # noqa: BLE001 (safetensors' own error types)
            raise ValueError(f"{path}: could not read its tensors: {error}") from error
        metadata = _metadata(path, f)
    stored = metadata.pop(CHECKSUM_KEY, None)
    if stored is not None and stored != tensors_sha256(found):
        raise ValueError(f"{path} is corrupt: its tensors do not match the SHA-256 stored with "
                         f"them ({stored[:12]}...); copy the file again")
    return found, metadata


def _opened(path, safe_open):
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no weights file at {path}")
    try:
        return safe_open(str(path), framework="pt")
    except Exception as error:  # safetensors raises its own error types for a corrupt header
        raise ValueError(f"{path} is not a readable safetensors file: {error}") from error


def load_weights(model: nn.Module, path: str | os.PathLike) -> nn.Module:
    """Copy the weights in ``path`` into ``model`` (any attention kind), in its own dtype.

    Raises ``ValueError`` naming what was expected and what was found when a tensor is missing,
    unexpected, of another shape (another model size or number of classes) or of another kind
    (integers where the model has floating point, or the reverse: a cast would hide it), or when
    the file is corrupt; the model is left untouched then.
    """
    expected = model.state_dict()
    found, metadata = read_tensors(path)
    # An attention core's own buffers (the hash projections of a clustered kind), and those of
    # token clustering's LSH, belong to the kind: a file of another kind has none or others, and
    # the model keeps its own.
    missing = sorted(k for k in set(expected) - set(found) if not _kind_specific(k))
    unexpected = sorted(k for k in set(found) - set(expected) if not _kind_specific(k))
    mismatched = [f"{name}: model {tuple(expected[name].shape)}, file {tuple(found[name].shape)}"
                  for name in sorted(set(expected) & set(found))
                  if expected[name].shape != found[name].shape]
    mismatched += [f"{name}: model {expected[name].dtype}, file {found[name].dtype}"
                   for name in sorted(set(expected) & set(found))
                   if not _same_kind(expected[name].dtype, found[name].dtype)]
    if missing or unexpected or mismatched:
        what = metadata.get("model", "an unnamed model")
        lines = [f"{path} holds weights of {what} ({metadata.get('num_classes')} classes) that do "
                 f"not fit this {type(model).__name__} ({getattr(model, 'num_classes', '?')} "
                 "classes):"]
        if mismatched:
            lines.append(f"{len(mismatched)} of another shape or dtype, e.g. "
                         + "; ".join(mismatched[:3]))
        if missing:
            lines.append(f"{len(missing)} missing from the file, e.g. {', '.join(missing[:3])}")
        if unexpected:
            lines.append(f"{len(unexpected)} not in the model, e.g. {', '.join(unexpected[:3])}")
        raise ValueError("\n  ".join(lines))
    with torch.no_grad():
        for name, tensor in expected.items():
            if name in found:
                tensor.copy_(found[name].to(tensor.dtype))
    return model


def _kind_specific(name: str) -> bool:
    return ".attn.core." in name or ".lsh." in name


def _same_kind(model_dtype: torch.dtype, file_dtype: torch.dtype) -> bool:
    """Floating point of any precision loads into floating point (the file is half precision);
    anything else (integer, bool buffers) only as the same dtype."""
    if model_dtype.is_floating_point or file_dtype.is_floating_point:
        return model_dtype.is_floating_point and file_dtype.is_floating_point
    return model_dtype == file_dtype
