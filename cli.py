"""The ``condi-pipe`` command line: one command per stage, each a thin wrapper over a stage function."""

from __future__ import annotations

import json
import os
import sys
from functools import wraps

import click

from condi_pipe.methods.registry import method_names
from condi_pipe.pipeline.demo import DEMO_SEED, DEMO_VIDEOS
from condi_pipe.pipeline.executor import ExecutorOptions
from condi_pipe.pipeline.pretrain import PRETRAIN_SEED
from condi_pipe.pipeline.run_config import ConfigError
from condi_pipe.pipeline.stage import StageError
from condi_pipe.storage.errors import StoreError
from condi_pipe.video.sources import SOURCES, SourceError

# Errors a user can cause and fix: shown as one line, exit status 2, no traceback.
USER_ERRORS = (ConfigError, StageError, StoreError, SourceError, FileNotFoundError, ValueError, FloatingPointError)


class RegistryChoice(click.Choice):
    """A choice whose values a registry gives when the command runs (or prints its help), so that a table or method
    registered after this module was imported is offered too."""

    def __init__(self, names) -> None:
        self._names = names
        super().__init__([], case_sensitive=True)

    @property
    def choices(self):
        return tuple(self._names())

    @choices.setter
    def choices(self, _value) -> None:  # click.Choice.__init__ assigns it; the registry is the source
        pass


def _table_names():
    from condi_pipe.report.registry import table_names

    return table_names()


def _table_help() -> str:
    from condi_pipe.report.registry import tables_help

    return tables_help()


def _one_line_errors(fn):
    @wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except USER_ERRORS as exc:
            click.echo(f"error: {exc}", err=True)
            sys.exit(2)

    return wrapper


def _infer_methods() -> tuple[str, ...]:
    from condi_pipe.stages.infer import UNRANKED_METHODS  # only when `infer` is used: it loads torch

    return (*UNRANKED_METHODS, *method_names("clip"))


def _executor_options(fn):
    fn = click.option("--scheduler-address", envvar="DASK_SCHEDULER_ADDRESS", default=None,
                      help="Use an existing Dask cluster (tcp://HOST:PORT) instead of starting local workers.")(fn)
    fn = click.option("--workers", type=click.IntRange(min=0), default=2, show_default=True,
                      help="Local Dask worker processes (0: run in this process).")(fn)
    return fn


def _common_stage_options(fn):
    fn = click.option("--force", is_flag=True, help="Redo the stage even if it has finished.")(fn)
    fn = click.option("--quiet", is_flag=True, help="No progress bars.")(fn)
    return fn


# Commands that know how to share one run among the processes torchrun starts (pipeline.distributed).
TORCHRUN_COMMANDS = ("distill",)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="condi-pipe")
@click.pass_context
def main(ctx):
    """Confidence Distillation for efficient video action recognition, as a resumable batch pipeline."""
    # Any other command would run once per process, racing for the store lock: refuse it up front, once.
    # (WORLD_SIZE is read here directly: importing pipeline.distributed would load torch for every command.)
    world = int(os.environ.get("WORLD_SIZE", "1") or 1)
    if world > 1 and ctx.invoked_subcommand not in TORCHRUN_COMMANDS:
        if int(os.environ.get("RANK", "0")) == 0:
            click.echo(f"error: `condi-pipe {ctx.invoked_subcommand}` does not run under torchrun "
                       f"(WORLD_SIZE={world}); run it as one process (multi-process: "
                       f"{', '.join(TORCHRUN_COMMANDS)})", err=True)
        sys.exit(2)


@main.command()
@click.option("--out", "root", required=True, type=click.Path(file_okay=False), help="Folder to write the dataset to.")
@click.option("--videos", type=click.IntRange(min=10), default=200, show_default=True)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--workers", type=click.IntRange(min=1), default=2, show_default=True)
@_one_line_errors
def synth(root, videos, seed, workers):
    """Generate the embedded benchmark: a 10-class motion dataset as H.264 files in the UCF-101 layout."""
    from pathlib import Path

    from condi_pipe.video.synth import generate_benchmark

    summary = generate_benchmark(Path(root), videos=videos, seed=seed, workers=workers)
    click.echo(f"synth: wrote {summary.videos} videos to {root} (seed {seed})")


@main.command()
@click.option("--source", type=click.Choice(sorted(SOURCES)), required=True, help="Dataset layout.")
@click.option("--root", required=True, type=click.Path(exists=True, file_okay=False), help="Dataset root folder.")
@click.option("--annotations", type=click.Path(exists=True), default=None,
              help="Annotation file or folder (default: looked up under --root).")
