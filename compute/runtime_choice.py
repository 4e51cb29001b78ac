"""Choose, by timing on the machine at start-up, the memory layout and dtype a model stage runs a model in.

The fastest layout of a 3D CNN depends on the CPU, the batch and the model (channels-last NDHWC wins on some
CPUs at batch 8 and loses at batch 1), and bf16 pays only on CPUs with bf16 units: nothing here is hard-coded.
:func:`choose_runtime` runs every allowed candidate ({NCDHW, channels-last} x {fp32, bf16 if allowed}) over the
same clips, interleaved (a warm-up round, then ``repeats`` rounds, each candidate once per round in rotating
order, so a noisy neighbour slows all of them alike), keeps each one's median, and picks the fastest candidate
whose predictions are allowed: bf16 under ``--bf16 auto`` only when, on a calibration batch, its top-1 agrees with
fp32's and its probabilities stay within :class:`Bf16Tolerance` (both recorded). ``--bf16 on`` times only bf16
candidates, ``off`` only fp32. On CUDA the layout is not timed (channels-last 3D is a oneDNN matter): fp32 and
bf16 are, in NCDHW.

:func:`resolve_runtime` is what teacher-cache, score and infer call: it reuses a choice recorded for the same
model, batch, bf16 and layout modes and machine (device name, thread count, torch version), in the store or in
this machine's cache of choices (``storage.runtime_choices``: so every store made on one machine computes a model
in one runtime, and its outputs do not depend on which layout won a close race on a given day), and otherwise
times and records one. ``--layout`` pins the layout (with ``--bf16 on|off``, nothing is timed). Stages record the
choice in their run record before any output is written and pass it as ``pinned`` on resume, so a resumed stage
computes every group in the runtime its first groups were computed in, even if timings would now pick another.

>>> import torch
>>> from condi_pipe.models import build_model
>>> model = build_model("shufflenetv2_3d", num_classes=4, width=0.25).eval()
>>> clips = torch.randint(0, 255, (2, 8, 56, 56, 3), dtype=torch.uint8)
>>> choice = choose_runtime(model, clips, torch.device("cpu"), "off", batch=2, repeats=1)
>>> choice.dtype, sorted(choice.seconds)
('fp32', ['channels_last_3d/fp32', 'ncdhw/fp32'])
"""

from __future__ import annotations

import contextlib
import copy
import statistics
import time
from dataclasses import asdict, dataclass, field

import numpy as np
import torch

from condi_pipe.compute.torch_runtime import (
    RuntimeOptions,
    bf16_mode,
    configure_threads,
    device_name,
    layout_mode,
    synchronize,
    to_layout,
)
from condi_pipe.storage import runtime_choices
from condi_pipe.storage.clip_array import open_clip_array
from condi_pipe.storage.manifests import available_splits, load_videos, read_clip_batch
from condi_pipe.storage.run_state import set_stage

NCDHW, CHANNELS_LAST = "ncdhw", "channels_last_3d"
FP32, BF16 = "fp32", "bf16"
MIN_ROUNDS = 3  # timed rounds before a clear winner may end the timing early (see _separated)
CALIBRATION_CLIPS = 16  # clips whose fp32 and bf16 predictions are compared (their pass is also the warm-up)


@dataclass(frozen=True)
class Bf16Tolerance:
    """How closely bf16 must reproduce fp32 on the calibration batch to be used under ``--bf16 auto``."""

    min_top1_agreement: float = 0.97  # share of clips whose bf16 argmax is fp32's
    max_prob_difference: float = 0.05  # largest |p_bf16 - p_fp32| over every clip and class (softmax)


@dataclass(frozen=True)
class Bf16Agreement:
    clips: int
    top1_agreement: float
    max_prob_difference: float

    def within(self, tolerance: Bf16Tolerance) -> bool:
        return (self.top1_agreement >= tolerance.min_top1_agreement
                and self.max_prob_difference <= tolerance.max_prob_difference)


@dataclass(frozen=True)
class MachineKey:
    """What a timing is valid for: the same device model, thread count and torch build."""

    device_type: str
    device_name: str
    threads: int
    torch_version: str

    @classmethod
    def current(cls, device: torch.device) -> "MachineKey":
        return cls(device.type, device_name(device), torch.get_num_threads(), torch.__version__)


