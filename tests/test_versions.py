"""The declared range: the floor in pyproject.toml is the one ccoat checks, and an older torch
gets one clear error at ``import ccoat``."""
import re
import subprocess
import sys
from pathlib import Path

import pytest

from ccoat import _versions

ROOT = Path(__file__).resolve().parents[1]


def _dependencies() -> list[str]:
    """``[project] dependencies`` of pyproject.toml (read by hand: no tomllib on Python 3.10)."""
    text = (ROOT / "pyproject.toml").read_text()
    block = re.search(r"^dependencies = \[(.*?)^\]", text, re.S | re.M).group(1)
    return re.findall(r'"([^"]+)"', block)


def test_pyproject_declares_the_floor_that_ccoat_checks():
    deps = _dependencies()
    torch_dep = next(d for d in deps if d.startswith("torch>="))
    assert _versions.version_tuple(torch_dep.removeprefix("torch>=")) == _versions.MIN_TORCH


def test_the_oldest_pins_in_ci_are_the_declared_floors():
    pins = dict(line.split("==") for line in (ROOT / ".ci" / "oldest.txt").read_text().split()
                if "==" in line)
    deps = _dependencies()
    floors = {d.split(">=")[0]: d.split(">=")[1].split(",")[0] for d in deps if ">=" in d}
    for name, floor in floors.items():
        assert name in pins, f"{name} has no pin in .ci/oldest.txt"
        assert _versions.version_tuple(pins[name]) == _versions.version_tuple(floor), (name, pins[name], floor)


@pytest.mark.parametrize("version", ["2.5.0", "2.5.1+cu124", "2.15.0+cu132", "3.0.0a0"])
def test_supported_versions_pass(version):
    _versions.check_torch(version)


@pytest.mark.parametrize("version", ["2.1.2", "2.4.1+cpu", "1.13.1"])
def test_older_torch_is_one_error_naming_found_and_needed(version):
    with pytest.raises(ImportError, match=rf"needs torch >= 2\.5, found torch {version.replace('+', '.')}"):
        _versions.check_torch(version)


def test_import_ccoat_with_an_old_torch_fails_with_that_error():
    code = "import torch; torch.__version__ = '2.1.2'; import ccoat"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            cwd=ROOT, timeout=300)
    assert result.returncode != 0
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("ImportError: ccoat needs torch >= 2.5, found torch 2.1.2"), result.stderr[-1000:]


def test_bad_version_string_says_what_was_expected():
    with pytest.raises(ValueError, match="expected a version like"):
        _versions.version_tuple("nightly")