@click.option("--split", type=click.IntRange(1, 3), default=1, show_default=True, help="UCF-101 / HMDB-51 split.")
@click.option("--store", required=True, help="Store path or fsspec URL.")
@click.option("--fps", type=click.FloatRange(min=0, min_open=True), default=None, help="Resample to this frame rate.")
@click.option("--short-side", type=click.IntRange(min=112), default=128, show_default=True)
@click.option("--clips-per-shard", type=click.IntRange(min=1), default=64, show_default=True)
@click.option("--strict", is_flag=True, help="Exit non-zero if any input failed or decoded with errors.")
@_executor_options
@_common_stage_options
@_one_line_errors
def extract(source, root, annotations, split, store, fps, short_side, clips_per_shard, strict, workers,
            scheduler_address, force, quiet):
    """Decode videos into 16x112x112 clips in STORE/clips.zarr with Parquet manifests."""
    from condi_pipe.pipeline.stage import ensure_store
    from condi_pipe.stages.extract import ExtractRequest
    from condi_pipe.stages.extract import extract as run_extract
    from condi_pipe.video.decode import DecodeOptions

    request = ExtractRequest(source, root, annotations, split, DecodeOptions(short_side=short_side, fps=fps),
                             clips_per_shard)
    run_extract(ensure_store(store), request, ExecutorOptions(workers, scheduler_address),
                force=force, strict=strict, quiet=quiet)


@main.command()
@click.argument("store")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@_one_line_errors
def status(store, as_json):
    """Each stage's state and counts."""
    from condi_pipe.pipeline.status import format_status, store_status

    report = store_status(store)
    if as_json:
        click.echo(json.dumps(report, indent=2, sort_keys=True))
        return
    click.echo("\n".join(format_status(report)))


@main.command()
@click.option("--num-classes", type=click.IntRange(min=1), default=600, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="A list of {name, width, role, params, flops}.")
@_one_line_errors
def models(num_classes, as_json):
    """List every registered architecture and width with parameters and FLOPs per 16x112x112 clip."""
    from condi_pipe.models import model_table

    rows = model_table(num_classes)
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    click.echo(f"{'name':<22}{'width':>7}{'role':>9}{'params':>13}{'GFLOPs':>9}")
    for row in rows:
        width = "-" if row["width"] is None else f"{row['width']:g}"
        click.echo(f"{row['name']:<22}{width:>7}{row['role']:>9}{row['params']:>13,}{row['flops'] / 1e9:>9.2f}")
    click.echo(f"({num_classes}-class heads; FLOPs = 2 x multiply-accumulates of convolutions and linear layers, "
               "measured by torch.utils.flop_counter)")


@main.command()
@click.option("--store", required=True, help="Store path or fsspec URL.")
@click.option("--table", required=True, type=RegistryChoice(_table_names), help=_table_help())
@click.option("--teacher", default=None, help="Teacher cache name (needed when the store has several).")
@click.option("--split", default=None, help="Split to report on (default: test, else val).")
@click.option("--k", "k_values", default=None,
              help="Clip budgets K, comma-separated (default 1,3,5,7; accuracy 1..10; oracle 1,5,10,15).")
@click.option("--ks", "ks_values", default=None, help="Table 4: student clips K_s, comma-separated (default 0,1,3,5).")
@click.option("--methods", default=None, help="Methods or score-run names, comma-separated (default per table).")
@click.option("--format", "fmt", type=click.Choice(["md", "csv", "json", "latex"]), default="md", show_default=True)
@click.option("--out", type=click.Path(dir_okay=False), default=None, help="Write the table here instead of stdout.")
@click.option("--plot", type=click.Path(dir_okay=False), default=None, help="Also write a PNG figure here.")
@click.option("--teacher-time", type=click.Choice(["auto", "share", "curve", "side-by-side"]), default="auto",
              show_default=True,
              help="How models are costed: side-by-side: every model's curve from `condi-pipe time-models` (what auto "
                   "picks when those timings cover the teacher and every score run); else each model's own run: the "
                   "K_t teacher clips as one batch from the teacher cache's latency curve (curve; auto's next choice) "
                   "or the video's per-clip share of its measured batch x K_t (share).")
@click.option("--sgs-teacher", default=None,
              help="Table sgs: the SGS teacher cache to compare (default: the store's only one made with --sgs).")
