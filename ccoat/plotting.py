"""One figure theme for the whole book, and small helpers the notebooks share to show results:
plotting, and :func:`glue`, which places a computed number in the prose of the built book."""
from __future__ import annotations

import matplotlib.pyplot as plt
import seaborn as sns

# Colours by attention kind, the same in every chapter.
KIND_COLORS = {
    "factorized": "#1b9e77",
    "softmax": "#d95f02",
    "clustered": "#7570b3",
    "clustered_factorized": "#e7298a",
}


def set_theme() -> None:
    """The book's look: seaborn's whitegrid, a colour-blind-safe palette, readable sizes."""
    sns.set_theme(context="notebook", style="whitegrid", palette="colorblind")
    plt.rcParams.update({
        "figure.figsize": (7.0, 4.0),
        "figure.dpi": 100,
        "savefig.dpi": 150,
        "axes.titleweight": "bold",
        "axes.spines.top": False,
        "axes.spines.right": False,
        "legend.frameon": False,
    })


def block_label(name: str) -> str:
    """``"stages.0.blocks.1"`` -> ``"s1.b2"``: stages and blocks counted from 1, as in the text."""
    parts = name.split(".")
    return f"s{int(parts[1]) + 1}.b{int(parts[3]) + 1}"


def glue(name: str, value, display: bool = False) -> None:
    """Place ``value`` in the book's prose, where a Markdown cell writes
    ``{glue:text}`name:.2f```; the number stays computed, the prose stays prose.

    In the book this is myst-nb's ``glue``. Where myst-nb is not installed (Colab), the value
    is printed under the cell instead, so the reader still sees it.
    """
    if hasattr(value, "item") and getattr(value, "ndim", 0) == 0:
        value = value.item()  # numpy or torch scalar -> Python number: its text is the number
    try:
        from myst_nb import glue as myst_glue
    except ImportError:
        print(f"{name} = {value}")
        return
    myst_glue(name, value, display=display)
