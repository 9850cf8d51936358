"""ccoat.runfolder.read_run: a committed run folder read back whole, from a checkout or fetched.

(The rules of a live run folder, its lock and the order of its writes, are tested with training
in test_train.py and test_faults.py.)"""
import io
import json
import urllib.error
import urllib.request

import pandas as pd
import pytest

from ccoat import provenance, runfolder
from ccoat.provenance import find_results


def _commit_run(results, name: str, evaluated: bool = True) -> None:
    folder = results / name
    folder.mkdir(parents=True)
    (folder / "run.json").write_text(json.dumps({"command": "python -m ccoat.train", "config": {}}))
    (folder / "metrics.jsonl").write_text(
        "".join(json.dumps({"epoch": e, "val_top1": 10.0 * e}) + "\n" for e in (1, 2, 3)))
    if evaluated:
        (folder / "eval.json").write_text(json.dumps({"top1": 31.5, "images": 100}))


def test_a_committed_run_reads_back_with_its_epochs_and_its_final_score(tmp_path):
    _commit_run(tmp_path / "results", "test_read_run_a")
    _commit_run(tmp_path / "results", "test_read_run_b", evaluated=False)
    run = runfolder.read_run("test_read_run_a", start=tmp_path)
    assert run.path == tmp_path / "results" / "test_read_run_a"
    assert run.run["command"] == "python -m ccoat.train"
    assert isinstance(run.metrics, pd.DataFrame) and list(run.metrics.epoch) == [1, 2, 3]
    assert run.metrics.val_top1.iloc[-1] == 30.0 and run.eval == {"top1": 31.5, "images": 100}
    assert runfolder.read_run("test_read_run_b", start=tmp_path).eval is None  # never scored
    assert runfolder.read_run("test_read_run_none", start=tmp_path) is None
    # required: a missing run, or a run never scored, is an error naming the file it lacks
    with pytest.raises(FileNotFoundError, match="test_read_run_none/metrics.jsonl"):
        runfolder.read_run("test_read_run_none", start=tmp_path, required=True)
    with pytest.raises(FileNotFoundError, match="test_read_run_b/eval.json"):
        runfolder.read_run("test_read_run_b", start=tmp_path, required=True)
    assert runfolder.read_run("test_read_run_a", start=tmp_path, required=True).eval


def test_the_books_committed_runs_read_back_as_their_files_say():
    for name in ("cifar10_coat_lite_tiny_cifar", "gpu_budget_cifar10_ccoat_lite_tiny_cifar"):
        run = runfolder.read_run(name)
        folder = find_results(name)
        assert run.path == folder and run.run == json.loads((folder / "run.json").read_text())
        assert run.metrics.equals(pd.read_json(folder / "metrics.jsonl", lines=True))
        assert run.eval == json.loads((folder / "eval.json").read_text())
        assert len(run.metrics) == run.eval["epoch"]  # scored after its last epoch


def test_without_a_checkout_the_run_is_fetched_from_the_repository(tmp_path, monkeypatch):
    monkeypatch.setattr(provenance, "__file__", str(tmp_path / "site" / "ccoat" / "provenance.py"))
    asked = []

    def fake_urlopen(url, timeout=None):  # the network call, stubbed: no eval.json there
        asked.append(url.rsplit("/", 1)[1])
        if url.endswith("eval.json") or "/missing/" in url:
            raise urllib.error.HTTPError(url, 404, "Not Found", {}, None)
        if url.endswith("metrics.jsonl"):
            return io.BytesIO(b'{"epoch": 1, "val_top1": 12.5}\n')
        return io.BytesIO(b'{"command": "fetched"}')

    monkeypatch.setattr(urllib.request, "urlopen", fake_urlopen)
    colab = tmp_path / "colab"
    colab.mkdir()
    run = runfolder.read_run("fetched_run", "https://github.com/owner/name", start=colab)
    assert run.path == colab / "results" / "fetched_run" and run.run == {"command": "fetched"}
    assert run.metrics.val_top1.tolist() == [12.5] and run.eval is None
    assert asked == ["metrics.jsonl", "run.json", "eval.json"]
    assert runfolder.read_run("missing", "https://github.com/owner/name", start=colab) is None


def test_a_committed_run_loads_its_model_in_any_attention_kind(tmp_path):
    """A trained run folder's half-precision export reads back as its model: the logits of the
    checkpoint's own weights (to half precision), in the run's kind and in another."""
    import pytest
    import torch

    import ccoat
    from ccoat import train

    folder = tmp_path / "results" / "tiny_run"
    train.fit(dict(data="digits", epochs=1, batch_size=16, train_subset=32, val_subset=16,
                   steps_per_epoch=1, num_workers=0, progress=False, out=str(folder)))
    with pytest.raises(FileNotFoundError, match="no committed weights"):
        runfolder.read_run("tiny_run", start=tmp_path).load_model()
    runfolder.export_weights(folder / "last.pt")
    run = runfolder.read_run("tiny_run", start=tmp_path)
    model = run.load_model()
    reference = ccoat.create_model("coat_lite_tiny_cifar", num_classes=10)
    reference.load_state_dict(runfolder.load_checkpoint(folder / "last.pt")["model"])
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(model(x), reference.eval()(x), atol=2e-2, rtol=0)
        clustered = run.load_model("clustered")
        assert clustered(x).shape == (2, 10)
    assert type(clustered.stages[0].blocks[0].attn.core).__name__ != type(
        model.stages[0].blocks[0].attn.core).__name__
    with pytest.raises(ValueError, match="no EMA weights"):
        runfolder.export_weights(folder / "last.pt", tmp_path / "x.safetensors", use_ema=True)


