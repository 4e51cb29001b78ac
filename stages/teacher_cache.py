"""Stage ``teacher-cache``: run the teacher once over every clip and keep everything later stages need.

Writes ``teacher/<name>/``: logits (float32), pooled features (float16), a per-clip table (prediction, max
probability, entropy, probability of the true class, the confidence label z = [top-1 == label] (Eq. 1), and the
teacher's FLOPs for the clip), and per-video timings measured with each video's clips as one batch.

A teacher with SGS (``models.sgs``; ``<name>`` is e.g. ``resnet10_3d_motion+sgs``) also stores each clip's B'
(``sgs_bins``), and its FLOPs per clip are measured as the part before SGS plus the part after SGS at that B'
(``meta.json`` ``flops`` holds both); timings are of the real thing, clips grouped by B' without padding.

**Confidence labels** (``z_labels``). ``"out-of-fold"`` (the default when the store's trained teacher has fold
teachers, ``teacher-train --oof-folds F``): every clip of a video the full teacher trained on gets the logits and
features (hence pred, z, true_prob and the KD targets) of the fold teacher that never saw that video; every other
clip (validation part, test split) the full teacher's. ``"in-sample"``: the full teacher's everywhere (the only
choice with given ``--weights``). ``clips.parquet`` ``teacher_source`` names each row's teacher (``full``,
``fold-<f>``). Per-video timings, the latency curve, FLOPs and B' always come from the full teacher: they cost the
methods at test time, where only it runs.

**From a file** (``from_logits``, :func:`import_teacher_logits`): a teacher of another framework handed over as
per-clip logits (``storage.logits_file``), cached under its own name through the same writer, so z, predictions and
KD targets follow from the logits alike; it has no features, timings or FLOPs (no model ran here).
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, replace
from typing import Callable

import numpy as np

from condi_pipe.compute.clip_inference import (
    LATENCY_BATCHES,
    MAX_BATCH,
    ModelRef,
    VideoGroup,
    assemble_groups,
    group_videos,
    infer_group,
    latency_curve_task,
    model_flop_table,
)
from condi_pipe.compute.runtime_choice import RuntimeChoice, stage_runtime, typical_batch
from condi_pipe.compute.torch_runtime import RUNTIME_OPTIONS, TIMING_REPEATS, RuntimeOptions
from condi_pipe.methods.metrics import softmax
from condi_pipe.models.checkpoints import check_checkpoint, file_sha256
from condi_pipe.models.pretrained import is_shipped, resolve_weights
from condi_pipe.models.registry import MODELS
from condi_pipe.models.sgs import SGSOptions, sgs_teacher_name
from condi_pipe.pipeline import faults
from condi_pipe.pipeline.executor import INFERENCE_WORKERS, ExecutorOptions, one_cluster, run_tasks
from condi_pipe.pipeline.fan_out import finish_staged, run_unstaged
from condi_pipe.pipeline.options import (
    RESET_HEAD_HELP,
    TEACHER_MODEL_HELP,
    OptionTable,
    check_fields,
    nested_paths,
    option,
)
from condi_pipe.pipeline.stage import StageError, define_stage, stage_run
from condi_pipe.stages.extract import EXTRACT
from condi_pipe.stages.teacher_train import FoldTeachers, fold_teachers
from condi_pipe.storage import clip_outputs, logits_file, staging, tables
from condi_pipe.storage import training_artifacts as artifacts
from condi_pipe.storage.errors import StoreError
from condi_pipe.storage.manifests import VideoSet, class_names, load_videos
from condi_pipe.storage.run_state import stage_record
from condi_pipe.storage.store import Store
from condi_pipe.video.synth.benchmark import read_synth_config
from condi_pipe.video.synth.pretraining_corpus import pretraining_corpus_overlap

TEACHER_CACHE = define_stage(
    "teacher-cache",
    reads=("extract",),
    writes=("teacher/{key}", "staging/teacher-cache-{key}"),
    summary="run the teacher once over every clip; cache logits, features, predictions, z and timings",
    uses=("teacher-train",),  # the store's trained teacher, unless given weights
)


OUT_OF_FOLD, IN_SAMPLE = "out-of-fold", "in-sample"
Z_LABELS = (OUT_OF_FOLD, IN_SAMPLE)
FULL_SOURCE = "full"  # clips.parquet teacher_source of the full teacher's rows; fold f's are "fold-<f>"


@dataclass(frozen=True)
class TeacherChoice:
    """The teacher to cache as a user names it (``condi-pipe teacher-cache``, a run config's ``[teacher]``): the
    stage resolves it (:meth:`resolve`), the one place teacher weights are looked up."""

    teacher: str = option(help=TEACHER_MODEL_HELP)
    width: float | None = option(None, low=0, low_open=True, help="Width multiplier, for models that have one.")
    weights: str | None = option(None, help=(
        "Local checkpoint (plain state dict or {'state_dict': ...}), or `pretrained` for the weights shipped with the "
        "package (resnet10_3d_motion: trained on a generated corpus no demo uses); default: the store's trained "
        "teacher from `condi-pipe teacher-train`."))
    random_init: bool = option(False, help="Random weights: for tests and timing only.")
    reset_head: bool = option(False, help=RESET_HEAD_HELP)
    sgs: SGSOptions | None = None
    name: str | None = option(None, help="The teacher's name in the store (default: --teacher, plus '+sgs' with "
                                         "--sgs).")

    def __post_init__(self) -> None:
        check_fields(self)

    @property
    def teacher_name(self) -> str:
        return sgs_teacher_name(self.teacher, self.sgs, self.name)

    def resolve(self, store: Store) -> ModelRef:
        """The model to run: the checkpoint ``weights`` (any format ``load_weights`` reads; "pretrained": the one
        shipped for the architecture), else the store's trained teacher (``trained_teachers/<name>/weights.pt``), else
        random weights if ``random_init``; otherwise a ValueError saying how to get weights. The weights' SHA-256
        goes into the reference, so a cache of other weights is not mistaken for this one."""
        if self.weights and self.random_init:
            raise ValueError("pass either --weights or --random-init, not both")
        weights = resolve_weights(self.teacher, self.weights)
        num_classes = len(class_names(store))
        sgs = self.sgs
        sgs_fields = {"sgs_stage": sgs.stage, "sgs_kernel": sgs.kernel} if sgs is not None else {}
        output = self.teacher_name
        named = {"output_name": output} if output != sgs_teacher_name(self.teacher, sgs) else {}
        if weights:
            if not os.path.isfile(weights):
                raise FileNotFoundError(f"{weights}: no such checkpoint file")
            return ModelRef(self.teacher, num_classes, self.width, weights_path=os.path.abspath(weights),
                            reset_head=self.reset_head, weights_sha256=file_sha256(weights), **sgs_fields, **named)
        folder = artifacts.trained_teacher_folder(output)
        if not self.random_init and artifacts.is_complete(store, folder):
            meta = artifacts.read_meta(store, folder)
            if self.width is not None and meta.get("width") is not None and float(self.width) != float(meta["width"]):
                raise ValueError(f"{output} was trained with width {meta['width']}, not {self.width}")
            if int(meta["num_classes"]) != num_classes:
                raise ValueError(f"{store.path(folder)}: trained for {meta['num_classes']} classes, the store has "
                                 f"{num_classes}; re-run teacher-train --force")
            trained_sgs = meta.get("sgs")
            if (trained_sgs or None) != (asdict(sgs) if sgs is not None else None):
                raise ValueError(f"{store.path(folder)}: trained with SGS {trained_sgs}, not {sgs}")
            return ModelRef(self.teacher, num_classes, meta.get("width"), store_weights=artifacts.weights_rel(folder),
                            weights_sha256=artifacts.weights_sha256(store, folder), **sgs_fields, **named)
        if self.random_init:
            return ModelRef(self.teacher, num_classes, self.width, **sgs_fields, **named)
        raise ValueError(f"no weights: pass --weights or run teacher-train first (no trained {output} in "
                         f"{store.path(folder)})")


@dataclass(frozen=True)
class TeacherCacheRequest:
    teacher: ModelRef | TeacherChoice  # a TeacherChoice is resolved by the stage, before anything is recorded
    runtime: RuntimeOptions = RuntimeOptions()
    clips_per_group: int = option(256, low=1, help="Clips per task (whole videos; each task stages its outputs).")
    z_labels: str | None = option(None, choices=Z_LABELS, help=(
        "Confidence labels of the clips the teacher trained on: from the fold teacher that never saw the video "
        "(needs teacher-train --oof-folds F), or the teacher's own (default: out-of-fold when the store's trained "
        "teacher has fold teachers, else in-sample)."))
    from_logits: str | None = option(None, help=(
        "Import the teacher's per-clip logits from this Parquet or CSV file (a teacher of another framework) "
        "instead of running one; --teacher then names the cache. Format: docs/teacher-from-logits.md."))

    def __post_init__(self) -> None:
        check_fields(self)

    def resolved(self, store: Store) -> "TeacherCacheRequest":
        """This request with its teacher a ModelRef."""
        if isinstance(self.teacher, TeacherChoice):
            return replace(self, teacher=self.teacher.resolve(store))
        return self

    def config(self, folds: FoldTeachers | None = None) -> dict:
        """The stage's configuration with the z labels as resolved (``folds``: the fold teachers used)."""
        if not isinstance(self.teacher, ModelRef):
            raise TypeError("the configuration of a teacher-cache request is its resolved one (see resolved())")
        cfg = asdict(self)
        # In-sample labels are what every cache made before the option holds: recorded as None (an absent key),
        # so their finished records stay valid. meta.json always names the labels.
        cfg["z_labels"] = None if folds is None else OUT_OF_FOLD
        if folds is not None:
            cfg["folds"] = {"count": folds.count, "sha256": folds.sha256,
                            "weights_sha256": [ref.weights_sha256 for ref in folds.refs]}
        return cfg


#: Every option of ``condi-pipe teacher-cache`` -> its field; the teacher's are a :class:`TeacherChoice`'s. A
#: run config's ``[teacher]`` holds them (``random_init`` aside, which is for tests and timing).
TEACHER_CACHE_OPTIONS = OptionTable(TeacherCacheRequest, {
    **nested_paths("teacher", ("teacher", "width", "weights", "random_init", "reset_head", "sgs", "name")),
    **nested_paths("runtime", RUNTIME_OPTIONS), "clips_per_group": "clips_per_group", "z_labels": "z_labels",
    "from_logits": "from_logits",
}, parts={"teacher": TeacherChoice})


def cached_teacher(store: Store, name: str) -> ModelRef:
    """The teacher exactly as ``teacher-cache`` ran it under ``name`` (its recorded configuration): what ``infer``
    and ``time-models`` load, rather than resolving its weights again."""
    record = stage_record(store, f"{TEACHER_CACHE.name}/{name}")
    if record.get("state") != "done":
        raise StageError(f"{store.url}: no finished teacher cache for '{name}'; run `condi-pipe teacher-cache`")
    if record["config"].get("from_logits"):
        raise StageError(f"{store.url}: teacher cache '{name}' was imported from {record['config']['from_logits']} "
                         "(teacher-cache --from-logits): there is no model to run or time; this needs a teacher "
                         "condi-pipe runs")
    return ModelRef(**record["config"]["teacher"])


def refuse_pretraining_clips(store: Store, teacher: ModelRef) -> None:
    """A one-line StageError when ``teacher`` is the shipped one and the store's videos are a generated benchmark
    sharing random streams with its training corpus: the teacher saw those clips, so its z would be in-sample while
    everything downstream calls it honest."""
    if not is_shipped(teacher.weights_path):
        return
    root = (stage_record(store, EXTRACT.name).get("config") or {}).get("root")
    generated = read_synth_config(root, finished_only=False) if root else None  # an unfinished one counts too
    if generated is None:
        return
    seed, videos = generated.seed, generated.videos
    overlap = pretraining_corpus_overlap(seed, videos)
    if overlap is not None:
        raise StageError(f"{store.url}: refusing the shipped teacher: the store's videos come from `condi-pipe synth "
                         f"--seed {seed} --videos {videos}` ({root}), which {overlap}, so the teacher's z would be "
                         "in-sample; generate the benchmark with another --seed and extract it into a new store")


def label_teachers(store: Store, request: TeacherCacheRequest, log: Callable[[str], None]) -> FoldTeachers | None:
    """The fold teachers that label the train clips out of fold, or None for in-sample labels; a one-line error
    when out-of-fold labels are asked for and there are no fold teachers."""
    teacher = request.teacher
    folds = None if request.z_labels == IN_SAMPLE else fold_teachers(store, teacher)
    if request.z_labels == OUT_OF_FOLD and folds is None:
        given = " (given --weights have none)" if teacher.weights_path else ""
        raise StageError(f"{store.url}: --z-labels {OUT_OF_FOLD} needs fold teachers of {teacher.teacher_name}"
                         f"{given}: run `condi-pipe teacher-train --oof-folds F` first")
    if teacher.weights_path and is_shipped(teacher.weights_path):
        log(f"teacher-cache {teacher.teacher_name}: the shipped pretrained teacher labels every clip; it was trained "
            "on a generated corpus of its own (see its model card), so its z is honest on any other store")
    elif teacher.weights_path:
        log(f"teacher-cache {teacher.teacher_name}: note: z labels are in-sample (given --weights, no fold "
            "teachers): on clips these weights were trained on, z overstates how often the teacher is right")
    return folds


def _infer_task(item: tuple[VideoGroup, ModelRef, int], store_url: str, runtime: RuntimeOptions, workers: int,
                stage: str) -> dict:
    """One group of videos through one teacher (full or fold), ``timing_repeats`` passes timed."""
    group, ref, timing_repeats = item
    return infer_group(group, store_url, ref, runtime, workers, stage, timing_repeats)


def _fold_groups(videos: VideoSet, folds: FoldTeachers, clips_per_group: int) -> list[tuple[int, VideoSet, list]]:
    """Per fold: its held-out videos (the fit videos of that fold present in the store) and their task groups."""
    known = np.isin(folds.video_id, videos.video_id)
    if not known.all():
        raise StoreError(f"fold teachers: video {int(folds.video_id[~known][0])} they were trained around is not in "
                         "this store's videos.parquet; re-run teacher-train --force")
    out = []
    for fold in range(folds.count):
        held_out = videos.subset(np.isin(videos.video_id, folds.video_id[folds.fold == fold]))
        groups = [VideoGroup(f"fold{fold}-{g.key}", g.videos) for g in group_videos(held_out, clips_per_group)]
        out.append((fold, held_out, groups))
    return out


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
    executor: ExecutorOptions = ExecutorOptions(workers=INFERENCE_WORKERS),
    *,
    force: bool = False,
    quiet: bool = False,
    log: Callable[[str], None] = print,
) -> dict:
    """Cache ``request.teacher``'s outputs for every clip of every split; resumable per video group. With
    ``request.from_logits``, the teacher's logits come from that file instead (:func:`import_teacher_logits`)."""
    if request.from_logits is not None:
        return import_teacher_logits(store, request, force=force, log=log)
    request = request.resolved(store)
    executor = executor.for_device(request.runtime.device)
    name = request.teacher.teacher_name
    key = f"{TEACHER_CACHE.name}/{name}"
    stage_name = f"teacher-cache-{name}"
    check_checkpoint(request.teacher.weights_path)  # before --force deletes the cache it would replace
    refuse_pretraining_clips(store, request.teacher)  # likewise, and before anything is recorded
    folds = label_teachers(store, request, log)
    with stage_run(store, TEACHER_CACHE, request.config(folds), force=force, record_key=key, log=log) as run:
        if run.skip:
            return run.previous.get("counts", {})
        videos = load_videos(store)
        groups = group_videos(videos, request.clips_per_group)
        # Layout and dtype: timed (or recorded) now, before any output; a resume keeps the interrupted run's.
        runtime, choice = stage_runtime(store, run, request.teacher, request.runtime,
                                        typical_batch(videos.clips, MAX_BATCH), max(executor.workers, 1), force, log)
        # The full teacher runs over every video (its timings cost Dense and every method); each fold teacher
        # only over its held-out videos, timed once (its time is never used). One task list, full teacher first.
        tasks = [(g, request.teacher, TIMING_REPEATS) for g in groups]
        by_fold = _fold_groups(videos, folds, request.clips_per_group) if folds is not None else []
        tasks += [(g, folds.refs[fold], 1) for fold, _, fold_groups in by_fold for g in fold_groups]
        with one_cluster(executor) as cluster:
            run_unstaged(store, stage_name, tasks, lambda task: task[0].key, _infer_task, cluster,
                         desc=f"teacher {name}", fault_point="teacher-cache.group", quiet=quiet,
                         common=(store.url, runtime, max(executor.workers, 1), stage_name))
            [(_, curve)] = list(run_tasks(latency_curve_task, [LATENCY_BATCHES], cluster, desc="latency", quiet=True,
                                          common=(store.url, request.teacher, runtime, max(executor.workers, 1))))
        outputs = assemble_groups(store, stage_name, groups)
        source = np.full(len(outputs.get("logits", ())), FULL_SOURCE, dtype=object)
        row_of_clip = np.empty(int(videos.clip_ids.max()) + 1 if len(groups) else 0, np.int64)
        row_of_clip[videos.clip_ids] = np.arange(len(videos.clip_ids))
        for fold, held_out, fold_groups in by_fold:  # the train clips' rows: the fold teacher that never saw them
            if fold_groups:
                rows = row_of_clip[held_out.clip_ids]
                fold_outputs = assemble_groups(store, stage_name, fold_groups)
                outputs["logits"][rows] = fold_outputs["logits"]
                outputs["features"][rows] = fold_outputs["features"]
                source[rows] = f"fold-{fold}"
        device = staging.staged_meta(store, stage_name, groups[0].key) if groups else {}
        counts = _publish(store, name, request, videos, outputs, {**device, "latency_curve": curve}, source, folds,
                          choice)
        finish_staged(run, store, [stage_name], counts)
    bins_note = f", mean B' {counts['mean_sgs_bins']:.2f}" if "mean_sgs_bins" in counts else ""
    if folds is not None:
        labels_note = f"out-of-fold z labels ({folds.count} fold teachers)"
    elif is_shipped(request.teacher.weights_path):
        labels_note = "honest z labels (shipped pretrained weights, which never saw these clips)"
    else:
        labels_note = "in-sample z labels"
    log(f"teacher-cache {name}: {counts['clips']} clips, clip accuracy {counts['clip_accuracy']:.1%}, "
        f"{counts['ms_per_clip']:.1f} ms/clip, {counts.get('gflops_per_clip', 0):.3g} GFLOPs/clip{bins_note} on "
        f"{device.get('device_name', '?')}; {labels_note}")
    return counts


