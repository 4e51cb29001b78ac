"""Stage ``score``: run a trained student over the eval split and keep what the samplers and the report need.

Per-clip students (condi-sr, bce-conf, st-ent, st-conf, trivial-mt, sc-sampler) score every clip of every eval
video, each video's clips as one timed batch (``pipeline.clip_inference``). ``scores/<run>/`` gets:

- ``logits.zarr`` (M, C) float32 student logits, rows aligned with ``clips.parquet``;
- ``clips.parquet``: clip_id, video_id, split, label, pred (student argmax), confidence (z~ = sigmoid of the
  confidence logit; NaN without a confidence head), entropy (student softmax entropy, nats), rank_score (what
  the run's sampler ranks by, higher = send to the teacher first: the confidence logit for condi-sr,
  bce-conf, trivial-mt and st-conf (the order of z~ and c, without the ties of a saturated sigmoid), minus
  the entropy for st-ent, the log of the largest softmax probability for sc-sampler);
- ``videos.parquet``: video_id, split, clips, seconds (student time for all the video's clips as one batch);
- ``meta.json``: run, student, width, loss, ranking, device, device_name, threads, teacher, and
  ``context_ranking``: for a clip-level run with a validation part, every ranking of
  :mod:`condi_pipe.methods.context_rankings` (the run's own first) judged on the validation videos carved from
  train (the student's own carve, scored here too), and the one chosen. The report shows the chosen ranking
  beside the run's own; nothing about it is chosen on the eval split;
- ``validation_clips.parquet`` and ``validation_logits.zarr``: the same columns and logits for those validation
  clips (split ``validation``; ``meta.json`` ``validation_scores`` counts them, None when nothing was kept), so
  the report can choose thresholds on them (the adaptive table) from stored outputs.

Video-level students (fewer-frames, uniform-k) predict once per video from its K equidistant clips:
``videos.parquet`` also has ``pred`` and ``k`` (clips the student saw), ``seconds`` is the student's time over
those K clips, ``probs.zarr`` (V, C) holds the video softmax, and ``clips.parquet`` is empty.

Resumable per group of videos (staged under ``staging/score-<run>/``), parallel through the Dask executor.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Callable

import numpy as np
import torch

from condi_pipe.compute.clip_inference import (
    MAX_BATCH,
    ModelRef,
    VideoGroup,
    assemble_groups,
    cached_model,
    group_videos,
    infer_group,
    stage_group_result,
)
from condi_pipe.compute.runtime_choice import RuntimeChoice, stage_runtime, typical_batch
from condi_pipe.compute.torch_runtime import (
    RUNTIME_OPTIONS,
    TIMING_REPEATS,
    RuntimeOptions,
    autocast,
    timed,
    to_runtime_layout,
)
from condi_pipe.compute.training import read_clips
from condi_pipe.methods.context_rankings import choose_on_validation
from condi_pipe.methods.metrics import sigmoid, softmax, softmax_entropy
from condi_pipe.methods.registry import get_method
from condi_pipe.methods.samplers import equidistant_indices
from condi_pipe.pipeline.executor import INFERENCE_WORKERS, ExecutorOptions
from condi_pipe.pipeline.fan_out import finish_staged, run_unstaged
from condi_pipe.pipeline.options import OptionTable, check_fields, nested_paths, option
from condi_pipe.pipeline.splits import training_splits
from condi_pipe.pipeline.stage import StageError, define_stage, stage_run
from condi_pipe.report.inputs import positions
from condi_pipe.storage import clip_outputs, staging
from condi_pipe.storage import training_artifacts as artifacts
from condi_pipe.storage.clip_array import open_clip_array
from condi_pipe.storage.manifests import VideoSet, eval_split, load_videos
from condi_pipe.storage.store import Store

SCORE = define_stage(
    "score",
    reads=("distill",),
    writes=("scores/{key}", "staging/score-{key}"),
    summary="score every eval clip (or video) with a trained student: predictions, confidence, ranking, timings",
)

@dataclass(frozen=True)
class ScoreRequest:
    run: str = option(help="The distill run to score (its --name).")
    runtime: RuntimeOptions = RuntimeOptions()
    clips_per_group: int = option(256, low=1, help="Clips per task (whole videos; each task stages its outputs).")

    def __post_init__(self) -> None:
        check_fields(self)

    def config(self) -> dict:
        return asdict(self)


#: Every option of ``condi-pipe score`` -> its field in :class:`ScoreRequest` (``run``: the CLI's --student).
#: A run config scores every distill run with ``[distill]``'s runtime and ``[score]`` clips_per_group.
SCORE_OPTIONS = OptionTable(ScoreRequest, {"run": "run", **nested_paths("runtime", RUNTIME_OPTIONS),
                                           "clips_per_group": "clips_per_group"})


def student_ref(store: Store, run: str) -> tuple[ModelRef, dict]:
    """The trained student of ``run`` as a ModelRef, and its meta.json."""
    folder = artifacts.student_folder(run)
    if not artifacts.is_complete(store, folder):
        raise StageError(f"{store.url}: no trained student '{run}'; run `condi-pipe distill` first "
                         f"(students: {', '.join(store.listdir(artifacts.STUDENTS_ROOT)) or 'none'})")
    meta = artifacts.read_meta(store, folder)
    ref = ModelRef(meta["student"], int(meta["num_classes"]), meta["width"],
                   store_weights=artifacts.weights_rel(folder), weights_sha256=artifacts.weights_sha256(store, folder))
    return ref, meta


def score_video_group(group: VideoGroup, store_url: str, ref: ModelRef, runtime: RuntimeOptions, workers: int,
                      stage: str, k: int) -> dict:
    """Video-level students: each video's K equidistant clips as one timed batch -> one video prediction."""
    store = Store(store_url)
    model = cached_model(ref, store, runtime, workers)
    device = runtime.torch_device()
    head = model.get_submodule(model.head_name)
    clips_array = open_clip_array(store)
    logits, seconds, used = [], [], []
    for first, n in zip(group.videos.first_clip, group.videos.clips):
        ids = int(first) + equidistant_indices(int(n), k)
        clips = read_clips(clips_array, ids)

        def forward(clips=clips):
            with torch.inference_mode(), autocast(runtime, device):
                batch = to_runtime_layout(model.preprocess(clips.to(device)), runtime)
                features = model(batch).features.float().mean(0, keepdim=True)
                return head(features)

        out, took = timed(forward, device, TIMING_REPEATS)
        logits.append(out.float().cpu().numpy())
        seconds.append(took)
        used.append(len(ids))
    arrays = {"video_logits": np.concatenate(logits).astype(np.float32), "seconds": np.asarray(seconds, np.float64),
              "k": np.asarray(used, np.int32)}
    if not np.isfinite(arrays["video_logits"]).all():
        raise FloatingPointError(f"{store.url}: {ref.name} produced NaN or Inf logits in group {group.key}")
    return stage_group_result(store, stage, group.key, arrays, device)


