"""GFLOPs per video of the report's rows, and the Pareto front of accuracy against GFLOPs (Table 3, adaptive).

Each model's FLOPs per clip come from ``timings/<teacher>/flops.parquet`` (counted once by ``condi-pipe
time-models``, :mod:`condi_pipe.models.flops`); a row's GFLOPs per video follow from its clip budget
(:func:`condi_pipe.methods.video_cost.mean_gflops`): the student on the clips it sees plus the teacher on the
clips it ran (an adaptive row: the clips each video sent, :func:`sent_gflops`), averaged over the split's
videos. A store timed before FLOPs were counted has no counts: its rows carry ``gflops_per_video: null`` and the
table says which command adds them.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any, Mapping, NamedTuple, Optional, Sequence

import numpy as np

from condi_pipe.methods.video_cost import GflopsBreakdown, mean_gflops, pareto_front
from condi_pipe.report.inputs import ReportInputs
from condi_pipe.report.render import format_gflops
from condi_pipe.report.results import ReportRow
from condi_pipe.storage import model_timings

#: The JSON keys every Evaluator row gets (None where a model of the row has no count).
GFLOPS_KEYS = ("gflops_per_video", "student_gflops", "teacher_gflops")
PLOT_SERIES = "accuracy_vs_gflops"  # ReportTable.series key of the GFLOPs figure (report.plot)


class ClipGflops(NamedTuple):
    """GFLOPs per clip of the models whose stored count matches the report's outputs, and why others have none."""

    per_clip: dict[str, float]  # model key (teacher/<name>, scores/<run>) -> GFLOPs per clip
    input_shape: dict[str, tuple]  # model key -> (T, H, W) of the network input counted
    missing: dict[str, str]  # model key -> why it has no count


def _same_architecture(stored: model_timings.ModelFlops, architecture: Any, width: Any) -> bool:
    """Whether a stored count is of the architecture (and width) that made the outputs; unknown sides agree."""
    if stored.architecture and architecture and stored.architecture != architecture:
        return False
    return stored.width is None or width is None or float(stored.width) == float(width)


def clip_gflops(inputs: ReportInputs) -> ClipGflops:
    """The counts of the teacher and every score run of ``inputs`` (memoised)."""
    return inputs.cached("clip_gflops", lambda: _clip_gflops(inputs))


def _clip_gflops(inputs: ReportInputs) -> ClipGflops:
    models = {model_timings.teacher_key(inputs.teacher): (inputs.teacher_meta.get("architecture"),
                                                         inputs.teacher_meta.get("width"))}
    models.update({model_timings.run_key(run.run): (run.meta.get("student"), run.meta.get("width"))
                   for run in inputs.runs})
    stored = inputs.model_flops()
    per_clip, shapes, missing = {}, {}, {}
    for model, (architecture, width) in models.items():
        found = None if stored is None else stored.get(model)
        if found is None:
            missing[model] = "not counted"
        elif not _same_architecture(found, architecture, width):
            missing[model] = f"counted for {found.architecture}, but the outputs were made by {architecture}"
        else:
            per_clip[model], shapes[model] = found.flops_per_clip / 1e9, tuple(found.input_shape)
    return ClipGflops(per_clip, shapes, missing)


def row_gflops(inputs: ReportInputs, run: Optional[str], extra: Mapping[str, Any]) -> dict[str, Optional[float]]:
    """The GFLOPs parts of one Evaluator row (``gflops_per_video`` = ``student_gflops`` + ``teacher_gflops``) from
    its ``k_t`` (None: Dense, all N clips) and, for a video-level student, ``clips_seen_mean``; every value None when
    a model of the row has no count, and no keys for a row without ``k_t``."""
    if "k_t" not in extra:
        return {}
    k_t = extra["k_t"]
    return _gflops(inputs, run, inputs.clips if k_t is None else int(k_t), extra.get("clips_seen_mean"))


def sent_gflops(inputs: ReportInputs, run: str, clips_sent: np.ndarray) -> dict[str, float | None]:
    """The GFLOPs parts of a row whose videos send clips to the teacher each its own number (an adaptive budget:
    video v sends ``clips_sent[v]``): run's student on all N clips of each video + the teacher on the clips that
    video sent, then the mean over the split's videos; every value None when a model has no count."""
    return _gflops(inputs, run, np.asarray(clips_sent, dtype=np.int64))


def _gflops(inputs: ReportInputs, run: str | None, to_teacher: int | np.ndarray,
            clips_seen_mean: float | None = None) -> dict[str, float | None]:
    counts = clip_gflops(inputs).per_clip
    teacher = counts.get(model_timings.teacher_key(inputs.teacher))
    student = None if run is None else counts.get(model_timings.run_key(run))
    if teacher is None or (run is not None and student is None):
        return dict.fromkeys(GFLOPS_KEYS)
    if run is not None and clips_seen_mean is not None:  # a video-level student sees its k clips
        parts = GflopsBreakdown(student * float(clips_seen_mean),
                                mean_gflops(inputs.clips, to_teacher, teacher).teacher)
    else:
        parts = mean_gflops(inputs.clips, to_teacher, teacher, student)
    return {"gflops_per_video": parts.total, "student_gflops": parts.student, "teacher_gflops": parts.teacher}


