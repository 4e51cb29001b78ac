"""Stage ``teacher-cache``: run the teacher once over every clip and keep everything later stages need.

Writes ``teacher/<name>/``: logits (float32), pooled features (float16), a per-clip table (prediction, max
probability, entropy, probability of the true class, the confidence label z = [top-1 == label] (Eq. 1), and the
teacher's FLOPs for the clip), and per-video timings measured with each video's clips as one batch.

A teacher with SGS (``models.sgs``; ``<name>`` is e.g. ``resnet10_3d_motion+sgs``) also stores each clip's B'
(``sgs_bins``), and its FLOPs per clip are measured as the part before SGS plus the part after SGS at that B'
(``meta.json`` ``flops`` holds both); timings are of the real thing, clips grouped by B' without padding.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Callable

import numpy as np
import pyarrow as pa

from condi_pipe.methods.metrics import softmax
from condi_pipe.models.checkpoints import check_checkpoint
from condi_pipe.models.sgs import flop_table
from condi_pipe.pipeline import faults
from condi_pipe.pipeline.clip_inference import (LATENCY_BATCHES, ModelRef, assemble_groups, group_videos, infer_group,
                                               latency_curve_task)
from condi_pipe.pipeline.executor import ExecutorOptions, run_tasks
from condi_pipe.pipeline.stage import define_stage, stage_run
from condi_pipe.pipeline.torch_runtime import RuntimeOptions
from condi_pipe.storage import clip_outputs, staging, tables
from condi_pipe.storage.manifests import class_names, load_videos
from condi_pipe.storage.store import Store

TEACHER_CACHE = define_stage(
    "teacher-cache",
    reads=("extract",),
    writes=("teacher/{key}", "staging/teacher-cache-{key}"),
    summary="run the teacher once over every clip; cache logits, features, predictions, z and timings",
)


@dataclass(frozen=True)
class TeacherCacheRequest:
    teacher: ModelRef
    runtime: RuntimeOptions = RuntimeOptions()
    clips_per_group: int = 256

    def config(self) -> dict:
        return asdict(self)


def clip_statistics(logits: np.ndarray, labels: np.ndarray) -> dict[str, np.ndarray]:
    """Per-clip prediction, max probability, entropy (nats), true-class probability and z (Eq. 1)."""
    probs = softmax(logits.astype(np.float64))
    pred = probs.argmax(axis=1)
    entropy = -(probs * np.log(np.clip(probs, 1e-30, None))).sum(axis=1)
    return {
        "pred": pred.astype(np.int32),
        "max_prob": probs.max(axis=1).astype(np.float32),
        "entropy": entropy.astype(np.float32),
        "true_prob": probs[np.arange(len(labels)), labels].astype(np.float32),
        "z": (pred == labels).astype(np.int8),
    }


def teacher_cache(
    store: Store,
    request: TeacherCacheRequest,
    executor: ExecutorOptions = ExecutorOptions(workers=1),
    *,
    force: bool = False,
    quiet: bool = False,
    log: Callable[[str], None] = print,
) -> dict:
    """Cache ``request.teacher``'s outputs for every clip of every split; resumable per video group."""
    executor = executor.for_device(request.runtime.device)
    name = request.teacher.teacher_name
    key = f"{TEACHER_CACHE.name}/{name}"
    stage_name = f"teacher-cache-{name}"
    check_checkpoint(request.teacher.weights_path)  # before --force deletes the cache it would replace
    with stage_run(store, TEACHER_CACHE, request.config(), force=force, record_key=key, log=log) as run:
        if run.skip:
            return run.previous.get("counts", {})
        videos = load_videos(store)
        groups = group_videos(videos, request.clips_per_group)
        done = staging.staged_keys(store, stage_name)
        todo = [g for g in groups if g.key not in done]
        metas = []
        for _, meta in run_tasks(infer_group, todo, executor, desc=f"teacher {name}", quiet=quiet,
                                 common=(store.url, request.teacher, request.runtime, max(executor.workers, 1),
                                         stage_name)):
            metas.append(meta)
            faults.checkpoint("teacher-cache.group")
        outputs = assemble_groups(store, stage_name, groups)
        device = staging.staged_meta(store, stage_name, groups[0].key) if groups else {}
        common = (store.url, request.teacher, request.runtime, max(executor.workers, 1))
        [(_, curve)] = list(run_tasks(latency_curve_task, [LATENCY_BATCHES], executor, desc="latency", quiet=True,
                                      common=common))
        counts = _publish(store, name, request, videos, outputs, {**device, "latency_curve": curve})
        run.done(counts)
        staging.clear_staging(store, stage_name)
    bins_note = f", mean B' {counts['mean_sgs_bins']:.2f}" if "mean_sgs_bins" in counts else ""
    log(f"teacher-cache {name}: {counts['clips']} clips, clip accuracy {counts['clip_accuracy']:.1%}, "
        f"{counts['ms_per_clip']:.1f} ms/clip, {counts.get('gflops_per_clip', 0):.3g} GFLOPs/clip{bins_note} on "
        f"{device.get('device_name', '?')}")
    return counts


