"""Stage ``distill``: train a student from the teacher cache (the teacher is never run here).

Losses: the methods registered in ``methods.catalogue`` (its docstring tabulates what each trains and how its
clips are ranked), each in the paper's default configuration unless a flag says otherwise.

Per-clip losses train on every clip of the *fit* part of the train split (or ``clips_per_video`` random ones per
video and epoch), with the teacher's cached logits, its z (Eq. 1) and the video's label; no augmentation (the cached
teacher outputs are for the unflipped clips). Video-level losses take ``batch_size // k`` videos per step.

Optimisation (docs/method.md): SGD momentum 0.9, LR 0.1 from scratch; the confidence head's LR is divided by 5 per
epoch and everything else's by 1.25. ``schedule_unit`` says what an epoch is:

* ``samples`` (default): a reference epoch of ``reference_epoch`` training samples (default 9,537, one clip per
  training video of UCF-101 split 1, the paper's scale; videos for the video-level losses). The step taken after
  ``s`` samples runs at ``conf_lr / 5**(s / N)`` and ``lr / 1.25**(s / N)``, set before every optimizer step, so
  a small dataset's passes decay the LR only as far as the samples they hold (docs/method.md "Schedules by epoch").
* ``passes``: the literal reading, one epoch per pass over the data: pass e (from 0) trains at ``conf_lr / 5**e``
  and ``lr / 1.25**e``.

The history's ``lr_<group>`` columns are the LR of each epoch's first optimizer step. Every hyperparameter is part
of the stage configuration and of ``students/<run>/meta.json``.

Validation and the epoch kept: a validation part is carved from the train split (``pipeline.splits``,
``train.val_fraction`` / ``train.val_seed``, grouped and stratified); the student trains on the rest. After every
``eval_every``-th epoch it is evaluated on the validation part; ``students/<run>/history.parquet`` gets, per
epoch: the LR of each group, every loss term on train and validation (``eval_*``, ``LossTerms`` fields), student
clip accuracy, dense video accuracy, the AUROC of the run's ranking score against z and the false-positive rate of
z~ > 0.5 (video-level runs: video accuracy only; the clip metrics are NaN). With ``train.keep = "best"``
``weights.pt`` is the whole student of the evaluated epoch with the best *validation* selection metric (the
paper's early stopping of the confidence branch, Fig. 5): ``eval_auroc`` for clip-ranked losses,
``eval_video_accuracy`` for the video-level ones; ties keep the earlier epoch. The test split (the store's eval
split) chooses nothing: the kept student's test metrics are computed once, at the end, as ``meta.json``'s
``test`` figures.

Under ``torchrun`` the stage trains data-parallel (``pipeline.distributed``): the same global batches and data
order as one process, each process on its part of every batch; rank 0 alone writes. ``meta.json`` records
``world_size`` (and, with several processes, ``backend`` and ``train_samples_per_rank``).
"""

from __future__ import annotations

from typing import Callable

import numpy as np
import torch
from torch import nn

from condi_pipe.compute.distributed import TrainingProcesses, training_processes
from condi_pipe.compute.torch_runtime import autocast, device_name
from condi_pipe.compute.training import (
    ParamGroup,
    SampleDecay,
    StepDecay,
    StepResult,
    batches_of,
    derived_seed,
    eval_batch_size,
    model_input,
    prefetched,
    read_clips,
    run_training,
    sample_clips,
    video_class_predictions,
)
from condi_pipe.methods import losses as L
from condi_pipe.methods.catalogue import ClipBatch, LossContext, VideoBatch
from condi_pipe.methods.metrics import auroc, false_positive_rate, sigmoid, softmax
from condi_pipe.methods.samplers import equidistant_indices
from condi_pipe.methods.video_prediction import video_mean_probs
from condi_pipe.models import build_model, load_weights
from condi_pipe.models.checkpoints import check_checkpoint
from condi_pipe.pipeline.splits import TRAIN_SPLIT, training_splits
from condi_pipe.pipeline.stage import StageError, define_stage, stage_run

# The request lives beside its option table (stages.distill_request); importers of this module find it here too.
from condi_pipe.stages.distill_request import DistillRequest, LossOptions, default_run_name  # noqa: F401
from condi_pipe.storage import clip_outputs
from condi_pipe.storage import training_artifacts as artifacts
from condi_pipe.storage.clip_array import open_clip_array
from condi_pipe.storage.manifests import VideoSet, available_splits, class_names, eval_split, load_videos
from condi_pipe.storage.store import Store

