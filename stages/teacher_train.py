"""Stage ``teacher-train``: train a registered teacher on the store's train split.

Each clip is a sample labelled with its video's label. SGD with momentum, per-epoch **cosine** LR schedule
(epoch e of E, from 0, trains at ``lr * (1 + cos(pi e / E)) / 2``), weight decay, and random horizontal
flips of whole clips (p = 0.5) unless ``flip=False``: turn flips off for direction-sensitive classes (the
embedded benchmark's TranslateLeft/Right and Rotate(Anti)Clockwise, Something-Something V2), where a flipped
clip shows the other class. ``clips_per_video`` trains each epoch on a random subset of each video's clips.

A validation part is carved from the train split (``pipeline.splits``: ``train.val_fraction`` of each class's
groups, seeded by ``train.val_seed``) and the model trains on the rest. After every ``eval_every``-th epoch (and
the last) it is evaluated on the validation part: loss, clip accuracy and video accuracy (argmax of the mean
softmax over all of a video's clips), the history's ``eval_*`` columns. With ``train.keep = "best"`` the epoch
with the best validation video accuracy is kept (ties: the earlier epoch); ``"last"`` or no validation videos
keep the last. The test split (``manifests.eval_split``) chooses nothing: the kept model's test accuracy is
measured once, at the end, as ``meta.json``'s ``test`` figures. Writes ``trained_teachers/<name>/``:
``history.parquet`` (one row per epoch), ``weights.pt`` (the kept epoch's plain state dict, what
``teacher-cache`` loads) and ``meta.json``. Resumable after a kill at any point
(``pipeline.training``), idempotent, ``force`` retrains from scratch.

With ``sgs`` the teacher has an SGS module inserted (``models.sgs``) and trains under its own name (default
``<teacher>+sgs``, so it sits beside the plain teacher); batches are padded to their largest B' with a mask. Started
from a plain teacher's weights (``weights`` or ``store_weights``), everything but the new SGS parameters loads:
fine-tuning an existing teacher with SGS inserted.

With ``oof_folds = F`` (``--oof-folds F``) it also trains F *fold teachers* (``trained_teachers/<name>/folds/<f>/``, same layout):
the videos the full teacher trains on (the fit part) are dealt into F folds by group (``pipeline.splits.grouped_folds``
over ``video_group``, seeded by ``train.val_seed``), and fold teacher f trains on the fit videos outside fold f with
the same options (and the same validation part). ``teacher-cache`` labels each fit clip with the fold teacher that
never saw its video: out-of-fold confidence labels. The full teacher's ``meta.json`` ``folds`` records every fit
video's fold and a digest; it is written last, so the folder is complete only with all its fold teachers.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from dataclasses import asdict, dataclass, field
from typing import Callable, NamedTuple

import numpy as np
import torch
import torch.nn.functional as F

from condi_pipe.compute.torch_runtime import RUNTIME_OPTIONS, RuntimeOptions, autocast, device_name, load_state_bytes
from condi_pipe.compute.training import (
    TRAIN_OPTIONS,
    CosineDecay,
    ParamGroup,
    StepResult,
    TrainOptions,
    batches_of,
    eval_batch_size,
    model_input,
    prefetched,
    read_clips,
    run_training,
    sample_clips,
    video_class_predictions,
)
from condi_pipe.models import build_model, load_state, load_weights
from condi_pipe.models.checkpoints import check_checkpoint, file_sha256
from condi_pipe.models.sgs import SGSOptions, sgs_teacher_name
from condi_pipe.pipeline import faults
from condi_pipe.pipeline.options import (
    RESET_HEAD_HELP,
    TEACHER_MODEL_HELP,
    OptionTable,
    check_fields,
    nested_paths,
    option,
)
from condi_pipe.pipeline.splits import TRAIN_SPLIT, TrainingSplits, grouped_folds, training_splits, video_group
from condi_pipe.pipeline.stage import StageError, define_stage, stage_run
from condi_pipe.storage import training_artifacts as artifacts
from condi_pipe.storage.clip_array import open_clip_array
from condi_pipe.storage.errors import StoreError
from condi_pipe.storage.manifests import VideoSet, available_splits, class_names, eval_split, load_videos, video_paths
from condi_pipe.storage.store import Store

TEACHER_TRAIN = define_stage(
    "teacher-train",
    reads=("extract",),
    writes=("trained_teachers/{key}",),
    summary="train a teacher on the train split; per-epoch eval accuracy, final weights in trained_teachers/<name>/",
)
SCHEDULE = "cosine"


def default_teacher_options() -> TrainOptions:
    # a few epochs of fine-tuning scale (4 at lr 0.05); the demo and examples set theirs explicitly
    return TrainOptions(epochs=4, batch_size=16, lr=0.05, momentum=0.9, weight_decay=1e-4, seed=0)


@dataclass(frozen=True)
class TeacherTrainRequest:
    """What to train: a registered model ``teacher`` (``width`` if it has one), optionally initialised from a
    local checkpoint ``weights`` (``reset_head`` for a different class count), and how."""

    teacher: str = option(help=TEACHER_MODEL_HELP)
    width: float | None = option(None, low=0, low_open=True, help="Width multiplier, for models that have one.")
    train: TrainOptions = field(default_factory=default_teacher_options)
    flip: bool = option(True, help=(
        "Random horizontal flips of whole clips. Use --no-flip for direction-sensitive classes: the embedded "
        "benchmark (TranslateLeft/Right, RotateClockwise/Anticlockwise) and Something-Something V2, where a flipped "
        "clip shows another class."))
    weights: str | None = option(None, help="Start from this local checkpoint (fine-tuning) instead of random "
                                            "weights.")
    reset_head: bool = option(False, help=RESET_HEAD_HELP)
    clips_per_video: int | None = option(None, low=1, help="Train each epoch on this many random clips of each "
                                                           "video (default: all clips).")
    runtime: RuntimeOptions = RuntimeOptions()
    sgs: SGSOptions | None = None
    name: str | None = option(None, help="The teacher's name in the store (default: --teacher, plus '+sgs' with "
                                         "--sgs).")
    store_weights: str | None = None  # start from a state dict inside the store (e.g. the plain teacher's)
    # digest of the starting weights, so retrained weights are a new configuration; config() fills it in for a
    # local ``weights`` file, a caller passing ``store_weights`` gives it
    weights_sha256: str | None = None
    oof_folds: int | None = option(None, low=2, help=(
        "Also train F fold teachers, each on the training videos outside one group-wise fold, so teacher-cache can "
        "label every training clip out of fold (default: none)."))

    def __post_init__(self) -> None:
        check_fields(self)

    @property
    def output_name(self) -> str:
        return sgs_teacher_name(self.teacher, self.sgs, self.name)

    def config(self) -> dict:
        cfg = asdict(self)
        cfg["weights"] = os.path.abspath(self.weights) if self.weights else None
        if self.weights:
            cfg["weights_sha256"] = file_sha256(self.weights)
        cfg["schedule"] = SCHEDULE
        del cfg["train"]["loader_workers"]  # how batches are read, not what is trained: any value resumes
        if not self.train.sync_batchnorm:  # recorded only when on: runs made before the option keep their config
            del cfg["train"]["sync_batchnorm"]
        return cfg


#: Every option of ``condi-pipe teacher-train`` -> its field in :class:`TeacherTrainRequest` (the CLI builds
#: ``sgs`` from --sgs, --sgs-stage and --sgs-kernel). A run config sets them in ``[teacher_train]``, but for
#: ``teacher``, ``width`` and the runtime, which ``[teacher]`` gives (they are the teacher-cache stage's too).
TEACHER_TRAIN_OPTIONS = OptionTable(TeacherTrainRequest, {
    "teacher": "teacher", "width": "width", **nested_paths("train", TRAIN_OPTIONS), "flip": "flip",
    "clips_per_video": "clips_per_video", "weights": "weights", "reset_head": "reset_head", "oof_folds": "oof_folds",
    "sgs": "sgs", "name": "name", **nested_paths("runtime", RUNTIME_OPTIONS),
})


class TeacherTask:
    """The teacher-train :class:`~condi_pipe.compute.training.TrainingTask`: cross-entropy on clips."""

    train_columns: tuple[str, ...] = ("loss", "accuracy")
    eval_columns = ("eval_loss", "eval_clip_accuracy", "eval_video_accuracy")
    selection_column = "eval_video_accuracy"  # on the validation videos: what the teacher is used for (Dense)

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
        return self.batch_from_clips(ids, read_clips(self.clips, ids))

    def clip_ids_of(self, ids: np.ndarray) -> np.ndarray:
        return ids

    def batch_from_clips(self, ids: np.ndarray, clips: torch.Tensor):
        return clips, torch.from_numpy(self.clip_label[ids])

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

        with torch.inference_mode(), autocast(self.request.runtime, self.device):
            for clips in prefetched(lambda ids: read_clips(self.clips, ids), batches_of(videos.clip_ids, batch_size)):
                batch = model_input(self.model, clips, self.request.runtime, self.device)
                out.append(self.model(batch).logits.float().cpu().numpy())
        return np.concatenate(out) if out else np.zeros((0, self.num_classes), np.float32)

    def evaluate(self, epoch: int) -> dict[str, float]:
        """The eval columns, on the validation videos."""
        if self.eval_videos is None:
            return {}
        return self.metrics(self.eval_videos)

    def metrics(self, videos: VideoSet, prefix: str = "eval_") -> dict[str, float]:
        """Loss, clip and video accuracy on ``videos`` (their clip labels must be known to the task)."""
        logits = self.predict(videos, eval_batch_size(self.request.train.batch_size))
        labels = self.clip_label[videos.clip_ids]
        loss = F.cross_entropy(torch.from_numpy(logits), torch.from_numpy(labels)).item()
        video_pred = video_class_predictions(logits, videos.offsets)
        return {f"{prefix}loss": loss,
                f"{prefix}clip_accuracy": float((logits.argmax(1) == labels).mean()),
                f"{prefix}video_accuracy": float((video_pred == videos.label).mean())}

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
        splits = training_splits(store, request.train.val_fraction, request.train.val_seed, TRAIN_SPLIT)
        train_videos, evaluation = splits.fit, splits.validation
        split = eval_split(store)  # the test split: only for the kept model's test figures
        test = load_videos(store, split) if split in available_splits(store) and split != TRAIN_SPLIT else None
        if evaluation is None:
            log(f"teacher-train {name}: no validation videos (--val-fraction {splits.fraction:g}); the eval columns "
                "stay NaN and the last epoch is kept")
        artifacts.unpublish(store, folder)
        task = TeacherTask(store, request, len(classes), train_videos, evaluation)
        result = run_training(store, folder, task, request.train, request.runtime, stage=TEACHER_TRAIN.name,
                              quiet=quiet, log=log, run_name=name)
        last, kept = result.history[-1], result.kept
        model = task.model
        test_metrics = {}
        if test is not None:  # the kept weights, once: the test split chooses nothing
            task.clip_label[test.clip_ids] = np.repeat(test.label, test.clips)
            test_metrics = {k: _rounded(v, 6) for k, v in task.metrics(test, "test_").items()}
        artifacts.write_state_dict(store, folder, model.state_dict())
        fold_record = (_train_fold_teachers(store, request, splits, len(classes), folder, quiet=quiet, log=log)
                       if request.oof_folds else None)
        meta = {
            "teacher": name, "architecture": request.teacher, "width": model.config.width,
            "sgs": asdict(request.sgs) if request.sgs is not None else None, "num_classes": len(classes), "classes": classes,
            "normalization": model.config.normalization, "feature_dim": model.config.feature_dim,
            "train_split": TRAIN_SPLIT, "test_split": split if test is not None else None,
            **splits.summary(), "train_clips": int(train_videos.clips.sum()),  # train_clips: of the fit videos
            "schedule": f"SGD momentum {request.train.momentum}, {task.param_groups()[0].schedule!r}",
            "config": request.config(),
            "device": str(task.device), "device_name": device_name(task.device), "threads": torch.get_num_threads(),
            "final": {k: _rounded(last[k], 6) for k in ("train_loss", "train_accuracy", *TeacherTask.eval_columns)},
            "keep": request.train.keep, "epoch_kept": result.kept_epoch,
            "selection": None if result.selection is None else {
                "metric": result.selection, "split": "validation", "value": _rounded(result.selection_value, 6),
                "epoch": result.kept_epoch},
            "kept": {k: _rounded(kept[k], 6) for k in ("train_loss", "train_accuracy", *TeacherTask.eval_columns)},
            "test": test_metrics,
            "folds": fold_record,  # teacher-train --oof-folds: each fit video's fold and the fold teachers
        }
        artifacts.write_meta(store, folder, meta)
        counts = {"epochs": request.train.epochs,
                  "clip_accuracy": _rounded(kept["eval_clip_accuracy"]),
                  "video_accuracy": _rounded(kept["eval_video_accuracy"]),
                  "epoch_kept": result.kept_epoch, "selection_metric": result.selection,
                  "selection_value": None if result.selection_value is None else _rounded(result.selection_value)}
        run.done(counts)
        artifacts.remove_checkpoints(store, folder)
    log(f"teacher-train {name}: {counts['epochs']} epochs, kept epoch {result.kept_epoch}"
        + (f" (best {result.selection} on validation)" if result.selection else "")
        + f", validation clip accuracy {kept['eval_clip_accuracy']:.1%}, video accuracy "
        f"{kept['eval_video_accuracy']:.1%}; weights in {store.path(folder)}")
    return counts


# -- fold teachers (--oof-folds F): out-of-fold confidence labels for teacher-cache --------------------------------
FOLD_FAULT_POINT = "teacher-train.fold"  # passed after each fold teacher is published


def fold_digest(video_id: np.ndarray, fold: np.ndarray) -> str:
    """SHA-256 of a fold assignment (video ids and their folds, in order), recorded and checked on reading."""
    payload = json.dumps({"video_id": [int(v) for v in video_id], "fold": [int(f) for f in fold]})
    return hashlib.sha256(payload.encode()).hexdigest()


def _train_fold_teachers(store: Store, request: TeacherTrainRequest, splits: TrainingSplits, num_classes: int,
                         folder: str, *, quiet: bool, log: Callable[[str], None]) -> dict:
    """Train every fold teacher not yet published (each resumes from its own checkpoint); return the fold record
    for the full teacher's ``meta.json``."""
    fit, folds, seed = splits.fit, int(request.oof_folds), request.train.val_seed
    groups = np.array([video_group(p) for p in video_paths(store, fit)], dtype=object)
    fold_of = grouped_folds(fit.label, groups, folds, seed)
    if (np.bincount(fold_of, minlength=folds) == 0).any():
        raise StageError(f"{store.url}: --oof-folds {folds}: the {len(fit.video_id)} training videos form only "
                         f"{len(set(groups.tolist()))} groups, so a fold would be empty; use fewer folds")
    teachers = []
    for fold in range(folds):
        fold_folder = artifacts.fold_teacher_folder(folder, fold)
        held_out = fold_of == fold
        if not artifacts.is_complete(store, fold_folder):
            trains_on = fit.subset(~held_out)
            log(f"teacher-train {request.output_name}: fold teacher {fold} of {folds}: {len(trains_on.video_id)} "
                f"videos, holding out {int(held_out.sum())}")
            task = TeacherTask(store, request, num_classes, trains_on, splits.validation)
            result = run_training(store, fold_folder, task, request.train, request.runtime,
                                  stage=TEACHER_TRAIN.name, quiet=quiet, log=log,
                                  run_name=f"{request.output_name} fold {fold}")
            artifacts.write_state_dict(store, fold_folder, task.model.state_dict())
            # before meta.json: a kill in between retrains this fold from scratch, to the same weights
            artifacts.remove_checkpoints(store, fold_folder)
            columns = ("train_loss", "train_accuracy", *TeacherTask.eval_columns)
            artifacts.write_meta(store, fold_folder, {
                "teacher": request.output_name, "fold": fold, "folds": folds, "fold_seed": seed,
                "train_video_ids": [int(v) for v in trains_on.video_id],
                "held_out_video_ids": [int(v) for v in fit.video_id[held_out]],
                "train_clips": int(trains_on.clips.sum()), "epoch_kept": result.kept_epoch,
                "selection": result.selection, "kept": {k: _rounded(result.kept[k], 6) for k in columns},
                "config": request.config(),
            })
            faults.checkpoint(FOLD_FAULT_POINT)
        teachers.append({"fold": fold, "folder": fold_folder, "held_out_videos": int(held_out.sum()),
                         "weights_sha256": artifacts.weights_sha256(store, fold_folder),
                         "epoch_kept": artifacts.read_meta(store, fold_folder)["epoch_kept"]})
    return {"count": folds, "seed": seed,
            "grouped_by": "pipeline.splits.video_group (UCF-101 gXX, Kinetics YouTube id, else the video)",
            "video_id": [int(v) for v in fit.video_id], "fold": [int(f) for f in fold_of],
            "sha256": fold_digest(fit.video_id, fold_of), "teachers": teachers}


