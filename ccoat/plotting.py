"""One figure theme for the whole book, and the figures the library draws (a cost audit's
stacked bars, a cost sweep's lines, accuracies with their intervals). Numbers in the prose are
:mod:`ccoat.prose`'s."""
from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import seaborn as sns

from .clustering import block_index
from .cost import COMPONENTS

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
    stage, block = block_index(name)
    return f"s{stage + 1}.b{block + 1}"


# One colour per component in every figure: the attention core red, the clustering steps greens.
COMPONENT_COLORS = {
    "patch_embed": "#4c72b0", "cpe": "#a1c9f4", "norm": "#b0b0b0", "qkv": "#dd8452",
    "hashing": "#1b7837", "clustering": "#5aae61", "prototypes": "#a6dba0",
    "attention": "#c44e52", "broadcast": "#00441b", "crpe": "#8172b3", "proj": "#937860",
    "mlp": "#64b5cd", "residual": "#6e6e6e", "head": "#ccb974", "other": "#e0e0e0",
}


def plot_components(table, value: str = "macs", ax=None, title: str | None = None):
    """Stacked bars: one bar per stage, one segment per component (``table`` from
    :func:`ccoat.cost.audit` or several audits concatenated with a ``label`` column, which then
    gives one bar each)."""
    by = "label" if "label" in table.columns else "stage"
    pivot = table.pivot_table(index=by, columns="component", values=value, aggfunc="sum",
                              sort=False).fillna(0)
    pivot = pivot[[c for c in COMPONENTS if c in pivot.columns and pivot[c].sum() > 0]]
    ax = ax or plt.gca()
    bottom = None
    colors = COMPONENT_COLORS
    scale, unit = (1e9, "G") if pivot.values.max() > 1e8 else (1e6, "M")
    for component in pivot.columns:
        values = pivot[component].to_numpy() / scale
        ticks = [str(i).replace("stage", "") for i in pivot.index]  # "stage1" -> "1"
        ax.bar(ticks, values, bottom=bottom, label=component, color=colors[component])
        bottom = values if bottom is None else bottom + values
    names = {"macs": "multiply-accumulates", "ops": "other operations", "params": "parameters"}
    ax.set_ylabel(f"{names.get(value, value)} ({unit})")
    ax.set_xlabel(by)
    ax.legend(bbox_to_anchor=(1.0, 1.0), loc="upper left", fontsize="small")
    if title:
        ax.set_title(title)
    return ax


def plot_sweep(rows, metric: str = "fwd_s", ax=None, model: str | None = None,
               batch_size: int = 1, logy: bool = True, label: str | None = None):
    """One line per attention kind of a cost sweep's ``rows`` (:func:`ccoat.sweep.load`):
    ``metric`` against input resolution."""
    ax = ax or plt.gca()
    sel = rows[rows.batch_size == batch_size]
    if model is not None:
        sel = sel[sel.model == model]
    for kind, group in sel.groupby("kind", sort=False):
        group = group.dropna(subset=[metric]).sort_values("img_size")
        ax.plot(group.img_size, group[metric], marker="o", label=kind,
                color=KIND_COLORS.get(kind))
    labels = {"fwd_s": "forward time (s)", "train_s": "forward + backward time (s)",
              "macs": "MACs", "ops": "other operations", "fwd_img_s": "forward images/s",
              "train_img_s": "training images/s", "peak_mem_fwd_bytes": "peak memory, forward (bytes)",
              "peak_mem_train_bytes": "peak memory, training (bytes)"}
    ax.set_xlabel("input resolution (px)")
    ax.set_ylabel(label or labels.get(metric, metric))
    if logy:
        ax.set_yscale("log")
    ax.legend()
    return ax


def plot_intervals(x, y, low, high, ax=None, labels=None, **style):
    """Points ``(x, y)`` with a vertical bar from ``low`` to ``high`` at each: an accuracy and
    its 95% interval against a speed, say. ``labels`` (one text per point, e.g. a budget) are
    written beside the points; ``style`` goes to ``ax.errorbar`` (``fmt``, ``label``, colours).

    Matplotlib's ``errorbar`` takes the bars as distances below and above each point; an
    interval comes as its two ends, and a point outside its own interval would draw a bar
    pointing the wrong way without complaint, so that is refused here. Returns the errorbar
    container (its ``lines[0]`` carries the colour, for drawing more in the same one)."""
    x, y, low, high = (np.atleast_1d(np.asarray(v, dtype=float)) for v in (x, y, low, high))
    if not x.shape == y.shape == low.shape == high.shape or x.ndim != 1:
        raise ValueError(f"x, y, low and high must be equally long sequences, got shapes "
                         f"{x.shape}, {y.shape}, {low.shape} and {high.shape}")
    outside = ~((low <= y) & (y <= high))
    if outside.any():
        i = int(np.flatnonzero(outside)[0])
        raise ValueError(f"every point must lie inside its interval, got y = {y[i]:g} outside "
                         f"[{low[i]:g}, {high[i]:g}] at position {i}")
    if labels is not None and len(labels) != len(x):
        raise ValueError(f"labels must give one text per point: {len(x)} points, "
                         f"{len(labels)} labels")
    ax = ax or plt.gca()
    style = {"fmt": "o", "capsize": 3, **style}
    bars = ax.errorbar(x, y, yerr=[y - low, high - y], **style)
    for xi, yi, text in zip(x, y, labels if labels is not None else []):
        ax.annotate(str(text), (xi, yi), textcoords="offset points", xytext=(5, -10),
                    fontsize=7)
    return bars
