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


def test_paired_difference_counts_the_images_only_one_model_gets_right():
    from ccoat.stats import paired_difference

    a = torch.tensor([1] * 60 + [0] * 30 + [1] * 10)  # 70%
    b = torch.tensor([1] * 60 + [0] * 30 + [0] * 10)  # 60%: a's hits less the last ten
    d = paired_difference(a, b)
    assert (d.delta, d.a_only, d.b_only, d.images) == (10.0, 10, 0, 100)
    assert round(d.p_value, 6) == round(2 / 2**10, 6)  # ten heads in ten fair flips, two-sided
    assert 0 < d.low < d.delta < d.high
    # swapping the models flips the sign and keeps the test
    e = paired_difference(b, a)
    assert (e.delta, e.p_value) == (-10.0, d.p_value) and e.high < 0


def test_pairing_sees_a_difference_the_unpaired_intervals_cannot():
    """Two models that agree on all but 20 of 2,000 images, which only a gets right: their
    unpaired intervals overlap (1 point apart, each about +-2 points), the pairing is sure."""
    from ccoat.stats import bootstrap_interval, distinguishable, paired_difference

    b = (torch.arange(2000) % 2 == 0).double()  # 50%
    a = b.clone()
    a[1:40:2] = 1  # 20 more hits: 51%
    assert not distinguishable(51.0, bootstrap_interval(a), 50.0, bootstrap_interval(b))
    d = paired_difference(a, b)
    assert d.low > 0 and d.p_value < 1e-5


def test_identical_models_differ_by_nothing():
    from ccoat.stats import paired_difference

    hits = torch.rand(500, generator=torch.Generator().manual_seed(0)) < 0.8
    d = paired_difference(hits, hits)
    assert (d.delta, d.low, d.high, d.p_value) == (0.0, 0.0, 0.0, 1.0)


def test_mcnemar_matches_the_binomial_tail():
    from scipy.stats import binomtest

    from ccoat.stats import mcnemar_p

    for a_only, b_only in [(3, 12), (40, 25), (7, 7), (0, 5), (120, 90)]:
        expected = binomtest(a_only, a_only + b_only, 0.5).pvalue
        assert abs(mcnemar_p(a_only, b_only) - expected) < 1e-12


@pytest.mark.parametrize("a, b, message", [
    ([1, 0, 1], [1, 0], "got 3 and 2 results"), ([], [], "at least one image"),
    ([1, 2], [1, 0], "0/1"),
])
def test_paired_difference_names_bad_input(a, b, message):
    from ccoat.stats import paired_difference

    with pytest.raises(ValueError, match=message):
        paired_difference(a, b)