def score(
    store: Store,
    request: ScoreRequest,
    executor: ExecutorOptions = ExecutorOptions(workers=INFERENCE_WORKERS),
    *,
    force: bool = False,
    quiet: bool = False,
    log: Callable[[str], None] = print,
) -> dict:
    """Score the eval split with the student of ``request.run``; resumable per video group."""
    if store.is_in_process_only:
        executor = ExecutorOptions(workers=executor.workers, in_process=True)
    executor = executor.for_device(request.runtime.device)
    ref, student = student_ref(store, request.run)
    config = request.config()
    config["student_weights_sha256"] = ref.weights_sha256
    key = f"{SCORE.name}/{request.run}"
    stage_name = f"score-{request.run}"
    video_level = get_method(student["loss"]).video_level
    with stage_run(store, SCORE, config, force=force, record_key=key, log=log) as run:
        if run.skip:
            return run.previous.get("counts", {})
        split = eval_split(store)
        videos = load_videos(store, split)
        groups = group_videos(videos, request.clips_per_group)
        workers = max(executor.workers, 1)
        # Each video's clips (a video-level student: its K clips) are one batch: the batch the runtime is chosen at.
        batch = int(student["k"]) if video_level else typical_batch(videos.clips, MAX_BATCH)
        runtime, choice = stage_runtime(store, run, ref, request.runtime, batch, workers, force, log)
        if video_level:
            fn, common = score_video_group, (store.url, ref, runtime, workers, stage_name, int(student["k"]))
        else:
            fn, common = infer_group, (store.url, ref, runtime, workers, stage_name)
        run_unstaged(store, stage_name, groups, lambda g: g.key, fn, executor, desc=f"score {request.run}",
                     fault_point="score.group", quiet=quiet, common=common)
        outputs = assemble_groups(store, stage_name, groups)
        device = staging.staged_meta(store, stage_name, groups[0].key) if groups else {}
        validation_stage = f"{stage_name}-validation"
        context = kept = None
        if not video_level:
            validation = validation_videos(store, student)
            if validation is not None:
                val_groups = group_videos(validation, request.clips_per_group)
                # outputs only: one untimed pass per video
                run_unstaged(store, validation_stage, val_groups, lambda g: g.key, infer_group, executor,
                             desc=f"score {request.run} (validation)", fault_point="score.group", quiet=quiet,
                             common=(store.url, ref, runtime, workers, validation_stage, 1))
                kept = (validation, assemble_groups(store, validation_stage, val_groups))
                context = choose_context_ranking(store, student, *kept)
                log(f"score {request.run}: on {len(validation.video_id)} validation videos the ranking chosen is "
                    f"{context['chosen']!r} ({context['criterion']})")
        counts = _publish(store, request, student, split, videos, outputs, device, video_level, choice, context,
                          kept)
        finish_staged(run, store, [stage_name, validation_stage], counts)
    log(f"score {request.run}: {counts['videos']} videos, {counts['clips']} clips, accuracy {counts['accuracy']:.1%}, "
        f"{counts['ms_per_video']:.1f} ms/video on {device.get('device_name', '?')}")
    return counts


