"""The methods of a report evaluated on one split: which clips each method sends to the teacher, the video
accuracy that gives, and the measured time per video (:mod:`condi_pipe.methods.video_time`).

A method is a builtin selection (Dense, Oracle, Random, Equidistant, Motion energy, Perfect z) or a score run
whose loss the method registry (:mod:`condi_pipe.methods.registry`) describes. Rows keep every video's correctness
so tables can add the paired bootstrap against Dense (:func:`versus_dense`) and between ConDi and each other method
(:func:`versus_others`).
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any, Callable, Mapping, Optional, Sequence, Union

import numpy as np

from condi_pipe.methods import registry, samplers
from condi_pipe.methods.context_rankings import OWN_RANKING, get_context_ranking
from condi_pipe.methods.statistics import paired_bootstrap_ci
from condi_pipe.methods.video_time import TimeBreakdown, chunked_batch_seconds, mean_time, side_by_side_mean_time, timed
from condi_pipe.report.clip_motion import motion_energy_ranking
from condi_pipe.report.cost import row_gflops
from condi_pipe.report.inputs import OutputUnavailable, ReportInputs, ScoreRunOutputs, normalised_name
from condi_pipe.report.predictions import (
    division_predictions,
    mask_predictions,
    mean_argmax,
    rank_timed,
    ranking,
    student_probs,
    teacher_probs,
)
from condi_pipe.report.results import ReportRow
from condi_pipe.storage import model_timings
from condi_pipe.storage.store import Store

# Selections made without a student; their display names. Score runs take theirs from the method registry.
BUILTIN_DISPLAY = {
    "dense": "Dense",
    "oracle": "Oracle",
    "perfect-z": "Perfect z",
    "random": "Random",
    "equidistant": "Equidistant",
    "motion-energy": "Motion energy",
}
BUILTIN_METHODS = ("dense", "oracle", "random", "equidistant", "motion-energy", "perfect-z")
RANDOM_SEEDS = (0, 1, 2)  # Random and Perfect z (its ties): mean over these seeds
BOOTSTRAP_RESAMPLES = 2000  # tables 3, 4 and pairwise: paired bootstrap of accuracy differences
BOOTSTRAP_SEED = 0
CONDI_PREFIX = "condi-sr"  # ConDi rows: the ConDi-SR loss and its variants (condi-sr+consensus, condi-sr:<run>)

Entry = Union[str, ScoreRunOutputs]  # a builtin method name or a score run
CONTEXT_SUFFIX = "+context"  # `condi-sr+context`: the run ranked by the context ranking chosen on validation


def registered_method(name: str) -> Optional[registry.Method]:
    """The registry's method of a loss name, None when no registered method has that name."""
    return registry.get_method(name) if name in registry.method_names() else None


def display_name(method: str) -> str:
    """How tables name a builtin method or a registered loss (the name itself when neither)."""
    if method in BUILTIN_DISPLAY:
        return BUILTIN_DISPLAY[method]
    found = registered_method(method)
    return found.display if found is not None else method


def load_inputs(store: Store, teacher: Optional[str], split: Optional[str], teacher_time: str = "share",
                runs_teacher: Optional[str] = None) -> ReportInputs:
    """The store's report inputs, with every score run described by the method registry: clip- or video-level,
    display name, and a key unique among the runs (``loss:run`` when several runs share a loss)."""
    return describe_runs(ReportInputs(store, teacher, split, teacher_time, runs_teacher=runs_teacher))


def describe_runs(inputs: ReportInputs) -> ReportInputs:
    """Fill in what the method registry says of each score run of ``inputs``, and order the runs as registered."""
    counts: dict[str, int] = {}
    for run in inputs.runs:
        counts[run.loss] = counts.get(run.loss, 0) + 1
    for run in inputs.runs:
        method = registered_method(run.loss)
        run.video_level = (method.level == "video" if method is not None
                           else str(run.meta.get("level")) == "video")
        shared = counts[run.loss] > 1
        run.key = f"{run.loss}:{run.run}" if shared else run.loss
        run.display = display_name(run.loss) + (f" [{run.run}]" if shared else "")
    order = {name: i for i, name in enumerate(registry.method_names())}
    inputs.runs = sorted(inputs.runs, key=lambda r: (order.get(r.loss, len(order)), r.loss, r.run))
    return inputs


