"""Tables 3 and 4 of the paper: time per video (accuracy) for each clip budget K, and ConDi-SR with division.

Rows carry the paired bootstrap 95% CI of their accuracy difference from Dense, over videos
(:func:`condi_pipe.methods.statistics.paired_bootstrap_ci`); Table 3's ConDi rows also carry it against every other
method at the same K (``versus``; the ``pairwise`` table lays those out).
"""

from __future__ import annotations

from dataclasses import dataclass

from condi_pipe.report.cost import cost_front, gflops_notes
from condi_pipe.report.evaluate import (
    Entry,
    Evaluator,
    OutputUnavailable,
    ScoreRunOutputs,
    entry_name,
    evaluate_entries,
    is_condi,
    k_rows,
    resolve_methods,
    runs_of,
    versus_dense,
    versus_others,
)
from condi_pipe.report.footer import bootstrap_note, footer_lines
from condi_pipe.report.registry import TableRequest, register_table
from condi_pipe.report.render import padded_rows, time_accuracy_cell
from condi_pipe.report.results import ReportRow, ReportTable

# ConDi-SR as published and its student ranked by the context ranking chosen on validation ("+context"), then
# the baselines
TABLE3_METHODS = ("condi-sr", "condi-sr+context", "equidistant", "motion-energy", "bce-conf", "st-ent")


@dataclass
class Table3Results:
    """Table 3's methods evaluated: Dense, and per method its rows by K with the paired bootstrap CIs against Dense
    (every row) and against every other method (ConDi rows, ``versus``)."""

    dense: ReportRow
    results: list[tuple[Entry, dict[int, ReportRow]]]
    notes: list[str]


def evaluate_table3(request: TableRequest) -> Table3Results:
    """Table 3's methods (``request.methods``, default :data:`TABLE3_METHODS`) at every K, with their CIs; the
    pairwise table reads the same results."""
    inputs, ks, methods, notes = request.inputs, request.k_values, request.methods, request.notes
    ev = Evaluator(inputs)
    entries = resolve_methods(inputs, methods or TABLE3_METHODS, notes=notes)
    entries = [e for e in entries if e != "dense"]  # Dense is the All row
    dense = ev.dense()
    results = [(entry, versus_dense(ev, by_k)) for entry, by_k in evaluate_entries(ev, entries, ks, notes)]
    return Table3Results(dense, versus_others(ev, results), notes)


def versus_note(results) -> list[str]:
    """Table 3's note on the ``versus`` JSON field, when some row carries it."""
    if not any(is_condi(row.method) for _, by_k in results for row in by_k.values()):
        return []
    return ["JSON 'versus' on ConDi rows: the same paired bootstrap of the ConDi row's accuracy minus each other "
            "method's at the same K ({method: {diff_pp, ci95_pp}}); `--table pairwise` lays it out."]


@register_table("3", summary="time (accuracy) per K", plot="accuracy-vs-time")
def table3(request: TableRequest) -> ReportTable:
    """The paper's Table 3: mean time per video (top-1 accuracy) of each method for each K, Dense as All."""
    inputs, ks = request.inputs, request.k_values
    evaluated = evaluate_table3(request)
    dense, results, notes = evaluated.dense, evaluated.results, evaluated.notes
    if results:
        notes = notes + [bootstrap_note(inputs)] + versus_note(results)
    columns = ["K"] + [entry_name(entry) for entry, _ in results] if results else ["K", "Dense"]
    cells = [[str(k)] + [time_accuracy_cell(by_k.get(k)) for _, by_k in results] for k in k_rows(ks, results)]
    cells.append(["All", time_accuracy_cell(dense)] + [""] * max(len(results) - 1, 0))
    rows = [row for _, by_k in results for row in by_k.values()] + [dense]
    front = cost_front(rows)  # GFLOPs per video: the Pareto front of every method and K (report.cost)
    return ReportTable(
        "3", f"Table 3: mean time per video (top-1 accuracy, %), teacher '{inputs.teacher}', split '{inputs.split}'",
        tuple(columns), padded_rows(cells, len(columns)), front.rows,
        footer_lines(inputs, rows, runs_of(e for e, _ in results), notes + ["All = Dense: the teacher on every clip."]
                     + gflops_notes(inputs, rows) + front.notes), front.series)


@register_table("4", summary="ConDi-SR with division", uses_ks=True, plot="accuracy-vs-time")
def table4(request: TableRequest) -> ReportTable:
    """The paper's Table 4: ConDi-SR with division (type b), K_s of the K clips classified by the student."""
    inputs, ks, student_ks, methods, notes = (request.inputs, request.k_values, request.student_ks, request.methods,
                                              request.notes)
    ev = Evaluator(inputs)
    if methods:
        runs = [e for e in resolve_methods(inputs, methods, builtins=(), notes=notes) if isinstance(e, ScoreRunOutputs)]
        if any(r.loss != "condi-sr" for r in runs):
            raise ValueError("table 4 (division) applies to ConDi-SR runs only")
    else:
        runs = [r for r in inputs.runs if r.loss == "condi-sr"]
        if not runs:
            notes.append(f"ConDi-SR: no finished score run from teacher '{inputs.teacher}' in "
                         f"{inputs.location}/scores; no division rows.")
    budgets = [(k, s) for k in ks for s in student_ks if s <= k]
    if not budgets:
        raise ValueError(f"no K_s <= K among K {list(ks)} and K_s {list(student_ks)}")
    dense = ev.dense()
    results = []
    for run in runs:
        try:
            results.append((run, versus_dense(ev, ev.division(run, budgets))))
        except OutputUnavailable as exc:
            notes.append(f"{run.display}: {exc}; omitted.")
    if results:
        notes = notes + [bootstrap_note(inputs)]
    columns = ["K", "K_s", "K_t"] + [f"{run.display} (division)" for run, _ in results]
    cells = [[str(k), str(s), str(k - s)] + [time_accuracy_cell(by_b[(k, s)]) for _, by_b in results] for k, s in budgets]
    cells.append(["All", "", "", time_accuracy_cell(dense)] + [""] * max(len(results) - 1, 0))
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
        tuple(columns), padded_rows(cells, len(columns)), tuple(rows),
        footer_lines(inputs, rows, [r for r, _ in results], notes + [rule] + gflops_notes(inputs, rows)))

