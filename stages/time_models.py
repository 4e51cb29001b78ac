"""Stage ``time-models``: time the teacher and every student a table compares, interleaved in one process.

``teacher-cache`` and each ``score`` run time their model in their own process, at whatever load the machine had
then: two students of one architecture came out a third apart. Here every model (the teacher as its cache ran it,
and the student of every score run made for that teacher, each in the runtime its stage recorded: layout, dtype)
is loaded into one process and timed on the same real clips: one forward pass per batch size b = 1..B (B = the
longest eval video's clip count, at most ``MAX_BATCH``, beyond which videos run in chunks), input preprocessing
included as in ``teacher-cache`` and ``score``. After one untimed warm-up pass over every (batch size, model),
each repeat times, for each batch size, every model in turn, the order rotated between repeats, so slow spells
of the machine fall on every model alike. Stored per (model, batch): the median, minimum and IQR over the repeats
(``timings/<teacher>/``, :mod:`condi_pipe.storage.model_timings`); the report costs methods from these medians.

Those times exclude decoding, so the same process also times decoding, interleaved with the repeats: up to
``DECODE_SAMPLE_VIDEOS`` eval videos, spread over clip counts, are decoded from their source files into the clips
the pipeline uses (``video.decode.stream_clips`` with the options extract recorded), each once: one untimed
warm-up decode after the models' warm-up, then after each repeat's model timings the next share of the sample
(video i after repeat i mod repeats). Stored per video: wall seconds and clips decoded; when the source files
cannot be reached (moved, on another machine) or no longer decode as extract did, the reason instead.

Beside the times, every model's FLOPs per clip (:mod:`condi_pipe.models.flops`, counted once on one stored clip
after the timing), so the report costs methods in GFLOPs per video too. A folder timed before FLOPs were counted
gets them from a re-run that is otherwise a no-op (counting needs no timing).
"""

from __future__ import annotations

import os
import time
from dataclasses import asdict, dataclass, fields
from typing import Callable

import numpy as np
import torch

from condi_pipe.compute.clip_inference import MAX_BATCH, ModelRef
from condi_pipe.compute.runtime_choice import RuntimeChoice
from condi_pipe.compute.torch_runtime import (
    RuntimeOptions,
    autocast,
    bf16_mode,
    configure_threads,
    device_name,
    timed,
    to_runtime_layout,
)
from condi_pipe.methods.registry import method_names
from condi_pipe.methods.video_time import robust_summary
from condi_pipe.models.flops import clip_flops
from condi_pipe.pipeline.options import OptionTable, check_fields, field_like, option
from condi_pipe.pipeline.stage import StageError, define_stage, stage_run
from condi_pipe.stages.score import student_ref
from condi_pipe.stages.teacher_cache import cached_teacher
from condi_pipe.storage import clip_outputs, model_timings
from condi_pipe.storage.clip_array import open_clip_array
from condi_pipe.storage.damaged_reads import read_rows
from condi_pipe.storage.manifests import eval_split, load_videos, video_paths
from condi_pipe.storage.run_state import stage_record
from condi_pipe.storage.store import Store
from condi_pipe.video.decode import DECODER_THREADS, DecodeError, DecodeOptions, stream_clips

TIME_MODELS = define_stage(
    "time-models",
    reads=("teacher-cache",),
    writes=("timings/{key}",),
    summary="time the teacher and every score run's student side by side in one process, per batch size",
    uses=("score",),  # every score run made for the teacher
)

#: Interleaved repeats per (model, batch size). With a ~10 ms/clip teacher and four students at a fraction of
#: that, batch sizes 1..12 take about 1 s per repeat on 2 cores: 7 repeats and a warm-up stay well under a minute.
DEFAULT_REPEATS = 7

#: Eval videos whose decoding is timed, each once. A UCF-101 video (320x240, ~7 s) decodes through extract's
#: filter chain in ~0.1 s on one decoder thread, so the sample adds a few seconds to the stage.
DECODE_SAMPLE_VIDEOS = 24
DECODE_SAMPLE_SEED = 0