#: ``clips.parquet`` teacher_source of a cache imported with --from-logits, and the fault point between staging
#: its logits and publishing the cache (the resume tests kill the stage there).
FILE_SOURCE = "file"
FROM_LOGITS_FAULT = "teacher-cache.from-logits"


def imported_teacher_name(request: TeacherCacheRequest) -> str:
    """The cache name of a ``--from-logits`` request: its ``--teacher`` (or ``--name``), which must not be a
    registered model's (the cache is no model condi-pipe could run); a ValueError for options that choose a model
    to run, since the logits come from the file."""
    choice = request.teacher
    if not isinstance(choice, TeacherChoice):
        raise TypeError("from_logits: the teacher is the file's; name the cache with TeacherChoice(name), not a model")
    given = [option for option, value in (("width", choice.width), ("weights", choice.weights),
                                          ("random_init", choice.random_init), ("reset_head", choice.reset_head),
                                          ("sgs", choice.sgs)) if value not in (None, False)]
    if request.z_labels == OUT_OF_FOLD:
        given.append(f"z_labels {OUT_OF_FOLD}")
    if given:
        raise ValueError(f"from_logits: the logits come from the file, so {', '.join(given)} does not apply")
    name = choice.name or choice.teacher
    if not name or "/" in name or "\\" in name or name.startswith(".") or name != name.strip():
        raise ValueError(f"from_logits: {name!r} is not a usable cache name (a plain folder name)")
    if name in MODELS.names():
        raise ValueError(f"from_logits: '{name}' is a registered model; name the imported teacher's cache otherwise "
                         "(e.g. mmaction-c3d), so it is never taken for a model condi-pipe runs")
    return name


