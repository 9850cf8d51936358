from ccoat.plotting import block_label


def test_block_label_counts_from_one():
    assert block_label("stages.0.blocks.1") == "s1.b2"
    assert block_label("stages.3.blocks.7") == "s4.b8"


def test_glue_prints_the_value_where_myst_nb_is_missing(monkeypatch, capsys):
    import builtins

    from ccoat.plotting import glue

    real_import = builtins.__import__

    def no_myst_nb(name, *args, **kwargs):
        if name.startswith("myst_nb"):
            raise ImportError(name)
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_myst_nb)
    glue("ratio", 2.5)
    assert capsys.readouterr().out == "ratio = 2.5\n"


def test_glue_stores_numpy_and_torch_scalars_as_plain_numbers(monkeypatch):
    import sys
    import types

    import numpy as np
    import torch

    from ccoat.plotting import glue

    stored = {}
    fake = types.ModuleType("myst_nb")
    fake.glue = lambda name, value, display=True: stored.update({name: value})
    monkeypatch.setitem(sys.modules, "myst_nb", fake)
    glue("a", np.float64(0.5))
    glue("b", torch.tensor(3))
    assert stored == {"a": 0.5, "b": 3} and type(stored["a"]) is float and type(stored["b"]) is int


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