@click.option("--clip-kinds", type=click.Path(dir_okay=False), default=None,
              help="Table kinds: the generated benchmark's synth_clips.csv (read by this table only).")
@_one_line_errors
def report(store, table, teacher, split, k_values, ks_values, methods, fmt, out, plot, teacher_time, sgs_teacher,
           clip_kinds):
    """Tables and figures from the stored outputs (no model runs): the paper's Tables 3 and 4, and more."""
    from pathlib import Path

    from condi_pipe.report import build_report, plot_report, render

    result = build_report(store, table, teacher=teacher, split=split, k=k_values, ks=ks_values, methods=methods,
                          teacher_time=teacher_time, sgs_teacher=sgs_teacher, clip_kinds=clip_kinds)
    text = render(result, fmt)
    if out:
        Path(out).write_text(text)
        click.echo(f"report: wrote table {table} to {out}", err=True)
    else:
        click.echo(text, nl=False)
    if plot:
        plot_report(result, plot)
        click.echo(f"report: wrote {plot}", err=True)


# ---------------------------------------------------------------------------------------------------------
# Training and scoring: teacher-train, teacher-cache, distill, score.
# ---------------------------------------------------------------------------------------------------------

def _runtime_options(fn):
    fn = click.option("--threads", type=click.IntRange(min=1), default=None,
                      help="Torch threads per process (default: the cores divided among the workers).")(fn)
    fn = click.option("--bf16", is_flag=True, help="bfloat16 autocast (fast on recent GPUs and AVX-512 bf16 CPUs).")(fn)
    fn = click.option("--device", default="cpu", show_default=True, help="cpu, cuda or cuda:N.")(fn)
    return fn


def _inference_executor_options(fn):
    """Like ``_executor_options`` but one worker by default: timed inference should not share the cores."""
    fn = click.option("--scheduler-address", envvar="DASK_SCHEDULER_ADDRESS", default=None,
                      help="Use an existing Dask cluster (tcp://HOST:PORT) instead of starting local workers.")(fn)
    fn = click.option("--workers", type=click.IntRange(min=0), default=1, show_default=True,
                      help="Local Dask worker processes (0: run in this process).")(fn)
    return fn


def _train_options(epochs, batch_size, lr, weight_decay):
    """--epochs, --batch-size, --lr, --momentum, --weight-decay, --seed, --eval-every with per-stage defaults, and
    the validation split and epoch selection: --val-fraction, --val-seed, --keep."""

    def decorate(fn):
        fn = click.option("--keep", type=click.Choice(["best", "last"]), default="best", show_default=True,
                          help="Keep the evaluated epoch with the best validation selection metric (ties: the "
                               "earlier), or the last epoch.")(fn)
        fn = click.option("--val-seed", type=int, default=0, show_default=True,
                          help="Seed of the validation carve.")(fn)
        fn = click.option("--val-fraction", type=click.FloatRange(0, 1, max_open=True), default=0.1,
                          show_default=True,
                          help="Share of each class's groups carved from train for validation (every choice made "
                               "during training; 0: none, the last epoch is kept).")(fn)
        fn = click.option("--eval-every", type=click.IntRange(min=1), default=1, show_default=True,
                          help="Evaluate on the validation split after every N-th epoch (and after the last).")(fn)
        fn = click.option("--seed", type=int, default=0, show_default=True)(fn)
        fn = click.option("--weight-decay", type=click.FloatRange(min=0), default=weight_decay, show_default=True)(fn)
        fn = click.option("--momentum", type=click.FloatRange(min=0), default=0.9, show_default=True,
                          help="SGD momentum.")(fn)
        fn = click.option("--lr", type=click.FloatRange(min=0, min_open=True), default=lr, show_default=True)(fn)
        fn = click.option("--batch-size", type=click.IntRange(min=1), default=batch_size, show_default=True)(fn)
        fn = click.option("--epochs", type=click.IntRange(min=1), default=epochs, show_default=True)(fn)
        return fn

    return decorate


