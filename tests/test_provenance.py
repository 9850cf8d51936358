import json
import shutil
import subprocess

import pytest

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


def test_results_file_prefers_the_checkout_then_fetches_from_the_repository(tmp_path, monkeypatch):
    import io
    import urllib.error
    import urllib.request

    from ccoat import provenance as prov

    monkeypatch.setattr(prov, "__file__", str(tmp_path / "site" / "ccoat" / "provenance.py"))
    asked = []

    def fake_urlopen(url, timeout=None):  # the network call, stubbed
        asked.append(url)
        if url.endswith("missing.json"):
            raise urllib.error.HTTPError(url, 404, "Not Found", {}, None)
        return io.BytesIO(b'{"fetched": true}')

    monkeypatch.setattr(urllib.request, "urlopen", fake_urlopen)
    repo = "https://github.com/owner/name"
    bare = tmp_path / "colab"
    bare.mkdir()
    path = prov.results_file("cifar10_x/run.json", repo, start=bare)
    assert path == bare / "results" / "cifar10_x" / "run.json"
    assert json.loads(path.read_text()) == {"fetched": True}
    assert asked == ["https://raw.githubusercontent.com/owner/name/main/results/cifar10_x/run.json"]
    assert prov.results_file("cifar10_x/run.json", repo, start=bare) == path  # found, not fetched
    assert len(asked) == 1
    assert prov.results_file("missing.json", repo, start=bare) is None
    assert prov.results_file("other.json", None, start=bare) is None  # no repository: no fetch
    (tmp_path / "clone" / "results").mkdir(parents=True)
    (tmp_path / "clone" / "results" / "a.json").write_text("{}")
    assert prov.results_file("a.json", repo, start=tmp_path / "clone") == \
        tmp_path / "clone" / "results" / "a.json"
    assert len(asked) == 2
    # a clone (results/ beside pyproject.toml) holds every committed file: no fetch, offline too
    (tmp_path / "clone" / "pyproject.toml").write_text("")
    assert prov.results_file("not_committed.json", repo, start=tmp_path / "clone") is None
    assert len(asked) == 2
    with pytest.raises(FileNotFoundError, match="neither in this checkout nor in https://github"):
        prov.results_file("missing.json", repo, start=bare, required=True)
    with pytest.raises(FileNotFoundError, match="no repository was given"):
        prov.results_file("other.json", None, start=bare, required=True)


@pytest.mark.skipif(shutil.which("git") is None, reason="git is not installed")
@pytest.mark.parametrize("repo", [None, "https://github.com/owner/name"])
def test_a_committed_results_file_missing_from_the_clone_is_an_error(tmp_path, monkeypatch, repo):
    """A chapter that read None for a deleted, committed file printed "n/a" and the book built
    green: the file is named instead, required or not, and nothing is fetched in its place."""
    import urllib.request

    from ccoat import provenance as prov

    monkeypatch.setattr(prov, "__file__", str(tmp_path / "site" / "ccoat" / "provenance.py"))
    monkeypatch.setattr(urllib.request, "urlopen", lambda *a, **k: pytest.fail("fetched"))
    clone = tmp_path / "clone"
    (clone / "results" / "run").mkdir(parents=True)
    (clone / "pyproject.toml").write_text("")
    (clone / "results" / "run" / "conversion.json").write_text("{}")
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@example.org"]
    for args in (["init", "-q"], ["add", "."], ["commit", "-q", "-m", "results"]):
        subprocess.run([*git, *args], cwd=clone, check=True, capture_output=True)
    (clone / "results" / "run" / "conversion.json").unlink()
    for required in (False, True):
        with pytest.raises(FileNotFoundError, match=r"results/run/conversion.json is committed "
                           r"but missing .* git checkout -- results/run/conversion.json"):
            prov.results_file("run/conversion.json", repo, start=clone / "notebooks",
                              required=required)
    assert prov.results_file("run/never_committed.json", repo, start=clone) is None
    subprocess.run(["git", "checkout", "--", "results"], cwd=clone, check=True)
    assert prov.results_file("run/conversion.json", repo, start=clone) == \
        clone / "results" / "run" / "conversion.json"