def student_seconds(inputs: ReportInputs, run: ScoreRunOutputs, clips_seen: Optional[np.ndarray] = None
                    ) -> np.ndarray:
    """The run's student time per video of the split: side by side, its timed curve at the clips it sees (all N,
    or a video-level student's k); otherwise the seconds its score run measured (raises OutputUnavailable)."""
    if inputs.teacher_time != "side-by-side":
        return inputs.run_videos(run, ())["seconds"].astype(np.float64)
    seen = inputs.clips if clips_seen is None else np.minimum(np.asarray(clips_seen, np.int64), inputs.clips)
    side = inputs.side_by_side
    return chunked_batch_seconds(side.curves[model_timings.run_key(run.run)], seen, side.max_batch)


class Evaluator:
    def __init__(self, inputs: ReportInputs):
        self.inp = inputs
        self.teacher_time = inputs.teacher_time
        # per-video correctness (0/1, or the mean over seeds) of every row, by (method, k, ks): the bootstrap's input
        self.correct: dict[tuple[str, Optional[int], Optional[int]], np.ndarray] = {}

    def _times(self, clips_to_teacher, student: Optional[np.ndarray], selection_per_video: float
               ) -> tuple[TimeBreakdown, dict[str, float]]:
        """Mean time parts in the chosen teacher-time model, and the teacher part in every available model (the
        per-run ones stay as a cross-check of the side-by-side figure)."""
        inp = self.inp
        share = mean_time(inp.teacher_seconds, inp.clips, clips_to_teacher, student, selection_per_video)
        parts = {"teacher_s_share": share.teacher}
        chosen = share
        if inp.curve is not None:
            curve = mean_time(inp.teacher_seconds, inp.clips, clips_to_teacher, student, selection_per_video,
                              inp.curve)
            parts["teacher_s_curve"] = curve.teacher
            chosen = curve if self.teacher_time == "curve" else share
        if self.teacher_time == "side-by-side":
            side = inp.side_by_side
            chosen = side_by_side_mean_time(side.curves[model_timings.teacher_key(inp.teacher)], inp.clips, clips_to_teacher,
                                            student, selection_per_video, side.max_batch)
            parts["teacher_s_side_by_side"] = chosen.teacher
        return chosen, parts

    def _row(self, method: str, display: str, k: Optional[int], preds: np.ndarray, times: TimeBreakdown, *,
             ks: Optional[int] = None, run: Optional[str] = None, **extra: Any) -> ReportRow:
        correct = (preds == self.inp.labels).astype(np.float64)
        self.correct[(method, k, ks)] = correct
        accuracy = 100.0 * float(correct.mean())
        return self._make_row(method, display, k, accuracy, times, ks=ks, run=run, **extra)

    def _make_row(self, method, display, k, accuracy, times: TimeBreakdown, *, ks=None, run=None, **extra):
        info = {"display": display, "run": run, "split": self.inp.split, "videos": self.inp.num_videos,
                "student_s": times.student, "teacher_s": times.teacher, "selection_s": times.selection,
                "teacher_time": self.teacher_time}
        info.update(extra)
        info.update(row_gflops(self.inp, run, extra))  # GFLOPs per video beside the time parts (report.cost)
        return ReportRow(method, k, ks, accuracy, times.total, info)

    # -- Dense and teacher-only selections -----------------------------------------------------------------
    def dense(self) -> ReportRow:
        inp = self.inp
        probs = teacher_probs(inp)
        preds = mean_argmax(lambda rows: probs[rows], np.arange(inp.num_clips), inp.offsets[:-1], inp.clips,
                             [int(inp.clips.max())]).popitem()[1]
        times, parts = self._times(inp.clips, None, 0.0)  # all N clips: the measured seconds in both models
        return self._row("dense", "Dense", None, preds, times, k_t=None, **parts)

    def _top_k(self, method: str, display: str, ks: Sequence[int], order: np.ndarray, rank_seconds: float, *,
               student: Optional[np.ndarray] = None, run: Optional[str] = None, **extra: Any) -> dict[int, ReportRow]:
        """The top K clips of every video by a ranking go to the teacher; one pass gives every K."""
        inp = self.inp
        probs = teacher_probs(inp)
        preds = mean_argmax(lambda rows: probs[rows], order, inp.offsets[:-1], inp.clips, ks)
        out = {}
        for k in ks:
            times, parts = self._times(k, student, rank_seconds / inp.num_videos)
            out[k] = self._row(method, display, k, preds[k], times, run=run, k_t=k, **parts, **extra)
        return out

    def equidistant(self, ks: Sequence[int]) -> dict[int, ReportRow]:
        inp = self.inp
        out = {}
        for k in ks:
            mask, seconds = timed(lambda: samplers.equidistant_mask(inp.offsets, k))
            preds = mask_predictions(teacher_probs(inp), inp.owner(), inp.num_videos, mask)
            times, parts = self._times(k, None, seconds / inp.num_videos)
            out[k] = self._row("equidistant", "Equidistant", k, preds, times, k_t=k, **parts)
        return out

    def oracle(self, ks: Sequence[int]) -> dict[int, ReportRow]:
        inp = self.inp

        def true_class_probs():
            return teacher_probs(inp)[np.arange(inp.num_clips), inp.clip_labels()]

        _, order, seconds = ranking(inp, "oracle", true_class_probs)
        return self._top_k("oracle", "Oracle", ks, order, seconds)

    def seeded_ranking(self, method: str, seed: int) -> tuple[np.ndarray, np.ndarray, float]:
        """(ranks, order, seconds) of ``random`` or ``perfect-z`` for one seed (cached).

        Random ranks by counter-based draws keyed by (seed, video id, clip index): independent of the split's other
        videos. Perfect z ranks by z + the same draw in [0, 1): the z-first selector, the clips the teacher gets
        right first, in random order among themselves. It is not a bound on students: the prediction is the argmax
        of the chosen clips' mean softmax, and z only says whether a clip's own argmax is right, not how far it
        moves the mean. Where a video has fewer than K right clips, a student that fills the rest with wrong clips
        that still put mass on the label (or prefers such a clip to a barely right one) can beat it.
        """
        inp = self.inp
        owner = inp.owner()
        clip_in_video = np.arange(inp.num_clips) - inp.offsets[owner]
        z = inp.teacher_z() if method == "perfect-z" else None

        def scores():
            draws = samplers.hashed_uniform_scores(seed, inp.video_id[owner], clip_in_video)
            return draws if z is None else z + draws

        return inp.cached((method, seed), lambda: rank_timed(inp, scores))

    def _seed_mean(self, method: str, ks: Sequence[int]) -> dict[int, ReportRow]:
        """Random or Perfect z: the mean over RANDOM_SEEDS of the accuracy (and per video of the correctness)."""
        per_seed, correct = [], {k: [] for k in ks}
        for seed in RANDOM_SEEDS:
            _, order, seconds = self.seeded_ranking(method, seed)
            per_seed.append(self._top_k(method, display_name(method), ks, order, seconds))
            for k in ks:
                correct[k].append(self.correct[(method, k, None)])
        out = {}
        for k in ks:
            rows = [seed_rows[k] for seed_rows in per_seed]
            accuracies = [row.accuracy for row in rows]
            times = TimeBreakdown(student=0.0, teacher=rows[0].extra["teacher_s"],
                                  selection=float(np.mean([row.extra["selection_s"] for row in rows])))
            parts = {key: rows[0].extra[key] for key in ("teacher_s_share", "teacher_s_curve", "teacher_s_side_by_side")
                     if key in rows[0].extra}
            out[k] = self._make_row(method, display_name(method), k, float(np.mean(accuracies)), times, k_t=k,
                                    seeds=list(RANDOM_SEEDS), seed_accuracies=accuracies, **parts)
            self.correct[(method, k, None)] = np.mean(correct[k], axis=0)
        return out

    def random(self, ks: Sequence[int]) -> dict[int, ReportRow]:
        return self._seed_mean("random", ks)

    def perfect_z(self, ks: Sequence[int]) -> dict[int, ReportRow]:
        return self._seed_mean("perfect-z", ks)

    def motion_energy(self, ks: Sequence[int]) -> dict[int, ReportRow]:
        """The top K clips by motion energy (report.clip_motion: training-free, from the stored clips)."""
        _, order, seconds = motion_energy_ranking(self.inp)
        return self._top_k("motion-energy", "Motion energy", ks, order, seconds)

    # -- students --------------------------------------------------------------------------------------------
    def ranked_run(self, run: ScoreRunOutputs, ks: Sequence[int]) -> dict[int, ReportRow]:
        """Type a: the top K clips by the run's rank_score (or, for a context variant, by its context ranking of
        the run's stored outputs) go to the teacher."""
        inp = self.inp
        _, order, seconds = run_ranking(inp, run)
        if run.context_ranking is None:
            return self._top_k(run.key, run.display, ks, order, seconds, student=student_seconds(inp, run),
                               run=run.run, ranking=run.meta.get("ranking"))
        return self._top_k(run.key, run.display, ks, order, seconds, student=student_seconds(inp, run), run=run.run,
                           ranking=run.context_ranking, chosen_on="validation",
                           validation=run.meta.get("context_ranking"))

    def video_level(self, run: ScoreRunOutputs) -> dict[int, ReportRow]:
        """Fewer-frames / Uniform-k students: their stored video predictions at their own k."""
        inp = self.inp
        data = inp.run_videos(run, ("pred", "k"))
        k_values = np.asarray(data["k"], dtype=np.int64)
        k = int(run.meta.get("k") or (np.bincount(k_values).argmax() if len(k_values) else 0))
        times = TimeBreakdown(student=float(student_seconds(inp, run, k_values).mean()), teacher=0.0, selection=0.0)
        row = self._row(run.key, run.display, k, np.asarray(data["pred"], dtype=np.int64), times, run=run.run,
                        k_t=0, clips_seen_mean=float(np.minimum(k_values, inp.clips).mean()))
        return {k: row}

    def method(self, entry: Entry, ks: Sequence[int]) -> dict[int, ReportRow]:
        if isinstance(entry, ScoreRunOutputs):
            return self.video_level(entry) if entry.video_level else self.ranked_run(entry, ks)
        return {"equidistant": self.equidistant, "oracle": self.oracle, "random": self.random,
                "perfect-z": self.perfect_z, "motion-energy": self.motion_energy}[entry](ks)

    def division(self, run: ScoreRunOutputs, budgets: Sequence[tuple[int, int]]) -> dict[tuple[int, int], ReportRow]:
        """Type b: K_s clips by lowest student entropy (student softmax), K_t = K - K_s by z~ (teacher softmax)."""
        inp = self.inp
        conf_ranks, _, conf_seconds = ranking(inp, f"scores/{run.run} rank_score",
                                                lambda: inp.run_column(run, "rank_score"))
        ent_ranks, _, ent_seconds = ranking(inp, f"scores/{run.run} entropy", lambda: -inp.run_column(run, "entropy"))
        student_softmax = student_probs(inp, run)
        student = student_seconds(inp, run)
        out = {}
        for k, ks in budgets:
            in_teacher, in_student = conf_ranks < k - ks, ent_ranks < ks
            preds = division_predictions(teacher_probs(inp), student_softmax, inp.owner(), inp.num_videos, in_teacher,
                                          in_student)
            to_teacher = np.minimum(k - ks, inp.clips)  # the K_t top-ranked clips (all N when N <= K_t)
            # ranking costs: z~ when the teacher gets clips, entropy when the student classifies some
            selection = (conf_seconds if k > ks else 0.0) + (ent_seconds if ks > 0 else 0.0)
            times, parts = self._times(to_teacher, student, selection / inp.num_videos)
            out[(k, ks)] = self._row(run.key, f"{run.display} (division)", k, preds, times, ks=ks, run=run.run,
                                     k_t=k - ks, division=True, **parts)
        return out