def _publish(store: Store, name: str, request: TeacherCacheRequest, videos, outputs, device: dict) -> dict:
    split_of = dict(zip(*(store.read_table(tables.VIDEOS, columns=["video_id", "split"]).column(c).to_pylist()
                          for c in ("video_id", "split"))))
    clip_video = np.repeat(videos.video_id, videos.clips)
    labels = np.repeat(videos.label, videos.clips)
    stats = clip_statistics(outputs["logits"], labels)
    flops = flop_table(request.teacher.build(device="meta"))
    bins = outputs.get("sgs_bins")
    sgs_columns = {} if bins is None else {"sgs_bins": pa.array(bins.astype(np.int16))}
    clips = pa.table({
        "clip_id": pa.array(videos.clip_ids, pa.int64()),
        "video_id": pa.array(clip_video, pa.int64()),
        "split": pa.array([split_of[v] for v in clip_video], pa.string()),
        "label": pa.array(labels.astype(np.int32)),
        **{k: pa.array(v) for k, v in stats.items()},
        "flops": pa.array(flops.per_clip(len(labels), bins), pa.int64()),
        **sgs_columns,
    })
    seconds = outputs["seconds"]
    video_table = pa.table({
        "video_id": pa.array(videos.video_id, pa.int64()),
        "split": pa.array([split_of[v] for v in videos.video_id], pa.string()),
        "clips": pa.array(videos.clips.astype(np.int32)),
        "seconds": pa.array(seconds, pa.float64()),
    })
    sgs = request.teacher.sgs
    meta = {
        "model": name, "architecture": request.teacher.name, "width": request.teacher.width,
        "num_classes": request.teacher.num_classes,
        "weights": request.teacher.weights_path or request.teacher.store_weights,
        "weights_sha256": request.teacher.weights_sha256,
        "sgs": None if sgs is None else {"stage": sgs.stage, "kernel": sgs.kernel,
                                         "mean_bins": float(bins.mean()) if len(bins) else None},
        "flops": {**flops.to_json(), "per_clip": "clips.parquet 'flops': torch.utils.flop_counter FLOPs "
                  "(2 x multiply-accumulates of convolutions, linears and matmuls); with SGS: fixed + after_sgs[B']"},
        "bf16": request.runtime.bf16, "device": device.get("device"), "device_name": device.get("device_name"),
        "threads": device.get("threads"), "latency_curve": device.get("latency_curve"),
        "timing": "videos.parquet: wall time of one forward pass over each video's clips as one batch; "
                  "latency_curve: seconds of one forward pass per batch size (median of 3)",
        "classes": class_names(store),
    }
    clip_outputs.write_outputs(store, clip_outputs.teacher_folder(name),
                               {"logits": outputs["logits"], "features": outputs["features"]}, clips, video_table, meta)
    total_clips = int(videos.clips.sum())
    counts = {"videos": int(len(videos.video_id)), "clips": total_clips,
              "clip_accuracy": float(stats["z"].mean()) if total_clips else 0.0,
              "ms_per_clip": float(1000 * seconds.sum() / max(total_clips, 1)),
              "gflops_per_clip": round(float(clips.column("flops").to_numpy().mean()) / 1e9, 4) if total_clips else 0.0}
    if bins is not None:
        counts["mean_sgs_bins"] = round(float(bins.mean()), 4) if total_clips else 0.0
    return counts
