"""How sure a measured accuracy is: bootstrap intervals over the test images.

A top-1 accuracy measured on ``n`` test images is one draw: another ``n`` images from the same
distribution would give another number. The percentile bootstrap resamples the per-image
results (hit or miss) with replacement and reads the spread of the resampled accuracies.

Two models scored on the *same* images are compared pairwise (:func:`paired_difference`): the
bootstrap resamples images, not each model's results apart, so what both get right or both get
wrong cancels, and McNemar's exact test asks whether the images only one of them gets right
split more unevenly than a fair coin would. Whether two unpaired intervals overlap
(:func:`distinguishable`) is kept only for runs scored on different images.
"""
from __future__ import annotations

import math
from typing import NamedTuple

import torch


def bootstrap_interval(hits, confidence: float = 0.95, resamples: int = 2000,
                       seed: int = 0) -> tuple[float, float]:
    """Percentile-bootstrap interval (in %) of the mean of ``hits`` (one 0/1 value per image).

    >>> lo, hi = bootstrap_interval([1] * 900 + [0] * 100)  # 90% on 1,000 images
    >>> 87.9 < lo < 90 < hi < 91.9
    True
    """
    hits = torch.as_tensor(hits, dtype=torch.float64).flatten()
    if hits.numel() == 0:
        raise ValueError("bootstrap_interval needs at least one result, got none")
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    if resamples < 1:
        raise ValueError(f"resamples must be positive, got {resamples}")
    generator = torch.Generator().manual_seed(seed)
    means = torch.empty(resamples, dtype=torch.float64)
    chunk = max(1, 2**22 // hits.numel())  # bound the memory of one block of resamples
    for start in range(0, resamples, chunk):
        stop = min(start + chunk, resamples)
        idx = torch.randint(hits.numel(), (stop - start, hits.numel()), generator=generator)
        means[start:stop] = hits[idx].mean(dim=1)
    tail = (1 - confidence) / 2
    lo, hi = torch.quantile(means, torch.tensor([tail, 1 - tail], dtype=torch.float64)).tolist()
    return 100.0 * lo, 100.0 * hi


def accuracy_interval(top1: float, images: int, confidence: float = 0.95,
                      resamples: int = 2000, seed: int = 0) -> tuple[float, float]:
    """:func:`bootstrap_interval` of a top-1 accuracy (in %) known only as a number, for a run
    scored before its per-image results were kept. The bootstrap distribution of a mean of 0/1
    results depends only on how many are 1, so the interval is that of the per-image results
    up to the resampling noise (a few hundredths of a point at 2,000 resamples)."""
    if not isinstance(images, int) or images < 1:
        raise ValueError(f"images must be a positive integer, got {images!r}")
    hits = round(top1 / 100 * images)
    if not 0 <= top1 <= 100 or abs(100 * hits / images - top1) > 1e-6:
        raise ValueError(f"top1 {top1!r}% is not a count of hits among {images} images")
    return bootstrap_interval([1.0] * hits + [0.0] * (images - hits), confidence, resamples, seed)


def distinguishable(a: float, interval_a: tuple[float, float], b: float,
                    interval_b: tuple[float, float]) -> bool:
    """Whether two accuracies differ by more than their intervals: neither point estimate lies
    inside the other's interval. A difference inside an interval is called noise."""
    return not (interval_a[0] <= b <= interval_a[1] or interval_b[0] <= a <= interval_b[1])


class PairedDifference(NamedTuple):
    """Model a minus model b on the same images, in points of accuracy."""
    delta: float  # accuracy of a - accuracy of b (points)
    low: float  # the paired bootstrap interval of delta (points)
    high: float
    p_value: float  # exact two-sided McNemar test
    a_only: int  # images a gets right and b wrong
    b_only: int  # images b gets right and a wrong
    images: int

    def __str__(self) -> str:
        return (f"\u0394 = {self.delta:+.1f} points [{self.low:+.1f}, {self.high:+.1f}], "
                f"McNemar p = {self.p_value:.2g}").replace("-", "\u2212")


def mcnemar_p(a_only: int, b_only: int) -> float:
    """Exact two-sided McNemar p-value: the chance that a fair coin, flipped once for each image
    exactly one model gets right, splits them at least as unevenly as ``a_only : b_only``.

    >>> mcnemar_p(0, 0), round(mcnemar_p(10, 0), 4), mcnemar_p(5, 5)
    (1.0, 0.002, 1.0)
    """
    if a_only < 0 or b_only < 0:
        raise ValueError(f"counts must be non-negative, got {a_only} and {b_only}")
    n, k = a_only + b_only, min(a_only, b_only)
    if n == 0:
        return 1.0
    tail = sum(math.comb(n, i) for i in range(k + 1))  # P(X <= k), X ~ Binomial(n, 1/2), times 2^n
    return min(1.0, 2 * tail / 2**n)


def paired_difference(hits_a, hits_b, *, confidence: float = 0.95, resamples: int = 2000,
                      seed: int = 0) -> PairedDifference:
    """Accuracy of a minus accuracy of b (points) on the same images, with its paired bootstrap
    interval and McNemar's exact p-value. ``hits_a[i]`` says whether model a got image i right.

    >>> a = [1] * 900 + [0] * 100          # 90.0%
    >>> b = [1] * 880 + [0] * 120          # 88.0%: the same images, minus 20 of a's hits
    >>> d = paired_difference(a, b)
    >>> d.delta, d.a_only, d.b_only, d.p_value < 1e-5, 1 < d.low < 2 < d.high < 3
    (2.0, 20, 0, True, True)
    """
    a = torch.as_tensor(hits_a).flatten().to(torch.float64)
    b = torch.as_tensor(hits_b).flatten().to(torch.float64)
    if a.numel() != b.numel():
        raise ValueError(f"paired_difference needs one result per image from each model, on the "
                         f"same images: got {a.numel()} and {b.numel()} results")
    if a.numel() == 0:
        raise ValueError("paired_difference needs at least one image, got none")
    for name, hits in (("hits_a", a), ("hits_b", b)):
        if not bool(((hits == 0) | (hits == 1)).all()):
            raise ValueError(f"{name} must hold 0/1 (or False/True) per image, got other values")
    low, high = bootstrap_interval(a - b, confidence, resamples, seed)
    a_only, b_only = int(((a == 1) & (b == 0)).sum()), int(((a == 0) & (b == 1)).sum())
    delta = 100 * (int(a.sum()) - int(b.sum())) / a.numel()  # exact for counts of hits
    return PairedDifference(delta, low, high,
                            mcnemar_p(a_only, b_only), a_only, b_only, a.numel())
