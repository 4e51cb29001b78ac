"""The ``condi-pipe`` command line: one command per stage, each a thin wrapper over a stage function."""

from __future__ import annotations

import json
import os
import sys

import click

from condi_pipe.app.model_choice import predict_methods
from condi_pipe.app.predict import PredictRequest
from condi_pipe.app.status import TIME_HELP as STATUS_TIME_HELP
from condi_pipe.cli_options import (
    STORE_HELP,
    RegistryChoice,
    StoreCommand,
    bf16_option,
    common_stage_options,
    executor_options,
    field_option,
    fine_tuning_options,
    layout_option,
    model_errors,
    one_line_errors,
    option,
    runtime_options,
    sgs_from,
    sgs_options,
    train_options,
)
from condi_pipe.compute.torch_runtime import RuntimeOptions
from condi_pipe.methods.registry import default_method_names
from condi_pipe.pipeline.executor import INFERENCE_WORKERS, ExecutorOptions
from condi_pipe.pipeline.stage import ensure_store, open_store
from condi_pipe.recipes.demo import DEMO_LENGTH_PROFILE, DEMO_LOSSES, DEMO_SEED, DEMO_TRAIN_SHARE, DEMO_VIDEOS
from condi_pipe.report.build import TEACHER_TIME
from condi_pipe.report.render import FORMATS
from condi_pipe.stages.distill_request import DEFAULT_LOSS, DISTILL_OPTIONS
from condi_pipe.stages.extract import EXTRACT_OPTIONS
from condi_pipe.stages.score import SCORE_OPTIONS
from condi_pipe.stages.teacher_cache import TEACHER_CACHE_OPTIONS
from condi_pipe.stages.teacher_train import TEACHER_TRAIN_OPTIONS
from condi_pipe.stages.time_models import TIME_MODELS_OPTIONS
from condi_pipe.storage.errors import StoreError
from condi_pipe.storage.run_state import RUN_FILE
from condi_pipe.storage.store import FORMAT_VERSION, Store
from condi_pipe.video.synth.config import DEFAULT_LENGTH_PROFILE, LENGTH_PROFILES
from condi_pipe.video.synth.pretraining_corpus import PRETRAIN_SEED, PRETRAIN_VIDEOS


def _table_names():
    from condi_pipe.report.registry import table_names

    return table_names()


def _table_help() -> str:
    from condi_pipe.report.registry import tables_help

    return tables_help()


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
@click.option("--length-profile", type=click.Choice(list(LENGTH_PROFILES)), default=DEFAULT_LENGTH_PROFILE,
              show_default=True, help="Video lengths: " + "; ".join(f"{p.name}: {p.about}"
                                                                     for p in LENGTH_PROFILES.values()) + ".")
@click.option("--train-share", type=click.FloatRange(0, 1, min_open=True), default=1.0, show_default=True,
              help="Share of each class's train groups to write (the test split is always written whole).")
@one_line_errors
def synth(root, videos, seed, workers, length_profile, train_share):
    """Generate the embedded benchmark: a 10-class motion dataset as H.264 files in the UCF-101 layout."""
    from pathlib import Path

    from condi_pipe.video.synth import generate_benchmark

    summary = generate_benchmark(Path(root), videos=videos, seed=seed, workers=workers, length_profile=length_profile,
                                 train_share=train_share)
    click.echo(f"synth: wrote {summary.videos} videos ({summary.clips} clips, profile {length_profile}) to {root} "
               f"(seed {seed})")