def resolve_methods(inputs: ReportInputs, requested: Sequence[str], *, builtins: Sequence[str] = BUILTIN_METHODS,
             notes: list[str]) -> list[Entry]:
    """Method names -> builtin names and score runs; names of absent runs become notes."""
    entries: list[Entry] = []
    known = set(builtins) | set(registry.method_names())
    for token in requested:
        name = normalised_name(token)
        if name in builtins:
            entries.append(name)
            continue
        if name.endswith(CONTEXT_SUFFIX):
            entries.extend(context_variants(inputs, name.removesuffix(CONTEXT_SUFFIX), notes))
            continue
        matches = [r for r in inputs.runs if name in (normalised_name(r.key), r.loss, normalised_name(r.run))]
        if matches:
            entries.extend(matches)
        elif name in known:
            notes.append(f"{display_name(name)}: no finished score run from teacher '{inputs.teacher}' in "
                         f"{inputs.location}/scores; omitted.")
        else:
            available = sorted(known | {r.key for r in inputs.runs} | {r.run for r in inputs.runs})
            raise ValueError(f"unknown method '{token}' (known: {', '.join(available)})")
    unique: list[Entry] = []
    for entry in entries:
        if not any(entry is other or entry == other for other in unique):
            unique.append(entry)
    return unique


