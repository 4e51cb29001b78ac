"""``condi-pipe predict``: classify a new video collection the ConDi way, end to end, decode included.

Each video is read without being held: its clips come in windows (``video.clip_reader``). A method with a student
scores every clip (z~ and the student's softmax) window by window and keeps only the clips the teacher may read;
the teacher then classifies the top K - K_s clips and the student the K_s of lowest entropy, as the report's
Table 3 and 4 do (``methods.clip_selectors.division_clips`` / ``division_mean``). Where a video is long against K
and its key frames are close, the student reads every second frame only and the teacher's clips are decoded by
seeking (``clip_reader.plan_reads``). Dense classifies every clip, window by window; Equidistant reads the
video's timeline first and decodes its K clips.

The output folder is a store of its own: ``predictions.parquet``, ``step_seconds.parquet`` and
``failures.parquet`` (``storage.predictions``). Videos are fanned out as tasks (in this process or on Dask); each
stages its row, so a killed run redoes only the videos it had not finished and ends with the same
``predictions.parquet`` bytes. A video that cannot be read is a failure row and the run goes on.
"""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import os
import shutil
import tempfile
import time
from dataclasses import dataclass
from typing import Callable, Iterator, Sequence

import fsspec
import numpy as np
import torch

from condi_pipe.app.bundle import store_decode_options
from condi_pipe.app.model_choice import (
    UNRANKED_METHODS,
    choose_student_run,
    only_teacher,
    predict_methods,
    student_kind,
)
from condi_pipe.compute.clip_inference import ModelRef
from condi_pipe.compute.runtime_choice import MachineKey, RuntimeChoice, pinned_choice, resolve_runtime
from condi_pipe.compute.torch_runtime import (
    RuntimeOptions,
    autocast,
    configure_threads,
    timed,
    to_runtime_layout,
)
from condi_pipe.methods.clip_selectors import division_clips, division_mean
from condi_pipe.methods.registry import get_method, ranking_scores
from condi_pipe.methods.samplers import equidistant_indices
from condi_pipe.pipeline import faults
from condi_pipe.pipeline.executor import ExecutorOptions
from condi_pipe.pipeline.fan_out import finish_staged, run_unstaged
from condi_pipe.pipeline.options import check_fields, option
from condi_pipe.pipeline.stage import define_stage, stage_run
from condi_pipe.stages.score import student_ref
from condi_pipe.stages.teacher_cache import cached_teacher
from condi_pipe.storage import clip_outputs, staging
from condi_pipe.storage.model_bundle import read_bundle
from condi_pipe.storage.predictions import FAILURES, PREDICTIONS, STEP_SECONDS, STEPS, write_predictions
from condi_pipe.storage.run_state import set_stage
from condi_pipe.storage.store import Store
from condi_pipe.video.clip_reader import FULL, STUDENT_56, ClipReader, ReadPlanner, expand_frames, read_clips_at
from condi_pipe.video.decode import DecodeError, DecodeOptions

PREDICT = define_stage(
    "predict",
    reads=(),
    writes=(PREDICTIONS, STEP_SECONDS, FAILURES, "staging/predict"),
    summary="classify new videos with a teacher and a student, decode included",
)
STAGING = "predict"
VIDEO_EXTENSIONS = (".avi", ".mp4", ".mkv", ".mov", ".webm", ".m4v", ".mpg", ".mpeg", ".ts", ".flv", ".wmv")
TOP = 5  # classes per video in predictions.parquet


@dataclass(frozen=True)
class PredictRequest:
    method: str = option("condi-sr", choices=predict_methods, help=(
        "dense or equidistant (no student unless --ks), or the loss the student was trained with."))
    k: int = option(5, low=1, help="Clips classified in all (the teacher's K - K_s and the student's K_s).")
    ks: int = option(0, low=0, help="How many of the K clips the student classifies itself (ConDi-SR type b).")
    window: int = option(32, low=1, help="Clips decoded and scored at a time: memory stays bounded by it.")
    runtime: RuntimeOptions = RuntimeOptions()

    def __post_init__(self) -> None:
        check_fields(self)
        if self.ks > self.k:
            raise ValueError(f"ks must be at most k ({self.k}), got {self.ks}")

    @property
    def needs_student(self) -> bool:
        return self.method not in UNRANKED_METHODS or self.ks > 0


