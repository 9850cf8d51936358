"""Numbers in the book's prose: a chapter computes a value and :func:`glue` hands it to the page.

A Markdown cell writes the number as a link to the glued value and its format,
``[1.95](#speedup:.2f)``: the link's text is the number as the book's ``cpu`` build printed
it, so a plain notebook (Colab) reads "1.95"; the built book shows this build's value instead,
and a warnings-as-errors build fails where a number not marked ``"live"`` changed
(``book/_ext/glued_numbers.py``, which also writes the texts from a build).
"""
from __future__ import annotations


def glue(name: str, value, display: bool = False) -> None:
    """Place ``value`` in the book's prose, where a Markdown cell links to it by name and
    format: ``[1.95](#name:.2f)``. The link's text is the number as the book printed it, so a
    plain notebook (Colab) reads "1.95"; the book shows this build's value instead, and warns
    where a number that is not marked ``"live"`` changed (``book/_ext/glued_numbers.py``).

    In the book this is myst-nb's ``glue``. Where myst-nb is not installed (Colab), the value
    is printed under the cell instead, so the reader sees this run's value beside the book's.
    """
    if hasattr(value, "item") and getattr(value, "ndim", 0) == 0:
        value = value.item()  # numpy or torch scalar -> Python number: its text is the number
    try:
        from myst_nb import glue as myst_glue
    except ImportError:
        print(f"{name} = {value}")
        return
    myst_glue(name, value, display=display)
