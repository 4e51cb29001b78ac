"""Accuracy against the clip budget: every method against K (Fig. 4), and the oracle case study."""

from __future__ import annotations

from dataclasses import replace

from condi_pipe.report.evaluate import (
    RANDOM_SEEDS,
    Evaluator,
    OutputUnavailable,
    entry_name,
    evaluate_entries,
    k_rows,
    resolve_methods,
    runs_of,
)
from condi_pipe.report.footer import footer_lines
from condi_pipe.report.registry import TableRequest, register_table
from condi_pipe.report.render import number_cell, padded_rows
from condi_pipe.report.results import ReportTable


@register_table("accuracy", summary="every method against K", default_k=tuple(range(1, 11)),
                plot="accuracy-vs-k")
def accuracy_table(request: TableRequest) -> ReportTable:
    """Every available method's accuracy against K, Dense as the reference (the paper's Fig. 4)."""
    inputs, ks, methods, notes = request.inputs, request.k_values, request.methods, request.notes
    ev = Evaluator(inputs)
    if methods:
        entries = resolve_methods(inputs, methods, notes=notes)
    else:
        entries = ["oracle", "random", "equidistant", "motion-energy", *inputs.runs]
    entries = [e for e in entries if e != "dense"]
    dense = ev.dense()
    results = evaluate_entries(ev, entries, ks, notes)
    columns = ["K"] + [entry_name(entry) for entry, _ in results] if results else ["K", "Dense"]
    cells = [[str(k)] + [number_cell(by_k[k].accuracy, 2) if k in by_k else "" for _, by_k in results]
             for k in k_rows(ks, results)]
    cells.append(["All", number_cell(dense.accuracy, 2)] + [""] * max(len(results) - 1, 0))
    rows = [row for _, by_k in results for row in by_k.values()] + [dense]
    return ReportTable(
        "accuracy", f"Top-1 accuracy (%) against K, teacher '{inputs.teacher}', split '{inputs.split}' (Fig. 4)",
        tuple(columns), padded_rows(cells, len(columns)), tuple(rows),
        footer_lines(inputs, rows, runs_of(e for e, _ in results),
                notes + ["All = Dense. Random: mean of seeds 0, 1, 2. Video-level students appear at their own k. "
                         "Times are in the JSON output."]))


def gap_share(accuracy: float, random: float, perfect: float) -> float:
    """(accuracy - Random) / (Perfect z - Random): 0 = no better than random clips, 1 = as good as the z-first
    selector (above 1: better than it; Perfect z is not a bound); NaN when there is no gap (e.g. k at least every
    video's clip count)."""
    gap = perfect - random
    return (accuracy - random) / gap if abs(gap) > 1e-9 else float("nan")


@register_table("oracle", summary="Dense against Oracle, Perfect z, Random and each student's share of the gap",
                default_k=(1, 5, 10, 15), uses_methods=False, methods_refusal=" (it is Dense against Oracle)",
                plot="accuracy-vs-k")
def oracle_table(request: TableRequest) -> ReportTable:
    """The oracle case study: Dense against Oracle at k = 1, 5, 10, 15, beside Perfect z (the z-first selector: the
    clips the teacher gets right first), Random, and each student with its share of the gap from Random to Perfect
    z."""
    inputs, ks, notes = request.inputs, request.k_values, request.notes
    ev = Evaluator(inputs)
    dense = ev.dense()
    oracle, perfect, random = ev.oracle(ks), ev.perfect_z(ks), ev.random(ks)
    students = []
    for run in inputs.runs:
        if run.video_level:
            notes.append(f"{run.display}: a video-level student picks no clips; not in this table.")
            continue
        try:
            by_k = ev.ranked_run(run, ks)
        except OutputUnavailable as exc:
            notes.append(f"{run.display}: {exc}; omitted.")
            continue
        students.append((run, {k: replace(row, extra={**row.extra, "gap_share": gap_share(
            row.accuracy, random[k].accuracy, perfect[k].accuracy)}) for k, row in by_k.items()}))
    columns = ("K", "Oracle", "Perfect z", "Random", *(f"{run.display} (gap share)" for run, _ in students))
    cells = [(str(k), number_cell(oracle[k].accuracy, 2), number_cell(perfect[k].accuracy, 2), number_cell(random[k].accuracy, 2),
              *(f"{number_cell(by_k[k].accuracy, 2)} ({number_cell(by_k[k].extra['gap_share'], 2)})" for _, by_k in students))
             for k in ks]
    cells.append(("All", number_cell(dense.accuracy, 2)))
    rows = [dense] + [by_k[k] for by_k in (oracle, perfect, random) for k in ks]
    rows += [row for _, by_k in students for row in by_k.values()]
    seeds = ", ".join(map(str, RANDOM_SEEDS))
    explain = (f"Top-1 accuracy (%) at k clips per video. Oracle: the top k by the teacher's true-class probability "
               "(cheats with the label: a reference, not a usable method). Perfect z: the z-first selector, the "
               f"clips the teacher classifies right first (z = 1 in teacher/{inputs.teacher}/clips.parquet), ties "
               f"broken at random, mean over seeds {seeds}; it cheats with the label too, but it is not a ceiling: "
               "the prediction averages the chosen clips' softmax and z ignores how far a clip moves that mean, so "
               "where a video has fewer than k right clips a student that adds wrong clips still leaning to the "
               f"label can beat it. Random: k clips at random, mean over seeds {seeds}. A student's gap share = (its "
               "accuracy - Random) / (Perfect z - Random) at the same k: 0 = no better than random clips, 1 = as "
               "good as the z-first selector, above 1 = better (n/a without a gap). All = Dense (under the first "
               "column). Times are in the JSON output.")
    return ReportTable(
        "oracle", f"Oracle case study: Oracle (true-class probability), Perfect z (teacher right first), Random and "
                  f"each student against Dense, teacher '{inputs.teacher}', split '{inputs.split}'",
        columns, padded_rows(cells, len(columns)), tuple(rows),
        footer_lines(inputs, rows, [run for run, _ in students], notes + [explain]))

