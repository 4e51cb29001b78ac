"""A video's class from per-clip class probabilities: the argmax of their mean over the video's chosen clips.

One definition for everything that turns clips into a video prediction (the samplers, training's evaluation,
``infer``), so they agree to the bit: the chosen rows are taken in clip order, summed in float64 with
``np.add.reduceat`` and divided by their count; the argmax takes the first maximum (``np.argmax``). NumPy only.

Videos are CSR-style: ``offsets`` (V + 1,) says that video v owns rows ``offsets[v]:offsets[v + 1]``.
"""

from __future__ import annotations

import numpy as np

__all__ = ["video_mean_probs", "video_predictions", "segment_means"]


def segment_means(rows: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """(V, C) float64 means of consecutive segments of ``rows`` (M, C) with the given positive lengths (V,)."""
    counts = np.asarray(counts, dtype=np.int64)
    if len(counts) == 0:
        return np.zeros((0,) + np.shape(rows)[1:], dtype=np.float64)
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    return np.add.reduceat(np.asarray(rows, dtype=np.float64), starts, axis=0) / counts[:, None]


def video_mean_probs(probs: np.ndarray, offsets: np.ndarray, mask: np.ndarray | None = None) -> np.ndarray:
    """(V, C) float64 mean of ``probs`` (M, C) over each video's chosen clips: those where ``mask`` (M,) is true,
    or all of them without a mask. ValueError if a video has no chosen clip.

    >>> video_mean_probs(np.array([[0.6, 0.4], [0.1, 0.9], [0.7, 0.3]]), np.array([0, 2, 3]))
    array([[0.35, 0.65],
           [0.7 , 0.3 ]])
    """
    probs = np.asarray(probs)
    offsets = np.asarray(offsets)
    if probs.ndim != 2:
        raise ValueError(f"probs must be (M, C), got shape {probs.shape}")
    if (offsets.ndim != 1 or len(offsets) < 1 or not np.issubdtype(offsets.dtype, np.integer)
            or offsets[0] != 0 or offsets[-1] != len(probs) or (np.diff(offsets) <= 0).any()):
        raise ValueError(f"offsets must be an increasing 1-D integer array from 0 to {len(probs)} (V + 1 values: "
                         "every video has a clip)")
    starts = offsets[:-1].astype(np.int64)
    if mask is None:
        rows, counts = probs, np.diff(offsets).astype(np.int64)
    else:
        mask = np.asarray(mask, dtype=bool)
        if mask.shape != (len(probs),):
            raise ValueError(f"mask must have shape ({len(probs)},), got {mask.shape}")
        rows = probs[np.flatnonzero(mask)]
        counts = np.add.reduceat(mask.astype(np.int64), starts) if len(mask) else np.zeros(0, np.int64)
    if (counts == 0).any():  # reduceat would give such a video its neighbour's first row
        raise ValueError("every video needs at least one selected clip")
    return segment_means(rows, counts)


def video_predictions(probs: np.ndarray, offsets: np.ndarray, mask: np.ndarray | None = None) -> np.ndarray:
    """(V,) int64 class of every video: the argmax (first maximum) of :func:`video_mean_probs`.

    >>> video_predictions(np.array([[0.6, 0.4], [0.1, 0.9], [0.7, 0.3]]), np.array([0, 2, 3]), [True, False, True])
    array([0, 0])
    """
    means = video_mean_probs(probs, offsets, mask)
    return means.argmax(axis=1) if len(means) else np.zeros(0, dtype=np.int64)
