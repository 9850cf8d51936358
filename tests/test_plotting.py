from ccoat.plotting import block_label


def test_block_label_counts_from_one():
    assert block_label("stages.0.blocks.1") == "s1.b2"
    assert block_label("stages.3.blocks.7") == "s4.b8"
