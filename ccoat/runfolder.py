"""A run folder (``--out``) is one consistent record of one run, whenever the run is stopped.

It holds ``run.json`` (how the run was launched), ``last.pt`` (the checkpoint of the last
completed epoch, with the run's history) and ``metrics.jsonl`` (one line per epoch). The rules
that keep them consistent:

- **one run per folder:** a run holds an exclusive lock on ``.lock`` (``fcntl.flock``, released
  by the kernel when the process dies, so a killed run never leaves a lock that blocks); the
  file names the holder (pid, host, command) for the error a second run gets;
- **the checkpoint first:** after each epoch ``last.pt`` is written (temporary file, flushed,
  renamed), then ``metrics.jsonl`` is rewritten, also atomically, from the checkpoint's history.
  A run stopped at any instant leaves a checkpoint that loads and a ``metrics.jsonl`` that is
  its history or one epoch short of it; resuming rewrites it from the checkpoint;
- **nothing is deleted to make room:** a new run in a folder that holds one needs an explicit
  choice (resume it, or ``overwrite``: the old run's files are moved into ``replaced-<date>/``);
- temporary files left by a killed run are removed by the next run that takes the lock.

What a run continues from is read here too (:func:`resume_point`: a checkpoint, or the
``run.json`` of a run stopped before its first one), with the options a resumed run keeps from
it (:func:`with_saved_options`) and the differences it refuses (:func:`config_differences`):
which options may change is each :class:`~ccoat.recipes.TrainConfig` field's ``on_resume``.

A finished run committed under ``results/`` (with ``eval.json``, its final checkpoint scored by
``python -m ccoat.train --eval-only``) is read back by :func:`read_run`.
"""
from __future__ import annotations

import contextlib
import dataclasses
import datetime as _dt
import errno
import io
import json
import os
import pickle
import random
import socket
import sys
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from .provenance import results_file, write_atomic
from .recipes import (
    FIXED,
    MAY_CHANGE,
    OF_THIS_PROCESS,
    TrainConfig,
    model_options,
    options_on_resume,
)

if TYPE_CHECKING:  # pandas is imported by read_run only: training does not need it
    import pandas as pd

RUN_FILES = ("last.pt", "metrics.jsonl", "run.json", "eval.json")  # moved aside in this order
CHECKPOINT_KEYS = ("model", "optimizer", "scheduler", "scaler", "rng", "epoch", "updates",
                   "history", "config", "data")


class RunFolderBusy(RuntimeError):
    """Another live process holds the run folder's lock."""


_HELD: set[int] = set()  # lock file descriptors held by this process


def _drop_inherited_locks() -> None:
    # A forked child (a DataLoader worker) must not keep its parent's lock alive: closing the
    # inherited descriptor leaves the parent's lock in place, and lets the kernel release it
    # the instant the parent dies.
    for fd in list(_HELD):
        try:
            os.close(fd)
        except OSError:
            pass
    _HELD.clear()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_drop_inherited_locks)