@dataclass(frozen=True)
class PredictModels:
    """The teacher and student ``predict`` runs, from a model bundle or a training store, and how videos are cut
    into clips for them."""

    teacher: ModelRef
    student: ModelRef | None
    classes: tuple[str, ...]
    ranking: str | None  # what the student ranks clips by: "confidence", "entropy" or "max-prob"
    decode: DecodeOptions = DecodeOptions()
    model_store: str | None = None  # the store holding weights inside it (None: the weights are files)
    recorded: tuple = ()  # (role, runtime choice JSON) made where the models were trained

    def config(self) -> dict:
        models = {"teacher": dataclasses.asdict(self.teacher),
                  "student": None if self.student is None else dataclasses.asdict(self.student)}
        for model in models.values():
            if model is not None:  # the digest names the weights; where the file lies does not matter
                model.pop("weights_path"), model.pop("store_weights")
        return {**models, "classes": list(self.classes), "ranking": self.ranking,
                "decode": dataclasses.asdict(self.decode)}


def models_from_bundle(folder: str, request: PredictRequest) -> PredictModels:
    bundle = read_bundle(folder)

    def ref(model) -> ModelRef:
        return ModelRef(model.name, model.num_classes, model.width, weights_path=bundle.weights_path(model),
                        weights_sha256=model.weights_sha256, sgs_stage=model.sgs_stage, sgs_kernel=model.sgs_kernel,
                        output_name=model.output_name)

    if request.needs_student and bundle.student is None:
        raise ValueError(f"{folder}: the bundle has no student, and {request.method}"
                         + (f" with --ks {request.ks}" if request.ks else "") + " needs one")
    if request.method not in UNRANKED_METHODS and request.method != bundle.method:
        raise ValueError(f"{folder}: the bundle's student was trained with {bundle.method}, not {request.method}")
    student = ref(bundle.student) if request.needs_student else None
    ranking = get_method(bundle.method).ranking if student is not None and bundle.method not in UNRANKED_METHODS \
        else ("entropy" if student is not None else None)
    recorded = tuple((role, model.runtime) for role, model in (("teacher", bundle.teacher), ("student", bundle.student))
                     if model is not None and model.runtime)
    return PredictModels(ref(bundle.teacher), student, tuple(bundle.classes), ranking,
                         DecodeOptions(**bundle.decode), None, recorded)


def models_from_store(store: Store, request: PredictRequest, *, teacher: str | None = None,
                      student_run: str | None = None, log: Callable[[str], None] = print) -> PredictModels:
    student, ranking = None, None
    if request.needs_student:
        if student_run is None:
            teacher = teacher or only_teacher(store)
            student_run = choose_student_run(store, teacher, request.method)
            log(f"predict: no --student given; using '{student_run}', the store's only "
                f"{student_kind(request.method)} from teacher '{teacher}'")
        student, meta = student_ref(store, student_run)
        teacher = teacher or meta["teacher"]
        if request.method not in UNRANKED_METHODS and meta["loss"] != request.method:
            raise ValueError(f"student run '{student_run}' was trained with {meta['loss']}, not {request.method}")
        method = get_method(meta["loss"])
        if method.video_level:
            raise ValueError(f"student run '{student_run}' ({meta['loss']}) predicts per video and ranks no clips")
        ranking = method.ranking
    elif teacher is None:
        teacher = only_teacher(store)
    cache = clip_outputs.read_meta(store, clip_outputs.teacher_folder(teacher))
    recorded = (("teacher", cache.get("runtime_choice")),) if cache.get("runtime_choice") else ()
    return PredictModels(cached_teacher(store, teacher), student, tuple(cache["classes"]), ranking,
                         store_decode_options(store), store.url, recorded)


