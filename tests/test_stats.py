"""ccoat.stats: bootstrap intervals of an accuracy, and when two accuracies differ."""
import pytest
import torch

from ccoat.stats import bootstrap_interval, distinguishable


def test_interval_contains_the_estimate_and_matches_the_binomial_width():
    hits = torch.zeros(10_000)
    hits[:8_000] = 1
    lo, hi = bootstrap_interval(hits)
    assert lo < 80.0 < hi
    # normal approximation of a binomial proportion: 1.96 * sqrt(p (1 - p) / n) = 0.78 points
    assert (hi - lo) / 2 == pytest.approx(1.96 * (0.8 * 0.2 / 10_000) ** 0.5 * 100, rel=0.1)


def test_interval_shrinks_with_more_images_and_is_reproducible():
    small = bootstrap_interval([1, 0] * 250)
    large = bootstrap_interval([1, 0] * 5000)
    assert large[1] - large[0] < small[1] - small[0]
    assert bootstrap_interval([1, 0] * 250, seed=1) == bootstrap_interval([1, 0] * 250, seed=1)


def test_all_hits_give_a_point_interval():
    assert bootstrap_interval(torch.ones(100)) == (100.0, 100.0)


@pytest.mark.parametrize("kwargs, message", [
    (dict(hits=[]), "at least one"), (dict(hits=[1], confidence=1.0), "confidence"),
    (dict(hits=[1], resamples=0), "resamples"),
])
def test_bad_input_is_named(kwargs, message):
    with pytest.raises(ValueError, match=message):
        bootstrap_interval(**kwargs)


def test_distinguishable_only_outside_both_intervals():
    assert distinguishable(87.0, (86.5, 87.5), 85.0, (84.5, 85.5))
    assert not distinguishable(87.0, (86.0, 88.0), 86.5, (86.0, 87.0))


def test_an_accuracy_known_as_a_number_has_the_interval_of_its_hits():
    from ccoat.stats import accuracy_interval, bootstrap_interval

    hits = torch.zeros(2000)
    hits[torch.randperm(2000, generator=torch.Generator().manual_seed(1))[:1100]] = 1
    interval = accuracy_interval(55.0, 2000)
    assert interval == bootstrap_interval(hits.sort(descending=True).values)
    # the per-image order changes only the resampling noise
    assert all(abs(a - b) < 0.25 for a, b in zip(interval, bootstrap_interval(hits)))
    with pytest.raises(ValueError, match="not a count of hits among 3 images"):
        accuracy_interval(50.0, 3)
    with pytest.raises(ValueError, match="positive integer"):
        accuracy_interval(50.0, 0)
