"""Option checks (ccoat.checks): what "an integer" and "a number" are, and the message that names
what was expected and what came."""
import math

import pytest

from ccoat import (
    checks,
    clustering,
    cost,
    grid_clustering,
    hashing,
    measure,
    model,
    token_clustering,
)


@pytest.mark.parametrize("value, expected", [
    (3, True), (0, True), (-2, True), (True, False), (False, False), (3.0, False), ("3", False),
    (None, False),
])
def test_an_integer_is_an_int_and_not_a_bool(value, expected):
    assert checks.is_integer(value) is expected


@pytest.mark.parametrize("value, expected", [
    (3, True), (0.5, True), (-1e300, True), (True, False), (math.nan, False), (math.inf, False),
    (-math.inf, False), ("0.5", False), (None, False),
])
def test_a_number_is_finite_and_not_a_bool(value, expected):
    assert checks.is_number(value) is expected


@pytest.mark.parametrize("value", [True, False])
def test_a_bool_is_refused_for_an_integer(value):
    with pytest.raises(ValueError, match=rf"^n_hashes must be an integer >= 0, got {value}$"):
        checks.integer("n_hashes", value, 0)


def test_zero_under_minimum_one_is_refused_naming_the_value():
    with pytest.raises(ValueError, match=r"^dim must be an integer >= 1, got 0$"):
        checks.integer("dim", 0, 1)


@pytest.mark.parametrize("value", [2.0, 1.5, math.nan, "2"])
def test_floats_and_strings_are_refused_for_an_integer(value):
    with pytest.raises(ValueError, match=r"^steps must be an integer >= 1, got "):
        checks.integer("steps", value, 1)


def test_the_bounds_and_none_are_written_into_the_message():
    with pytest.raises(ValueError, match=r"^img_size must be an integer in \[1, 4096\], got 5000$"):
        checks.integer("img_size", 5000, 1, 4096)
    with pytest.raises(ValueError, match=r"^seed must be an integer, got '1'$"):
        checks.integer("seed", "1")
    with pytest.raises(ValueError, match=r"^max_clusters must be None or an integer >= 1, got 0$"):
        checks.integer("max_clusters", 0, 1, none=True)
    with pytest.raises(ValueError, match=r"^num_classes must be a whole number >= 0, got -1$"):
        checks.integer("num_classes", -1, 0, what="a whole number >= 0")


@pytest.mark.parametrize("value", [math.inf, -math.inf, math.nan, True, "0.5", None])
def test_infinity_nan_bools_and_strings_are_refused_for_a_number(value):
    with pytest.raises(ValueError, match=rf"^bucket_width must be a finite number, got "
                                         rf"{value!r}$"):
        checks.number("bucket_width", value)


def test_a_number_outside_its_bounds_is_refused_naming_the_bounds():
    with pytest.raises(ValueError, match=r"^temperature must be a finite number > 0, got 0$"):
        checks.number("temperature", 0, above=0)
    with pytest.raises(ValueError, match=r"^keep must be a number in \(0, 1\], got 1.5$"):
        checks.number("keep", 1.5, above=0, at_most=1)
    with pytest.raises(ValueError, match=r"^keep must be a fraction in \(0, 1\], got 0$"):
        checks.number("keep", 0, above=0, at_most=1, what="a fraction in (0, 1]")


@pytest.mark.parametrize("call, value", [
    (lambda v: checks.integer("n", v, 1), 1),
    (lambda v: checks.integer("n", v, 1, 4096), 4096),
    (lambda v: checks.integer("n", v), -7),
    (lambda v: checks.integer("n", v, 1, none=True), None),
    (lambda v: checks.number("x", v, above=0), 1e-12),
    (lambda v: checks.number("x", v, above=0, at_most=1), 1),
    (lambda v: checks.number("x", v), -2.5),
])
def test_a_good_value_is_returned_unchanged(call, value):
    result = call(value)
    assert result is value  # the same object: no conversion (an int stays an int)


@pytest.mark.parametrize("error, said", [
    (OSError(30, "cannot make or write the folder 'out' (Read-only file system)"),
     "cannot make or write the folder 'out' (Read-only file system)"),  # no "[Errno 30]"
    (FileNotFoundError(2, "No such file or directory", "x.json"),
     "[Errno 2] No such file or directory: 'x.json'"),  # the file name kept
    (ValueError("batch_size must be an integer >= 1, got 0"),
     "batch_size must be an integer >= 1, got 0"),
    (FileExistsError("runs/sweep.json already exist(s)"), "runs/sweep.json already exist(s)"),
])
def test_one_line_is_the_message_without_an_errno(error, said):
    assert checks.one_line(error) == said


def _never():
    pass


@pytest.mark.parametrize("call, message", [
    (lambda: hashing.check_hash_options(True, 4.0), "n_hashes must be an integer >= 1, got True"),
    (lambda: hashing.E2LSH(True), "dim must be an integer >= 1, got True"),
    (lambda: clustering.ClusteredCore(8, max_clusters=True),
     "max_clusters must be None or an integer >= 1, got True"),
    (lambda: grid_clustering.check_grid_options({"steps": True}),
     r"steps \(rounds of the local k-means\) must be an integer >= 1, got True"),
    (lambda: grid_clustering.check_grid_options({"temperature": True}),
     "temperature must be a finite number > 0, got True"),
    (lambda: token_clustering.check_token_clustering("pool", True, (1,)),
     r"keep must be a fraction in \(0, 1\], got True"),
    (lambda: token_clustering.check_token_clustering("pool", 0.5, (True,)),
     "stages must be stage numbers from 1 to 4"),
    (lambda: model.CoaTLite(model.CONFIGS["tiny"], num_classes=True),
     "num_classes must be a whole number >= 0, got True"),
    (lambda: cost.as_hw(True), "img_size must be an int or a pair"),
    (lambda: measure.alternate({"a": _never}, True),
     "repeats must be an integer >= 1 and warmup >= 0, got True"),
])
def test_every_caller_refuses_a_bool_for_a_count(call, message):
    """``True`` is an ``int`` to Python; each module that takes a count refuses it through
    :mod:`ccoat.checks`, with the message it has always given."""
    with pytest.raises(ValueError, match=message):
        call()