@dataclass(frozen=True)
class TimeModelsRequest:
    teacher: str = option(help="The teacher cache whose teacher and score runs are timed.")
    runs: tuple[str, ...] | None = option(None, help=(
        "Score runs to time, comma-separated (default: every one made for the teacher; the report needs all of "
        "them)."))
    repeats: int = option(DEFAULT_REPEATS, low=1, help="Interleaved repeats per model and batch size.")
    device: str = field_like(RuntimeOptions, "device")
    # one process, as teacher-cache and score with one worker
    threads: int | None = option(None, low=1, help="Torch threads (default: every core).")
    bf16: bool = option(False, validate=bf16_mode, help=(
        "Time every model under bfloat16 autocast (off: each as its own stage ran it)."))

    def __post_init__(self) -> None:
        check_fields(self)


#: Every option of ``condi-pipe time-models`` -> its field in :class:`TimeModelsRequest` (the CLI's --runs is a
#: comma-separated list). A run config times every score run of ``[teacher]`` on its device, ``[time_models]`` repeats.
TIME_MODELS_OPTIONS = OptionTable(TimeModelsRequest, {name: name for name in ("teacher", "runs", "repeats", "device",
                                                                      "threads", "bf16")})


@dataclass(frozen=True)
class TimedModel:
    key: str  # ``teacher/<name>`` or ``scores/<run>``: the table's ``model`` column
    ref: ModelRef
    runtime: RuntimeOptions
    video_level: bool  # fewer-frames / uniform-k: score runs their features' mean through the head

    def describe(self) -> dict:
        return {"model": self.key, "architecture": self.ref.name, "width": self.ref.width,
                "weights_sha256": self.ref.weights_sha256, "bf16": self.runtime.bf16,
                "channels_last": self.runtime.channels_last, "video_level": self.video_level,
                "sgs_stage": self.ref.sgs_stage}


def _runtime(record: dict, request: TimeModelsRequest) -> RuntimeOptions:
    """The layout and dtype the stage of ``record`` ran its model in: its timed runtime choice when it made one
    (``pipeline.runtime_choice``), else its configured runtime; ``request.bf16`` forces bf16."""

    recorded = RuntimeOptions(**record.get("config", {}).get("runtime", {}))
    if record.get("runtime_choice"):
        recorded = RuntimeChoice.from_json(record["runtime_choice"]).runtime(recorded)
    return RuntimeOptions(device=request.device, threads=request.threads,
                          bf16=request.bf16 is True or recorded.bf16 is True, channels_last=recorded.channels_last)


def score_runs_for(store: Store, teacher: str) -> list[str]:
    """Finished score runs made from ``teacher``'s cache, sorted by name."""
    complete, _ = clip_outputs.output_folders(store, clip_outputs.SCORES_ROOT)
    return [run for run in complete
            if clip_outputs.read_meta(store, clip_outputs.scores_folder(run)).get("teacher") == teacher]


def models_to_time(store: Store, request: TimeModelsRequest) -> list[TimedModel]:
    """The teacher exactly as its cache ran it, then the student of each score run exactly as it was scored."""


    teacher = cached_teacher(store, request.teacher)  # refuses an unfinished cache
    record = stage_record(store, f"teacher-cache/{request.teacher}")
    models = [TimedModel(model_timings.teacher_key(request.teacher), teacher, _runtime(record, request), False)]
    available = score_runs_for(store, request.teacher)
    runs = sorted(request.runs) if request.runs is not None else available
    for run in runs:
        if run not in available:
            raise StageError(f"{store.path(clip_outputs.scores_folder(run))}: no finished score run '{run}' made from "
                             f"teacher '{request.teacher}' (score runs: {', '.join(available) or 'none'})")
        scored = stage_record(store, f"score/{run}")
        ref, meta = student_ref(store, run)
        if scored.get("config", {}).get("student_weights_sha256") not in (None, ref.weights_sha256):
            raise StageError(f"{store.path(clip_outputs.scores_folder(run))}: scored with other weights than "
                             f"students/{run}/weights.pt holds now; re-run `condi-pipe score --student {run} --force`")
        models.append(TimedModel(model_timings.run_key(run), ref, _runtime(scored, request),
                                 meta.get("loss") in method_names("video")))
    return models


