"""Video predictions and clip rankings, vectorised over videos.

Clips of a split sit in flat arrays with CSR offsets (video v owns clips ``offsets[v]:offsets[v + 1]``); a
video's prediction is the argmax of the mean softmax of its chosen clips. The only Python loops are over blocks of
videos and positions within a video (to bound memory), never over videos.
"""

from __future__ import annotations

from typing import Any, Callable, Iterable, Optional

import numpy as np

from condi_pipe.methods import samplers
from condi_pipe.methods.video_time import timed
from condi_pipe.report.inputs import OutputUnavailable, ReportInputs, ScoreRunOutputs

BLOCK_CLIPS = 1 << 18  # rows per block of the in-place softmax
BLOCK_VIDEOS = 1 << 16  # videos per block when averaging chosen softmax rows (bounds the float64 sums)


def softmax_inplace(x: np.ndarray) -> np.ndarray:
    """Row softmax of a float32 (M, C) array, in place, block by block."""
    for lo in range(0, len(x), BLOCK_CLIPS):
        block = x[lo : lo + BLOCK_CLIPS]
        block -= block.max(axis=1, keepdims=True)
        np.exp(block, out=block)
        block /= block.sum(axis=1, keepdims=True)
    return x


def mean_argmax(vectors: Callable[[np.ndarray], np.ndarray], order: np.ndarray, starts: np.ndarray,
                 lengths: np.ndarray, snapshots: Iterable[int]) -> dict[int, np.ndarray]:
    """Video predictions, vectorised over videos: the argmax of the mean of each video's first s vectors.

    Video v's clips, in the order they are added, are ``order[starts[v] + j]`` for j < ``lengths[v]``;
    ``vectors(rows)`` gives their vectors. For every s in ``snapshots`` the result holds, per video, the argmax of
    the mean of its first min(s, lengths[v]) vectors. The vectors are summed one position j at a time into float64
    sums (videos sorted by length, so the videos still active at step j are a prefix: no scatter), which is the
    arithmetic of :func:`samplers.predict_videos` (sequential float64 sums divided by the count) done ~10x faster
    than its ``np.add.reduceat``. With ``order`` in index order the predictions equal samplers' bit for bit; with
    ``order`` in rank order one pass gives every K of a top-K selection. Loops: blocks of videos x positions j.
    """
    lengths = np.asarray(lengths, dtype=np.int64)
    starts = np.asarray(starts, dtype=np.int64)
    if (lengths <= 0).any():
        raise ValueError("every video needs at least one selected clip")
    snaps = sorted({int(s) for s in snapshots})
    out = {s: np.empty(len(lengths), dtype=np.int64) for s in snaps}

    def block(v0: int, v1: int) -> None:
        videos = v0 + np.argsort(-lengths[v0:v1], kind="stable")
        lens, first = lengths[videos], starts[videos]
        steps = min(snaps[-1], int(lens[0]))
        active = np.searchsorted(-lens, -np.arange(steps + 1), side="left")  # videos with more than j clips
        sums: Optional[np.ndarray] = None
        done = 0  # snapshot taken after this many steps: videos with at most `done` clips are final since then
        preds = np.empty(len(videos), dtype=np.int64)
        for j in range(steps):
            n = int(active[j])
            values = vectors(order[first[:n] + j])
            if sums is None:
                sums = np.zeros((len(videos), values.shape[1]), dtype=np.float64)
            sums[:n] += values
            if j + 1 in out or j + 1 == steps:
                changed = int(active[done]) if done else len(videos)  # videos that gained a clip since
                preds[:changed] = (sums[:changed] / np.minimum(lens[:changed], j + 1)[:, None]).argmax(axis=1)
                done = j + 1
                for s in snaps:
                    if s == j + 1 or (j + 1 == steps and s > steps):
                        out[s][videos] = preds

    for v0 in range(0, len(lengths), BLOCK_VIDEOS):
        block(v0, min(v0 + BLOCK_VIDEOS, len(lengths)))
    return out