class RunFolder:
    """The folder of one run: its lock, its files and the order in which they are written."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self._fd: int | None = None

    # -- the lock ------------------------------------------------------------------------------
    @property
    def lock_path(self) -> Path:
        return self.path / ".lock"

    def lock(self, command: str | None = None) -> None:
        """Take the folder's lock, or raise :class:`RunFolderBusy` naming its holder. A lock
        file left by a process that no longer runs is taken over, and a line on stderr says
        so."""
        import fcntl

        self.path.mkdir(parents=True, exist_ok=True)
        while True:
            fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = self._holder(fd)
                os.close(fd)
                raise RunFolderBusy(
                    f"{self.path} is in use by another run ({_describe(holder)}); wait for it to "
                    f"end, or choose another --out") from None
            # The holder before us may have removed the file after we opened it: lock again.
            try:
                same = os.fstat(fd).st_ino == os.stat(self.lock_path).st_ino
            except FileNotFoundError:
                same = False
            if same:
                break
            os.close(fd)
        previous = self._holder(fd)
        if previous.get("pid") and (previous.get("pid"), previous.get("host")) != \
                (os.getpid(), socket.gethostname()):
            print(f"{self.path}: taking over the lock left by {_describe(previous)} (a run "
                  f"that no longer runs)", file=sys.stderr, flush=True)
        me = {"pid": os.getpid(), "host": socket.gethostname(), "command": command,
              "since": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")}
        os.ftruncate(fd, 0)
        os.pwrite(fd, (json.dumps(me) + "\n").encode(), 0)
        self._fd = fd
        _HELD.add(fd)

    @staticmethod
    def _holder(fd: int) -> dict:
        try:
            return json.loads(os.pread(fd, 4096, 0).decode() or "{}")
        except (ValueError, OSError):
            return {}

    def release(self) -> None:
        import fcntl

        if self._fd is None:
            return
        self.lock_path.unlink(missing_ok=True)  # first: a run that opened it re-opens
        fcntl.flock(self._fd, fcntl.LOCK_UN)
        os.close(self._fd)
        _HELD.discard(self._fd)
        self._fd = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.release()

    # -- what the folder holds -----------------------------------------------------------------
    @property
    def checkpoint(self) -> Path:
        return self.path / "last.pt"

    @property
    def metrics(self) -> Path:
        return self.path / "metrics.jsonl"

    @property
    def run_json(self) -> Path:
        return self.path / "run.json"

    def holds_run(self) -> bool:
        """True when the folder has a checkpoint or measured epochs (a run worth keeping)."""
        return self.checkpoint.exists() or (self.metrics.exists() and self.metrics.stat().st_size > 0)

    def read_run_json(self) -> dict | None:
        return read_json(self.run_json) if self.run_json.exists() else None

    def measured_epochs(self) -> list[int]:
        """The epochs ``metrics.jsonl`` holds (none when it is absent)."""
        return [h["epoch"] for h in read_jsonl(self.metrics, "epoch")] if self.metrics.exists() \
            else []

    def remove_temporaries(self) -> list[Path]:
        """Delete the temporary files of writes that never finished (call with the lock held)."""
        stale = [p for p in self.path.glob(".*.tmp*") if p.is_file()]
        for p in stale:
            p.unlink(missing_ok=True)
        return stale

    def move_aside(self) -> Path:
        """Move the run's files into ``replaced-<UTC date>/`` (checkpoint first: a move cut
        short leaves no checkpoint described by a record it does not match)."""
        stamp = _dt.datetime.now(_dt.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
        aside = self.path / f"replaced-{stamp}"
        n = 1
        while aside.exists():
            n += 1
            aside = self.path / f"replaced-{stamp}-{n}"
        aside.mkdir()
        for name in (*RUN_FILES, *(p.name for p in sorted(self.path.glob("run_resumed_epoch*.json")))):
            if (self.path / name).exists():
                os.replace(self.path / name, aside / name)
        return aside

    def make_room(self, continued_from: Path | None, continued: bool, overwrite: bool) -> None:
        """Before a run writes here: refuse to continue another folder's checkpoint
        (``continued_from``) over a run of this one's own without ``overwrite``; move aside a
        run that this one does not continue."""
        foreign = continued_from is not None and \
            Path(continued_from).resolve() != self.checkpoint.resolve()
        if foreign and self.holds_run() and not overwrite:
            raise ValueError(f"{self.path} holds a run of its own; resuming {continued_from} "
                             f"into it needs --overwrite (moves it aside)")
        if (not continued or foreign) and self.holds_run():
            aside = self.move_aside()
            print(f"--overwrite: moved the run that was in {self.path} to {aside}",
                  file=sys.stderr, flush=True)

    # -- writes, in the order that keeps the folder consistent ---------------------------------
    def write_run_json(self, run: dict) -> None:
        write_atomic(self.run_json, json.dumps(run, indent=2, default=str) + "\n")

    def begin(self, run_json: dict, history: list[dict], resumed: bool) -> None:
        """``run.json`` (a resumed run's keeps its first launch, nested) and the epochs of the
        checkpoint the run continues from, each once."""
        previous = self.read_run_json() if resumed and self.run_json.exists() else None
        if previous is not None:
            run_json["first_launch"] = previous.get("first_launch", previous)
        self.write_run_json(run_json)
        self.write_metrics(history)

    def write_epoch(self, checkpoint: dict) -> None:
        """The checkpoint, then ``metrics.jsonl`` from its history."""
        save_checkpoint(checkpoint, self.checkpoint)
        self.write_metrics(checkpoint["history"])

    def write_metrics(self, history: list[dict]) -> None:
        write_atomic(self.metrics, "".join(json.dumps(h) + "\n" for h in history))


def read_json(path: str | os.PathLike):
    """A JSON file's content; ``ValueError`` naming the file if it is not JSON (a write cut
    short, an edit gone wrong), instead of a bare decoder error."""
    try:
        return json.loads(Path(path).read_text())
    except ValueError as error:  # JSONDecodeError, UnicodeDecodeError
        raise ValueError(f"{path} is not valid JSON ({error})") from error


def read_jsonl(path: str | os.PathLike, *required: str) -> list[dict]:
    """The objects of a JSON-lines file (``metrics.jsonl``), each holding the keys
    ``required``; ``ValueError`` naming the file and the line otherwise."""
    records = []
    for number, line in enumerate(Path(path).read_text(errors="replace").splitlines(), 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except ValueError as error:
            raise ValueError(f"{path}, line {number}, is not valid JSON ({error})") from error
        if not isinstance(record, dict) or any(k not in record for k in required):
            raise ValueError(f"{path}, line {number}: expected a JSON object with "
                             f"{', '.join(required) or 'keys'}, got {line[:80]!r}")
        records.append(record)
    return records


def _describe(holder: dict) -> str:
    if not holder.get("pid"):
        return "a process that has not written its pid yet"
    text = f"pid {holder['pid']} on {holder.get('host', '?')}"
    if holder.get("since"):
        text += f", since {holder['since']}"
    if holder.get("command"):
        text += f": {holder['command']}"
    return text


def save_checkpoint(obj, path: str | os.PathLike) -> None:
    """``torch.save`` to memory, then :func:`~ccoat.provenance.write_atomic`: ``path`` keeps the
    previous checkpoint until the new one is complete on disk, a failed write leaves no
    temporary file and raises ``OSError`` naming ``path`` and the cause."""
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    write_atomic(path, buffer.getbuffer())


def rng_state() -> dict:
    """Every RNG state a checkpoint keeps: torch's (and CUDA's), numpy's and python's."""
    state = {"torch": torch.get_rng_state(), "numpy": np.random.get_state(),
             "python": random.getstate()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    """Restore :func:`rng_state`. The generators take CPU byte tensors only, whatever device a
    checkpoint was loaded onto, so every state is brought to the CPU first."""
    torch.set_rng_state(state["torch"].cpu())
    np.random.set_state(state["numpy"])
    random.setstate(state["python"])
    if "cuda" in state and torch.cuda.is_available():
        # As many GPUs as both machines have.
        torch.cuda.set_rng_state_all([s.cpu() for s in state["cuda"]][:torch.cuda.device_count()])


def load_checkpoint(path: str | os.PathLike) -> dict:
    """A checkpoint written by :func:`ccoat.train.fit`, on the CPU (RNG states must be CPU
    tensors; the model and optimizer move their state to their device when loading it).

    A file that is empty, truncated, not a checkpoint, or lacks a checkpoint's entries raises
    ``ValueError`` naming it."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(errno.ENOENT, f"no checkpoint at {path}")
    if path.stat().st_size == 0:
        raise ValueError(f"checkpoint {path} is empty (0 bytes): not a checkpoint")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=False)
    except (EOFError, pickle.UnpicklingError, zipfile.BadZipFile, RuntimeError, ValueError,
            TypeError, AttributeError, ImportError, IndexError, KeyError, UnicodeDecodeError) as error:
        raise ValueError(f"checkpoint {path} cannot be read ({type(error).__name__}: "
                         f"{str(error).splitlines()[0] if str(error) else 'no detail'})") from error
    if not isinstance(ckpt, dict):
        raise ValueError(f"checkpoint {path} holds a {type(ckpt).__name__}, not a ccoat checkpoint")
    missing = [k for k in CHECKPOINT_KEYS if k not in ckpt]
    if missing:
        raise ValueError(f"checkpoint {path} lacks {', '.join(missing)}: not written by "
                         f"ccoat.train.fit")
    return ckpt