def test_first_run_takes_the_first_committed_and_scored_run(tmp_path):
    _commit_run(tmp_path / "results", "unscored", evaluated=False)
    _commit_run(tmp_path / "results", "scored")
    names = ["absent", "unscored", "scored"]
    assert runfolder.first_run(names, start=tmp_path).path.name == "scored"
    assert runfolder.first_run(names, start=tmp_path, scored=False).path.name == "unscored"
    assert runfolder.first_run(["absent"], start=tmp_path) is None


def test_committed_weights_score_as_their_checkpoint_and_bad_files_are_named(tmp_path):
    """``--eval-only --resume RUN/model.safetensors`` scores a committed run without its
    last.pt: the same top-1 as the checkpoint (weights to half precision) on the same images."""
    import pytest

    from ccoat import train
    from ccoat.evaluate import evaluate_checkpoint

    folder = tmp_path / "run"
    train.fit(dict(data="digits", epochs=1, batch_size=16, train_subset=32, val_subset=16,
                   steps_per_epoch=1, num_workers=0, progress=False, out=str(folder)))
    weights = runfolder.export_weights(folder / "last.pt")
    kw = dict(num_workers=0, device="cpu", val_subset=64, progress=False)
    from_ckpt = evaluate_checkpoint(folder / "last.pt", **kw)
    from_weights = evaluate_checkpoint(weights, **kw)
    assert from_weights["images"] == 64 and from_weights["epoch"] == from_ckpt["epoch"] == 1
    assert abs(from_weights["top1"] - from_ckpt["top1"]) <= 100 / 64 + 1e-9  # one image at most
    assert runfolder.weights_checkpoint(weights)["weights_only"]
    alone = tmp_path / "alone" / "model.safetensors"
    alone.parent.mkdir()
    alone.write_bytes(weights.read_bytes())
    with pytest.raises(ValueError, match="no run.json and metrics.jsonl beside them"):
        runfolder.weights_checkpoint(alone)
    weights.write_bytes(b"not a safetensors file")
    with pytest.raises(ValueError, match="cannot be read"):
        runfolder.weights_checkpoint(weights)


def test_a_token_clustered_run_trains_and_reloads_with_its_clustering(tmp_path):
    import torch

    from ccoat import train
    from ccoat.token_clustering import TokenClusteredBlock

    folder = tmp_path / "results" / "tc_run"
    result = train.fit(dict(data="digits", epochs=1, batch_size=16, train_subset=32,
                            val_subset=16, steps_per_epoch=1, num_workers=0, progress=False,
                            token_clustering="pool", keep=0.25, token_stages=[1],
                            out=str(folder)))
    assert isinstance(result.model.stages[0].blocks[0], TokenClusteredBlock)
    assert not isinstance(result.model.stages[1].blocks[0], TokenClusteredBlock)
    runfolder.export_weights(folder / "last.pt")
    model = runfolder.read_run("tc_run", start=tmp_path).load_model()
    block = model.stages[0].blocks[0]
    assert isinstance(block, TokenClusteredBlock) and (block.method, block.keep) == ("pool", 0.25)
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(model(x), result.model.eval()(x), atol=2e-2, rtol=0)


def test_a_corrupt_record_names_its_file_in_read_run_and_in_eval_only(tmp_path):
    """A run.json, metrics.jsonl or eval.json cut short or edited wrong is a ValueError naming
    the file (read_run, and --eval-only of the folder's weights), not a bare decoder error."""
    import pytest
    import torch

    import ccoat
    from ccoat import train
    from ccoat.weights import save_weights

    for name, text in (("run.json", '{"command": "python -m ccoat.tr'),
                       ("metrics.jsonl", '{"epoch": 1}\n{"epoch": 2, "val_'),
                       ("eval.json", "\x00\x00garbage")):
        _commit_run(tmp_path / "results", f"bad_{name}")
        (tmp_path / "results" / f"bad_{name}" / name).write_text(text)
        with pytest.raises(ValueError, match=rf"bad_{name}/{name}.* is not valid JSON"):
            runfolder.read_run(f"bad_{name}", start=tmp_path)
    folder = tmp_path / "weights_run"
    folder.mkdir()
    torch.manual_seed(0)
    weights = save_weights(ccoat.create_model("coat_lite_tiny_cifar", num_classes=10),
                           folder / "model.safetensors")
    (folder / "metrics.jsonl").write_text('{"epoch": 1}\n')
    for name, text, message in (("run.json", '{"config": {', "is not valid JSON"),
                                ("run.json", '{"command": "x"}', "lacks the run's config"),
                                ("metrics.jsonl", '{"val_top1": 3.0}\n', "line 1: expected a JSON "
                                                                         "object with epoch"),
                                ("metrics.jsonl", "", "holds no epoch")):
        if name == "metrics.jsonl":
            (folder / "run.json").write_text('{"config": {}, "data": {}}')
        (folder / name).write_text(text)
        with pytest.raises(ValueError, match=rf"{folder / name}.*{message}"):
            runfolder.weights_checkpoint(weights)
        with pytest.raises(SystemExit, match=rf"error: .*{folder / name}.*{message}"):
            train.main(["--eval-only", "--resume", str(weights), "--device", "cpu",
                        "--num-workers", "0", "--no-progress"])
