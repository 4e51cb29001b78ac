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

from condi_pipe.pipeline.options import check_fields, option

#: ``--bf16`` values: off (fp32), on (bfloat16 autocast), auto (bf16 where it is faster and agrees with fp32 on a
#: calibration batch; decided by ``pipeline.runtime_choice`` in teacher-cache, score and infer).
BF16_MODES = ("off", "on", "auto")


def bf16_mode(value) -> str:
    """``value`` (a bool or one of BF16_MODES, any case) as one of BF16_MODES; ValueError otherwise.

    >>> bf16_mode(True), bf16_mode("Auto"), bf16_mode(False)
    ('on', 'auto', 'off')
    """
    if isinstance(value, bool):
        return "on" if value else "off"
    text = str(value).strip().lower()
    aliases = {"true": "on", "false": "off", "yes": "on", "no": "off", "1": "on", "0": "off"}
    text = aliases.get(text, text)
    if text not in BF16_MODES:
        raise ValueError(f"bf16 must be one of {', '.join(BF16_MODES)} (or true/false), got {value!r}")
    return text


#: ``--layout`` values: auto (teacher-cache, score and infer time NCDHW against channels-last at start-up; the
#: training stages run channels-last), or one pinned. The two layouts' convolutions sum in different orders, so
#: their outputs differ in the last bits: pin one to get the same bytes on machines that would time differently.
LAYOUT_MODES = ("auto", "ncdhw", "channels_last_3d")


def layout_mode(value) -> str:
    """``value`` (one of LAYOUT_MODES or an alias, any case) as one of LAYOUT_MODES; ValueError otherwise.

    >>> layout_mode("channels-last"), layout_mode("NCDHW"), layout_mode("auto")
    ('channels_last_3d', 'ncdhw', 'auto')
    """
    text = str(value).strip().lower().replace("-", "_")
    text = {"channels_last": "channels_last_3d", "ndhwc": "channels_last_3d"}.get(text, text)
    if text not in LAYOUT_MODES:
        raise ValueError(f"layout must be one of auto, ncdhw, channels-last, got {value!r}")
    return text


@dataclass(frozen=True)
class RuntimeOptions:
    """How a model runs. ``bf16`` is True (bf16 autocast), False (fp32) or ``"auto"``; "on"/"off" become True/False,
    so stage records made before ``auto`` existed stay valid. teacher-cache, score and infer replace ``bf16="auto"``
    and the layout by a timed :class:`~condi_pipe.compute.runtime_choice.RuntimeChoice`; an unresolved ``"auto"``
    runs in fp32 (distill and teacher-train keep the options as given)."""

    device: str = option("cpu", help="cpu, cuda or cuda:N.")
    threads: int | None = option(None, low=1, help="Torch threads per process (default: the cores divided among the "
                                                   "workers).")
    # bfloat16 autocast is fast on CPUs with AVX-512 bf16 and on recent GPUs
    bf16: bool | str = option(False, validate=bf16_mode, help=(
        "bfloat16 autocast: on (--bf16 alone), off, or auto (teacher-cache, score, infer: bf16 when it is faster here "
        "and agrees with fp32 on a calibration batch)."))
    layout: str = option("auto", validate=layout_mode, help=(
        "Memory layout: auto (teacher-cache, score, infer: the faster here, timed once per machine; training: "
        "channels-last) or one pinned, for the same output bytes on machines that would time differently."))
    # The layout computed in: NDHWC unless ``layout`` pins NCDHW; the model stages set it from their timed choice.
    channels_last: bool = True

    def __post_init__(self) -> None:
        check_fields(self)
        mode = bf16_mode(self.bf16)
        object.__setattr__(self, "bf16", "auto" if mode == "auto" else mode == "on")
        layout = layout_mode(self.layout)
        object.__setattr__(self, "layout", layout)
        if layout != "auto":
            object.__setattr__(self, "channels_last", layout == "channels_last_3d")

    def torch_device(self) -> torch.device:
        device = torch.device(self.device)
        if device.type == "cuda" and not torch.cuda.is_available():
            raise ValueError(f"--device {self.device}: CUDA is not available on this machine")
        return device


#: The RuntimeOptions fields a user sets (CLI options, run-config keys); ``channels_last`` follows from the layout.
RUNTIME_OPTIONS = ("device", "threads", "bf16", "layout")


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
    if options.bf16 is not True:  # False, or an "auto" nobody resolved: fp32
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=torch.bfloat16)


def to_runtime_layout(tensor_or_model, options: RuntimeOptions):
    """Put a model or a 5-D batch in the memory layout the runtime computes in (a model: in place)."""
    return to_layout(tensor_or_model, options.channels_last)


def to_layout(tensor_or_model, channels_last: bool):
    """A 5-D batch or a model in NDHWC (``channels_last``) or NCDHW memory (a model: in place).

    NCDHW is made explicit: ``preprocess`` returns a permuted view of the stored NDHWC clips, which is channels-last
    in memory, and a convolution given one channels-last operand runs channels-last."""
    memory_format = torch.channels_last_3d if channels_last else torch.contiguous_format
    if isinstance(tensor_or_model, torch.Tensor):
        return tensor_or_model.contiguous(memory_format=memory_format)
    return tensor_or_model.to(memory_format=memory_format)


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


#: Forward passes per video batch in teacher-cache and score: only the pass that makes the outputs, timed. The
#: report's side-by-side costs come from time-models; a second pass per video only to time it again would double
#: the stages' compute (on Kinetics, the teacher over 7M clips twice).
TIMING_REPEATS = 1


def load_state_bytes(data: bytes) -> dict:
    """A state dict from bytes, never executing pickled code."""
    return torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)


def seed_everything(seed: int) -> None:
    import random

    import numpy as np

    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
