"""How sure a measured accuracy is: bootstrap intervals over the test images.

A top-1 accuracy measured on ``n`` test images is one draw: another ``n`` images from the same
distribution would give another number. The percentile bootstrap resamples the per-image
results (hit or miss) with replacement and reads the spread of the resampled accuracies; two
models whose intervals overlap the other's point estimate differ by less than the test set can
tell apart (:func:`distinguishable`).
"""
from __future__ import annotations

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
