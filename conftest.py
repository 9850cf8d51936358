"""Tests and notebook runs (nbmake) use the smoke profile unless told otherwise.

Kernels started by nbmake inherit this environment, so the notebooks see it too.
"""
import os

os.environ.setdefault("CCOAT_PROFILE", "smoke")