@main.command()
@option(EXTRACT_OPTIONS, "--source", required=True)
@option(EXTRACT_OPTIONS, "--root", required=True, type=click.Path(exists=True, file_okay=False))
@option(EXTRACT_OPTIONS, "--annotations", type=click.Path(exists=True))
@option(EXTRACT_OPTIONS, "--split")
@click.option("--store", required=True, help=STORE_HELP)
@option(EXTRACT_OPTIONS, "--fps")
@option(EXTRACT_OPTIONS, "--short-side")
@option(EXTRACT_OPTIONS, "--clips-per-shard")
@option(EXTRACT_OPTIONS, "--zstd-level")
@click.option("--strict", is_flag=True, help="Exit non-zero if any input failed or decoded with errors.")
@executor_options(workers=ExecutorOptions().workers)
@common_stage_options
@one_line_errors
def extract(store, strict, workers, scheduler_address, force, quiet, **options):
    """Decode videos into 16x112x112 clips in STORE/clips.zarr with Parquet manifests."""
    from condi_pipe.stages.extract import extract as run_extract

    run_extract(ensure_store(store), EXTRACT_OPTIONS.request(**options), ExecutorOptions(workers, scheduler_address),
                force=force, strict=strict, quiet=quiet)


@main.command(cls=StoreCommand, help=f"Each stage's state, time and counts.\n\n{STATUS_TIME_HELP}")
@click.option("--store", required=True, help=STORE_HELP)
@click.option("--json", "as_json", is_flag=True,
              help="Machine-readable output (per stage also seconds, started_at, finished_at, runs: null where not "
                   "known).")
@one_line_errors
def status(store, as_json):
    from condi_pipe.app.status import format_status, store_status

    report = store_status(store)
    if as_json:
        click.echo(json.dumps(report, indent=2, sort_keys=True))
        return
    click.echo("\n".join(format_status(report)))


@main.command()
@click.option("--num-classes", type=click.IntRange(min=1), default=600, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="A list of {name, width, role, params, flops}.")
@one_line_errors
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
@click.option("--store", "stores", required=True, multiple=True,
              help="Store path or fsspec URL. Given several times: one store per fold (split) of the same dataset, "
                   "each cell the mean and spread over them (tables 3 and 4).")
@click.option("--table", required=True, type=RegistryChoice(_table_names), help=_table_help())
@click.option("--teacher", default=None, help="Teacher cache name (needed when the store has several).")
@click.option("--split", default=None, help="Split to report on (default: test, else val).")
@click.option("--k", "k_values", default=None,
              help="Clip budgets K, comma-separated (default 1,3,5,7; accuracy 1..10; oracle 1,5,10,15).")
@click.option("--ks", "ks_values", default=None, help="Table 4: student clips K_s, comma-separated (default 0,1,3,5).")
@click.option("--methods", default=None, help="Methods or score-run names, comma-separated (default per table).")
@click.option("--format", "fmt", type=click.Choice(FORMATS), default="md", show_default=True)
@click.option("--out", type=click.Path(dir_okay=False), default=None, help="Write the table here instead of stdout.")
@click.option("--plot", type=click.Path(dir_okay=False), default=None,
              help="Also write a PNG figure here (tables 3 and adaptive with GFLOPs per video: also accuracy "
                   "against GFLOPs, beside it as <name>-gflops.png).")
@click.option("--teacher-time", type=click.Choice(TEACHER_TIME), default="auto",
              show_default=True,
              help="How models are costed: side-by-side: every model's curve from `condi-pipe time-models` (what auto "
                   "picks when those timings cover the teacher and every score run); else each model's own run: the "
                   "K_t teacher clips as one batch from the teacher cache's latency curve (curve; auto's next choice) "
                   "or the video's per-clip share of its measured batch x K_t (share).")
@click.option("--sgs-teacher", default=None,
              help="Table sgs: the SGS teacher cache to compare (default: the store's only one made with --sgs).")
@click.option("--clip-kinds", type=click.Path(dir_okay=False), default=None,
              help="Table kinds: the generated benchmark's synth_clips.csv (read by this table only).")
