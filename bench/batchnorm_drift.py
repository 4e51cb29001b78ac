"""How far 2-process training drifts from one process, with and without synchronised BatchNorm.

    .venv/bin/python bench/batchnorm_drift.py [--clips-per-process 4,8] [--seeds 1,2] [--lr 0.02,1e-6]
                                              [--epochs 3] [--dropout on]

The store of ``tests/system/test_distributed.py``: 40 embedded-benchmark videos (seed 7; 20 fit, 10 validation,
10 test) with a random-init ``resnet10_3d_small`` teacher cache. For every global batch (2 x clips per process)
and seed, condi-sr distils ``shufflenetv2_3d`` 0.25x (2 clips per video, so 40 clips per epoch) four ways: one
process; one process with ``--layout ncdhw`` (only the float summation order of the convolutions differs: how far
the curve moves from that alone, the noise floor); 2 gloo processes under ``torchrun`` (each normalising its own
part); 2 processes with ``--sync-batchnorm``. At lr 1e-6 the weights hardly move and the eval loss shows the
running statistics alone. ``--dropout off`` replaces the classifier's dropout by the identity in every process (a
wrapper around the CLI); as shipped (``on``) each process draws its own dropout masks. Prints each epoch's
validation loss (``eval_total``) and its relative deviation from the one-process run, and writes them (and the
training loss's) to ``bench/results/<machine>/batchnorm_drift.json`` (``bench/record.py``). One thread per
process.
"""

from __future__ import annotations

import argparse
import itertools
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import pyarrow.parquet as pq
from record import add_record_options, record

from condi_pipe.compute.clip_inference import ModelRef
from condi_pipe.compute.torch_runtime import RuntimeOptions
from condi_pipe.pipeline.executor import ExecutorOptions
from condi_pipe.stages.distill_request import default_run_name
from condi_pipe.stages.extract import ExtractRequest, extract
from condi_pipe.stages.teacher_cache import TeacherCacheRequest, teacher_cache
from condi_pipe.storage.store import Store
from condi_pipe.video.synth import generate_benchmark

BIN = Path(sys.executable).parent
TEACHER, STUDENT, WIDTH, LOSS = "resnet10_3d_small", "shufflenetv2_3d", 0.25, "condi-sr"
RUN = default_run_name(LOSS, STUDENT, WIDTH)
WAYS = ("one process", "one process, ncdhw", "2 processes", "2 processes, sync")
COLUMNS = ("eval_total", "train_total")
# The CLI with every nn.Dropout the identity (--dropout off).
NO_DROPOUT_CLI = """
import torch

torch.nn.Dropout.forward = lambda self, x: x
from condi_pipe.cli import entry_point

entry_point()
"""


def make_store(folder: Path) -> Path:
    """The 40-video store with a teacher cache (``validation_teacher_store`` of tests/conftest.py)."""
    generate_benchmark(folder / "data", videos=40, seed=7)
    store = Store(str(folder / "store"))
    quiet = {"quiet": True, "log": lambda message: None}
    extract(store, ExtractRequest("ucf101", str(folder / "data"), clips_per_shard=8), ExecutorOptions(workers=0),
            **quiet)
    request = TeacherCacheRequest(ModelRef(TEACHER, 10), RuntimeOptions(threads=2), clips_per_group=64)
    teacher_cache(store, request, ExecutorOptions(workers=0), **quiet)
    return folder / "store"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def distill_run(store: Path, way: str, dropout: bool, batch: int, lr: float, epochs: int, seed: int,
                no_dropout_cli: Path) -> tuple[dict[str, list[float]], float]:
    """Each epoch's validation and training loss of one distill run on ``store`` (a fresh copy), and its training
    seconds (all epochs; on a shared machine only a rough figure)."""
    args = ["distill", "--loss", LOSS, "--student", STUDENT, "--width", str(WIDTH), "--teacher", TEACHER,
            "--epochs", str(epochs), "--batch-size", str(batch), "--clips-per-video", "2", "--lr", str(lr),
            "--seed", str(seed), "--threads", "1", "--quiet", "--store", str(store)]
    cli = [str(no_dropout_cli)] if not dropout else ["-m", "condi_pipe.cli"]
    if way.startswith("one process"):
        command = [sys.executable, *cli, *args, *(["--layout", "ncdhw"] if way.endswith("ncdhw") else [])]
    else:
        command = [str(BIN / "torchrun"), "--nnodes=1", "--nproc_per_node=2", "--master_addr=127.0.0.1",
                   f"--master_port={_free_port()}", *cli, *args]
        if way.endswith("sync"):
            command.append("--sync-batchnorm")
    env = {k: v for k, v in os.environ.items() if k not in ("WORLD_SIZE", "RANK", "LOCAL_RANK", "MASTER_PORT")}
    env["OMP_NUM_THREADS"] = "1"
    done = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"{way}, batch {batch}, seed {seed} failed:\n{done.stderr[-3000:]}")
    rows = pq.read_table(store / "students" / RUN / "history.parquet").to_pylist()
    losses = {c: [float(row[c]) for row in rows] for c in COLUMNS}
    return losses, sum(float(row["train_seconds"]) for row in rows)


