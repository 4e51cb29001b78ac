"""Report inputs held in memory: a table computed from plain arrays, without a store.

>>> import numpy as np
>>> inputs = MemoryInputs(video_id=[7, 9], labels=[0, 1], clips=[2, 1],
...                       teacher_logits=[[2.0, 0.0], [0.0, 1.0], [0.0, 3.0]], teacher_seconds=[0.2, 0.1])
>>> table = build_table(inputs, "accuracy", k=[1])
>>> [(row.method, row.k, row.accuracy) for row in table.rows if row.method in ("dense", "oracle")]
[('oracle', 1, 100.0), ('dense', None, 100.0)]
"""

from __future__ import annotations

from typing import Any, Iterable, Mapping, Optional, Sequence, Union

import numpy as np

from condi_pipe.methods.metrics import softmax_entropy
from condi_pipe.report.build import check_options, clip_budget_notes
from condi_pipe.report.evaluate import describe_runs
from condi_pipe.report.inputs import OutputUnavailable, ReportInputs, ScoreRunOutputs, ValidationOutputs
from condi_pipe.report.registry import TableRequest
from condi_pipe.report.results import ReportTable
from condi_pipe.storage import model_timings


class MemoryInputs(ReportInputs):
    """One split's videos (ids, labels, clip counts) with the teacher's logits per clip and measured seconds per
    video, and score runs as ``{run: {"loss", "logits", "rank_score", "confidence", "seconds"}}`` (per clip, per
    clip, per clip, per video), optionally with the ``"context_ranking"`` record ``score`` chooses on validation,
    and ``model_flops`` (FLOPs per clip by model key, as ``time-models`` stores them). Clips are in video order;
    times are costed per clip share (``share``)."""

    def __init__(self, *, video_id: Sequence[int], labels: Sequence[int], clips: Sequence[int],
                 teacher_logits: Any, teacher_seconds: Sequence[float], runs: Optional[Mapping[str, dict]] = None,
                 teacher: str = "teacher", split: str = "test",
                 model_flops: Optional[Mapping[str, int]] = None) -> None:
        self.store = None
        self.teacher, self.split, self.teacher_time = teacher, split, "share"
        self.teacher_folder = f"teacher/{teacher}"
        self.teacher_meta: dict = {}
        self.curve = None
        self.side_by_side, self.side_by_side_missing = None, "in-memory inputs"
        self.runs_teacher = None
        self.notes: list[str] = []
        self._cache: dict[Any, Any] = {}
        self.video_id = np.asarray(video_id, dtype=np.int64)
        self.labels = np.asarray(labels, dtype=np.int64)
        self.clips = np.asarray(clips, dtype=np.int64)
        self.offsets = np.concatenate([[0], np.cumsum(self.clips)]).astype(np.int64)
        self.clip_id = np.arange(self.offsets[-1], dtype=np.int64)
        self.rows = self.clip_id
        self._logits = np.asarray(teacher_logits, dtype=np.float32)
        if self._logits.shape[0] != self.offsets[-1]:
            raise ValueError(f"teacher_logits has {self._logits.shape[0]} rows for {self.offsets[-1]} clips")
        self.teacher_seconds = np.asarray(teacher_seconds, dtype=np.float64)
        self._runs = {name: dict(data) for name, data in (runs or {}).items()}
        # FLOPs per clip by model key (``teacher/<teacher>``, ``scores/<run>``), as time-models stores them
        self._model_flops = None if model_flops is None else {
            model: model_timings.ModelFlops(model, "", None, None, int(flops), (16, 112, 112))
            for model, flops in model_flops.items()}
        # a run's "context_ranking" is the record `score` writes to its meta.json (the ranking chosen on validation)
        self.runs = [ScoreRunOutputs(name, data["loss"], {"run": name, "loss": data["loss"],
                                                          "context_ranking": data.get("context_ranking")})
                     for name, data in self._runs.items()]

    @property
    def location(self) -> str:
        return "memory"

    def teacher_logits(self) -> np.ndarray:
        return self._logits.copy()

    def teacher_z(self) -> np.ndarray:
        return (self._logits.argmax(axis=1) == self.clip_labels()).astype(np.int8)

    def clip_values(self, column: str) -> Optional[np.ndarray]:
        return None

    def model_flops(self) -> Optional[dict[str, model_timings.ModelFlops]]:
        return self._model_flops

    def clip_frames(self, start: int, stop: int) -> np.ndarray:
        raise OutputUnavailable("in-memory inputs hold no clip frames")

    def _run(self, run: ScoreRunOutputs, key: str) -> np.ndarray:
        data = self._runs[run.run]
        if data.get(key) is None:
            raise OutputUnavailable(f"run {run.run} has no {key}")
        return np.asarray(data[key], dtype=np.float64)

    def run_column(self, run: ScoreRunOutputs, column: str) -> np.ndarray:
        if column == "entropy":  # what score stores: the entropy of the student's softmax
            return np.asarray(softmax_entropy(self.run_logits(run).astype(np.float64)), dtype=np.float64)
        if column == "pred":
            return self.run_logits(run).argmax(axis=1).astype(np.float64)
        if column == "confidence" and self._runs[run.run].get("confidence") is None:
            return np.full(self.num_clips, np.nan)  # a student without a confidence head
        return self._run(run, column)

    def run_logits(self, run: ScoreRunOutputs) -> np.ndarray:
        return self._run(run, "logits").astype(np.float32)

    def run_validation(self, run: ScoreRunOutputs) -> ValidationOutputs:
        """A run's ``"validation"``: {video_id, labels, clips, rank_score, logits, teacher_logits} of its validation
        videos (clips in video order), as ``score`` keeps them."""
        part = self._runs[run.run].get("validation")
        if part is None:
            raise OutputUnavailable(f"run {run.run} keeps no validation scores")
        clips = np.asarray(part["clips"], dtype=np.int64)
        return ValidationOutputs(np.asarray(part["video_id"], np.int64), np.asarray(part["labels"], np.int64),
                                 np.concatenate([[0], np.cumsum(clips)]).astype(np.int64),
                                 np.asarray(part["rank_score"], np.float64), np.asarray(part["logits"], np.float32),
                                 np.asarray(part["teacher_logits"], np.float32))

    def run_videos(self, run: ScoreRunOutputs, columns: Sequence[str]) -> dict[str, np.ndarray]:
        return {"seconds": self._run(run, "seconds"), **{c: self._run(run, c) for c in columns}}

    def student_meta(self, run: ScoreRunOutputs) -> dict:
        return {}

    def history(self, run: ScoreRunOutputs):
        return None


def build_table(inputs: ReportInputs, table: str, *, k: Union[str, Iterable[int], None] = None,
                ks: Union[str, Iterable[int], None] = None,
                methods: Union[str, Iterable[str], None] = None) -> ReportTable:
    """Compute a registered table from loaded inputs (e.g. :class:`MemoryInputs`), with the options
    :func:`condi_pipe.report.build_report` checks."""
    spec, k_values, ks_values, methods = check_options(table, k, ks, methods, None)
    describe_runs(inputs)
    notes = list(inputs.notes) + (clip_budget_notes(inputs, k_values, explicit=k is not None) if spec.uses_k else [])
    return spec.build(TableRequest(inputs, tuple(k_values), tuple(ks_values), methods, notes))
