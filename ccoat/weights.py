"""Trained weights as small files: half-precision ``safetensors`` that any attention kind loads.

Every attention kind of ccoat has the same parameters (the kinds differ only in the core that
turns ``q, k, v`` into an output), so one file of a trained CoaT-Lite or Clustering CoaT loads
into a model of the same size with any kind. The file records the model name, size and number
of classes; :func:`load_weights` checks them, and every tensor's name and shape, before it
copies anything, so a wrong file never half-fills a model.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import torch
import torch.nn as nn

from .provenance import write_atomic


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
    header = {k: json.dumps(v) for k, v in {**(metadata or {}), "num_classes": num_classes}.items()}
    path = Path(path)
    write_atomic(path, save(state, metadata=header))  # all of the file or none of it
    return path


def read_metadata(path: str | os.PathLike) -> dict:
    """The metadata :func:`save_weights` stored in ``path``."""
    from safetensors import safe_open

    with _opened(path, safe_open) as f:
        return {k: json.loads(v) for k, v in (f.metadata() or {}).items()}


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
    unexpected or of another shape (another model size or number of classes), or when the file
    is corrupt; the model is left untouched then.
    """
    from safetensors import safe_open

    expected = model.state_dict()
    with _opened(path, safe_open) as f:
        try:
            found = {name: f.get_tensor(name) for name in f.keys()}
        except Exception as error:
            raise ValueError(f"{path}: could not read its tensors: {error}") from error
        metadata = {k: json.loads(v) for k, v in (f.metadata() or {}).items()}
    # An attention core's own buffers (the hash projections of a clustered kind), and those of
    # token clustering's LSH, belong to the kind: a file of another kind has none or others, and
    # the model keeps its own.
    missing = sorted(k for k in set(expected) - set(found) if not _kind_specific(k))
    unexpected = sorted(k for k in set(found) - set(expected) if not _kind_specific(k))
    mismatched = [f"{name}: model {tuple(expected[name].shape)}, file {tuple(found[name].shape)}"
                  for name in sorted(set(expected) & set(found))
                  if expected[name].shape != found[name].shape]
    if missing or unexpected or mismatched:
        what = metadata.get("model", "an unnamed model")
        lines = [f"{path} holds weights of {what} ({metadata.get('num_classes')} classes) that do "
                 f"not fit this {type(model).__name__} ({getattr(model, 'num_classes', '?')} "
                 "classes):"]
        if mismatched:
            lines.append(f"{len(mismatched)} of another shape, e.g. " + "; ".join(mismatched[:3]))
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