def relative(ours: list[float], reference: list[float]) -> list[float]:
    return [abs(a - b) / abs(b) for a, b in zip(ours, reference)]


def print_table(results: list[dict], epochs: int) -> dict:
    """The per-epoch table and the worst deviation of each setting (returned)."""
    print(f"condi-sr {STUDENT} {WIDTH}x, {epochs} epochs: eval loss per epoch (one process) and each other way's "
          "relative deviation from it, per epoch")
    widths = (7, 8, 14, 5, 22)
    head = ("lr", "dropout", "clips/process", "seed", "one process")
    print("".join(f"{h:>{w}}" for h, w in zip(head[:4], widths)) + f"  {head[4]:<{widths[4]}}"
          + "".join(f"{way:<27}" for way in WAYS[1:]))
    for r in results:
        one = " ".join(f"{v:.4f}" for v in r["losses"]["one process"]["eval_total"])
        cells = [" ".join(f"{d:7.1e}" for d in r["relative_deviation"][way]["eval_total"]) for way in WAYS[1:]]
        keys = (f"{r['lr']:g}", r["dropout"], r["clips_per_process"], r["seed"])
        print("".join(f"{k:>{w}}" for k, w in zip(keys, widths)) + f"  {one:<{widths[4]}}"
              + "".join(f"{c:<27}" for c in cells))
    print("\nworst relative eval-loss deviation over the epochs and seeds")
    print(f"{'lr':>7}{'dropout':>8}{'clips/process':>14}  " + "".join(f"{way:>22}" for way in WAYS[1:]))
    summary = {}
    for setting in dict.fromkeys((r["lr"], r["dropout"], r["clips_per_process"]) for r in results):
        chosen = [r for r in results if (r["lr"], r["dropout"], r["clips_per_process"]) == setting]
        worst = {way: max(max(r["relative_deviation"][way]["eval_total"]) for r in chosen) for way in WAYS[1:]}
        lr, dropout, part = setting
        summary[f"lr {lr:g}, dropout {dropout}, {part} clips per process"] = worst
        print(f"{lr:>7g}{dropout:>8}{part:>14}  " + "".join(f"{worst[way]:>22.1e}" for way in WAYS[1:]))
    return summary


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clips-per-process", default="4,8", help="Each process's part of the global batch.")
    parser.add_argument("--seeds", default="1,2")
    parser.add_argument("--lr", default="0.02,1e-6", help="Learning rates (1e-6: the running statistics alone).")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--dropout", default="on", help="on: as shipped; off: every Dropout the identity; or both.")
    add_record_options(parser)
    args = parser.parse_args()
    parts = [int(v) for v in args.clips_per_process.split(",")]
    seeds = [int(v) for v in args.seeds.split(",")]
    lrs = [float(v) for v in args.lr.split(",")]
    dropouts = [v.strip() for v in args.dropout.split(",")]
    if not set(dropouts) <= {"on", "off"}:
        parser.error(f"--dropout takes on, off or on,off, got {args.dropout!r}")

    results = []
    with tempfile.TemporaryDirectory(prefix="condi-bn-drift-") as tmp:
        store = make_store(Path(tmp))
        no_dropout_cli = Path(tmp) / "no_dropout_cli.py"
        no_dropout_cli.write_text(NO_DROPOUT_CLI)
        for lr, dropout, part, seed in itertools.product(lrs, dropouts, parts, seeds):
            losses, seconds = {}, {}
            for i, way in enumerate(WAYS):
                copy = Path(tmp) / f"run-{i}"
                shutil.copytree(store, copy)
                losses[way], seconds[way] = distill_run(copy, way, dropout == "on", 2 * part, lr, args.epochs, seed,
                                                        no_dropout_cli)
                shutil.rmtree(copy)
            deviation = {way: {c: relative(losses[way][c], losses["one process"][c]) for c in COLUMNS}
                         for way in WAYS[1:]}
            results.append({"lr": lr, "dropout": dropout, "clips_per_process": part, "global_batch": 2 * part,
                            "seed": seed, "losses": losses, "relative_deviation": deviation,
                            "train_seconds": seconds})

    summary = print_table(results, args.epochs)
    seconds = {way: statistics.median(r["train_seconds"][way] for r in results) for way in WAYS}
    figures = {"worst relative eval-loss deviation": summary,
               f"training seconds, {args.epochs} epochs (median over runs)": seconds, "runs": results}
    record("batchnorm_drift", figures, args, loss=LOSS, student=f"{STUDENT} {WIDTH}", teacher=TEACHER, processes=2,
           backend="gloo", threads_per_process=1, train_clips_per_epoch=40)


if __name__ == "__main__":
    main()
