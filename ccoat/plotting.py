"""One figure theme for the whole book, and small plotting helpers the notebooks share."""
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
