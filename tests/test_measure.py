"""ccoat.measure: the alternating timer, memory and time facts."""
import pytest
import torch

import ccoat
from ccoat import cost, measure


def test_alternate_runs_every_call_in_turn_reversing_each_round():
    order = []
    times = measure.alternate({"a": lambda: order.append("a"), "b": lambda: order.append("b"),
                               "c": lambda: order.append("c")}, repeats=2, warmup=1)
    assert order == list("abc" "cba" "abc")  # one warm-up round, then two timed ones
    assert {k: len(v) for k, v in times.items()} == {"a": 2, "b": 2, "c": 2}
    assert all(t >= 0 for v in times.values() for t in v)


def test_round_ratio_is_the_median_of_per_round_ratios():
    times = {"x": [2.0, 9.0, 3.0], "ref": [1.0, 3.0, 1.0]}  # ratios 2, 3, 3
    assert measure.round_ratio(times, "x", "ref") == 3.0
    assert measure.medians(times) == {"x": 3.0, "ref": 1.0}


@pytest.mark.parametrize("repeats,warmup", [(0, 1), (1, -1), (1.5, 0), (True, 0)])
def test_alternate_refuses_bad_counts(repeats, warmup):
    with pytest.raises(ValueError, match="repeats must be an integer >= 1 and warmup >= 0"):
        measure.alternate({"a": lambda: None}, repeats, warmup)
    with pytest.raises(ValueError, match="at least one call"):
        measure.alternate({}, 1)


def test_live_tensor_memory_counts_new_storages_not_views():
    x, y = torch.randn(100, 100), torch.randn(100, 100)
    with measure.LiveTensorMemory() as tracker:
        a = x @ y  # 40,000 bytes
        b = a.relu()  # 40,000 more
        del a  # freed
        _ = b.t(), x.view(-1)  # views allocate nothing
        c = b * 2  # 40,000 again: two live
    assert tracker.peak == 80_000
    assert tracker.live == 80_000
    del b, c


def test_forward_peak_memory_is_linear_in_batch():
    model = ccoat.create_model("coat_lite_tiny")
    one = measure.peak_memory(model, 64, 1)
    four = measure.peak_memory(model, 64, 4)
    assert one["method"].startswith("live tensor")
    assert four["bytes"] == pytest.approx(4 * one["bytes"], rel=0.01)
    train = measure.peak_memory(model, 64, 1, train=True)["bytes"]
    assert train > one["bytes"] + cost.parameters(model)["total"] * 4  # activations + gradients
    assert all(p.grad is None for p in model.parameters())  # leaves the model as it was


def test_throughput_reports_median_of_repeats():
    model = ccoat.create_model("coat_lite_tiny").train()
    result = measure.throughput(model, 64, 2, repeats=3, warmup=1)
    assert len(result["times_s"]) == 3
    assert result["median_s"] == sorted(result["times_s"])[1]
    assert result["images_per_s"] == pytest.approx(2 / result["median_s"])
    assert model.training  # the mode it came in
    model.eval()
    measure.throughput(model, 64, 1, train=True, repeats=1, warmup=0)
    assert not model.training and all(p.grad is None for p in model.parameters())
    with pytest.raises(ValueError, match="repeats must be an integer >= 1"):
        measure.throughput(model, 64, 1, repeats=0)


def test_component_times_cover_the_pass():
    model = ccoat.create_model("coat_lite_tiny")
    times = measure.component_times(model, 64, 1, repeats=1, warmup=0)
    total = times.pop(("total", "all"))
    assert sum(times.values()) == pytest.approx(total, rel=1e-6)
    assert all(t >= 0 for t in times.values())
    named = {c for c, _ in times}
    assert set(cost.macs(model)) - {"total", "residual"} <= named  # every component was timed
    assert {s for _, s in times} == set(cost.STAGES)


def test_component_times_split_the_clustering_steps_and_restore_them():
    from ccoat import clustering, hashing

    originals = (clustering.prototypes, clustering.broadcast, hashing.clusters_from_codes)
    model = ccoat.create_model("coat_lite_tiny", attention="clustered")
    times = measure.component_times(model, 64, 1, repeats=1, warmup=0)
    total = times.pop(("total", "all"))
    assert sum(times.values()) == pytest.approx(total, rel=1e-6)
    for component in cost.CLUSTERING_COMPONENTS:
        assert times[(component, "stage1")] > 0, component
    assert (clustering.prototypes, clustering.broadcast, hashing.clusters_from_codes) == originals