def budget_label(row: ReportRow) -> str:
    """A row's budget as figures annotate it: ``K=3``, ``K=3 K_s=1`` (division), ``target=1.5`` (an adaptive row's
    target mean of teacher clips), or "" (Dense)."""
    if row.k is not None:
        return f"K={row.k}" + ("" if row.ks is None else f" K_s={row.ks}")
    target = row.extra.get("target_clips")
    return "" if target is None else f"target={target:g}"


def _label(row: ReportRow) -> str:
    name = str(row.extra.get("display", row.method))
    budget = budget_label(row)
    return f"{name} {budget}" if budget else name


def gflops_notes(inputs: ReportInputs, rows: Sequence[ReportRow]) -> list[str]:
    """How the table's GFLOPs were obtained, or one note saying why they are missing and what adds them."""
    if not any("gflops_per_video" in row.extra for row in rows):
        return []
    counts = clip_gflops(inputs)
    folder = f"timings/{inputs.teacher}/{model_timings.FLOPS_TABLE}"
    command = f"`condi-pipe time-models --teacher {inputs.teacher}`"
    teacher = model_timings.teacher_key(inputs.teacher)
    if teacher in counts.missing and counts.missing[teacher] == "not counted":
        return [(f"GFLOPs per video: not counted for this store ({folder} is absent: timed before `condi-pipe "
                 f"time-models` counted FLOPs, or never timed); {command} adds them without re-timing. JSON "
                 "gflops_per_video: null.")]
    used = {model_timings.run_key(row.extra["run"]): str(row.extra.get("display", row.method)).removesuffix(
        " (division)") for row in rows if row.extra.get("run")}
    models = {teacher: f"teacher '{inputs.teacher}'", **{key: f"{name}'s student" for key, name in used.items()}}
    counted = [f"{name} {format_gflops(counts.per_clip[key])} "
               f"({'x'.join(str(s) for s in counts.input_shape[key])})"
               for key, name in models.items() if key in counts.per_clip]
    notes = [f"GFLOPs per video (after the time in each cell; JSON gflops_per_video = student_gflops + "
             f"teacher_gflops): FLOPs per clip counted once per model by `condi-pipe time-models` ({folder}: "
             "torch.utils.flop_counter.FlopCounterMode on one stored clip at the model's own input, a multiply-add "
             "counted as 2 FLOPs, convolutions, linear layers and matmuls only), GFLOPs per clip: "
             + "; ".join(counted) + ". A method = its student on all N clips (a video-level student on its k) + the "
             "teacher on min(K_t, N) clips; Dense = the teacher on all N; mean over the split's videos; clip "
             "selection is not counted."]
    lacking = [f"{models[key]} ({counts.missing[key]})" for key in models if key in counts.missing]
    if lacking:
        notes.append(f"GFLOPs per video: no usable count in {folder} for {', '.join(lacking)}; those rows have "
                     f"none (JSON null); {command} --force counts them again.")
    return notes


class CostFront(NamedTuple):
    """Rows marked with ``pareto_front`` (None where a row has no GFLOPs), the footer note listing the front, and
    the figure's data (``ReportTable.series``)."""

    rows: tuple[ReportRow, ...]
    notes: list[str]
    series: dict[str, Any]


def cost_front(rows: Sequence[ReportRow]) -> CostFront:
    """The Pareto front of accuracy against GFLOPs per video over ``rows`` (every method and K, Dense included; in
    the adaptive table every fixed K and every policy and target too):
    :func:`condi_pipe.methods.video_cost.pareto_front`."""
    costs = [np.nan if row.extra.get("gflops_per_video") is None or row.accuracy is None
             else float(row.extra["gflops_per_video"]) for row in rows]
    accuracies = [np.nan if row.accuracy is None else float(row.accuracy) for row in rows]
    if all(np.isnan(costs)):
        return CostFront(tuple(rows), [], {})
    front = [int(i) for i in pareto_front(costs, accuracies)]
    marked = tuple(row if np.isnan(cost) else replace(row, extra={**row.extra, "pareto_front": i in front})
                   for i, (row, cost) in enumerate(zip(rows, costs)))
    listed = ", ".join(f"{_label(rows[i])} ({format_gflops(costs[i])} GFLOPs, {accuracies[i]:.2f})" for i in front)
    note = ("Pareto front of accuracy against GFLOPs per video (no other row is at least as accurate at no more "
            f"GFLOPs and better in one; JSON pareto_front), by cost: {listed}.")
    points = [{"label": _label(row), "group": str(row.extra.get("display", row.method)), "method": row.method,
               "k": row.k, "ks": row.ks, "policy": row.extra.get("policy"), "gflops": cost,
               "accuracy": float(row.accuracy), "front": i in front}
              for i, (row, cost) in enumerate(zip(rows, costs)) if not np.isnan(cost)]
    return CostFront(marked, [note], {PLOT_SERIES: {"points": points, "front": [_label(rows[i]) for i in front]}})
