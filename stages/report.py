"""``condi-pipe report``: the paper's tables and figures, computed only from stored outputs (no model runs).

Inputs (read through :mod:`condi_pipe.storage.clip_outputs`): one teacher cache ``teacher/<name>/``, every
finished score run ``scores/<run>/`` made from that teacher, and training histories ``students/<run>/``.

Tables (``table`` argument / ``--table``):

* ``3``: time per video (accuracy) for K = 1, 3, 5, 7 and All (Dense) for ConDi-SR, Equidistant, BCE-Conf and
  ST-Ent (the paper's Table 3); others (ST-Conf, Random, Oracle, Trivial-MT, ...) via ``methods``.
* ``4``: ConDi-SR with division (type b): K_s of the K clips classified by the student (the paper's Table 4).
  Rows of tables 3 and 4 carry the paired bootstrap 95% CI of their accuracy difference from Dense, over videos
  (:func:`condi_pipe.methods.statistics.paired_bootstrap_ci`).
* ``accuracy``: every available method against K, Dense as the reference (the paper's Fig. 4).
* ``oracle``: Dense against Oracle at k = 1, 5, 10, 15 (the oracle case study), beside Perfect z (the clips the
  teacher gets right first), Random, and each student with its share of the gap from Random to Perfect z.
* ``sgs``: the plain teacher against its SGS version (``sgs_teacher``, a cache made with ``teacher-cache --sgs``):
  Dense, ConDi-SR and Equidistant with each teacher; the same student rankings (score runs made for the plain
  teacher) choose the clips, and each teacher's own cache classifies and costs them. Columns add the teacher's
  GFLOPs (measured per clip in its cache) and the mean B' of the clips the SGS teacher classifies; ``--plot`` draws
  the histogram of B' over the split's clips.
* ``confidence``: per score run, FPR of z~ > 0.5 and AUROC of its ranking score against the teacher's z on the
  split, with the final epoch of its training history (the paper's Fig. 5 plots FPR per epoch).
* ``kinds``: benchmark diagnostics per clip kind of the generated benchmark (``clip_kinds``: its
  ``synth_clips.csv``, read by this table only): share, teacher accuracy, z rates, students' z~ and AUROC, and the
  kinds of the clips each method picks.

Time per video is measured, never assumed (:mod:`condi_pipe.methods.time_model`): the student's seconds over all N
clips + the teacher's time for the K_t clips (default: the video's per-clip share of its measured batch x K_t;
``teacher_time="curve"``: one batch of K_t from the teacher cache's measured latency curve) + the clip-ranking
time measured in this run, amortised per video. Every table's footer says so, with devices and thread counts.

Everything is vectorised over videos: clips of a split sit in flat arrays with CSR offsets (video v owns clips
``offsets[v]:offsets[v + 1]``), selections are boolean masks from :mod:`condi_pipe.methods.samplers`, and the
only Python loops are over methods, K values and blocks of ~260k clips (to bound memory).

Public API: :func:`build_report` -> :class:`ReportTable`, :func:`render`, :func:`plot_report`.
"""

from __future__ import annotations

import csv
import io
import json
import math
import posixpath
from dataclasses import dataclass, field, replace
from typing import Any, Callable, Iterable, Mapping, Optional, Sequence, Union

import numpy as np
import pyarrow.compute as pc

from condi_pipe.methods import metrics, samplers
from condi_pipe.methods.statistics import paired_bootstrap_ci
from condi_pipe.methods.time_model import (TimeBreakdown, chunked_batch_seconds, curve_seconds, mean_time,
                                           side_by_side_mean_time, timed)
from condi_pipe.storage import clip_outputs, report_outputs, timings
from condi_pipe.storage.errors import StoreError
from condi_pipe.storage.run_state import read_run, stage_record
from condi_pipe.storage.store import Store

__all__ = [
    "TABLES",
    "FORMATS",
    "ReportRow",
    "ReportTable",
    "build_report",
    "render",
    "plot_report",
    "parse_int_list",
]

TABLES = ("3", "4", "accuracy", "oracle", "confidence", "sgs", "kinds")
FORMATS = ("md", "csv", "json", "latex")
# How models are costed (methods/time_model.py): "side-by-side" from ``condi-pipe time-models`` (every model timed
# interleaved in one process); "share" / "curve": each model's own run (teacher-cache, score); auto: the first
# available of side-by-side, then curve, then share.
TEACHER_TIME = ("auto", "share", "curve", "side-by-side")
DEFAULT_K = {
    "3": (1, 3, 5, 7),
    "4": (1, 3, 5, 7),
    "accuracy": tuple(range(1, 11)),
    "oracle": (1, 5, 10, 15),
    "confidence": (),
    "sgs": (1, 3, 5, 7),
    "kinds": (1,),  # the clips each method picks at K = 1
}
SGS_METHODS = ("condi-sr", "equidistant")  # table sgs: methods shown with both teachers (besides Dense)
DEFAULT_KS = (0, 1, 3, 5)
TABLE3_METHODS = ("condi-sr", "equidistant", "bce-conf", "st-ent")
BUILTIN_METHODS = ("dense", "oracle", "random", "equidistant", "perfect-z")
CLIP_LOSSES = ("condi-sr", "bce-conf", "st-ent", "st-conf", "trivial-mt")
VIDEO_LOSSES = ("fewer-frames", "uniform-k")
DISPLAY = {
    "dense": "Dense",
    "oracle": "Oracle",
    "perfect-z": "Perfect z",
    "random": "Random",
    "equidistant": "Equidistant",
    "condi-sr": "ConDi-SR",
    "bce-conf": "BCE-Conf",
    "st-ent": "ST-Ent",
    "st-conf": "ST-Conf",
    "trivial-mt": "Trivial-MT",
    "fewer-frames": "Fewer-frames",
    "uniform-k": "Uniform-k",
}
RANDOM_SEEDS = (0, 1, 2)  # Random and Perfect z (its ties): mean over these seeds
BOOTSTRAP_RESAMPLES = 2000  # tables 3 and 4: paired bootstrap of the accuracy difference against Dense
BOOTSTRAP_SEED = 0
BLOCK_CLIPS = 1 << 18  # rows per block of the in-place softmax
BLOCK_VIDEOS = 1 << 16  # videos per block when averaging chosen softmax rows (bounds the float64 sums)


# ------------------------------------------------------------------------------------------------ results


@dataclass(frozen=True)
class ReportRow:
    """One result: ``method`` at clip budget ``k`` (None = All) with ``ks`` student clips (division only).

    ``accuracy`` is top-1 video accuracy in percent; ``time_per_video_s`` the mean measured time per video.
    ``extra`` holds the rest (display name, run, time parts, video count, seeds, FPR/AUROC, ...).
    """

    method: str
    k: Optional[int]
    ks: Optional[int]
    accuracy: Optional[float]
    time_per_video_s: Optional[float]
    extra: Mapping[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        row = {"method": self.method, "k": self.k, "ks": self.ks, "accuracy": self.accuracy,
               "time_per_video_s": self.time_per_video_s}
        row.update(self.extra)
        return {key: _json_value(value) for key, value in row.items()}


@dataclass(frozen=True)
class ReportTable:
    """A finished table: machine rows, the human layout (``columns`` x ``cells``), and the footer."""

    table: str
    title: str
    columns: tuple[str, ...]  # header of the human layout
    cells: tuple[tuple[str, ...], ...]  # human layout, one tuple per line, aligned with ``columns``
    rows: tuple[ReportRow, ...]  # machine rows (``render(..., "json")``)
    footer: tuple[str, ...]  # how accuracy and time were obtained, devices, and notes on omitted methods
    series: Mapping[str, Any] = field(default_factory=dict)  # extra plot data (per-epoch histories)

    def to_json(self) -> list[dict[str, Any]]:
        return [row.to_json() for row in self.rows]


def _json_value(value: Any) -> Any:
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        value = float(value)
        return None if math.isnan(value) or math.isinf(value) else value
    if isinstance(value, (list, tuple)):
        return [_json_value(v) for v in value]
    if isinstance(value, dict):
        return {k: _json_value(v) for k, v in value.items()}
    return value


class _Omit(Exception):
    """A method cannot be computed from what the store holds; the message says why (shown as a note)."""


# ------------------------------------------------------------------------------------------------ helpers


def parse_int_list(text: Union[str, Iterable[int], None], name: str) -> Optional[tuple[int, ...]]:
    """``"1,3,5"`` -> (1, 3, 5); an iterable of ints is validated; None stays None."""
    if text is None:
        return None
    if isinstance(text, str):
        parts = [p.strip() for p in text.split(",") if p.strip()]
        try:
            values = tuple(int(p) for p in parts)
        except ValueError:
            raise ValueError(f"{name} must be comma-separated integers, got '{text}'") from None
    else:
        values = tuple(text)
        if not all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in values):
            raise ValueError(f"{name} must be integers, got {values!r}")
        values = tuple(int(v) for v in values)
    if not values:
        raise ValueError(f"{name} is empty")
    return tuple(dict.fromkeys(values))  # keep order, drop repeats


def _norm(name: str) -> str:
    return str(name).strip().lower().replace("_", "-")


def _positions(haystack: np.ndarray, needles: np.ndarray) -> np.ndarray:
    """Index of every needle in ``haystack`` (unique values), -1 where absent."""
    if len(haystack) == 0:
        return np.full(len(needles), -1, dtype=np.int64)
    sorter = np.argsort(haystack, kind="stable")
    idx = np.searchsorted(haystack, needles, sorter=sorter)
    found = sorter[np.clip(idx, 0, len(haystack) - 1)]
    return np.where(haystack[found] == needles, found, -1).astype(np.int64)


def _equals(column, value: str) -> np.ndarray:
    """Boolean mask of a string column equal to ``value`` (nulls are not equal)."""
    return pc.fill_null(pc.equal(column, value), False).to_numpy(zero_copy_only=False).astype(bool)


def _softmax_inplace(x: np.ndarray) -> np.ndarray:
    """Row softmax of a float32 (M, C) array, in place, block by block."""
    for lo in range(0, len(x), BLOCK_CLIPS):
        block = x[lo : lo + BLOCK_CLIPS]
        block -= block.max(axis=1, keepdims=True)
        np.exp(block, out=block)
        block /= block.sum(axis=1, keepdims=True)
    return x