def run_scores(inputs: ReportInputs, run: ScoreRunOutputs) -> Callable[[], np.ndarray]:
    """What the run ranks its clips by, as a function to time: its stored rank_score, or for a context variant
    its context ranking of the stored rank_score and student logits (read before the function is called)."""
    rank_score = inputs.run_column(run, "rank_score")
    if run.context_ranking is None:
        return lambda: rank_score
    if np.isnan(rank_score).any():
        raise OutputUnavailable(f"scores/{run.run}: {int(np.isnan(rank_score).sum())} clips have no score (NaN)")
    context, logits = get_context_ranking(run.context_ranking), inputs.run_logits(run)
    return lambda: context.scores(rank_score, logits, inputs.offsets)


def run_ranking(inputs: ReportInputs, run: ScoreRunOutputs) -> tuple[np.ndarray, np.ndarray, float]:
    """(ranks, order, seconds) of a run's clips (memoised): by its rank_score, or for a context variant by its
    context ranking, whose computation is part of selecting and so inside the timed seconds."""
    if run.context_ranking is None:
        return ranking(inputs, f"scores/{run.run} rank_score", lambda: inputs.run_column(run, "rank_score"))
    scores = run_scores(inputs, run)
    return inputs.cached(("ranks", f"scores/{run.run} {run.context_ranking}"), lambda: rank_timed(inputs, scores))


