"""Adaptive clip budgets evaluated from stored outputs: each registered stopping rule
(:mod:`condi_pipe.methods.adaptive_budgets`) at thresholds chosen on a score run's validation part, beside the same
run's fixed K, with the time, the paired bootstrap against Dense and against fixed K at equal cost.

**Thresholds.** For each target mean of teacher clips per video, the threshold is chosen on the validation videos
the run keeps (``scores/<run>/validation_clips.parquet``: carved from train by its student's distill run) and the
report teacher's cached logits on them; the test split only receives it. A run that keeps no validation part gets
a note saying how to add one.

**Time.** A video that stops after j clips paid j single-clip teacher calls, one after the other, since each
decision needs the previous clip's output: the teacher's time for one clip alone, x j, in each available model
(side by side: the teacher's curve at batch 1; curve: the latency curve at 1; share: the video's per-clip share),
plus the student over all N clips (it scores every clip first) and the measured selection time. Fixed-K rows send
their K clips as one batch.

**Against fixed K.** An adaptive row spends a non-integer mean of teacher clips; fixed K at the same mean is a mix of
the two neighbouring K (K_lo for a share 1 - w of videos, K_lo + 1 for w), whose expected correctness on video v is
(1 - w) c_lo(v) + w c_hi(v). The paired bootstrap of :mod:`condi_pipe.methods.statistics` compares the adaptive
row's per-video correctness with that mix, at equal mean teacher clips and, likewise, at equal mean time per video.

**GFLOPs.** Where ``time-models`` counted FLOPs, an adaptive row costs the student on all N clips of each video plus
the teacher on the j clips that video sent (:func:`condi_pipe.report.cost.sent_gflops`), mean over the videos;
sending them one at a time costs time, not FLOPs.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from typing import Any, NamedTuple

import numpy as np

from condi_pipe.methods.adaptive_budgets import (
    DEFAULT_MAX_CLIPS,
    DEFAULT_TARGET_CLIPS,
    TeacherSteps,
    choose_threshold,
    decide,
    get_stopping_rule,
    sequential_teacher_seconds,
    stopping_rule_names,
    teacher_steps,
)
from condi_pipe.methods.context_rankings import get_context_ranking
from condi_pipe.methods.metrics import sigmoid
from condi_pipe.methods.statistics import paired_bootstrap_ci
from condi_pipe.methods.video_time import TimeBreakdown, chunked_batch_seconds, curve_seconds, timed
from condi_pipe.report.cost import sent_gflops
from condi_pipe.report.evaluate import (
    BOOTSTRAP_RESAMPLES,
    BOOTSTRAP_SEED,
    Evaluator,
    registered_method,
    run_scores,
    student_seconds,
    versus_dense,
)
from condi_pipe.report.inputs import OutputUnavailable, ReportInputs, ScoreRunOutputs
from condi_pipe.report.predictions import softmax_inplace, teacher_probs
from condi_pipe.report.results import ReportRow
from condi_pipe.storage import model_timings

#: How the adaptive rows' teacher calls are costed (JSON ``teacher_calls``).
TEACHER_CALLS = "sequential single-clip calls"


class AdaptiveEvaluation(NamedTuple):
    """One score run (or its context variant) under every stopping rule and target, beside its fixed K."""

    run: ScoreRunOutputs
    fixed: dict[int, ReportRow]  # the requested K, with versus_dense and mean_teacher_clips
    adaptive: list[ReportRow]  # rule x target, with versus_dense, versus_fixed_clips and versus_fixed_time
    validation_videos: int


class FixedMix(NamedTuple):
    """Fixed K interpolated to a cost: K_lo for a share 1 - ``weight`` of videos, K_hi = K_lo + 1 for ``weight``."""

    k_low: int
    k_high: int
    weight: float
    correct: np.ndarray  # (V,) expected per-video correctness of the mix
    accuracy: float  # percent


def adaptive_key(run_key: str, rule: str, target: float) -> str:
    """An adaptive row's method key: ``condi-sr@z-threshold:1.5``."""
    return f"{run_key}@{rule}:{target:g}"


