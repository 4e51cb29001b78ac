"""Run a model over whole videos, one video's clips as one batch, timing each video as it would be served.

Used by ``teacher-cache`` and ``score``: videos are split into groups of about ``clips_per_group`` clips,
each group is one Dask task that stages its outputs, and the stage assembles the groups in video order.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
import torch

from condi_pipe.compute.torch_runtime import (
    TIMING_REPEATS,
    RuntimeOptions,
    autocast,
    configure_threads,
    device_name,
    load_state_bytes,
    timed,
    to_runtime_layout,
)
from condi_pipe.models import build_model, load_state, load_weights
from condi_pipe.models.checkpoints import CheckpointError, file_sha256
from condi_pipe.models.sgs import FlopTable, SGSOptions, flop_table, sgs_teacher_name
from condi_pipe.pipeline import faults
from condi_pipe.storage import runtime_choices, staging
from condi_pipe.storage.clip_array import open_clip_array
from condi_pipe.storage.damaged_reads import read_rows
from condi_pipe.storage.manifests import VideoSet, read_clip_batch
from condi_pipe.storage.store import Store

MAX_BATCH = 64  # a longer video runs in chunks of this many clips; their times add up


@dataclass(frozen=True)
class ModelRef:
    """A picklable recipe for a model: its registry name, width, class count and weights.

    Weights come from a local checkpoint file (``weights_path``, any format ``load_weights`` accepts), or a
    state dict inside the store (``store_weights``, written by ``teacher-train`` or ``distill``), or neither
    (random init with a fixed seed: only for tests and timing). ``weights_sha256`` is the weights' digest: part of
    a stage's configuration (retrained weights are a changed configuration, not "already done"), and checked when
    the model is built. ``sgs_stage`` / ``sgs_kernel`` insert SGS into a 3D ResNet (``models.sgs``);
    ``output_name`` names its outputs (default: ``name``, plus ``+sgs`` with SGS).
    """

    name: str
    num_classes: int
    width: float | None = None
    weights_path: str | None = None
    store_weights: str | None = None
    reset_head: bool = False
    weights_sha256: str | None = None
    sgs_stage: str | None = None
    sgs_kernel: str | None = None
    output_name: str | None = None

    @property
    def sgs(self):

        return None if self.sgs_stage is None else SGSOptions(self.sgs_stage, self.sgs_kernel or "linear")

    @property
    def teacher_name(self) -> str:
        """The name of this model's outputs (``teacher/<teacher_name>/``)."""

        return sgs_teacher_name(self.name, self.sgs, self.output_name)

    def build(self, store: Store | None = None, device: str | None = None):
        """The model with its weights; ``device="meta"``: the architecture only (for counting FLOPs)."""

        extra = self.sgs.model_kwargs() if self.sgs is not None else {}
        if device == "meta":
            with torch.device("meta"):
                return build_model(self.name, num_classes=self.num_classes, width=self.width, **extra)
        if not (self.weights_path or self.store_weights):
            # Random init, seeded: every process (a Dask worker, a resumed run) builds the same weights.
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(0)
                return build_model(self.name, num_classes=self.num_classes, width=self.width, **extra)
        model = build_model(self.name, num_classes=self.num_classes, width=self.width, **extra)
        if self.weights_path:
            if self.weights_sha256 and file_sha256(self.weights_path) != self.weights_sha256:
                raise CheckpointError(f"{self.weights_path}: the file changed since this run was configured "
                                      "(sha256 differs); re-run with --force to use the new weights")
            load_weights(model, self.weights_path, reset_head=self.reset_head)
        elif self.store_weights:
            if store is None:
                raise ValueError(f"{self.store_weights}: weights inside a store need the store")
            data = store.read_bytes(self.store_weights)
            if self.weights_sha256 and hashlib.sha256(data).hexdigest() != self.weights_sha256:
                raise CheckpointError(f"{store.path(self.store_weights)}: the weights changed since this run was "
                                      "configured (sha256 differs); re-run with --force to use the new weights")
            state = load_state_bytes(data)
            if extra and not any(k.startswith("sgs.") for k in state):  # a plain network's weights: SGS fresh
                load_state(model, state, origin=store.path(self.store_weights))
            else:
                model.load_state_dict(state)
        return model


def model_flop_table(ref: ModelRef, input_shape: tuple[int, ...] = (1, 3, 16, 112, 112)):
    """``models.flop_table`` of ``ref``'s architecture (its weights do not matter), remembered in this machine's
    cache (``storage.runtime_choices``) under the architecture, input shape and torch version: counting imports
    ``torch._dynamo`` (torch's FlopCounterMode does on its first operation), 1.7 s of every process that counts,
    for numbers that depend only on the architecture."""

    identity = {"kind": "flop_table", "torch": torch.__version__, "input_shape": list(input_shape),
                "model": {"name": ref.name, "num_classes": ref.num_classes, "width": ref.width,
                          "sgs_stage": ref.sgs_stage, "sgs_kernel": ref.sgs_kernel}}
    recorded = runtime_choices.read_machine_record(identity)
    if recorded is not None:
        try:
            return FlopTable.from_json(recorded)
        except (KeyError, TypeError, ValueError, AttributeError):
            pass  # damaged: counted again
    table = flop_table(ref.build(device="meta"), input_shape)
    runtime_choices.record_machine_record(identity, table.to_json())  # not recorded (read-only cache): no matter
    return table


_MODELS: dict = {}  # per process: a worker builds each model once, not once per task


