import json

from ccoat.provenance import provenance


def test_record_names_its_sources(monkeypatch):
    monkeypatch.setenv("CCOAT_PROFILE", "cpu")
    record = provenance(dataset="digits", command="python -m ccoat.train --data digits", seed=3)
    assert record["profile"] == "cpu" and record["dataset"] == "digits" and record["seed"] == 3
    assert record["command"].startswith("python -m ccoat.train")
    assert len(record["git_commit"]) >= 7 and record["date"].endswith("+00:00")
    json.dumps(record)  # JSON-ready
