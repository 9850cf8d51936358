"""ccoat: CoaT-Lite and Clustering CoaT, built from their concepts for the book.

Public interface (the README's "Using the library"; the book builds each piece):

- :func:`create_model`: CoaT-Lite / Clustering CoaT by name;
- :func:`load_timm_weights`: timm's CoaT-Lite weights into a ccoat model;
- :func:`convert_attention`: swap the attention kind of a ccoat or timm CoaT-Lite, keeping weights;
- :func:`record_clusters`: see which queries the clustered cores put together;
- :func:`cluster_tokens`: run a CoaT-Lite's blocks on token-cluster prototypes, keeping weights;
- :func:`get_profile`: the run profile (``CCOAT_PROFILE``: smoke, cpu or gpu).

Importing ccoat registers its model names with timm.
"""
import warnings

import torch as _torch

from ._versions import check_torch as _check_torch

_check_torch(_torch.__version__)  # one clear error for a torch older than the floor

# timm imports tqdm.auto (through huggingface_hub), which warns "IProgress not found" in a Jupyter
# kernel without ipywidgets. ccoat's progress bars are plain text bars, so the warning is noise
# on every page of the book; only that message is silenced.
warnings.filterwarnings("ignore", message="IProgress not found")

from . import cost  # ccoat.cost.macs(...) is part of the public interface (README)
from .clustering import record_clusters
from .convert import convert_attention
from .model import ATTENTION_KINDS, CONFIGS, CoaTLite, CoaTLiteConfig
from .profile import choose, get_profile
from .registry import MODEL_NAMES, create_model, register_with_timm
from .timm_weights import PretrainedUnavailable, load_timm_weights
from .token_clustering import cluster_tokens, record_token_clusters

__version__ = "0.1.0"

register_with_timm()

__all__ = [
    "ATTENTION_KINDS", "CONFIGS", "CoaTLite", "CoaTLiteConfig", "MODEL_NAMES", "PretrainedUnavailable",
    "choose", "cost",
    "cluster_tokens", "convert_attention", "create_model", "get_profile", "load_timm_weights",
    "record_clusters", "record_token_clusters",
]
