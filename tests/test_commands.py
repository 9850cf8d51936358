"""Every command that README.md, benchmarks/README.md and the book's chapters give works as
written on a fresh clone.

The shell commands are read from the two files' fenced ``bash`` blocks (and unlabelled ones),
with continuation lines joined and ``for`` loops expanded, and each is checked by what it runs:

- ``python -m ccoat.sweep``: run, at the smoke profile, in an empty folder; then run again, to
  see that the second is refused in one line and the first one's files are kept;
- ``python -m ccoat.train`` and ``torchrun ... -m ccoat.train`` (hours of training): parsed by
  ccoat.train's own parser, recipe included, and the folders they write are outside results/;
- ``python benchmarks/SCRIPT.py`` (minutes to hours): the script's parser lists every option
  given, and what the command writes (``--out``, ``> FILE``) is outside results/;
- the install and test lines, ``tar``, ``mkdir`` and ``bash SCRIPT``: what they name exists.

A command of a kind not listed here fails the test, so a new one gets checked. The README's
Python snippet is run statement by statement: everything but timm's pretrained weights works
offline, and those fail within seconds with a one-line ``PretrainedUnavailable``.
"""
import ast
import hashlib
import json
import re
import shlex
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = ("README.md", "benchmarks/README.md")
PYTHONS = {"python", "python3", ".venv/bin/python"}
SEPARATORS = {"&&", ";", "||", "|"}


def fenced_blocks(text: str, languages=("bash", "sh", "")) -> list[str]:
    """The contents of the Markdown code blocks whose info string is one of ``languages``."""
    blocks = re.findall(r"^```([\w-]*)\n(.*?)^```", text, flags=re.M | re.S)
    return [body for language, body in blocks if language in languages]


def _expand_loops(block: str) -> str:
    """``for v in a b; do BODY; done`` as BODY once per value, ``$v`` substituted."""
    def expand(match):
        name, values, body = match.groups()
        return "\n".join(body.replace(f"${{{name}}}", v).replace(f"${name}", v)
                         for v in values.split())
    return re.sub(r"^for (\w+) in ([^;\n]+); do\n(.*?)^done$", expand, block, flags=re.M | re.S)


def shell_commands(block: str) -> list[list[str]]:
    """The commands of a shell block, each as its words; comments dropped, ``&&`` split."""
    commands = []
    for line in _expand_loops(block.replace("\\\n", " ")).splitlines():
        lexer = shlex.shlex(line, posix=True, punctuation_chars=True)
        lexer.whitespace_split = True
        words = []
        for word in [*lexer, ";"]:
            if word in SEPARATORS:
                commands += [words] if words else []
                words = []
            else:
                words.append(word)
    return commands


def _text(doc: str) -> str:
    """A document's Markdown: a README as it is, a chapter's markdown cells (jupytext source)."""
    if not doc.startswith("notebooks/"):
        return (ROOT / doc).read_text()
    # the py:percent source's markdown cells, read without jupytext (the oldest-versions run
    # installs only the library): the comment lines of each "# %% [markdown]" cell
    lines, markdown = [], False
    for line in (ROOT / doc).read_text().splitlines():
        if line.startswith("# %%"):
            markdown = "[markdown]" in line
        elif markdown and line.startswith("#"):
            lines.append(line[2:] if line.startswith("# ") else line[1:])
    return "\n".join(lines)


CHAPTERS = tuple(f"notebooks/{p.name}" for p in sorted((ROOT / "notebooks").glob("*.py")))


def _all_commands() -> list:
    params = []
    for doc in DOCS + CHAPTERS:
        # a chapter's shell blocks are labelled (its unlabelled fences close directives)
        shells = ("bash", "sh") if doc in CHAPTERS else ("bash", "sh", "")
        blocks = fenced_blocks(_text(doc), shells)
        commands = [(block, words) for block in blocks for words in shell_commands(block)]
        for block, words in commands:
            params.append(pytest.param(doc, block, words, id=f"{doc}: {shlex.join(words)[:70]}"))
    return params


COMMANDS = _all_commands()


def _program(words: list[str]) -> tuple[str, list[str]]:
    """What a command runs (``ccoat.train``, ``benchmarks/x.py``, ``pip`` ...) and its
    arguments."""
    if words[0] == "torchrun":
        at = words.index("-m")
        return words[at + 1], words[at + 2:]
    if words[0] in PYTHONS and words[1] == "-m":
        return words[2], words[3:]
    if words[0] in PYTHONS or words[0] == "bash":
        return words[1], words[2:]
    return Path(words[0]).name, words[1:]


def _writes(args: list[str]) -> list[str]:
    """The paths a command names as its output: ``--out X`` and a shell redirection."""
    return [args[i + 1] for i, a in enumerate(args[:-1]) if a in ("--out", ">", ">>")]


def _outside_results(path: str) -> None:
    target = (ROOT / path).resolve()
    assert not target.is_relative_to(ROOT / "results"), \
        f"the command writes {path}, inside the committed results/"


def _check_train(args: list[str], words: list[str]) -> None:
    from ccoat.recipes import parse_args

    config, parsed = parse_args(args)  # an unknown option or recipe exits here
    for path in (config.out, config.resume if isinstance(config.resume, str) else None):
        if path:
            _outside_results(path)
    if words[0] == "torchrun":
        assert Path(sys.executable).with_name("torchrun").exists(), "torchrun is not installed"


