"""The main job fails loudly: a cell that raises makes ``jupyter-book build`` exit non-zero, and
a number the prose states that this build computes differently is a warning (an error in the
tests' warnings-as-errors build).

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


def _cell(i: int, source: str) -> dict:
    """A code cell, or a Markdown cell where ``source`` starts with ``"md:"``."""
    if source.startswith("md:"):
        return {"cell_type": "markdown", "id": f"m{i}", "metadata": {}, "source": source[3:]}
    return {"cell_type": "code", "execution_count": None, "id": f"c{i}", "metadata": {},
            "outputs": [], "source": source}


def _notebook(*sources: str) -> dict:
    cells = [_cell(i, src) for i, src in enumerate(sources)]
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


def _extension(name: str):
    """One of the book's Sphinx extensions (``book/_ext/<name>.py``), imported as a module."""
    import importlib.util

    # a Sphinx extension: the oldest-versions run installs the library without the book
    pytest.importorskip("sphinx", reason="the book's Sphinx extension needs sphinx ([book] extra)")

    spec = importlib.util.spec_from_file_location(name, ROOT / "book" / "_ext" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _profile_cache():
    return _extension("profile_cache")


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


def _glued_numbers():
    pytest.importorskip("myst_nb", reason="the book's Sphinx extension needs myst-nb ([book] extra)")
    return _extension("glued_numbers")


GLUE = "from myst_nb import glue\nglue('ratio', 1.2345)\nglue('name', 'CoaT-Lite')"


@needs_jupyter_book
def test_a_glued_number_reads_as_this_builds_value_and_a_stale_one_is_named(tmp_path):
    """``[1.23](#ratio:.2f)`` shows the glued value, not a link; a stale fixed number warns,
    naming both; a "live" one is replaced without a word; a link to a heading stays a link."""
    book = _tiny_book(tmp_path, GLUE,
                      "md:(ok) [1.23](#ratio:.2f) and [CoaT-Lite](#name)\n\n"
                      "(live) [7.77](#ratio:.1f \"live\")\n\n"
                      "(stale) [9.99](#ratio:.3f)\n\n"
                      "(anchor) [the answer](#answer)\n\n(answer)=\n## The answer")
    result = _build(book)
    assert result.returncode == 0, result.stderr[-2000:]
    page = (book / "_build" / "html" / "chapter.html").read_text()
    assert "(ok) <span class=\"pasted-text\">1.23</span> and " in page
    assert "<span class=\"pasted-text\">CoaT-Lite</span>" in page
    assert "(live) <span class=\"pasted-text\">1.2</span>" in page
    assert "(stale) <span class=\"pasted-text\">1.234</span>" in page
    assert 'href="#answer"' in page and "#ratio" not in page
    output = result.stdout + result.stderr
    assert "the text says '9.99' where 'ratio' is '1.234'" in output, output[-2000:]
    assert "7.77" not in output and "'1.23'" not in output, output[-2000:]
    strict = _build(book, "-W", "--all")
    assert strict.returncode != 0, "a stale number passed a warnings-as-errors build"


def test_link_texts_are_written_again_from_the_glued_values():
    ext = _glued_numbers()
    values = {"ratio": "1.2345", "pair": "'Δ = −2.1 points [−2.7, −1.5]'"}
    source = ("# runs **[0.5](#ratio:.2f)×** (Δ [[9](#ratio:+.1f \"live\"), [1](#other)]);\n"
              "# [old](#pair) and [a heading](#the-answer)")
    assert ext.rewrite(source, values) == (
        "# runs **[1.23](#ratio:.2f)×** (Δ [[+1.2](#ratio:+.1f \"live\"), [1](#other)]);\n"
        "# [Δ = −2.1 points [−2.7, −1.5]](#pair) and [a heading](#the-answer)")
    assert ext.split_target("share:.0%25") == ("share", ".0%")
    assert ext.format_value("0.4567", ".0%") == "46%" and ext.format_value("3925", ",") == "3,925"


def test_the_rewriter_asks_for_a_build_it_can_read(tmp_path, capsys):
    assert _glued_numbers().main([str(tmp_path / "nowhere")]) == 2
    assert "build the book first" in capsys.readouterr().err