def test_raw_url_wants_a_github_address():
    import pytest

    from ccoat.provenance import raw_url

    assert raw_url("https://github.com/a/b/", "results/x.json") == \
        "https://raw.githubusercontent.com/a/b/main/results/x.json"
    with pytest.raises(ValueError, match="GitHub address"):
        raw_url("https://gitlab.com/a/b", "x")


def test_shorten_paths_writes_the_data_root_as_a_variable():
    from ccoat.provenance import shorten_paths

    text = "--data-dir /srv/data --epochs 3; CIFAR-10 at /srv/data/cifar10"
    assert shorten_paths(text, "/srv/data/") == \
        "--data-dir $CCOAT_DATA --epochs 3; CIFAR-10 at $CCOAT_DATA/cifar10"
    assert shorten_paths(text, None) == text


def test_describe_says_in_one_line_what_made_a_result():
    from ccoat.provenance import describe

    record = {"command": "python -m ccoat.train --data-dir /srv/data --epochs 3",
              "git_commit": "0123456789abcdef", "device": "x86_64 CPU, 2 cores",
              "torch": "2.5.1", "threads": 2, "profile": "cpu",
              "date": "2026-11-24T21:40:09+00:00", "config": {"data_dir": "/srv/data"}}
    assert describe(record) == (
        "python -m ccoat.train --data-dir $CCOAT_DATA --epochs 3 at commit 0123456789, "
        "x86_64 CPU, 2 cores, torch 2.5.1, 2 thread(s), profile cpu, 2026-11-24")
    assert describe(record, markdown=True).startswith(
        "`python -m ccoat.train --data-dir $CCOAT_DATA --epochs 3` at commit")
    assert describe({"command": "python bench.py"}) == (
        "python bench.py at commit ?, ?, torch ?, ? thread(s), profile ?, ?")


def test_describe_writes_no_path_of_the_machine_that_made_the_record():
    from ccoat.provenance import describe

    record = {"command": "python -m ccoat.train --data-dir /tmp/tmp.x1/data --out /root/runs/a "
                         "--init results/r/model.safetensors",
              "config": {"data_dir": "/tmp/tmp.x1/data"}, "git_commit": "abc", "date": "2026"}
    line = describe(record)
    assert "--data-dir $CCOAT_DATA" in line and "--out …/a" in line
    assert "results/r/model.safetensors" in line  # a path of the repository stays
    assert "/tmp/" not in line and "/root/" not in line


def test_every_committed_results_file_carries_the_one_provenance_schema():
    """Nested under "provenance" (benchmarks, sweeps) or at the top (a run's run.json), every
    results file says how it was made with the same keys that ``provenance()`` writes."""
    from pathlib import Path

    from ccoat.provenance import PROVENANCE_KEYS, of

    files = sorted((Path(__file__).resolve().parents[1] / "results").rglob("*.json"))
    assert len(files) > 20
    for path in files:
        record = of(json.loads(path.read_text()))
        assert tuple(record) == PROVENANCE_KEYS and record["command"], path
    assert set(provenance()) == set(PROVENANCE_KEYS)


def test_of_names_what_a_record_lacks():
    from ccoat.provenance import of

    made = provenance(dataset="digits")
    assert of({"provenance": made, "rows": []}) == of(made) == made
    with pytest.raises(KeyError, match="no provenance dataset, date;"):
        of({k: v for k, v in made.items() if k not in ("date", "dataset")})


def test_read_results_reads_a_committed_file_and_names_a_missing_one():
    from ccoat.provenance import read_results

    assert "rows" in read_results("token_clustering_vs_resolution.json")
    with pytest.raises(FileNotFoundError, match="results/no_such.json"):
        read_results("no_such.json")
