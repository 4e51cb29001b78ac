"""Reading training batches with the clip loader: clips/s and MB/s against workers, threads and processes.

    .venv/bin/python bench/clip_reads.py [--clips 512] [--batch 32] [--batches 96] [--kinds thread,process]
                                         [--store STORE]

Builds a temporary sharded clip array (64 clips per shard, as ``extract`` writes it; each clip a still frame plus
small noise, which compresses far less than real clips: ~0.76 of the raw bytes against ~0.2 for the demo store's),
or reads the clip array of an existing local ``--store`` (e.g. a ``condi-pipe demo`` store; only read), then
reads ``--batches`` batches of ``--batch`` clips through ``pipeline.clip_loader.ClipLoader`` with 1 and 2 workers,
threads and processes, for

* consecutive ids (one run per batch, as teacher-cache and evaluation read) and random ids (a shuffled epoch),
* the store as a local path and as a ``file://`` fsspec URL (zarr's FsspecStore instead of its LocalStore).

The rate is the steady state: the second half of the batches (a process pool's workers start and import torch
and zarr during the first half). Processes hand their batches back through the loader's ring of shared-memory
slots. MB/s counts decompressed bytes. ``2/1`` is the ratio of 2 workers to 1 of the same kind, measured in the
same run; "cores busy" is this process's CPU-seconds per second with threads (above 1 with one loader thread:
zarr decompresses the chunks of one slice concurrently in its own thread pool). Then: clips per CPU-second of
one thread (clips/s per core), and the cores a GPU student needs: its training FLOPs per clip (3x the forward's,
measured) against a published GPU throughput at a stated utilisation. Other processes on the machine lower every
rate; the load average is printed before and after. The figures are recorded with the commit and the machine
(``bench/record.py``).
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time

import numpy as np
from record import add_record_options, record

from condi_pipe.compute.clip_loader import ClipLoader, ClipReader
from condi_pipe.storage.clip_array import CLIP_SHAPE, create_clip_array, open_clip_array, write_clip_range
from condi_pipe.storage.store import Store

CLIP_BYTES = int(np.prod(CLIP_SHAPE))
A100_BF16_DENSE = 312e12  # FLOP/s, NVIDIA's A100 datasheet (dense tensor-core bfloat16)


def build_array(folder: str, n_clips: int, rng: np.random.Generator) -> None:
    array = create_clip_array(Store(folder), n_clips, 64)
    for start in range(0, n_clips, 64):
        n = min(64, n_clips - start)
        still = rng.integers(0, 256, size=(1, 1, *CLIP_SHAPE[1:]), dtype=np.uint8) // 4
        write_clip_range(array, start, still + rng.integers(0, 8, size=(n, *CLIP_SHAPE), dtype=np.uint8))


def batch_ids(order: str, n_clips: int, batch: int, batches: int, rng: np.random.Generator) -> list[np.ndarray]:
    if order == "consecutive":
        return [start + np.arange(batch) for start in rng.integers(0, n_clips - batch + 1, size=batches)]
    return [rng.choice(n_clips, size=batch, replace=False) for _ in range(batches)]


def steady_rate(url: str, specs: list[np.ndarray], workers: int, kind: str) -> tuple[float, float, float]:
    """(clips/s, clips per CPU-second of this process, CPU-seconds of this process per second) over the second
    half of the batches: a process pool's workers start (and import torch and zarr, ~2 s each) while the first
    batches are read, so the first half is the warm-up (the CPU figures count threads, not a pool's workers)."""
    loader = ClipLoader(ClipReader(url), workers, kind=kind)
    warm = len(specs) // 2
    began = cpu_began = None
    clips = 0
    for index, batch in enumerate(loader.map(specs)):
        if index == warm:
            began, cpu_began = time.perf_counter(), time.process_time()
        elif index > warm:
            clips += len(batch)
    seconds, cpu = time.perf_counter() - began, time.process_time() - cpu_began
    return clips / seconds, clips / cpu if cpu > 0 else float("nan"), cpu / seconds


def cores_for_a_gpu_student(clips_per_core: float, student: str, width: float, utilisation: float) -> dict:
    from condi_pipe.models import build_model
    from condi_pipe.models.registry import measure_flops

    forward = measure_flops(build_model(student, 101, width))
    clips_per_second = A100_BF16_DENSE * utilisation / (3 * forward)  # forward + backward ~ 3 forwards
    print(f"{student} {width}x: {forward / 1e9:.3f} GFLOP forward, {3 * forward / 1e9:.2f} GFLOP to train per clip; "
          f"an A100 (312 TFLOP/s bf16 dense) at {utilisation:.0%} trains {clips_per_second:,.0f} clips/s, which "
          f"needs {clips_per_second / clips_per_core:.0f} cores reading at {clips_per_core:.0f} clips/s per core")
    return {"student": f"{student} {width}x", "forward_gflop": forward / 1e9, "a100_utilisation": utilisation,
            "a100_clips_per_s": clips_per_second, "cores_needed": clips_per_second / clips_per_core}


def measure(folder: str, args, kinds: list[str], rng: np.random.Generator) -> tuple[list[float], dict]:
    """Print the table; return one thread's clips per CPU-second of every case, and the table's figures."""
    print(f"load average {os.getloadavg()[0]:.2f} on {os.cpu_count()} cores; {args.batches} batches of "
          f"{args.batch} clips ({args.batch * CLIP_BYTES / 1e6:.1f} MB decompressed each) of {args.clips}")
    header = (f"{'store':<8} {'ids':<12} {'kind':<8} {'1 worker':>19} {'2 workers':>19} {'2/1':>5} "
              f"{'cores busy (1, 2)':>18}")
    print(header + "\n" + "-" * len(header))
    per_core, figures = [], {}
    for store, url in (("path", folder), ("file://", f"file://{folder}")):
        for order in ("consecutive", "random"):
            specs = batch_ids(order, args.clips, args.batch, args.batches + 1, rng)
            for kind in kinds:
                (one, one_cpu, one_busy), (two, _, two_busy) = (steady_rate(url, specs, w, kind) for w in (1, 2))
                if kind == "thread":
                    per_core.append(one_cpu)
                cells = [f"{r:6.0f} clips/s {r * CLIP_BYTES / 1e6:4.0f} MB/s" for r in (one, two)]
                busy = f"{one_busy:.2f}, {two_busy:.2f}" if kind == "thread" else "-"
                print(f"{store:<8} {order:<12} {kind:<8} {cells[0]:>19} {cells[1]:>19} {two / one:5.2f} {busy:>18}")
                figures[f"{store} {order} {kind}"] = {"1 worker clips/s": one, "2 workers clips/s": two,
                                                      "2 / 1": two / one}
    return per_core, figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clips", type=int, default=512)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--batches", type=int, default=96)
    parser.add_argument("--kinds", default="thread,process", help="thread, process or both (comma-separated)")
    parser.add_argument("--store", help="an existing local store to read (default: a temporary array)")
    parser.add_argument("--utilisation", type=float, default=0.1, help="the GPU's share of its peak FLOP/s")
    add_record_options(parser)
    args = parser.parse_args()
    kinds = args.kinds.split(",")
    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory() as scratch:
        folder = os.path.abspath(args.store) if args.store else scratch
        if args.store:
            args.clips = int(open_clip_array(Store(folder)).shape[0])
        else:
            build_array(folder, args.clips, rng)
        per_core, figures = measure(folder, args, kinds, rng)
    print(f"load average {os.getloadavg()[0]:.2f}")
    if per_core:
        clips_per_core = float(np.median(per_core))
        print(f"one thread: {clips_per_core:.0f} clips per CPU-second (median over the store/ids cases)")
        figures["one thread clips per CPU-s"] = clips_per_core
        figures["GPU student"] = cores_for_a_gpu_student(clips_per_core, "shufflenetv2_3d", 0.25, args.utilisation)
    record("clip_reads", figures, args, clip_mb=CLIP_BYTES / 1e6)


if __name__ == "__main__":
    main()
