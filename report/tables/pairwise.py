"""ConDi against every other method of Table 3, K by K: the paired bootstrap 95% CI of the accuracy difference.

Table 3 gives each method's CI against Dense only, which cannot say whether ConDi beats Equidistant: two intervals
against Dense that overlap say nothing about the difference between the two methods on the same videos. This table
lays out the ``versus`` field of Table 3's ConDi rows (:func:`condi_pipe.report.evaluate.versus_others`).
"""

from __future__ import annotations

from condi_pipe.report.evaluate import BOOTSTRAP_RESAMPLES, BOOTSTRAP_SEED, Entry, entry_name, is_condi, runs_of
from condi_pipe.report.footer import footer_lines
from condi_pipe.report.inputs import ScoreRunOutputs
from condi_pipe.report.registry import TableRequest, register_table
from condi_pipe.report.render import difference_cell, padded_rows
from condi_pipe.report.results import ReportTable
from condi_pipe.report.tables.time_tables import TABLE3_METHODS, evaluate_table3


def entry_key(entry: Entry) -> str:
    """The method key of an entry's rows (what ``versus`` is keyed by)."""
    return entry.key if isinstance(entry, ScoreRunOutputs) else entry


@register_table("pairwise", summary="ConDi minus each other method per K, with paired bootstrap CIs")
def pairwise_table(request: TableRequest) -> ReportTable:
    """For each ConDi method (a method key starting with ``condi-sr``) and each K: its accuracy minus each other
    method's, in points, with the paired bootstrap 95% CI, then against Dense. Methods default to Table 3's."""
    inputs, ks = request.inputs, request.k_values
    evaluated = evaluate_table3(request)
    dense, results, notes = evaluated.dense, evaluated.results, evaluated.notes
    condi = [(entry, by_k) for entry, by_k in results if is_condi(entry_key(entry))]
    # other ConDi variants get a column only when there is more than one ConDi method to compare
    others = [entry for entry, _ in results if len(condi) > 1 or not is_condi(entry_key(entry))]
    columns = ("Method", "K", *(entry_name(entry) for entry in others), "Dense")
    cells, rows = [], []
    for entry, by_k in condi:
        for k in ks:
            row = by_k.get(k)
            if row is None:
                continue
            versus = row.extra["versus"]
            rows.append(row)
            cells.append((entry_name(entry), str(k),
                          *(difference_cell(versus[entry_key(other)]["diff_pp"], versus[entry_key(other)]["ci95_pp"])
                            if entry_key(other) in versus else "" for other in others),
                          difference_cell(row.extra["diff_vs_dense_pp"], row.extra["ci95_vs_dense_pp"])))
    if not condi:
        named = ", ".join(request.methods or TABLE3_METHODS)
        notes = notes + [f"no ConDi method (a score run whose loss is condi-sr or a variant) among {named}: nothing "
                         "to compare."]
    comparisons = sum(cell != "" for line in cells for cell in line[2:])
    explain = (
        "Each cell: the ConDi method's top-1 accuracy minus the column method's at the same K, in percentage points, "
        "then [low, high], the 95% CI of that difference by a paired bootstrap over videos: "
        f"{BOOTSTRAP_RESAMPLES:,} resamples of the {inputs.num_videos} videos with replacement, each resample the "
        f"same videos for both methods (numpy default_rng({BOOTSTRAP_SEED})), percentile interval. Pairing keeps "
        "what the two methods share: a video both get right, or both wrong, adds no spread, so the interval is "
        "set by the videos on which they disagree. ConDi beats a method at K when the whole interval is above 0 "
        "(low > 0) and loses to it when the whole interval is below 0; an interval that contains 0 means these "
        "videos cannot tell the two apart, whatever the sign of the difference. Each interval is 95% on its own: "
        f"among the table's {comparisons} intervals a few may exclude 0 by chance. Random and Perfect z: a video "
        "counts as the mean of its seeds. A video-level student is compared only at its own k, when that is one "
        "of the K. Dense: the CI of Table 3. JSON: the ConDi rows, with 'versus' ({method: {diff_pp, ci95_pp}}) "
        "and diff_vs_dense_pp, ci95_vs_dense_pp.")
    return ReportTable(
        "pairwise", f"ConDi against each method: accuracy difference in points [paired bootstrap 95% CI], teacher "
                    f"'{inputs.teacher}', split '{inputs.split}'",
        columns, padded_rows(cells, len(columns)), tuple(rows),
        footer_lines(inputs, rows + [dense], runs_of(entry for entry, _ in results), notes + [explain]))