def _sgs_options(fn):
    """--sgs, --sgs-stage, --sgs-kernel, --name: a teacher with SGS inserted, under its own name."""
    fn = click.option("--name", default=None,
                      help="The teacher's name in the store (default: --teacher, plus '+sgs' with --sgs).")(fn)
    fn = click.option("--sgs-kernel", type=click.Choice(["linear", "kronecker"]), default="linear", show_default=True,
                      help="SGS kernel: linear (trainable embedding) or kronecker (each frame wholly in one bin).")(fn)
    fn = click.option("--sgs-stage", type=click.Choice(["res2", "res3", "res4"]), default="res2", show_default=True,
                      help="Insert SGS after this stage (res2 = layer1, res3 = layer2, res4 = layer3).")(fn)
    fn = click.option("--sgs", is_flag=True,
                      help="Insert Similarity Guided Sampling (ATFR) into the 3D ResNet: fewer temporal slices B' "
                           "for similar frames. With --weights, everything but the new SGS parameters loads.")(fn)
    return fn


def _sgs_from(sgs, stage, kernel):
    from condi_pipe.models.sgs import SGSOptions

    return SGSOptions(stage, kernel) if sgs else None


def _model_errors(fn):
    """Unreadable checkpoints and diverging training are the user's to fix: one line, exit status 2."""

    @wraps(fn)
    def wrapper(*args, **kwargs):
        from condi_pipe.models import CheckpointError

        try:
            return fn(*args, **kwargs)
        except (CheckpointError, FloatingPointError) as exc:
            click.echo(f"error: {exc}", err=True)
            sys.exit(2)

    return wrapper


@main.command("teacher-train")
@click.option("--teacher", required=True, help="Registered teacher model (see `condi-pipe models`).")
@click.option("--width", type=float, default=None, help="Width multiplier, for models that have one.")
@click.option("--store", required=True, help="Store path or fsspec URL.")
@_train_options(epochs=4, batch_size=16, lr=0.05, weight_decay=1e-4)
@click.option("--flip/--no-flip", default=True, show_default=True,
              help="Random horizontal flips of whole clips. Use --no-flip for direction-sensitive classes: the "
                   "embedded benchmark (TranslateLeft/Right, RotateClockwise/Anticlockwise) and "
                   "Something-Something V2, where a flipped clip shows another class.")
@click.option("--clips-per-video", type=click.IntRange(min=1), default=None,
              help="Train each epoch on this many random clips of each video (default: all clips).")
@click.option("--weights", type=click.Path(exists=True, dir_okay=False), default=None,
              help="Start from this local checkpoint (fine-tuning) instead of random weights.")
@click.option("--reset-head", is_flag=True, help="With --weights: keep a fresh classifier (other class count).")
@click.option("--folds", type=click.IntRange(min=2), default=None,
              help="Also train F fold teachers, each on the training videos outside one group-wise fold, so "
                   "teacher-cache can label every training clip out of fold (default: none).")
@_sgs_options
@_runtime_options
@_common_stage_options
@_one_line_errors
@_model_errors
def teacher_train(teacher, width, store, epochs, batch_size, lr, momentum, weight_decay, seed, eval_every,
                  val_fraction, val_seed, keep, flip,
                  clips_per_video, weights, reset_head, folds, sgs, sgs_stage, sgs_kernel, name, device, bf16, threads,
                  force, quiet):
    """Train a teacher on the train split (cosine LR schedule); per-epoch eval accuracy in STORE/teachers/NAME/."""
    from condi_pipe.pipeline.stage import ensure_store
    from condi_pipe.pipeline.torch_runtime import RuntimeOptions
    from condi_pipe.pipeline.training import TrainOptions
    from condi_pipe.stages.teacher_train import TeacherTrainRequest
    from condi_pipe.stages.teacher_train import teacher_train as run_teacher_train

    request = TeacherTrainRequest(
        teacher, width, TrainOptions(epochs, batch_size, lr, momentum, weight_decay, seed, eval_every,
                                     val_fraction=val_fraction, val_seed=val_seed, keep=keep),
        flip=flip, weights=weights, reset_head=reset_head, clips_per_video=clips_per_video,
        runtime=RuntimeOptions(device, threads, bf16), sgs=_sgs_from(sgs, sgs_stage, sgs_kernel), name=name,
        folds=folds,
    )
    run_teacher_train(ensure_store(store), request, force=force, quiet=quiet)


@main.command("teacher-cache")
@click.option("--teacher", required=True, help="Registered teacher model (see `condi-pipe models`).")
@click.option("--width", type=float, default=None, help="Width multiplier, for models that have one.")
@click.option("--store", required=True, help="Store path or fsspec URL.")
@click.option("--weights", type=click.Path(dir_okay=False), default=None,
              help="Local checkpoint (plain state dict or {'state_dict': ...}), or `pretrained` for the weights "
                   "shipped with the package (resnet10_3d_motion: trained on a generated corpus no demo uses); "
                   "default: the store's trained teacher from `condi-pipe teacher-train`.")