def cached_model(ref: ModelRef, store: Store, runtime: RuntimeOptions, workers: int):
    key = (ref, store.url, runtime, workers)
    if key not in _MODELS:
        _MODELS.clear()
        configure_threads(runtime, workers)
        device = runtime.torch_device()
        model = to_runtime_layout(ref.build(store).to(device).eval(), runtime)
        with torch.inference_mode(), autocast(runtime, device):  # warm-up: first-call allocations are not timed
            model(to_runtime_layout(torch.zeros(2, 3, 16, 112, 112, device=device), runtime))
        _MODELS[key] = model
    return _MODELS[key]


class VideoGroup(NamedTuple):
    key: str
    videos: VideoSet


def group_videos(videos: VideoSet, clips_per_group: int = 256) -> list[VideoGroup]:
    """Consecutive videos in groups of at least ``clips_per_group`` clips (the last may be smaller)."""
    groups, start, total = [], 0, 0
    for i, n in enumerate(videos.clips):
        total += int(n)
        if total >= clips_per_group or i == len(videos.clips) - 1:
            mask = np.zeros(len(videos.clips), bool)
            mask[start : i + 1] = True
            groups.append(VideoGroup(f"{len(groups):07d}", videos.subset(mask)))
            start, total = i + 1, 0
    return groups


def infer_group(group: VideoGroup, store_url: str, ref: ModelRef, runtime: RuntimeOptions, workers: int,
                stage: str, timing_repeats: int = TIMING_REPEATS) -> dict:
    """Run ``ref`` over each video of ``group`` and stage logits, features, confidence and per-video time
    (the fastest of ``timing_repeats`` passes; 1 when only the outputs matter)."""
    store = Store(store_url)
    model = cached_model(ref, store, runtime, workers)
    device = runtime.torch_device()
    clips_array = open_clip_array(store)
    logits, features, confidence, seconds, bins = [], [], [], [], []
    for first, n in zip(group.videos.first_clip, group.videos.clips):
        clips = torch.from_numpy(np.ascontiguousarray(read_rows(clips_array, int(first), int(first + n))))
        video_seconds = 0.0
        for lo in range(0, int(n), MAX_BATCH):
            batch = clips[lo : lo + MAX_BATCH]

            def forward(batch=batch):
                with torch.inference_mode(), autocast(runtime, device):
                    return model(to_runtime_layout(model.preprocess(batch.to(device)), runtime))

            out, took = timed(forward, device, timing_repeats)
            video_seconds += took
            logits.append(out.logits.float().cpu().numpy())
            features.append(out.features.float().cpu().numpy())
            if out.confidence is not None:
                confidence.append(out.confidence.float().cpu().numpy())
            if out.sgs_bins is not None:
                bins.append(out.sgs_bins.cpu().numpy())
        seconds.append(video_seconds)
    arrays = {"logits": np.concatenate(logits).astype(np.float32),
              "features": np.concatenate(features).astype(np.float16),
              "seconds": np.asarray(seconds, np.float64)}
    if confidence:
        arrays["confidence"] = np.concatenate(confidence).astype(np.float32)
    if bins:
        arrays["sgs_bins"] = np.concatenate(bins).astype(np.int16)
    bad = ~np.isfinite(arrays["logits"]).all(axis=1)
    if bad.any():
        clip_id = int(group.videos.clip_ids[np.argmax(bad)])
        raise FloatingPointError(f"{store.url}: {ref.name} produced NaN or Inf logits for clip {clip_id}")
    return stage_group_result(store, stage, group.key, arrays, device)


def stage_group_result(store: Store, stage: str, key: str, arrays: dict[str, np.ndarray], device) -> dict:
    """Stage one group's arrays with the device that computed them (the ``worker.task`` fault point just before:
    a worker killed there loses only this group)."""
    meta = {"device": str(device), "device_name": device_name(device), "threads": torch.get_num_threads(),
            "pid": os.getpid()}
    faults.checkpoint(faults.WORKER_TASK)
    staging.stage_item(store, stage, key, arrays, meta)
    return meta


def assemble_groups(store: Store, stage: str, groups: list[VideoGroup]) -> dict[str, np.ndarray]:
    """Concatenate the staged arrays of every group in order."""
    parts: dict[str, list[np.ndarray]] = {}
    for group in groups:
        for name, values in staging.staged_arrays(store, stage, group.key).items():
            parts.setdefault(name, []).append(values)
    return {name: np.concatenate(values) for name, values in parts.items()}


LATENCY_BATCHES = (1, 2, 3, 4, 5, 6, 7, 8, 10, 12, 16)


def latency_curve_task(batch_sizes: tuple[int, ...], store_url: str, ref: ModelRef, runtime: RuntimeOptions,
                       workers: int, repeats: int = 3) -> dict:
    """Seconds of one forward pass at each batch size, on stored clips, median of ``repeats``.

    The report costs a method's K teacher clips with this curve at batch K: a batch of K clips is not K times
    a clip's share of a big batch (on this CPU one clip alone takes ~3x its share of a batch of 8).
    """
    store = Store(store_url)
    model = cached_model(ref, store, runtime, workers)
    device = runtime.torch_device()
    array = open_clip_array(store)
    # The first clips, read once (repeated when the store has fewer than the largest batch); each batch is a prefix.
    clips = read_clip_batch(array, np.arange(max(batch_sizes, default=0)) % max(int(array.shape[0]), 1))
    seconds = []
    for size in batch_sizes:
        batch = torch.from_numpy(np.ascontiguousarray(clips[:size])).to(device)

        def forward(batch=batch):
            with torch.inference_mode(), autocast(runtime, device):
                return model(to_runtime_layout(model.preprocess(batch), runtime))

        seconds.append(float(np.median([timed(forward, device).seconds for _ in range(repeats)])))
    return {"batch": list(batch_sizes), "seconds": seconds}