def _timing_clips(store: Store) -> tuple[np.ndarray, dict]:
    """The first B clips of the longest eval video (B = its clip count, at most MAX_BATCH): real clips, and as
    many as the largest batch any eval video is served in."""
    split = eval_split(store)
    videos = load_videos(store, split)
    if not len(videos.clips):
        raise StageError(f"{store.url}: no videos in split '{split}' to time the models on")
    longest = int(np.argmax(videos.clips))
    batches = int(min(videos.clips[longest], MAX_BATCH))
    first = int(videos.first_clip[longest])
    clips = np.ascontiguousarray(read_rows(open_clip_array(store), first, first + batches))
    return clips, {"split": split, "video_id": int(videos.video_id[longest]), "first_clip": first,
                   "largest_video_clips": int(videos.clips.max())}


def spread_sample(clips: np.ndarray, count: int, seed: int) -> np.ndarray:
    """Sorted indices of up to ``count`` videos spread over clip counts: the videos ordered by clip count (ties in
    a seeded random order) and cut into ``count`` equal strata, one seeded random pick from each.

    >>> spread_sample(np.array([5, 1, 9, 3]), 8, 0).tolist()
    [0, 1, 2, 3]
    """
    clips = np.asarray(clips)
    if len(clips) <= count:
        return np.arange(len(clips))
    rng = np.random.default_rng(seed)
    order = np.lexsort((rng.random(len(clips)), clips))
    edges = np.linspace(0, len(clips), count + 1).astype(np.int64)  # every stratum holds at least one video
    return np.sort([order[rng.integers(lo, hi)] for lo, hi in zip(edges[:-1], edges[1:])])


@dataclass(frozen=True)
class DecodeSample:
    """Sampled eval videos, their source files under the dataset root extract read, and its decode options."""

    root: str
    video_id: np.ndarray  # int64 (S,)
    path: tuple[str, ...]  # relative to ``root``
    clips: np.ndarray  # int64 (S,): clips the store holds of each
    options: DecodeOptions


def decode_sample(store: Store, split: str) -> tuple[DecodeSample | None, dict, str]:
    """(sample, how it was drawn, "") or (None, how, why the sources cannot be decoded here)."""
    config = stage_record(store, "extract").get("config") or {}
    recorded = config.get("decode") or {}
    options = DecodeOptions(**{f.name: recorded[f.name] for f in fields(DecodeOptions) if f.name in recorded})
    videos = load_videos(store, split)
    sampled = videos.subset(spread_sample(videos.clips, DECODE_SAMPLE_VIDEOS, DECODE_SAMPLE_SEED))
    root = config.get("root")
    how = {"split": split, "videos": len(sampled.video_id), "of_videos": len(videos.video_id),
           "sample": f"spread over clip counts, seed {DECODE_SAMPLE_SEED}", "root": root, "options": asdict(options),
           "decoder_threads": DECODER_THREADS, "statistic": "wall seconds of video.decode.stream_clips per video, "
           "once: ffmpeg's start, reading the file, decoding, the filter chain, the clips copied out",
           "order": "one untimed warm-up decode after the models' warm-up; then after each repeat's model timings "
           "the next share of the sample (video i after repeat i mod repeats)"}
    if not root:
        return None, how, "the extract stage recorded no dataset root"
    if not os.path.isdir(root):
        return None, how, f"the dataset root extract read ({root}) is not reachable from here"
    paths = tuple(str(path) for path in video_paths(store, sampled))
    gone = [path for path in paths if not os.path.isfile(os.path.join(root, path))]
    if gone:
        return None, how, f"{len(gone)} of the {len(paths)} sampled source files are gone from {root} (e.g. {gone[0]})"
    return DecodeSample(root, sampled.video_id, paths, sampled.clips, options), how, ""


