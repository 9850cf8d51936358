"""The book builds with warnings as errors (smoke profile, into a temporary folder)."""
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def built_book(tmp_path_factory):
    """Build the book once per test session; return the HTML folder."""
    out = tmp_path_factory.mktemp("book")
    exe = Path(sys.executable).with_name("jupyter-book")
    cmd = [str(exe) if exe.exists() else shutil.which("jupyter-book"), "build", str(ROOT / "book"),
           "--path-output", str(out), "-W", "-n", "--keep-going"]
    env = dict(os.environ, CCOAT_PROFILE=os.environ.get("CCOAT_PROFILE", "smoke"))
    result = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
    assert result.returncode == 0, f"book build failed:\n{result.stdout[-6000:]}\n{result.stderr[-6000:]}"
    return out / "_build" / "html"


def test_book_builds_with_warnings_as_errors(built_book):
    assert (built_book / "index.html").exists()
    assert (built_book / "notebooks" / "01_conv_attention.html").exists()