def import_teacher_logits(store: Store, request: TeacherCacheRequest, *, force: bool = False,
                          log: Callable[[str], None] = print) -> dict:
    """``teacher/<name>/`` from the per-clip logits in ``request.from_logits`` (``storage.logits_file``: one row per
    clip of the store), written as :func:`teacher_cache` writes a cache it computes (the same z, predictions and
    KD targets from the logits), without features (a file has none) or timings. Everything is checked before
    anything is written: a file that is not exactly one finite row of the store's classes per clip is one line
    naming the file and why. One step: the aligned logits are staged, then the cache is published and the stage
    marked done; a run killed before that leaves no complete cache, and the next run redoes it."""
    name = imported_teacher_name(request)
    path = os.path.abspath(request.from_logits)
    videos = load_videos(store)
    classes = class_names(store)
    rows = logits_file.read_logits_file(path)
    logits = logits_file.logits_in_clip_order(path, rows, videos, len(classes))
    digest = file_sha256(path)
    key, stage_name = f"{TEACHER_CACHE.name}/{name}", f"teacher-cache-{name}"
    config = {"teacher": {"name": name, "num_classes": len(classes)}, "from_logits": path,
              "from_logits_sha256": digest}
    if logits_file.looks_like_probabilities(logits):
        log(f"teacher-cache {name}: warning: every row of {path} is in [0, 1] and sums to 1: probabilities, not "
            "logits? KD targets take the softmax of what the file holds")
    with stage_run(store, TEACHER_CACHE, config, force=force, record_key=key, log=log) as run:
        if run.skip:
            return run.previous.get("counts", {})
        staging.stage_item(store, stage_name, "file", {"logits": logits}, {"sha256": digest})
        faults.checkpoint(FROM_LOGITS_FAULT)
        logits = staging.staged_arrays(store, stage_name, "file")["logits"]
        total_clips = len(logits)
        meta = {
            "model": name, "architecture": None, "width": None, "num_classes": len(classes), "weights": None,
            "shipped_weights": False,
            # the file's digest stands for the weights': students distilled from another file are stale
            "weights_sha256": digest,
            "from_logits": {"path": path, "sha256": digest, "rows": len(rows.video_id),
                            "note": "logits imported from this file (teacher-cache --from-logits); no features, "
                                    "timings, FLOPs or latency curve: there is no model here"},
            "sgs": None, "flops": None, "bf16": None, "layout": None, "runtime_choice": None, "device": None,
            "device_name": None, "threads": None, "latency_curve": None,
            "timing": "none: imported from a file (videos.parquet seconds are NaN)",
            "classes": classes, "z_labels": IN_SAMPLE, "folds": None,
        }
        counts = _write_cache(store, name, videos, {"logits": logits}, np.full(total_clips, FILE_SOURCE, object),
                              [None] * total_clips, np.full(len(videos.video_id), np.nan), meta)
        finish_staged(run, store, [stage_name], counts)
    log(f"teacher-cache {name}: {counts['clips']} clips imported from {path}, clip accuracy "
        f"{counts['clip_accuracy']:.1%}; no features or timings (a file has none)")
    return counts


