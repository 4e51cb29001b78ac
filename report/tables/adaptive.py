"""Adaptive clip budgets against fixed K: each stopping rule of :mod:`condi_pipe.methods.adaptive_budgets` at
thresholds chosen on validation for a few target means of teacher clips per video, beside the same run's fixed-K
rows and Dense, with the paired bootstrap against Dense and against fixed K at equal mean teacher clips and at
equal time (:mod:`condi_pipe.report.adaptive`)."""

from __future__ import annotations

import math

from condi_pipe.methods.adaptive_budgets import (
    DEFAULT_MAX_CLIPS,
    DEFAULT_TARGET_CLIPS,
    get_stopping_rule,
    stopping_rule_names,
)
from condi_pipe.methods.context_rankings import OWN_RANKING
from condi_pipe.report.adaptive import AdaptiveEvaluation, confidence_ranked, evaluate_adaptive
from condi_pipe.report.cost import cost_front, gflops_notes
from condi_pipe.report.evaluate import (
    BOOTSTRAP_RESAMPLES,
    BOOTSTRAP_SEED,
    CONTEXT_SUFFIX,
    Evaluator,
    OutputUnavailable,
    ScoreRunOutputs,
    evaluate_entries,
    resolve_methods,
)
from condi_pipe.report.footer import bootstrap_note, footer_lines
from condi_pipe.report.registry import TableRequest, register_table
from condi_pipe.report.render import difference_cell, padded_rows, time_accuracy_cell
from condi_pipe.report.results import ReportRow, ReportTable
from condi_pipe.report.tables.time_tables import TABLE3_METHODS


def adaptive_entries(request: TableRequest) -> list[ScoreRunOutputs]:
    """The runs to evaluate: ``request.methods``, or every clip-level confidence-ranked run and its context variant
    when validation chose a ranking other than the run's own (otherwise its rows would repeat the run's)."""
    inputs, notes = request.inputs, request.notes
    names = request.methods or [name for run in inputs.runs if confidence_ranked(run)
                                for name in (run.run, run.run + CONTEXT_SUFFIX)
                                if name == run.run or run.chosen_context_ranking() not in (None, OWN_RANKING)]
    if not names:
        notes.append(f"no finished clip-level score run ranked by confidence from teacher '{inputs.teacher}' in "
                     f"{inputs.location}/scores; nothing to stop adaptively.")
        return []
    entries = []
    for entry in resolve_methods(inputs, names, builtins=(), notes=notes):
        if entry.video_level:
            notes.append(f"{entry.display}: a video-level student ranks no clips; not in this table.")
        else:
            entries.append(entry)
    return entries


def threshold_cell(row: ReportRow) -> str:
    threshold = row.extra["threshold"]
    if math.isinf(threshold):
        return "-inf" if threshold < 0 else "inf"
    text = f"{threshold:.4g}"
    return text + (f" (z~ {row.extra['threshold_z']:.3f})" if "threshold_z" in row.extra else "")


def comparison_cell(versus) -> str:
    if versus is None:
        return "n/a"
    return f"{difference_cell(versus['diff_pp'], versus['ci95_pp'])} (fixed {versus['fixed_accuracy']:.2f})"


def entry_cells(evaluated: AdaptiveEvaluation) -> list[tuple[str, ...]]:
    name = evaluated.run.display
    cells = [(name, f"fixed K={k}", "", "", f"{row.extra['mean_teacher_clips']:.2f}", time_accuracy_cell(row),
              f"{row.extra['time_vs_dense']:.2f}", "", "") for k, row in evaluated.fixed.items()]
    cells += [(name, row.extra["policy"], f"{row.extra['target_clips']:g}", threshold_cell(row),
               f"{row.extra['mean_teacher_clips']:.2f}", time_accuracy_cell(row), f"{row.extra['time_vs_dense']:.2f}",
               comparison_cell(row.extra["versus_fixed_clips"]), comparison_cell(row.extra["versus_fixed_time"]))
              for row in evaluated.adaptive]
    return cells


