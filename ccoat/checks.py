"""Option checks: the one place that says what "an integer" and "a number" are.

Python's ``bool`` is an ``int`` (``True + True == 2``), so ``isinstance(value, int)`` lets
``True`` through as a count of one; and ``float("nan")`` passes no comparison, so ``nan > 0`` is
False but ``not nan <= 0`` is True. Every module that takes a count, a size or a width checks it
here, so that a bool is refused as a number everywhere and NaN and infinity everywhere a finite
number is meant.

:func:`is_integer` and :func:`is_number` answer the question; :func:`integer` and
:func:`number` raise ``ValueError("NAME must be WHAT, got VALUE")`` and otherwise return the
value unchanged. :func:`one_line` is how a command line (``ccoat.train``, ``ccoat.sweep``) says
such a refusal, or a file it cannot write, after ``error:``. This module imports nothing from
ccoat, so every room of the library (the paper's concepts and the instruments alike) may use it.
"""
from __future__ import annotations

import math


def is_integer(value) -> bool:
    """An ``int`` that is not a ``bool``."""
    return isinstance(value, int) and not isinstance(value, bool)


def is_number(value) -> bool:
    """A finite ``int`` or ``float`` that is not a ``bool`` (NaN and infinity are not)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def integer(name: str, value, minimum: int | None = None, maximum: int | None = None, *,
            none: bool = False, what: str | None = None):
    """``value`` if it is an integer in ``[minimum, maximum]`` (either bound may be left out;
    ``None`` too where ``none``), else ``ValueError("NAME must be WHAT, got VALUE")``. ``what``
    replaces the description written from the bounds ("an integer >= 1")."""
    if none and value is None:
        return value
    if is_integer(value) and (minimum is None or value >= minimum) and \
            (maximum is None or value <= maximum):
        return value
    if what is None:
        what = "None or an integer" if none else "an integer"
        if minimum is not None and maximum is not None:
            what += f" in [{minimum}, {maximum}]"
        elif minimum is not None:
            what += f" >= {minimum}"
        elif maximum is not None:
            what += f" <= {maximum}"
    raise ValueError(f"{name} must be {what}, got {value!r}")


def number(name: str, value, above: float | None = None, at_most: float | None = None, *,
           what: str | None = None):
    """``value`` if it is a finite number ``> above`` and ``<= at_most`` (either bound may be
    left out), else ``ValueError("NAME must be WHAT, got VALUE")``. ``what`` replaces the
    description written from the bounds ("a finite number > 0")."""
    if is_number(value) and (above is None or value > above) and \
            (at_most is None or value <= at_most):
        return value
    if what is None:
        what = "a finite number"
        if above is not None and at_most is not None:
            what = f"a number in ({above}, {at_most}]"
        elif above is not None:
            what += f" > {above}"
        elif at_most is not None:
            what = f"a number <= {at_most}"
    raise ValueError(f"{name} must be {what}, got {value!r}")


def one_line(error: Exception) -> str:
    """The error's message, without the ``[Errno N]`` that ``str`` puts before an ``OSError``
    whose message already says what failed (kept where the file name is apart from it)."""
    if isinstance(error, OSError) and error.strerror and error.filename is None:
        return error.strerror
    return str(error)