def _write_cache(store: Store, name: str, videos: VideoSet, arrays: dict[str, np.ndarray], source: np.ndarray,
                 flops, seconds, meta: dict, extra_clip_columns: dict | None = None) -> dict:
    """Write ``teacher/<name>/`` (``arrays``: logits and features, rows in ``videos.clip_ids`` order): the clip
    table's predictions, probabilities and z (Eq. 1) follow from the logits, the same way for a teacher run here
    and one imported from a file. The counts ``videos``, ``clips`` and ``clip_accuracy``."""
    split_of = dict(zip(*(store.read_table(tables.VIDEOS, columns=["video_id", "split"]).column(c).to_pylist()
                          for c in ("video_id", "split"))))
    clip_video = np.repeat(videos.video_id, videos.clips)
    labels = np.repeat(videos.label, videos.clips)
    stats = clip_statistics(arrays["logits"], labels)
    clips = {
        "clip_id": videos.clip_ids, "video_id": clip_video, "split": [split_of[v] for v in clip_video],
        "label": labels, **stats, "teacher_source": source.tolist(), "flops": flops, **(extra_clip_columns or {}),
    }
    video_columns = {"video_id": videos.video_id, "split": [split_of[v] for v in videos.video_id],
                     "clips": videos.clips, "seconds": seconds}
    clip_outputs.write_teacher_cache(store, name, arrays, clips, video_columns, meta)
    total_clips = int(videos.clips.sum())
    return {"videos": len(videos.video_id), "clips": total_clips,
            "clip_accuracy": float(stats["z"].mean()) if total_clips else 0.0}