# --- the videos -------------------------------------------------------------------------------------------------

def collect_videos(paths: Sequence[str] = (), *, list_file: str | None = None, root: str | None = None) -> list[str]:
    """The videos to predict, in order: ``paths`` as given, then a CSV list's ``path`` column (relative to the
    list's folder), then every video file under ``root`` (sorted). Local paths or fsspec URLs."""
    videos = list(paths)
    if list_file is not None:
        with fsspec.open(list_file, "r") as fh:
            rows = list(csv.DictReader(fh))
        if rows and "path" not in rows[0]:
            raise ValueError(f"{list_file}: a video list needs a 'path' column (has {', '.join(rows[0])})")
        base = os.path.dirname(list_file)
        videos += [row["path"] if "://" in row["path"] or os.path.isabs(row["path"]) else
                   os.path.join(base, row["path"]) for row in rows]
    if root is not None:
        fs, top = fsspec.core.url_to_fs(root)
        if not fs.isdir(top):
            raise ValueError(f"{root}: not a folder")
        found = sorted(p for p in fs.find(top) if p.lower().endswith(VIDEO_EXTENSIONS))
        videos += [p if fs.protocol in ("file", ("file", "local")) else fs.unstrip_protocol(p) for p in found]
    if not videos:
        raise ValueError("no videos to predict: give paths, --list FILE.csv or --root DIR")
    return videos


@contextlib.contextmanager
def local_file(path: str) -> Iterator[str]:
    """``path`` itself when local, else a temporary local copy (ffmpeg reads files, not fsspec URLs)."""
    if "://" not in path or path.startswith("file://"):
        yield path.removeprefix("file://")
        return
    suffix = os.path.splitext(path)[1]
    with tempfile.NamedTemporaryFile(suffix=suffix) as copy:
        try:
            with fsspec.open(path, "rb") as source:
                shutil.copyfileobj(source, copy)
        except (FileNotFoundError, OSError) as exc:
            raise DecodeError("missing-file", f"{path}: cannot read it ({exc})") from None
        copy.flush()
        yield copy.name


# --- the models, per process --------------------------------------------------------------------------------------

_LOADED: dict[tuple, torch.nn.Module] = {}


def _model(ref: ModelRef, runtime: RuntimeOptions, model_store: str | None) -> torch.nn.Module:
    key = (ref, runtime, model_store)
    if key not in _LOADED:
        device = runtime.torch_device()
        module = ref.build(Store(model_store) if model_store else None).to(device).eval()
        _LOADED[key] = to_runtime_layout(module, runtime)
    return _LOADED[key]


@dataclass(frozen=True)
class _Runner:
    """A model in its runtime: ``(logits, confidence or None, seconds)`` of a batch of uint8 clips."""

    module: torch.nn.Module
    runtime: RuntimeOptions

    def __call__(self, clips: np.ndarray) -> tuple[np.ndarray, np.ndarray | None, float]:
        device = self.runtime.torch_device()
        batch = torch.from_numpy(np.ascontiguousarray(clips)).to(device)

        def forward():
            with torch.inference_mode(), autocast(self.runtime, device):
                return self.module(to_runtime_layout(self.module.preprocess(batch), self.runtime))

        out, seconds = timed(forward, device)
        confidence = None if out.confidence is None else out.confidence.float().cpu().numpy().astype(np.float64)
        return out.logits.float().cpu().numpy(), confidence, seconds


def _softmax(logits: np.ndarray) -> np.ndarray:
    return torch.softmax(torch.from_numpy(logits), dim=1).numpy()


# --- one video ----------------------------------------------------------------------------------------------------

class _Clock:
    """Seconds per step of one video."""

    def __init__(self) -> None:
        self.seconds = dict.fromkeys(STEPS, 0.0)

    @contextlib.contextmanager
    def step(self, name: str):
        start = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[name] += time.perf_counter() - start

    def timed_windows(self, reader: ClipReader):
        """The reader's windows, the time spent waiting for each counted as decoding."""
        windows = iter(reader)
        while True:
            with self.step("decode"):
                window = next(windows, None)
            if window is None:
                return
            yield window


