"""teacher-cache throughput against a naive loop, and achieved GFLOP/s against a matmul peak, in one run.

    python bench/teacher_cache.py [--teacher resnet10_3d_small] [--videos 12] [--bf16]

Naive baseline: one clip at a time, fp32, eager, default memory layout. The stage: each video's clips as one
batch, channels-last layout (and bf16 autocast with --bf16), through one Dask worker (start-up excluded).
The matmul peak is a 2048x2048 fp32 (bf16 with --bf16) product on the same threads. Target: >= 1.5x clips/s.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from condi_pipe.models import build_model, measure_flops
from condi_pipe.pipeline.clip_inference import ModelRef
from condi_pipe.pipeline.executor import ExecutorOptions, dask_client
from condi_pipe.pipeline.torch_runtime import RuntimeOptions, configure_threads
from condi_pipe.stages.extract import ExtractRequest, extract
from condi_pipe.stages.teacher_cache import TeacherCacheRequest, teacher_cache
from condi_pipe.storage.clip_array import open_clip_array
from condi_pipe.storage.store import Store
from condi_pipe.video.synth import generate_benchmark


def naive_clips_per_second(name: str, clips: np.ndarray) -> float:
    model = build_model(name, num_classes=10).eval()
    with torch.inference_mode():
        model(model.preprocess(torch.from_numpy(clips[:1])))  # warm-up
        start = time.perf_counter()
        for clip in clips:
            model(model.preprocess(torch.from_numpy(clip[None])))
    return len(clips) / (time.perf_counter() - start)


def matmul_gflops(dtype: torch.dtype, size: int = 2048, repeats: int = 10) -> float:
    a, b = torch.randn(size, size, dtype=dtype), torch.randn(size, size, dtype=dtype)
    a @ b
    start = time.perf_counter()
    for _ in range(repeats):
        a @ b
    return 2 * size**3 * repeats / (time.perf_counter() - start) / 1e9


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--teacher", default="resnet10_3d_small")
    parser.add_argument("--videos", type=int, default=12)
    parser.add_argument("--bf16", action="store_true")
    args = parser.parse_args()
    threads = configure_threads(RuntimeOptions(), workers=1)
    with tempfile.TemporaryDirectory() as tmp:
        store = Store(f"{tmp}/store")
        generate_benchmark(Path(tmp) / "data", videos=args.videos, seed=0)
        extract(store, ExtractRequest("ucf101", f"{tmp}/data"), ExecutorOptions(workers=0), quiet=True, log=lambda m: None)
        clips = open_clip_array(store)[:]
        naive = naive_clips_per_second(args.teacher, clips)
        start = time.perf_counter()
        with dask_client(ExecutorOptions(workers=1)):
            pass
        startup = time.perf_counter() - start
        request = TeacherCacheRequest(ModelRef(args.teacher, 10), RuntimeOptions(bf16=args.bf16))
        start = time.perf_counter()
        teacher_cache(store, request, ExecutorOptions(workers=1), quiet=True, log=lambda m: None)
        stage = len(clips) / (time.perf_counter() - start - startup)
    flops = measure_flops(build_model(args.teacher, num_classes=10))
    peak = matmul_gflops(torch.bfloat16 if args.bf16 else torch.float32)
    achieved = flops * stage / 1e9
    print(f"{args.teacher}, {len(clips)} clips, {threads} threads, {flops / 1e9:.2f} GFLOP/clip, bf16={args.bf16}")
    print(f"  naive loop (1 clip, fp32, eager)   {naive:7.2f} clips/s")
    print(f"  teacher-cache stage                {stage:7.2f} clips/s   ratio {stage / naive:.2f}x (target >= 1.5)")
    print(f"  achieved {achieved:.1f} GFLOP/s; matmul peak {peak:.1f} GFLOP/s; {achieved / peak:.0%} of peak")


if __name__ == "__main__":
    main()
