"""How well each student's confidence z~ predicts the teacher's z: FPR, AUROC (pooled and within videos), and the
epoch distill kept."""

from __future__ import annotations

from typing import Any, Optional

import numpy as np

from condi_pipe.methods import metrics
from condi_pipe.methods.video_time import TimeBreakdown
from condi_pipe.report.evaluate import OutputUnavailable, resolve_methods, student_seconds
from condi_pipe.report.footer import footer_lines
from condi_pipe.report.registry import TableRequest, register_table
from condi_pipe.report.render import number_cell
from condi_pipe.report.results import ReportRow, ReportTable


def history_column(history, metric: str) -> Optional[str]:
    """The history's column for ``metric``: ``eval_<metric>`` (the distill stage's name) or ``<metric>``."""
    for name in (f"eval_{metric}", metric):
        if name in history.column_names:
            return name
    return None


def history_summary(history, kept_epoch: Optional[int] = None) -> tuple[dict[str, Any], dict[str, list]]:
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
        name = history_column(history, metric)
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


def scored_offsets(inputs, scored: np.ndarray) -> np.ndarray:
    """Video offsets into the clips kept by the mask ``scored`` (clips in video order)."""
    kept = np.bincount(inputs.owner()[scored], minlength=inputs.num_videos)
    return np.concatenate([[0], np.cumsum(kept)]).astype(np.int64)


def within_video_line(inputs, z: Optional[np.ndarray]) -> str:
    """The footer's account of the within-video AUROC and of how many videos it averages over."""
    if z is None:
        qualifying = "the videos"
    else:
        positives = np.bincount(inputs.owner(), weights=z, minlength=inputs.num_videos)
        both = int(((positives > 0) & (positives < inputs.clips)).sum())
        qualifying = f"the {both} of {inputs.num_videos} videos"
    return (f"AUROC within videos: the same AUROC among one video's clips, averaged over {qualifying} that have "
            "both z = 0 and z = 1 clips (JSON auroc_within_videos, auroc_within_videos_count); it ignores how "
            "scores compare across videos, so it measures the choice a clip selector makes inside a video, which "
            "the pooled AUROC mixes with telling easy videos from hard ones.")


@register_table("confidence", summary="FPR/AUROC of each score run", default_k=(), uses_k=False,
                plot="history")
def confidence_table(request: TableRequest) -> ReportTable:
    """Per score run: FPR of z~ > 0.5 and AUROC of its ranking score against the teacher's z on the split, pooled
    over all clips and within each video (what choosing a video's top K depends on), with the epoch distill kept
    from its training history (the paper's Fig. 5 plots FPR per epoch)."""
    inputs, methods, notes = request.inputs, request.methods, request.notes
    entries = resolve_methods(inputs, methods, builtins=(), notes=notes) if methods else list(inputs.runs)
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
            seconds_per_video = student_seconds(inputs, run)
        except OutputUnavailable as exc:
            notes.append(f"{run.display}: {exc}; omitted.")
            continue
        finite = np.isfinite(confidence)
        fpr = metrics.false_positive_rate(confidence[finite], z[finite], 0.5) if finite.any() else float("nan")
        if finite.any() and not finite.all():
            notes.append(f"{run.display}: FPR over the {int(finite.sum())} clips with a confidence "
                         f"(of {len(finite)}).")
        scored = np.isfinite(rank_score)
        auroc = metrics.auroc(rank_score[scored], z[scored]) if scored.any() else float("nan")
        within = metrics.within_video_auroc(rank_score[scored], z[scored], scored_offsets(inputs, scored))
        if not scored.all():
            notes.append(f"{run.display}: AUROC over the {int(scored.sum())} clips with a finite rank_score "
                         f"(of {len(scored)}); within videos over {within.videos} videos.")
        accuracy = 100.0 * float((pred == inputs.clip_labels()).mean())
        kept = inputs.student_meta(run).get("epoch_kept")
        final, curve = history_summary(inputs.history(run), kept)
        if not final:
            notes.append(f"{run.display}: no evaluated epoch in students/{run.run}/history.parquet.")
        if curve:
            series[run.display] = curve
        used.append(run)
        times = TimeBreakdown(student=float(seconds_per_video.mean()), teacher=0.0, selection=0.0)
        rows.append(ReportRow(run.key, None, None, accuracy, times.total, {
            "display": run.display, "run": run.run, "split": inputs.split, "videos": inputs.num_videos,
            "clips": inputs.num_clips, "fpr": fpr, "auroc": auroc, "auroc_within_videos": within.mean,
            "auroc_within_videos_count": within.videos, "ranking": run.meta.get("ranking"),
            "student_s": times.student, "teacher_s": 0.0, "selection_s": 0.0, **final}))
        cells.append((run.display, run.run, number_cell(fpr), number_cell(auroc), number_cell(within.mean),
                       number_cell(accuracy, 2), str(final.get("history_epoch", "")) if final else "",
                       number_cell(final.get("history_fpr")) if final else "",
                       number_cell(final.get("history_auroc")) if final else "",
                       number_cell(final.get("history_clip_accuracy")) if final else ""))
    if not entries:
        notes.append(f"no finished score run from teacher '{inputs.teacher}' in {inputs.location}/scores.")
    columns = ("Method", "Run", "FPR (z~ > 0.5)", "AUROC", "AUROC within videos", "Student clip top-1 (%)",
               "Epoch kept", "Epoch FPR", "Epoch AUROC", "Epoch clip accuracy")
    explain = (f"FPR = FP / (FP + TN) of z~ > 0.5 (clips.parquet 'confidence') against the teacher's z on split "
               f"'{inputs.split}'; AUROC of each run's rank_score against z over all clips pooled. "
               f"{within_video_line(inputs, z)} Epoch columns: the row of students/<run>/history.parquet of the "
               "epoch distill kept (meta.json epoch_kept; else the last evaluated), on the validation part the "
               "history is computed on. JSON 'accuracy' = the student's clip top-1 (%), 'time_per_video_s' = its "
               "seconds over all N clips.")
    return ReportTable(
        "confidence", f"Confidence of the students against the teacher's z, teacher '{inputs.teacher}', "
                      f"split '{inputs.split}'",
        columns, tuple(cells), tuple(rows), footer_lines(inputs, rows, used, notes + [explain], time_lines=False),
        series)

