"""The report's view of a store: one teacher cache's clips of one split in flat (video, clip) order, the score
runs made from it, and side-by-side timings, read lazily and memoised.

Clips sit in flat arrays with CSR offsets (video v owns clips ``offsets[v]:offsets[v + 1]``) in report order
(videos by id, clips by id); every array a reader returns is aligned with that order. Only this module knows where
the report's inputs live in a store and how they are stored; :mod:`condi_pipe.report` computes from the arrays.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, NamedTuple, Optional, Sequence

import numpy as np
import pyarrow.compute as pc

from condi_pipe.methods.video_time import curve_seconds
from condi_pipe.storage import clip_outputs, model_timings, training_artifacts
from condi_pipe.storage.clip_array import CLIPS_ARRAY, open_clip_array
from condi_pipe.storage.errors import StoreError
from condi_pipe.storage.manifests import read_clip_batch
from condi_pipe.storage.run_state import stage_record
from condi_pipe.storage.store import Store


class OutputUnavailable(Exception):
    """A method cannot be computed from what the store holds; the message says why (the report shows it as a
    note and omits the method)."""


# ------------------------------------------------------------------------------------------------ helpers


def normalised_name(name: str) -> str:
    """A method or loss name as the registry spells it: lower case, dashes."""
    return str(name).strip().lower().replace("_", "-")


def positions(haystack: np.ndarray, needles: np.ndarray) -> np.ndarray:
    """Index of every needle in ``haystack`` (unique values), -1 where absent."""
    if len(haystack) == 0:
        return np.full(len(needles), -1, dtype=np.int64)
    sorter = np.argsort(haystack, kind="stable")
    idx = np.searchsorted(haystack, needles, sorter=sorter)
    found = sorter[np.clip(idx, 0, len(haystack) - 1)]
    return np.where(haystack[found] == needles, found, -1).astype(np.int64)


def equals_mask(column, value: str) -> np.ndarray:
    """Boolean mask of a string column equal to ``value`` (nulls are not equal)."""
    return pc.fill_null(pc.equal(column, value), False).to_numpy(zero_copy_only=False).astype(bool)


def teacher_caches(store: Store) -> tuple[list[str], list[str]]:
    """(complete, incomplete) teacher cache names of ``store``."""
    return clip_outputs.output_folders(store, clip_outputs.TEACHER_ROOT)


def teacher_meta(store: Store, name: str) -> dict:
    return clip_outputs.read_meta(store, clip_outputs.teacher_folder(name))


@dataclass(frozen=True)
class SideBySideTimings:
    """Curves of ``condi-pipe time-models`` covering the teacher and every score run: {model: curve}, its meta, and
    the decoding it timed beside them (None: unknown, timings made before decoding was timed)."""

    curves: dict
    meta: dict
    decode: Optional[model_timings.DecodeTimings] = None

    @property
    def max_batch(self) -> int:
        return int(self.meta.get("max_batch") or self.meta["batches"][-1])


@dataclass
class ScoreRunOutputs:
    """A finished score run made from the chosen teacher. The report fills in what the method registry says of
    its loss (``video_level``, ``display``) and its ``key``."""

    run: str  # folder name under scores/
    loss: str  # normalised loss name = the method it stands for
    meta: dict
    video_level: bool = False
    key: str = ""  # method key in the results: the loss, or "loss:run" when several runs share a loss
    display: str = ""
    context_ranking: Optional[str] = None  # a variant ranked by this context ranking instead of rank_score

    def chosen_context_ranking(self) -> Optional[str]:
        """The context ranking ``score`` chose on validation ("own": the run's rank_score); None when not judged."""
        record = self.meta.get("context_ranking") or {}
        return record.get("chosen")

    @property
    def folder(self) -> str:
        return clip_outputs.scores_folder(self.run)


class ValidationOutputs(NamedTuple):
    """A score run's outputs on the validation videos its student carved from train, in (video, clip) order with
    CSR offsets, and the report teacher's logits on the same clips: what thresholds are chosen on."""

    video_id: np.ndarray  # (V,)
    labels: np.ndarray  # (V,) int64
    offsets: np.ndarray  # (V + 1,) int64
    rank_score: np.ndarray  # (M,) float64
    logits: np.ndarray  # (M, C) float32, the student's
    teacher_logits: np.ndarray  # (M, C) float32


class ReportInputs:
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
        complete, incomplete = clip_outputs.output_folders(store, clip_outputs.TEACHER_ROOT)
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
        rows = np.flatnonzero(equals_mask(table.column("split"), split))
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
        pos = positions(videos.column("video_id").to_numpy(), self.video_id)
        if (pos < 0).any():
            raise StoreError(f"{store.path(folder, 'videos.parquet')}: no timing for video "
                             f"{int(self.video_id[np.argmax(pos < 0)])}")
        stored_clips = videos.column("clips").to_numpy()[pos]
        if (stored_clips != self.clips).any():
            bad = int(np.argmax(stored_clips != self.clips))
            raise StoreError(f"{store.path(folder, 'videos.parquet')}: video {int(self.video_id[bad])} has "
                             f"{int(stored_clips[bad])} clips there but {int(self.clips[bad])} in clips.parquet")
        self.teacher_seconds = videos.column("seconds").to_numpy().astype(np.float64)[pos]
        if self.teacher_meta.get("from_logits") and np.isnan(self.teacher_seconds).all():
            self.notes.append(f"teacher/{self.teacher} was imported from a logits file (teacher-cache --from-logits): "
                              "no teacher model ran here, so every time that includes the teacher is n/a (JSON: "
                              "null); the accuracies come from the imported logits.")

    @property
    def location(self) -> str:
        """Where the inputs come from, for notes: the store's URL."""
        return self.store.url

    @property
    def num_videos(self) -> int:
        return len(self.video_id)

    @property
    def num_clips(self) -> int:
        return len(self.clip_id)

    # -- score runs ----------------------------------------------------------------------------------------
    def _find_runs(self) -> list[ScoreRunOutputs]:
        store = self.store
        complete, incomplete = clip_outputs.output_folders(store, clip_outputs.SCORES_ROOT)
        for name in incomplete:
            self.notes.append(f"scores/{name}: incomplete (no meta.json); ignored.")
        runs, others, stale = [], [], []
        wanted = self.runs_teacher or self.teacher
        wanted_digest = (self.teacher_meta if self.runs_teacher is None else teacher_meta(store, wanted)).get(
            "weights_sha256")
        for name in complete:
            meta = clip_outputs.read_meta(store, clip_outputs.scores_folder(name))
            teacher = meta.get("teacher")
            if teacher is not None and teacher != wanted:
                others.append(name)  # made from another teacher: not part of this report
                continue
            made_from = meta.get("teacher_weights_sha256")
            if made_from and wanted_digest and made_from != wanted_digest:
                stale.append(name)  # distilled from an earlier cache of a teacher since retrained under this name
                continue
            loss = normalised_name(meta.get("loss") or "")
            if not loss:
                self.notes.append(f"scores/{name}: meta.json names no loss; ignored.")
                continue
            runs.append(ScoreRunOutputs(name, loss, meta))
        if others:
            self.notes.append(f"{len(others)} score run(s) made from other teachers are not in this report "
                              f"({', '.join(others)}).")
        if stale:
            self.notes.append(f"{len(stale)} score run(s) were distilled from other weights of teacher '{wanted}' "
                              f"than teacher/{wanted}/ now holds (retrained since; re-run distill and score): "
                              f"{', '.join(stale)}; not in this report.")
        return runs

    # -- side-by-side timings ------------------------------------------------------------------------------
    def _side_by_side(self) -> tuple[Optional[SideBySideTimings], str]:
        """Timings of ``timings/<teacher>/`` when they cover this teacher and every score run with the weights that
        made the outputs, and every video of the split; else (None, why not)."""
        loaded = model_timings.read_timings(self.store, self.teacher)
        if loaded is None:
            return None, f"no side-by-side timings in timings/{self.teacher}/"
        table, meta = loaded
        curves = model_timings.curves(table)
        digests = {m.get("model"): m.get("weights_sha256") for m in meta.get("models", [])}
        wanted = {model_timings.teacher_key(self.teacher): self.teacher_meta.get("weights_sha256")}
        for run in self.runs:
            scored = stage_record(self.store, f"score/{run.run}").get("config", {})
            wanted[model_timings.run_key(run.run)] = scored.get("student_weights_sha256", digests.get(model_timings.run_key(run.run)))
        for model, digest in wanted.items():
            if model not in curves or model not in digests:
                return None, f"timings/{self.teacher}/ has no timing of {model}"
            if digests[model] != digest:
                return None, f"timings/{self.teacher}/ timed other weights of {model} than its outputs were made with"
        side = SideBySideTimings({model: curves[model] for model in wanted}, meta,
                                 model_timings.read_decode_timings(self.store, self.teacher))
        needed = int(min(self.clips.max(), side.max_batch)) if len(self.clips) else 0
        if any(curve["batch"][-1] < needed for curve in side.curves.values()):
            return None, f"timings/{self.teacher}/ stops below batch {needed} (the longest video of '{self.split}')"
        return side, ""

    def cached(self, key: Any, make: Callable[[], Any]) -> Any:
        if key not in self._cache:
            self._cache[key] = make()
        return self._cache[key]

    # -- teacher arrays ------------------------------------------------------------------------------------
    def teacher_logits(self) -> np.ndarray:
        """Teacher logits (M, C) float32 of the split's clips, in report order (a fresh array: callers may
        overwrite it, e.g. with its softmax in place)."""
        return self._read_rows(self.teacher_folder, "logits", self.rows).astype(np.float32, copy=False)

    def clip_labels(self) -> np.ndarray:
        return self.cached("clip_labels", lambda: np.repeat(self.labels, self.clips))

    def owner(self) -> np.ndarray:
        return self.cached("owner", lambda: np.repeat(np.arange(self.num_videos), self.clips))

    def clip_values(self, column: str) -> Optional[np.ndarray]:
        """A column of the teacher's clips.parquet (e.g. ``flops``, ``sgs_bins``) in report order, float64; None when
        the cache has no such column (caches made before it existed)."""
        def make():
            if column not in clip_outputs.clip_column_names(self.store, self.teacher_folder):
                return None
            values = clip_outputs.read_clips(self.store, self.teacher_folder, [column]).column(column)
            return values.to_numpy(zero_copy_only=False).astype(np.float64)[self.rows]
        return self.cached(("clip_values", column), make)

    def model_flops(self) -> Optional[dict[str, model_timings.ModelFlops]]:
        """{model key: its FLOPs per clip} that ``condi-pipe time-models`` stored beside the teacher's timings; None
        when not counted (read by :mod:`condi_pipe.report.cost`)."""
        return self.cached("model_flops", lambda: model_timings.read_flops(self.store, self.teacher))

    def teacher_z(self) -> np.ndarray:
        def make():
            z = clip_outputs.read_clips(self.store, self.teacher_folder, ["z"]).column("z").to_numpy()
            return z[self.rows].astype(np.int8)
        return self.cached("z", make)

    def clip_frames(self, start: int, stop: int) -> np.ndarray:
        """uint8 (n, T, H, W, 3) frames of the split's clips ``start:stop`` (report order) from the extract
        stage's clip array, which clip ids index (raises OutputUnavailable when the store holds no such array)."""
        def open_array():
            try:
                array = open_clip_array(self.store)
            except StoreError as exc:
                raise OutputUnavailable(str(exc)) from None
            if self.num_clips and int(self.clip_id.max()) >= array.shape[0]:
                raise OutputUnavailable(f"{self.store.path(CLIPS_ARRAY)} holds {array.shape[0]} clips, fewer than "
                                        f"teacher/{self.teacher}'s clip ids reach ({int(self.clip_id.max()) + 1})")
            return array
        return read_clip_batch(self.cached("clip_array", open_array), self.clip_id[start:stop])

    def _read_rows(self, folder: str, name: str, rows: np.ndarray) -> np.ndarray:
        if len(rows) and (np.diff(rows) > 0).all():
            return clip_outputs.array_rows(self.store, folder, name, rows)
        order = np.argsort(rows, kind="stable")
        data = clip_outputs.array_rows(self.store, folder, name, rows[order])
        out = np.empty_like(data)
        out[order] = data
        return out

    # -- score-run arrays, aligned with the teacher's clips ------------------------------------------------
    def run_rows(self, run: ScoreRunOutputs) -> np.ndarray:
        """Rows of the run's clips.parquet holding the split's clips, in report order (raises OutputUnavailable)."""
        def make():
            table = clip_outputs.read_clips(self.store, run.folder, ["clip_id", "split"])
            keep = np.flatnonzero(equals_mask(table.column("split"), self.split))
            ids = table.column("clip_id").to_numpy()[keep]
            if len(ids) == 0:
                raise OutputUnavailable(f"scores/{run.run} has no clips in split '{self.split}'")
            if len(ids) == self.num_clips and np.array_equal(ids, self.clip_id):
                return keep  # same clips in the same order (the usual case)
            pos = positions(ids, self.clip_id)
            # the teacher's clip ids are unique, so every one found among as many rows is a one-to-one match
            if (pos < 0).any() or len(ids) != self.num_clips:
                covered = int((pos >= 0).sum())
                raise OutputUnavailable(f"scores/{run.run} covers {covered} of the {self.num_clips} clips of split "
                            f"'{self.split}' in teacher/{self.teacher} (and has {len(ids)} rows for it)")
            return keep[pos]
        return self.cached(("rows", run.run), make)

    def run_column(self, run: ScoreRunOutputs, column: str) -> np.ndarray:
        def make():
            rows = self.run_rows(run)
            try:
                values = clip_outputs.read_clips(self.store, run.folder, [column]).column(column)
            except (KeyError, ValueError) as exc:  # pyarrow: column not in the schema
                raise OutputUnavailable(f"scores/{run.run}/clips.parquet has no column '{column}' ({exc})") from None
            return values.to_numpy(zero_copy_only=False).astype(np.float64)[rows]
        return self.cached(("column", run.run, column), make)

    def student_meta(self, run: ScoreRunOutputs) -> dict:
        """``students/<run>/meta.json`` of the distill run (empty when absent)."""
        return training_artifacts.read_meta_or_empty(self.store, training_artifacts.student_folder(run.run))

    def history(self, run: ScoreRunOutputs):
        """``students/<run>/history.parquet`` as a table, or None."""
        folder = training_artifacts.student_folder(run.run)
        return training_artifacts.read_history(self.store, folder) if training_artifacts.has_history(
            self.store, folder) else None

    def run_validation(self, run: ScoreRunOutputs) -> ValidationOutputs:
        """The run's kept validation outputs and this teacher's logits on those clips (raises OutputUnavailable
        with what to do when the run keeps none)."""
        def make():
            if not clip_outputs.has_validation_scores(self.store, run.folder):
                if "validation_scores" not in run.meta:
                    raise OutputUnavailable(f"scores/{run.run} keeps no validation scores (scored before `score` "
                                            f"kept them); re-run `condi-pipe score --student {run.run} --force` to "
                                            "add them")
                raise OutputUnavailable(f"scores/{run.run} keeps no validation scores: its student carved no "
                                        "validation part from train (distill --val-fraction 0)")
            table = clip_outputs.read_validation_clips(self.store, run.folder,
                                                       ["clip_id", "video_id", "label", "rank_score"])
            clip_id, video = table.column("clip_id").to_numpy(), table.column("video_id").to_numpy()
            if len(clip_id) == 0:
                raise OutputUnavailable(f"scores/{run.run} keeps an empty validation part")
            order = np.lexsort((clip_id, video))
            clip_id, video = clip_id[order], video[order]
            label = table.column("label").to_numpy()[order].astype(np.int64)
            starts = np.flatnonzero(np.concatenate([[True], video[1:] != video[:-1]]))
            teacher_ids = clip_outputs.read_clips(self.store, self.teacher_folder, ["clip_id"]).column("clip_id")
            rows = positions(teacher_ids.to_numpy(), clip_id)
            if (rows < 0).any():
                missing = int(clip_id[np.argmax(rows < 0)])
                raise OutputUnavailable(f"teacher/{self.teacher} lacks validation clip {missing} of scores/{run.run}")
            return ValidationOutputs(
                video[starts], label[starts], np.append(starts, len(video)).astype(np.int64),
                table.column("rank_score").to_numpy(zero_copy_only=False).astype(np.float64)[order],
                clip_outputs.read_validation_array(self.store, run.folder, "logits")[order].astype(np.float32),
                self._read_rows(self.teacher_folder, "logits", rows).astype(np.float32, copy=False))
        return self.cached(("validation", run.run), make)

    def run_logits(self, run: ScoreRunOutputs) -> np.ndarray:
        """The run's student logits (M, C) float32 aligned with the split's clips (raises OutputUnavailable)."""
        logits = self._read_rows(run.folder, "logits", self.run_rows(run)).astype(np.float32, copy=False)
        if logits.ndim != 2 or len(logits) != self.num_clips:
            raise OutputUnavailable(f"scores/{run.run}/logits.zarr has shape {logits.shape}, expected "
                                    f"({self.num_clips}, classes)")
        return logits

    def run_videos(self, run: ScoreRunOutputs, columns: Sequence[str]) -> dict[str, np.ndarray]:
        """Columns of the run's videos.parquet aligned with the split's videos (raises OutputUnavailable)."""
        def make():
            names = clip_outputs.video_column_names(self.store, run.folder)
            missing = [c for c in ("video_id", "seconds", *columns) if c not in names]
            if missing:
                raise OutputUnavailable(f"scores/{run.run}/videos.parquet has no column {', '.join(missing)}")
            table = clip_outputs.read_videos(self.store, run.folder, ["video_id", "seconds", *columns])
            pos = positions(table.column("video_id").to_numpy(), self.video_id)
            if (pos < 0).any():
                raise OutputUnavailable(f"scores/{run.run} has timings for {int((pos >= 0).sum())} of the {self.num_videos} "
                            f"videos of split '{self.split}'")
            return {c: table.column(c).to_numpy(zero_copy_only=False)[pos] for c in ("seconds", *columns)}
        return self.cached(("videos", run.run, tuple(columns)), make)
