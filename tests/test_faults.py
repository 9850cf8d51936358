"""A run folder stays one consistent record whatever instant a run is killed or a write fails.

The invariants (``check_stopped`` after the fault, ``check_finished`` after recovering):

- ``last.pt``, when present, loads (never truncated), and ``metrics.jsonl`` lists epochs
  1..m once each, m the checkpoint's epochs or one fewer (the checkpoint is written first);
- ``run.json`` describes the checkpoint beside it (same options, as resume compares them);
- recovering (``--resume`` where the folder has a run, else a new run) ends with each epoch once,
  no temporary file, no lock, and exactly the weights of an uninterrupted run.

Kills are real ``SIGKILL``s, at chosen instants: a driver process forks one child per instant,
the child arms a trap (before a training step, halfway through writing a file, after a
complete temporary file, after a rename) and trains until the trap kills it.
"""
import errno
import json
import os
import resource
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from ccoat import provenance, runfolder
from ccoat import train as ctrain

ROOT = Path(__file__).resolve().parents[1]
EPOCHS = 2
WRITES = 2 + 2 * EPOCHS  # run.json and metrics.jsonl at start, then checkpoint + metrics per epoch


def tiny_model():
    from ccoat.model import CoaTLite, CoaTLiteConfig

    torch.manual_seed(0)
    config = CoaTLiteConfig((16, 16, 16, 16), (1, 1, 1, 1), (1, 1, 1, 1), patch_size=2)
    return CoaTLite(config, num_classes=10, img_size=32)


def config(out, **overrides) -> ctrain.TrainConfig:
    values = dict(data="digits", train_subset=32, val_subset=16, batch_size=8, epochs=EPOCHS,
                  steps_per_epoch=2, num_workers=0, device="cpu", progress=False, seed=0,
                  threads=1, out=str(out))
    return ctrain.TrainConfig(**(values | overrides))


def recover(out) -> ctrain.TrainRun:
    """What a user does after a crash: resume if the folder has begun a run, else start it."""
    folder = runfolder.RunFolder(out)
    started = folder.checkpoint.exists() or folder.run_json.exists()
    return ctrain.fit(config(out, resume=started), model=tiny_model())


def metrics_epochs(out) -> list[int]:
    path = Path(out) / "metrics.jsonl"
    return [json.loads(l)["epoch"] for l in path.read_text().splitlines()] if path.exists() else []


def check_stopped(out) -> dict:
    """The invariants that hold the instant a run stops; returns what the folder holds."""
    folder = runfolder.RunFolder(out)
    epochs = metrics_epochs(out)
    done = 0
    if folder.checkpoint.exists():
        ckpt = runfolder.load_checkpoint(folder.checkpoint)  # complete, never truncated
        done = ckpt["epoch"] + 1
        assert [h["epoch"] for h in ckpt["history"]] == list(range(1, done + 1))
        record = folder.read_run_json()
        assert record is not None and runfolder.config_differences(
            record["config"], ctrain.TrainConfig(**ckpt["config"])) == []
    assert epochs == list(range(1, len(epochs) + 1)) and len(epochs) in (done, max(done - 1, 0))
    return {"checkpoint_epochs": done, "metrics_epochs": epochs}


def check_finished(out, run, reference: dict | None) -> None:
    folder = runfolder.RunFolder(out)
    assert sorted(p.name for p in Path(out).iterdir()) == ["last.pt", "metrics.jsonl", "run.json"]
    assert metrics_epochs(out) == list(range(1, EPOCHS + 1))
    ckpt = runfolder.load_checkpoint(folder.checkpoint)
    assert [h["epoch"] for h in ckpt["history"]] == list(range(1, EPOCHS + 1))
    assert runfolder.config_differences(folder.read_run_json()["config"],
                                     ctrain.TrainConfig(**ckpt["config"])) == []
    for name, value in (reference or {}).items():
        assert torch.equal(run.model.state_dict()[name], value), name


# ---------------------------------------------------------------------------------------------
# Kills: run in a driver process (one thread, so that forking is safe)