DISTILL = define_stage(
    "distill",
    reads=("teacher-cache",),
    writes=("students/{key}",),
    summary="train a student from the teacher cache with ConDi-SR or a baseline loss",
)
TERMS = ("total", "kd", "conf", "ce", "rep")
def require_teacher_features(store: Store, teacher: str, user: str) -> None:
    """A StageError when teacher cache ``teacher`` has no features for ``user`` (a loss matching them): a cache
    imported from a logits file (teacher-cache --from-logits) holds logits only."""
    if not clip_outputs.has_array(store, clip_outputs.teacher_folder(teacher), "features"):
        raise StageError(f"{store.url}: {user} needs the teacher's features, and teacher cache '{teacher}' has none "
                         "(imported with teacher-cache --from-logits: a file carries logits only); choose a loss "
                         "that needs logits only, or cache a teacher condi-pipe runs")


class TeacherCache:
    """The cached teacher outputs the losses need, indexed by clip id."""

    def __init__(self, store: Store, teacher: str, need_features: bool) -> None:
        folder = clip_outputs.teacher_folder(teacher)
        if not clip_outputs.is_complete(store, folder):
            raise StageError(f"{store.url}: no teacher cache for '{teacher}'; run `condi-pipe teacher-cache "
                             f"--teacher {teacher}` first")
        self.meta = clip_outputs.read_meta(store, folder)
        table = clip_outputs.read_clips(store, folder, columns=["clip_id", "z"])
        clip_id = table.column("clip_id").to_numpy()
        self.row = np.full(int(clip_id.max()) + 1 if len(clip_id) else 0, -1, np.int64)
        self.row[clip_id] = np.arange(len(clip_id))
        self.z = table.column("z").to_numpy().astype(np.float32)
        self.logits = clip_outputs.read_array(store, folder, "logits").astype(np.float32)
        if need_features:
            require_teacher_features(store, teacher, "this loss")
        self.features = clip_outputs.read_array(store, folder, "features") if need_features else None

    def rows(self, clip_ids: np.ndarray) -> np.ndarray:
        ids = np.asarray(clip_ids, np.int64)
        if len(ids) and (ids.max() >= len(self.row) or (self.row[ids] < 0).any()):
            raise StageError("the teacher cache does not cover every clip of the store; re-run teacher-cache --force")
        return self.row[ids]

    def video_targets(self, videos: VideoSet) -> tuple[np.ndarray, np.ndarray]:
        """(V, D) mean teacher feature and (V, C) mean teacher softmax over all clips of each video
        (D = 0 when the features were not loaded)."""
        rows = self.rows(videos.clip_ids)
        probs = video_mean_probs(softmax(self.logits[rows], axis=1), videos.offsets)
        if self.features is None:
            return np.zeros((len(videos.video_id), 0), np.float32), probs.astype(np.float32)
        features = self.features[rows].astype(np.float32)
        mean_features = np.add.reduceat(features, videos.offsets[:-1], axis=0) / videos.clips[:, None]
        return mean_features.astype(np.float32), probs.astype(np.float32)