def rank_order(ranks: np.ndarray, offsets: np.ndarray, owner: np.ndarray) -> np.ndarray:
    """Clip indices grouped by video, each video's clips in rank order (the inverse of the within-video ranks)."""
    order = np.empty(len(ranks), dtype=np.int64)
    order[offsets[owner] + ranks] = np.arange(len(ranks))
    return order


def mask_predictions(probs: np.ndarray, owner: np.ndarray, num_videos: int, mask: np.ndarray) -> np.ndarray:
    """:func:`samplers.predict_videos` (same numbers): argmax of the mean teacher softmax of the masked clips."""
    chosen = np.flatnonzero(mask)
    counts = np.bincount(owner[chosen], minlength=num_videos)
    starts = np.cumsum(counts) - counts
    return mean_argmax(lambda rows: probs[rows], chosen, starts, counts, [int(counts.max(initial=1))]).popitem()[1]


def division_predictions(teacher: np.ndarray, student: np.ndarray, owner: np.ndarray, num_videos: int,
                          in_teacher: np.ndarray, in_student: np.ndarray) -> np.ndarray:
    """:func:`samplers.predict_videos_division` (same numbers): teacher vector, student vector, or their mean."""
    contributions = in_teacher.astype(np.int64) + in_student
    chosen = np.flatnonzero(contributions)
    counts = np.bincount(owner[chosen], minlength=num_videos)
    starts = np.cumsum(counts) - counts

    def vectors(rows: np.ndarray) -> np.ndarray:
        # samplers' (t * in_t + s * in_s) / (in_t + in_s) without the casts: t, s, or (t + s) / 2, exactly
        in_t, in_s = in_teacher[rows], in_student[rows]
        out = teacher[rows].astype(np.float64)
        student_only = np.flatnonzero(~in_t)
        out[student_only] = student[rows[student_only]]
        both = np.flatnonzero(in_t & in_s)
        out[both] = (out[both] + student[rows[both]]) / 2.0
        return out

    return mean_argmax(vectors, chosen, starts, counts, [int(counts.max(initial=1))]).popitem()[1]


def teacher_probs(inputs: ReportInputs) -> np.ndarray:
    """Teacher softmax (M, C) float32 of the split's clips, in report order (memoised on ``inputs``)."""
    return inputs.cached("probs", lambda: softmax_inplace(inputs.teacher_logits()))


def student_probs(inputs: ReportInputs, run: ScoreRunOutputs) -> np.ndarray:
    """The run's student softmax (M, C) float32 aligned with the teacher's clips (raises OutputUnavailable)."""
    def make():
        logits = inputs.run_logits(run)
        classes = teacher_probs(inputs).shape[1]
        if logits.shape[1] != classes:
            raise OutputUnavailable(f"scores/{run.run}/logits.zarr has shape {logits.shape}, expected "
                                    f"({inputs.num_clips}, {classes})")
        return softmax_inplace(logits)
    return inputs.cached(("student_probs", run.run), make)


def ranking(inputs: ReportInputs, key: Any, scores: Callable[[], np.ndarray]) -> tuple[np.ndarray, np.ndarray, float]:
    """Within-video ranks of ``scores()``, the clips in rank order (:func:`rank_order`), and the measured seconds
    of computing both (memoised on ``inputs`` under ``key``)."""
    def make():
        values = scores()
        if np.isnan(values).any():
            raise OutputUnavailable(f"{key}: {int(np.isnan(values).sum())} clips have no score (NaN)")
        return rank_timed(inputs, lambda: values)
    return inputs.cached(("ranks", key), make)


def rank_timed(inputs: ReportInputs, scores: Callable[[], np.ndarray]) -> tuple[np.ndarray, np.ndarray, float]:
    owner = inputs.owner()

    def rank():
        within = samplers.rank_within_videos(scores(), inputs.offsets)
        return within, rank_order(within, inputs.offsets, owner)

    (within, order), seconds = timed(rank)
    return within, order, seconds
