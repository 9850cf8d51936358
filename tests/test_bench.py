"""ccoat.bench: results are written atomically, a partial sweep never replaces a complete one,
and bad settings are refused before any work."""
import errno
import json
import os

import pytest

from ccoat import bench, provenance

SETTINGS = {"models": ["coat_lite_tiny"], "kinds": ["factorized", "softmax"],
            "resolutions": [32, 64], "batch_sizes": [1], "repeats": 1, "warmup": 0,
            "max_seconds": 1e-4, "train": False, "device": "cpu", "name": "t"}  # 64 px: skipped


def _snapshot(folder):
    return {p.name: p.read_bytes() for p in folder.iterdir()}


def test_a_sweep_cut_short_keeps_the_complete_results_and_its_partial_rows(tmp_path, monkeypatch):
    complete = bench.run(SETTINGS, tmp_path, command="complete", progress=False)
    assert complete["complete"] and sorted(p.name for p in tmp_path.iterdir()) == \
        ["t.csv", "t.json", "t_components.csv"]  # no partial files left
    before = _snapshot(tmp_path)
    measure = bench._measure_config
    calls = []

    def interrupted(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt  # the sweep is stopped in its second configuration
        return measure(*args, **kwargs)

    monkeypatch.setattr(bench, "_measure_config", interrupted)
    with pytest.raises(KeyboardInterrupt):
        bench.run(SETTINGS, tmp_path, command="cut", progress=False)
    after = _snapshot(tmp_path)
    assert {k: after[k] for k in before} == before  # the complete sweep is untouched
    partial = json.loads(after["t.partial.json"])
    assert partial["complete"] is False and {r["img_size"] for r in partial["rows"]} == {32}
    assert set(after) == set(before) | {"t.partial.json", "t.partial.csv",
                                        "t.partial_components.csv"}


def test_a_failed_write_keeps_the_old_file_and_names_the_path(tmp_path, monkeypatch):
    bench.write({"provenance": {}, "rows": [{"a": 1}], "components": []}, tmp_path, "r")
    before = _snapshot(tmp_path)

    def full_disk(path, data):
        path.write_bytes(bytes(data[:3]))
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(provenance, "_write_file", full_disk)
    with pytest.raises(OSError, match=rf"could not write {tmp_path / 'r.csv'}: No space left"):
        bench.write({"provenance": {}, "rows": [{"a": 2}], "components": []}, tmp_path, "r")
    assert _snapshot(tmp_path) == before  # old files intact, no temporary file


@pytest.mark.parametrize("args, message", [
    (["--repeats", "0"], r"--repeats must be an integer >= 1, got 0"),
    (["--warmup", "-1"], r"--warmup must be an integer >= 0"),
    (["--max-seconds", "0"], r"--max-seconds must be a number > 0"),
    (["--resolutions", "0"], r"--resolutions: resolutions must be >= 1"),
    (["--models", "coat_huge"], r"--models must be model names among"),
    (["--name", "a/b"], r"--name must be a file stem"),
])
def test_bad_settings_are_refused_before_any_work(tmp_path, monkeypatch, args, message):
    monkeypatch.setattr(bench, "build_models", lambda *a: pytest.fail("work started"))
    with pytest.raises(SystemExit, match=message):
        bench.main(args + ["--out", str(tmp_path / "out"), "--no-progress"])
    assert not (tmp_path / "out").exists()