class DistillTask:
    """The distill :class:`~condi_pipe.compute.training.TrainingTask` for every loss."""

    train_columns = (*TERMS, "accuracy", "lam")
    eval_columns = (*(f"eval_{t}" for t in TERMS), "eval_clip_accuracy", "eval_video_accuracy", "eval_auroc",
                    "eval_fpr")

    def __init__(self, store: Store, request: DistillRequest, num_classes: int, cache: TeacherCache,
                 train: VideoSet, evaluation: VideoSet | None, test: VideoSet | None = None) -> None:
        """``train``: the videos to fit; ``evaluation``: the validation videos (the eval columns, the epoch kept);
        ``test``: the store's test videos, used only by :meth:`test_metrics` after training."""
        self.store, self.request, self.num_classes, self.cache = store, request, num_classes, cache
        self.train_videos, self.eval_videos, self.test_videos = train, evaluation, test
        self.method = request.method
        self.video_level = self.method.video_level
        # What picks the epoch kept: how well the run ranks clips (AUROC of its ranking score against z), or,
        # for runs that predict per video, validation video accuracy.
        self.selection_column = "eval_video_accuracy" if self.video_level else "eval_auroc"
        self.clips = open_clip_array(store)
        self.clip_label = np.zeros(self.clips.shape[0], np.int64)
        for videos in (train, evaluation, test):
            if videos is not None:
                self.clip_label[videos.clip_ids] = np.repeat(videos.label, videos.clips)
                cache.rows(videos.clip_ids)  # fails early if the cache misses clips
        self.budget = L.BudgetLambda(request.losses.lambda_init, request.losses.budget, request.losses.lambda_factor)
        self.projection: nn.Linear | None = None
        self.rep_scale = 1.0
        if self.video_level:
            self.targets = {split: cache.video_targets(v)
                            for split, v in (("train", train), ("eval", evaluation), ("test", test)) if v is not None}
            if self.method.uses_teacher_features:
                # ||E_T - E_S||^2 is weighted by alpha_rep / mean ||E_T||^2 over the training videos, so its size
                # does not depend on the teacher's feature scale (the logged rep term is the raw distance).
                self.rep_scale = float(max(np.mean(np.sum(self.targets["train"][0] ** 2, axis=1)), 1e-12))

    # -- model ---------------------------------------------------------------------------------------------
    def setup(self, device: torch.device) -> None:

        request = self.request
        self.device = device
        self.model = build_model(request.student, num_classes=self.num_classes, width=request.resolved_width())
        if request.weights:
            load_weights(self.model, request.weights, reset_head=request.reset_head)
        if self.method.needs_confidence_head and self.model.confidence_head is None:
            raise StageError(f"{request.loss} needs a student with a confidence head; {request.student} has none")
        if self.method.uses_teacher_features:
            teacher_dim = self.cache.features.shape[1]
            if teacher_dim != self.model.config.feature_dim:
                self.projection = nn.Linear(self.model.config.feature_dim, teacher_dim)
        self.model.to(device)
        if self.projection is not None:
            self.projection.to(device)

    def modules(self) -> dict:
        return {"model": self.model, **({"projection": self.projection} if self.projection is not None else {})}

    def param_groups(self) -> list[ParamGroup]:
        request = self.request
        head = self.model.confidence_head
        head_ids = {id(p) for p in head.parameters()} if head is not None else set()
        main = [p for p in self.model.parameters() if id(p) not in head_ids]
        if self.projection is not None:
            main += list(self.projection.parameters())
        groups = [ParamGroup("main", main, request.train.lr, self._decay(request.lr_decay))]
        if head is not None:
            groups.append(ParamGroup("confidence", list(head.parameters()), request.conf_lr or request.train.lr,
                                     self._decay(request.conf_lr_decay)))
        return groups

    def _decay(self, factor: float):
        if self.request.schedule_unit == "samples":
            return SampleDecay(factor, self.request.reference_epoch)
        return StepDecay(factor)

    # -- data ----------------------------------------------------------------------------------------------
    def video_clip_ids(self, videos: VideoSet, index: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Clip ids of the K equidistant clips of each video ``index``, and how many each video got."""
        k = self.request.losses.k
        picks = [first + equidistant_indices(int(n), k)
                 for first, n in zip(videos.first_clip[index], videos.clips[index])]
        return np.concatenate(picks), np.array([len(p) for p in picks], np.int64)

    def epoch_batches(self, epoch: int, rng: np.random.Generator) -> list[np.ndarray]:
        if self.video_level:
            per_step = max(1, self.request.train.batch_size // self.request.losses.k)
            return batches_of(rng.permutation(len(self.train_videos.video_id)), per_step)
        ids = sample_clips(self.train_videos, rng, self.request.clips_per_video)
        return batches_of(ids, self.request.train.batch_size)

    def load_batch(self, spec: np.ndarray):
        if self.video_level:  # reads its clips itself: the videos' clip ids are worked out once
            return self._video_batch(self.train_videos, spec, "train")
        return self.batch_from_clips(spec, read_clips(self.clips, spec))

    def clip_ids_of(self, spec: np.ndarray) -> np.ndarray:
        """The clips a training batch reads (a loader's processes read them; the targets are added here)."""
        return self.video_clip_ids(self.train_videos, spec)[0] if self.video_level else spec

    def batch_from_clips(self, spec: np.ndarray, clips: torch.Tensor):
        if self.video_level:
            return self._video_batch(self.train_videos, spec, "train", clips)
        rows = self.cache.rows(spec)
        return (clips, torch.from_numpy(self.cache.logits[rows]), torch.from_numpy(self.cache.z[rows]),
                torch.from_numpy(self.clip_label[spec]))

    def _video_batch(self, videos: VideoSet, index: np.ndarray, split: str, clips: torch.Tensor | None = None):
        ids, counts = self.video_clip_ids(videos, index)
        features, probs = self.targets[split]
        return (read_clips(self.clips, ids) if clips is None else clips, torch.from_numpy(counts),
                torch.from_numpy(features[index]), torch.from_numpy(probs[index]),
                torch.from_numpy(videos.label[index]))

    # -- losses --------------------------------------------------------------------------------------------
    def loss_context(self) -> LossContext:
        return LossContext(self.request.losses, self.budget, self.projection, self.rep_scale)

    def clip_loss(self, logits, confidence, teacher_logits, z, labels, generator) -> tuple[L.LossTerms, float]:
        """The run's loss on a batch of clips, and the confidence-term weight it used."""
        batch = ClipBatch(logits, confidence, teacher_logits, z, labels, generator)
        return self.method.loss(batch, self.loss_context())

    def video_loss(self, features, logits, teacher_features, teacher_probs, labels) -> tuple[L.LossTerms, float]:
        """The run's loss on a batch of videos, and the confidence-term weight it used."""
        batch = VideoBatch(features, logits, teacher_features, teacher_probs, labels)
        return self.method.loss(batch, self.loss_context())

    def video_forward(self, clips: torch.Tensor, counts: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Student video features (mean of its pooled clip features) and video logits (the head on them)."""
        out = self.model(model_input(self.model, clips, self.request.runtime, self.device))
        segment = torch.repeat_interleave(torch.arange(len(counts), device=self.device), counts.to(self.device))
        sums = torch.zeros(len(counts), out.features.shape[1], device=self.device, dtype=torch.float32)
        features = sums.index_add(0, segment, out.features.float()) / counts.to(self.device, torch.float32)[:, None]
        return features, self.model.get_submodule(self.model.head_name)(features).float()

    def train_step(self, batch, generator: torch.Generator) -> StepResult:
        if self.video_level:
            clips, counts, t_features, t_probs, labels = batch
            labels = labels.to(self.device)
            features, logits = self.video_forward(clips, counts)
            terms, lam = self.video_loss(features, logits, t_features.to(self.device), t_probs.to(self.device), labels)
        else:
            clips, t_logits, z, labels = batch
            labels = labels.to(self.device)
            out = self.model(model_input(self.model, clips, self.request.runtime, self.device))
            logits = out.logits.float()
            confidence = out.confidence.float() if out.confidence is not None else None
            terms, lam = self.clip_loss(logits, confidence, t_logits.to(self.device), z.to(self.device), labels,
                                        generator)
        logs = {name: float(getattr(terms, name).detach()) for name in TERMS}
        logs["accuracy"] = float((logits.detach().argmax(1) == labels).float().mean())
        logs["lam"] = lam
        return StepResult(terms.total, logs, int(len(labels)))

    def after_step(self, logs: dict[str, float]) -> None:
        """st-conf steers lambda by the step's mean(-log c) over the whole global batch (every process alike)."""
        if self.method.steers_lambda:
            self.budget.update(logs["conf"])

    # -- evaluation ----------------------------------------------------------------------------------------
    def predict_clips(self, videos: VideoSet) -> tuple[np.ndarray, np.ndarray | None]:
        """Student logits (M, C) and confidence logits (M,) or None for every clip of ``videos``."""
        self.model.eval()
        logits, confidence = [], []
        with torch.inference_mode(), autocast(self.request.runtime, self.device):
            loader = prefetched(lambda ids: read_clips(self.clips, ids),
                                batches_of(videos.clip_ids, eval_batch_size(self.request.train.batch_size)))
            for clips in loader:
                out = self.model(model_input(self.model, clips, self.request.runtime, self.device))
                logits.append(out.logits.float().cpu().numpy())
                if out.confidence is not None:
                    confidence.append(out.confidence.float().cpu().numpy())
        return np.concatenate(logits), (np.concatenate(confidence) if confidence else None)

    def predict_videos(self, videos: VideoSet, split: str) -> tuple[torch.Tensor, torch.Tensor]:
        """Student video features (V, D) and logits (V, C) from each video's K equidistant clips."""
        self.model.eval()
        per_step = max(1, eval_batch_size(self.request.train.batch_size) // self.request.losses.k)
        features, logits = [], []
        with torch.inference_mode(), autocast(self.request.runtime, self.device):
            for batch in prefetched(lambda ix: self._video_batch(videos, ix, split),
                                    batches_of(np.arange(len(videos.video_id)), per_step)):
                f, lg = self.video_forward(batch[0], batch[1])
                features.append(f.float().cpu())
                logits.append(lg.float().cpu())
        return torch.cat(features), torch.cat(logits)

    def evaluate(self, epoch: int) -> dict[str, float]:
        """The eval columns, on the validation videos."""
        if self.eval_videos is None:
            return {}
        return self.metrics(self.eval_videos, "eval", epoch)

    def test_metrics(self, kept_epoch: int) -> dict[str, float]:
        """The eval columns of the current (kept) weights on the test videos, named ``test_*``: reported once,
        after training; they choose nothing."""
        if self.test_videos is None:
            return {}
        metrics = self.metrics(self.test_videos, "test", self.request.train.epochs,
                               after=f"with the weights kept (epoch {kept_epoch})")
        return {"test_" + k.removeprefix("eval_"): v for k, v in metrics.items()}

    def metrics(self, videos: VideoSet, split: str, epoch: int, after: str | None = None) -> dict[str, float]:
        """Every eval column on ``videos`` (``split``: "eval" or "test", which video targets to use); ``after``
        says when, for the error if the outputs are not finite (default: after epoch ``epoch + 1``)."""
        where = f"{'validation' if split == 'eval' else split} clips {after or f'after epoch {epoch + 1}'}"
        generator = torch.Generator().manual_seed(derived_seed(self.request.train.seed, epoch, 2))
        labels = torch.from_numpy(videos.label)
        if self.video_level:
            features, logits = self.predict_videos(videos, split)
            t_features, t_probs = (torch.from_numpy(a) for a in self.targets[split])
            _check_finite(logits.numpy(), self.request.run, where)
            with torch.no_grad():
                inputs = (features, logits, t_features, t_probs, labels)
                terms, _ = self.video_loss(*(t.to(self.device) for t in inputs))
            metrics = {"eval_video_accuracy": float((logits.argmax(1) == labels).float().mean())}
        else:
            logits_np, confidence_np = self.predict_clips(videos)
            _check_finite(logits_np, self.request.run, where)
            if confidence_np is not None:
                _check_finite(confidence_np, self.request.run, where)
            rows = self.cache.rows(videos.clip_ids)
            z = self.cache.z[rows]
            clip_labels = self.clip_label[videos.clip_ids]
            confidence = torch.from_numpy(confidence_np) if confidence_np is not None else None
            with torch.no_grad():
                terms, _ = self.clip_loss(torch.from_numpy(logits_np), confidence,
                                          torch.from_numpy(self.cache.logits[rows]), torch.from_numpy(z),
                                          torch.from_numpy(clip_labels), generator)
            score = self.method.rank_scores(logits_np, confidence_np)
            video_pred = video_class_predictions(logits_np, videos.offsets)
            metrics = {
                "eval_clip_accuracy": float((logits_np.argmax(1) == clip_labels).mean()),
                "eval_video_accuracy": float((video_pred == videos.label).mean()),
                "eval_auroc": auroc(score, z.astype(np.int64)),
                "eval_fpr": (false_positive_rate(sigmoid(confidence_np), z.astype(np.int64))
                             if confidence_np is not None and self.method.ranking == "confidence"
                             else float("nan")),
            }
        metrics.update({f"eval_{t}": float(getattr(terms, t)) for t in TERMS})
        return metrics

    def extra_state(self) -> dict:
        return {"budget_lambda": self.budget.state_dict()}

    def load_extra_state(self, state: dict) -> None:
        self.budget.load_state_dict(state["budget_lambda"])


def _check_finite(values: np.ndarray, run: str, where: str) -> None:
    if not np.isfinite(values).all():
        raise FloatingPointError(f"distill {run}: the student's outputs on {where} became NaN or Inf; lower the "
                                 "learning rate")


def distill(
    store: Store,
    request: DistillRequest,
    *,
    force: bool = False,
    quiet: bool = False,
    log: Callable[[str], None] = print,
    on_epoch: Callable[[list[dict]], None] | None = None,
) -> dict:
    """Train the student of ``request`` from the teacher cache (resumable); returns the stage counts.
    ``on_epoch``: called after every epoch (``pipeline.training.run_training``; the sweep's pruning).

    Under ``torchrun`` every process calls this (``pipeline.distributed``): rank 0 runs the stage (lock, checks,
    records, every write) and the others train their part of each batch with it.
    """
    with training_processes(request.runtime) as processes:
        if not processes.is_main:
            return _distill_beside_rank_0(store, request, processes)
        decision = _Decision(processes)
        try:
            return _distill(store, request, processes, decision, force=force, quiet=quiet, log=log,
                            on_epoch=on_epoch)
        except BaseException as exc:
            decision.stop(exc)  # the other processes are still waiting to hear whether to train
            raise


class _Decision:
    """Rank 0 tells the other processes, once, whether to train, skip (already done) or stop (an error)."""

    def __init__(self, processes: TrainingProcesses) -> None:
        self.processes, self.sent = processes, False

    def send(self, what: str, detail=None) -> None:
        if not self.sent:
            self.sent = True
            self.processes.share((what, detail))

    def stop(self, exc: BaseException) -> None:
        if not self.sent and self.processes.distributed:
            self.send("stop", str(exc) or type(exc).__name__)


def _distill(store: Store, request: DistillRequest, processes: TrainingProcesses, decision: _Decision, *,
             force: bool, quiet: bool, log: Callable[[str], None],
             on_epoch: Callable[[list[dict]], None] | None = None) -> dict:
    run_name = request.run
    key = f"{DISTILL.name}/{run_name}"
    folder = artifacts.student_folder(run_name)
    if not clip_outputs.is_complete(store, clip_outputs.teacher_folder(request.teacher)):
        raise StageError(f"{store.url}: no teacher cache for '{request.teacher}'; run `condi-pipe teacher-cache "
                         f"--teacher {request.teacher}` first")
    if request.method.uses_teacher_features:  # before anything is recorded
        require_teacher_features(store, request.teacher, f"--loss {request.loss}")
    check_checkpoint(request.weights)  # before anything is recorded or --force deletes the old run
    with stage_run(store, DISTILL, request.config(), force=force, record_key=key, log=log) as run:
        if run.skip:
            counts = run.previous.get("counts", {})
            decision.send("skip", counts)
            return counts
        artifacts.unpublish(store, folder)
        classes, cache, split, splits, task = _distill_task(store, request)
        if splits.validation is None and splits.fraction > 0:
            log(f"distill {run_name}: --val-fraction {splits.fraction:g} carved no validation videos (no class of "
                "the train split has two groups): training on all of it, keeping the last epoch")
        decision.send("train")
        result = run_training(store, folder, task, request.train, request.runtime, stage=DISTILL.name,
                              quiet=quiet, log=log, processes=processes, on_epoch=on_epoch, run_name=run_name)
        last, kept = result.history[-1], result.kept
        test = {k: _finite(v) for k, v in task.test_metrics(result.kept_epoch).items()}  # the kept weights, once: choose nothing
        artifacts.write_state_dict(store, folder, task.model.state_dict())
        if task.projection is not None:
            artifacts.write_state_dict(store, folder, task.projection.state_dict(), part="projection")
        model = task.model
        meta = {
            "run": run_name, "loss": request.loss, "student": request.student, "width": request.resolved_width(),
            "num_classes": len(classes), "classes": classes, "teacher": request.teacher,
            # the stored format spells "no ranking" (video-level runs) "none"
            "teacher_weights": cache.meta.get("weights"),
            "teacher_weights_sha256": cache.meta.get("weights_sha256"),  # the report skips runs of a retrained teacher
            "ranking": request.method.ranking or "none",
            "k": request.losses.k if request.method.video_level else None,
            "normalization": model.config.normalization, "feature_dim": model.config.feature_dim,
            "projection": "projection.pt" if task.projection is not None else None,
            "rep_scale": task.rep_scale if request.method.uses_teacher_features else None,
            "config": request.config(),
            "lr_schedule": {g.name: f"{g.lr:g} then {g.schedule!r}" for g in task.param_groups()},
            "schedule_unit": request.schedule_unit,
            "reference_epoch": request.reference_epoch if request.schedule_unit == "samples" else None,
            "budget_lambda": task.budget.state_dict() if request.method.steers_lambda else None,
            "train_split": TRAIN_SPLIT, **splits.summary(),
            "test_split": split if task.test_videos is not None else None,
            "device": str(task.device), "device_name": device_name(task.device), "threads": torch.get_num_threads(),
            "world_size": processes.world_size,
            "keep": request.train.keep, "epoch_kept": result.kept_epoch,
            "selection": _selection_meta(result),
            "final": {k: _finite(v) for k, v in last.items() if k in result.columns},
            "kept": {k: _finite(v) for k, v in kept.items() if k in result.columns},
            "test": test,
        }
        if processes.distributed:
            # Training samples each process took in the last epoch (their sum is the history's train_samples).
            meta["train_samples_per_rank"] = [int(n) for n in last.get("rank_train_samples", [])]
            meta["backend"] = processes.backend
        artifacts.write_meta(store, folder, meta)
        accuracy = kept["eval_video_accuracy"] if request.method.video_level else kept["eval_clip_accuracy"]
        counts = {"epochs": request.train.epochs, "accuracy": _finite(accuracy), "auroc": _finite(kept["eval_auroc"]),
                  "epoch_kept": result.kept_epoch, "selection_metric": result.selection,
                  "selection_value": None if result.selection_value is None else _finite(result.selection_value)}
        run.done(counts, run=run_name)
        artifacts.remove_checkpoints(store, folder)
    processes.share(counts)  # the other processes return once the stage is recorded
    log(f"distill {run_name}: {counts['epochs']} epochs, kept epoch {result.kept_epoch}"
        + (f" (best {result.selection} on validation)" if result.selection else "")
        + f", validation accuracy {accuracy:.1%}, AUROC {kept['eval_auroc']:.3f}"
        + (f" ({processes.world_size} processes)" if processes.distributed else "")
        + f"; weights in {store.path(folder)}")
    return counts


def _selection_meta(result) -> dict | None:
    """Which metric chose the epoch kept, on which split, and its value (None: the last epoch was kept)."""
    if result.selection is None:
        return None
    return {"metric": result.selection, "split": "validation", "value": _finite(result.selection_value),
            "epoch": result.kept_epoch}


def _distill_task(store: Store, request: DistillRequest):
    """The stage's inputs, checked, and its :class:`DistillTask` (read-only: every process builds its own)."""
    classes = class_names(store)
    cache = TeacherCache(store, request.teacher, need_features=request.method.uses_teacher_features)
    if cache.logits.shape[1] != len(classes):
        raise StageError(f"teacher cache '{request.teacher}' has {cache.logits.shape[1]} classes, the store "
                         f"{len(classes)}")
    if TRAIN_SPLIT not in available_splits(store):
        raise StageError(f"{store.url}: no '{TRAIN_SPLIT}' split to train on")
    split = eval_split(store)  # the test split: only for the kept student's test_* figures
    test = load_videos(store, split) if split in available_splits(store) and split != TRAIN_SPLIT else None
    splits = training_splits(store, request.train.val_fraction, request.train.val_seed, TRAIN_SPLIT)
    task = DistillTask(store, request, len(classes), cache, splits.fit, splits.validation, test)
    return classes, cache, split, splits, task


def _distill_beside_rank_0(store: Store, request: DistillRequest, processes: TrainingProcesses) -> dict:
    """A process of rank > 0: train alongside rank 0 once it has taken the lock and checked the stage; never
    write to the store."""
    what, detail = processes.share(None)
    if what == "stop":
        raise StageError(f"rank {processes.rank}: stopped, rank 0 failed: {detail}")
    if what == "skip":
        return detail
    *_, task = _distill_task(store, request)
    run_training(store, artifacts.student_folder(request.run), task, request.train, request.runtime,
                 stage=DISTILL.name, quiet=True, log=lambda message: None, processes=processes, run_name=request.run)
    return processes.share(None)


def _finite(value: float) -> float | None:
    value = float(value)
    return None if value != value else round(value, 6)
