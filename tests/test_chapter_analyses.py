"""The cost chapters' analyses (ccoat.sweep's) run on every committed results file the chapters
read, so that a file the CI profile does not open (the GPU sweep, with batches 1 and 32) cannot
break a chapter unseen; and they compute what they say on those files."""
import json
import re
from pathlib import Path

import pandas as pd
import pytest

from ccoat import sweep

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "results"
SWEEPS = ["cost_cpu.json", "cost_gpu.json"]
COMPONENT_TIMES = ["cost_components_tiny.json"]
CHAPTERS = [ROOT / "notebooks" / "05_cost_audit.py", ROOT / "notebooks" / "05b_measuring.py"]


def test_every_results_file_the_chapters_read_is_tested_here():
    read = set()
    for chapter in CHAPTERS:
        read |= set(re.findall(r'(?:committed|results_file)\(\s*"([^"]+)"', chapter.read_text()))
    assert read, "the chapters read no committed results file: did the reading change?"
    assert read <= set(SWEEPS + COMPONENT_TIMES), f"untested files: {read - set(SWEEPS + COMPONENT_TIMES)}"


@pytest.fixture(params=SWEEPS)
def rows(request):
    rows, _, _ = sweep.load(RESULTS / request.param)
    return rows


def test_the_gpu_sweep_holds_two_batch_sizes_so_resolutions_repeat():
    """The case that broke the chapter: one resolution appears once per batch size."""
    rows, _, _ = sweep.load(RESULTS / "cost_gpu.json")
    assert sorted(rows.batch_size.unique()) == [1, 32]
    assert rows[rows.kind == "factorized"].img_size.duplicated().any()


def test_relative_to_factorized_divides_by_the_same_configuration(rows):
    rel = sweep.relative_to_factorized(rows)
    assert len(rel) == len(rows) and rel.macs_vs_factorized.notna().all()
    for _, r in rel.iterrows():
        base = rows[(rows.kind == "factorized") & (rows.model == r.model)
                    & (rows.img_size == r.img_size) & (rows.batch_size == r.batch_size)]
        assert r.macs_vs_factorized == pytest.approx(r.macs / base.macs.item())
    assert (rel[rel.kind == "factorized"].macs_vs_factorized == 1).all()


def test_relative_to_factorized_refuses_rows_it_cannot_pair(rows):
    with pytest.raises(ValueError, match="missing \\['batch_size'\\]"):
        sweep.relative_to_factorized(rows.drop(columns="batch_size"))
    twice = pd.concat([rows, rows[rows.kind == "factorized"].head(1)])
    with pytest.raises(ValueError, match="more than one factorized row"):
        sweep.relative_to_factorized(twice)


def test_time_per_mac_is_the_time_ratio_over_the_mac_ratio(rows):
    table = sweep.time_per_mac(rows)
    rel = sweep.relative_to_factorized(rows)
    for (model, batch, kind), r in table.iterrows():
        assert kind != "factorized"
        sel = rel[(rel.model == model) & (rel.batch_size == batch) & (rel.kind == kind)]
        sel = sel.dropna(subset=["fwd_vs_factorized"])
        per_mac = sel.fwd_vs_factorized / sel.macs_vs_factorized
        assert r["median"] == pytest.approx(per_mac.median())
        assert r.low == pytest.approx(per_mac.min()) and r.high == pytest.approx(per_mac.max())
        assert r.resolutions == len(sel) > 0
    kinds = set(rows.kind) - {"factorized"}
    assert set(table.index.get_level_values("kind")) == kinds


def test_at_selects_one_batch_and_names_what_the_rows_hold(rows):
    for batch in rows.batch_size.unique():
        sel = sweep.at(rows, batch_size=int(batch))
        assert not sel.duplicated(["kind", "img_size"]).any()
    with pytest.raises(ValueError, match=r"batch 7.*\('coat_lite_tiny', 1\)"):
        sweep.at(rows, batch_size=7)


def test_peak_memory_ratios_per_resolution(rows):
    table = sweep.peak_memory_ratios(rows)
    assert table.index.is_unique
    assert (table["training / factorized: factorized"] == 1).all()
    assert ((table["forward spread"] >= 0) & (table["forward spread"] < 1)).all()


def test_crossover_reads_every_batch_of_every_sweep(rows):
    for batch in rows.batch_size.unique():
        px, table = sweep.crossover(rows, "clustered", "softmax", "fwd_vs_factorized",
                                    batch_size=int(batch))
        assert px is None or px in set(table.index)
        if px is not None:  # from px on, clustered is below softmax at every measured size
            assert (table.loc[px:, "clustered"] < table.loc[px:, "softmax"]).all()


@pytest.mark.parametrize("name", COMPONENT_TIMES)
def test_component_times_shares_are_parts_of_the_pass(name):
    table, record = sweep.load_component_times(RESULTS / name)
    raw = json.loads((RESULTS / name).read_text())
    assert len(table) == sum(len(t["rows"]) - 1 for t in raw["tables"])  # less the totals
    assert "command" in record
    for _, group in table.groupby(["model", "img_size", "batch_size"]):
        # each component's time is its own median, so the parts add up to about the whole
        assert group.time_share.sum() == pytest.approx(1, abs=0.05)
        assert group.macs_share.sum() == pytest.approx(1)
        assert (group.seconds / group.pass_seconds).to_numpy() == \
            pytest.approx(group.time_share.to_numpy())
