import json

from ccoat.provenance import provenance


def test_record_names_its_sources(monkeypatch):
    monkeypatch.setenv("CCOAT_PROFILE", "cpu")
    record = provenance(dataset="digits", command="python -m ccoat.train --data digits", seed=3)
    assert record["profile"] == "cpu" and record["dataset"] == "digits" and record["seed"] == 3
    assert record["command"].startswith("python -m ccoat.train")
    assert len(record["git_commit"]) >= 7 and record["date"].endswith("+00:00")
    json.dumps(record)  # JSON-ready


def test_find_results_walks_up_to_the_results_folder(tmp_path, monkeypatch):
    from ccoat import provenance as prov

    monkeypatch.setattr(prov, "__file__", str(tmp_path / "elsewhere" / "ccoat" / "provenance.py"))
    (tmp_path / "repo" / "results").mkdir(parents=True)
    (tmp_path / "repo" / "results" / "run.json").write_text("{}")
    (tmp_path / "repo" / "notebooks").mkdir()
    start = tmp_path / "repo" / "notebooks"
    assert prov.find_results(start=start) == tmp_path / "repo" / "results"
    assert prov.find_results("run.json", start=start) == tmp_path / "repo" / "results" / "run.json"
    assert prov.find_results("missing.json", start=start) is None
    (tmp_path / "bare").mkdir()
    assert prov.find_results(start=tmp_path / "bare") is None
