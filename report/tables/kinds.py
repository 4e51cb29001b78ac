"""Diagnostics per clip kind of the generated benchmark: where the teacher errs, what z~ says, what each method
picks."""

from __future__ import annotations

import numpy as np

from condi_pipe.methods import metrics, samplers
from condi_pipe.report.clip_kinds import teacher_clip_kinds, teacher_clips_of_split
from condi_pipe.report.evaluate import (
    CONTEXT_SUFFIX,
    RANDOM_SEEDS,
    Evaluator,
    OutputUnavailable,
    resolve_methods,
    run_ranking,
    run_scores,
)
from condi_pipe.report.footer import footer_lines
from condi_pipe.report.predictions import ranking, teacher_probs
from condi_pipe.report.registry import TableRequest, register_table
from condi_pipe.report.render import number_cell, padded_rows
from condi_pipe.report.results import ReportRow, ReportTable
from condi_pipe.video.synth import CLIP_KINDS


def per_kind(kinds: np.ndarray, num_kinds: int, values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(count, mean of ``values``) per kind code, plus the total as a last element; NaN means where no clip."""
    counts = np.bincount(kinds, minlength=num_kinds).astype(np.float64)
    counts = np.append(counts, counts.sum())
    sums = np.bincount(kinds, weights=values, minlength=num_kinds)
    sums = np.append(sums, sums.sum())
    return counts, np.where(counts > 0, sums / np.where(counts > 0, counts, 1), np.nan)


@register_table("kinds", summary="per clip kind of the generated benchmark (needs --clip-kinds)", default_k=(1,),
                needs_clip_kinds=True)
def kinds_table(request: TableRequest) -> ReportTable:
    """Benchmark diagnostics per clip kind of the generated benchmark (its ``synth_clips.csv``, read by this table
    only): share, teacher accuracy, z rates, students' z~ and AUROC, and the kinds of the clips each method picks
    at K (default K = 1)."""
    inputs, ks, methods, notes = request.inputs, request.k_values, request.methods, request.notes
    clip_kinds = str(request.clip_kinds)
    all_kinds, names = teacher_clip_kinds(inputs, clip_kinds, CLIP_KINDS)
    n = len(names)
    labels = (*names, "all")
    ev = Evaluator(inputs)
    kinds = all_kinds[inputs.rows]  # the eval split's clips, report order
    rows: list[ReportRow] = []
    cells: list[tuple[str, ...]] = []

    def add_row(method, k, accuracy, kind, **extra) -> None:
        rows.append(ReportRow(method, k, None, accuracy, None, {"kind": kind, "split": inputs.split, **extra}))

    # the teacher: clip accuracy on eval clips, z rate on train and eval clips (the cache holds every clip)
    train, z_all = teacher_clips_of_split(inputs, "train", "z")
    z_all = z_all.astype(np.float64)
    if not train.any():
        notes.append(f"teacher/{inputs.teacher} has no clips of split 'train': no train z rates.")
    train_counts, z_train = per_kind(all_kinds[train], n, z_all[train])
    eval_counts, z_eval = per_kind(kinds, n, inputs.teacher_z().astype(np.float64))
    right = (teacher_probs(inputs).argmax(axis=1) == inputs.clip_labels()).astype(np.float64)
    _, teacher_accuracy = per_kind(kinds, n, right)
    share = eval_counts / max(eval_counts[-1], 1.0)
    for i, label in enumerate(labels):
        add_row("teacher", None, 100.0 * teacher_accuracy[i], label, quantity="teacher", display="Teacher",
                eval_clips=int(eval_counts[i]), eval_share=share[i], train_clips=int(train_counts[i]),
                z_rate_train=z_train[i], z_rate_eval=z_eval[i])
    cells += [(f"Share of {inputs.split} clips", "", *(number_cell(v, 2) for v in share), ""),
              (f"Teacher clip top-1 (%), {inputs.split}", inputs.teacher,
               *(number_cell(100 * v, 1) for v in teacher_accuracy), ""),
              ("z rate, train", inputs.teacher, *(number_cell(v, 2) for v in z_train), ""),
              (f"z rate, {inputs.split}", inputs.teacher, *(number_cell(v, 2) for v in z_eval), "")]

    # each clip-level score run: its mean z~ per kind, and how well its ranking tells informative clips apart
    # (by default every run, and ConDi-SR's student ranked by the context ranking its validation chose)
    entries = resolve_methods(inputs, methods or [r.key for r in inputs.runs] + [f"condi-sr{CONTEXT_SUFFIX}"],
                              builtins=(), notes=notes)
    informative = kinds == names.index("informative") if "informative" in names else np.zeros(len(kinds), bool)
    used, run_ranks = [], []
    for run in entries:
        if run.video_level:
            notes.append(f"{run.display}: a video-level student has no clip scores; not in this table.")
            continue
        try:
            confidence = inputs.run_column(run, "confidence")
            rank_score = run_scores(inputs, run)()  # a context variant's own ranking
            ranks = run_ranking(inputs, run)[0]
        except OutputUnavailable as exc:
            notes.append(f"{run.display}: {exc}; omitted.")
            continue
        finite = np.isfinite(confidence)
        counts, mean_confidence = per_kind(kinds[finite], n, confidence[finite])
        auroc = metrics.auroc(rank_score, informative) if informative.any() and not informative.all() else float("nan")
        for i, label in enumerate(labels):
            add_row(run.key, None, None, label, quantity="confidence", display=run.display, run=run.run,
                    clips=int(counts[i]), mean_confidence=mean_confidence[i],
                    **({"auroc_informative_vs_ambiguous": auroc} if label == "all" else {}))
        cells.append((f"Mean z~, {inputs.split}", run.display, *(number_cell(v, 2) for v in mean_confidence),
                      number_cell(auroc, 3)))
        used.append(run)
        run_ranks.append((run.key, run.display, ranks))

    # the kinds of the clips each method sends to the teacher at K
    def oracle_ranks():
        return ranking(inputs, "oracle", lambda: teacher_probs(inputs)[np.arange(inputs.num_clips), inputs.clip_labels()])[0]

    def seeded(method):
        return [ev.seeded_ranking(method, seed)[0] for seed in RANDOM_SEEDS]

    selectors = [(key, display, (lambda ranks=ranks: [ranks])) for key, display, ranks in run_ranks]
    selectors += [("oracle", "Oracle", lambda: [oracle_ranks()]),
                  ("perfect-z", "Perfect z", lambda: seeded("perfect-z")),
                  ("equidistant", "Equidistant", None),  # a mask, not a ranking
                  ("random", "Random", lambda: seeded("random"))]
    for k in ks:
        for key, display, rankings in selectors:
            masks = ([samplers.equidistant_mask(inputs.offsets, k)] if rankings is None
                     else [ranks < k for ranks in rankings()])
            # per seed: picks per kind; the share is their mean over seeds (one "seed" for deterministic methods)
            picks = np.mean([np.bincount(kinds[mask], minlength=n) for mask in masks], axis=0)
            shares = picks / picks.sum()
            for i, label in enumerate(names):
                add_row(key, k, None, label, quantity="picks", display=display, picks=float(picks[i]),
                        pick_share=float(shares[i]))
            cells.append((f"Share of picks, K={k}", display, *(number_cell(v, 2) for v in shares), "", ""))

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
        columns, padded_rows(cells, len(columns)), tuple(rows),
        footer_lines(inputs, rows, used, notes + [explain], time_lines=False))