@click.option("--random-init", is_flag=True, help="Random weights: for tests and timing only.")
@click.option("--reset-head", is_flag=True, help="With --weights: keep a fresh classifier (other class count).")
@click.option("--clips-per-group", type=click.IntRange(min=1), default=256, show_default=True,
              help="Clips per task (whole videos; each task stages its outputs).")
@click.option("--z-labels", type=click.Choice(["out-of-fold", "in-sample"]), default=None,
              help="Confidence labels of the clips the teacher trained on: from the fold teacher that never saw "
                   "the video (needs teacher-train --folds F), or the teacher's own (default: out-of-fold when the "
                   "store's trained teacher has fold teachers, else in-sample).")
@_sgs_options
@_runtime_options
@_inference_executor_options
@_common_stage_options
@_one_line_errors
@_model_errors
def teacher_cache(teacher, width, store, weights, random_init, reset_head, clips_per_group, z_labels, sgs, sgs_stage,
                  sgs_kernel, name, device, bf16, threads, workers, scheduler_address, force, quiet):
    """Run the teacher once over every clip: logits, features, z and per-video timings in STORE/teacher/NAME/."""
    from condi_pipe.pipeline.stage import ensure_store
    from condi_pipe.pipeline.torch_runtime import RuntimeOptions
    from condi_pipe.stages.teacher_cache import TeacherCacheRequest
    from condi_pipe.stages.teacher_cache import teacher_cache as run_teacher_cache
    from condi_pipe.stages.teacher_train import teacher_ref

    target = ensure_store(store)
    ref = teacher_ref(target, teacher, width, weights, random_init, reset_head, _sgs_from(sgs, sgs_stage, sgs_kernel),
                      name)
    request = TeacherCacheRequest(ref, RuntimeOptions(device, threads, bf16), clips_per_group, z_labels)
    run_teacher_cache(target, request, ExecutorOptions(workers, scheduler_address), force=force, quiet=quiet)


@main.command()
@click.option("--loss", type=RegistryChoice(method_names), default="condi-sr", show_default=True,
              help="condi-sr: the method; bce-conf, st-ent, st-conf: baseline samplers; trivial-mt: the cheating "
                   "ablation; fewer-frames, uniform-k: one prediction per video from K clips.")
@click.option("--student", required=True, help="Registered student model (see `condi-pipe models`).")
@click.option("--width", type=float, default=None, help="Width multiplier (default: the model's default).")
@click.option("--name", default=None, help="Run name (default: <loss>-<student>-<width>, plus -k<K> for video losses).")
@click.option("--teacher", required=True, help="Teacher whose cache to distil from (`condi-pipe teacher-cache`).")
@click.option("--store", required=True, help="Store path or fsspec URL.")
@_train_options(epochs=50, batch_size=32, lr=0.1, weight_decay=1e-4)
@click.option("--conf-lr", type=click.FloatRange(min=0, min_open=True), default=None,
              help="Base LR of the confidence head (default: --lr).")
@click.option("--lr-decay", type=click.FloatRange(min=1), default=1.25, show_default=True,
              help="The network's LR is divided by this per epoch (see --schedule-unit).")
@click.option("--conf-lr-decay", type=click.FloatRange(min=1), default=5.0, show_default=True,
              help="The confidence head's LR is divided by this per epoch (see --schedule-unit).")
@click.option("--schedule-unit", type=click.Choice(["samples", "passes"]), default="samples", show_default=True,
              help="samples: the decays apply per --reference-epoch training samples, set before every optimizer "
                   "step; passes: per pass over the data.")
@click.option("--reference-epoch", type=click.IntRange(min=1), default=9537, show_default=True,
              help="Samples per epoch of the LR decays with --schedule-unit samples (9537: one clip per training "
                   "video of UCF-101 split 1, the paper's scale).")
@click.option("--tau", type=click.FloatRange(min=0, min_open=True), default=0.9, show_default=True,
              help="Distillation temperature.")
@click.option("--lambda", "lam", type=click.FloatRange(min=0), default=1.5, show_default=True,
              help="Weight of the confidence term (condi-sr, trivial-mt).")
@click.option("--mu", type=click.FloatRange(min=0), default=1.5, show_default=True,
              help="Weight of the positive BCE term (condi-sr, trivial-mt).")