def _check_script(script: str, args: list[str], block: str) -> None:
    path = ROOT / script
    assert path.is_file(), f"{script} does not exist"
    if path.suffix == ".sh":
        result = subprocess.run(["bash", "-n", str(path)], capture_output=True, text=True)
        assert result.returncode == 0, result.stderr
        return
    result = subprocess.run([sys.executable, str(path), "--help"], capture_output=True, text=True,
                            cwd=ROOT, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    options = [a.split("=")[0] for a in args if a.startswith("--")]
    unknown = [o for o in options if o not in result.stdout]
    assert not unknown, f"{script} has no option {unknown}:\n{result.stdout}"
    if "--out" in result.stdout and "--out" not in args and "results/" in path.read_text():
        pytest.fail(f"{script} writes into results/ unless --out is given, and the command "
                    f"gives none")
    for out in _writes(args):
        _outside_results(out)


def _extras() -> set[str]:
    """The extras pyproject.toml declares (tomllib is Python 3.11+; ccoat supports 3.10)."""
    text = (ROOT / "pyproject.toml").read_text()
    section = text.split("[project.optional-dependencies]", 1)[1].split("\n[", 1)[0]
    return set(re.findall(r"^([\w-]+)\s*=", section, flags=re.M))


def _check_setup(program: str, args: list[str], block: str) -> None:
    if program == "venv" or program == "mkdir":
        return  # the standard library's, and a folder
    if program == "pip":
        extras = _extras()
        for spec in (a for a in args if a.startswith(".[")):
            assert spec[2:-1] in extras, f"pyproject.toml has no extra {spec}"
    elif program == "jupyter-book":
        assert args[0] == "build" and (ROOT / args[1] / "_toc.yml").is_file(), args
    elif program == "pytest":
        assert all((ROOT / a).is_dir() for a in args if not a.startswith("-")), args
    elif program == "tar":  # the archive a script wrote as --out FOLDER --name STEM
        archive = Path(args[args.index("xzf") + 1])
        stem = archive.name.removesuffix(".tar.gz")
        assert f"--out {archive.parent} --name {stem}" in block, \
            f"nothing in the block writes {archive}"
    else:
        pytest.fail(f"no check for the command {program} {shlex.join(args)}")


@pytest.mark.parametrize("doc, block, words", [p for p in COMMANDS
                                               if "ccoat.sweep" not in p.values[2]])
def test_the_command_is_accepted_and_writes_outside_results(doc, block, words):
    program, args = _program(words)
    if program == "ccoat.train":
        _check_train(args, words)
    elif program.startswith("benchmarks/"):
        _check_script(program, args, block)
    else:
        _check_setup(program, args, block)


def _digest(folder: Path) -> str:
    digest = hashlib.sha256()
    for path in sorted(folder.rglob("*")):
        if path.is_file():
            digest.update(str(path).encode() + path.read_bytes())
    return digest.hexdigest()


@pytest.mark.parametrize("doc, block, words", [p for p in COMMANDS
                                               if "ccoat.sweep" in p.values[2]])
def test_the_sweep_command_runs_at_smoke_size_and_keeps_the_committed_sweep(
        doc, block, words, tmp_path):
    program, args = _program(words)
    assert program == "ccoat.sweep"
    if "--profile" in args:  # the documented profile, at the smoke profile's size
        args[args.index("--profile") + 1] = "smoke"
    env = {"PYTHONPATH": str(ROOT), "CCOAT_PROFILE": "smoke", "PATH": "/usr/bin:/bin"}
    committed = _digest(ROOT / "results")
    run = [sys.executable, "-m", "ccoat.sweep", *args, "--no-progress"]
    first = subprocess.run(run, capture_output=True, text=True, cwd=tmp_path, env=env,
                           timeout=600)
    assert first.returncode == 0, first.stderr[-2000:]
    assert _digest(ROOT / "results") == committed
    if "--help" in args:
        return
    written = sorted(p.name for p in (tmp_path / "runs" / "sweep").iterdir())
    assert written == ["cost_smoke.csv", "cost_smoke.json", "cost_smoke_components.csv"]
    before = _digest(tmp_path)
    again = subprocess.run(run, capture_output=True, text=True, cwd=tmp_path, env=env,
                           timeout=600)
    assert again.returncode != 0 and "Traceback" not in again.stderr, again.stderr[-2000:]
    assert again.stderr.strip().count("\n") == 0 and "--overwrite" in again.stderr, again.stderr
    assert _digest(tmp_path) == before


def _snippet() -> str:
    (snippet,) = fenced_blocks((ROOT / "README.md").read_text(), ("python",))
    return snippet


DRIVER = textwrap.dedent("""
    import ast, json, sys, time
    tree = ast.parse(sys.stdin.read())
    scope, report = {}, []
    for node in tree.body:
        start = time.perf_counter()
        try:
            exec(compile(ast.Module([node], []), "README", "exec"), scope)
        except Exception as error:
            report.append([node.lineno, time.perf_counter() - start, type(error).__name__,
                           str(error)])
            break
        report.append([node.lineno, time.perf_counter() - start, None, None])
    print(json.dumps(report))
""")


def test_the_readme_library_snippet_runs_offline_up_to_the_pretrained_weights():
    """Statement by statement: each runs, except timm's ImageNet weights where the Hub cannot be
    reached, which fail fast, as the last statement, saying they could not be fetched."""
    snippet = _snippet()
    result = subprocess.run([sys.executable, "-c", DRIVER], input=snippet, capture_output=True,
                            text=True, cwd=ROOT, timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout.splitlines()[-1])
    statements = ast.parse(snippet).body
    assert len(report) == len(statements), f"stopped at line {report[-1]}"
    *done, (line, seconds, error, message) = report
    assert all(e is None for *_, e, _ in done), report
    if error is not None:
        assert "pretrained=True" in snippet.splitlines()[line - 1], report[-1]
        assert error == "PretrainedUnavailable" and "could not be" in message, report[-1]
        assert "\n" not in message and seconds < 15, report[-1]
