"""Where a result came from: every results file in ``results/`` carries this record.

The book shows only numbers that are computed in a notebook or read from a results file, so a
results file must say how it was produced: the command, the code (git commit), the machine, the
run profile, the dataset and the date.
"""
from __future__ import annotations

import argparse
import datetime as _dt
import errno
import json
import os
import platform
import re
import shlex
import subprocess
import sys
import tempfile
from pathlib import Path

import torch

from .profile import get_profile


def git_commit(path: str | os.PathLike | None = None) -> str:
    """The checkout's commit, with ``-dirty`` when it has uncommitted changes; ``unknown``
    outside git."""
    cwd = Path(path or Path(__file__).resolve().parent)
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True,
                                text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=cwd,
                               capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return commit + ("-dirty" if dirty else "")


def device_name(device: str | torch.device | None = None) -> str:
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"{platform.processor() or platform.machine()} CPU, {os.cpu_count()} cores"


def provenance(*, dataset: str | None = None, device: str | torch.device | None = None,
               command: str | None = None, **extra) -> dict:
    """A JSON-ready record of how a result is being produced, now."""
    return {
        "command": command or " ".join(shlex.quote(a)
                                       for a in [Path(sys.executable).name, *sys.argv]),
        "git_commit": git_commit(),
        "device": device_name(device),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "profile": get_profile(),
        "dataset": dataset,
        "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        **extra,
    }


# The one schema: what :func:`provenance` writes, and what every results file carries, either
# under a "provenance" key (the benchmarks, the sweeps) or at its top level (a run's run.json).
PROVENANCE_KEYS = ("command", "git_commit", "device", "torch", "threads", "profile", "dataset",
                   "date")


def of(record: dict) -> dict:
    """The provenance of a results file's ``record``, in the one schema (:data:`PROVENANCE_KEYS`),
    wherever the file keeps it; ``KeyError`` naming what a record lacks."""
    source = record.get("provenance", record)
    missing = [key for key in PROVENANCE_KEYS if key not in source]
    if missing:
        raise KeyError(f"the record has no provenance {', '.join(missing)}; every results file "
                       f"carries {', '.join(PROVENANCE_KEYS)}")
    return {key: source[key] for key in PROVENANCE_KEYS}


def read_results(name: str, repo: str | None = None) -> dict:
    """The committed results file ``results/<name>`` (JSON), read: from the checkout, else
    fetched from ``repo`` (:func:`results_file`, required)."""
    return json.loads(results_file(name, repo, required=True).read_text())


def describe(record: dict, markdown: bool = False) -> str:
    """How a result was made, in one line: the command, the commit, the machine, torch, the
    threads, the profile and the date of a :func:`provenance` record (a key it lacks shows as
    ``?``). A training run's data root (``record["config"]["data_dir"]``) is written as
    ``$CCOAT_DATA`` (:func:`shorten_paths`); with ``markdown=True`` the command is code."""
    data_root = (record.get("config") or {}).get("data_dir")
    command = elide_machine_paths(shorten_paths(str(record.get("command", "?")), data_root))
    return (f"{f'`{command}`' if markdown else command} at commit "
            f"{str(record.get('git_commit', '?'))[:10]}, {record.get('device', '?')}, "
            f"torch {record.get('torch', '?')}, {record.get('threads', '?')} thread(s), "
            f"profile {record.get('profile', '?')}, {str(record.get('date', '?'))[:10]}")


def find_results(name: str | None = None, start: str | os.PathLike | None = None) -> Path | None:
    """The repository's ``results/`` folder, or the file ``name`` in it; None if there is none.

    Looked for in ``start`` (default: the working directory) and its parents, so a notebook
    finds it from ``notebooks/`` or from the root, then in the checkout that holds this package
    (an editable install run from elsewhere). A pip-installed ccoat (Colab) has no results.
    """
    here = Path(start or Path.cwd()).resolve()
    for root in (here, *here.parents, Path(__file__).resolve().parents[1]):
        path = root / "results" / (name or "")
        if path.exists():
            return path
    return None


def writable_folder(path: str | os.PathLike) -> Path:
    """``path`` made if missing and checked writable, so that a folder results cannot be
    written into is named before the work that produces them; an ``OSError`` says why."""
    folder = Path(path)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as error:
        raise OSError(error.errno, f"cannot make or write the folder {str(path)!r} "
                                   f"({error.strerror or error})") from error
    return folder


def output_folder(text: str) -> Path:
    """:func:`writable_folder` as an argparse ``type`` (``--out FOLDER`` of the benchmarks):
    a folder that cannot be used is an error naming the option, before any work."""
    try:
        return writable_folder(text)
    except OSError as error:
        raise argparse.ArgumentTypeError(error.strerror) from error