def validation_videos(store: Store, student: dict) -> VideoSet | None:
    """The validation part the student's distill run carved from train (None when it carved none)."""
    fraction = float(student.get("val_fraction") or 0.0)
    if fraction <= 0:
        return None
    splits = training_splits(store, fraction, int(student.get("val_seed", 0)), student.get("train_split", "train"))
    return splits.validation


def choose_context_ranking(store: Store, student: dict, validation: VideoSet, outputs: dict) -> dict:
    """Judge the run's own ranking and every context ranking on the validation videos (the teacher's cached
    softmax on their clips) and record which selects best."""
    logits = outputs["logits"].astype(np.float32)
    raw = outputs.get("confidence")
    method = get_method(student["loss"])
    teacher = clip_outputs.teacher_folder(student["teacher"])
    teacher_ids = clip_outputs.read_clips(store, teacher, ["clip_id"]).column("clip_id").to_numpy()
    rows = positions(teacher_ids, validation.clip_ids)
    if (rows < 0).any():
        raise StageError(f"{store.path(teacher)}: the teacher cache lacks validation clip "
                         f"{int(validation.clip_ids[np.argmax(rows < 0)])}")
    order = np.argsort(rows, kind="stable")  # array_rows wants sorted rows
    teacher_logits = np.empty((len(rows), logits.shape[1]), np.float32)
    teacher_logits[order] = clip_outputs.array_rows(store, teacher, "logits", rows[order])
    record = choose_on_validation(method.rank_scores(logits, raw), logits,
                                  softmax(teacher_logits.astype(np.float64)), validation.label, validation.offsets,
                                  confidence_ranked=method.ranking == "confidence")
    return {**record, "split": "validation", "val_fraction": student.get("val_fraction"),
            "val_seed": student.get("val_seed")}


