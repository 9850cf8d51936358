"""ccoat.prose: a computed number handed to the page, or printed where there is no book."""


def test_glue_prints_the_value_where_myst_nb_is_missing(monkeypatch, capsys):
    import builtins

    from ccoat.prose import glue

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

    from ccoat.prose import glue

    stored = {}
    fake = types.ModuleType("myst_nb")
    fake.glue = lambda name, value, display=True: stored.update({name: value})
    monkeypatch.setitem(sys.modules, "myst_nb", fake)
    glue("a", np.float64(0.5))
    glue("b", torch.tensor(3))
    assert stored == {"a": 0.5, "b": 3} and type(stored["a"]) is float and type(stored["b"]) is int