def weights_checkpoint(path: str | os.PathLike) -> dict:
    """A run folder's committed weights (``model.safetensors``, beside its ``run.json`` and
    ``metrics.jsonl``) read as a checkpoint that can be scored but not resumed: its config,
    data and last epoch from the run's records, its weights in float32, no optimizer state.
    A missing or corrupt record, or a file that is not a weights file (or fails its checksum),
    raises ``ValueError`` naming it."""
    from .weights import read_tensors

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(errno.ENOENT, f"no weights file at {path}")
    run_json, metrics = path.with_name("run.json"), path.with_name("metrics.jsonl")
    if not run_json.is_file() or not metrics.is_file():
        raise ValueError(f"weights {path} have no run.json and metrics.jsonl beside them: not a "
                         f"run folder's weights")
    try:
        tensors, _ = read_tensors(path)
    except (OSError, ValueError) as error:
        raise ValueError(f"weights {path} cannot be read ({type(error).__name__}: "
                         f"{error})") from error
    state = {k: v.float() if v.is_floating_point() else v for k, v in tensors.items()}
    run = read_json(run_json)
    if not isinstance(run, dict) or "config" not in run or "data" not in run:
        raise ValueError(f"{run_json} lacks the run's config and data: not written by "
                         f"ccoat.train.fit")
    history = read_jsonl(metrics, "epoch")
    if not history:
        raise ValueError(f"{metrics} holds no epoch: the run behind {path} measured nothing")
    return {"config": run["config"], "data": run["data"],
            "epoch": max(h["epoch"] for h in history) - 1, "history": history,
            "model": state, "ema": None, "weights_only": True}


