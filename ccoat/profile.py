"""The run profile: how much work a notebook, test or run may do on this machine.

One environment variable, ``CCOAT_PROFILE``, chooses among three sizes of work:

- ``smoke``: seconds; what tests and CI run, just enough to show every cell works.
- ``cpu``: minutes; small real runs on a laptop or a 2-core machine.
- ``gpu``: the full recipes, on Colab or a workstation with a GPU.

When the variable is unset the profile follows the hardware: ``gpu`` when CUDA is
available, ``cpu`` otherwise. Everything in ccoat reads the profile through
:func:`get_profile`, and sizes its work with :func:`choose`.
"""
from __future__ import annotations

import os

PROFILES = ("smoke", "cpu", "gpu")
ENV_VAR = "CCOAT_PROFILE"


def get_profile() -> str:
    """Return the active profile: ``CCOAT_PROFILE`` if set, else one chosen from the hardware."""
    value = os.environ.get(ENV_VAR, "").strip().lower()
    if value:
        if value not in PROFILES:
            raise ValueError(f"{ENV_VAR} must be one of {PROFILES}, got {value!r}")
        return value
    import torch

    return "gpu" if torch.cuda.is_available() else "cpu"


def choose(*, smoke, cpu, gpu, profile: str | None = None):
    """Pick the value for the active profile: ``choose(smoke=1, cpu=10, gpu=100)``."""
    profile = profile or get_profile()
    if profile not in PROFILES:
        raise ValueError(f"profile must be one of {PROFILES}, got {profile!r}")
    return {"smoke": smoke, "cpu": cpu, "gpu": gpu}[profile]
