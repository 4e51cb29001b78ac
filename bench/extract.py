"""Extract throughput against ffmpeg's own decode-only rate, and 2 workers against 1, on the same files.

    python bench/extract.py [--videos 60] [--seed 0]

Prints frames/s for: ``ffmpeg -i F -f null -`` over every file (the decode-only baseline, sequential), the
whole extract stage with 1 Dask worker, and with 2 workers; then the ratios (targets: extract/ffmpeg >= 0.7
with one worker, 2 workers / 1 worker >= 1.6). Cluster start-up is timed separately and left out of the rates.
"""

from __future__ import annotations

import argparse
import subprocess
import tempfile
import time
from pathlib import Path

from condi_pipe.pipeline.executor import ExecutorOptions, dask_client
from condi_pipe.stages.extract import ExtractRequest, extract
from condi_pipe.storage.store import Store
from condi_pipe.video.ffmpeg_binary import ffmpeg_exe
from condi_pipe.video.synth import generate_benchmark


def ffmpeg_decode_only(files: list[Path]) -> float:
    start = time.perf_counter()
    for path in files:
        subprocess.run([ffmpeg_exe(), "-v", "error", "-nostdin", "-i", str(path), "-map", "0:v:0", "-f", "null", "-"],
                       check=True)
    return time.perf_counter() - start


def cluster_startup(workers: int) -> float:
    start = time.perf_counter()
    with dask_client(ExecutorOptions(workers=workers)):
        pass
    return time.perf_counter() - start


def extract_seconds(root: Path, workers: int, work: Path) -> float:
    start = time.perf_counter()
    extract(Store(str(work / f"store-{workers}")), ExtractRequest("ucf101", str(root)), ExecutorOptions(workers=workers),
            quiet=True, log=lambda m: None)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--videos", type=int, default=60)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        summary = generate_benchmark(work / "data", videos=args.videos, seed=args.seed, workers=2)
        files = sorted((work / "data").rglob("*.mp4"))
        frames = summary.frames
        baseline = ffmpeg_decode_only(files)
        startup = {w: cluster_startup(w) for w in (1, 2)}
        one = extract_seconds(work / "data", 1, work) - startup[1]
        two = extract_seconds(work / "data", 2, work) - startup[2]
    rate = {"ffmpeg decode-only": frames / baseline, "extract, 1 worker": frames / one, "extract, 2 workers": frames / two}
    print(f"{len(files)} videos, {frames} frames (128x170 H.264); cluster start-up {startup[1]:.1f}s / {startup[2]:.1f}s")
    for name, value in rate.items():
        print(f"  {name:<22} {value:8.0f} frames/s")
    print(f"extract (1 worker) / ffmpeg decode-only = {rate['extract, 1 worker'] / rate['ffmpeg decode-only']:.2f}  (target >= 0.7)")
    print(f"2 workers / 1 worker                   = {rate['extract, 2 workers'] / rate['extract, 1 worker']:.2f}  (target >= 1.6)")


if __name__ == "__main__":
    main()
