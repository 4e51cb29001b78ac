"""Run every stage of a :class:`~condi_pipe.app.run_config.RunConfig`, skipping finished ones.

The order is not written here: :func:`pipeline_steps` lists the stage runs the configuration asks for, and
``pipeline.stage.step_order`` orders them by what each stage declares it reads or uses (``StageSpec``): extract ->
teacher-train (only without ``[teacher]`` weights) -> teacher-cache -> with ``[sgs]`` the SGS teacher's training
and cache -> distill then score, one student after the other -> time-models (the teacher and every student side by
side); then the reports. Every request is built through the stage's option table (``pipeline.options``), as the CLI
builds it. Every stage is itself resumable, so a killed ``run`` re-run continues where it stopped."""

from __future__ import annotations

import dataclasses
import os
from functools import partial
from typing import Callable

from condi_pipe.app.run_config import RunConfig
from condi_pipe.models.sgs import sgs_teacher_name
from condi_pipe.pipeline.executor import ExecutorOptions
from condi_pipe.pipeline.stage import PipelineStep, ensure_store, step_order
from condi_pipe.report import render
from condi_pipe.report.across_stores import FOLD_TABLES, FoldTable, combine_folds
from condi_pipe.report.registry import get_table
from condi_pipe.report.write import write_report, write_table
from condi_pipe.stages.distill import DISTILL, distill
from condi_pipe.stages.extract import EXTRACT, EXTRACT_OPTIONS, extract
from condi_pipe.stages.score import SCORE, SCORE_OPTIONS, score
from condi_pipe.stages.teacher_cache import TEACHER_CACHE, TEACHER_CACHE_OPTIONS, TeacherChoice, teacher_cache
from condi_pipe.stages.teacher_train import TEACHER_TRAIN, TEACHER_TRAIN_OPTIONS, teacher_train
from condi_pipe.stages.time_models import TIME_MODELS, TIME_MODELS_OPTIONS, time_models
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
        return {"device": te.device, "threads": te.threads, "bf16": te.bf16, "layout": te.layout}

    def teacher_train(self):
        """The teacher's training (from ``[teacher]`` and ``[teacher_train]``); None when [teacher] gives weights or
        imports the teacher's logits (``from_logits``)."""
        te = self.config.teacher
        if te.weights or te.from_logits:
            return None
        return TEACHER_TRAIN_OPTIONS.request(teacher=te.name, width=te.width, **self._teacher_runtime(),
                                             **TEACHER_TRAIN_OPTIONS.values(self.config.teacher_train))

    def sgs_teacher_train(self, start: dict):
        """The ``[sgs]`` teacher's training: ``[teacher_train]``'s options but its own epochs, batch size and lr,
        no folds, starting from ``start`` (the plain teacher's weights, or none)."""
        te, sg = self.config.teacher, self.config.sgs
        options = {**TEACHER_TRAIN_OPTIONS.values(self.config.teacher_train), "epochs": sg.epochs,
                   "batch_size": sg.batch_size, "lr": sg.lr, "oof_folds": None, "weights": None, "reset_head": False}
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
                       "z_labels": te.z_labels, "from_logits": te.from_logits}
        return TEACHER_CACHE_OPTIONS.request(**teacher, **self._teacher_runtime(), clips_per_group=te.clips_per_group)

    def distill(self) -> list:
        """One distill request per ``[distill]`` loss, from the teacher's cache."""
        di = self.config.distill
        return [di.request(loss, self.teacher().teacher_name) for loss in di.losses]

    def score(self) -> list:
        di = self.config.distill
        return [SCORE_OPTIONS.request(run=request.run, device=di.device, threads=di.threads, bf16=di.bf16,
                                      layout=di.layout, clips_per_group=self.config.score.clips_per_group)
                for request in self.distill()]

    def time_models(self):
        return TIME_MODELS_OPTIONS.request(teacher=self.teacher().teacher_name, repeats=self.config.time_models.repeats,
                                      device=self.config.teacher.device)


def run_pipeline(config: RunConfig, *, quiet: bool = False, log: Callable[[str], None] = print) -> dict[str, str]:
    """Run the configured pipeline; returns the rendered report tables by name (also written to out_dir).

    With several splits (``[extract] split = [1, 2, 3]``) each split is a fold run whole, one after the other, in
    its own store with its own reports (:func:`fold_configs`); then the tables that combine over folds (3 and 4)
    are written to out_dir as the mean and spread of the folds' tables (``report.folds``). The rendered tables are
    then ``"3"`` (over the folds) and ``"split-1/3"`` (a fold's)."""

    return {name: render(report, "md") for name, report in _run_and_report(config, quiet, log).items()}


def _run_and_report(config: RunConfig, quiet: bool, log: Callable[[str], None]) -> dict:
    """Every stage, then the reports: {table name: ReportTable} (a fold's as ``split-N/<table>``)."""
    if config.extract.folds is None:
        store = ensure_store(config.store)
        for step in step_order(pipeline_steps(config, store, quiet=quiet, log=log)):
            step.run()
        return _write_reports(config, store, log)
    reports = {}
    folds = fold_configs(config)
    for name, fold in folds:
        log(f"run: fold {name} (store {fold.store})")
        reports.update({f"{name}/{table}": report for table, report in _run_and_report(fold, quiet, log).items()})
    reports.update(_write_fold_reports(config, [name for name, _ in folds], reports, log))
    return reports