def explanation(evaluated: list[AdaptiveEvaluation], num_videos: int) -> list[str]:
    rules = "; ".join(f"{name}: {get_stopping_rule(name).summary.rstrip('.')}" for name in stopping_rule_names())
    lines = [
        (f"Adaptive rows: a video's clips go to the teacher one at a time in the run's ranking order (best first), "
        f"the first always, then the next until the rule stops, at most K_max = {DEFAULT_MAX_CLIPS} (or the "
        f"video's N); the prediction is the argmax of the mean teacher softmax of the clips sent. Rules: {rules}. "
        f"Target = the mean teacher clips per video the threshold was chosen for, on the run's validation videos "
        "(carved from train by its student's distill run, kept by `score` in scores/<run>/validation_clips.parquet, "
        "with the teacher's cached logits on them): the threshold spending the most clips there without exceeding "
        "the target, the midpoint between the validation values on either side. Nothing is chosen on the test "
        "split; 'Teacher clips' is the mean it then sends here. JSON: threshold, target_clips, mean_teacher_clips, "
        "validation {videos, mean_teacher_clips, accuracy}, videos_by_teacher_clips (1, 2, ... clips)."),
        ("Time of an adaptive row: the student over all N clips (it scores every clip first) + the teacher's time "
        "for one clip alone x the clips sent, since each decision needs the previous clip's output (sequential "
        "single-clip calls; fixed-K rows send their K clips as one batch) + the measured selection time. "
        "'x Dense' = time per video / Dense's."),
        ("vs fixed K: the adaptive row's accuracy minus the same run's fixed K at equal cost on these test videos, "
        "in points, with the 95% CI of a paired bootstrap over videos "
        f"({BOOTSTRAP_RESAMPLES:,} resamples of the {num_videos} videos, numpy default_rng({BOOTSTRAP_SEED})). "
        "Equal clips: fixed K interpolated to the row's mean teacher clips, a mix sending K_lo clips (the largest K "
        "spending no more) to a share 1 - w of videos and K_lo + 1 to w, a video counting as (1 - w) x its "
        "correctness at K_lo + w x at K_lo + 1; equal time: the same mix on mean time per video (K_lo the largest "
        "K no slower). '(fixed a)' is that mix's accuracy; n/a when no fixed K is that cheap. It is the expected "
        "accuracy of a randomised fixed budget at the same cost, so the interval covers the videos' sampling, not "
        "the randomisation. JSON: versus_fixed_clips / versus_fixed_time {diff_pp, ci95_pp, k_low, k_high, "
        "weight_high, fixed_accuracy}."),
    ]
    lines += [f"{e.run.display}: thresholds chosen on {e.validation_videos} validation videos (scores/{e.run.run})."
              for e in evaluated]
    return lines


@register_table("adaptive", summary="adaptive clip budgets (stop per video) against fixed K and Dense",
                default_k=(1, 2, 3, 4, 5), plot="accuracy-vs-time")
def adaptive_table(request: TableRequest) -> ReportTable:
    """Each confidence-ranked run's fixed K rows, then each stopping rule at each target mean of teacher clips
    (:data:`~condi_pipe.methods.adaptive_budgets.DEFAULT_TARGET_CLIPS`), with the threshold chosen on validation,
    the mean teacher clips it sends, time, accuracy and the paired CIs; Dense last. With FLOPs counted, GFLOPs per
    video in each cell and the Pareto front of accuracy against GFLOPs over every row and Table 3's other methods
    (JSON ``pareto_front``; the figure beside the table's, :func:`condi_pipe.report.plot.plot_figures`, holds them
    all)."""
    inputs, ks = request.inputs, request.k_values
    ev = Evaluator(inputs)
    dense = ev.dense()
    evaluated = []
    for entry in adaptive_entries(request):
        try:
            evaluated.append(evaluate_adaptive(ev, dense, entry, ks, DEFAULT_TARGET_CLIPS))
        except OutputUnavailable as exc:
            request.notes.append(f"{entry.display}: {exc}; no adaptive rows.")
    rows = [row for e in evaluated for row in (*e.fixed.values(), *e.adaptive)] + [dense]
    counted = any(row.extra.get("gflops_per_video") is not None for row in rows)
    columns = ("Method", "Selection", "Target", "Threshold", "Teacher clips",
               f"Time per video{', GFLOPs' if counted else ''} (accuracy) [CI vs Dense]", "x Dense",
               "vs fixed K, equal clips", "vs fixed K, equal time")
    cells = [cell for e in evaluated for cell in entry_cells(e)]
    cells.append(("Dense", "all clips", "", "", f"{float(inputs.clips.mean()):.2f}", time_accuracy_cell(dense),
                  "1.00", "", ""))
    notes = list(request.notes) + ([bootstrap_note(inputs), *explanation(evaluated, inputs.num_videos)]
                                   if evaluated else [])
    cost_notes = gflops_notes(inputs, rows)
    if counted and any(e.adaptive for e in evaluated):
        cost_notes.append("GFLOPs of an adaptive row: its student on all N clips + the teacher on the j clips each "
                          "video sent, per video, then the mean over the videos (sending them one at a time costs "
                          "time, not FLOPs).")
    # the Pareto front and the figure over every fixed K, policy and target, Dense, and Table 3's other methods at
    # the same K (report.cost): one view of accuracy against cost for every method and policy; the table's rows
    # are its own, flagged against all of them
    front = cost_front(rows + table3_rows(ev, ks, {e.run.key for e in evaluated}))
    return ReportTable(
        "adaptive", f"Adaptive clip budgets against fixed K: mean time per video (top-1 accuracy, %), teacher "
                    f"'{inputs.teacher}', split '{inputs.split}'",
        columns, padded_rows(cells, len(columns)), front.rows[:len(rows)],
        footer_lines(inputs, rows, [e.run for e in evaluated], notes + cost_notes + front.notes),
        front.series)


def table3_rows(ev: Evaluator, ks, shown: set[str]) -> list[ReportRow]:
    """Table 3's methods (:data:`~condi_pipe.report.tables.time_tables.TABLE3_METHODS`) at ``ks``, less the runs
    this table already shows, for the cost figure; a method the store cannot give is left out (its note belongs
    to Table 3)."""
    unused: list[str] = []
    entries = [entry for entry in resolve_methods(ev.inp, TABLE3_METHODS, notes=unused)
               if entry != "dense" and getattr(entry, "key", None) not in shown]
    return [row for _, by_k in evaluate_entries(ev, entries, ks, unused) for row in by_k.values()]
