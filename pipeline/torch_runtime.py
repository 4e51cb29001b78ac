"""Where and how models run: device, threads, bf16 autocast, and honest timing of a forward pass."""

from __future__ import annotations

import contextlib
import io
import os
import platform
import time
from dataclasses import dataclass
from typing import NamedTuple

import torch


@dataclass(frozen=True)
class RuntimeOptions:
    device: str = "cpu"  # "cpu", "cuda", "cuda:1"
    threads: int | None = None  # intra-op threads per process; None: the cores divided among the workers
    bf16: bool = False  # bfloat16 autocast (fast on CPUs with AVX-512 bf16 and on recent GPUs)
    # NDHWC layout: oneDNN's 3D convolutions run ~1.4-2x faster in it on this CPU (bench/teacher_cache.py).
    channels_last: bool = True

    def torch_device(self) -> torch.device:
        device = torch.device(self.device)
        if device.type == "cuda" and not torch.cuda.is_available():
            raise ValueError(f"--device {self.device}: CUDA is not available on this machine")
        return device


#: The RuntimeOptions fields a user sets (CLI options, run-config keys); the layout is the pipeline's choice.
RUNTIME_OPTIONS = ("device", "threads", "bf16")


def configure_threads(options: RuntimeOptions, workers: int = 1) -> int:
    threads = options.threads or max(1, (os.cpu_count() or 1) // max(workers, 1))
    torch.set_num_threads(threads)
    return threads


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def autocast(options: RuntimeOptions, device: torch.device):
    if not options.bf16:
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=torch.bfloat16)


def to_runtime_layout(tensor_or_model, options: RuntimeOptions):
    """Put a model or a 5-D batch in the memory layout the runtime computes in."""
    if options.channels_last:
        if isinstance(tensor_or_model, torch.Tensor):
            return tensor_or_model.contiguous(memory_format=torch.channels_last_3d)
        return tensor_or_model.to(memory_format=torch.channels_last_3d)
    return tensor_or_model


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class Timed(NamedTuple):
    value: object
    seconds: float


def timed(fn, device: torch.device, repeats: int = 1) -> Timed:
    """Wall time of ``fn()``, waiting for queued GPU work before and after so the time is the model's.

    With ``repeats > 1`` the call is repeated and the fastest time kept (the value is the first call's):
    other processes can only add time, so the minimum is the model's own cost.
    """
    value, best = None, float("inf")
    for attempt in range(repeats):
        synchronize(device)
        start = time.perf_counter()
        result = fn()
        synchronize(device)
        best = min(best, time.perf_counter() - start)
        if attempt == 0:
            value = result
    return Timed(value, best)


#: Forward passes timed per video batch by teacher-cache, score and infer (the fastest is kept).
TIMING_REPEATS = 2


def load_state_bytes(data: bytes) -> dict:
    """A state dict from bytes, never executing pickled code."""
    return torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)


def seed_everything(seed: int) -> None:
    import random

    import numpy as np

    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