class _Kept:
    """The clips the teacher may read, kept while the student scores a video window by window: the best ``size``
    so far by (score desc, index asc), the order of ``top_k_indices``, so the final top K is among them."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.index = np.zeros(0, np.int64)
        self.score = np.zeros(0, np.float64)
        self.clips: np.ndarray | None = None

    def offer(self, first: int, scores: np.ndarray, clips: np.ndarray) -> None:
        if self.size == 0:
            return
        index = np.concatenate([self.index, first + np.arange(len(scores))])
        score = np.concatenate([self.score, scores])
        pool = clips if self.clips is None else np.concatenate([self.clips, clips])
        best = np.lexsort((index, -score))[: self.size]
        self.index, self.score, self.clips = index[best], score[best], pool[best]

    def take(self, indices: np.ndarray) -> np.ndarray:
        where = {int(i): n for n, i in enumerate(self.index)}
        return self.clips[[where[int(i)] for i in indices]]


def predict_video(path: str, models: PredictModels, request: PredictRequest, runtime: RuntimeOptions,
                  planner: ReadPlanner | None = None) -> tuple[dict, dict[str, float]]:
    """One video's prediction row (``storage.predictions.PREDICTIONS_SCHEMA`` minus the index and path) and its
    seconds per step. Raises DecodeError (one line naming the file) when the video cannot be read."""
    clock = _Clock()
    teacher = _Runner(_model(models.teacher, runtime, models.model_store), runtime)
    student = None if models.student is None else _Runner(_model(models.student, runtime, models.model_store),
                                                          runtime)
    options, k_t = models.decode, request.k - request.ks
    if request.method == "dense" and student is None:
        return _dense(path, teacher, models, request, clock)
    if request.method == "equidistant" and student is None:
        return _equidistant(path, teacher, models, request, clock)
    plan = (planner.plan(path, os.path.getsize(path)) if planner is not None else None)
    seek = plan is not None and plan.seek_teacher and request.method not in UNRANKED_METHODS
    spec = plan.student if seek and plan.student is not None and plan.student.size == options.crop else FULL
    reader = ClipReader(path, request.window, spec, options)
    logits, confidence, teacher_rows = [], [], []
    kept = _Kept(max(k_t, 0) if not seek and request.method not in UNRANKED_METHODS else 0)
    for window in clock.timed_windows(reader):
        clips = window.clips if spec.frame_stride == 1 else expand_frames(window.clips, spec.frame_stride)
        out, conf, seconds = student(clips)
        clock.seconds["student"] += seconds
        logits.append(out)
        confidence.append(conf)
        if request.method == "dense":  # dense with K_s: the teacher reads every clip anyway
            t_logits, _, seconds = teacher(clips)
            clock.seconds["teacher"] += seconds
            teacher_rows.append(_softmax(t_logits))
        elif kept.size:
            with clock.step("selection"):
                kept.offer(window.first, ranking_scores(models.ranking, out, conf), clips)
    timeline = reader.timeline
    if planner is not None:
        planner.observe(path, os.path.getsize(path), timeline)
    n = timeline.clips
    logits = np.concatenate(logits)
    confidence = None if confidence[0] is None else np.concatenate(confidence)
    student_probs = _softmax(logits)
    with clock.step("selection"):
        if request.method in UNRANKED_METHODS:  # the student classifies its K_s clips only
            _, student_clips = division_clips(np.zeros(n), student_probs, request.ks, request.ks)
            teacher_clips = (np.arange(n) if request.method == "dense" else
                             equidistant_indices(n, k_t) if k_t else np.zeros(0, np.int64))
        else:
            scores = ranking_scores(models.ranking, logits, confidence)
            teacher_clips, student_clips = division_clips(scores, student_probs, request.k, request.ks)
    teacher_probs = np.zeros((n, len(models.classes)), np.float32)
    if request.method == "dense":
        teacher_probs[:] = np.concatenate(teacher_rows)
    elif len(teacher_clips):
        chosen = np.sort(teacher_clips)
        if seek:
            with clock.step("decode"):
                clips = read_clips_at(path, chosen, timeline, options)
        elif request.method == "equidistant":  # equidistant with K_s read the video once for the student
            with clock.step("decode"):
                clips = read_clips_at(path, chosen, timeline, options)
        else:
            clips = kept.take(chosen)
        t_logits, _, seconds = teacher(clips)
        clock.seconds["teacher"] += seconds
        teacher_probs[chosen] = _softmax(t_logits)
    probs = division_mean(teacher_probs, student_probs, teacher_clips, student_clips)
    z_tilde = [] if confidence is None else (1 / (1 + np.exp(-confidence))).astype(np.float32).tolist()
    return _row(models, probs, n, teacher_clips, student_clips, timeline, z_tilde), clock.seconds


def _dense(path, teacher, models, request, clock):
    reader = ClipReader(path, request.window, FULL, models.decode)
    rows = []
    for window in clock.timed_windows(reader):
        logits, _, seconds = teacher(window.clips)
        clock.seconds["teacher"] += seconds
        rows.append(_softmax(logits))
    n = reader.timeline.clips
    probs = division_mean(np.concatenate(rows), None, np.arange(n), np.zeros(0, np.int64))
    return _row(models, probs, n, np.arange(n), np.zeros(0, np.int64), reader.timeline, []), clock.seconds


def _equidistant(path, teacher, models, request, clock):
    """The timeline from a pass at the student's small size (the length decides the clips), then the K clips."""
    with clock.step("decode"):
        reader = ClipReader(path, request.window, STUDENT_56, models.decode)
        for _ in reader:
            pass
        timeline = reader.timeline
        chosen = equidistant_indices(timeline.clips, request.k)
        clips = read_clips_at(path, chosen, timeline, models.decode)
    logits, _, seconds = teacher(clips)
    clock.seconds["teacher"] += seconds
    teacher_probs = np.zeros((timeline.clips, len(models.classes)), np.float32)
    teacher_probs[chosen] = _softmax(logits)
    probs = division_mean(teacher_probs, None, chosen, np.zeros(0, np.int64))
    return _row(models, probs, timeline.clips, chosen, np.zeros(0, np.int64), timeline, []), clock.seconds