def one_clip_seconds(inputs: ReportInputs) -> dict[str, np.ndarray]:
    """The teacher's seconds for one clip alone, per video, in every available time model (JSON part names)."""
    videos = inputs.num_videos
    out = {"teacher_s_share": inputs.teacher_seconds / inputs.clips}
    if inputs.curve is not None:
        out["teacher_s_curve"] = np.full(videos, float(curve_seconds(inputs.curve, np.array([1]))[0]))
    if inputs.teacher_time == "side-by-side":
        side = inputs.side_by_side
        curve = side.curves[model_timings.teacher_key(inputs.teacher)]
        out["teacher_s_side_by_side"] = chunked_batch_seconds(curve, np.ones(videos, np.int64), side.max_batch)
    return out


def sequential_times(inputs: ReportInputs, clips_sent: np.ndarray, student: np.ndarray | None,
                     selection_per_video: float) -> tuple[TimeBreakdown, dict[str, float]]:
    """Mean time parts when video v sends ``clips_sent[v]`` clips one call at a time, in the report's teacher-time
    model, and the teacher part in every available model (as :meth:`Evaluator._times` gives for fixed K)."""
    parts = {name: float(sequential_teacher_seconds(seconds, clips_sent).mean())
             for name, seconds in one_clip_seconds(inputs).items()}
    chosen = {"share": "teacher_s_share", "curve": "teacher_s_curve",
              "side-by-side": "teacher_s_side_by_side"}[inputs.teacher_time]
    student_mean = 0.0 if student is None else float(np.mean(student))
    return TimeBreakdown(student_mean, parts[chosen], float(selection_per_video)), parts


def validation_steps(inputs: ReportInputs, run: ScoreRunOutputs, max_clips: int | None) -> TeacherSteps:
    """The run's validation videos prepared for the stopping rules: its clips ranked as the run ranks the test
    split (its rank_score, or its context ranking of the kept outputs) and the report teacher's softmax on them."""
    def make():
        part = inputs.run_validation(run)
        scores = part.rank_score
        if run.context_ranking is not None:
            scores = get_context_ranking(run.context_ranking).scores(part.rank_score, part.logits, part.offsets)
        if np.isnan(scores).any():
            raise OutputUnavailable(f"scores/{run.run}: {int(np.isnan(scores).sum())} validation clips have no "
                                    "score (NaN)")
        return teacher_steps(softmax_inplace(part.teacher_logits.copy()), scores, part.offsets, max_clips)
    return inputs.cached(("adaptive-validation", run.run, run.context_ranking, max_clips), make)


def fixed_mix(cost: float, costs: dict[int, float], correct: dict[int, np.ndarray]) -> FixedMix | None:
    """Fixed K interpolated to ``cost`` (mean teacher clips, or mean seconds): K_lo is the largest K costing at
    most ``cost``, K_hi = K_lo + 1 costs more, and the weight puts the mix's mean cost at ``cost``. None when no K
    costs that little, or every K costs less."""
    ks = sorted(costs)
    cheap = [k for k in ks if costs[k] <= cost + 1e-12]
    if not cheap:
        return None
    low = cheap[-1]
    if abs(costs[low] - cost) <= 1e-12:
        return FixedMix(low, low, 0.0, correct[low], 100.0 * float(correct[low].mean()))
    high = low + 1
    if high not in costs:
        return None
    weight = (cost - costs[low]) / (costs[high] - costs[low])
    mixed = (1.0 - weight) * correct[low] + weight * correct[high]
    return FixedMix(low, high, float(weight), mixed, 100.0 * float(mixed.mean()))


def versus_fixed(mine: np.ndarray, mix: FixedMix | None) -> dict[str, Any] | None:
    """The paired bootstrap 95% CI of an adaptive row's accuracy minus the fixed-K mix's, in points (JSON-ready)."""
    if mix is None:
        return None
    ci = paired_bootstrap_ci(mine, mix.correct, resamples=BOOTSTRAP_RESAMPLES, seed=BOOTSTRAP_SEED)
    return {"diff_pp": 100.0 * ci.difference, "ci95_pp": [100.0 * ci.low, 100.0 * ci.high], "k_low": mix.k_low,
            "k_high": mix.k_high, "weight_high": mix.weight, "fixed_accuracy": mix.accuracy}


def confidence_ranked(run: ScoreRunOutputs) -> bool:
    """A clip-level run whose clips are ranked by the confidence logit (z~)."""
    method = registered_method(run.loss)
    ranking = method.ranking if method is not None else run.meta.get("ranking")
    return not run.video_level and ranking == "confidence"