def context_variants(inputs: ReportInputs, name: str, notes: list[str]) -> list[ScoreRunOutputs]:
    """``<method>+context``: each matching clip-level run ranked by the context ranking its score run chose on
    validation (:mod:`condi_pipe.methods.context_rankings`), as a method of its own beside the run."""
    matches = [r for r in inputs.runs if name in (normalised_name(r.key), r.loss, normalised_name(r.run))
               and not r.video_level]
    if not matches:
        if name not in registry.method_names():
            raise ValueError(f"unknown method '{name}{CONTEXT_SUFFIX}' (a clip-level method's name, then "
                             f"'{CONTEXT_SUFFIX}')")
        notes.append(f"{display_name(name)}{CONTEXT_SUFFIX}: no finished clip-level score run from teacher "
                     f"'{inputs.teacher}' in {inputs.location}/scores; omitted.")
    variants = []
    for run in matches:
        chosen = run.chosen_context_ranking()
        if chosen is None:
            notes.append(f"{run.display}{CONTEXT_SUFFIX}: scores/{run.run} judged no ranking on a validation part "
                         "(scored before context rankings, or its student carved none); omitted.")
            continue
        record = run.meta["context_ranking"]
        judged = ", ".join(f"{name} {100 * c['mean_accuracy']:.1f}" for name, c in record["candidates"].items())
        notes.append(f"{run.display}+ctx = {run.display}'s student ranking clips by '{chosen}', the ranking "
                     f"scores/{run.run} chose on the {record['videos']} validation videos carved from train "
                     f"({record['criterion']}: {judged}); '{OWN_RANKING}' is the paper's z~ ranking.")
        # one display name whatever was chosen, so tables over several stores (seeds, folds) line up
        variants.append(replace(run, key=f"{run.key}{CONTEXT_SUFFIX}", display=f"{run.display}+ctx",
                                context_ranking=None if chosen == OWN_RANKING else chosen))
    return variants


