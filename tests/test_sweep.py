"""ccoat.sweep: results are written atomically, a partial sweep never replaces a complete one,
and bad settings are refused before any work."""
import errno
import json
import os

import pytest

from ccoat import provenance, sweep

SETTINGS = {"models": ["coat_lite_tiny"], "kinds": ["factorized", "softmax"],
            "img_sizes": [32, 64], "batch_sizes": [1], "repeats": 1, "warmup": 0,
            "max_seconds": 1e-4, "train": False, "device": "cpu", "name": "t"}  # 64 px: skipped


def _snapshot(folder):
    return {p.name: p.read_bytes() for p in folder.iterdir()}


def test_a_sweep_cut_short_keeps_the_complete_results_and_its_partial_rows(tmp_path, monkeypatch):
    complete = sweep.run(SETTINGS, tmp_path, command="complete", progress=False)
    assert complete["complete"] and sorted(p.name for p in tmp_path.iterdir()) == \
        ["t.csv", "t.json", "t_components.csv"]  # no partial files left
    before = _snapshot(tmp_path)
    measure = sweep._measure_config
    calls = []

    def interrupted(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt  # the sweep is stopped in its second configuration
        return measure(*args, **kwargs)

    monkeypatch.setattr(sweep, "_measure_config", interrupted)
    with pytest.raises(KeyboardInterrupt):
        sweep.run(SETTINGS, tmp_path, command="cut", progress=False, overwrite=True)
    after = _snapshot(tmp_path)
    assert {k: after[k] for k in before} == before  # the complete sweep is untouched
    partial = json.loads(after["t.partial.json"])
    assert partial["complete"] is False and {r["img_size"] for r in partial["rows"]} == {32}
    assert set(after) == set(before) | {"t.partial.json", "t.partial.csv",
                                        "t.partial_components.csv"}


def test_the_default_output_is_outside_the_committed_results(monkeypatch):
    """A user's ``python -m ccoat.sweep`` replaced results/cost_cpu.json, which chapters read."""
    out = sweep._parse([]).out
    assert os.path.normpath(out).split(os.sep)[0] != "results", out
    assert sweep.run.__defaults__[0] == sweep.DEFAULT_OUT


def test_an_earlier_sweep_is_replaced_only_with_overwrite(tmp_path, monkeypatch, capsys):
    sweep.write({"provenance": {}, "rows": [{"a": 1}], "components": []}, tmp_path, "t")
    before = _snapshot(tmp_path)
    args = ["--profile", "smoke", "--name", "t", "--out", str(tmp_path), "--no-progress"]
    monkeypatch.setattr(sweep, "build_models", lambda *a: pytest.fail("work started"))
    with pytest.raises(SystemExit, match=r"^error: .*t\.json.* already exist\(s\); a sweep "
                       r"replaces them only with --overwrite"):
        sweep.main(args)
    assert _snapshot(tmp_path) == before
    with pytest.raises(FileExistsError, match="--overwrite"):
        sweep.run(SETTINGS, tmp_path, progress=False)
    monkeypatch.undo()
    record = sweep.run(SETTINGS, tmp_path, command="again", progress=False, overwrite=True)
    assert json.loads((tmp_path / "t.json").read_text())["provenance"]["command"] == "again"
    assert record["complete"] and _snapshot(tmp_path) != before


def test_a_failed_write_keeps_the_old_file_and_names_the_path(tmp_path, monkeypatch):
    sweep.write({"provenance": {}, "rows": [{"a": 1}], "components": []}, tmp_path, "r")
    before = _snapshot(tmp_path)

    def full_disk(path, data):
        path.write_bytes(bytes(data[:3]))
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(provenance, "_write_file", full_disk)
    with pytest.raises(OSError, match=rf"could not write {tmp_path / 'r.csv'}: No space left"):
        sweep.write({"provenance": {}, "rows": [{"a": 2}], "components": []}, tmp_path, "r")
    assert _snapshot(tmp_path) == before  # old files intact, no temporary file


def test_a_bad_image_side_is_refused_naming_the_option(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(sweep, "build_models", lambda *a: pytest.fail("work started"))
    with pytest.raises(SystemExit):  # by the parser: argparse's one line, exit status 2
        sweep.main(["--img-sizes", "224", "0", "--out", str(tmp_path / "out"), "--no-progress"])
    assert "argument --img-sizes: image side must be a positive integer (pixels), got '0'" in \
        capsys.readouterr().err
    with pytest.raises(ValueError, match=r"--img-sizes: img sizes must be >= 1"):  # as a setting
        sweep.validate_settings(sweep.default_settings("smoke") | {"img_sizes": [0]})
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("args, message", [
    (["--repeats", "0"], r"--repeats must be an integer >= 1, got 0"),
    (["--warmup", "-1"], r"--warmup must be an integer >= 0"),
    (["--max-seconds", "0"], r"--max-seconds must be a number > 0"),
    (["--models", "coat_huge"], r"--models must be model names among"),
    (["--name", "a/b"], r"--name must be a file stem"),
    (["--img-sizes", "224", "224"], r"--img-sizes: each value once, got \[224, 224\] "
                                      r"\(224 repeated\)"),
    (["--kinds", "softmax", "softmax"], r"--kinds: each value once"),
])
def test_bad_settings_are_refused_before_any_work(tmp_path, monkeypatch, args, message):
    monkeypatch.setattr(sweep, "build_models", lambda *a: pytest.fail("work started"))
    with pytest.raises(SystemExit, match=message):
        sweep.main(args + ["--out", str(tmp_path / "out"), "--no-progress"])
    assert not (tmp_path / "out").exists()


def test_the_gpu_sweep_is_not_run_on_a_cpu_under_its_name(tmp_path, monkeypatch):
    """``--profile gpu`` without CUDA ran the gpu sweep on the CPU and labelled it gpu; a GPU
    index the machine lacks failed with a CUDA error after the models were built."""
    monkeypatch.setenv("CCOAT_PROFILE", "smoke")  # main sets it from --profile: restored after
    monkeypatch.setattr(sweep, "build_models", lambda *a: pytest.fail("work started"))
    monkeypatch.setattr(sweep.torch.cuda, "is_available", lambda: False)
    with pytest.raises(SystemExit, match=r"--device must be cpu here \(CUDA is not available\), "
                       r"got 'cuda'"):
        sweep.main(["--profile", "gpu", "--out", str(tmp_path), "--no-progress"])
    monkeypatch.setattr(sweep.torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(sweep.torch.cuda, "device_count", lambda: 1)
    with pytest.raises(SystemExit, match=r"--device must be cpu or cuda:0 to cuda:0, got 'cuda:3'"):
        sweep.main(["--device", "cuda:3", "--out", str(tmp_path), "--no-progress"])
    assert not any(tmp_path.iterdir())


def test_an_unknown_profile_in_the_environment_is_one_line(tmp_path, monkeypatch):
    monkeypatch.setenv("CCOAT_PROFILE", "bogus")
    with pytest.raises(SystemExit, match=r"^error: CCOAT_PROFILE must be one of .*got 'bogus'$"):
        sweep.main(["--out", str(tmp_path), "--no-progress"])


def test_an_out_that_is_a_file_is_refused_before_any_work(tmp_path, monkeypatch):
    monkeypatch.setattr(sweep, "build_models", lambda *a: pytest.fail("work started"))
    (tmp_path / "out").write_text("mine")
    with pytest.raises(SystemExit, match=r"^error: --out .*out is a file"):
        sweep.main(["--out", str(tmp_path / "out"), "--no-progress"])
    assert (tmp_path / "out").read_text() == "mine"


def test_an_out_that_cannot_be_made_is_named_before_any_work(tmp_path, monkeypatch):
    monkeypatch.setattr(sweep, "build_models", lambda *a: pytest.fail("work started"))
    (tmp_path / "file").write_text("mine")
    out = tmp_path / "file" / "sweeps"  # a folder under a file cannot be made
    with pytest.raises(SystemExit, match=r"^error: --out: cannot make or write the folder "
                                         r"'.*sweeps' \(Not a directory\)$"):
        sweep.main(["--out", str(out), "--no-progress"])
    assert (tmp_path / "file").read_text() == "mine"


def test_sweep_writes_results_with_provenance_and_skips_with_a_reason(tmp_path):
    settings = {"models": ["coat_lite_tiny"], "kinds": ["factorized", "softmax"],
                "img_sizes": [32, 64], "batch_sizes": [1], "repeats": 1, "warmup": 0,
                "max_seconds": 1e-4, "train": False, "device": "cpu", "name": "t"}
    record = sweep.run(settings, tmp_path, command="test", progress=False)
    stored = json.loads((tmp_path / "t.json").read_text())
    for key in ("command", "git_commit", "torch", "device", "threads", "date", "profile"):
        assert key in stored["provenance"]
    rows = {(r["kind"], r["img_size"]): r for r in record["rows"]}
    assert rows[("softmax", 32)]["fwd_s"] > 0  # the first size of a kind is always measured
    assert rows[("factorized", 32)]["fwd_vs_factorized"] == 1.0
    assert rows[("softmax", 32)]["fwd_vs_factorized"] > 0
    assert rows[("softmax", 64)]["fwd_s"] is None  # estimated far above 1e-4 s: skipped
    assert "exceeds" in rows[("softmax", 64)]["fwd_skipped"]
    assert rows[("softmax", 64)]["macs"] > rows[("factorized", 64)]["macs"]  # still counted
    csv_lines = (tmp_path / "t.csv").read_text().splitlines()
    assert csv_lines[0].startswith("# {") and len(csv_lines) == 2 + 4
    rows_df, components, prov = sweep.load(tmp_path / "t.json")
    assert len(rows_df) == 4 and set(components.kind) == {"factorized", "softmax"}


def test_sweep_refuses_a_size_the_model_cannot_take(tmp_path):
    settings = sweep.default_settings("smoke") | {"img_sizes": [100]}
    with pytest.raises(ValueError, match="multiple of 32"):
        sweep.run(settings, tmp_path, progress=False)
    with pytest.raises(SystemExit, match="batch sizes must be >= 1"):
        sweep.main(["--batch-sizes", "0", "--out", str(tmp_path)])


def test_crossover_is_the_first_size_from_which_a_kind_stays_faster():
    import pandas as pd

    rows = pd.DataFrame({
        "kind": ["softmax"] * 4 + ["clustered"] * 4, "batch_size": 1,
        "img_size": [224, 448, 640, 1024] * 2,
        "fwd_s": [1.0, 3.0, 9.0, None, 2.0, 2.5, 4.0, 8.0],
    })
    at, table = sweep.crossover(rows)
    assert at == 448 and list(table.index) == [224, 448, 640]
    rows.loc[5, "fwd_s"] = 3.5  # slower at 448: now faster only from 640
    assert sweep.crossover(rows)[0] == 640
    assert sweep.crossover(rows, kind="softmax", reference="clustered")[0] is None

