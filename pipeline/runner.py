"""Run every stage of a :class:`~condi_pipe.pipeline.run_config.RunConfig`, skipping finished ones.

The order is not written here: it is a topological order of what the stages declare they read or use
(``StageSpec.reads`` / ``uses``): extract -> teacher-train (only without ``[teacher]`` weights; with ``[sgs]`` also the
SGS teacher) -> teacher-cache (the teacher, and the SGS teacher) -> distill (each loss) -> score (each run) ->
time-models (the teacher and every student side by side); then the reports. Every request is built through the
stage's option table (``pipeline.options``), as the CLI builds it. Every stage is itself resumable, so a killed
``run`` re-run continues where it stopped.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Callable

from condi_pipe.models.sgs import sgs_teacher_name
from condi_pipe.pipeline.executor import ExecutorOptions
from condi_pipe.pipeline.run_config import RunConfig
from condi_pipe.pipeline.stage import ensure_store, stage_order
from condi_pipe.stages.distill import DISTILL, distill
from condi_pipe.stages.extract import EXTRACT, EXTRACT_OPTIONS, extract
from condi_pipe.stages.score import SCORE, SCORE_OPTIONS, score
from condi_pipe.stages.teacher_cache import TEACHER_CACHE, TEACHER_CACHE_OPTIONS, TeacherChoice, teacher_cache
from condi_pipe.stages.teacher_train import TEACHER_TRAIN, TEACHER_TRAIN_OPTIONS, teacher_train
from condi_pipe.stages.timing import TIME_MODELS, TIMING_OPTIONS, time_models
from condi_pipe.storage.store import Store

# tables whose clip budgets the run config's [report] k sets; the others keep their own K axis (accuracy 1..10 ...)
BUDGET_TABLES = ("3", "4", "sgs")


class PipelineRequests:
    """Each stage's requests for a run config, built through the stages' option tables (as the CLI builds them)."""

    def __init__(self, config: RunConfig) -> None:
        self.config = config

    def extract(self):
        return EXTRACT_OPTIONS.request(**EXTRACT_OPTIONS.values(self.config.extract))

    def _teacher_runtime(self) -> dict:
        te = self.config.teacher
        return {"device": te.device, "threads": te.threads, "bf16": te.bf16}

    def teacher_train(self):
        """The teacher's training (from ``[teacher]`` and ``[teacher_train]``); None when [teacher] gives weights."""
        te = self.config.teacher
        if te.weights:
            return None
        return TEACHER_TRAIN_OPTIONS.request(teacher=te.name, width=te.width, **self._teacher_runtime(),
                                             **TEACHER_TRAIN_OPTIONS.values(self.config.teacher_train))

    def sgs_teacher_train(self, start: dict):
        """The ``[sgs]`` teacher's training: ``[teacher_train]``'s options but its own epochs, batch size and lr,
        no folds, starting from ``start`` (the plain teacher's weights, or none)."""
        te, sg = self.config.teacher, self.config.sgs
        options = {**TEACHER_TRAIN_OPTIONS.values(self.config.teacher_train), "epochs": sg.epochs,
                   "batch_size": sg.batch_size, "lr": sg.lr, "folds": None, "weights": None, "reset_head": False}
        request = TEACHER_TRAIN_OPTIONS.request(teacher=te.name, width=te.width, sgs=sg.options, name=sg.name,
                                                **self._teacher_runtime(), **options)
        return dataclasses.replace(request, **start)

    def teacher(self) -> TeacherChoice:
        te = self.config.teacher
        return TeacherChoice(te.name, te.width, weights=te.weights, reset_head=te.reset_head)

    def teacher_cache(self, sgs: bool = False):
        """The teacher's cache, or with ``sgs`` the ``[sgs]`` teacher's (the store's trained one, in-sample z)."""
        te, sg = self.config.teacher, self.config.sgs
        if sgs:
            teacher = {"teacher": te.name, "width": te.width, "sgs": sg.options, "name": sg.name}
        else:
            teacher = {"teacher": te.name, "width": te.width, "weights": te.weights, "reset_head": te.reset_head,
                       "z_labels": te.z_labels}
        return TEACHER_CACHE_OPTIONS.request(**teacher, **self._teacher_runtime(), clips_per_group=te.clips_per_group)

    def distill(self) -> list:
        """One distill request per ``[distill]`` loss, from the teacher's cache."""
        di = self.config.distill
        return [di.request(loss, self.teacher().teacher_name) for loss in di.losses]

    def score(self) -> list:
        di = self.config.distill
        return [SCORE_OPTIONS.request(run=request.run, device=di.device, threads=di.threads, bf16=di.bf16,
                                      clips_per_group=self.config.score.clips_per_group)
                for request in self.distill()]

    def time_models(self):
        return TIMING_OPTIONS.request(teacher=self.teacher().teacher_name, repeats=self.config.timing.repeats,
                                      device=self.config.teacher.device)


