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