def _publish(store: Store, name: str, request: TeacherCacheRequest, videos, outputs, device: dict,
             source: np.ndarray, folds: FoldTeachers | None, choice: RuntimeChoice) -> dict:
    flops = model_flop_table(request.teacher)
    bins = outputs.get("sgs_bins")
    clip_flops = flops.per_clip(int(videos.clips.sum()), bins)
    seconds = outputs["seconds"]
    sgs = request.teacher.sgs
    meta = {
        "model": name, "architecture": request.teacher.name, "width": request.teacher.width,
        "num_classes": request.teacher.num_classes,
        "weights": request.teacher.weights_path or request.teacher.store_weights,
        "shipped_weights": is_shipped(request.teacher.weights_path),  # trained on a corpus of its own
        "weights_sha256": request.teacher.weights_sha256,
        "sgs": None if sgs is None else {"stage": sgs.stage, "kernel": sgs.kernel,
                                         "mean_bins": float(bins.mean()) if len(bins) else None},
        "flops": {**flops.to_json(), "per_clip": "clips.parquet 'flops': torch.utils.flop_counter FLOPs "
                  "(2 x multiply-accumulates of convolutions, linears and matmuls); with SGS: fixed + after_sgs[B']"},
        "bf16": choice.bf16, "layout": choice.layout, "runtime_choice": choice.to_json(),
        "device": device.get("device"), "device_name": device.get("device_name"),
        "threads": device.get("threads"), "latency_curve": device.get("latency_curve"),
        "timing": "videos.parquet: wall time of one forward pass over each video's clips as one batch; "
                  "latency_curve: seconds of one forward pass per batch size (median of 3)",
        "classes": class_names(store),
        "z_labels": IN_SAMPLE if folds is None else OUT_OF_FOLD,
        "folds": None if folds is None else {
            "count": folds.count, "seed": folds.seed, "sha256": folds.sha256,
            "teachers": [{"fold": f, "weights": ref.store_weights, "weights_sha256": ref.weights_sha256,
                          "clips": int((source == f"fold-{f}").sum())} for f, ref in enumerate(folds.refs)],
            "note": "clips of the videos the full teacher trained on: logits, features, pred, z of the fold teacher "
                    "that never saw the video (teacher_source); timings, latency curve, FLOPs, B': the full teacher"},
    }
    counts = _write_cache(store, name, videos, {"logits": outputs["logits"], "features": outputs["features"]}, source,
                          clip_flops, seconds, meta, None if bins is None else {"sgs_bins": bins})
    total_clips = counts["clips"]
    counts.update({"ms_per_clip": float(1000 * seconds.sum() / max(total_clips, 1)),
                   "gflops_per_clip": round(float(np.mean(clip_flops)) / 1e9, 4) if total_clips else 0.0})
    if bins is not None:
        counts["mean_sgs_bins"] = round(float(bins.mean()), 4) if total_clips else 0.0
    return counts