# ---------------------------------------------------------------------------------------------
# Holding a folder, and what a run in it continues from


@contextlib.contextmanager
def held(folder: RunFolder | None, command: str | None):
    """``folder`` locked for the ``with`` block (:meth:`RunFolder.lock`), a folder that cannot
    be made or written named as ``--out`` (a read-only disk, a path under ``/proc``); one made
    here and left empty (a run refused before its first write) is removed after. ``None`` (not
    rank 0, or no ``out``): nothing to hold."""
    if folder is None:
        yield None
        return
    created = not folder.path.exists()
    try:
        try:
            folder.lock(command=command)
        except RunFolderBusy:
            raise
        except OSError as error:
            raise OSError(error.errno, f"out (--out) {folder.path}: cannot make or write the "
                          f"run folder ({error.strerror or error})") from error
        yield folder
    finally:
        folder.release()
        if created:
            try:
                folder.path.rmdir()  # only if empty
            except OSError:
                pass


def what_is_kept(config: TrainConfig, eval_only: bool) -> str:
    """What the run folder keeps of a command stopped now (Ctrl-C)."""
    if eval_only:
        return "nothing was written (eval.json is written once the scoring ends)"
    if not config.out:
        return "nothing was written (no --out)"
    return (f"{config.out} keeps the last completed epoch (checkpoint first, then metrics.jsonl); "
            f"add --resume to the same command to continue")