@one_line_errors
def report(stores, table, teacher, split, k_values, ks_values, methods, fmt, out, plot, teacher_time, sgs_teacher,
           clip_kinds):
    """Tables and figures from the stored outputs (no model runs): the paper's Tables 3 and 4, and more."""
    from pathlib import Path

    from condi_pipe.report import build_report, render
    from condi_pipe.report.across_stores import build_report_across_stores
    from condi_pipe.report.plot import plot_figures

    stores = [open_store(store) for store in stores]
    options = dict(teacher=teacher, split=split, k=k_values, ks=ks_values, methods=methods, teacher_time=teacher_time,
                   sgs_teacher=sgs_teacher, clip_kinds=clip_kinds)
    if len(stores) > 1:
        result = build_report_across_stores(stores, table, **options)
    else:
        result = build_report(stores[0], table, **options)
    text = render(result, fmt)
    if out:
        Path(out).write_text(text)
        click.echo(f"report: wrote table {table} to {out}", err=True)
    else:
        click.echo(text, nl=False)
    if plot:  # Tables 3 and adaptive with GFLOPs per video: also accuracy against GFLOPs (<plot>-gflops.png)
        for path in plot_figures(result, plot):
            click.echo(f"report: wrote {path}", err=True)


# ---------------------------------------------------------------------------------------------------------
# Training and scoring: teacher-train, teacher-cache, distill, score, time-models. Every default is the
# stage's request field's (the stages' option tables); each command builds its request through that table.
# ---------------------------------------------------------------------------------------------------------

@main.command("teacher-train")
@option(TEACHER_TRAIN_OPTIONS, "--teacher", required=True)
@option(TEACHER_TRAIN_OPTIONS, "--width")
@click.option("--store", required=True, help=STORE_HELP)
@train_options(TEACHER_TRAIN_OPTIONS)
@option(TEACHER_TRAIN_OPTIONS, "--flip/--no-flip")
@fine_tuning_options(TEACHER_TRAIN_OPTIONS)
@option(TEACHER_TRAIN_OPTIONS, "--oof-folds")
@sgs_options
@runtime_options(TEACHER_TRAIN_OPTIONS)
@common_stage_options
@one_line_errors
@model_errors
def teacher_train(store, force, quiet, **options):
    """Train a teacher on the train split (cosine LR schedule); per-epoch eval accuracy in STORE/trained_teachers/NAME/."""
    from condi_pipe.stages.teacher_train import teacher_train as run_teacher_train

    request = TEACHER_TRAIN_OPTIONS.request(**sgs_from(options))
    run_teacher_train(open_store(store), request, force=force, quiet=quiet)


@main.command("teacher-cache")
@option(TEACHER_CACHE_OPTIONS, "--teacher", required=True)
@option(TEACHER_CACHE_OPTIONS, "--width")
@click.option("--store", required=True, help=STORE_HELP)
@option(TEACHER_CACHE_OPTIONS, "--weights", type=click.Path(dir_okay=False))
@option(TEACHER_CACHE_OPTIONS, "--random-init", is_flag=True)
@option(TEACHER_CACHE_OPTIONS, "--reset-head", is_flag=True)
@option(TEACHER_CACHE_OPTIONS, "--clips-per-group")
@option(TEACHER_CACHE_OPTIONS, "--z-labels")
@option(TEACHER_CACHE_OPTIONS, "--from-logits", type=click.Path(dir_okay=False))
@sgs_options
@runtime_options(TEACHER_CACHE_OPTIONS)
@executor_options(workers=INFERENCE_WORKERS)
@common_stage_options
@one_line_errors
@model_errors
def teacher_cache(store, workers, scheduler_address, force, quiet, **options):
    """Run the teacher once over every clip: logits, features, z and per-video timings in STORE/teacher/NAME/.

    With --from-logits FILE, import a teacher of another framework instead: its per-clip logits (Parquet or CSV),
    cached under --teacher NAME with the same z and predictions, without features or timings."""
    from condi_pipe.stages.teacher_cache import teacher_cache as run_teacher_cache

    request = TEACHER_CACHE_OPTIONS.request(**sgs_from(options))  # the stage resolves the teacher's weights
    run_teacher_cache(open_store(store), request, ExecutorOptions(workers, scheduler_address), force=force,
                      quiet=quiet)