def run_pipeline(config: RunConfig, *, quiet: bool = False, log: Callable[[str], None] = print) -> dict[str, str]:
    """Run the configured pipeline; returns the rendered report tables by name (also written to out_dir)."""
    store = ensure_store(config.store)
    requests = PipelineRequests(config)
    te = config.teacher
    quietly = {"quiet": quiet, "log": log}
    model_workers = ExecutorOptions(workers=te.workers)

    def run_extract() -> None:
        extract(store, requests.extract(), ExecutorOptions(workers=config.extract.workers), **quietly)

    def run_teacher_train() -> None:
        request = requests.teacher_train()
        if request is None and config.teacher_train.folds:
            log("run: note: [teacher_train] folds is not used: the teacher comes from [teacher] weights (no "
                "teacher-train), so its z labels are in-sample")
        if request is not None:
            teacher_train(store, request, **quietly)
        if config.sgs is not None:
            teacher_train(store, requests.sgs_teacher_train(_sgs_start(config, store, requests)), **quietly)

    def run_teacher_cache() -> None:
        teacher_cache(store, requests.teacher_cache(), model_workers, **quietly)
        if config.sgs is not None:
            teacher_cache(store, requests.teacher_cache(sgs=True), model_workers, **quietly)

    def run_distill() -> None:
        for request in requests.distill():
            distill(store, request, **quietly)

    def run_score() -> None:
        for request in requests.score():
            score(store, request, model_workers, **quietly)

    def run_time_models() -> None:
        # A new score run or retrained weights make earlier timings stale: redo them rather than refuse.
        time_models(store, requests.time_models(), redo_if_changed=True, **quietly)

    steps = {EXTRACT.name: run_extract, TEACHER_TRAIN.name: run_teacher_train, TEACHER_CACHE.name: run_teacher_cache,
             DISTILL.name: run_distill, SCORE.name: run_score, TIME_MODELS.name: run_time_models}
    for name in stage_order(steps):
        steps[name]()
    return _write_reports(config, store, log)


def _sgs_start(config: RunConfig, store: Store, requests: PipelineRequests) -> dict:
    """Where the ``[sgs]`` teacher starts: the plain teacher's weights (its checkpoint, or the store's trained
    teacher), resolved as teacher-cache resolves them; nothing when ``from_teacher`` is false."""
    if not config.sgs.from_teacher:
        return {}
    ref = requests.teacher().resolve(store)
    if ref.weights_path:
        return {"weights": ref.weights_path, "reset_head": ref.reset_head}
    return {"store_weights": ref.store_weights, "weights_sha256": ref.weights_sha256}


def _write_reports(config: RunConfig, store: Store, log: Callable[[str], None]) -> dict[str, str]:
    from condi_pipe.report import render
    from condi_pipe.report.registry import get_table
    from condi_pipe.stages.report import write_report

    te, rep = config.teacher, config.report
    tables = list(rep.tables)
    if config.sgs is not None:
        tables += [] if "sgs" in tables else ["sgs"]
    rendered = {}
    out_dir = rep.out_dir
    os.makedirs(out_dir, exist_ok=True)
    sgs_name = None if config.sgs is None else sgs_teacher_name(te.name, config.sgs.options, config.sgs.name)
    for table in tables:
        spec = get_table(table)
        report = write_report(
            store, table, os.path.join(out_dir, f"table-{table}"), formats=("md", "json", "csv"), plot=rep.plots,
            teacher=te.name, k=rep.k if table in BUDGET_TABLES else None, ks=rep.ks if spec.uses_ks else None,
            sgs_teacher=sgs_name if table == "sgs" else None,
            clip_kinds=rep.clip_kinds if spec.needs_clip_kinds else None)
        rendered[table] = render(report, "md")
    log(f"run: reports written to {out_dir}")
    return rendered
