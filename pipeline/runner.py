"""Run every stage of a :class:`~condi_pipe.pipeline.run_config.RunConfig` in order, skipping finished ones.

extract -> teacher-train (only without teacher weights) -> teacher-cache -> distill (each loss) -> score (each
run) -> time-models (the teacher and every student side by side) -> [with an ``[sgs]`` section: teacher-train of
the SGS teacher -> its teacher-cache] -> report. Every stage is
itself resumable, so a killed ``run`` re-run continues where it stopped.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Callable

from condi_pipe.models.pretrained import resolve_weights
from condi_pipe.models.sgs import sgs_teacher_name
from condi_pipe.pipeline.executor import ExecutorOptions
from condi_pipe.pipeline.run_config import RunConfig
from condi_pipe.pipeline.stage import ensure_store
from condi_pipe.pipeline.torch_runtime import RuntimeOptions
from condi_pipe.pipeline.training import TrainOptions
from condi_pipe.storage import training_artifacts
from condi_pipe.video.decode import DecodeOptions

# tables whose clip budgets the run config's [report] k sets; the others keep their own K axis (accuracy 1..10 ...)
BUDGET_TABLES = ("3", "4", "sgs")


def run_pipeline(config: RunConfig, *, quiet: bool = False, log: Callable[[str], None] = print) -> dict[str, str]:
    """Run the configured pipeline; returns the rendered report tables by name (also written to out_dir)."""
    from condi_pipe.stages.distill import DistillRequest, LossOptions, distill
    from condi_pipe.stages.extract import ExtractRequest, extract
    from condi_pipe.report import render
    from condi_pipe.report.registry import get_table
    from condi_pipe.stages.report import write_report
    from condi_pipe.stages.score import ScoreRequest, score
    from condi_pipe.stages.teacher_cache import TeacherCacheRequest, teacher_cache
    from condi_pipe.stages.teacher_train import TeacherTrainRequest, teacher_ref, teacher_train
    from condi_pipe.stages.timing import TimingRequest, time_models

    # "pretrained" teacher weights: the checkpoint shipped with the package
    config = dataclasses.replace(config, teacher=dataclasses.replace(
        config.teacher, weights=resolve_weights(config.teacher.name, config.teacher.weights)))
    store = ensure_store(config.store)
    ex, te, tt, di, rep = config.extract, config.teacher, config.teacher_train, config.distill, config.report

    extract(store, ExtractRequest(ex.source, ex.root, ex.annotations, ex.split, DecodeOptions(fps=ex.fps),
                                  ex.clips_per_shard), ExecutorOptions(workers=ex.workers), quiet=quiet, log=log)
    runtime = RuntimeOptions(device=te.device, bf16=te.bf16)
    if te.weights:
        if tt.folds:
            log("run: note: [teacher_train] folds is not used: the teacher comes from [teacher] weights (no "
                "teacher-train), so its z labels are in-sample")
        teacher = teacher_ref(store, te.name, te.width, weights=te.weights, reset_head=te.reset_head)
    else:
        train = TrainOptions(epochs=tt.epochs, batch_size=tt.batch_size, lr=tt.lr, weight_decay=tt.weight_decay,
                             seed=tt.seed, val_fraction=tt.val_fraction, val_seed=tt.val_seed, keep=tt.keep)
        teacher_train(store, TeacherTrainRequest(te.name, te.width, train, flip=tt.flip, runtime=runtime,
                                                 folds=tt.folds), quiet=quiet, log=log)
        teacher = teacher_ref(store, te.name, te.width)
    teacher_cache(store, TeacherCacheRequest(teacher, runtime, z_labels=te.z_labels),
                  ExecutorOptions(workers=te.workers), quiet=quiet, log=log)

    student_runtime = RuntimeOptions(device=di.device)
    losses = LossOptions(tau=di.tau, lam=di.lam, mu=di.mu, k=di.k)
    train = TrainOptions(epochs=di.epochs, batch_size=di.batch_size, lr=di.lr, seed=di.seed,
                         val_fraction=di.val_fraction, val_seed=di.val_seed, keep=di.keep)
    for loss in di.losses:
        request = DistillRequest(loss, di.student, te.name, di.width, losses=losses, train=train,
                                 schedule_unit=di.schedule_unit, reference_epoch=di.reference_epoch,
                                 runtime=student_runtime)
        distill(store, request, quiet=quiet, log=log)
        score(store, ScoreRequest(request.run, student_runtime), ExecutorOptions(workers=te.workers),
              quiet=quiet, log=log)

    # A new score run or retrained weights make earlier timings stale: redo them rather than refuse.
    time_models(store, TimingRequest(teacher.teacher_name, repeats=config.timing.repeats, device=te.device),
                redo_if_changed=True, quiet=quiet, log=log)

    tables = list(rep.tables)
    if config.sgs is not None:
        _sgs_teacher(config, store, runtime, quiet, log)
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


def _sgs_teacher(config: RunConfig, store, runtime: RuntimeOptions, quiet: bool, log: Callable[[str], None]) -> None:
    """Train (by default: fine-tune the plain teacher with SGS inserted) and cache the ``[sgs]`` teacher."""
    from condi_pipe.stages.teacher_cache import TeacherCacheRequest, teacher_cache
    from condi_pipe.stages.teacher_train import TeacherTrainRequest, teacher_ref, teacher_train

    te, tt, sg = config.teacher, config.teacher_train, config.sgs
    start: dict = {}
    if sg.from_teacher and te.weights:
        start = {"weights": te.weights, "reset_head": te.reset_head}
    elif sg.from_teacher:
        folder = training_artifacts.trained_teacher_folder(te.name)
        start = {"store_weights": training_artifacts.weights_rel(folder),
                 "weights_sha256": training_artifacts.weights_sha256(store, folder)}
    train = TrainOptions(epochs=sg.epochs, batch_size=sg.batch_size, lr=sg.lr, weight_decay=tt.weight_decay,
                         seed=tt.seed, val_fraction=tt.val_fraction, val_seed=tt.val_seed, keep=tt.keep)
    teacher_train(store, TeacherTrainRequest(te.name, te.width, train, flip=tt.flip, runtime=runtime,
                                             sgs=sg.options, name=sg.name, **start), quiet=quiet, log=log)
    ref = teacher_ref(store, te.name, te.width, sgs=sg.options, name=sg.name)
    teacher_cache(store, TeacherCacheRequest(ref, runtime), ExecutorOptions(workers=te.workers), quiet=quiet, log=log)