@click.option("--detach-confidence", is_flag=True, help="condi-sr: no KD gradient into z~ (Eq. 5).")
@click.option("--beta", type=click.FloatRange(0, 1), default=0.5, show_default=True, help="trivial-mt: CE weight.")
@click.option("--downsample/--no-downsample", default=True, show_default=True,
              help="bce-conf: balance z = 0 and z = 1 in each batch.")
@click.option("--budget", type=click.FloatRange(min=0, min_open=True), default=0.3, show_default=True,
              help="st-conf: the budget on mean(-log c).")
@click.option("--lambda-init", type=click.FloatRange(min=0, min_open=True), default=0.1, show_default=True,
              help="st-conf: initial lambda.")
@click.option("--lambda-factor", type=click.FloatRange(1, 2, min_open=True, max_open=True), default=1.01,
              show_default=True, help="st-conf: lambda update factor.")
@click.option("--hint-fraction", type=click.FloatRange(0, 1), default=0.5, show_default=True,
              help="st-conf: share of each batch given hints.")
@click.option("--k", type=click.IntRange(min=1), default=3, show_default=True,
              help="fewer-frames, uniform-k: equidistant clips the student sees per video.")
@click.option("--alpha-rep", type=click.FloatRange(min=0), default=1.0, show_default=True,
              help="fewer-frames: weight of ||E_T - E_S||^2.")
@click.option("--alpha-kl", type=click.FloatRange(min=0), default=1.0, show_default=True,
              help="fewer-frames: weight of KL(P_T || P_S).")
@click.option("--alpha-ce", type=click.FloatRange(min=0), default=1.0, show_default=True,
              help="fewer-frames: weight of CE.")
@click.option("--clips-per-video", type=click.IntRange(min=1), default=None,
              help="Per-clip losses: train each epoch on this many random clips of each video (default: all).")
@click.option("--weights", type=click.Path(exists=True, dir_okay=False), default=None,
              help="Start the student from this local checkpoint (the paper fine-tunes at --lr 0.01).")
@click.option("--reset-head", is_flag=True, help="With --weights: keep a fresh classifier (other class count).")
@_runtime_options
@_common_stage_options
@_one_line_errors
@_model_errors
def distill(loss, student, width, name, teacher, store, epochs, batch_size, lr, momentum, weight_decay, seed,
            eval_every, val_fraction, val_seed, keep, conf_lr, lr_decay, conf_lr_decay, schedule_unit, reference_epoch,
            tau, lam, mu, detach_confidence, beta, downsample, budget,
            lambda_init, lambda_factor, hint_fraction, k, alpha_rep, alpha_kl, alpha_ce, clips_per_video, weights,
            reset_head, device, bf16, threads, force, quiet):
    """Train a student from the teacher cache (the teacher is not run); history in STORE/students/RUN/.

    Under torchrun it trains data-parallel over the started processes (gloo on CPU, NCCL with --device cuda);
    see the README's "Multi-process training (torchrun)".
    """
    from condi_pipe.pipeline.stage import ensure_store
    from condi_pipe.pipeline.torch_runtime import RuntimeOptions
    from condi_pipe.pipeline.training import TrainOptions
    from condi_pipe.stages.distill import DistillRequest, LossOptions
    from condi_pipe.stages.distill import distill as run_distill

    request = DistillRequest(
        loss, student, teacher, width, name,
        LossOptions(tau, lam, mu, detach_confidence, beta, downsample, budget, lambda_init, lambda_factor,
                    hint_fraction, k, alpha_rep, alpha_kl, alpha_ce),
        TrainOptions(epochs, batch_size, lr, momentum, weight_decay, seed, eval_every, val_fraction=val_fraction,
                     val_seed=val_seed, keep=keep),
        conf_lr=conf_lr, lr_decay=lr_decay, conf_lr_decay=conf_lr_decay, schedule_unit=schedule_unit,
        reference_epoch=reference_epoch, clips_per_video=clips_per_video,
        weights=weights, reset_head=reset_head, runtime=RuntimeOptions(device, threads, bf16),
    )
    run_distill(ensure_store(store), request, force=force, quiet=quiet)


@main.command()
@click.option("--student", "run", required=True, help="The distill run to score (its --name).")
@click.option("--store", required=True, help="Store path or fsspec URL.")
@click.option("--clips-per-group", type=click.IntRange(min=1), default=256, show_default=True,
              help="Clips per task (whole videos; each task stages its outputs).")