def write_atomic(path: str | os.PathLike, data: str | bytes) -> None:
    """Write ``data`` to ``path`` so that ``path`` holds either its old content or all of the new
    one, whenever the process is stopped: a temporary file beside it, flushed to disk, then
    renamed over it. On any failure the temporary file is removed and an ``OSError`` names the
    path and the cause (``No space left on device``, ``File too large``)."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        _write_file(tmp, data.encode() if isinstance(data, str) else data)
        os.replace(tmp, path)
    except BaseException as error:
        tmp.unlink(missing_ok=True)
        if isinstance(error, OSError):
            message = f"could not write {path}: {error.strerror or error}"
            raise (OSError(error.errno, message) if error.errno else OSError(message)) from error
        raise


def _write_file(path: Path, data: bytes | memoryview) -> None:
    with open(path, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def raw_url(repo: str, path: str, branch: str = "main") -> str:
    """The address of one committed file: ``https://github.com/o/r`` ->
    raw.githubusercontent.com."""
    prefix = "https://github.com/"
    if not repo.startswith(prefix):
        raise ValueError(f"repository must be a GitHub address ({prefix}owner/name), got {repo!r}")
    return f"https://raw.githubusercontent.com/{repo[len(prefix):].strip('/')}/{branch}/{path}"


def results_file(name: str, repo: str | None = None, *, branch: str = "main",
                 start: str | os.PathLike | None = None, required: bool = False) -> Path | None:
    """The committed results file ``results/<name>``: the checkout's, else fetched from ``repo``.

    A notebook run inside a clone reads the file where it is (:func:`find_results`), and a file
    the clone lacks is not looked for elsewhere; a file that git tracks but the working tree
    lacks (deleted by hand) raises ``FileNotFoundError`` naming it, ``required`` or not, so a
    chapter never shows "n/a" for a result that is committed. Without a checkout (a pip
    install on Colab) the file is downloaded once from the repository on GitHub into
    ``results/<name>`` under ``start`` (default: the working directory), where the next call
    finds it. Returns None when neither the checkout nor the repository has the file, or, with
    ``required=True``, raises ``FileNotFoundError`` saying where it looked.
    """
    path = _find_or_fetch(name, repo, branch, start)
    if path is None and required:
        where = (f"neither in this checkout nor in {repo}" if repo else
                 "not in this checkout (and no repository was given to fetch it from)")
        raise FileNotFoundError(f"results/{name} is {where}")
    return path


def _find_or_fetch(name: str, repo: str | None, branch: str,
                   start: str | os.PathLike | None) -> Path | None:
    local = find_results(name, start=start)
    if local is not None:
        return local
    checkout = find_results(start=start)
    if checkout is not None and _committed(checkout.parent, f"results/{name}"):
        raise FileNotFoundError(
            errno.ENOENT, f"results/{name} is committed but missing from the checkout at "
            f"{checkout.parent}; restore it with: git checkout -- results/{name}")
    if repo is None:
        return None
    if checkout is not None and (checkout.parent / "pyproject.toml").is_file():
        return None  # a clone holds every committed file: what it lacks is not committed
    import urllib.error
    import urllib.request

    url = raw_url(repo, f"results/{name}", branch)
    target = Path(start or Path.cwd()) / "results" / name
    try:
        with urllib.request.urlopen(url, timeout=60) as response:
            data = response.read()
    except urllib.error.HTTPError as error:
        if error.code == 404:
            return None
        raise
    target.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(target, data)
    return target


def _committed(root: Path, path: str) -> bool:
    """Whether git tracks ``path`` in the checkout ``root`` (False outside git): a chapter that
    finds a committed results file missing must stop, not print "n/a" in its place."""
    try:
        return subprocess.run(["git", "ls-files", "--error-unmatch", "--", path], cwd=root,
                              capture_output=True).returncode == 0
    except OSError:
        return False


# An absolute path of the machine that made a record (a temporary folder, a home), which a
# reader cannot open: written as "…/" and its last part.
MACHINE_PATH = re.compile(
    r"(?<![\w.:/~-])/(?:home|work|tmp|usr|root|opt|mnt|var|srv|Users|content|private)/\S*")


def elide_machine_paths(text: str) -> str:
    """``text`` with every absolute path of a machine written as ``…/`` and its last part.

    >>> elide_machine_paths("python -m ccoat.sweep --out /root/out/sweep --data-dir data")
    'python -m ccoat.sweep --out …/sweep --data-dir data'
    """
    return MACHINE_PATH.sub(lambda m: "…/" + (Path(m.group(0)).name or m.group(0)), text)


def shorten_paths(text: str, data_root: str | os.PathLike | None) -> str:
    """``text`` with the data root written as ``$CCOAT_DATA``: records name the paths of the
    machine that made them, which mean nothing to a reader."""
    if not data_root:
        return text
    for root in {str(Path(data_root).resolve()), str(data_root).rstrip("/")}:
        text = text.replace(root, "$CCOAT_DATA")
    return text