def _row(models: PredictModels, probs: np.ndarray, n: int, teacher_clips: np.ndarray, student_clips: np.ndarray,
         timeline, z_tilde: list) -> dict:
    top = np.argsort(-probs, kind="stable")[:TOP]
    starts, ends = timeline.clip_starts(), timeline.clip_ends()
    teacher_clips, student_clips = np.sort(teacher_clips), np.sort(student_clips)
    return {
        "clips": int(n), "top1": models.classes[int(top[0])],
        "top5": [models.classes[int(i)] for i in top], "top5_probability": [float(probs[i]) for i in top],
        "teacher_clips": teacher_clips.tolist(),
        "teacher_clip_start_s": starts[teacher_clips].tolist(), "teacher_clip_end_s": ends[teacher_clips].tolist(),
        "student_clips": student_clips.tolist(),
        "student_clip_start_s": starts[student_clips].tolist(), "student_clip_end_s": ends[student_clips].tolist(),
        "z_tilde": z_tilde,
    }


# --- the collection -----------------------------------------------------------------------------------------------

_PLANNERS: dict[tuple, ReadPlanner] = {}


def predict_task(item: tuple[int, str], out_url: str, models: PredictModels, request: PredictRequest,
                 runtime: RuntimeOptions, workers: int) -> str:
    """One video on a worker: its row (or failure) staged under its index."""
    index, path = item
    configure_threads(runtime, workers)
    planner = _PLANNERS.setdefault((request.method, request.k), ReadPlanner(student=models.student is not None,
                                                                           k=request.k - request.ks))
    try:
        with local_file(path) as local:
            if not os.path.isfile(local):
                raise DecodeError("missing-file", f"{path}: file not found")
            row, seconds = predict_video(local, models, request, runtime, planner)
        meta = {"row": row, "seconds": seconds}
    except DecodeError as error:
        meta = {"failure": {"kind": error.kind, "message": str(error)}}
    staging.stage_item(Store(out_url), STAGING, f"{index:09d}", None, meta)
    return path