@_runtime_options
@_inference_executor_options
@_common_stage_options
@_one_line_errors
@_model_errors
def score(run, store, clips_per_group, device, bf16, threads, workers, scheduler_address, force, quiet):
    """Score every eval clip with a trained student: predictions, confidence, ranking score, timings."""
    from condi_pipe.pipeline.stage import ensure_store
    from condi_pipe.pipeline.torch_runtime import RuntimeOptions
    from condi_pipe.stages.score import ScoreRequest
    from condi_pipe.stages.score import score as run_score

    request = ScoreRequest(run, RuntimeOptions(device, threads, bf16), clips_per_group)
    run_score(ensure_store(store), request, ExecutorOptions(workers, scheduler_address), force=force, quiet=quiet)


@main.command("time-models")
@click.option("--store", required=True, help="Store path or fsspec URL.")
@click.option("--teacher", required=True, help="The teacher cache whose teacher and score runs are timed.")
@click.option("--runs", default=None, help="Score runs to time, comma-separated (default: every one made for the "
                                           "teacher; the report needs all of them).")
@click.option("--repeats", type=click.IntRange(min=1), default=None,
              help="Interleaved repeats per model and batch size (default 7).")
@_runtime_options
@_common_stage_options
@_one_line_errors
@_model_errors
def time_models(store, teacher, runs, repeats, device, bf16, threads, force, quiet):
    """Time the teacher and every student side by side in one process (batch sizes 1..B, interleaved repeats)."""
    from condi_pipe.pipeline.stage import ensure_store
    from condi_pipe.stages.timing import DEFAULT_REPEATS, TimingRequest
    from condi_pipe.stages.timing import time_models as run_timing

    names = None if runs is None else tuple(r.strip() for r in runs.split(",") if r.strip())
    request = TimingRequest(teacher, names, repeats or DEFAULT_REPEATS, device, threads, bf16)
    run_timing(ensure_store(store), request, force=force)


@main.command()
@click.argument("videos", nargs=-1, required=True, type=click.Path(exists=True, dir_okay=False))
@click.option("--store", required=True, help="Store holding the teacher cache and the student run.")
@click.option("--teacher", required=True, help="Teacher name (as cached by teacher-cache).")
@click.option("--method", type=RegistryChoice(_infer_methods), default="condi-sr", show_default=True,
              help="dense or equidistant (no student unless --ks), or the loss the student run was trained with.")
@click.option("--student", "student_run", default=None,
              help="Student run (from distill) for ranked methods / --ks (default: the store's only suitable run "
                   "distilled from --teacher).")
@click.option("--k", type=click.IntRange(min=1), default=3, show_default=True, help="Clips classified in all.")
@click.option("--ks", type=click.IntRange(min=0), default=0, show_default=True,
              help="How many of the K clips the student classifies itself (ConDi-SR type b).")
@click.option("--device", default="cpu", show_default=True)
@click.option("--bf16", is_flag=True, help="bfloat16 autocast.")
@click.option("--json", "as_json", is_flag=True)
@_one_line_errors
def infer(videos, store, teacher, method, student_run, k, ks, device, bf16, as_json):
    """Classify new videos: student over every clip, top-K to the teacher; print top-5 and time per step."""
    from condi_pipe.pipeline.stage import ensure_store
    from condi_pipe.pipeline.torch_runtime import RuntimeOptions
    from condi_pipe.stages.infer import infer as run_infer

    results = run_infer(ensure_store(store), list(videos), teacher=teacher, method=method, student_run=student_run,
                        k=k, ks=ks, runtime=RuntimeOptions(device=device, bf16=bf16),
                        log=lambda message: click.echo(message, err=True))  # stdout may be --json
    if as_json:
        click.echo(json.dumps([r._asdict() for r in results], indent=2))
        return
    for r in results:
        click.echo(f"{r.path}: {r.clips} clips; teacher on {r.teacher_clips}"
                   + (f", student on {r.student_clips}" if r.student_clips else ""))
        for name, prob in r.top5:
            click.echo(f"  {prob:6.1%}  {name}")
        click.echo("  time: " + ", ".join(f"{step} {sec * 1000:.0f} ms" for step, sec in r.seconds.items()))


@main.command()
@click.option("--config", "config_path", required=True, type=click.Path(dir_okay=False),
              help="A TOML file (see examples/).")