def _arm(trap: dict) -> None:
    """In the child: SIGKILL this process at the trap's instant."""
    def die():
        os.kill(os.getpid(), signal.SIGKILL)

    count = {"n": 0}
    if trap["at"] == "step":
        step = ctrain.train_step

        def train_step(*args, **kwargs):
            count["n"] += 1
            if count["n"] == trap["n"]:
                die()
            return step(*args, **kwargs)

        ctrain.train_step = train_step
    elif trap["at"] in ("mid-write", "before-rename"):
        write = provenance._write_file

        def write_file(path, data):
            count["n"] += 1
            if count["n"] == trap["n"] and trap["at"] == "mid-write":
                with open(path, "wb") as f:
                    f.write(bytes(data[:len(data) // 2]))
                die()
            write(path, data)
            if count["n"] == trap["n"]:
                die()

        provenance._write_file = write_file
    elif trap["at"] == "after-rename":
        replace = os.replace

        def after_replace(src, dst):
            replace(src, dst)
            count["n"] += 1
            if count["n"] == trap["n"]:
                die()

        os.replace = after_replace


def _drive(root: str, traps: list[dict]) -> None:
    """Driver: an uninterrupted reference run, then for each trap a killed run and its
    recovery, asserting the invariants; prints one JSON line per trap."""
    torch.set_num_threads(1)
    root = Path(root)
    reference = ctrain.fit(config(root / "reference"), model=tiny_model()).model.state_dict()
    for i, trap in enumerate(traps):
        out = root / f"run{i}"
        pid = os.fork()
        if pid == 0:  # the child: train until the trap fires
            try:
                _arm(trap)
                ctrain.fit(config(out, num_workers=trap.get("workers", 0)), model=tiny_model())
            finally:
                os._exit(3)  # reached only if the trap never fired
        _, status = os.waitpid(pid, 0)
        killed = os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL
        stopped = check_stopped(out)
        leftovers = sorted(p.name for p in out.glob(".*"))
        # Worker processes draw their own augmentations: those runs train other weights.
        check_finished(out, recover(out), None if trap.get("workers") else reference)
        print(json.dumps(dict(trap, killed=killed, leftovers=leftovers, **stopped)), flush=True)


# Mid-epoch: in epoch 1, then in epoch 2, there with DataLoader worker processes, which outlive
# the killed run for a while and must not keep its lock.
TRAPS = ([{"at": "step", "n": 1}, {"at": "step", "n": 3}, {"at": "step", "n": 3, "workers": 2}]
         + [{"at": at, "n": n} for at in ("mid-write", "before-rename", "after-rename")
            for n in range(1, WRITES + 1)])


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork to kill runs at chosen instants")
def test_killed_at_any_instant_the_folder_stays_consistent_and_resume_finishes_it(tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": f"{ROOT}:{ROOT / 'tests'}"}
    code = f"import test_faults; test_faults._drive({str(tmp_path)!r}, {TRAPS!r})"
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True,
                            text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-4000:]
    lines = [json.loads(l) for l in result.stdout.splitlines() if l.startswith("{")]
    assert len(lines) == len(TRAPS)
    assert all(l["killed"] for l in lines), [l for l in lines if not l["killed"]]
    # The instants cover a run with no checkpoint yet, and checkpoints ahead of metrics.jsonl.
    assert {l["checkpoint_epochs"] for l in lines} == {0, 1, 2}
    assert any(l["checkpoint_epochs"] == len(l["metrics_epochs"]) + 1 for l in lines)
    # Kills mid-write left temporary files behind; recovery removed them (check_finished).
    assert any(any(".tmp" in name for name in l["leftovers"]) for l in lines)
    assert "taking over the lock" in result.stderr and "left by a write that never" in result.stderr


# ---------------------------------------------------------------------------------------------
# A full disk


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """The weights of an uninterrupted run."""
    out = tmp_path_factory.mktemp("reference")
    return ctrain.fit(config(out), model=tiny_model()).model.state_dict()


@pytest.mark.parametrize("n", range(1, WRITES + 1))
def test_a_full_disk_at_any_write_names_the_file_and_leaves_a_consistent_folder(
        tmp_path, monkeypatch, reference, n):
    out = tmp_path / "run"
    count = {"n": 0}
    write = provenance._write_file

    def full_disk(path, data):
        count["n"] += 1
        if count["n"] == n:  # part of the data reaches the disk, then it is full
            Path(path).write_bytes(bytes(data[:len(data) // 3]))
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        write(path, data)

    monkeypatch.setattr(provenance, "_write_file", full_disk)
    with pytest.raises(OSError) as caught:
        ctrain.fit(config(out), model=tiny_model())
    target = {1: "run.json", 2: "metrics.jsonl"}.get(n, "last.pt" if n % 2 else "metrics.jsonl")
    assert caught.value.errno == errno.ENOSPC
    assert f"could not write {out / target}: No space left on device" in str(caught.value)
    assert out.exists() == (n > 1)  # a run that wrote nothing leaves no folder
    assert out.exists() is False or [p.name for p in out.iterdir() if p.name.startswith(".")] == []
    check_stopped(out)  # no temporary file, no lock, and a consistent folder
    monkeypatch.setattr(provenance, "_write_file", write)
    check_finished(out, recover(out), reference)


def _limit_file_size():
    limit = 1 << 20  # 1 MiB: run.json and metrics fit, the checkpoint does not
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))


def test_cli_under_a_file_size_limit_fails_naming_the_checkpoint_then_resumes(tmp_path):
    env = {**os.environ, "CCOAT_PROFILE": "smoke", "OMP_NUM_THREADS": "1"}
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "ccoat.train", "--epochs", "1", "--steps-per-epoch", "1",
           "--batch-size", "8", "--train-subset", "8", "--val-subset", "8", "--num-workers", "0",
           "--threads", "1", "--out", str(out), "--no-progress"]
    failed = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True,
                            preexec_fn=_limit_file_size)
    assert failed.returncode != 0
    assert f"could not write {out / 'last.pt'}: File too large" in failed.stderr
    assert sorted(p.name for p in out.iterdir()) == ["metrics.jsonl", "run.json"]  # no .tmp, no lock
    assert metrics_epochs(out) == []
    ctrain.main(cmd[3:] + ["--resume"])  # no limit now: the run resumes from its run.json
    assert metrics_epochs(out) == [1]
    assert sorted(p.name for p in out.iterdir()) == ["last.pt", "metrics.jsonl", "run.json"]