class FoldTeachers(NamedTuple):
    """The fold teachers of a trained teacher: ``refs[f]`` never saw the videos ``video_id[fold == f]``."""

    refs: tuple  # ModelRef per fold
    video_id: np.ndarray  # every video the full teacher trained on
    fold: np.ndarray  # and its fold
    seed: int
    sha256: str

    @property
    def count(self) -> int:
        return len(self.refs)


def fold_teachers(store: Store, ref) -> FoldTeachers | None:
    """The fold teachers trained beside ``ref`` when it is the store's trained teacher (``teacher-train --oof-folds``),
    else None (given weights, random weights, or a teacher trained without folds)."""
    folder = artifacts.trained_teacher_folder(ref.teacher_name)
    if ref.store_weights != artifacts.weights_rel(folder) or not artifacts.is_complete(store, folder):
        return None
    record = artifacts.read_meta(store, folder).get("folds")
    if not record:
        return None
    video_id, fold = np.asarray(record["video_id"], np.int64), np.asarray(record["fold"], np.int64)
    if fold_digest(video_id, fold) != record["sha256"]:
        raise StoreError(f"{store.path(folder)}/meta.json: the fold assignment does not match its sha256; "
                         "re-run teacher-train --force")
    # the digests recorded at training: a fold teacher's file changed since then is refused when it is built
    refs = tuple(dataclasses.replace(ref, store_weights=artifacts.weights_rel(artifacts.fold_teacher_folder(folder, f)),
                                     weights_sha256=teacher["weights_sha256"])
                 for f, teacher in enumerate(record["teachers"]))
    return FoldTeachers(refs, video_id, fold, int(record["seed"]), record["sha256"])