def _mean_argmax(vectors: Callable[[np.ndarray], np.ndarray], order: np.ndarray, starts: np.ndarray,
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


def _rank_order(ranks: np.ndarray, offsets: np.ndarray, owner: np.ndarray) -> np.ndarray:
    """Clip indices grouped by video, each video's clips in rank order (the inverse of the within-video ranks)."""
    order = np.empty(len(ranks), dtype=np.int64)
    order[offsets[owner] + ranks] = np.arange(len(ranks))
    return order


def _mask_predictions(probs: np.ndarray, owner: np.ndarray, num_videos: int, mask: np.ndarray) -> np.ndarray:
    """:func:`samplers.predict_videos` (same numbers): argmax of the mean teacher softmax of the masked clips."""
    chosen = np.flatnonzero(mask)
    counts = np.bincount(owner[chosen], minlength=num_videos)
    starts = np.cumsum(counts) - counts
    return _mean_argmax(lambda rows: probs[rows], chosen, starts, counts, [int(counts.max(initial=1))]).popitem()[1]


def _division_predictions(teacher: np.ndarray, student: np.ndarray, owner: np.ndarray, num_videos: int,
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

    return _mean_argmax(vectors, chosen, starts, counts, [int(counts.max(initial=1))]).popitem()[1]


def _format_seconds(seconds: float) -> str:
    if seconds >= 1:
        return f"{seconds:.2f}s"
    return np.format_float_positional(seconds, precision=3, unique=False, fractional=False, trim="k") + "s"


def _cell(row: Optional[ReportRow]) -> str:
    """The paper's cell: "1.24s (88.87)", then the 95% CI of the difference from Dense when the row has one:
    "1.24s (88.87) [-3.3, +5.0]"."""
    if row is None:
        return ""
    text = f"{_format_seconds(row.time_per_video_s)} ({row.accuracy:.2f})"
    interval = row.extra.get("ci95_vs_dense_pp")
    if interval is not None:
        text += f" [{interval[0]:+.1f}, {interval[1]:+.1f}]"
    return text


def _fmt(value: Optional[float], digits: int = 4) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    return f"{value:.{digits}f}"


# --------------------------------------------------------------------------------------------- the inputs


@dataclass(frozen=True)
class _SideBySide:
    """Curves of ``condi-pipe time-models`` covering the teacher and every score run: {model: curve}, and its meta."""

    curves: dict
    meta: dict

    @property
    def max_batch(self) -> int:
        return int(self.meta.get("max_batch") or self.meta["batches"][-1])


@dataclass
class _Run:
    """A finished score run made from the chosen teacher."""

    run: str  # folder name under scores/
    loss: str  # normalised loss name = the method it stands for
    meta: dict
    video_level: bool
    key: str = ""  # method key in the results: the loss, or "loss:run" when several runs share a loss
    display: str = ""

    @property
    def folder(self) -> str:
        return clip_outputs.scores_folder(self.run)


class _Inputs:
    """The chosen teacher's clips of one split in flat (video, clip) order, and lazily everything else."""

    def __init__(self, store: Store, teacher: Optional[str], split: Optional[str], teacher_time: str = "share",
                 runs_teacher: Optional[str] = None):
        self.store = store
        self.teacher_time = teacher_time
        self.runs_teacher = runs_teacher  # whose score runs rank the clips (default: this teacher's own)
        self.notes: list[str] = []
        self._cache: dict[Any, Any] = {}
        self.teacher = self._choose_teacher(teacher)
        self.teacher_folder = clip_outputs.teacher_folder(self.teacher)
        self.teacher_meta = clip_outputs.read_meta(store, self.teacher_folder)
        self.curve = self._latency_curve()
        self._load_split(split)
        self.runs = self._find_runs()
        self.side_by_side, self.side_by_side_missing = self._side_by_side()

    # -- teacher and split ---------------------------------------------------------------------------------
    def _choose_teacher(self, teacher: Optional[str]) -> str:
        store = self.store
        if not store.exists():
            raise StoreError(f"{store.url}: no such store")
        complete, incomplete = report_outputs.output_folders(store, clip_outputs.TEACHER_ROOT)
        if teacher is not None:
            if teacher not in complete:
                state = "is incomplete" if teacher in incomplete else "does not exist"
                raise StoreError(f"{store.path(clip_outputs.teacher_folder(teacher))}: teacher cache '{teacher}' "
                                 f"{state} (teacher caches here: {', '.join(complete) or 'none'})")
            return teacher
        if not complete:
            extra = f" ({', '.join(incomplete)} incomplete)" if incomplete else ""
            raise StoreError(f"{store.url}: no teacher cache in this store{extra}; run `condi-pipe teacher-cache` "
                             "first")
        if len(complete) > 1:
            # an SGS teacher is compared against its plain teacher (table sgs), so it is not the default main one
            plain = [name for name in complete if not clip_outputs.read_meta(store, clip_outputs.teacher_folder(name))
                     .get("sgs")]
            if len(plain) == 1:
                return plain[0]
            raise ValueError(f"{store.url}: several teacher caches ({', '.join(complete)}); choose one with --teacher")
        return complete[0]

    def _latency_curve(self) -> Optional[dict]:
        curve = self.teacher_meta.get("latency_curve")
        if not curve:
            return None
        try:
            curve_seconds(curve, np.array([1]))
        except (KeyError, TypeError, ValueError) as exc:
            self.notes.append(f"teacher/{self.teacher}/meta.json: latency_curve unusable ({exc}); ignored.")
            return None
        return {"batch": list(curve["batch"]), "seconds": list(curve["seconds"])}

    def _load_split(self, split: Optional[str]) -> None:
        store, folder = self.store, self.teacher_folder
        table = clip_outputs.read_clips(store, folder, ["clip_id", "video_id", "split", "label"])
        splits = sorted(s for s in pc.unique(table.column("split")).to_pylist() if s is not None)
        if split is None:
            candidates = [s for s in ("test", "val") if s in splits] or (splits if len(splits) == 1 else [])
            if not candidates:
                raise ValueError(f"{store.path(folder)}: no 'test' or 'val' split "
                                 f"(splits: {', '.join(splits) or 'none'}); choose one with --split")
            split = candidates[0]
        elif split not in splits:
            raise StoreError(f"{store.path(folder, 'clips.parquet')}: no clips in split '{split}' "
                             f"(splits: {', '.join(splits) or 'none'})")
        self.split = split
        rows = np.flatnonzero(_equals(table.column("split"), split))
        clip_id = table.column("clip_id").to_numpy()[rows]
        video = table.column("video_id").to_numpy()[rows]
        label = table.column("label").to_numpy()[rows].astype(np.int64)
        del table
        same_video = video[1:] == video[:-1]
        if not ((video[1:] >= video[:-1]).all() and (clip_id[1:][same_video] > clip_id[:-1][same_video]).all()):
            order = np.lexsort((clip_id, video))
            rows, clip_id, video, label = rows[order], clip_id[order], video[order], label[order]
        starts = np.flatnonzero(np.concatenate([[True], video[1:] != video[:-1]]))
        self.rows = rows  # positions in teacher clips.parquet / logits.zarr, in report order
        self.clip_id = clip_id
        self.offsets = np.concatenate([starts, [len(video)]]).astype(np.int64)
        self.video_id = video[starts]
        self.labels = label[starts]
        self.clips = np.diff(self.offsets)
        if (label != np.repeat(self.labels, self.clips)).any():
            raise StoreError(f"{store.path(folder, 'clips.parquet')}: a video's clips have different labels")
        videos = clip_outputs.read_videos(store, folder, ["video_id", "clips", "seconds"])
        pos = _positions(videos.column("video_id").to_numpy(), self.video_id)
        if (pos < 0).any():
            raise StoreError(f"{store.path(folder, 'videos.parquet')}: no timing for video "
                             f"{int(self.video_id[np.argmax(pos < 0)])}")
        stored_clips = videos.column("clips").to_numpy()[pos]
        if (stored_clips != self.clips).any():
            bad = int(np.argmax(stored_clips != self.clips))
            raise StoreError(f"{store.path(folder, 'videos.parquet')}: video {int(self.video_id[bad])} has "
                             f"{int(stored_clips[bad])} clips there but {int(self.clips[bad])} in clips.parquet")
        self.teacher_seconds = videos.column("seconds").to_numpy().astype(np.float64)[pos]

    @property
    def num_videos(self) -> int:
        return len(self.video_id)

    @property
    def num_clips(self) -> int:
        return len(self.clip_id)

    # -- score runs ----------------------------------------------------------------------------------------
    def _find_runs(self) -> list[_Run]:
        store = self.store
        complete, incomplete = report_outputs.output_folders(store, clip_outputs.SCORES_ROOT)
        for name in incomplete:
            self.notes.append(f"scores/{name}: incomplete (no meta.json); ignored.")
        runs, others = [], []
        wanted = self.runs_teacher or self.teacher
        for name in complete:
            meta = clip_outputs.read_meta(store, clip_outputs.scores_folder(name))
            teacher = meta.get("teacher")
            if teacher is not None and teacher != wanted:
                others.append(name)  # made from another teacher: not part of this report
                continue
            loss = _norm(meta.get("loss") or "")
            if not loss:
                self.notes.append(f"scores/{name}: meta.json names no loss; ignored.")
                continue
            video_level = loss in VIDEO_LOSSES or (loss not in CLIP_LOSSES and str(meta.get("level")) == "video")
            runs.append(_Run(name, loss, meta, video_level))
        if others:
            self.notes.append(f"{len(others)} score run(s) made from other teachers are not in this report "
                              f"({', '.join(others)}).")
        counts: dict[str, int] = {}
        for run in runs:
            counts[run.loss] = counts.get(run.loss, 0) + 1
        for run in runs:
            shared = counts[run.loss] > 1
            run.key = f"{run.loss}:{run.run}" if shared else run.loss
            run.display = DISPLAY.get(run.loss, run.loss) + (f" [{run.run}]" if shared else "")
        order = {loss: i for i, loss in enumerate(CLIP_LOSSES + VIDEO_LOSSES)}
        return sorted(runs, key=lambda r: (order.get(r.loss, len(order)), r.loss, r.run))

    # -- side-by-side timings ------------------------------------------------------------------------------
    def _side_by_side(self) -> tuple[Optional[_SideBySide], str]:
        """Timings of ``timings/<teacher>/`` when they cover this teacher and every score run with the weights that
        made the outputs, and every video of the split; else (None, why not)."""
        loaded = timings.read_timings(self.store, self.teacher)
        if loaded is None:
            return None, f"no side-by-side timings in timings/{self.teacher}/"
        table, meta = loaded
        curves = timings.curves(table)
        digests = {m.get("model"): m.get("weights_sha256") for m in meta.get("models", [])}
        wanted = {timings.teacher_key(self.teacher): self.teacher_meta.get("weights_sha256")}
        for run in self.runs:
            scored = stage_record(self.store, f"score/{run.run}").get("config", {})
            wanted[timings.run_key(run.run)] = scored.get("student_weights_sha256", digests.get(timings.run_key(run.run)))
        for model, digest in wanted.items():
            if model not in curves or model not in digests:
                return None, f"timings/{self.teacher}/ has no timing of {model}"
            if digests[model] != digest:
                return None, f"timings/{self.teacher}/ timed other weights of {model} than its outputs were made with"
        side = _SideBySide({model: curves[model] for model in wanted}, meta)
        needed = int(min(self.clips.max(), side.max_batch)) if len(self.clips) else 0
        if any(curve["batch"][-1] < needed for curve in side.curves.values()):
            return None, f"timings/{self.teacher}/ stops below batch {needed} (the longest video of '{self.split}')"
        return side, ""

    def student_seconds(self, run: _Run, clips_seen: Optional[np.ndarray] = None) -> np.ndarray:
        """The run's student time per video of the split: side by side, its timed curve at the clips it sees (all
        N, or a video-level student's k); otherwise the seconds its score run measured (raises _Omit)."""
        if self.teacher_time != "side-by-side":
            return self.run_videos(run, ())["seconds"].astype(np.float64)
        seen = self.clips if clips_seen is None else np.minimum(np.asarray(clips_seen, np.int64), self.clips)
        return chunked_batch_seconds(self.side_by_side.curves[timings.run_key(run.run)], seen,
                                     self.side_by_side.max_batch)

    def cached(self, key: Any, make: Callable[[], Any]) -> Any:
        if key not in self._cache:
            self._cache[key] = make()
        return self._cache[key]

    # -- teacher arrays ------------------------------------------------------------------------------------
    def probs(self) -> np.ndarray:
        """Teacher softmax (M, C) float32 of the split's clips, in report order."""
        def make():
            logits = self._read_rows(self.teacher_folder, "logits", self.rows)
            return _softmax_inplace(logits.astype(np.float32, copy=False))
        return self.cached("probs", make)

    def clip_labels(self) -> np.ndarray:
        return self.cached("clip_labels", lambda: np.repeat(self.labels, self.clips))

    def owner(self) -> np.ndarray:
        return self.cached("owner", lambda: samplers.video_ids(self.offsets))

    def clip_values(self, column: str) -> Optional[np.ndarray]:
        """A column of the teacher's clips.parquet (e.g. ``flops``, ``sgs_bins``) in report order, float64; None when
        the cache has no such column (caches made before it existed)."""
        def make():
            rel = posixpath.join(self.teacher_folder, "clips.parquet")
            if column not in report_outputs.column_names(self.store, rel):
                return None
            values = clip_outputs.read_clips(self.store, self.teacher_folder, [column]).column(column)
            return values.to_numpy(zero_copy_only=False).astype(np.float64)[self.rows]
        return self.cached(("clip_values", column), make)

    def teacher_z(self) -> np.ndarray:
        def make():
            z = clip_outputs.read_clips(self.store, self.teacher_folder, ["z"]).column("z").to_numpy()
            return z[self.rows].astype(np.int8)
        return self.cached("z", make)

    def _read_rows(self, folder: str, name: str, rows: np.ndarray) -> np.ndarray:
        if len(rows) and (np.diff(rows) > 0).all():
            return report_outputs.array_rows(self.store, folder, name, rows)
        order = np.argsort(rows, kind="stable")
        data = report_outputs.array_rows(self.store, folder, name, rows[order])
        out = np.empty_like(data)
        out[order] = data
        return out

    # -- score-run arrays, aligned with the teacher's clips ------------------------------------------------
    def run_rows(self, run: _Run) -> np.ndarray:
        """Rows of the run's clips.parquet holding the split's clips, in report order (raises _Omit)."""
        def make():
            table = clip_outputs.read_clips(self.store, run.folder, ["clip_id", "split"])
            keep = np.flatnonzero(_equals(table.column("split"), self.split))
            ids = table.column("clip_id").to_numpy()[keep]
            if len(ids) == 0:
                raise _Omit(f"scores/{run.run} has no clips in split '{self.split}'")
            if len(ids) == self.num_clips and np.array_equal(ids, self.clip_id):
                return keep  # same clips in the same order (the usual case)
            pos = _positions(ids, self.clip_id)
            # the teacher's clip ids are unique, so every one found among as many rows is a one-to-one match
            if (pos < 0).any() or len(ids) != self.num_clips:
                covered = int((pos >= 0).sum())
                raise _Omit(f"scores/{run.run} covers {covered} of the {self.num_clips} clips of split "
                            f"'{self.split}' in teacher/{self.teacher} (and has {len(ids)} rows for it)")
            return keep[pos]
        return self.cached(("rows", run.run), make)

    def run_column(self, run: _Run, column: str) -> np.ndarray:
        def make():
            rows = self.run_rows(run)
            try:
                values = clip_outputs.read_clips(self.store, run.folder, [column]).column(column)
            except (KeyError, ValueError) as exc:  # pyarrow: column not in the schema
                raise _Omit(f"scores/{run.run}/clips.parquet has no column '{column}' ({exc})") from None
            return values.to_numpy(zero_copy_only=False).astype(np.float64)[rows]
        return self.cached(("column", run.run, column), make)

    def run_student_probs(self, run: _Run) -> np.ndarray:
        def make():
            logits = self._read_rows(run.folder, "logits", self.run_rows(run)).astype(np.float32, copy=False)
            if logits.shape != (self.num_clips, self.probs().shape[1]):
                raise _Omit(f"scores/{run.run}/logits.zarr has shape {logits.shape}, expected "
                            f"({self.num_clips}, {self.probs().shape[1]})")
            return _softmax_inplace(logits)
        return self.cached(("student_probs", run.run), make)

    def run_videos(self, run: _Run, columns: Sequence[str]) -> dict[str, np.ndarray]:
        """Columns of the run's videos.parquet aligned with the split's videos (raises _Omit)."""
        def make():
            names = report_outputs.column_names(self.store, posixpath.join(run.folder, "videos.parquet"))
            missing = [c for c in ("video_id", "seconds", *columns) if c not in names]
            if missing:
                raise _Omit(f"scores/{run.run}/videos.parquet has no column {', '.join(missing)}")
            table = clip_outputs.read_videos(self.store, run.folder, ["video_id", "seconds", *columns])
            pos = _positions(table.column("video_id").to_numpy(), self.video_id)
            if (pos < 0).any():
                raise _Omit(f"scores/{run.run} has timings for {int((pos >= 0).sum())} of the {self.num_videos} "
                            f"videos of split '{self.split}'")
            return {c: table.column(c).to_numpy(zero_copy_only=False)[pos] for c in ("seconds", *columns)}
        return self.cached(("videos", run.run, tuple(columns)), make)

    def ranks(self, key: Any, scores: Callable[[], np.ndarray]) -> tuple[np.ndarray, np.ndarray, float]:
        """Within-video ranks of ``scores()``, the clips in rank order (:func:`_rank_order`), and the measured
        seconds of computing both (cached)."""
        def make():
            values = scores()
            if np.isnan(values).any():
                raise _Omit(f"{key}: {int(np.isnan(values).sum())} clips have no score (NaN)")
            return self.rank_timed(lambda: values)
        return self.cached(("ranks", key), make)

    def rank_timed(self, scores: Callable[[], np.ndarray]) -> tuple[np.ndarray, np.ndarray, float]:
        owner = self.owner()

        def rank():
            ranks = samplers.rank_within_videos(scores(), self.offsets)
            return ranks, _rank_order(ranks, self.offsets, owner)

        (ranks, order), seconds = timed(rank)
        return ranks, order, seconds


# -------------------------------------------------------------------------------------------- the methods


class _Evaluator:
    def __init__(self, inputs: _Inputs):
        self.inp = inputs
        self.teacher_time = inputs.teacher_time
        # per-video correctness (0/1, or the mean over seeds) of every row, by (method, k, ks): the bootstrap's input
        self.correct: dict[tuple[str, Optional[int], Optional[int]], np.ndarray] = {}

    def _times(self, clips_to_teacher, student: Optional[np.ndarray], selection_per_video: float
               ) -> tuple[TimeBreakdown, dict[str, float]]:
        """Mean time parts in the chosen teacher-time model, and the teacher part in every available model (the
        per-run ones stay as a cross-check of the side-by-side figure)."""
        inp = self.inp
        share = mean_time(inp.teacher_seconds, inp.clips, clips_to_teacher, student, selection_per_video)
        parts = {"teacher_s_share": share.teacher}
        chosen = share
        if inp.curve is not None:
            curve = mean_time(inp.teacher_seconds, inp.clips, clips_to_teacher, student, selection_per_video,
                              inp.curve)
            parts["teacher_s_curve"] = curve.teacher
            chosen = curve if self.teacher_time == "curve" else share
        if self.teacher_time == "side-by-side":
            side = inp.side_by_side
            chosen = side_by_side_mean_time(side.curves[timings.teacher_key(inp.teacher)], inp.clips, clips_to_teacher,
                                            student, selection_per_video, side.max_batch)
            parts["teacher_s_side_by_side"] = chosen.teacher
        return chosen, parts

    def _row(self, method: str, display: str, k: Optional[int], preds: np.ndarray, times: TimeBreakdown, *,
             ks: Optional[int] = None, run: Optional[str] = None, **extra: Any) -> ReportRow:
        correct = (preds == self.inp.labels).astype(np.float64)
        self.correct[(method, k, ks)] = correct
        accuracy = 100.0 * float(correct.mean())
        return self._make_row(method, display, k, accuracy, times, ks=ks, run=run, **extra)

    def _make_row(self, method, display, k, accuracy, times: TimeBreakdown, *, ks=None, run=None, **extra):
        info = {"display": display, "run": run, "split": self.inp.split, "videos": self.inp.num_videos,
                "student_s": times.student, "teacher_s": times.teacher, "selection_s": times.selection,
                "teacher_time": self.teacher_time}
        info.update(extra)
        return ReportRow(method, k, ks, accuracy, times.total, info)

    # -- Dense and teacher-only selections -----------------------------------------------------------------
    def dense(self) -> ReportRow:
        inp = self.inp
        probs = inp.probs()
        preds = _mean_argmax(lambda rows: probs[rows], np.arange(inp.num_clips), inp.offsets[:-1], inp.clips,
                             [int(inp.clips.max())]).popitem()[1]
        times, parts = self._times(inp.clips, None, 0.0)  # all N clips: the measured seconds in both models
        return self._row("dense", "Dense", None, preds, times, k_t=None, **parts)

    def _top_k(self, method: str, display: str, ks: Sequence[int], order: np.ndarray, rank_seconds: float, *,
               student: Optional[np.ndarray] = None, run: Optional[str] = None, **extra: Any) -> dict[int, ReportRow]:
        """The top K clips of every video by a ranking go to the teacher; one pass gives every K."""
        inp = self.inp
        probs = inp.probs()
        preds = _mean_argmax(lambda rows: probs[rows], order, inp.offsets[:-1], inp.clips, ks)
        out = {}
        for k in ks:
            times, parts = self._times(k, student, rank_seconds / inp.num_videos)
            out[k] = self._row(method, display, k, preds[k], times, run=run, k_t=k, **parts, **extra)
        return out

    def equidistant(self, ks: Sequence[int]) -> dict[int, ReportRow]:
        inp = self.inp
        out = {}
        for k in ks:
            mask, seconds = timed(lambda: samplers.equidistant_mask(inp.offsets, k))
            preds = _mask_predictions(inp.probs(), inp.owner(), inp.num_videos, mask)
            times, parts = self._times(k, None, seconds / inp.num_videos)
            out[k] = self._row("equidistant", "Equidistant", k, preds, times, k_t=k, **parts)
        return out

    def oracle(self, ks: Sequence[int]) -> dict[int, ReportRow]:
        inp = self.inp

        def true_class_probs():
            return inp.probs()[np.arange(inp.num_clips), inp.clip_labels()]

        _, order, seconds = inp.ranks("oracle", true_class_probs)
        return self._top_k("oracle", "Oracle", ks, order, seconds)

    def seeded_ranking(self, method: str, seed: int) -> tuple[np.ndarray, np.ndarray, float]:
        """(ranks, order, seconds) of ``random`` or ``perfect-z`` for one seed (cached).

        Random ranks by counter-based draws keyed by (seed, video id, clip index): independent of the split's other
        videos. Perfect z ranks by z + the same draw in [0, 1): the clips the teacher gets right come first, in
        random order among themselves (the ceiling of any student that predicts z).
        """
        inp = self.inp
        owner = inp.owner()
        clip_in_video = np.arange(inp.num_clips) - inp.offsets[owner]
        z = inp.teacher_z() if method == "perfect-z" else None

        def scores():
            draws = samplers.hashed_uniform_scores(seed, inp.video_id[owner], clip_in_video)
            return draws if z is None else z + draws

        return inp.cached((method, seed), lambda: inp.rank_timed(scores))

    def _seed_mean(self, method: str, ks: Sequence[int]) -> dict[int, ReportRow]:
        """Random or Perfect z: the mean over RANDOM_SEEDS of the accuracy (and per video of the correctness)."""
        per_seed, correct = [], {k: [] for k in ks}
        for seed in RANDOM_SEEDS:
            _, order, seconds = self.seeded_ranking(method, seed)
            per_seed.append(self._top_k(method, DISPLAY[method], ks, order, seconds))
            for k in ks:
                correct[k].append(self.correct[(method, k, None)])
        out = {}
        for k in ks:
            rows = [seed_rows[k] for seed_rows in per_seed]
            accuracies = [row.accuracy for row in rows]
            times = TimeBreakdown(student=0.0, teacher=rows[0].extra["teacher_s"],
                                  selection=float(np.mean([row.extra["selection_s"] for row in rows])))
            parts = {key: rows[0].extra[key] for key in ("teacher_s_share", "teacher_s_curve", "teacher_s_side_by_side")
                     if key in rows[0].extra}
            out[k] = self._make_row(method, DISPLAY[method], k, float(np.mean(accuracies)), times, k_t=k,
                                    seeds=list(RANDOM_SEEDS), seed_accuracies=accuracies, **parts)
            self.correct[(method, k, None)] = np.mean(correct[k], axis=0)
        return out

    def random(self, ks: Sequence[int]) -> dict[int, ReportRow]:
        return self._seed_mean("random", ks)

    def perfect_z(self, ks: Sequence[int]) -> dict[int, ReportRow]:
        return self._seed_mean("perfect-z", ks)

    # -- students --------------------------------------------------------------------------------------------
    def ranked_run(self, run: _Run, ks: Sequence[int]) -> dict[int, ReportRow]:
        """Type a: the top K clips by the run's rank_score go to the teacher."""
        inp = self.inp
        _, order, seconds = inp.ranks(f"scores/{run.run} rank_score", lambda: inp.run_column(run, "rank_score"))
        student = inp.student_seconds(run)
        return self._top_k(run.key, run.display, ks, order, seconds, student=student, run=run.run,
                           ranking=run.meta.get("ranking"))

    def video_level(self, run: _Run) -> dict[int, ReportRow]:
        """Fewer-frames / Uniform-k students: their stored video predictions at their own k."""
        inp = self.inp
        data = inp.run_videos(run, ("pred", "k"))
        k_values = np.asarray(data["k"], dtype=np.int64)
        k = int(run.meta.get("k") or (np.bincount(k_values).argmax() if len(k_values) else 0))
        times = TimeBreakdown(student=float(inp.student_seconds(run, k_values).mean()), teacher=0.0, selection=0.0)
        row = self._row(run.key, run.display, k, np.asarray(data["pred"], dtype=np.int64), times, run=run.run,
                        k_t=0, clips_seen_mean=float(np.minimum(k_values, inp.clips).mean()))
        return {k: row}

    def method(self, entry: Union[str, _Run], ks: Sequence[int]) -> dict[int, ReportRow]:
        if isinstance(entry, _Run):
            return self.video_level(entry) if entry.video_level else self.ranked_run(entry, ks)
        return {"equidistant": self.equidistant, "oracle": self.oracle, "random": self.random,
                "perfect-z": self.perfect_z}[entry](ks)

    def division(self, run: _Run, budgets: Sequence[tuple[int, int]]) -> dict[tuple[int, int], ReportRow]:
        """Type b: K_s clips by lowest student entropy (student softmax), K_t = K - K_s by z~ (teacher softmax)."""
        inp = self.inp
        conf_ranks, _, conf_seconds = inp.ranks(f"scores/{run.run} rank_score",
                                                lambda: inp.run_column(run, "rank_score"))
        ent_ranks, _, ent_seconds = inp.ranks(f"scores/{run.run} entropy", lambda: -inp.run_column(run, "entropy"))
        student_probs = inp.run_student_probs(run)
        student = inp.student_seconds(run)
        out = {}
        for k, ks in budgets:
            in_teacher, in_student = conf_ranks < k - ks, ent_ranks < ks
            preds = _division_predictions(inp.probs(), student_probs, inp.owner(), inp.num_videos, in_teacher,
                                          in_student)
            to_teacher = np.minimum(k - ks, inp.clips)  # the K_t top-ranked clips (all N when N <= K_t)
            # ranking costs: z~ when the teacher gets clips, entropy when the student classifies some
            selection = (conf_seconds if k > ks else 0.0) + (ent_seconds if ks > 0 else 0.0)
            times, parts = self._times(to_teacher, student, selection / inp.num_videos)
            out[(k, ks)] = self._row(run.key, f"{run.display} (division)", k, preds, times, ks=ks, run=run.run,
                                     k_t=k - ks, division=True, **parts)
        return out


# --------------------------------------------------------------------------------------- method selection


def _resolve(inputs: _Inputs, requested: Sequence[str], *, builtins: Sequence[str] = BUILTIN_METHODS,
             notes: list[str]) -> list[Union[str, _Run]]:
    """Method names -> builtin names and score runs; names of absent runs become notes."""
    entries: list[Union[str, _Run]] = []
    known = set(builtins) | set(CLIP_LOSSES) | set(VIDEO_LOSSES)
    for token in requested:
        name = _norm(token)
        if name in builtins:
            entries.append(name)
            continue
        matches = [r for r in inputs.runs if name in (_norm(r.key), r.loss, _norm(r.run))]
        if matches:
            entries.extend(matches)
        elif name in known:
            notes.append(f"{DISPLAY.get(name, name)}: no finished score run from teacher '{inputs.teacher}' in "
                         f"{inputs.store.url}/scores; omitted.")
        else:
            available = sorted(known | {r.key for r in inputs.runs} | {r.run for r in inputs.runs})
            raise ValueError(f"unknown method '{token}' (known: {', '.join(available)})")
    unique: list[Union[str, _Run]] = []
    for entry in entries:
        if not any(entry is other or entry == other for other in unique):
            unique.append(entry)
    return unique


def _entry_name(entry: Union[str, _Run]) -> str:
    return entry.display if isinstance(entry, _Run) else DISPLAY[entry]


def _evaluate_entries(ev: _Evaluator, entries, ks, notes) -> list[tuple[Union[str, _Run], dict[int, ReportRow]]]:
    results = []
    for entry in entries:
        try:
            results.append((entry, ev.method(entry, ks)))
        except _Omit as exc:
            notes.append(f"{_entry_name(entry)}: {exc}; omitted.")
    return results


# ------------------------------------------------------------------------------------------------ footers


def _footer(inputs: _Inputs, rows: Sequence[ReportRow], runs: Sequence[_Run], notes: Sequence[str], *,
            time_lines: bool = True) -> tuple[str, ...]:
    if time_lines:
        lines = [f"Accuracy: top-1 over the {inputs.num_videos} videos ({inputs.num_clips} clips) of split "
                 f"'{inputs.split}'; a video's prediction is the argmax of the mean softmax of its chosen clips "
                 f"(teacher softmax from teacher/{inputs.teacher}/logits.zarr)."]
    else:
        lines = [f"Clips: the {inputs.num_clips} clips of the {inputs.num_videos} videos of split '{inputs.split}'; "
                 f"z from teacher/{inputs.teacher}/clips.parquet."]
    if not time_lines:
        if any(row.time_per_video_s is not None for row in rows):  # a table without times says nothing of them
            lines.append("Time per video (JSON 'time_per_video_s'): the student's measured seconds over all N clips "
                         f"of the video as one batch ({_student_time_source(inputs)}), mean over the same videos; no "
                         "teacher time and no selection.")
    else:
        selection = [row.extra.get("selection_s", 0.0) for row in rows if row.extra.get("selection_s")]
        sel = (f" (here at most {max(selection) * 1e6:.2g} us per video)" if selection else "")
        if inputs.teacher_time == "side-by-side":
            lines.append(_side_by_side_line(inputs, sel))
        elif inputs.teacher_time == "curve":
            teacher_part = ("the teacher's measured time for one batch of min(K_t, N) clips from the latency curve "
                            f"in teacher/{inputs.teacher}/meta.json (linear between measured batch sizes, beyond the "
                            "largest its per-clip cost x size; K_t >= N: the video's measured seconds)")
        else:
            teacher_part = ("the teacher's per-clip latency (teacher seconds / N of that video) x min(K_t, N) clips "
                            "sent to the teacher")
        if inputs.teacher_time != "side-by-side":
            lines.append(
                "Time per video: mean over the same videos of measured seconds, not assumed. "
                "Dense (All) = the teacher's seconds over all N clips of the video "
                f"(teacher/{inputs.teacher}/videos.parquet: one forward pass over the video's clips as one batch). "
                "A method = its student's seconds over all N clips (scores/<run>/videos.parquet; only methods with a "
                f"student) + {teacher_part} + clip-selection time "
                f"measured in this report run, vectorised over all videos and amortised per video{sel}. "
                "Video-level students (fewer-frames, uniform-k): their stored seconds over their k clips.")
        if inputs.curve is not None and inputs.teacher_time == "share":
            one = float(curve_seconds(inputs.curve, np.array([1]))[0])
            share = float((inputs.teacher_seconds / inputs.clips).mean())
            lines.append(f"Note: the teacher cache also holds a measured batch-latency curve: one clip alone takes "
                         f"{_format_seconds(one)} against a mean per-clip share of {_format_seconds(share)} in the "
                         "videos' batches, so small K cost more than shown here; --teacher-time curve costs the "
                         "K_t clips as one batch from that curve (JSON: teacher_s_curve).")
    if inputs.teacher_time != "side-by-side" and (time_lines or runs):
        lines.append(f"Note: times are not side by side ({inputs.side_by_side_missing or 'per-run timing chosen'}): "
                     "each model's seconds come from its own teacher-cache or score run, measured in different "
                     "processes at different machine loads; `condi-pipe time-models` times every model interleaved "
                     "in one process.")
    devices = [_device_line(f"teacher '{inputs.teacher}'", inputs.teacher_meta)]
    devices += [_device_line(f"{run.display} (scores/{run.run}, student {run.meta.get('student', '?')})", run.meta)
                for run in runs]
    lines.append("Measured on: " + "; ".join(devices) + ".")
    lines.append(_z_labels_line(inputs))
    lines += [f"Note: {note}" for note in notes]
    return tuple(lines)


def _z_labels_line(inputs: _Inputs) -> str:
    """Which confidence labels z the teacher cache holds (teacher-cache --z-labels); older caches are in-sample."""
    meta = inputs.teacher_meta
    if meta.get("z_labels") == "out-of-fold":
        count = (meta.get("folds") or {}).get("count", "?")
        return (f"z labels: out-of-fold with {count} folds (teacher/{inputs.teacher}/clips.parquet teacher_source): "
                "each clip of a video the teacher trained on is labelled by a fold teacher that never saw it; "
                "other clips by the teacher itself.")
    if meta.get("shipped_weights"):
        return (f"z labels: the teacher's own top-1 on every clip (teacher/{inputs.teacher}), from the pretrained "
                "weights shipped with condi-pipe, trained on a generated corpus no demo uses: it never saw these "
                "clips, so z is honest on the train split too.")
    return (f"z labels: in-sample (teacher/{inputs.teacher}: the teacher's own top-1 on every clip; on clips it "
            "trained on, z overstates how often it is right; `teacher-train --folds F` gives out-of-fold labels).")


def _student_time_source(inputs: _Inputs) -> str:
    if inputs.teacher_time != "side-by-side":
        return "scores/<run>/videos.parquet"
    meta = inputs.side_by_side.meta
    return (f"side by side: its curve in timings/{inputs.teacher}/timings.parquet at batch N, median of "
            f"{meta.get('repeats')} interleaved repeats, threads {meta.get('threads', '?')}")


def _side_by_side_line(inputs: _Inputs, selection: str) -> str:
    meta = inputs.side_by_side.meta
    return (f"Time per video: measured side by side (`condi-pipe time-models`, {meta.get('when', '?')}): the teacher "
            "and every student timed interleaved in one process on the same clips, one forward pass per batch size "
            f"1..{meta['batches'][-1]}, median of {meta.get('repeats')} interleaved repeats "
            f"(timings/{inputs.teacher}/timings.parquet), on {meta.get('device_name') or 'unknown device'} "
            f"({meta.get('device') or '?'}, threads {meta.get('threads', '?')}). Dense (All) = the teacher's time for "
            "one batch of N clips; a method = its student's time for one batch of N (only methods with a student; "
            "video-level students: a batch of their k clips) + the teacher's time for one batch of min(K_t, N) + "
            "clip-selection time measured in this report run, vectorised over all videos and amortised per "
            f"video{selection}; a video longer than {inputs.side_by_side.max_batch} clips runs in chunks of that "
            "many. Mean over the split's videos.")


def _device_line(what: str, meta: Mapping[str, Any]) -> str:
    bf16 = ", bf16" if meta.get("bf16") else ""
    model = f" {meta['model']}" if meta.get("model") and meta.get("model") not in what else ""
    threads = meta.get("threads") if meta.get("threads") is not None else "?"
    device = meta.get("device_name") or "unknown device"
    return f"{what}{model} on {device} ({meta.get('device') or '?'}, threads {threads}{bf16})"


def _runs_of(entries) -> list[_Run]:
    return [e for e in entries if isinstance(e, _Run)]


# ------------------------------------------------------------------------------------------------- tables


def _grid(cells: Sequence[Sequence[str]], width: int) -> tuple[tuple[str, ...], ...]:
    """Rows padded with empty cells to the header's width."""
    return tuple(tuple(row) + ("",) * (width - len(row)) for row in cells)


def _k_rows(ks: Sequence[int], results) -> list[int]:
    extra = {k for entry, by_k in results if isinstance(entry, _Run) and entry.video_level for k in by_k}
    return list(ks) + sorted(extra - set(ks))


def _versus_dense(ev: _Evaluator, by_key: Mapping[Any, ReportRow]) -> dict[Any, ReportRow]:
    """The rows with the paired bootstrap 95% CI of their accuracy difference from Dense, in percentage points
    (``diff_vs_dense_pp``, ``ci95_vs_dense_pp``), over the same videos resampled for both (Dense has been run)."""
    dense = ev.correct[("dense", None, None)]
    out = {}
    for key, row in by_key.items():
        ci = paired_bootstrap_ci(ev.correct[(row.method, row.k, row.ks)], dense, resamples=BOOTSTRAP_RESAMPLES,
                                 seed=BOOTSTRAP_SEED)
        out[key] = replace(row, extra={**row.extra, "diff_vs_dense_pp": 100.0 * ci.difference,
                                       "ci95_vs_dense_pp": [100.0 * ci.low, 100.0 * ci.high]})
    return out


def _bootstrap_note(inputs: _Inputs) -> str:
    return (f"[low, high] after an accuracy: 95% CI of its difference from Dense in percentage points, by a paired "
            f"bootstrap over videos: {BOOTSTRAP_RESAMPLES:,} resamples of the {inputs.num_videos} videos with "
            f"replacement, the same videos for the method and for Dense (numpy default_rng({BOOTSTRAP_SEED})), "
            "percentile interval; an interval excluding 0 is a difference the sample size can tell. Random: a "
            "video counts as the mean of its seeds. JSON: diff_vs_dense_pp, ci95_vs_dense_pp.")


def _table3(inputs: _Inputs, ks, methods, notes) -> ReportTable:
    ev = _Evaluator(inputs)
    entries = _resolve(inputs, methods or TABLE3_METHODS, notes=notes)
    entries = [e for e in entries if e != "dense"]  # Dense is the All row
    dense = ev.dense()
    results = [(entry, _versus_dense(ev, by_k)) for entry, by_k in _evaluate_entries(ev, entries, ks, notes)]
    if results:
        notes = notes + [_bootstrap_note(inputs)]
    columns = ["K"] + [_entry_name(entry) for entry, _ in results] if results else ["K", "Dense"]
    cells = [[str(k)] + [_cell(by_k.get(k)) for _, by_k in results] for k in _k_rows(ks, results)]
    cells.append(["All", _cell(dense)] + [""] * max(len(results) - 1, 0))
    rows = [row for _, by_k in results for row in by_k.values()] + [dense]
    return ReportTable(
        "3", f"Table 3: mean time per video (top-1 accuracy, %), teacher '{inputs.teacher}', split '{inputs.split}'",
        tuple(columns), _grid(cells, len(columns)), tuple(rows),
        _footer(inputs, rows, _runs_of(e for e, _ in results), notes + ["All = Dense: the teacher on every clip."]))


def _table4(inputs: _Inputs, ks, student_ks, methods, notes) -> ReportTable:
    ev = _Evaluator(inputs)
    if methods:
        runs = [e for e in _resolve(inputs, methods, builtins=(), notes=notes) if isinstance(e, _Run)]
        if any(r.loss != "condi-sr" for r in runs):
            raise ValueError("table 4 (division) applies to ConDi-SR runs only")
    else:
        runs = [r for r in inputs.runs if r.loss == "condi-sr"]
        if not runs:
            notes.append(f"ConDi-SR: no finished score run from teacher '{inputs.teacher}' in "
                         f"{inputs.store.url}/scores; no division rows.")
    budgets = [(k, s) for k in ks for s in student_ks if s <= k]
    if not budgets:
        raise ValueError(f"no K_s <= K among K {list(ks)} and K_s {list(student_ks)}")
    dense = ev.dense()
    results = []
    for run in runs:
        try:
            results.append((run, _versus_dense(ev, ev.division(run, budgets))))
        except _Omit as exc:
            notes.append(f"{run.display}: {exc}; omitted.")
    if results:
        notes = notes + [_bootstrap_note(inputs)]
    columns = ["K", "K_s", "K_t"] + [f"{run.display} (division)" for run, _ in results]
    cells = [[str(k), str(s), str(k - s)] + [_cell(by_b[(k, s)]) for _, by_b in results] for k, s in budgets]
    cells.append(["All", "", "", _cell(dense)] + [""] * max(len(results) - 1, 0))
    if not results:
        columns.append("Dense")
        cells = [cells[-1]]
    rows = [row for _, by_b in results for row in by_b.values()] + [dense]
    rule = ("Division (type b): the K_s clips with the lowest student entropy contribute the student's softmax, the "
            "K_t = K - K_s clips with the highest z~ the teacher's; a clip in both lists contributes the mean of the "
            "two; the prediction is the argmax of the mean of all contributed vectors. Only the K_t clips cost "
            "teacher time. All = Dense.")
    return ReportTable(
        "4", f"Table 4: ConDi-SR with division, mean time per video (top-1 accuracy, %), teacher '{inputs.teacher}', "
             f"split '{inputs.split}'",
        tuple(columns), _grid(cells, len(columns)), tuple(rows),
        _footer(inputs, rows, [r for r, _ in results], notes + [rule]))


def _accuracy_table(inputs: _Inputs, ks, methods, notes) -> ReportTable:
    ev = _Evaluator(inputs)
    if methods:
        entries = _resolve(inputs, methods, notes=notes)
    else:
        entries = ["oracle", "random", "equidistant", *inputs.runs]
    entries = [e for e in entries if e != "dense"]
    dense = ev.dense()
    results = _evaluate_entries(ev, entries, ks, notes)
    columns = ["K"] + [_entry_name(entry) for entry, _ in results] if results else ["K", "Dense"]
    cells = [[str(k)] + [_fmt(by_k[k].accuracy, 2) if k in by_k else "" for _, by_k in results]
             for k in _k_rows(ks, results)]
    cells.append(["All", _fmt(dense.accuracy, 2)] + [""] * max(len(results) - 1, 0))
    rows = [row for _, by_k in results for row in by_k.values()] + [dense]
    return ReportTable(
        "accuracy", f"Top-1 accuracy (%) against K, teacher '{inputs.teacher}', split '{inputs.split}' (Fig. 4)",
        tuple(columns), _grid(cells, len(columns)), tuple(rows),
        _footer(inputs, rows, _runs_of(e for e, _ in results),
                notes + ["All = Dense. Random: mean of seeds 0, 1, 2. Video-level students appear at their own k. "
                         "Times are in the JSON output."]))


def _gap_share(accuracy: float, random: float, perfect: float) -> float:
    """(accuracy - Random) / (Perfect z - Random): 0 = no better than random clips, 1 = as good as knowing z; NaN
    when there is no gap (e.g. k at least every video's clip count)."""
    gap = perfect - random
    return (accuracy - random) / gap if abs(gap) > 1e-9 else float("nan")


def _oracle_table(inputs: _Inputs, ks, notes) -> ReportTable:
    ev = _Evaluator(inputs)
    dense = ev.dense()
    oracle, perfect, random = ev.oracle(ks), ev.perfect_z(ks), ev.random(ks)
    students = []
    for run in inputs.runs:
        if run.video_level:
            notes.append(f"{run.display}: a video-level student picks no clips; not in this table.")
            continue
        try:
            by_k = ev.ranked_run(run, ks)
        except _Omit as exc:
            notes.append(f"{run.display}: {exc}; omitted.")
            continue
        students.append((run, {k: replace(row, extra={**row.extra, "gap_share": _gap_share(
            row.accuracy, random[k].accuracy, perfect[k].accuracy)}) for k, row in by_k.items()}))
    columns = ("K", "Oracle", "Perfect z", "Random", *(f"{run.display} (gap share)" for run, _ in students))
    cells = [(str(k), _fmt(oracle[k].accuracy, 2), _fmt(perfect[k].accuracy, 2), _fmt(random[k].accuracy, 2),
              *(f"{_fmt(by_k[k].accuracy, 2)} ({_fmt(by_k[k].extra['gap_share'], 2)})" for _, by_k in students))
             for k in ks]
    cells.append(("All", _fmt(dense.accuracy, 2)))
    rows = [dense] + [by_k[k] for by_k in (oracle, perfect, random) for k in ks]
    rows += [row for _, by_k in students for row in by_k.values()]
    seeds = ", ".join(map(str, RANDOM_SEEDS))
    explain = (f"Top-1 accuracy (%) at k clips per video. Oracle: the top k by the teacher's true-class probability "
               f"(cheats with the label: an upper bound, not a usable method). Perfect z: the clips the teacher "
               f"classifies right first (z = 1 in teacher/{inputs.teacher}/clips.parquet), ties broken at random, "
               f"mean over seeds {seeds}: the ceiling of any student that predicts z. Random: k clips at random, mean "
               f"over seeds {seeds}. A student's gap share = (its accuracy - Random) / (Perfect z - Random) at the "
               "same k: 0 = no better than random clips, 1 = as good as knowing z (n/a without a gap). All = Dense "
               "(under the first column). Times are in the JSON output.")
    return ReportTable(
        "oracle", f"Oracle case study: Oracle (true-class probability), Perfect z (teacher right first), Random and "
                  f"each student against Dense, teacher '{inputs.teacher}', split '{inputs.split}'",
        columns, _grid(cells, len(columns)), tuple(rows),
        _footer(inputs, rows, [run for run, _ in students], notes + [explain]))


def _history_column(history, metric: str) -> Optional[str]:
    """The history's column for ``metric``: ``eval_<metric>`` (the distill stage's name) or ``<metric>``."""
    for name in (f"eval_{metric}", metric):
        if name in history.column_names:
            return name
    return None


def _history_summary(history, kept_epoch: Optional[int] = None) -> tuple[dict[str, Any], dict[str, list]]:
    """(values, FPR curve) of a training history at the epoch distill kept (``kept_epoch``, from its meta.json),
    else the last epoch with an evaluation (finite FPR or AUROC).

    Columns ``epoch`` and ``fpr``/``auroc``/``clip_accuracy``, or their ``eval_`` forms; epochs without an
    evaluation (NaN) are skipped.
    """
    if history is None or history.num_rows == 0:
        return {}, {}
    epoch = (np.asarray(history.column("epoch").to_numpy(zero_copy_only=False), dtype=np.int64)
             if "epoch" in history.column_names else np.arange(1, history.num_rows + 1))
    order = np.argsort(epoch, kind="stable")
    values = {}
    for metric in ("fpr", "auroc", "clip_accuracy"):
        name = _history_column(history, metric)
        if name is not None:
            column = history.column(name).to_numpy(zero_copy_only=False)
            values[metric] = np.asarray([np.nan if v is None else v for v in column], dtype=np.float64)[order]
    epoch = epoch[order]
    evaluated = np.zeros(len(epoch), dtype=bool)
    for metric in ("fpr", "auroc"):
        if metric in values:
            evaluated |= np.isfinite(values[metric])
    if not evaluated.any():
        return {}, {}
    last = int(np.flatnonzero(evaluated)[-1])
    if kept_epoch is not None and (epoch == kept_epoch).any():
        last = int(np.flatnonzero(epoch == kept_epoch)[0])
    final = {"history_epoch": int(epoch[last])}
    for metric in ("fpr", "auroc", "clip_accuracy"):
        final[f"history_{metric}"] = float(values[metric][last]) if metric in values else None
    curve = {}
    if "fpr" in values:
        finite = np.isfinite(values["fpr"])
        curve = {"epoch": epoch[finite].tolist(), "fpr": values["fpr"][finite].tolist()}
    return final, curve


def _confidence_table(inputs: _Inputs, methods, notes) -> ReportTable:
    entries = _resolve(inputs, methods, builtins=(), notes=notes) if methods else list(inputs.runs)
    z = None
    rows, cells, series, used = [], [], {}, []
    for run in entries:
        if run.video_level:
            notes.append(f"{run.display}: a video-level student has no clip scores; not in this table.")
            continue
        try:
            if z is None:
                z = inputs.teacher_z()
            rank_score = inputs.run_column(run, "rank_score")
            confidence = inputs.run_column(run, "confidence")
            pred = inputs.run_column(run, "pred")
            student_seconds = inputs.student_seconds(run)
        except _Omit as exc:
            notes.append(f"{run.display}: {exc}; omitted.")
            continue
        finite = np.isfinite(confidence)
        fpr = metrics.false_positive_rate(confidence[finite], z[finite], 0.5) if finite.any() else float("nan")
        if finite.any() and not finite.all():
            notes.append(f"{run.display}: FPR over the {int(finite.sum())} clips with a confidence "
                         f"(of {len(finite)}).")
        scored = np.isfinite(rank_score)
        auroc = metrics.auroc(rank_score[scored], z[scored]) if scored.any() else float("nan")
        accuracy = 100.0 * float((pred == inputs.clip_labels()).mean())
        kept = report_outputs.read_student_meta(inputs.store, run.run).get("epoch_kept")
        final, curve = _history_summary(report_outputs.read_history(inputs.store, run.run), kept)
        if not final:
            notes.append(f"{run.display}: no evaluated epoch in students/{run.run}/history.parquet.")
        if curve:
            series[run.display] = curve
        used.append(run)
        times = TimeBreakdown(student=float(student_seconds.mean()), teacher=0.0, selection=0.0)
        rows.append(ReportRow(run.key, None, None, accuracy, times.total, {
            "display": run.display, "run": run.run, "split": inputs.split, "videos": inputs.num_videos,
            "clips": inputs.num_clips, "fpr": fpr, "auroc": auroc, "ranking": run.meta.get("ranking"),
            "student_s": times.student, "teacher_s": 0.0, "selection_s": 0.0, **final}))
        cells.append((run.display, run.run, _fmt(fpr), _fmt(auroc), _fmt(accuracy, 2),
                       str(final.get("history_epoch", "")) if final else "",
                       _fmt(final.get("history_fpr")) if final else "",
                       _fmt(final.get("history_auroc")) if final else "",
                       _fmt(final.get("history_clip_accuracy")) if final else ""))
    if not entries:
        notes.append(f"no finished score run from teacher '{inputs.teacher}' in {inputs.store.url}/scores.")
    columns = ("Method", "Run", "FPR (z~ > 0.5)", "AUROC", "Student clip top-1 (%)", "Epoch kept",
               "Epoch FPR", "Epoch AUROC", "Epoch clip accuracy")
    explain = (f"FPR = FP / (FP + TN) of z~ > 0.5 (clips.parquet 'confidence') against the teacher's z on split "
               f"'{inputs.split}'; AUROC of each run's rank_score against z. Epoch columns: the row of "
               "students/<run>/history.parquet of the epoch distill kept (meta.json epoch_kept; else the last "
               "evaluated), on the validation part the history is computed on. JSON 'accuracy' = the student's clip top-1 (%), "
               "'time_per_video_s' = its seconds over all N clips.")
    return ReportTable(
        "confidence", f"Confidence of the students against the teacher's z, teacher '{inputs.teacher}', "
                      f"split '{inputs.split}'",
        columns, tuple(cells), tuple(rows), _footer(inputs, rows, used, notes + [explain], time_lines=False),
        series)


def _read_clip_kinds(path: str) -> dict[str, dict[int, str]]:
    """A clip-kinds sidecar (``condi-pipe synth``'s ``synth_clips.csv``: columns video, clip, kind, ...) as
    {video path relative to the dataset root: {clip index: kind}}; ValueError naming the file when unusable."""
    out: dict[str, dict[int, str]] = {}
    try:
        with open(path, newline="", encoding="utf-8") as fh:
            reader = csv.DictReader(fh)
            missing = [c for c in ("video", "clip", "kind") if c not in (reader.fieldnames or [])]
            if missing:
                raise ValueError(f"{path}: no column {', '.join(missing)}: not a clip-kinds file (synth_clips.csv, "
                                 "written by condi-pipe synth)")
            for line, row in enumerate(reader, start=2):
                try:
                    clip = int(row["clip"])
                except (TypeError, ValueError):
                    raise ValueError(f"{path}: line {line}: clip index {row['clip']!r} is not an integer") from None
                kind = (row["kind"] or "").strip()
                if not kind:
                    raise ValueError(f"{path}: line {line}: no kind")
                clips = out.setdefault(row["video"], {})
                if clip in clips:
                    raise ValueError(f"{path}: line {line}: video '{row['video']}' clip {clip} is listed twice")
                clips[clip] = kind
    except FileNotFoundError:
        raise ValueError(f"{path}: clip-kinds file not found") from None
    except UnicodeDecodeError:
        raise ValueError(f"{path}: not a UTF-8 CSV file") from None
    except csv.Error as exc:
        raise ValueError(f"{path}: not a readable CSV file ({exc})") from None
    except OSError as exc:
        raise ValueError(f"{path}: cannot read the clip-kinds file ({exc.strerror or exc})") from None
    return out


def _cache_clip_kinds(inputs: _Inputs, path: str) -> tuple[np.ndarray, tuple[str, ...]]:
    """Kind code of every clip of the teacher cache (all splits, cache row order) and the kind names, joined with
    the sidecar by video path (the store's videos.parquet) and clip index (its clips.parquet)."""
    from condi_pipe.storage import tables
    from condi_pipe.video.synth import CLIP_KINDS

    store = inputs.store
    sidecar = _read_clip_kinds(path)
    cache = clip_outputs.read_clips(store, inputs.teacher_folder, ["clip_id", "video_id"])
    clip_id, video_id = cache.column("clip_id").to_numpy(), cache.column("video_id").to_numpy()
    videos = store.read_table(tables.VIDEOS, columns=["video_id", "path"])
    clips = store.read_table(tables.CLIPS, columns=["clip_id", "clip_index"])
    video_pos = _positions(videos.column("video_id").to_numpy(), video_id)
    clip_pos = _positions(clips.column("clip_id").to_numpy(), clip_id)
    if (video_pos < 0).any():
        raise StoreError(f"{store.path(tables.VIDEOS)}: no video {int(video_id[np.argmax(video_pos < 0)])} of "
                         f"teacher/{inputs.teacher}")
    if (clip_pos < 0).any():
        raise StoreError(f"{store.path(tables.CLIPS)}: no clip {int(clip_id[np.argmax(clip_pos < 0)])} of "
                         f"teacher/{inputs.teacher}")
    paths = np.asarray(videos.column("path").to_pylist(), dtype=object)[video_pos]
    clip_index = clips.column("clip_index").to_numpy()[clip_pos]
    seen = {kind for by_clip in sidecar.values() for kind in by_clip.values()}
    names = tuple(k for k in CLIP_KINDS if k in seen) + tuple(sorted(seen - set(CLIP_KINDS)))
    code = {name: i for i, name in enumerate(names)}
    kinds = np.empty(len(clip_id), dtype=np.int64)
    for i, (video, clip) in enumerate(zip(paths.tolist(), clip_index.tolist())):
        by_clip = sidecar.get(video)
        if by_clip is None:
            raise ValueError(f"{path}: no row for video '{video}' of store {store.url} (is this the sidecar of the "
                             "dataset the store was extracted from?)")
        if clip not in by_clip:
            raise ValueError(f"{path}: video '{video}' has no clip {clip} (the store has it)")
        kinds[i] = code[by_clip[clip]]
    return kinds, names


def _per_kind(kinds: np.ndarray, num_kinds: int, values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(count, mean of ``values``) per kind code, plus the total as a last element; NaN means where no clip."""
    counts = np.bincount(kinds, minlength=num_kinds).astype(np.float64)
    counts = np.append(counts, counts.sum())
    sums = np.bincount(kinds, weights=values, minlength=num_kinds)
    sums = np.append(sums, sums.sum())
    return counts, np.where(counts > 0, sums / np.where(counts > 0, counts, 1), np.nan)


def _kinds_table(inputs: _Inputs, ks, methods, clip_kinds: str, notes) -> ReportTable:
    all_kinds, names = _cache_clip_kinds(inputs, clip_kinds)
    n = len(names)
    labels = (*names, "all")
    ev = _Evaluator(inputs)
    kinds = all_kinds[inputs.rows]  # the eval split's clips, report order
    rows: list[ReportRow] = []
    cells: list[tuple[str, ...]] = []

    def add_row(method, k, accuracy, kind, **extra) -> None:
        rows.append(ReportRow(method, k, None, accuracy, None, {"kind": kind, "split": inputs.split, **extra}))

    # the teacher: clip accuracy on eval clips, z rate on train and eval clips (the cache holds every clip)
    cache = clip_outputs.read_clips(inputs.store, inputs.teacher_folder, ["split", "z"])
    train = _equals(cache.column("split"), "train")
    z_all = cache.column("z").to_numpy().astype(np.float64)
    if not train.any():
        notes.append(f"teacher/{inputs.teacher} has no clips of split 'train': no train z rates.")
    train_counts, z_train = _per_kind(all_kinds[train], n, z_all[train])
    eval_counts, z_eval = _per_kind(kinds, n, inputs.teacher_z().astype(np.float64))
    right = (inputs.probs().argmax(axis=1) == inputs.clip_labels()).astype(np.float64)
    _, teacher_accuracy = _per_kind(kinds, n, right)
    share = eval_counts / max(eval_counts[-1], 1.0)
    for i, label in enumerate(labels):
        add_row("teacher", None, 100.0 * teacher_accuracy[i], label, quantity="teacher", display="Teacher",
                eval_clips=int(eval_counts[i]), eval_share=share[i], train_clips=int(train_counts[i]),
                z_rate_train=z_train[i], z_rate_eval=z_eval[i])
    cells += [(f"Share of {inputs.split} clips", "", *(_fmt(v, 2) for v in share), ""),
              (f"Teacher clip top-1 (%), {inputs.split}", inputs.teacher,
               *(_fmt(100 * v, 1) for v in teacher_accuracy), ""),
              ("z rate, train", inputs.teacher, *(_fmt(v, 2) for v in z_train), ""),
              (f"z rate, {inputs.split}", inputs.teacher, *(_fmt(v, 2) for v in z_eval), "")]

    # each clip-level score run: its mean z~ per kind, and how well its ranking tells informative clips apart
    entries = _resolve(inputs, methods, builtins=(), notes=notes) if methods else list(inputs.runs)
    informative = kinds == names.index("informative") if "informative" in names else np.zeros(len(kinds), bool)
    used, run_ranks = [], []
    for run in entries:
        if run.video_level:
            notes.append(f"{run.display}: a video-level student has no clip scores; not in this table.")
            continue
        try:
            confidence = inputs.run_column(run, "confidence")
            rank_score = inputs.run_column(run, "rank_score")
            ranks = inputs.ranks(f"scores/{run.run} rank_score", lambda: rank_score)[0]
        except _Omit as exc:
            notes.append(f"{run.display}: {exc}; omitted.")
            continue
        finite = np.isfinite(confidence)
        counts, mean_confidence = _per_kind(kinds[finite], n, confidence[finite])
        auroc = metrics.auroc(rank_score, informative) if informative.any() and not informative.all() else float("nan")
        for i, label in enumerate(labels):
            add_row(run.key, None, None, label, quantity="confidence", display=run.display, run=run.run,
                    clips=int(counts[i]), mean_confidence=mean_confidence[i],
                    **({"auroc_informative_vs_ambiguous": auroc} if label == "all" else {}))
        cells.append((f"Mean z~, {inputs.split}", run.display, *(_fmt(v, 2) for v in mean_confidence),
                      _fmt(auroc, 3)))
        used.append(run)
        run_ranks.append((run.key, run.display, ranks))

    # the kinds of the clips each method sends to the teacher at K
    def oracle_ranks():
        return inputs.ranks("oracle", lambda: inputs.probs()[np.arange(inputs.num_clips), inputs.clip_labels()])[0]

    def seeded(method):
        return [ev.seeded_ranking(method, seed)[0] for seed in RANDOM_SEEDS]

    selectors = [(key, display, (lambda ranks=ranks: [ranks])) for key, display, ranks in run_ranks]
    selectors += [("oracle", "Oracle", lambda: [oracle_ranks()]),
                  ("perfect-z", "Perfect z", lambda: seeded("perfect-z")),
                  ("equidistant", "Equidistant", None),  # a mask, not a ranking
                  ("random", "Random", lambda: seeded("random"))]
    for k in ks:
        for key, display, ranking in selectors:
            masks = ([samplers.equidistant_mask(inputs.offsets, k)] if ranking is None
                     else [ranks < k for ranks in ranking()])
            # per seed: picks per kind; the share is their mean over seeds (one "seed" for deterministic methods)
            picks = np.mean([np.bincount(kinds[mask], minlength=n) for mask in masks], axis=0)
            shares = picks / picks.sum()
            for i, label in enumerate(names):
                add_row(key, k, None, label, quantity="picks", display=display, picks=float(picks[i]),
                        pick_share=float(shares[i]))
            cells.append((f"Share of picks, K={k}", display, *(_fmt(v, 2) for v in shares), "", ""))

    columns = ("Quantity", "Method", *names, "all", "AUROC informative vs ambiguous")
    seeds = ", ".join(map(str, RANDOM_SEEDS))
    explain = (
        f"Clip kinds from {clip_kinds} (the benchmark generator's ground truth; read for this table only), joined "
        f"with the store's clips by video path and clip index. Share: of the {int(eval_counts[-1])} clips of split "
        f"'{inputs.split}'. Teacher clip top-1: the argmax of teacher/{inputs.teacher}'s softmax against the label. "
        f"z rate: mean z of teacher/{inputs.teacher}/clips.parquet on split 'train' ({int(train_counts[-1])} clips) "
        f"and '{inputs.split}'. Mean z~: each run's stored confidence (scores/<run>/clips.parquet, the sigmoid of "
        "its confidence logit) over the clips of each kind (n/a: no confidence head); AUROC: its rank_score "
        "separating informative clips from every ambiguous kind. Share of picks: the kinds of the clips each method "
        f"sends to the teacher at K (Random and Perfect z: mean over seeds {seeds}; Oracle and Perfect z cheat with "
        "the label).")
    return ReportTable(
        "kinds", f"Clip kinds: teacher accuracy, z rates, student confidence and the clips each method picks, "
                 f"teacher '{inputs.teacher}', split '{inputs.split}'",
        columns, _grid(cells, len(columns)), tuple(rows),
        _footer(inputs, rows, used, notes + [explain], time_lines=False))


def _sgs_table(inputs: _Inputs, sgs_inputs: _Inputs, ks, methods, notes) -> ReportTable:
    if not np.array_equal(inputs.clip_id, sgs_inputs.clip_id):
        raise StoreError(f"{inputs.store.url}: teacher caches '{inputs.teacher}' and '{sgs_inputs.teacher}' hold "
                         f"different clips of split '{inputs.split}'; re-run teacher-cache for both on this store")
    bins = sgs_inputs.clip_values("sgs_bins")
    if bins is None:
        raise ValueError(f"{inputs.store.path(sgs_inputs.teacher_folder)}: no 'sgs_bins' column: not a teacher cache "
                         "made with teacher-cache --sgs")
    entries = [e for e in _resolve(inputs, methods or SGS_METHODS, builtins=("equidistant",), notes=notes)
               if e != "dense"]
    rows: list[ReportRow] = []
    cells: list[tuple[str, ...]] = []
    used: list[_Run] = []
    for suffix, inp in (("", inputs), ("+sgs", sgs_inputs)):
        ev = _Evaluator(inp)
        flops = inp.clip_values("flops")
        clip_bins = inp.clip_values("sgs_bins")
        tag = " (SGS teacher)" if suffix else ""
        if flops is None:
            notes.append(f"teacher/{inp.teacher}/clips.parquet has no 'flops' column (made before FLOPs were "
                         "stored); its GFLOPs are n/a.")

        def add(row: ReportRow, chosen: np.ndarray, display: str) -> None:
            extra = dict(row.extra)
            extra.update(display=display, teacher=inp.teacher, teacher_clips=int(chosen.sum()))
            if flops is not None:
                per_video = np.bincount(inp.owner()[chosen], weights=flops[chosen], minlength=inp.num_videos)
                extra["gflops_per_teacher_clip"] = float(flops[chosen].mean()) / 1e9
                extra["teacher_gflops_per_video"] = float(per_video.mean()) / 1e9
            if clip_bins is not None:
                extra["mean_sgs_bins"] = float(clip_bins[chosen].mean())
            row = ReportRow(row.method + suffix, row.k, row.ks, row.accuracy, row.time_per_video_s, extra)
            rows.append(row)
            cells.append((display, inp.teacher, "All" if row.k is None else str(row.k), _fmt(row.accuracy, 2),
                          _format_seconds(row.time_per_video_s),
                          _fmt(extra.get("gflops_per_teacher_clip"), 3), _fmt(extra.get("teacher_gflops_per_video"), 3),
                          _fmt(extra.get("mean_sgs_bins"), 2) if clip_bins is not None else ""))

        add(ev.dense(), np.ones(inp.num_clips, dtype=bool), "Dense" + tag)
        for entry in entries:
            try:
                by_k = ev.method(entry, ks)
                if isinstance(entry, _Run):
                    ranks = inp.ranks(f"scores/{entry.run} rank_score", lambda: inp.run_column(entry, "rank_score"))[0]
                    masks = {k: ranks < k for k in by_k}
                    if not suffix:
                        used.append(entry)
                else:
                    masks = {k: samplers.equidistant_mask(inp.offsets, k) for k in by_k}
            except _Omit as exc:
                notes.append(f"{_entry_name(entry)}{tag}: {exc}; omitted.")
                continue
            for k, row in by_k.items():
                add(row, masks[k], _entry_name(entry) + tag)
    counts = np.bincount(bins.astype(np.int64))
    series = {"sgs_bins": {"bins": list(range(1, len(counts))), "clips": counts[1:].tolist(),
                           "teacher": sgs_inputs.teacher}}
    sgs_meta = sgs_inputs.teacher_meta.get("sgs") or {}
    explain = [
        f"SGS teacher '{sgs_inputs.teacher}': SGS after {sgs_meta.get('stage', '?')}, {sgs_meta.get('kernel', '?')} "
        f"kernel; mean B' over the split's {len(bins)} clips {bins.mean():.2f}. Its rows use the same student "
        f"rankings (score runs made for teacher '{inputs.teacher}') to choose the same clips; "
        f"teacher/{sgs_inputs.teacher}/ classifies them and its measured seconds"
        + (" and latency curve" if sgs_inputs.curve is not None else "") + " cost them.",
        "GFLOPs: the teacher's, from each cache's clips.parquet 'flops' (torch.utils.flop_counter: 2 x "
        "multiply-accumulates of convolutions, linears and matmuls; with SGS measured as the part before SGS + the "
        "part after it at the clip's B'). Per teacher clip: mean over the clips the teacher classifies; per video: "
        "their sum, mean over videos. The student's cost is in the time only.",
        _device_line(f"SGS teacher '{sgs_inputs.teacher}'", sgs_inputs.teacher_meta) + ".",
    ]
    columns = ("Method", "Teacher", "K", "Top-1 (%)", "Time per video", "GFLOPs per teacher clip",
               "Teacher GFLOPs per video", "Mean B'")
    return ReportTable(
        "sgs", f"Plain teacher '{inputs.teacher}' against SGS teacher '{sgs_inputs.teacher}': top-1, time per video "
               f"and GFLOPs, split '{inputs.split}'",
        columns, tuple(cells), tuple(rows), _footer(inputs, rows, used, notes + explain), series)


def _choose_sgs_teacher(store: Store, sgs_teacher: Optional[str], main: str) -> str:
    """``sgs_teacher``, or the store's only teacher cache made with SGS."""
    if sgs_teacher is not None:
        return sgs_teacher
    complete, _ = report_outputs.output_folders(store, clip_outputs.TEACHER_ROOT)
    found = [name for name in complete if name != main
             and clip_outputs.read_meta(store, clip_outputs.teacher_folder(name)).get("sgs")]
    if len(found) != 1:
        what = "no teacher cache made with SGS" if not found else f"several SGS teacher caches ({', '.join(found)})"
        raise ValueError(f"{store.url}: {what}; name one with --sgs-teacher (run `condi-pipe teacher-cache --sgs`)")
    return found[0]


def _clip_budget_notes(inputs: "_Inputs", k_values, explicit: bool) -> list[str]:
    """K above a video's clip count sends all its clips (short videos do): a note says how many videos that is.
    Explicit K values that all exceed every video's count ask for nothing but Dense: an error naming them."""
    if not len(inputs.clips):
        return []
    longest, notes = int(inputs.clips.max()), []
    if explicit and min(k_values) > longest:
        raise ValueError(f"K={','.join(map(str, k_values))} is larger than the longest {inputs.split} video's "
                         f"{longest} clips: every video would send all its clips (that is Dense); choose K <= {longest}")
    for k in k_values:
        short = int((inputs.clips < k).sum())
        if short == len(inputs.clips):
            notes.append(f"K={k}: at least every video's clip count, so every video uses all its clips (as Dense).")
        elif short:
            notes.append(f"K={k}: {short} of {len(inputs.clips)} videos have fewer than {k} clips and use all of them.")
    return notes


def build_report(
    store: Union[Store, str],
    table: Union[str, int],
    *,
    teacher: Optional[str] = None,
    split: Optional[str] = None,
    k: Union[str, Iterable[int], None] = None,
    ks: Union[str, Iterable[int], None] = None,
    methods: Union[str, Iterable[str], None] = None,
    teacher_time: str = "auto",
    sgs_teacher: Optional[str] = None,
    clip_kinds: Optional[str] = None,
) -> ReportTable:
    """Compute one table from the stored outputs of ``store``.

    ``k``: clip budgets K (default per table: 1,3,5,7; accuracy 1..10; oracle 1,5,10,15). ``ks``: the K_s values
    of table 4 (default 0,1,3,5; only K_s <= K is computed). ``methods``: method names or score-run names
    (comma-separated or a list); default per table. ``teacher``: the teacher cache (needed only when the store
    has several); ``split``: default ``test``, else ``val``. ``teacher_time``: how the K_t < N clips sent to the
    teacher are costed: ``share`` (the video's per-clip share of its measured batch, x K_t) or ``curve`` (one
    batch of K_t from the teacher cache's measured latency curve); ``auto`` (default): the curve when the cache
    has one, since that is how a served video's K_t clips actually run; see :mod:`condi_pipe.methods.time_model`.
    ``sgs_teacher``: table ``sgs``'s SGS teacher cache (default: the store's only cache made with SGS).
    ``clip_kinds``: table ``kinds``'s sidecar, the generated benchmark's ``synth_clips.csv`` (a local path).
    """
    table = str(table).strip().lower()
    if table not in TABLES:
        raise ValueError(f"unknown table '{table}' (tables: {', '.join(TABLES)})")
    store = store if isinstance(store, Store) else Store(store)
    read_run(store)  # refuses a store from a newer format version before reading anything
    k_values = parse_int_list(k, "k") or DEFAULT_K[table]
    if any(v < 1 for v in k_values):
        raise ValueError(f"every K must be >= 1, got {list(k_values)}")
    if ks is not None and table != "4":
        raise ValueError("ks (K_s, the clips the student classifies) applies to table 4 only; use k for clip budgets")
    ks_values = parse_int_list(ks, "ks") or DEFAULT_KS
    if any(v < 0 for v in ks_values):
        raise ValueError(f"every K_s must be >= 0, got {list(ks_values)}")
    if table == "confidence" and k is not None:
        raise ValueError("k does not apply to the confidence table")
    if isinstance(methods, str):
        methods = [m for m in methods.split(",") if m.strip()]
    methods = list(methods) if methods else None
    if table == "oracle" and methods:
        raise ValueError("methods do not apply to the oracle table (it is Dense against Oracle)")
    if table == "kinds" and clip_kinds is None:
        raise ValueError("table kinds needs the benchmark's clip kinds: --clip-kinds PATH/synth_clips.csv")
    if table != "kinds" and clip_kinds is not None:
        raise ValueError("clip kinds (--clip-kinds) apply to table kinds only")
    if teacher_time not in TEACHER_TIME:
        raise ValueError(f"unknown teacher time model '{teacher_time}' (models: {', '.join(TEACHER_TIME)})")
    inputs = _Inputs(store, teacher, split, teacher_time)
    if teacher_time == "auto":
        inputs.teacher_time = teacher_time = ("side-by-side" if inputs.side_by_side is not None and table != "sgs"
                                              else "curve" if inputs.curve is not None else "share")
    if teacher_time == "side-by-side" and inputs.side_by_side is None:
        raise ValueError(f"{store.url}: {inputs.side_by_side_missing}; run `condi-pipe time-models --teacher "
                         f"{inputs.teacher}` (or use teacher_time 'curve' or 'share')")
    if teacher_time == "curve" and inputs.curve is None:
        raise ValueError(f"{store.path(inputs.teacher_folder, 'meta.json')}: no latency_curve in this teacher cache; "
                         "use teacher_time 'share' (or re-run teacher-cache)")
    notes = list(inputs.notes)
    if table != "confidence":
        notes += _clip_budget_notes(inputs, k_values, explicit=k is not None)
    if table == "3":
        return _table3(inputs, k_values, methods, notes)
    if table == "4":
        return _table4(inputs, k_values, ks_values, methods, notes)
    if table == "accuracy":
        return _accuracy_table(inputs, k_values, methods, notes)
    if table == "oracle":
        return _oracle_table(inputs, k_values, notes)
    if table == "sgs":
        sgs_name = _choose_sgs_teacher(store, sgs_teacher, inputs.teacher)
        if sgs_name == inputs.teacher:
            raise ValueError(f"the SGS teacher '{sgs_name}' is also the main teacher; choose the plain one with --teacher")
        if teacher_time == "side-by-side":
            raise ValueError("table sgs compares two teacher caches, which `condi-pipe time-models` does not time "
                             "together; use teacher_time 'auto', 'curve' or 'share'")
        if inputs.side_by_side is not None:
            inputs.side_by_side_missing = "table sgs: the SGS teacher is not timed side by side with the plain one"
        sgs_inputs = _Inputs(store, sgs_name, inputs.split, teacher_time, runs_teacher=inputs.teacher)
        if teacher_time == "curve" and sgs_inputs.curve is None:
            sgs_inputs.teacher_time = "share"
            notes.append(f"teacher/{sgs_name}/meta.json has no latency curve: its K_t clips cost their share.")
        notes.extend(sgs_inputs.notes)
        return _sgs_table(inputs, sgs_inputs, k_values, methods, notes)
    if table == "kinds":
        return _kinds_table(inputs, k_values, methods, str(clip_kinds), notes)
    return _confidence_table(inputs, methods, notes)


# ------------------------------------------------------------------------------------------------ rendering


def render(report: ReportTable, fmt: str = "md") -> str:
    """The table as Markdown, CSV (footer as ``#`` lines), JSON (a list of row objects) or LaTeX."""
    fmt = fmt.lower()
    if fmt == "json":
        return json.dumps(report.to_json(), indent=2) + "\n"
    if fmt == "md":
        widths = [max(len(c), *(len(row[i]) for row in report.cells)) if report.cells else len(c)
                  for i, c in enumerate(report.columns)]
        line = lambda cells: "| " + " | ".join(c.ljust(w) for c, w in zip(cells, widths)) + " |"  # noqa: E731
        out = [f"**{report.title}**", "", line(report.columns), "|" + "|".join("-" * (w + 2) for w in widths) + "|"]
        out += [line(row) for row in report.cells]
        out += [""] + [f"{text}  " if i < len(report.footer) - 1 else text for i, text in enumerate(report.footer)]
        return "\n".join(out) + "\n"
    if fmt == "csv":
        buf = io.StringIO()
        writer = csv.writer(buf, lineterminator="\n")
        writer.writerow(report.columns)
        writer.writerows(report.cells)
        for text in report.footer:
            buf.write(f"# {text}\n")
        return buf.getvalue()
    if fmt == "latex":
        return _latex(report)
    raise ValueError(f"unknown format '{fmt}' (formats: {', '.join(FORMATS)})")


_LATEX_ESCAPES = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_",
                  "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}",
                  "<": r"\textless{}", ">": r"\textgreater{}"}


def _tex(text: str) -> str:
    return "".join(_LATEX_ESCAPES.get(ch, ch) for ch in str(text))


def _latex(report: ReportTable) -> str:
    spec = "l" * len(report.columns)
    out = [r"% needs \usepackage{booktabs}", r"\begin{table}[t]", r"\centering", rf"\caption{{{_tex(report.title)}}}",
           rf"\begin{{tabular}}{{{spec}}}",
           r"\toprule", " & ".join(_tex(c) for c in report.columns) + r" \\", r"\midrule"]
    out += [" & ".join(_tex(c) for c in row) + r" \\" for row in report.cells]
    out += [r"\bottomrule", r"\end{tabular}", r"\par\smallskip", r"{\footnotesize"]
    out += [_tex(text) + r"\par" for text in report.footer]
    out += ["}", r"\end{table}"]
    return "\n".join(out) + "\n"


# ------------------------------------------------------------------------------------------------- plotting


def _styles():
    """Colour, marker and line style per line, all three varying, so lines that coincide stay distinguishable."""
    import itertools

    colors = ["tab:blue", "tab:orange", "tab:green", "tab:red", "tab:purple", "tab:brown", "tab:pink", "tab:olive",
              "tab:cyan", "tab:gray"]
    markers = ["o", "s", "^", "D", "v", "P", "X", "<", ">", "h"]
    dashes = ["-", "--", "-.", ":"]
    for i in itertools.count():
        yield {"color": colors[i % len(colors)], "marker": markers[i % len(markers)],
               "linestyle": dashes[i % len(dashes)], "markersize": 6 - (i % 3)}


def plot_report(report: ReportTable, path: str) -> None:
    """Write a PNG for ``report`` with matplotlib's Agg canvas (no GUI, no global backend switch).

    accuracy: accuracy against K per method, Dense dashed (Fig. 4); 3 and 4: accuracy against time per video
    (the trade-off); oracle: accuracy against k; confidence: FPR per epoch per run (Fig. 5); sgs: the histogram
    of B' over the split's clips.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    fig = Figure(figsize=(8, 5.2), dpi=120)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    rows = report.rows
    dense = next((r for r in rows if r.method == "dense"), None)
    groups: dict[str, list[ReportRow]] = {}
    for row in rows:
        if row.method != "dense":
            groups.setdefault(str(row.extra.get("display", row.method)), []).append(row)
    styles = _styles()

    def line(xs, ys, label, **kwargs):
        style = next(styles)
        return ax.plot(xs, ys, label=label, alpha=0.85, **{**style, **kwargs})[0]

    def annotate(text, x, y, color):
        ax.annotate(text, (x, y), textcoords="offset points", xytext=(4, 4), fontsize=7, color=color)

    if report.table in ("accuracy", "oracle"):
        for name, group in groups.items():
            group = sorted(group, key=lambda r: r.k)
            line([r.k for r in group], [r.accuracy for r in group], name,
                 **({} if len(group) > 1 else {"linestyle": "none", "markersize": 8}))
        if dense is not None:
            ax.axhline(dense.accuracy, color="black", linestyle="--", label=f"Dense ({dense.accuracy:.2f})")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_xlabel("K (clips sent to the teacher)")
        ax.set_ylabel("top-1 accuracy (%)")
    elif report.table in ("3", "4"):
        for name, group in groups.items():
            if report.table == "4":
                for k in sorted({r.k for r in group}):
                    sub = sorted((r for r in group if r.k == k), key=lambda r: r.ks)
                    drawn = line([r.time_per_video_s for r in sub], [r.accuracy for r in sub], f"{name}, K={k}")
                    for r in sub:
                        annotate(f"K_s={r.ks}", r.time_per_video_s, r.accuracy, drawn.get_color())
            else:
                group = sorted(group, key=lambda r: r.k)
                drawn = line([r.time_per_video_s for r in group], [r.accuracy for r in group], name)
                for r in group:
                    annotate(f"K={r.k}", r.time_per_video_s, r.accuracy, drawn.get_color())
        if dense is not None:
            ax.plot([dense.time_per_video_s], [dense.accuracy], marker="*", markersize=14, color="black",
                    linestyle="none", label=f"Dense ({_format_seconds(dense.time_per_video_s)}, {dense.accuracy:.2f})")
        ax.set_xlabel("mean time per video (s)")
        ax.set_ylabel("top-1 accuracy (%)")
    elif report.table == "sgs":
        data = report.series.get("sgs_bins", {})
        ax.bar(data.get("bins", []), data.get("clips", []), color="tab:blue", alpha=0.85)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_xlabel(f"B' (temporal slices kept after SGS), teacher '{data.get('teacher', '?')}'")
        ax.set_ylabel("clips")
    elif report.table == "confidence":
        for name, data in report.series.items():
            points = [(e, f) for e, f in zip(data["epoch"], data["fpr"]) if f is not None]
            line([p[0] for p in points], [p[1] for p in points], name)
        if not report.series:
            ax.text(0.5, 0.5, "no training history with an 'fpr' column", ha="center", va="center",
                    transform=ax.transAxes)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_xlabel("epoch")
        ax.set_ylabel("false-positive rate of z~ > 0.5")
    else:
        raise ValueError(f"no plot for table '{report.table}'")
    ax.set_title(report.title, fontsize=9, wrap=True)
    ax.grid(True, alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=8, loc="best", framealpha=0.85)
    fig.tight_layout()
    fig.savefig(path, format="png")