class DecodeTimer:
    """Times the decoding of a sample's videos in shares between the models' repeats (see the module)."""

    def __init__(self, sample: DecodeSample | None, how: dict, skipped: str, repeats: int):
        self.sample, self.how, self.skipped, self.repeats = sample, how, skipped, repeats
        count = len(sample.path) if sample is not None else 0
        self.seconds = np.full(count, np.nan)
        self.clips = np.zeros(count, np.int64)

    def _decode(self, video: int) -> tuple[int, float]:
        sample = self.sample
        kept: list[np.ndarray] = []  # the clips as a consumer holds them (stream_clips reuses its buffer)
        started = time.perf_counter()
        decoded = stream_clips(os.path.join(sample.root, sample.path[video]), sample.options,
                               lambda clip: kept.append(clip.copy()))
        return decoded.clips, time.perf_counter() - started

    def _run(self, videos) -> None:
        for video in videos:
            if self.skipped:  # one unreadable file ends the timing: a partial sample is not the sample drawn
                return
            try:
                self.clips[video], self.seconds[video] = self._decode(video)
            except (DecodeError, OSError) as exc:
                self.skipped = f"decoding a sampled source file failed here ({exc})"

    def warm_up(self) -> None:
        """Decode the shortest sampled video untimed: the first ffmpeg start loads its binary and libraries."""
        if self.sample is not None and not self.skipped and len(self.sample.path):
            self._run([int(np.argmin(self.sample.clips))])
            self.clips[:] = 0
            self.seconds[:] = np.nan

    def after_repeat(self, repeat: int) -> None:
        if self.sample is not None:
            self._run(range(repeat, len(self.sample.path), self.repeats))

    def result(self) -> model_timings.DecodeTimings:
        sample = self.sample
        if self.skipped or sample is None:
            return model_timings.DecodeTimings.not_timed(self.skipped, self.how)
        differs = np.flatnonzero(self.clips != sample.clips)
        if len(differs):  # the files changed since extract, or another ffmpeg cuts them differently
            first = int(differs[0])
            return model_timings.DecodeTimings.not_timed(
                f"{len(differs)} of the {len(sample.path)} sampled source files no longer decode as extract did "
                f"(e.g. {sample.path[first]}: {int(self.clips[first])} clips, the store holds "
                f"{int(sample.clips[first])})", self.how)
        return model_timings.DecodeTimings(sample.video_id, sample.path, self.clips.copy(), self.seconds.copy(), self.how)


def _forward(model, entry: TimedModel, device: torch.device) -> Callable[[torch.Tensor], object]:
    """One served forward pass, as ``teacher-cache`` / ``score`` time it: device transfer, preprocessing (a student
    may downsample inside it), layout, the model, and for video-level students the mean of features through the
    head."""
    head = model.get_submodule(model.head_name) if entry.video_level else None

    def forward(batch: torch.Tensor):
        with torch.inference_mode(), autocast(entry.runtime, device):
            out = model(to_runtime_layout(model.preprocess(batch.to(device)), entry.runtime))
            return head(out.features.float().mean(0, keepdim=True)) if head is not None else out.logits

    return forward


def measure(store: Store, models: list[TimedModel], clips: np.ndarray, repeats: int,
            decode: DecodeTimer | None = None) -> np.ndarray:
    """Seconds of one forward pass, (models, batch sizes 1..len(clips), repeats), interleaved as the module says;
    ``decode`` times its share of the decoding after each repeat."""
    device = models[0].runtime.torch_device()
    forwards = []
    for entry in models:
        model = to_runtime_layout(entry.ref.build(store).to(device).eval(), entry.runtime)
        forwards.append(_forward(model, entry, device))
    batches = [torch.from_numpy(clips[:size]) for size in range(1, len(clips) + 1)]
    for batch in batches:  # warm-up: oneDNN builds its kernels per shape on the first call
        for forward in forwards:
            forward(batch)
    if decode is not None:
        decode.warm_up()
    seconds = np.empty((len(models), len(batches), repeats))
    for repeat in range(repeats):
        order = [(repeat + i) % len(models) for i in range(len(models))]
        for b, batch in enumerate(batches):
            for m in order:
                seconds[m, b, repeat] = timed(lambda: forwards[m](batch), device).seconds
        if decode is not None:
            decode.after_repeat(repeat)
    return seconds


def count_flops(models: list[TimedModel], clips: np.ndarray) -> list[model_timings.ModelFlops]:
    """Every model's FLOPs on one of ``clips`` (stored uint8 (B, T, H, W, 3)), built on the "meta" device: the
    counts depend only on the architecture and the clip's shape."""
    _, frames, height, width, _ = clips.shape
    counted = []
    for entry in models:
        flops = clip_flops(entry.ref.build(device="meta"), (1, 3, frames, height, width))
        counted.append(model_timings.ModelFlops(entry.key, entry.ref.name, entry.ref.width, entry.ref.weights_sha256,
                                                flops.flops, flops.input_shape))
    return counted


def _config(request: TimeModelsRequest, models: list[TimedModel], batches: int) -> dict:
    return {"teacher": request.teacher, "models": [entry.describe() for entry in models], "repeats": request.repeats,
            "batches": batches, "max_batch": MAX_BATCH, "device": request.device, "threads": request.threads,
            "bf16": request.bf16}


