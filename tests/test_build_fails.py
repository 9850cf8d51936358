"""The main job fails loudly: a cell that raises makes ``jupyter-book build`` exit non-zero.

A tiny book (one notebook, one failing cell) is built with the ``execute:`` settings of the
project's own ``_config.yml``, so the test follows what the real build does.
"""
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
# this environment's jupyter-book
JUPYTER_BOOK = shutil.which("jupyter-book", path=str(Path(sys.executable).parent))
needs_jupyter_book = pytest.mark.skipif(
    JUPYTER_BOOK is None, reason="jupyter-book is not installed (the [book] or [test] extra)")


def _notebook(*sources: str) -> dict:
    cells = [{"cell_type": "code", "execution_count": None, "id": f"c{i}", "metadata": {},
              "outputs": [], "source": src} for i, src in enumerate(sources)]
    return {"cells": [{"cell_type": "markdown", "id": "title", "metadata": {},
                       "source": "# A chapter that fails"}, *cells],
            "metadata": {"kernelspec": {"name": "python3", "display_name": "Python 3",
                                        "language": "python"}},
            "nbformat": 4, "nbformat_minor": 5}


def _tiny_book(root: Path, *sources: str) -> Path:
    """A one-chapter book with the project's ``execute:`` settings and its local extensions."""
    config = yaml.safe_load((ROOT / "_config.yml").read_text())
    extensions = {name: str(ROOT / "book" / folder)
                  for name, folder in config["sphinx"]["local_extensions"].items()}
    book = root / "book"
    book.mkdir(exist_ok=True)
    (book / "_config.yml").write_text(yaml.safe_dump(
        {"title": "tiny", "only_build_toc_files": True, "execute": config["execute"],
         "sphinx": {"local_extensions": extensions}}))
    (book / "_toc.yml").write_text("format: jb-book\nroot: chapter\n")
    (book / "chapter.ipynb").write_text(json.dumps(_notebook(*sources)))
    return book


def _build(book: Path, *options: str, profile: str = "smoke") -> subprocess.CompletedProcess:
    env = dict(os.environ, CCOAT_PROFILE=profile,
               PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))
    return subprocess.run([JUPYTER_BOOK, "build", *options, str(book)], capture_output=True,
                          text=True, timeout=600, cwd=book.parent, env=env)


@needs_jupyter_book
def test_project_config_makes_a_raising_cell_fail_the_build(tmp_path):
    execute = yaml.safe_load((ROOT / "_config.yml").read_text())["execute"]
    assert execute["raise_on_error"] is True and execute["allow_errors"] is False

    result = _build(_tiny_book(tmp_path, "x = 1", "raise ValueError('the chapter broke here')"))
    assert result.returncode != 0, \
        f"the build exited 0 with a failing cell:\n{result.stderr[-2000:]}"
    assert "chapter" in result.stderr and "ValueError" in result.stderr, result.stderr[-2000:]
    assert "the chapter broke here" in result.stderr, result.stderr[-2000:]


@needs_jupyter_book
def test_the_same_tiny_book_builds_when_no_cell_raises(tmp_path):
    result = _build(_tiny_book(tmp_path, "x = 1", "print(x + 1)"))
    assert result.returncode == 0, result.stderr[-2000:]
    assert (tmp_path / "book" / "_build" / "html" / "chapter.html").is_file()


PRINT_PROFILE = "import os\nprint('profile:', os.environ['CCOAT_PROFILE'])"


@needs_jupyter_book
def test_a_build_at_another_profile_executes_again(tmp_path):
    """The cache is keyed by the profile: a cpu build after a smoke one shows cpu's output, and
    a smoke build after that finds smoke's cache again (no stale pages either way)."""
    book = _tiny_book(tmp_path, PRINT_PROFILE)
    page = book / "_build" / "html" / "chapter.html"
    for profile, options in (("smoke", ()), ("cpu", ("--all",)), ("smoke", ())):
        result = _build(book, *options, profile=profile)
        assert result.returncode == 0, result.stderr[-2000:]
        assert f"profile: {profile}" in page.read_text(), f"the {profile} build shows:\n" + \
            "\n".join(line for line in page.read_text().splitlines() if "profile:" in line)
    caches = sorted(p.name.split("-")[0] for p in (book / "_build" / ".jupyter_cache").iterdir())
    assert caches == ["cpu", "smoke"], caches


@needs_jupyter_book
def test_an_unknown_profile_stops_the_build_before_any_cell_runs(tmp_path):
    book = _tiny_book(tmp_path, "open('ran', 'w').close()")
    result = _build(book, profile="bogus")
    assert result.returncode != 0, "the build accepted CCOAT_PROFILE=bogus"
    output = result.stdout + result.stderr
    assert "CCOAT_PROFILE must be one of" in output and "'bogus'" in output, output[-2000:]
    assert "Traceback" not in output, output[-2000:]
    assert not (book / "ran").exists() and not (book / "_build" / "html" / "chapter.html").exists()


def _profile_cache():
    import importlib.util

    # a Sphinx extension: the oldest-versions run installs the library without the book
    pytest.importorskip("sphinx", reason="the book's Sphinx extension needs sphinx ([book] extra)")

    spec = importlib.util.spec_from_file_location(
        "profile_cache", ROOT / "book" / "_ext" / "profile_cache.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_cache_key_follows_the_results_and_the_profile_as_written(tmp_path, monkeypatch):
    """A results file edited in place re-executes the chapters (their code is unchanged); a
    lock file or bytecode does not; ``CPU`` and ``cpu`` are one profile and share one cache."""
    ext = _profile_cache()
    (tmp_path / "results" / "run").mkdir(parents=True)
    (tmp_path / "results" / "run" / "eval.json").write_text('{"top1": 70.0}')
    key = ext._fingerprint([tmp_path / "results"])
    (tmp_path / "results" / "run" / ".lock").write_text("1234")
    (tmp_path / "results" / "__pycache__").mkdir()
    (tmp_path / "results" / "__pycache__" / "x.pyc").write_bytes(b"\0")
    assert ext._fingerprint([tmp_path / "results"]) == key
    (tmp_path / "results" / "run" / "eval.json").write_text('{"top1": 71.0}')
    assert ext._fingerprint([tmp_path / "results"]) != key
    keys = set()
    for written in ("cpu", " CPU "):
        monkeypatch.setenv("CCOAT_PROFILE", written)
        keys.add(ext._key(tmp_path))
    assert len(keys) == 1 and keys.pop().startswith("cpu-")
