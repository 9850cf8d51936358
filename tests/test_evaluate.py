"""ccoat.evaluate: top-k hits, clusters per stage, a model scored on a loader (with per-image
predictions for pairing), eval.json, the autocast dtype, and a checkpoint scored."""
import json

import pytest
import torch

from ccoat import evaluate as cevaluate


def test_accuracy_counts_topk_hits():
    logits = torch.tensor([[0.0, 3, 2, 1, 0, 0], [5, 0, 0, 0, 0, 1]])
    assert cevaluate.accuracy(logits, torch.tensor([2, 5]), topk=(1, 2)) == [0, 2]
    assert cevaluate.accuracy(logits, torch.tensor([1, 0]), topk=(1, 5)) == [2, 2]


def test_cluster_stats_average_over_batches_heads_and_blocks_of_a_stage():
    records = {}
    stats = cevaluate.ClusterStats(records)
    records["stages.0.blocks.0"] = {"num_clusters": torch.tensor([[2, 4], [6, 8]])}
    records["stages.0.blocks.1"] = {"num_clusters": torch.tensor([[1, 1], [1, 1]])}
    stats.collect()
    records["stages.0.blocks.0"] = {"num_clusters": torch.tensor([[10, 10], [10, 10]])}
    records["stages.3.blocks.0"] = {"num_clusters": torch.tensor([[3]])}
    records.pop("stages.0.blocks.1")
    stats.collect()
    assert stats.summary() == {"stage1": (20 + 4 + 40) / 12, "stage4": 3.0}
    assert cevaluate.ClusterStats().summary() == {}


def test_evaluate_reports_clusters_for_clustered_models_only():
    pytest.importorskip("ccoat.clustering")
    import ccoat

    images, target = torch.randn(4, 3, 32, 32), torch.randint(0, 10, (4,))
    loader = [(images, target)]
    plain = cevaluate.evaluate(ccoat.create_model("coat_lite_tiny_cifar", num_classes=10), loader)
    assert "clusters_per_stage" not in plain
    clustered = cevaluate.evaluate(ccoat.create_model("ccoat_lite_tiny_cifar", num_classes=10), loader)
    per_stage = clustered["clusters_per_stage"]
    assert list(per_stage) == ["stage1", "stage2", "stage3", "stage4"]
    tokens = [16 * 16, 8 * 8, 4 * 4, 2 * 2]  # image tokens per stage at 32 px
    assert all(1 <= per_stage[s] <= n for s, n in zip(per_stage, tokens))


def test_evaluate_keeps_per_image_predictions_for_pairing():
    import ccoat

    torch.manual_seed(0)
    batches = [(torch.randn(5, 3, 32, 32), torch.randint(0, 10, (5,))) for _ in range(3)]
    model = ccoat.create_model("coat_lite_tiny_cifar", num_classes=10).eval()
    result = cevaluate.evaluate(model, batches, interval=True)
    labels = torch.cat([t for _, t in batches])
    with torch.no_grad():
        expected = torch.cat([model(x).argmax(1) for x, _ in batches])
    assert result["labels"] == labels.tolist() and result["predictions"] == expected.tolist()
    hits = torch.tensor(result["predictions"]) == torch.tensor(result["labels"])
    assert abs(result["top1"] - 100 * hits.double().mean().item()) < 1e-9
    assert "predictions" not in cevaluate.evaluate(model, batches)  # only with interval=True
    text = cevaluate.eval_json(result)
    assert json.loads(text) == result  # eval.json holds it all ...
    assert len(text.splitlines()) < 20  # ... with each per-image list on one line
    assert json.loads(cevaluate.eval_json({"top1": 1.0})) == {"top1": 1.0}


def test_a_checkpoint_reads_data_from_the_root_given_then_the_environment_then_the_runs(
        tmp_path, monkeypatch):
    """A committed run.json holds another machine's data root (a temporary folder there)."""
    here, gone = str(tmp_path), str(tmp_path / "tmp.5QQ3oCompy")
    monkeypatch.delenv("CCOAT_DATA", raising=False)
    assert cevaluate._data_root("/given", here) == "/given"
    assert cevaluate._data_root(None, here) == here  # the run's own, where it exists
    assert cevaluate._data_root(None, gone) is None  # else the default (../shared/data)
    monkeypatch.setenv("CCOAT_DATA", "/env")
    assert cevaluate._data_root(None, here) is None  # None: the data module reads $CCOAT_DATA
    assert cevaluate._data_root("/given", here) == "/given"


def test_a_corrupt_checkpoint_is_refused_naming_the_file(tmp_path):
    empty, garbage = tmp_path / "empty.pt", tmp_path / "garbage.pt"
    empty.write_bytes(b"")
    garbage.write_bytes(b"not a checkpoint at all" * 10)
    for path in (empty, garbage):
        with pytest.raises(ValueError, match=rf"checkpoint {path}"):
            cevaluate.evaluate_checkpoint(path, device="cpu", num_workers=0)