def statistic_of(rule: str, run: ScoreRunOutputs) -> str:
    """What a rule's threshold is compared with, for this run."""
    if rule == "z-threshold" and run.context_ranking is not None:
        return f"the next clip's '{run.context_ranking}' context-ranking score"
    return get_stopping_rule(rule).statistic


def evaluate_adaptive(ev: Evaluator, dense: ReportRow, run: ScoreRunOutputs, ks: Sequence[int],
                      targets: Sequence[float] = DEFAULT_TARGET_CLIPS, rules: Sequence[str] | None = None,
                      max_clips: int | None = DEFAULT_MAX_CLIPS) -> AdaptiveEvaluation:
    """The run's fixed K rows (``ks``) and, for every stopping rule and target mean of teacher clips, the adaptive
    row at the threshold chosen on the run's validation part (raises OutputUnavailable without one). ``dense``:
    ``ev.dense()``, already evaluated (the rows' reference)."""
    inp = ev.inp
    rules = list(rules or stopping_rule_names())
    validation = validation_steps(inp, run, max_clips)
    validation_labels = inp.run_validation(run).labels
    scores = run_scores(inp, run)()
    steps, steps_seconds = timed(lambda: teacher_steps(teacher_probs(inp), scores, inp.offsets, max_clips))
    # every K up to the longest video: the fixed K the adaptive rows are compared with at equal cost
    every_k = sorted(set(ks) | set(range(1, int(inp.clips.max()) + 1)))
    fixed_all = ev.ranked_run(run, every_k)
    clips_at = {k: float(np.minimum(k, inp.clips).mean()) for k in every_k}
    seconds_at = {k: row.time_per_video_s for k, row in fixed_all.items()}
    correct_at = {k: ev.correct[(row.method, row.k, row.ks)] for k, row in fixed_all.items()}
    fixed = versus_dense(ev, {k: replace(fixed_all[k], extra={**fixed_all[k].extra,
                                                              "mean_teacher_clips": clips_at[k]}) for k in ks})
    student = student_seconds(inp, run)
    by_confidence = confidence_ranked(run)
    rows: dict[str, ReportRow] = {}
    for rule in rules:
        for target in targets:
            choice = choose_threshold(rule, validation, target)
            on_validation = decide(rule, validation, choice.threshold)
            selection, seconds = timed(lambda rule=rule, choice=choice: decide(rule, steps, choice.threshold))
            times, parts = sequential_times(inp, selection.clips, student,
                                            (steps_seconds + seconds) / inp.num_videos)
            extra = {
                "policy": rule, "threshold": choice.threshold, "statistic": statistic_of(rule, run),
                "target_clips": float(target), "mean_teacher_clips": float(selection.clips.mean()),
                "max_clips": max_clips, "videos_by_teacher_clips": np.bincount(selection.clips)[1:].tolist(),
                "teacher_calls": TEACHER_CALLS, "ranking": run.context_ranking or run.meta.get("ranking"),
                "chosen_on": "validation",
                "validation": {"videos": choice.videos, "mean_teacher_clips": choice.mean_clips,
                               "accuracy": 100.0 * float((on_validation.predictions == validation_labels).mean())},
                **parts,
                # the student on all N clips + the teacher on the clips each video sent, mean over videos
                **sent_gflops(inp, run.run, selection.clips),
            }
            if rule == "z-threshold" and run.context_ranking is None and by_confidence:
                extra["threshold_z"] = float(sigmoid(choice.threshold))  # the z~ the confidence logit t gives
            method = adaptive_key(run.key, rule, target)
            rows[method] = ev._row(method, f"{run.display} {rule}", None, selection.predictions, times,
                                   run=run.run, **extra)
    rows = versus_dense(ev, rows)
    dense_seconds = dense.time_per_video_s
    adaptive = []
    for method, row in rows.items():
        mine = ev.correct[(method, None, None)]
        adaptive.append(replace(row, extra={
            **row.extra, "time_vs_dense": row.time_per_video_s / dense_seconds,
            "versus_fixed_clips": versus_fixed(mine, fixed_mix(row.extra["mean_teacher_clips"], clips_at,
                                                               correct_at)),
            "versus_fixed_time": versus_fixed(mine, fixed_mix(row.time_per_video_s, seconds_at, correct_at))}))
    fixed = {k: replace(row, extra={**row.extra, "time_vs_dense": row.time_per_video_s / dense_seconds})
             for k, row in fixed.items()}
    return AdaptiveEvaluation(run, fixed, adaptive, validation.num_videos)