def fold_configs(config: RunConfig) -> list[tuple[str, RunConfig]]:
    """Each fold of a configuration with several splits, as (name, configuration): ``split-N`` extracts split N
    into the store ``<store>/split-N`` and writes its reports to ``<out_dir>/split-N/``; the rest is the same. A
    fold never sees another fold's store, so its teacher and students train on its own train split only."""
    folds = []
    for split in config.extract.folds or ():
        name = f"split-{split}"
        folds.append((name, dataclasses.replace(
            config, store=f"{config.store.rstrip('/')}/{name}",
            extract=dataclasses.replace(config.extract, split=split),
            report=dataclasses.replace(config.report, out_dir=os.path.join(config.report.out_dir, name)))))
    return folds


def pipeline_steps(config: RunConfig, store: Store, *, quiet: bool = False,
                   log: Callable[[str], None] = print) -> list[PipelineStep]:
    """Every stage run the configuration asks for, in no particular order (:func:`step_order` orders them)."""
    requests = PipelineRequests(config)
    quietly = {"quiet": quiet, "log": log}
    model_workers = ExecutorOptions(workers=config.teacher.workers)
    teacher = requests.teacher().teacher_name
    steps = [PipelineStep(EXTRACT.name, "", partial(extract, store, requests.extract(),
                                                     ExecutorOptions(workers=config.extract.workers), **quietly))]
    train = requests.teacher_train()
    if train is not None:
        steps.append(PipelineStep(TEACHER_TRAIN.name, teacher, partial(teacher_train, store, train, **quietly)))
    elif config.teacher_train.oof_folds:
        log("run: note: [teacher_train] oof_folds is not used: the teacher comes from [teacher] "
            f"{'from_logits' if config.teacher.from_logits else 'weights'} (no teacher-train), so its z labels are "
            "in-sample")
    steps.append(PipelineStep(TEACHER_CACHE.name, teacher,
                              partial(teacher_cache, store, requests.teacher_cache(), model_workers, **quietly)))
    if config.sgs is not None:
        sgs_cache = requests.teacher_cache(sgs=True)
        sgs_teacher = sgs_cache.teacher.teacher_name

        def train_sgs_teacher() -> None:  # its start is resolved when it runs: the plain teacher is trained by then
            teacher_train(store, requests.sgs_teacher_train(_sgs_start(config, store, requests)), **quietly)

        steps += [PipelineStep(TEACHER_TRAIN.name, sgs_teacher, train_sgs_teacher,
                               after=(f"{TEACHER_TRAIN.name}/{teacher}",)),
                  PipelineStep(TEACHER_CACHE.name, sgs_teacher,
                               partial(teacher_cache, store, sgs_cache, model_workers, **quietly))]
    for request in requests.distill():
        steps.append(PipelineStep(DISTILL.name, request.run, partial(distill, store, request, **quietly)))
    for request in requests.score():
        steps.append(PipelineStep(SCORE.name, request.run, partial(score, store, request, model_workers, **quietly)))
    if config.teacher.from_logits:  # no teacher model to time: the report costs what it can (see its notes)
        log(f"run: note: no time-models: the teacher's logits come from {config.teacher.from_logits}, so there is "
            "no teacher model to time")
        return steps
    # A new score run or retrained weights make earlier timings stale: redo them rather than refuse.
    steps.append(PipelineStep(TIME_MODELS.name, teacher, partial(time_models, store, requests.time_models(),
                                                               redo_if_changed=True, **quietly)))
    return steps


def _sgs_start(config: RunConfig, store: Store, requests: PipelineRequests) -> dict:
    """Where the ``[sgs]`` teacher starts: the plain teacher's weights (its checkpoint, or the store's trained
    teacher), resolved as teacher-cache resolves them; nothing when ``from_teacher`` is false."""
    if not config.sgs.from_teacher:
        return {}
    ref = requests.teacher().resolve(store)
    if ref.weights_path:
        return {"weights": ref.weights_path, "reset_head": ref.reset_head}
    return {"store_weights": ref.store_weights, "weights_sha256": ref.weights_sha256}


def _write_reports(config: RunConfig, store: Store, log: Callable[[str], None]) -> dict:
    """Every ``[report]`` table of the store, written to out_dir: {table name: ReportTable}."""

    te, rep = config.teacher, config.report
    tables = list(rep.tables)
    if config.sgs is not None:
        tables += [] if "sgs" in tables else ["sgs"]
    reports = {}
    out_dir = rep.out_dir
    os.makedirs(out_dir, exist_ok=True)
    sgs_name = None if config.sgs is None else sgs_teacher_name(te.name, config.sgs.options, config.sgs.name)
    for table in tables:
        spec = get_table(table)
        reports[table] = write_report(
            store, table, os.path.join(out_dir, f"table-{table}"), formats=("md", "json", "csv"), plot=rep.plots,
            teacher=te.name, k=rep.k if table in BUDGET_TABLES else None, ks=rep.ks if spec.uses_ks else None,
            sgs_teacher=sgs_name if table == "sgs" else None,
            clip_kinds=rep.clip_kinds if spec.needs_clip_kinds else None)
    log(f"run: reports written to {out_dir}")
    return reports


def _write_fold_reports(config: RunConfig, folds: list[str], reports: dict, log: Callable[[str], None]) -> dict:
    """The ``[report]`` tables that combine over folds (``report.folds.FOLD_TABLES``): each fold's table as the
    fold wrote it, combined, and written to out_dir like a single store's."""

    rep, combined = config.report, {}
    for table in [str(t) for t in rep.tables if str(t) in FOLD_TABLES]:
        combined[table] = write_table(combine_folds([FoldTable(fold, reports[f"{fold}/{table}"]) for fold in folds]),
                                      os.path.join(rep.out_dir, f"table-{table}"), formats=("md", "json", "csv"),
                                      plot=rep.plots)
    log(f"run: tables over the {len(folds)} folds ({', '.join(combined) or 'none asked'}) written to {rep.out_dir}")
    return combined
