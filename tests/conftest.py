"""Shared fixtures: the book, built once per test session at the smoke profile."""
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]


def toc_files() -> list[str]:
    """Every page of the book, in reading order, as paths relative to book/ without suffix."""
    toc = yaml.safe_load((ROOT / "book" / "_toc.yml").read_text())
    files = [toc["root"]]

    def walk(entries):
        for entry in entries or []:
            if "file" in entry:
                files.append(entry["file"])
            walk(entry.get("sections"))
            walk(entry.get("chapters"))

    for part in toc.get("parts", []):
        walk(part.get("chapters"))
    walk(toc.get("chapters"))
    return files


@pytest.fixture(scope="session")
def built_book(tmp_path_factory) -> Path:
    """Build the book with warnings as errors into a temporary folder; return its HTML folder.

    With ``CCOAT_BOOK_HTML`` set to a built book's HTML folder, test that one instead (to look
    at a book built once, for example at the ``cpu`` profile)."""
    if os.environ.get("CCOAT_BOOK_HTML"):
        return Path(os.environ["CCOAT_BOOK_HTML"])
    out = tmp_path_factory.mktemp("book")
    exe = Path(sys.executable).with_name("jupyter-book")
    cmd = [str(exe) if exe.exists() else shutil.which("jupyter-book"), "build", str(ROOT / "book"),
           "--path-output", str(out), "-W", "-n", "--keep-going"]
    env = dict(os.environ, CCOAT_PROFILE=os.environ.get("CCOAT_PROFILE", "smoke"))
    result = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
    assert result.returncode == 0, f"book build failed:\n{result.stdout[-8000:]}\n{result.stderr[-4000:]}"
    return out / "_build" / "html"