@dataclass(frozen=True)
class RuntimeChoice:
    """The layout and dtype chosen, and the evidence: median seconds of one forward pass of ``batch`` clips per
    candidate (``"<layout>/<dtype>"``), bf16's agreement with fp32 per bf16 candidate, the tolerance applied."""

    layout: str
    dtype: str
    batch: int
    bf16_mode: str
    seconds: dict[str, float]
    agreement: dict[str, Bf16Agreement]
    tolerance: Bf16Tolerance
    machine: MachineKey
    repeats: int
    reused: bool = field(default=False, compare=False)  # read from a record rather than timed in this process

    @property
    def channels_last(self) -> bool:
        return self.layout == CHANNELS_LAST

    @property
    def bf16(self) -> bool:
        return self.dtype == BF16

    def runtime(self, base: RuntimeOptions) -> RuntimeOptions:
        """``base`` with this choice's layout and dtype (device and threads unchanged)."""
        from dataclasses import replace

        return replace(base, channels_last=self.channels_last, bf16=self.bf16)

    def to_json(self) -> dict:
        data = asdict(self)
        data.pop("reused")
        return data

    @classmethod
    def from_json(cls, data: dict, reused: bool = True) -> "RuntimeChoice":
        return cls(data["layout"], data["dtype"], int(data["batch"]), data["bf16_mode"],
                   {k: float(v) for k, v in data["seconds"].items()},
                   {k: Bf16Agreement(**v) for k, v in data["agreement"].items()}, Bf16Tolerance(**data["tolerance"]),
                   MachineKey(**data["machine"]), int(data["repeats"]), reused)

    def describe(self) -> str:
        """One line: the choice and every candidate's time per clip."""
        if not self.seconds:
            return f"{self.layout}/{self.dtype} (pinned by --layout and --bf16: nothing to time)"
        times = ", ".join(f"{name} {1000 * s / self.batch:.1f}" for name, s in sorted(self.seconds.items()))
        refused = [name for name, agreement in self.agreement.items()
                   if self.bf16_mode == "auto" and not agreement.within(self.tolerance)]
        note = f"; bf16 refused (disagrees with fp32: {', '.join(refused)})" if refused else ""
        how = "recorded" if self.reused else "timed"
        return (f"{self.layout}/{self.dtype} ({how} at batch {self.batch} on {self.machine.device_name}, "
                f"{self.machine.threads} threads; ms/clip: {times}{note})")


def candidates(device: torch.device, mode: str, layout: str = "auto") -> list[tuple[str, str]]:
    """The (layout, dtype) pairs to time on ``device`` under bf16 ``mode`` (off, on, auto) and ``layout`` (auto or
    one pinned).

    >>> candidates(torch.device("cpu"), "auto", "ncdhw")
    [('ncdhw', 'fp32'), ('ncdhw', 'bf16')]
    """
    mode, layout = bf16_mode(mode), layout_mode(layout)
    dtypes = {"off": [FP32], "on": [BF16], "auto": [FP32, BF16]}[mode]
    if layout != "auto":
        layouts = [layout]
    else:
        layouts = [NCDHW] if device.type == "cuda" else [NCDHW, CHANNELS_LAST]
    return [(layout, dtype) for layout in layouts for dtype in dtypes]


def _name(layout: str, dtype: str) -> str:
    return f"{layout}/{dtype}"


def _probabilities(model, clips: torch.Tensor, device: torch.device, layout: str, dtype: str) -> torch.Tensor:
    with torch.inference_mode(), _autocast(device, dtype):
        out = model(to_layout(model.preprocess(clips.to(device)), layout == CHANNELS_LAST))
    return torch.softmax(out.logits.float(), dim=1).cpu()


def _autocast(device: torch.device, dtype: str):
    return torch.autocast(device.type, dtype=torch.bfloat16) if dtype == BF16 else contextlib.nullcontext()


def bf16_agreement(reference: torch.Tensor, probs: torch.Tensor) -> Bf16Agreement:
    """How ``probs`` (bf16) agree with ``reference`` (fp32), both (clips, classes) softmax outputs."""
    return Bf16Agreement(int(len(reference)),
                         float((reference.argmax(1) == probs.argmax(1)).float().mean()) if len(reference) else 1.0,
                         float((reference - probs).abs().max()) if reference.numel() else 0.0)


