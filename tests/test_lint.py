"""The linter's configuration (pyproject's [tool.ruff.lint]) holds for the library, the tests and
the benchmarks: a change that leaves an unused import or a shadowed name fails here."""
import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_ruff_check_is_clean():
    if importlib.util.find_spec("ruff") is None:
        pytest.skip("ruff is not installed (pip install ruff, or the [test] extra)")
    result = subprocess.run([sys.executable, "-m", "ruff", "check", "ccoat", "tests", "benchmarks",
                             "conftest.py"], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, "ruff check found problems:\n" + result.stdout + result.stderr
