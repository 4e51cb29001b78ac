"""Stage ``teacher-train``: train a registered teacher on the store's train split.

Each clip is a sample labelled with its video's label. SGD with momentum, per-epoch **cosine** LR schedule
(epoch e of E, from 0, trains at ``lr * (1 + cos(pi e / E)) / 2``), weight decay, and random horizontal
flips of whole clips (p = 0.5) unless ``flip=False``: turn flips off for direction-sensitive classes (the
embedded benchmark's TranslateLeft/Right and Rotate(Anti)Clockwise, Something-Something V2), where a flipped
clip shows the other class. ``clips_per_video`` trains each epoch on a random subset of each video's clips.

After every ``eval_every``-th epoch (and the last) the model is evaluated on the eval split
(``manifests.eval_split``): clip accuracy and video accuracy (argmax of the mean softmax over all of a
video's clips). Writes ``teachers/<name>/``: ``history.parquet`` (one row per epoch), ``weights.pt`` (plain
state dict, what ``teacher-cache`` loads) and ``meta.json``. Resumable after a kill at any point
(``pipeline.training``), idempotent, ``force`` retrains from scratch.

With ``sgs`` the teacher has an SGS module inserted (``models.sgs``) and trains under its own name (default
``<teacher>+sgs``, so it sits beside the plain teacher); batches are padded to their largest B' with a mask. Started
from a plain teacher's weights (``weights`` or ``store_weights``), everything but the new SGS parameters loads:
fine-tuning an existing teacher with SGS inserted.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F

from condi_pipe.models.checkpoints import check_checkpoint, file_sha256
from condi_pipe.models.sgs import SGSOptions, sgs_teacher_name
from condi_pipe.pipeline.stage import StageError, define_stage, stage_run
from condi_pipe.pipeline.torch_runtime import RuntimeOptions, device_name
from condi_pipe.pipeline.training import (CosineDecay, ParamGroup, StepResult, TrainOptions, batches_of,
                                          eval_batch_size, model_input, prefetched, read_clips, run_training,
                                          sample_clips, video_mean_softmax)
from condi_pipe.storage import training_artifacts as artifacts
from condi_pipe.storage.clip_array import open_clip_array
from condi_pipe.storage.manifests import VideoSet, available_splits, class_names, eval_split, load_videos
from condi_pipe.storage.store import Store

TEACHER_TRAIN = define_stage(
    "teacher-train",
    reads=("extract",),
    writes=("teachers/{key}",),
    summary="train a teacher on the train split; per-epoch eval accuracy, final weights in teachers/<name>/",
)
TRAIN_SPLIT = "train"
SCHEDULE = "cosine"


def default_teacher_options() -> TrainOptions:
    return TrainOptions(epochs=4, batch_size=16, lr=0.05, momentum=0.9, weight_decay=1e-4, seed=0)


@dataclass(frozen=True)
class TeacherTrainRequest:
    """What to train: a registered model ``teacher`` (``width`` if it has one), optionally initialised from a
    local checkpoint ``weights`` (``reset_head`` for a different class count), and how."""

    teacher: str
    width: float | None = None
    train: TrainOptions = field(default_factory=default_teacher_options)
    flip: bool = True
    weights: str | None = None
    reset_head: bool = False
    clips_per_video: int | None = None  # per epoch; None: every clip
    runtime: RuntimeOptions = RuntimeOptions()
    sgs: SGSOptions | None = None
    name: str | None = None  # default: teacher, plus "+sgs" with SGS (sgs_teacher_name)
    store_weights: str | None = None  # start from a state dict inside the store (e.g. the plain teacher's)
    # digest of the starting weights, so retrained weights are a new configuration; config() fills it in for a
    # local ``weights`` file, a caller passing ``store_weights`` gives it
    weights_sha256: str | None = None

    @property
    def output_name(self) -> str:
        return sgs_teacher_name(self.teacher, self.sgs, self.name)

    def config(self) -> dict:
        cfg = asdict(self)
        cfg["weights"] = os.path.abspath(self.weights) if self.weights else None
        if self.weights:
            cfg["weights_sha256"] = file_sha256(self.weights)
        cfg["schedule"] = SCHEDULE
        return cfg


class TeacherTask:
    """The teacher-train :class:`~condi_pipe.pipeline.training.TrainingTask`: cross-entropy on clips."""

    train_columns: tuple[str, ...] = ("loss", "accuracy")
    eval_columns = ("eval_loss", "eval_clip_accuracy", "eval_video_accuracy")

    def __init__(self, store: Store, request: TeacherTrainRequest, num_classes: int, train: VideoSet,
                 evaluation: VideoSet | None) -> None:
        self.store, self.request, self.num_classes = store, request, num_classes
        self.train_videos, self.eval_videos = train, evaluation
        self.clips = open_clip_array(store)
        if request.sgs is not None:
            self.train_columns = (*TeacherTask.train_columns, "mean_sgs_bins")  # mean B' of the epoch's clips
        self.clip_label = np.zeros(self.clips.shape[0], np.int64)
        for videos in (train, evaluation):
            if videos is not None:
                self.clip_label[videos.clip_ids] = np.repeat(videos.label, videos.clips)

    def setup(self, device: torch.device) -> None:
        from condi_pipe.models import build_model, load_state, load_weights
        from condi_pipe.pipeline.torch_runtime import load_state_bytes

        self.device = device
        request = self.request
        extra = request.sgs.model_kwargs() if request.sgs is not None else {}
        self.model = build_model(request.teacher, num_classes=self.num_classes, width=request.width, **extra)
        if request.weights:
            load_weights(self.model, request.weights, reset_head=request.reset_head)
        elif request.store_weights:
            load_state(self.model, load_state_bytes(self.store.read_bytes(request.store_weights)),
                       origin=self.store.path(request.store_weights), reset_head=request.reset_head)
        self.model.to(device)

    def modules(self) -> dict:
        return {"model": self.model}

    def param_groups(self) -> list[ParamGroup]:
        opts = self.request.train
        return [ParamGroup("model", list(self.model.parameters()), opts.lr, CosineDecay(opts.epochs))]

    def epoch_batches(self, epoch: int, rng: np.random.Generator) -> list[np.ndarray]:
        ids = sample_clips(self.train_videos, rng, self.request.clips_per_video)
        return batches_of(ids, self.request.train.batch_size)

    def load_batch(self, ids: np.ndarray):
        return read_clips(self.clips, ids), torch.from_numpy(self.clip_label[ids])

    def train_step(self, batch, generator: torch.Generator) -> StepResult:
        clips, labels = batch
        if self.request.flip:
            flip = torch.rand(len(clips), generator=generator) < 0.5
            clips[flip] = clips[flip].flip(3)  # (B, T, H, W, 3): W is dim 3
        out = self.model(model_input(self.model, clips, self.request.runtime, self.device))
        labels = labels.to(self.device)
        loss = F.cross_entropy(out.logits.float(), labels)
        accuracy = (out.logits.detach().argmax(1) == labels).float().mean()
        logs = {"loss": float(loss.detach()), "accuracy": float(accuracy)}
        if out.sgs_bins is not None:
            logs["mean_sgs_bins"] = float(out.sgs_bins.float().mean())
        return StepResult(loss, logs, len(labels))

    def predict(self, videos: VideoSet, batch_size: int) -> np.ndarray:
        """float32 logits of every clip of ``videos``, in clip-id order."""
        self.model.eval()
        out = []
        from condi_pipe.pipeline.torch_runtime import autocast

        with torch.inference_mode(), autocast(self.request.runtime, self.device):
            for clips in prefetched(lambda ids: read_clips(self.clips, ids), batches_of(videos.clip_ids, batch_size)):
                batch = model_input(self.model, clips, self.request.runtime, self.device)
                out.append(self.model(batch).logits.float().cpu().numpy())
        return np.concatenate(out) if out else np.zeros((0, self.num_classes), np.float32)

    def evaluate(self, epoch: int) -> dict[str, float]:
        if self.eval_videos is None:
            return {}
        logits = self.predict(self.eval_videos, eval_batch_size(self.request.train.batch_size))
        labels = self.clip_label[self.eval_videos.clip_ids]
        loss = F.cross_entropy(torch.from_numpy(logits), torch.from_numpy(labels)).item()
        video_probs = video_mean_softmax(logits, self.eval_videos.offsets)
        return {"eval_loss": loss,
                "eval_clip_accuracy": float((logits.argmax(1) == labels).mean()),
                "eval_video_accuracy": float((video_probs.argmax(1) == self.eval_videos.label).mean())}

    def extra_state(self) -> dict:
        return {}

    def load_extra_state(self, state: dict) -> None:
        pass


def _rounded(value: float, digits: int = 4) -> float | None:
    """A JSON-friendly number: None for NaN (not evaluated)."""
    return None if value != value else round(float(value), digits)


def teacher_train(
    store: Store,
    request: TeacherTrainRequest,
    *,
    force: bool = False,
    quiet: bool = False,
    log: Callable[[str], None] = print,
) -> dict:
    """Train ``request.teacher`` on ``store`` (resumable); returns the stage counts."""
    name = request.output_name
    key = f"{TEACHER_TRAIN.name}/{name}"
    folder = artifacts.trained_teacher_folder(name)
    check_checkpoint(request.weights)  # before anything is recorded or --force deletes the old teacher
    with stage_run(store, TEACHER_TRAIN, request.config(), force=force, record_key=key, log=log) as run:
        if run.skip:
            return run.previous.get("counts", {})
        classes = class_names(store)
        if TRAIN_SPLIT not in available_splits(store):
            raise StageError(f"{store.url}: no '{TRAIN_SPLIT}' split to train on")
        train_videos = load_videos(store, TRAIN_SPLIT)
        split = eval_split(store)
        evaluation = load_videos(store, split) if split in available_splits(store) else None
        if evaluation is None:
            log(f"teacher-train {name}: no eval split; accuracy columns stay NaN")
        artifacts.unpublish(store, folder)
        task = TeacherTask(store, request, len(classes), train_videos, evaluation)
        result = run_training(store, folder, task, request.train, request.runtime, stage=TEACHER_TRAIN.name,
                              quiet=quiet, log=log)
        last = result.history[-1]
        model = task.model
        artifacts.write_state_dict(store, folder, model.state_dict())
        meta = {
            "teacher": name, "architecture": request.teacher, "width": model.config.width,
            "sgs": asdict(request.sgs) if request.sgs is not None else None, "num_classes": len(classes), "classes": classes,
            "normalization": model.config.normalization, "feature_dim": model.config.feature_dim,
            "train_split": TRAIN_SPLIT, "eval_split": split if evaluation is not None else None,
            "train_videos": int(len(train_videos.video_id)), "train_clips": int(train_videos.clips.sum()),
            "schedule": f"SGD momentum {request.train.momentum}, {task.param_groups()[0].schedule!r}",
            "config": request.config(),
            "device": str(task.device), "device_name": device_name(task.device), "threads": torch.get_num_threads(),
            "final": {k: _rounded(last[k], 6) for k in ("train_loss", "train_accuracy", *TeacherTask.eval_columns)},
        }
        artifacts.write_meta(store, folder, meta)
        counts = {"epochs": request.train.epochs,
                  "clip_accuracy": _rounded(last["eval_clip_accuracy"]),
                  "video_accuracy": _rounded(last["eval_video_accuracy"])}
        run.done(counts)
        artifacts.remove_checkpoints(store, folder)
    log(f"teacher-train {name}: {counts['epochs']} epochs, eval clip accuracy {last['eval_clip_accuracy']:.1%}, "
        f"video accuracy {last['eval_video_accuracy']:.1%}; weights in {store.path(folder)}")
    return counts


def teacher_ref(store: Store, teacher: str, width: float | None = None, weights: str | None = None,
                random_init: bool = False, reset_head: bool = False, sgs: SGSOptions | None = None,
                name: str | None = None):
    """The teacher ``teacher-cache`` should run: a local checkpoint ``weights`` (any format ``load_weights``
    reads), else the store's trained teacher (``teachers/<name>/weights.pt``), else random weights if
    ``random_init`` (for tests and timing only); otherwise a ValueError saying how to get weights.

    ``sgs`` inserts SGS; ``name`` is the teacher's name in the store (default: ``teacher``, plus ``+sgs``). The
    weights' SHA-256 goes into the reference, so a cache of other weights is not mistaken for this one."""
    from condi_pipe.pipeline.clip_inference import ModelRef

    if weights and random_init:
        raise ValueError("pass either --weights or --random-init, not both")
    num_classes = len(class_names(store))
    sgs_fields = {"sgs_stage": sgs.stage, "sgs_kernel": sgs.kernel} if sgs is not None else {}
    output = sgs_teacher_name(teacher, sgs, name)
    named = {"output_name": output} if output != sgs_teacher_name(teacher, sgs) else {}
    if weights:
        if not os.path.isfile(weights):
            raise FileNotFoundError(f"{weights}: no such checkpoint file")
        return ModelRef(teacher, num_classes, width, weights_path=os.path.abspath(weights), reset_head=reset_head,
                        weights_sha256=file_sha256(weights), **sgs_fields, **named)
    folder = artifacts.trained_teacher_folder(output)
    if not random_init and artifacts.is_complete(store, folder):
        meta = artifacts.read_meta(store, folder)
        if width is not None and meta.get("width") is not None and float(width) != float(meta["width"]):
            raise ValueError(f"{output} was trained with width {meta['width']}, not {width}")
        if int(meta["num_classes"]) != num_classes:
            raise ValueError(f"{store.path(folder)}: trained for {meta['num_classes']} classes, the store has "
                             f"{num_classes}; re-run teacher-train --force")
        trained_sgs = meta.get("sgs")
        if (trained_sgs or None) != (asdict(sgs) if sgs is not None else None):
            raise ValueError(f"{store.path(folder)}: trained with SGS {trained_sgs}, not {sgs}")
        rel = artifacts.weights_rel(folder)
        return ModelRef(teacher, num_classes, meta.get("width"), store_weights=rel,
                        weights_sha256=artifacts.weights_sha256(store, folder), **sgs_fields, **named)
    if random_init:
        return ModelRef(teacher, num_classes, width, **sgs_fields, **named)
    raise ValueError(f"no weights: pass --weights or run teacher-train first (no trained {output} in "
                     f"{store.path(folder)})")