def choose_runtime(model: torch.nn.Module, clips: torch.Tensor, device: torch.device, mode, batch: int, *,
                   repeats: int = 5, tolerance: Bf16Tolerance = Bf16Tolerance(),
                   budget_seconds: float = 60.0, layout: str = "auto") -> RuntimeChoice:
    """Time every candidate of ``mode`` and ``layout`` on ``model`` (eval, any device; left unchanged) and choose.

    ``clips``: uint8 (N, T, H, W, 3) clips; all of them (up to CALIBRATION_CLIPS) form the calibration batch, the
    first ``batch`` (repeated when N < batch) the timed one. Rounds stop early after MIN_ROUNDS when one candidate's
    every pass beat every other's, and once ``budget_seconds`` have passed (at least one timed round always runs),
    so a big model at a big batch cannot stall start-up for long.
    """
    mode = bf16_mode(mode)
    pairs = candidates(device, mode, layout)
    if len(clips) == 0:
        raise ValueError("choose_runtime needs at least one clip to time on")
    calibration = clips[:CALIBRATION_CLIPS]
    timed_batch = clips[torch.arange(batch) % len(clips)].to(device)
    models = {}
    for form in dict.fromkeys(form for form, _ in pairs):
        models[form] = to_layout(copy.deepcopy(model).to(device).eval(), form == CHANNELS_LAST)
    agreement = {}
    if any(dtype == BF16 for _, dtype in pairs):  # fp32 alone has nothing to agree with
        reference_layout = pairs[0][0]
        reference = _probabilities(models[reference_layout], calibration, device, reference_layout, FP32)
        for layout, dtype in pairs:
            if dtype == BF16:
                probs = _probabilities(models[layout], calibration, device, layout, dtype)
                agreement[_name(layout, dtype)] = bf16_agreement(reference, probs)
    allowed = [pair for pair in pairs
               if pair[1] == FP32 or mode == "on" or agreement[_name(*pair)].within(tolerance)]
    samples: dict[str, list[float]] = {_name(*pair): [] for pair in pairs}
    start = time.perf_counter()
    for round_ in range(repeats + 1):  # round 0: warm-up at the timed batch size, not kept
        if round_ > 1 and time.perf_counter() - start > budget_seconds:
            break
        if round_ > MIN_ROUNDS and _separated({_name(*pair): samples[_name(*pair)] for pair in allowed}):
            break
        for i in range(len(pairs)):
            layout, dtype = pairs[(i + round_) % len(pairs)]
            took = _forward_seconds(models[layout], timed_batch, device, layout, dtype)
            if round_:
                samples[_name(layout, dtype)].append(took)
    seconds = {name: float(statistics.median(values)) for name, values in samples.items()}
    layout, dtype = min(allowed, key=lambda pair: seconds[_name(*pair)])
    return RuntimeChoice(layout, dtype, int(batch), mode, seconds, agreement, tolerance, MachineKey.current(device),
                         len(next(iter(samples.values()))))


def _separated(samples: dict[str, list[float]]) -> bool:
    """Whether one candidate's slowest pass so far beats every other candidate's fastest: more rounds cannot change
    the winner's rank among the medians unless the machine changes, so they are skipped."""
    slowest = {name: max(values) for name, values in samples.items()}
    fastest = {name: min(values) for name, values in samples.items()}
    return any(all(slowest[name] < fastest[other] for other in samples if other != name) for name in samples)


def _forward_seconds(model, clips: torch.Tensor, device: torch.device, layout: str, dtype: str) -> float:
    """One timed forward pass, preprocessing and layout conversion included (as the stages time a video)."""
    synchronize(device)
    start = time.perf_counter()
    with torch.inference_mode(), _autocast(device, dtype):
        model(to_layout(model.preprocess(clips), layout == CHANNELS_LAST))
    synchronize(device)
    return time.perf_counter() - start


def typical_batch(clips_per_video, cap: int) -> int:
    """The batch a stage runs most: the median of its videos' clip counts (each video's clips are one batch),
    capped at the largest batch it runs (``cap``)."""
    counts = np.asarray(clips_per_video)
    return int(min(max(int(np.median(counts)) if len(counts) else 1, 1), cap))


def calibration_clips(store, count: int = CALIBRATION_CLIPS) -> torch.Tensor:
    """Up to ``count`` clips of the store's train split, the calibration and timing batch: the choice sees no clip
    of the split results are reported on (a store without a train split: its first clips)."""

    videos = load_videos(store, "train" if "train" in available_splits(store) else None)
    ids = np.sort(videos.clip_ids)[:count]
    return torch.from_numpy(np.ascontiguousarray(read_clip_batch(open_clip_array(store), ids)))


def pinned_choice(device: torch.device, runtime: RuntimeOptions, batch: int) -> RuntimeChoice | None:
    """The choice when ``runtime`` leaves one candidate (a pinned layout and ``--bf16 on|off``), else None."""
    pairs = candidates(device, runtime.bf16, runtime.layout)
    if len(pairs) != 1:
        return None
    layout, dtype = pairs[0]
    return RuntimeChoice(layout, dtype, int(batch), bf16_mode(runtime.bf16), {}, {}, Bf16Tolerance(),
                         MachineKey.current(device), 0)


