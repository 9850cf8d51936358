from ccoat.plotting import block_label


def test_block_label_counts_from_one():
    assert block_label("stages.0.blocks.1") == "s1.b2"
    assert block_label("stages.3.blocks.7") == "s4.b8"


def test_plot_intervals_draws_each_bar_from_low_to_high():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    from ccoat.plotting import plot_intervals

    fig, ax = plt.subplots()
    bars = plot_intervals([1.0, 1.5], [80.0, 70.0], [78.0, 69.0], [81.0, 73.0], ax=ax,
                          labels=["0.5", "0.25"])
    (segments,) = [c.get_segments() for c in bars.lines[2]]  # the vertical bars
    ends = np.array([[s[:, 1].min(), s[:, 1].max()] for s in segments])
    np.testing.assert_allclose(ends, [[78.0, 81.0], [69.0, 73.0]])
    assert [t.get_text() for t in ax.texts] == ["0.5", "0.25"]
    plt.close(fig)


def test_plot_intervals_refuses_a_point_outside_its_interval_or_unequal_lengths():
    import pytest

    from ccoat.plotting import plot_intervals

    with pytest.raises(ValueError, match=r"y = 82 outside \[78, 81\] at position 0"):
        plot_intervals([1.0], [82.0], [78.0], [81.0])
    with pytest.raises(ValueError, match="equally long"):
        plot_intervals([1.0, 2.0], [80.0], [78.0], [81.0])
    with pytest.raises(ValueError, match="2 points, 1 labels"):
        plot_intervals([1.0, 2.0], [80.0, 80.0], [78.0, 78.0], [81.0, 81.0], labels=["a"])
