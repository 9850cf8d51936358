"""The book's diagrams (``book/figures``) print the numbers their script computed.

``book/figures/make_diagrams.py`` writes two SVGs and ``diagrams.json`` (the numbers and their
provenance). These tests read the committed files: the SVGs must be well-formed XML, each MAC
share printed on the module diagram must be the JSON's, rounded as printed, the JSON's shares
must be the shares of its MAC counts, and the pyramid's labels must be CoaT-Lite Tiny's.
"""
import json
import math
import re
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

import ccoat

FIGURES = Path(__file__).resolve().parents[1] / "book" / "figures"
SVG = "{http://www.w3.org/2000/svg}"
DIAGRAMS = ("coat_lite_pyramid.svg", "clustering_conv_attention.svg")


@pytest.fixture(scope="module")
def numbers() -> dict:
    return json.loads((FIGURES / "diagrams.json").read_text())


def texts_by_id(name: str) -> dict[str, str]:
    root = ET.parse(FIGURES / name).getroot()
    return {t.get("id"): "".join(t.itertext()) for t in root.iter(f"{SVG}text") if t.get("id")}


@pytest.mark.parametrize("name", DIAGRAMS)
def test_each_diagram_is_svg_at_most_the_book_width(name):
    root = ET.parse(FIGURES / name).getroot()
    assert root.tag == f"{SVG}svg"
    x, y, width, height = map(float, root.get("viewBox").split())
    assert (x, y) == (0, 0) and 0 < width <= 800 and height > 0
    assert root.find(f"{SVG}title").text  # a text alternative for screen readers


def test_module_diagram_prints_the_json_shares(numbers):
    shares = numbers["module"]["share_percent"]
    printed = {key.removeprefix("share-"): text for key, text in
               texts_by_id("clustering_conv_attention.svg").items() if key.startswith("share-")}
    assert set(printed) == set(shares)
    for step, text in printed.items():
        match = re.fullmatch(r"(\d+\.\d)%", text)
        assert match, f"share of {step} printed as {text!r}"
        assert float(match.group(1)) == pytest.approx(shares[step], abs=0.05 + 1e-9), step


def test_json_shares_are_the_shares_of_its_macs_and_sum_to_100(numbers):
    module = numbers["module"]
    macs, shares = module["macs"], module["share_percent"]
    assert math.fsum(shares.values()) == pytest.approx(100.0, abs=1e-6)
    total = sum(macs.values())
    for step, share in shares.items():
        assert share == pytest.approx(100.0 * macs[step] / total, rel=1e-12), step
    assert 1 <= module["clusters_per_row"] <= module["padded_per_row"] <= module["queries_per_row"]


def test_module_diagram_prints_the_json_cluster_count(numbers):
    module = numbers["module"]
    root = ET.parse(FIGURES / "clustering_conv_attention.svg").getroot()
    text = " ".join("".join(t.itertext()) for t in root.iter(f"{SVG}text"))
    assert (f"≈ {module['clusters_per_row']:,.0f} clusters of {module['queries_per_row']:,} "
            "queries") in text
    assert f"{module['n_hashes']} hashes, bucket width r = {module['bucket_width']:g}" in text


def test_json_says_how_it_was_made(numbers):
    record = numbers["provenance"]
    assert "make_diagrams.py" in record["command"]
    assert re.fullmatch(r"[0-9a-f]{40}(-dirty)?", record["git_commit"])
    assert re.match(r"\d{4}-\d{2}-\d{2}T", record["date"])


def test_pyramid_labels_are_coat_lite_tiny_at_224_px(numbers):
    config = ccoat.create_model("coat_lite_tiny").config
    stages = numbers["pyramid"]["stages"]
    assert [s["dim"] for s in stages] == list(config.embed_dims)
    assert [s["depth"] for s in stages] == list(config.depths)
    assert [s["stride"] for s in stages] == list(config.stage_patches)
    printed = texts_by_id("coat_lite_pyramid.svg")
    side = numbers["pyramid"]["img_size"]
    for i, (stride, dim) in enumerate(zip(config.stage_patches, config.embed_dims), start=1):
        side //= stride
        assert printed[f"stage{i}-map"] == f"{side} × {side} map, C = {dim}"
    assert side == 7  # 224 / (4 · 2 · 2 · 2)
