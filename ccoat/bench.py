"""``python -m ccoat.bench`` moved to ``python -m ccoat.sweep`` (:mod:`ccoat.sweep`).

This alias runs the sweep and says so; ``import ccoat.bench`` gives the sweep's functions.
"""
import sys
import warnings

from .sweep import *  # noqa: F401,F403
from .sweep import main

warnings.warn("ccoat.bench moved to ccoat.sweep", FutureWarning, stacklevel=2)

if __name__ == "__main__":
    print("python -m ccoat.bench moved to python -m ccoat.sweep; running that.", file=sys.stderr)
    sys.exit(main())