def _publish(store: Store, request: ScoreRequest, student: dict, split: str, videos, outputs: dict, device: dict,
             video_level: bool, choice: RuntimeChoice, context: dict | None = None,
             validation: tuple[VideoSet, dict] | None = None) -> dict:
    seconds = outputs.get("seconds", np.zeros(0, np.float64))
    video_columns = {"video_id": videos.video_id, "split": [split] * len(videos.video_id), "clips": videos.clips,
                     "seconds": seconds}
    if video_level:
        logits = outputs.get("video_logits", np.zeros((0, student["num_classes"]), np.float32))
        probs = softmax(logits.astype(np.float64)).astype(np.float32)
        pred = probs.argmax(1).astype(np.int32) if len(probs) else np.zeros(0, np.int32)
        video_columns["pred"] = pred
        video_columns["k"] = outputs.get("k", np.zeros(0, np.int32))
        clips = {name: [] for name in clip_outputs.SCORE_CLIP_COLUMNS}  # a video-level student scores no clips
        arrays = {"probs": probs}
        accuracy = float((pred == videos.label).mean()) if len(pred) else 0.0
    else:
        logits = outputs.get("logits", np.zeros((0, student["num_classes"]), np.float32)).astype(np.float32)
        clips = clip_columns(student, videos, split, logits, outputs.get("confidence"))
        arrays = {"logits": logits}
        accuracy = float((clips["pred"] == clips["label"]).mean()) if len(logits) else 0.0
    meta = {
        "run": request.run, "student": student["student"], "width": student["width"], "loss": student["loss"],
        "ranking": student["ranking"], "teacher": student["teacher"], "k": student.get("k"),
        "teacher_weights_sha256": student.get("teacher_weights_sha256"),
        "device": device.get("device"), "device_name": device.get("device_name"), "threads": device.get("threads"),
        "bf16": choice.bf16, "layout": choice.layout, "runtime_choice": choice.to_json(), "split": split,
        "context_ranking": context,
        # None: nothing kept (a video-level student, or no validation part); absent: scored before they were kept
        "validation_scores": None if validation is None else {
            "split": "validation", "videos": len(validation[0].video_id), "clips": int(validation[0].clips.sum()),
            "val_fraction": student.get("val_fraction"), "val_seed": student.get("val_seed")},
        "timing": ("wall time of one forward pass over each video's K equidistant clips as one batch" if video_level
                   else "wall time of one forward pass over each video's clips as one batch"),
    }
    kept = None
    if validation is not None:
        part, part_outputs = validation
        part_logits = part_outputs["logits"].astype(np.float32)
        kept = ({"logits": part_logits},
                clip_columns(student, part, "validation", part_logits, part_outputs.get("confidence")))
    clip_outputs.write_score_run(store, request.run, arrays, clips, video_columns, meta, kept)
    n_videos = int(len(videos.video_id))
    return {"videos": n_videos, "clips": len(clips["clip_id"]), "accuracy": round(accuracy, 4),
            "ms_per_video": round(float(1000 * seconds.sum() / max(n_videos, 1)), 3)}


def clip_columns(student: dict, videos: VideoSet, split: str, logits: np.ndarray, raw: np.ndarray | None) -> dict:
    """The per-clip columns of ``clips.parquet`` (SCORE_CLIPS_SCHEMA) for ``videos``' clips, from the student's
    logits and raw confidence logits (None without a confidence head)."""
    confidence = sigmoid(raw) if raw is not None else np.full(len(logits), np.nan)
    clip_video = np.repeat(videos.video_id, videos.clips)
    return {
        "clip_id": videos.clip_ids, "video_id": clip_video, "split": [split] * len(clip_video),
        "label": np.repeat(videos.label, videos.clips).astype(np.int32),
        "pred": logits.argmax(1).astype(np.int32) if len(logits) else np.zeros(0, np.int32),
        "confidence": confidence, "entropy": np.asarray(softmax_entropy(logits.astype(np.float64))),
        "rank_score": get_method(student["loss"]).rank_scores(logits, raw),
    }