def choice_identity(ref, runtime: RuntimeOptions, batch: int, machine: MachineKey) -> dict:
    """What a recorded choice holds for: the architecture (not the weights' path: a choice made for one store's
    teacher holds for another's; the weights' digest only under ``--bf16 auto``, whose agreement check depends on
    them), the batch, the bf16 and layout modes, the machine."""
    mode = bf16_mode(runtime.bf16)
    model = {"name": ref.name, "num_classes": ref.num_classes, "width": ref.width,
             "sgs_stage": ref.sgs_stage, "sgs_kernel": ref.sgs_kernel}
    if mode == "auto":
        model["weights_sha256"] = ref.weights_sha256
    return {"model": model, "batch": int(batch), "bf16": mode, "layout": layout_mode(runtime.layout),
            "machine": asdict(machine)}


def resolve_runtime(store, ref, runtime: RuntimeOptions, *, batch: int, workers: int = 1,
                    pinned: dict | None = None, log=print, what: str = "",
                    calibration: int | torch.Tensor = CALIBRATION_CLIPS, repeats: int = 5,
                    model_store=None) -> tuple[RuntimeOptions, RuntimeChoice]:
    """The runtime to run ``ref`` (a ``clip_inference.ModelRef``) in for batches of about ``batch`` clips, with
    the choice behind it: ``pinned`` (a choice a stage recorded before its first output: kept on resume), else
    the one candidate ``--layout`` and ``--bf16`` leave, else the choice recorded for this identity
    (:func:`choice_identity`) in the store or in this machine's cache, else a new timing, recorded in both.

    Timed in this process with the threads each of ``workers`` local workers gets (``configure_threads``), on
    ``calibration`` clips of the store's train split (a count) or on the clips given (``predict``, whose output
    store holds none); ``model_store`` holds the model's weights when they are not in ``store``."""

    configure_threads(runtime, workers)
    device = runtime.torch_device()
    machine = MachineKey.current(device)
    label = what or ref.teacher_name
    if pinned is not None:
        choice = RuntimeChoice.from_json(pinned)
        if choice.machine != machine:
            log(f"{label}: keeping the runtime the interrupted run chose on {choice.machine.device_name} "
                f"({choice.layout}/{choice.dtype}), so every output comes from one runtime")
        return choice.runtime(runtime), choice
    choice = pinned_choice(device, runtime, batch)
    if choice is not None:
        return choice.runtime(runtime), choice
    identity = choice_identity(ref, runtime, batch, machine)
    in_store = runtime_choices.read_choice(store, identity)
    recorded = in_store if in_store is not None else runtime_choices.read_machine_record(identity)
    if recorded is not None:
        choice = RuntimeChoice.from_json(recorded)
    else:
        model = ref.build(model_store or store).eval()
        clips = calibration if isinstance(calibration, torch.Tensor) else calibration_clips(store, calibration)
        choice = choose_runtime(model, clips, device, runtime.bf16, batch,
                                repeats=repeats, layout=runtime.layout)
        first, problem = runtime_choices.record_machine_record(identity, choice.to_json())
        choice = RuntimeChoice.from_json(first, reused=first != choice.to_json())
        if problem:
            log(f"{label}: {problem}; other stores on this machine will time it again")
    if in_store is None:
        try:
            runtime_choices.write_choice(store, identity, choice.to_json())
        except OSError as exc:  # a read-only store (infer): the machine's cache still holds the choice
            log(f"{label}: could not record the runtime choice in {store.url} ({exc})")
    log(f"{label}: runtime {choice.describe()}")
    return choice.runtime(runtime), choice


def stage_runtime(store, run, ref, runtime: RuntimeOptions, batch: int, workers: int, force: bool,
                  log=print) -> tuple[RuntimeOptions, RuntimeChoice]:
    """The runtime a model stage (teacher-cache, score) runs ``ref`` in: the choice an interrupted run recorded
    (a resume keeps it), else a recorded or newly timed one (``pipeline.runtime_choice``), written to the stage's
    run record before any output, so every group of one stage run comes from one runtime."""

    previous = run.previous
    pinned = previous.get("runtime_choice") if not force and previous.get("state") == "running" else None
    resolved, choice = resolve_runtime(store, ref, runtime, batch=batch, workers=workers, pinned=pinned, log=log,
                                       what=run.record_key)
    set_stage(store, run.record_key, runtime_choice=choice.to_json())
    return resolved, choice