def _calibration_clips(videos: Sequence[str], models: PredictModels, window: int) -> torch.Tensor:
    """Clips of the first readable video: what the runtime choice times models on (the output store has none)."""
    for path in videos[:20]:
        try:
            with local_file(path) as local:
                first = next(iter(ClipReader(local, min(window, 8), FULL, models.decode)))
                return torch.from_numpy(np.ascontiguousarray(first.clips))
        except (DecodeError, StopIteration):
            continue
    raise ValueError("none of the first 20 videos could be decoded: nothing to calibrate the runtime on")


def choose_runtimes(out: Store, run, models: PredictModels, request: PredictRequest, videos: Sequence[str],
                    workers: int, log: Callable[[str], None]) -> RuntimeOptions:
    """One runtime for every video of the run: the one an interrupted run recorded, else the one ``--layout`` and
    ``--bf16`` pin, else the one chosen where the models were trained when this is the same machine, else timed
    here on the teacher (it costs the most) with the first video's clips; recorded before any video runs."""
    runtime = request.runtime
    previous = run.previous.get("runtime_choice") if run.previous.get("state") == "running" else None
    device = runtime.torch_device()
    configure_threads(runtime, workers)
    recorded = dict(models.recorded).get("teacher")
    if previous is None and pinned_choice(device, runtime, request.window) is None and recorded:
        choice = RuntimeChoice.from_json(recorded)
        if choice.machine == MachineKey.current(device):
            previous = recorded
    calibration = None if previous else _calibration_clips(videos, models, request.window)
    resolved, choice = resolve_runtime(out, models.teacher, runtime, batch=request.window, workers=workers,
                                       pinned=previous, log=log, what="predict",
                                       calibration=calibration if calibration is not None else 0,
                                       model_store=Store(models.model_store) if models.model_store else None)
    set_stage(out, run.record_key, runtime_choice=choice.to_json())
    return resolved


def predict(out: Store, videos: Sequence[str], models: PredictModels, request: PredictRequest,
            executor: ExecutorOptions = ExecutorOptions(), *, force: bool = False, quiet: bool = False,
            log: Callable[[str], None] = print) -> dict:
    """Predict every video into ``out`` (resumable); returns the counts (videos, failures)."""
    config = {"models": models.config(), "method": request.method, "k": request.k, "ks": request.ks,
              "window": request.window, "device": request.runtime.device, "videos": list(videos)}
    with stage_run(out, PREDICT, config, force=force, log=log) as run:
        if run.skip:
            return run.previous.get("counts", {})
        runtime = choose_runtimes(out, run, models, request, videos, executor.workers, log)
        items = list(enumerate(videos))
        run_unstaged(out, STAGING, items, lambda item: f"{item[0]:09d}", predict_task, executor,
                     desc="predict", fault_point="predict.video", quiet=quiet,
                     common=(out.url, models, request, runtime, executor.workers))
        rows, seconds, failures = [], [], []
        for index, path in items:
            meta = staging.staged_meta(out, STAGING, f"{index:09d}")
            if "failure" in meta:
                failures.append({"path": path, "stage": PREDICT.name, "severity": "error", **meta["failure"]})
                continue
            rows.append({"video_index": index, "path": path, **meta["row"]})
            seconds.append({"video_index": index, "path": path,
                            **{f"{step}_s": meta["seconds"][step] for step in STEPS},
                            "total_s": sum(meta["seconds"].values())})
        counts = write_predictions(out, rows, seconds, failures)
        faults.checkpoint("predict.published")
        finish_staged(run, out, [STAGING], counts)
    log(f"predict: {counts['videos']} videos predicted, {counts['failures']} failed, in {out.url}")
    return counts