def checkpoint_path(config: TrainConfig) -> Path | None:
    """The checkpoint a run continues from: the one ``resume`` names, else ``OUT/last.pt``
    with ``resume=True``; None for a new run."""
    if isinstance(config.resume, str) and config.resume:
        return Path(config.resume)
    if config.resume and config.out:
        return Path(config.out) / "last.pt"
    return None


# The options a checkpoint and the run that continues it may differ in (TrainConfig's
# ``on_resume``): how long and how fast it runs, and where; not what it computes. ``epochs`` may
# grow: the schedule is rebuilt for it.
MAY_CHANGE_ON_RESUME = options_on_resume(MAY_CHANGE, OF_THIS_PROCESS)


def config_differences(saved: dict, config: TrainConfig,
                       ignore: tuple[str, ...] = MAY_CHANGE_ON_RESUME) -> list[str]:
    """``"name: checkpoint X, now Y"`` for each option of ``config`` that differs from the
    ``saved`` one (a checkpoint's or ``run.json``'s ``config``), except those in ``ignore``."""
    now = dataclasses.asdict(config)
    plain = lambda v: list(v) if isinstance(v, tuple) else v  # noqa: E731 (JSON has no tuples)
    differences = [f"{name}: checkpoint {saved.get(name)!r}, now {value!r}"
                   for name, value in now.items()
                   if name not in ignore and name in saved and plain(saved[name]) != plain(value)]
    if "time_budget_s" in ignore and (saved.get("time_budget_s") is None) != (config.time_budget_s is None):
        differences.append(f"time_budget_s: checkpoint {saved.get('time_budget_s')!r}, now "
                           f"{config.time_budget_s!r} (a budget may grow, not come or go)")
    return differences


def refuse_differences(source, differences: list[str], action: str) -> None:
    """``ValueError`` listing each difference (``"name: checkpoint X, now Y"``) between what
    ``source`` was made with and what the caller asks, if there is any; ``action`` is what is
    refused (``"resume"``, ``"evaluate"``)."""
    if differences:
        raise ValueError(f"{source} was made with other settings; refusing to {action} it "
                         f"with these (give the checkpoint's values, or another --out):\n  "
                         + "\n  ".join(differences))


def data_and_kind_differences(ckpt: dict, info, kinds) -> list[str]:
    """What a checkpoint was made on that a run continuing it must share: the data (``info``,
    a :class:`~ccoat.data.DataInfo`) and the attention ``kinds``, as ``"name: checkpoint X,
    now Y"``."""
    differences = [f"{k}: checkpoint {ckpt['data'].get(k)!r}, now {getattr(info, k)!r}"
                   for k in ("name", "num_classes", "img_size")
                   if ckpt["data"].get(k) != getattr(info, k)]
    if ckpt.get("attention_kinds") is not None and kinds is not None and \
            list(ckpt["attention_kinds"]) != list(kinds):
        differences.append(f"attention kinds: checkpoint {ckpt['attention_kinds']}, "
                           f"now {list(kinds)}")
    return differences


def resume_point(config: TrainConfig, main_process: bool) -> tuple[dict | None, dict | None]:
    """What a run continues from: ``(checkpoint, None)``, ``(None, run.json)`` for a run stopped
    before its first checkpoint, or ``(None, None)`` for a new run. Refuses a new run in a folder
    that holds one (without ``overwrite``) and a resume with nothing to resume from."""
    folder = RunFolder(config.out) if config.out else None  # read only: every process reads
    ckpt_path = checkpoint_path(config)
    if ckpt_path is not None:
        if ckpt_path.exists():
            ckpt = load_checkpoint(ckpt_path)
            refuse_differences(ckpt_path, config_differences(ckpt["config"], config), "resume")
            done = ckpt["epoch"] + 1
            if config.epochs < done:
                raise ValueError(f"epochs (--epochs) is {config.epochs}, but {ckpt_path} has "
                                 f"already completed {done} epochs")
            return ckpt, None
        if isinstance(config.resume, str):
            raise FileNotFoundError(f"resume (--resume {config.resume}): no such checkpoint")
        run_json = folder.read_run_json() if folder is not None else None
        if run_json is None:
            raise ValueError(f"resume (--resume): nothing to resume from in {config.out} (no "
                             f"last.pt, no run.json); start the run without --resume")
        _refuse_lost_checkpoint(folder)
        refuse_differences(folder.run_json, config_differences(run_json.get("config", {}), config),
                           "resume")
        return None, run_json
    if main_process and folder is not None and folder.holds_run() and not config.overwrite:
        raise ValueError(f"{folder.path} holds a run (last.pt or metrics.jsonl); pass --resume to "
                         f"continue it, --overwrite to move it aside into "
                         f"{folder.path}/replaced-<date>/, or choose another --out")
    return None, None


