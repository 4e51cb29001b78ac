"""The ``condi-pipe`` command line: one command per stage, each a thin wrapper over a stage function."""

from __future__ import annotations

import json
import sys
from functools import wraps

import click

from condi_pipe.pipeline.executor import ExecutorOptions
from condi_pipe.pipeline.stage import StageError
from condi_pipe.storage.errors import StoreError
from condi_pipe.video.sources import SOURCES, SourceError

# Errors a user can cause and fix: shown as one line, exit status 2, no traceback.
USER_ERRORS = (StageError, StoreError, SourceError, FileNotFoundError, ValueError)


def _one_line_errors(fn):
    @wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except USER_ERRORS as exc:
            click.echo(f"error: {exc}", err=True)
            sys.exit(2)

    return wrapper


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


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="condi-pipe")
def main():
    """Confidence Distillation for efficient video action recognition, as a resumable batch pipeline."""


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
    from condi_pipe.pipeline.status import store_status

    report = store_status(store)
    if as_json:
        click.echo(json.dumps(report, indent=2, sort_keys=True))
        return
    click.echo(f"store {report['store']} (format {report['format_version']})")
    if not report["stages"]:
        click.echo("  no stage has run")
    for name, info in report["stages"].items():
        counts = ", ".join(f"{k} {v}" for k, v in info.get("counts", {}).items())
        click.echo(f"  {name:<28} {info['state']:<8} {counts}")


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
@click.option("--table", required=True, type=click.Choice(["3", "4", "accuracy", "oracle", "confidence"]),
              help="3: time (accuracy) per K; 4: ConDi-SR with division; accuracy: every method against K; "
                   "oracle: Dense against Oracle; confidence: FPR/AUROC of each score run.")
@click.option("--teacher", default=None, help="Teacher cache name (needed when the store has several).")
@click.option("--split", default=None, help="Split to report on (default: test, else val).")
@click.option("--k", "k_values", default=None,
              help="Clip budgets K, comma-separated (default 1,3,5,7; accuracy 1..10; oracle 1,5,10,15).")
@click.option("--ks", "ks_values", default=None, help="Table 4: student clips K_s, comma-separated (default 0,1,3,5).")
@click.option("--methods", default=None, help="Methods or score-run names, comma-separated (default per table).")
@click.option("--format", "fmt", type=click.Choice(["md", "csv", "json", "latex"]), default="md", show_default=True)
@click.option("--out", type=click.Path(dir_okay=False), default=None, help="Write the table here instead of stdout.")
@click.option("--plot", type=click.Path(dir_okay=False), default=None, help="Also write a PNG figure here.")
@_one_line_errors
def report(store, table, teacher, split, k_values, ks_values, methods, fmt, out, plot):
    """Tables and figures from the stored outputs (no model runs): the paper's Tables 3 and 4, and more."""
    from pathlib import Path

    from condi_pipe.stages.report import build_report, plot_report, render

    result = build_report(store, table, teacher=teacher, split=split, k=k_values, ks=ks_values, methods=methods)
    text = render(result, fmt)
    if out:
        Path(out).write_text(text)
        click.echo(f"report: wrote table {table} to {out}", err=True)
    else:
        click.echo(text, nl=False)
    if plot:
        plot_report(result, plot)
        click.echo(f"report: wrote {plot}", err=True)


if __name__ == "__main__":
    main()
