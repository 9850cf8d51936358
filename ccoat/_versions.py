"""The oldest torch ccoat supports, checked once at ``import ccoat``.

The floor is the one ``pyproject.toml`` declares and CI tests (README, "Versions"): an older
torch fails in scattered places (no ``register_load_state_dict_pre_hook`` in torch 2.1, numpy 1
builds), so it gets one clear error instead.
"""
from __future__ import annotations

import re

MIN_TORCH = (2, 5)


def version_tuple(version: str) -> tuple[int, int]:
    """``"2.5.1+cu124"`` -> ``(2, 5)``; ``ValueError`` for a string with no major.minor."""
    match = re.match(r"\s*(\d+)\.(\d+)", str(version))
    if not match:
        raise ValueError(f"expected a version like '2.5.1', got {version!r}")
    return int(match.group(1)), int(match.group(2))


def check_torch(version: str) -> None:
    """``ImportError`` naming the torch found and the one needed when ``version`` is too old."""
    if version_tuple(version) < MIN_TORCH:
        need = ".".join(map(str, MIN_TORCH))
        raise ImportError(f"ccoat needs torch >= {need}, found torch {version}; "
                          f"upgrade it with: pip install 'torch>={need}' 'torchvision>=0.20'")