def _refuse_lost_checkpoint(folder: RunFolder) -> None:
    """A folder with ``run.json`` and no ``last.pt`` resumes from scratch only if it measured
    no epoch (a run stopped before its first checkpoint). One with measured epochs lost its
    checkpoint (a committed run keeps none): starting again would replace its record."""
    epochs = folder.measured_epochs()
    if epochs:
        raise ValueError(f"resume (--resume): {folder.path} holds a run with measured epochs "
                         f"{_span(epochs)} (metrics.jsonl) but no {folder.checkpoint.name} to "
                         f"continue from; refusing to start it again over them (restore "
                         f"{folder.checkpoint.name}, or choose another --out)")


def _span(epochs: list[int]) -> str:
    return f"{epochs[0]}..{epochs[-1]}" if epochs == list(range(epochs[0], epochs[-1] + 1)) \
        else str(epochs)


def with_saved_options(config: TrainConfig, explicit: set[str]) -> TrainConfig:
    """``--resume``: the options not given on the command line (``explicit``) and not of this
    process (TrainConfig's ``on_resume``), from the checkpoint (or, for a run stopped before its
    first checkpoint, from its ``run.json``)."""
    path = checkpoint_path(config)
    if path is not None and path.exists():
        saved = load_checkpoint(path)["config"]
    elif config.resume is True and (Path(config.out) / "run.json").exists():
        saved = (RunFolder(config.out).read_run_json() or {}).get("config", {})
    else:
        return config
    taken = options_on_resume(FIXED, MAY_CHANGE)
    return dataclasses.replace(config, **{k: v for k, v in saved.items()
                                          if k in taken and k not in explicit})


# ---------------------------------------------------------------------------------------------
# A committed run, read back


WEIGHTS_FILE = "model.safetensors"  # a run's final weights in half precision, committed


def export_weights(checkpoint: str | os.PathLike, path: str | os.PathLike | None = None, *,
                   use_ema: bool = False) -> Path:
    """Write the weights of a checkpoint made by :func:`ccoat.train.fit` in half precision
    (``safetensors``, default ``model.safetensors`` beside the checkpoint): the file a run
    commits instead of its ``last.pt``, which also holds the optimizer's state (6x larger).
    ``use_ema``: the EMA weights instead of the trained ones."""
    from .registry import create_model
    from .weights import save_weights

    ckpt = load_checkpoint(checkpoint)
    if use_ema and ckpt.get("ema") is None:
        raise ValueError(f"checkpoint {checkpoint} holds no EMA weights")
    config, data = ckpt["config"], ckpt["data"]
    model = create_model(config["model"], num_classes=data["num_classes"],
                         img_size=data["img_size"], **model_options(config))
    model.load_state_dict(ckpt["ema"] if use_ema else ckpt["model"])
    path = Path(path) if path is not None else Path(checkpoint).with_name(WEIGHTS_FILE)
    return save_weights(model, path, metadata={
        "model": config["model"], "attention": config.get("attention"),
        "img_size": data["img_size"], "dataset": data["name"], "epochs": ckpt["epoch"] + 1,
        "weights": "ema" if use_ema else "model"})