@click.option("--quiet", is_flag=True, help="No progress bars.")
@_one_line_errors
def run(config_path, quiet):
    """Run every stage of a configuration in order, skipping finished ones, and write the reports."""
    from condi_pipe.pipeline.run_config import load_run_config
    from condi_pipe.pipeline.runner import run_pipeline

    rendered = run_pipeline(load_run_config(config_path), quiet=quiet)
    for table in ("3", "sgs"):
        if table in rendered:
            click.echo(rendered[table])


@main.command()
@click.option("--store", "store_dir", default="demo_store", show_default=True, type=click.Path(file_okay=False),
              help="Folder for the store (the generated videos go to its synth/ subfolder).")
@click.option("--videos", type=click.IntRange(min=20), default=DEMO_VIDEOS, show_default=True)
@click.option("--seed", type=int, default=DEMO_SEED, show_default=True,
              help=f"Any seed but {PRETRAIN_SEED} (the shipped teacher's training corpus).")
@click.option("--quiet", is_flag=True, help="No progress bars.")
@click.option("--sgs", is_flag=True, help="Also fine-tune the teacher with SGS inserted (ATFR), cache it, and print "
                                          "the table comparing it with the plain teacher (about 1.5 more minutes).")
@_one_line_errors
def demo(store_dir, videos, seed, quiet, sgs):
    """Generate the embedded benchmark, run the whole pipeline on it, and print Table 3."""
    from condi_pipe.pipeline.demo import run_demo

    rendered = run_demo(store_dir, videos=videos, seed=seed, quiet=quiet, sgs=sgs)
    click.echo(rendered["3"])
    if "sgs" in rendered:
        click.echo(rendered["sgs"])


@main.command("pretrain-teacher")
@click.option("--work", default="pretrain_work", show_default=True, type=click.Path(file_okay=False),
              help="Folder for the generated corpus and its store (resumable: re-run continues).")
@click.option("--out", default=None, type=click.Path(dir_okay=False),
              help="Where to write the weights (and the model card beside them, .json); default: the file the "
                   "package ships (models/weights/resnet10_3d_motion-embedded.pt).")
@click.option("--quiet", is_flag=True, help="No progress bars.")
@_one_line_errors
def pretrain_teacher(work, out, quiet):
    """Make the embedded benchmark's shipped teacher: generate its own corpus (a seed no demo uses), extract,
    train resnet10_3d_motion, and write the weights with a model card of its held-out accuracy."""
    from condi_pipe.models.pretrained import WEIGHTS_DIR, SHIPPED_WEIGHTS
    from condi_pipe.pipeline.pretrain import TEACHER, pretrain_teacher as run_pretrain

    run_pretrain(work, out or WEIGHTS_DIR / SHIPPED_WEIGHTS[TEACHER], quiet=quiet)


def _list_problems(problems, prefix: str = "") -> None:
    """One line per problem; exit status 1 if there is any."""
    for p in problems:
        click.echo(f"{prefix}{p.stage}: {p.path}: {p.problem}")
    if problems:
        sys.exit(1)


@main.command()
@click.argument("store")
@_one_line_errors
def verify(store):
    """Check every finished stage's files against recorded checksums and the manifests' counts."""
    from condi_pipe.pipeline.stage import ensure_store
    from condi_pipe.pipeline.verify import verify_store

    problems = verify_store(ensure_store(store))
    click.echo(f"verify: {len(problems)} problems" if problems else "verify: all outputs intact")
    _list_problems(problems)


@main.command()
@click.argument("store")
@_one_line_errors
def repair(store):
    """Redo only what verify finds damaged (clip shards in place; other outputs by clearing their stage)."""
    from condi_pipe.pipeline.stage import ensure_store
    from condi_pipe.pipeline.verify import repair_store

    _list_problems(repair_store(ensure_store(store)), prefix="still damaged: ")


def entry_point() -> None:
    """The ``condi-pipe`` console script: :func:`main`, then an exit that skips the interpreter's teardown.

    Arrow's native thread pools can abort the process (SIGABRT, "terminate called without an active exception")
    while the interpreter tears down after all work is done (apache/arrow#34314; seen here about once in a few
    hundred runs). Every output is written atomically and closed before a command returns, so the exit status
    is decided and the process leaves without running that teardown.
    """
    try:
        main()
        status = 0
    except SystemExit as exc:
        if isinstance(exc.code, str):
            print(exc.code, file=sys.stderr)
        status = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(status)


if __name__ == "__main__":
    entry_point()
