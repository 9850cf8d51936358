"""One command-line vocabulary (benchmarks/README.md) for ``python -m ccoat.sweep`` and every
script in ``benchmarks/``: each script imports without running anything, has ``main(argv)``,
answers ``--help``, and spells each idea one way, with no retired spelling (no aliases, no
abbreviations); ``--out`` is always a folder."""
import argparse
import importlib.util
import re
import sys
from pathlib import Path

import pytest

from ccoat import sweep
from ccoat.data import parse_img_size
from ccoat.provenance import output_folder

ROOT = Path(__file__).resolve().parents[1]
SCRIPTS = sorted((ROOT / "benchmarks").glob("*.py"))
# retired spellings: image size (five spellings once), rounds (now --repeats), the profiler
RETIRED = ("--resolutions", "--sides", "--size", "--model-side", "--rounds")
RETIRED_IN_BENCHMARKS = ("--profile",)  # the run profile is the sweep's; torch's: --torch-profiler


class Parsed(Exception):
    """Raised in place of parsing: the parser a main built, caught before it ran anything."""


def load(path: Path, monkeypatch):
    """Import a script as a module, with a command line that no parser would accept."""
    monkeypatch.setattr(sys, "argv", [str(path), "--no-such-option", "1"])
    spec = importlib.util.spec_from_file_location(f"benchmark_{path.stem}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def parser_of(main, monkeypatch) -> argparse.ArgumentParser:
    """The parser ``main`` builds: its ``parse_args`` raises :class:`Parsed` holding it."""
    def grab(self, args=None, namespace=None):
        raise Parsed(self)

    monkeypatch.setattr(argparse.ArgumentParser, "parse_args", grab)
    with pytest.raises(Parsed) as caught:
        main([])
    return caught.value.args[0]


def options(parser: argparse.ArgumentParser) -> dict[str, argparse.Action]:
    return {flag: action for action in parser._actions for flag in action.option_strings}


def test_there_are_scripts():
    assert len(SCRIPTS) >= 10


@pytest.mark.parametrize("path", SCRIPTS, ids=lambda p: p.name)
def test_a_script_imports_without_running_or_parsing_and_has_main_argv(path, monkeypatch,
                                                                       tmp_path, capsys):
    monkeypatch.chdir(tmp_path)  # anything it wrote would land here
    monkeypatch.setattr(argparse.ArgumentParser, "parse_args",
                        lambda *a, **k: pytest.fail(f"{path.name} parses arguments at import"))
    module = load(path, monkeypatch)
    assert not list(tmp_path.iterdir()), f"{path.name} wrote files at import"
    assert capsys.readouterr().out == "", f"{path.name} printed at import"
    assert callable(module.main)
    assert list(__import__("inspect").signature(module.main).parameters) == ["argv"]
    assert re.search(r'^if __name__ == "__main__":\n    raise SystemExit\(main\(\)\)\n\Z',
                     path.read_text(), flags=re.M), f"{path.name} does not end by running main"


MAINS = [pytest.param(p, id=p.name) for p in SCRIPTS] + [pytest.param("sweep", id="ccoat.sweep")]


def main_of(which, monkeypatch):
    return sweep.main if which == "sweep" else load(which, monkeypatch).main


@pytest.mark.parametrize("which", MAINS)
def test_help_works(which, monkeypatch, capsys):
    main = main_of(which, monkeypatch)
    with pytest.raises(SystemExit) as exited:
        main(["--help"])
    assert exited.value.code == 0
    assert capsys.readouterr().out.startswith("usage:")


@pytest.mark.parametrize("which", MAINS)
def test_one_spelling_per_idea(which, monkeypatch):
    parser = parser_of(main_of(which, monkeypatch), monkeypatch)
    flags = options(parser)
    retired = RETIRED + (RETIRED_IN_BENCHMARKS if which != "sweep" else ())
    assert not [f for f in flags if f in retired], f"retired spelling among {sorted(flags)}"
    assert parser.allow_abbrev is False  # a prefix of a flag is no second spelling of it
    for flag, action in flags.items():
        if "img-size" in flag:  # one parser of image sides, one error message
            assert action.type is parse_img_size, flag
        if flag.startswith("--no-") and flag != "--no-progress":
            continue
        assert flag in ("-h", "--help") or re.fullmatch(r"--[a-z0-9]+(-[a-z0-9]+)*", flag), flag
    if "--out" in flags:  # always a folder, the file(s) in it named by --name
        assert "folder" in flags["--out"].help, flags["--out"].help
        assert "--name" in flags, "an --out folder needs a --name for the file in it"
        if which != "sweep":  # checked before any work (the sweep checks in check_out)
            assert flags["--out"].type is output_folder, "--out should be an output_folder"
    if "--progress" in flags or "--no-progress" in flags:
        assert isinstance(flags["--progress"], argparse.BooleanOptionalAction)


def test_a_wrong_value_is_refused_naming_the_flag(monkeypatch, capsys):
    main = load(ROOT / "benchmarks" / "bench_model.py", monkeypatch).main
    with pytest.raises(SystemExit) as exited:
        main(["--img-size", "big"])
    assert exited.value.code == 2
    assert "argument --img-size: image side must be a positive integer (pixels), got 'big'" in \
        capsys.readouterr().err
    with pytest.raises(SystemExit):
        sweep.main(["--img-size", "224"])  # the sweep's flag is --img-sizes, unabbreviated
    assert "unrecognized arguments: --img-size 224" in capsys.readouterr().err


@pytest.mark.parametrize("which", MAINS)
def test_an_out_folder_that_cannot_be_made_is_refused_before_any_work(which, monkeypatch,
                                                                       tmp_path, capsys):
    main = main_of(which, monkeypatch)
    if "--out" not in options(parser_of(main, monkeypatch)):
        pytest.skip("no --out")
    monkeypatch.undo()  # the real parse_args again
    main = main_of(which, monkeypatch)
    (tmp_path / "file").write_text("mine")
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as exited:
        main(["--out", "file/sub", "--no-progress"] if which == "sweep" else ["--out", "file/sub"])
    said = f"{exited.value.code} {capsys.readouterr().err}"
    assert re.search(r"--out:? .*cannot make or write the folder 'file/sub' \(Not a directory\)",
                     said), said
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file"]


def test_no_document_or_shell_script_shows_a_retired_spelling():
    """In a line that names a script or the sweep (a results file's recorded ``command`` is
    history and is not read here)."""
    programs = [f"{p.stem}.py" for p in SCRIPTS]
    texts = [*SCRIPTS, *(ROOT / "benchmarks").glob("*.sh"), ROOT / "ccoat" / "sweep.py",
             ROOT / "README.md", ROOT / "benchmarks" / "README.md", ROOT / "results" / "README.md",
             *(ROOT / "notebooks").glob("*.py")]
    for path in texts:
        in_a_script = path.parent.name == "benchmarks" and path.suffix in (".py", ".sh")
        for line in path.read_text().splitlines():
            sweep_line = "ccoat.sweep" in line or path.name == "sweep.py"
            if not (in_a_script or sweep_line or any(p in line for p in programs)):
                continue
            for flag in RETIRED + (() if sweep_line else RETIRED_IN_BENCHMARKS):
                assert not re.search(rf"(?<![\w-]){re.escape(flag)}(?![\w-])", line), \
                    f"{path.relative_to(ROOT)} shows {flag}: {line.strip()}"