def entry_name(entry: Entry) -> str:
    return entry.display if isinstance(entry, ScoreRunOutputs) else display_name(entry)


def evaluate_entries(ev: Evaluator, entries, ks, notes) -> list[tuple[Entry, dict[int, ReportRow]]]:
    results = []
    for entry in entries:
        try:
            results.append((entry, ev.method(entry, ks)))
        except OutputUnavailable as exc:
            notes.append(f"{entry_name(entry)}: {exc}; omitted.")
    return results


def k_rows(ks: Sequence[int], results) -> list[int]:
    extra = {k for entry, by_k in results if isinstance(entry, ScoreRunOutputs) and entry.video_level for k in by_k}
    return list(ks) + sorted(extra - set(ks))


def versus_dense(ev: Evaluator, by_key: Mapping[Any, ReportRow]) -> dict[Any, ReportRow]:
    """The rows with the paired bootstrap 95% CI of their accuracy difference from Dense, in percentage points
    (``diff_vs_dense_pp``, ``ci95_vs_dense_pp``), over the same videos resampled for both (Dense has been run)."""
    dense = ev.correct[("dense", None, None)]
    out = {}
    for key, row in by_key.items():
        ci = paired_bootstrap_ci(ev.correct[(row.method, row.k, row.ks)], dense, resamples=BOOTSTRAP_RESAMPLES,
                                 seed=BOOTSTRAP_SEED)
        out[key] = replace(row, extra={**row.extra, "diff_vs_dense_pp": 100.0 * ci.difference,
                                       "ci95_vs_dense_pp": [100.0 * ci.low, 100.0 * ci.high]})
    return out


def is_condi(method: str) -> bool:
    """Whether a row's method key is ConDi-SR or a variant of it (the rows the pairwise comparisons are for)."""
    return method.startswith(CONDI_PREFIX)


def versus_others(ev: Evaluator, results: Sequence[tuple[Entry, Mapping[Any, ReportRow]]]
                  ) -> list[tuple[Entry, dict[Any, ReportRow]]]:
    """``results`` with every ConDi row (:func:`is_condi`) given ``versus``: {other method: {"diff_pp", "ci95_pp"}},
    the paired bootstrap 95% CI of its accuracy minus each other method's at the same K (and K_s), in percentage
    points, with the resamples and seed of :func:`versus_dense`. Dense is left to :func:`versus_dense`."""
    rows = [row for _, by_key in results for row in by_key.values()]
    out = []
    for entry, by_key in results:
        compared = {}
        for key, row in by_key.items():
            if not is_condi(row.method):
                compared[key] = row
                continue
            mine = ev.correct[(row.method, row.k, row.ks)]
            versus = {}
            for other in rows:
                if other.method in (row.method, "dense") or (other.k, other.ks) != (row.k, row.ks):
                    continue
                ci = paired_bootstrap_ci(mine, ev.correct[(other.method, other.k, other.ks)],
                                         resamples=BOOTSTRAP_RESAMPLES, seed=BOOTSTRAP_SEED)
                versus[other.method] = {"diff_pp": 100.0 * ci.difference,
                                        "ci95_pp": [100.0 * ci.low, 100.0 * ci.high]}
            compared[key] = replace(row, extra={**row.extra, "versus": versus})
        out.append((entry, compared))
    return out


def runs_of(entries) -> list[ScoreRunOutputs]:
    return [e for e in entries if isinstance(e, ScoreRunOutputs)]