@main.command()
@option(DISTILL_OPTIONS, "--loss", default=DEFAULT_LOSS)
@option(DISTILL_OPTIONS, "--student", required=True)
@option(DISTILL_OPTIONS, "--width")
@option(DISTILL_OPTIONS, "--name")
@option(DISTILL_OPTIONS, "--teacher", required=True)
@click.option("--store", required=True, help=STORE_HELP)
@train_options(DISTILL_OPTIONS)
@option(DISTILL_OPTIONS, "--conf-lr")
@option(DISTILL_OPTIONS, "--lr-decay")
@option(DISTILL_OPTIONS, "--conf-lr-decay")
@option(DISTILL_OPTIONS, "--schedule-unit")
@option(DISTILL_OPTIONS, "--reference-epoch")
@option(DISTILL_OPTIONS, "--tau")
@option(DISTILL_OPTIONS, "--lambda", "lam")
@option(DISTILL_OPTIONS, "--mu")
@option(DISTILL_OPTIONS, "--detach-confidence", is_flag=True)
@option(DISTILL_OPTIONS, "--beta")
@option(DISTILL_OPTIONS, "--downsample/--no-downsample")
@option(DISTILL_OPTIONS, "--budget")
@option(DISTILL_OPTIONS, "--lambda-init")
@option(DISTILL_OPTIONS, "--lambda-factor")
@option(DISTILL_OPTIONS, "--hint-fraction")
@option(DISTILL_OPTIONS, "--k")
@option(DISTILL_OPTIONS, "--alpha-rep")
@option(DISTILL_OPTIONS, "--alpha-kl")
@option(DISTILL_OPTIONS, "--alpha-ce")
@fine_tuning_options(DISTILL_OPTIONS)
@runtime_options(DISTILL_OPTIONS)
@common_stage_options
@one_line_errors
@model_errors
def distill(store, force, quiet, **options):
    """Train a student from the teacher cache (the teacher is not run); history in STORE/students/RUN/.

    Under torchrun it trains data-parallel over the started processes (gloo on CPU, NCCL with --device cuda);
    see the README's "Multi-process training (torchrun)".
    """
    from condi_pipe.stages.distill import distill as run_distill

    request = DISTILL_OPTIONS.request(**options)  # the options' errors first, then the store's
    run_distill(open_store(store), request, force=force, quiet=quiet)


@main.command()
@option(SCORE_OPTIONS, "--student", "run", required=True)
@click.option("--store", required=True, help=STORE_HELP)
@option(SCORE_OPTIONS, "--clips-per-group")
@runtime_options(SCORE_OPTIONS)
@executor_options(workers=INFERENCE_WORKERS)
@common_stage_options
@one_line_errors
@model_errors
def score(store, workers, scheduler_address, force, quiet, **options):
    """Score every eval clip with a trained student: predictions, confidence, ranking score, timings."""
    from condi_pipe.stages.score import score as run_score

    request = SCORE_OPTIONS.request(**options)
    run_score(open_store(store), request, ExecutorOptions(workers, scheduler_address), force=force, quiet=quiet)


@main.command("time-models")
@click.option("--store", required=True, help=STORE_HELP)
@option(TIME_MODELS_OPTIONS, "--teacher", required=True)
@option(TIME_MODELS_OPTIONS, "--runs", type=str)
@option(TIME_MODELS_OPTIONS, "--repeats")
@runtime_options(TIME_MODELS_OPTIONS)
@common_stage_options
@one_line_errors
@model_errors
def time_models(store, runs, force, quiet, **options):
    """Time the teacher and every student side by side in one process (batch sizes 1..B, interleaved repeats)."""
    from condi_pipe.stages.time_models import time_models as run_timing

    names = None if runs is None else tuple(r.strip() for r in runs.split(",") if r.strip())
    request = TIME_MODELS_OPTIONS.request(runs=names, **options)
    run_timing(open_store(store), request, force=force)


