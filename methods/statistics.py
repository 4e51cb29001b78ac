"""Uncertainty of accuracy differences on NumPy arrays: a paired bootstrap over videos.

Two methods classify the same videos; ``correct_a[i]`` and ``correct_b[i]`` say how video i fared under each (0/1,
or a fraction such as the mean over Random's seeds). The bootstrap resamples videos, so a video that one method gets
right and the other wrong moves both accuracies together: the interval is of the *paired* difference.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np

__all__ = ["BootstrapInterval", "paired_bootstrap_ci"]


class BootstrapInterval(NamedTuple):
    """``difference`` = mean(a) - mean(b) on the data; [``low``, ``high``] its percentile interval."""

    difference: float
    low: float
    high: float
    confidence: float
    resamples: int
    samples: int


def paired_bootstrap_ci(correct_a: Any, correct_b: Any, *, resamples: int = 2000, seed: int = 0,
                        confidence: float = 0.95) -> BootstrapInterval:
    """Percentile bootstrap interval of mean(a) - mean(b), resampling the n paired items with replacement.

    Each resample draws n items with replacement, the same items for a and b, and takes the mean of d = a - b over
    them; the interval is the (1 - confidence) / 2 and (1 + confidence) / 2 percentiles of those means (NumPy's
    linear interpolation). A resample's mean depends only on how many times each distinct value of d was drawn,
    and those counts follow a multinomial law with the values' frequencies as probabilities, so they are drawn
    directly (``numpy.random.default_rng(seed).multinomial``): the same distribution as drawing n indices, at a
    cost independent of n (d takes at most 3 values for 0/1 correctness).

    >>> paired_bootstrap_ci([1, 0, 1], [1, 0, 1])[:3]  # identical results: no difference, no spread
    (0.0, 0.0, 0.0)
    >>> paired_bootstrap_ci([1, 1, 1, 1], [0, 0, 0, 0])[:3]  # a constant shift: exactly that shift
    (1.0, 1.0, 1.0)
    """
    a = np.asarray(correct_a, dtype=np.float64).ravel()
    b = np.asarray(correct_b, dtype=np.float64).ravel()
    if a.shape != b.shape:
        raise ValueError(f"paired samples need the same length, got {a.size} and {b.size}")
    if a.size == 0:
        raise ValueError("no samples to resample")
    if not (np.isfinite(a).all() and np.isfinite(b).all()):
        raise ValueError("samples contain NaN or infinity")
    if resamples < 1:
        raise ValueError(f"resamples must be >= 1, got {resamples}")
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    d = a - b
    values, counts = np.unique(d, return_counts=True)
    drawn = np.random.default_rng(seed).multinomial(d.size, counts / d.size, size=resamples)
    means = drawn @ values / d.size
    tail = (1.0 - confidence) / 2.0
    low, high = np.percentile(means, [100.0 * tail, 100.0 * (1.0 - tail)])
    return BootstrapInterval(float(d.mean()), float(low), float(high), confidence, resamples, int(d.size))