@dataclass
class CommittedRun:
    """A run folder committed under ``results/``: how the run was launched, its epochs and, if
    its final checkpoint was scored, that score; :meth:`load_model` builds its trained model."""

    path: Path  # the folder
    run: dict  # run.json: command, git commit, machine, profile, dataset, config, ...
    metrics: pd.DataFrame  # metrics.jsonl: one row per epoch
    eval: dict | None  # eval.json (python -m ccoat.train --eval-only), or None
    name: str = ""  # results/<name>
    repo: str | None = None  # where a file missing from the checkout is fetched from
    start: str | os.PathLike | None = None

    def load_model(self, attention=None, **options) -> torch.nn.Module:
        """The run's model with its committed weights (``model.safetensors``), built with the
        run's attention kind or with ``attention`` (any kind: all share their weights) and
        clustering ``options``; in evaluation mode, on the CPU."""
        from .registry import create_model
        from .weights import load_weights

        file = results_file(f"{self.name}/{WEIGHTS_FILE}", self.repo, start=self.start)
        if file is None:
            raise FileNotFoundError(errno.ENOENT, f"run {self.name} has no committed weights "
                                    f"(results/{self.name}/{WEIGHTS_FILE})")
        config, data = self.run["config"], self.run["data"]
        kw = {**model_options(config), **({"attention": attention} if attention else {})}
        model = create_model(config["model"], num_classes=data["num_classes"],
                             img_size=data["img_size"], **kw, **options)
        return load_weights(model, file).eval()

    def hits(self) -> torch.Tensor:
        """Per test image, whether the scored model got it right (bool, in the loader's order):
        what :func:`ccoat.stats.paired_difference` compares. From ``eval.json``'s
        ``predictions`` and ``labels``."""
        evaluated = self.eval or {}
        if "predictions" not in evaluated or "labels" not in evaluated:
            raise ValueError(f"results/{self.name}/eval.json holds no per-image predictions: "
                             f"score the run again with python -m ccoat.train --eval-only")
        return torch.tensor(evaluated["predictions"]) == torch.tensor(evaluated["labels"])


def read_run(name: str, repo: str | None = None, *,
             start: str | os.PathLike | None = None,
             required: bool = False) -> CommittedRun | None:
    """The committed run ``results/<name>/``: the checkout's, else fetched from ``repo`` (a
    GitHub address; on Colab, :func:`~ccoat.provenance.results_file`). None when neither has
    its ``metrics.jsonl`` and ``run.json``; with ``required`` (a chapter that draws on the
    run's score), a missing ``metrics.jsonl``, ``run.json`` or ``eval.json`` raises
    ``FileNotFoundError`` naming it instead."""
    import pandas as pd

    metrics = results_file(f"{name}/metrics.jsonl", repo, start=start, required=required)
    run_json = (results_file(f"{name}/run.json", repo, start=start, required=required)
                if metrics else None)
    if run_json is None:
        return None
    evaluated = results_file(f"{name}/eval.json", repo, start=start, required=required)
    read_jsonl(metrics, "epoch")  # a corrupt line is named here; pandas would not name the file
    return CommittedRun(path=run_json.parent, run=read_json(run_json),
                        metrics=pd.read_json(metrics, lines=True),
                        eval=read_json(evaluated) if evaluated else None,
                        name=name, repo=repo, start=start)


def first_run(names, repo: str | None = None, *, scored: bool = True,
              start: str | os.PathLike | None = None) -> CommittedRun | None:
    """The first of the committed runs ``names`` (with ``scored``, the first with an
    ``eval.json``), as :func:`read_run` reads it; None if there is none. A chapter lists the
    better run first (a GPU recipe's) and falls back to the next."""
    for name in names:
        run = read_run(name, repo, start=start)
        if run is not None and (run.eval is not None or not scored):
            return run
    return None

