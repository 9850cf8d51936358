"""Every notebook is a jupytext pair: the py:percent source and an output-free .ipynb, in sync."""
import json
from pathlib import Path

import jupytext
import pytest

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"
SOURCES = sorted(NOTEBOOKS.glob("*.py"))


def test_there_are_notebooks():
    assert SOURCES, f"no notebook sources in {NOTEBOOKS}"


@pytest.mark.parametrize("source", SOURCES, ids=lambda p: p.name)
def test_pair_is_in_sync_and_output_free(source):
    ipynb = source.with_suffix(".ipynb")
    assert ipynb.exists(), f"{source.name} has no paired {ipynb.name}: run jupytext --sync {source}"
    raw = json.loads(ipynb.read_text())
    with_outputs = [i for i, c in enumerate(raw["cells"]) if c["cell_type"] == "code" and c.get("outputs")]
    assert not with_outputs, f"{ipynb.name} carries outputs in cells {with_outputs}: strip them"
    from_py = [(c.cell_type, c.source) for c in jupytext.read(source).cells]
    from_ipynb = [(c.cell_type, c.source) for c in jupytext.read(ipynb).cells]
    assert from_py == from_ipynb, f"{source.name} and {ipynb.name} differ: run jupytext --sync {source}"


@pytest.mark.parametrize("source", SOURCES, ids=lambda p: p.name)
def test_notebook_asks_colab_for_a_gpu_and_installs_ccoat(source):
    nb = jupytext.read(source)
    assert nb.metadata.get("accelerator") == "GPU", f"{source.name}: metadata should ask Colab for a GPU"
    code = "\n".join(c.source for c in nb.cells if c.cell_type == "code")
    assert '"google.colab" in sys.modules' in code and "pip" in code, f"{source.name}: no Colab install cell"


def test_every_notebook_is_in_the_book():
    toc = (NOTEBOOKS.parent / "book" / "_toc.yml").read_text()
    missing = [s.stem for s in SOURCES if f"notebooks/{s.stem}" not in toc]
    assert not missing, f"notebooks missing from book/_toc.yml: {missing}"


@pytest.mark.parametrize("source", SOURCES, ids=lambda p: p.name)
def test_install_and_import_cells_are_collapsed_and_name_the_configured_repository(source):
    """The Colab install cell and the import cell are folded away in the book (hide-input),
    and the install cell's CCOAT_REPO, from which chapters fetch results/ on Colab, is the
    repository that _config.yml names."""
    import yaml

    config = yaml.safe_load((NOTEBOOKS.parent / "_config.yml").read_text())
    code = [c for c in jupytext.read(source).cells if c.cell_type == "code"]
    install, imports = code[0], code[1]
    assert '"google.colab" in sys.modules' in install.source, f"{source.name}: install cell first"
    for cell in (install, imports):
        assert "hide-input" in cell.metadata.get("tags", []), \
            f"{source.name}: cell {cell.source.splitlines()[0]!r} should be tagged hide-input"
    assert f'CCOAT_REPO = "{config["repository"]["url"]}"' in install.source, \
        f"{source.name}: CCOAT_REPO differs from repository.url in _config.yml"



def test_every_code_cell_holds_at_most_thirty_lines():
    """A code cell holds one idea a reader takes in at once: at most 30 lines (the brief)."""
    long_cells = [f"{s.name}: {c.source.strip().splitlines()[0][:50]!r} ({n} lines)"
                  for s in SOURCES for c in jupytext.read(s).cells if c.cell_type == "code"
                  for n in [len(c.source.strip().splitlines())] if n > 30]
    assert not long_cells, "split these cells:\n" + "\n".join(long_cells)


def test_notebook_code_is_formatted_and_fits_the_books_code_column():
    """`ruff format` leaves the sources as they are, and no line of code is longer than the
    book's code column (pyproject's [tool.ruff] line-length; the formatter cannot split a
    long string, so this is checked on its own)."""
    import importlib.util
    import re
    import subprocess
    import sys

    pyproject = (NOTEBOOKS.parent / "pyproject.toml").read_text()
    limit = int(re.search(r"\[tool\.ruff\][^\[]*?line-length = (\d+)", pyproject).group(1))
    too_long = [f"{s.name}: {line.strip()[:60]}... ({len(line)} characters)"
                for s in SOURCES for c in jupytext.read(s).cells if c.cell_type == "code"
                for line in c.source.splitlines() if len(line) > limit]
    assert not too_long, f"code lines longer than {limit} characters:\n" + "\n".join(too_long)
    if importlib.util.find_spec("ruff") is None:
        pytest.skip("ruff is not installed (pip install ruff, or the [test] extra)")
    result = subprocess.run([sys.executable, "-m", "ruff", "format", "--check", *map(str, SOURCES)],
                            cwd=NOTEBOOKS.parent, capture_output=True, text=True)
    assert result.returncode == 0, \
        "run `ruff format notebooks/*.py`, then `jupytext --sync`:\n" + result.stdout + result.stderr