def time_models(
    store: Store,
    request: TimeModelsRequest,
    *,
    force: bool = False,
    redo_if_changed: bool = False,
    quiet: bool = False,  # accepted like every stage's; there are no progress bars to hide
    log: Callable[[str], None] = print,
) -> dict:
    """Time ``request``'s models side by side and store the result; a finished run with the same configuration
    (same teacher and score runs, same weights, same options) is a no-op. ``redo_if_changed``: a changed
    configuration (a new score run, retrained weights) redoes it instead of refusing (``condi-pipe run``)."""
    models = models_to_time(store, request)
    clips, source = _timing_clips(store)
    config = _config(request, models, len(clips))
    key = f"{TIME_MODELS.name}/{request.teacher}"
    previous = stage_record(store, key)
    if redo_if_changed and previous.get("config") not in (None, config):
        force = True
    with stage_run(store, TIME_MODELS, config, force=force, record_key=key, log=log) as run:
        if run.skip:
            if model_timings.read_flops(store, request.teacher) is None:  # timed before FLOPs were counted
                flops = count_flops(models, clips)
                model_timings.write_flops(store, request.teacher, flops)
                log(f"time-models {request.teacher}: added FLOPs per clip to the earlier timings: "
                    + ", ".join(f"{f.model} {f.flops_per_clip / 1e9:.3g} GFLOPs/clip" for f in flops))
            return run.previous.get("counts", {})
        runtime = RuntimeOptions(device=request.device, threads=request.threads)
        threads = configure_threads(runtime, 1)
        decode = DecodeTimer(*decode_sample(store, source["split"]), request.repeats)
        started = time.perf_counter()
        seconds = measure(store, models, clips, request.repeats, decode)
        took = time.perf_counter() - started
        decoded = decode.result()
        flops = count_flops(models, clips)
        summary = robust_summary(seconds)
        rows = [{"model": entry.key, "batch": b + 1, "median_s": float(summary.median[m, b]),
                 "min_s": float(summary.minimum[m, b]), "iqr_s": float(summary.iqr[m, b]), "repeats": request.repeats}
                for m, entry in enumerate(models) for b in range(len(clips))]
        device = runtime.torch_device()
        meta = {"teacher": request.teacher, "device": str(device), "device_name": device_name(device),
                "threads": threads, "repeats": request.repeats, "batches": list(range(1, len(clips) + 1)),
                "max_batch": MAX_BATCH, "statistic": "median of the repeats (min_s: fastest; iqr_s: 75th - 25th "
                "percentile)", "order": "after one warm-up pass: per repeat, per batch size, every model in turn, "
                "the order rotated by one model per repeat", "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                "seconds": round(took, 3), "clips": source, "models": [entry.describe() for entry in models]}
        model_timings.write_timings(store, request.teacher, rows, meta, decoded, flops)
        largest = len(clips)
        per_clip = {entry.key: 1000 * float(summary.median[m, -1]) / largest for m, entry in enumerate(models)}
        decode_per_clip = decoded.seconds_per_clip
        counts = {"models": len(models), "batches": largest, "repeats": request.repeats, "seconds": round(took, 2),
                  "teacher_ms_per_clip": round(per_clip[models[0].key], 3),
                  "teacher_gflops_per_clip": round(flops[0].flops_per_clip / 1e9, 4),
                  "decode_ms_per_clip": round(1000 * decode_per_clip, 3) if decode_per_clip is not None else None}
        run.done(counts)
    students = ", ".join(f"{key.split('/', 1)[1]} {ms:.2f}" for key, ms in list(per_clip.items())[1:])
    log(f"time-models {request.teacher}: {len(models)} models x batch sizes 1..{largest} x {request.repeats} "
        f"interleaved repeats in {took:.1f} s on {meta['device_name']} ({threads} threads); ms/clip at batch "
        f"{largest}: teacher {per_clip[models[0].key]:.2f}" + (f", students: {students}" if students else "")
        + (f"; decoding {1000 * decode_per_clip:.2f} ms/clip over {len(decoded.path)} eval videos"
           if decode_per_clip is not None else f"; decoding not timed: {decoded.skipped}"))
    return counts