@main.command()
@click.argument("videos", nargs=-1, required=True, type=click.Path(exists=True, dir_okay=False))
@click.option("--store", required=True, help="Store holding the teacher cache and the student run.")
@click.option("--teacher", required=True, help="Teacher name (as cached by teacher-cache).")
@click.option("--method", type=RegistryChoice(predict_methods), default=DEFAULT_LOSS, show_default=True,
              help="dense or equidistant (no student unless --ks), or the loss the student run was trained with.")
@click.option("--student", "student_run", default=None,
              help="Student run (from distill) for ranked methods / --ks (default: the store's only suitable run "
                   "distilled from --teacher).")
@click.option("--k", type=click.IntRange(min=1), default=3, show_default=True, help="Clips classified in all.")
@click.option("--ks", type=click.IntRange(min=0), default=0, show_default=True,
              help="How many of the K clips the student classifies itself (ConDi-SR type b).")
@click.option("--device", default=RuntimeOptions().device, show_default=True)
@bf16_option(default=False)
@layout_option(default=RuntimeOptions().layout)
@click.option("--json", "as_json", is_flag=True)
@one_line_errors
def infer(videos, store, teacher, method, student_run, k, ks, device, bf16, layout, as_json):
    """Classify new videos: student over every clip, top-K to the teacher; print top-5 and time per step."""
    from condi_pipe.app.infer import infer as run_infer

    results = run_infer(open_store(store), list(videos), teacher=teacher, method=method, student_run=student_run,
                        k=k, ks=ks, runtime=RuntimeOptions(device=device, bf16=bf16, layout=layout),
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
@one_line_errors
def run(config_path, quiet):
    """Run every stage of a configuration in order, skipping finished ones, and write the reports."""
    from condi_pipe.app.run_config import load_run_config
    from condi_pipe.app.runner import run_pipeline

    rendered = run_pipeline(load_run_config(config_path), quiet=quiet)
    for table in ("3", "sgs"):
        if table in rendered:
            click.echo(rendered[table])


@main.command()
@click.option("--config", "config_path", required=True, type=click.Path(dir_okay=False),
              help="A TOML file with a [sweep] section (see the README's \"Hyperparameter sweeps\").")
@click.option("--quiet", is_flag=True, help="Only the sweep's own lines.")
@one_line_errors
@model_errors
def sweep(config_path, quiet):
    """Search [distill] hyperparameters on the validation part (Optuna; resumable, several processes may share a
    study); the winner is written to STORE/sweeps/NAME/best.toml."""
    from condi_pipe.app.run_config import load_run_config
    from condi_pipe.app.sweep import sweep as run_sweep

    run_sweep(load_run_config(config_path), quiet=quiet)


@main.command()
@click.option("--store", "store_dir", default="demo_store", show_default=True, type=click.Path(file_okay=False),
              help="Folder for the store (the generated videos go to its synth/ subfolder).")
@click.option("--videos", type=click.IntRange(min=20), default=DEMO_VIDEOS, show_default=True)
@click.option("--seed", type=int, default=DEMO_SEED, show_default=True,
              help=f"Any seed but {PRETRAIN_SEED} + k*2**32 with 0 <= k < {PRETRAIN_VIDEOS} (numpy gives those seeds "
                   "random streams of the shipped teacher's training corpus).")
@click.option("--seeds", default=None,
              help="Several seeds, comma-separated: one store per seed (STORE/seed-S) and Table 3 as the mean and "
                   "spread over them beside each seed's own.")
@click.option("--length-profile", type=click.Choice(list(LENGTH_PROFILES)), default=DEMO_LENGTH_PROFILE,
              show_default=True, help="Video lengths (see `condi-pipe synth --help`).")
@click.option("--train-share", type=click.FloatRange(0, 1, min_open=True), default=DEMO_TRAIN_SHARE,
              show_default=True, help="Share of each class's train groups generated (the test split is whole).")
@click.option("--epochs", type=click.IntRange(min=1), default=None,
              help="Each student's training epochs (default: embedded.toml's; fewer: a quicker, rougher table).")
@click.option("--all-students", is_flag=True,
              help=f"Train every default method ({', '.join(default_method_names())}), not only Table 3's "
                   f"({', '.join(DEMO_LOSSES)}).")
@click.option("--quiet", is_flag=True, help="No progress bars.")
@click.option("--sgs", is_flag=True, help="Also fine-tune the teacher with SGS inserted (ATFR), cache it, and print "
                                          "the table comparing it with the plain teacher (about 1.5 more minutes).")
@one_line_errors
def demo(store_dir, videos, seed, seeds, length_profile, train_share, epochs, all_students, quiet, sgs):
    """Generate the embedded benchmark, run the whole pipeline on it, and print Table 3."""
    from condi_pipe.recipes.demo import run_demo, run_demo_seeds
    from condi_pipe.report.build import parse_int_list

    options = dict(videos=videos, quiet=quiet, sgs=sgs, all_students=all_students, length_profile=length_profile,
                   train_share=train_share, epochs=epochs)
    if seeds is not None:
        click.echo(run_demo_seeds(store_dir, parse_int_list(seeds, "--seeds"), **options))
        return
    rendered = run_demo(store_dir, seed=seed, **options)
    for table in ("3", "pairwise", "sgs"):  # Table 3, ConDi against each baseline, and with --sgs the SGS teacher
        if table in rendered:
            click.echo(rendered[table])


@main.command("pretrain-teacher")
@click.option("--work", default="pretrain_work", show_default=True, type=click.Path(file_okay=False),
              help="Folder for the generated corpus and its store (resumable: re-run continues).")
@click.option("--out", default=None, type=click.Path(dir_okay=False),
              help="Where to write the weights (and the model card beside them, .json); default: the file the "
                   "package ships (models/weights/resnet10_3d_motion-embedded.pt).")
@click.option("--quiet", is_flag=True, help="No progress bars.")
@one_line_errors
def pretrain_teacher(work, out, quiet):
    """Make the embedded benchmark's shipped teacher: generate its own corpus (a seed no demo uses), extract,
    train resnet10_3d_motion, and write the weights with a model card of its held-out accuracy."""
    from condi_pipe.models.pretrained import SHIPPED_WEIGHTS, WEIGHTS_DIR
    from condi_pipe.recipes.pretrain import TEACHER
    from condi_pipe.recipes.pretrain import pretrain_teacher as run_pretrain

    run_pretrain(work, out or WEIGHTS_DIR / SHIPPED_WEIGHTS[TEACHER], quiet=quiet)


def _list_problems(problems, prefix: str = "") -> None:
    """One line per problem; exit status 1 if there is any."""
    for p in problems:
        click.echo(f"{prefix}{p.stage}: {p.path}: {p.problem}")
    if problems:
        sys.exit(1)


@main.command()
@click.option("--store", required=True, help=STORE_HELP)
@one_line_errors
def migrate(store):
    """Bring a store written by an older condi-pipe to the current format (rerun it if it was interrupted)."""
    from condi_pipe.storage.migrate import migrate_store

    target = Store(store)
    if not target.exists(RUN_FILE):
        raise StoreError(f"{store}: not a store: it holds no {RUN_FILE}")
    done = migrate_store(target)
    for line in done:
        click.echo(f"migrate: {line}")
    if not done:
        click.echo(f"migrate: {store} is already format {FORMAT_VERSION}")


@main.command(cls=StoreCommand)
@click.option("--store", required=True, help=STORE_HELP)
@one_line_errors
def verify(store):
    """Check every finished stage's files against recorded checksums and the manifests' counts."""
    from condi_pipe.app.verify import verify_store

    problems = verify_store(open_store(store))
    click.echo(f"verify: {len(problems)} problems" if problems else "verify: all outputs intact")
    _list_problems(problems)


@main.command(cls=StoreCommand)
@click.option("--store", required=True, help=STORE_HELP)
@executor_options(workers=INFERENCE_WORKERS)
@one_line_errors
@model_errors
def repair(store, workers, scheduler_address):
    """Redo only what verify finds damaged: clip shards in place; teacher caches, students and score runs by running
    their stage again with its recorded configuration; other outputs by clearing their stage's record."""
    from condi_pipe.app.verify import repair_store

    executor = ExecutorOptions(workers, scheduler_address)
    _list_problems(repair_store(open_store(store), executor=executor), prefix="still damaged: ")


@main.command()
@click.argument("videos", nargs=-1)
@click.option("--list", "list_file", default=None, help="A CSV with a 'path' column (relative to the CSV's folder).")
@click.option("--root", default=None, help="Every video file under this folder (local path or fsspec URL).")
@click.option("--model", "bundle", default=None, help="A model bundle (`condi-pipe bundle`): no training store needed.")
@click.option("--store", "model_store", default=None, help="Or a training store with the teacher cache and student.")
@click.option("--student", "student_run", default=None, help="With --store: the student run (default: the only one).")
@click.option("--teacher", default=None, help="With --store: the teacher (default: the student's).")
@click.option("--out", required=True, help="Output folder (a store): predictions.parquet, step_seconds.parquet, "
                                           "failures.parquet.")
@field_option(PredictRequest, "method", "--method")
@field_option(PredictRequest, "k", "--k")
@field_option(PredictRequest, "ks", "--ks")
@field_option(PredictRequest, "window", "--window")
@field_option(RuntimeOptions, "device", "--device")
@field_option(RuntimeOptions, "threads", "--threads")
@bf16_option(default=False)
@layout_option(default=RuntimeOptions().layout)
@executor_options(workers=0)
@common_stage_options
@one_line_errors
@model_errors
def predict(videos, list_file, root, bundle, model_store, student_run, teacher, out, method, k, ks, window, device,
            threads, bf16, layout, workers, scheduler_address, force, quiet):
    """Classify a new video collection the ConDi way, decode included: one row per video, failures apart."""
    from condi_pipe.app.predict import collect_videos, models_from_bundle, models_from_store
    from condi_pipe.app.predict import predict as run_predict

    if (bundle is None) == (model_store is None):
        raise click.UsageError("give the models as --model BUNDLE or as --store STORE (one of the two)")
    request = PredictRequest(method=method, k=k, ks=ks, window=window,
                             runtime=RuntimeOptions(device=device, threads=threads, bf16=bf16, layout=layout))
    if bundle is not None:
        models = models_from_bundle(bundle, request)
    else:
        models = models_from_store(open_store(model_store), request, teacher=teacher, student_run=student_run,
                                   log=click.echo)
    paths = collect_videos(videos, list_file=list_file, root=root)
    run_predict(ensure_store(out), paths, models, request, ExecutorOptions(workers, scheduler_address), force=force,
                quiet=quiet, log=click.echo)


@main.command()
@click.option("--store", required=True, help="Store holding the teacher cache and the student run.")
@click.option("--out", required=True, help="The bundle's folder (made; a bundle there is replaced).")
@click.option("--method", type=RegistryChoice(predict_methods), default=DEFAULT_LOSS, show_default=True,
              help="dense or equidistant (no student unless --ks), or the loss the student run was trained with.")
@click.option("--student", "student_run", default=None,
              help="Student run (from distill); default: the store's only run of --method from --teacher.")
@click.option("--teacher", default=None, help="Teacher name (default: the one the student was distilled from).")
@click.option("--k", type=click.IntRange(min=1), default=5, show_default=True, help="Clips classified in all.")
@click.option("--ks", type=click.IntRange(min=0), default=0, show_default=True,
              help="How many of the K clips the student classifies itself (ConDi-SR type b).")
@one_line_errors
def bundle(store, out, method, student_run, teacher, k, ks):
    """Package a store's teacher and student for `predict --model` (weights, classes, method, K, K_s, decode
    options, runtime choices, a model card)."""
    from condi_pipe.app.bundle import make_bundle

    make_bundle(open_store(store), out, method=method, k=k, ks=ks, student_run=student_run, teacher=teacher,
                log=click.echo)


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
