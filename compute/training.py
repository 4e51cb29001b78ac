"""One resumable epoch loop for every training stage (``teacher-train``, ``distill``).

A stage describes *what* to train as a :class:`TrainingTask` (its modules, parameter groups with LR schedules,
how to batch an epoch, one training step, an evaluation); :func:`run_training` does the rest the same way for
all of them:

* SGD with momentum (0.9 by default), one parameter group per task group, each with its own LR schedule:
  per pass over the data (a ``LambdaLR`` stepped after every epoch: epoch ``e``, counted from 0, trains at
  ``lr * schedule(e)``), or per training sample seen (:class:`SampleDecay`: the LR is set before every
  optimizer step from the samples seen so far, so the decay does not depend on how big a pass is). The
  history's ``lr_<group>`` columns hold the LR of the epoch's *first* optimizer step.
* Model selection (``TrainOptions.keep``): with ``best``, after every evaluated epoch the task's
  ``selection_column`` (an eval column, higher is better, computed on the validation split) is compared with the
  best so far; a strictly better value snapshots the modules, so ties keep the *earlier* epoch (fewer updates:
  the early stop). At the end the modules hold the kept epoch's weights (:attr:`TrainingRun.kept_epoch`). Only
  evaluated epochs (every ``eval_every``-th and the last) are candidates. Without a finite value (no validation
  split) the last epoch is kept.
* After every epoch, one checkpoint ``<folder>/checkpoints/last.pt`` (atomic, through the store) with the
  modules, optimizer, schedulers, RNG states (torch, CUDA, NumPy, Python), the epoch count, the training samples
  seen (the position of per-sample LR schedules), the best epoch's snapshot, the history rows and the task's
  extra state; and ``<folder>/history.parquet`` rewritten with one row per finished epoch.
  Only the last checkpoint is kept: it alone is needed to continue.
* The data order of epoch ``e`` comes from ``numpy.random.default_rng([seed, e])`` and the per-step random
  choices (flips, sub-sampling inside losses) from a ``torch.Generator`` seeded with ``(seed, e)``; the global
  RNGs (dropout) are restored from the checkpoint. So a run killed at any moment (even mid-epoch: the partial
  epoch is redone) and resumed ends with the same weights, byte for byte on CPU, as an uninterrupted run with
  the same thread count. Deterministic algorithms are on while training (warn-only, so a GPU op
  without a deterministic kernel still runs).
* Models and inputs use the runtime's memory layout (``RuntimeOptions.channels_last``: NDHWC 3D convolutions,
  faster with oneDNN on CPUs), autocast to bfloat16 with ``bf16``.
* Batches are read from the store while the previous batch trains, by ``TrainOptions.loader_workers`` workers
  (``pipeline.clip_loader``: in order, a bounded number ahead, pinned for a GPU); nothing loads a whole dataset.
  One worker is a thread; several are processes reading the batches' clips (``batch_loader``), started once per
  run, while the task adds the targets in this process.

* Under ``torchrun`` (``pipeline.distributed``) every process draws the same global batches and trains on
  its part of each; gradients are summed over the processes, weighted by part size, before each step; rank 0
  alone evaluates and writes. Without torchrun none of this runs: the single-process path is unchanged.

Fault points for the resume tests: ``<stage>.step`` after every optimizer step, ``<stage>.epoch`` after every
checkpoint (see ``pipeline.faults``).
"""

from __future__ import annotations

import math
import os
import time
from contextlib import closing, contextmanager
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Iterator, NamedTuple, Protocol, Sequence

import numpy as np
import torch
from torch import nn

from condi_pipe.compute.clip_loader import ClipLoader, ClipReader, default_loader_workers
from condi_pipe.compute.distributed import SINGLE_PROCESS, TrainingProcesses
from condi_pipe.compute.sync_batchnorm import BatchNormSync, synchronised_batchnorm
from condi_pipe.compute.torch_runtime import (
    RuntimeOptions,
    autocast,
    configure_threads,
    seed_everything,
    to_runtime_layout,
)
from condi_pipe.compute.training_state import Progress, TrainingState, snapshot
from condi_pipe.methods.metrics import softmax
from condi_pipe.methods.video_prediction import video_predictions
from condi_pipe.pipeline import faults
from condi_pipe.pipeline.options import check_fields, option
from condi_pipe.pipeline.progress import progress_bar
from condi_pipe.pipeline.splits import DEFAULT_VALIDATION_FRACTION
from condi_pipe.storage import training_artifacts as artifacts
from condi_pipe.storage.manifests import VideoSet, read_clip_batch
from condi_pipe.storage.store import Store

# ------------------------------------------------------------------------------------------------ options
KEEP_CHOICES = ("best", "last")


@dataclass(frozen=True)
class TrainOptions:
    """The optimisation settings every training stage shares (recorded in the stage's configuration)."""

    epochs: int = option(low=1, help="Training epochs (passes over the training videos).")
    batch_size: int = option(low=1, help="Clips per optimizer step (all processes together).")
    lr: float = option(low=0, low_open=True, help="Base learning rate (SGD).")
    momentum: float = option(0.9, low=0, help="SGD momentum.")
    weight_decay: float = option(1e-4, low=0, help="SGD weight decay (L2).")
    seed: int = option(0, help="Seed of the initial weights, the data order and the per-step random choices.")
    eval_every: int = option(1, low=1, help="Evaluate on the validation split after every N-th epoch (and after "
                                           "the last).")
    deterministic: bool = True
    # The validation split carved from train (pipeline.splits.training_splits): models fit on the rest, every
    # eval column and every choice (the epoch kept) comes from it. 0: no carving, the last epoch is kept.
    val_fraction: float = option(DEFAULT_VALIDATION_FRACTION, low=0, high=1, high_open=True,
                                 help="Share of each class's groups carved from train for validation (every choice "
                                      "made during training; 0: none, the last epoch is kept).")
    val_seed: int = option(0, help="Seed of the validation carve.")
    keep: str = option("best", choices=KEEP_CHOICES,
                       help="Keep the evaluated epoch with the best validation selection metric (ties: the earlier), "
                            "or the last epoch.")
    # How the data is read, not what is trained: left out of the stage's configuration, so a run resumes with any
    # value.
    loader_workers: int | None = option(None, low=1, help=(
        "Workers reading training batches, in order: 1 is a thread, more are processes started once per run "
        "(default: 1 on a CPU, up to 4 with a GPU). The batches and the result do not depend on it."))
    sync_batchnorm: bool = option(False, help=(
        "Under torchrun: BatchNorm normalises with the statistics of the whole global batch rather than each "
        "process's part (one all-reduce per BatchNorm layer, forward and backward). Keeps the run close to one "
        "process when each process has few clips per step."))

    def __post_init__(self) -> None:
        check_fields(self)


#: The TrainOptions fields a user sets (CLI options, run-config keys); ``deterministic`` is the pipeline's own.
TRAIN_OPTIONS = ("epochs", "batch_size", "lr", "momentum", "weight_decay", "seed", "eval_every", "val_fraction",
                 "val_seed", "keep", "loader_workers", "sync_batchnorm")


# ------------------------------------------------------------------------------------------- LR schedules
class StepDecay:
    """Divide the LR by ``factor`` after every epoch: epoch e (from 0) trains at ``lr / factor**e``.

    ConDi's schedule (docs/method.md): factor 5 for the confidence head, 1.25 for the rest of the network, so the
    first epoch runs at the base LR and the third at ``lr / 5**2`` and ``lr / 1.25**2``.
    """

    def __init__(self, factor: float) -> None:
        if not factor >= 1:
            raise ValueError(f"an LR decay factor must be >= 1, got {factor}")
        self.factor = float(factor)

    def __call__(self, epoch: int) -> float:
        return 1.0 / self.factor**epoch

    def __repr__(self) -> str:
        return f"lr / {self.factor:g}^epoch"


class SampleDecay:
    """Divide the LR by ``factor`` per ``reference`` training samples, continuously: the optimizer step taken
    after ``s`` samples (of the whole run, every process's together) runs at ``lr / factor ** (s / reference)``.

    The per-epoch decay of ConDi without its dependence on the dataset's size: with ``reference`` the size of
    the paper's epoch in samples, a small dataset's passes decay the LR as far as the samples they hold.
    """

    per_sample = True

    def __init__(self, factor: float, reference: int) -> None:
        if not factor >= 1:
            raise ValueError(f"an LR decay factor must be >= 1, got {factor}")
        if not reference >= 1:
            raise ValueError(f"the reference epoch must be >= 1 sample, got {reference}")
        self.factor, self.reference = float(factor), int(reference)

    def __call__(self, samples: float) -> float:
        return 1.0 / self.factor ** (samples / self.reference)

    def __repr__(self) -> str:
        return f"lr / {self.factor:g}^(samples / {self.reference}), set before every optimizer step"


def is_per_sample(schedule: Callable) -> bool:
    return bool(getattr(schedule, "per_sample", False))


def _no_decay_per_pass(epoch: int) -> float:
    """The per-pass factor of a group scheduled by samples (its LR is set before every step instead)."""
    return 1.0


class CosineDecay:
    """Cosine annealing over ``epochs``: epoch e (from 0) trains at ``lr * (1 + cos(pi * e / epochs)) / 2``."""

    def __init__(self, epochs: int) -> None:
        self.epochs = int(epochs)

    def __call__(self, epoch: int) -> float:
        return 0.5 * (1.0 + math.cos(math.pi * min(epoch, self.epochs) / max(self.epochs, 1)))

    def __repr__(self) -> str:
        return f"cosine over {self.epochs} epochs"


@dataclass
class ParamGroup:
    """Parameters trained with one LR and one schedule; ``name`` labels its ``lr_<name>`` history column."""

    name: str
    params: list[nn.Parameter]
    lr: float
    schedule: Callable[[int], float]  # of the epoch (from 0), or of the samples seen for a SampleDecay
    weight_decay: float | None = None  # None: TrainOptions.weight_decay


# ------------------------------------------------------------------------------------------------- task
class StepResult(NamedTuple):
    """One training step: the loss to back-propagate, numbers to log (averaged over the epoch, weighted by
    ``samples``) and how many samples the step saw."""

    loss: torch.Tensor
    logs: dict[str, float]
    samples: int


class TrainingTask(Protocol):
    """What a stage trains. ``setup`` is called after the RNGs are seeded, so model initialisation is
    reproducible; everything else is called in the order epoch_batches -> load_batch/train_step -> evaluate.

    A batch spec is a sequence of samples (an array of clip ids or video indices): under torchrun each process
    loads and trains on a contiguous slice of it. A task may define ``after_step(logs)``: it is called after
    every optimizer step with the step's logs over the whole global batch (the same on every process). A task
    may define ``selection_column``: the eval column (higher is better) that picks the epoch kept."""

    train_columns: Sequence[str]  # keys of StepResult.logs, logged as train_<name>
    eval_columns: Sequence[str]  # keys returned by evaluate()

    def setup(self, device: torch.device) -> None: ...

    def modules(self) -> dict[str, nn.Module]: ...

    def param_groups(self) -> list[ParamGroup]: ...

    def epoch_batches(self, epoch: int, rng: np.random.Generator) -> list[Any]: ...

    def load_batch(self, spec: Any) -> Any: ...

    # Optional, for process loader workers: ``load_batch(spec) == batch_from_clips(spec, clips of clip_ids_of(spec))``
    # with the clips read from the store's clip array (``clip_ids_of(spec) -> np.ndarray``).

    def train_step(self, batch: Any, generator: torch.Generator) -> StepResult: ...

    def evaluate(self, epoch: int) -> dict[str, float]: ...

    def extra_state(self) -> dict: ...

    def load_extra_state(self, state: dict) -> None: ...


# ------------------------------------------------------------------------------------------ data helpers
def read_clips(array, clip_ids: np.ndarray) -> torch.Tensor:
    """uint8 (n, 16, 112, 112, 3) clips in the order of ``clip_ids``, as a tensor (``read_clip_batch``)."""
    return torch.from_numpy(read_clip_batch(array, clip_ids))


def sample_clips(videos: VideoSet, rng: np.random.Generator, clips_per_video: int | None) -> np.ndarray:
    """Clip ids of every video of ``videos`` (all, or a random ``clips_per_video`` of each), shuffled."""
    if clips_per_video is None:
        ids = videos.clip_ids
    else:
        chosen = []
        for first, n in zip(videos.first_clip, videos.clips):
            take = min(int(n), clips_per_video)
            chosen.append(first + np.sort(rng.choice(int(n), size=take, replace=False)))
        ids = np.concatenate(chosen) if chosen else np.zeros(0, np.int64)
    return ids[rng.permutation(len(ids))]


def model_input(model: nn.Module, clips: torch.Tensor, runtime: RuntimeOptions, device: torch.device) -> torch.Tensor:
    """uint8 clips (B, T, H, W, 3) -> the model's normalised float input on ``device``, in the runtime's layout."""
    return to_runtime_layout(model.preprocess(clips.to(device, non_blocking=True)), runtime)


def eval_batch_size(batch_size: int) -> int:
    """Evaluation runs without gradients, so it takes bigger batches (faster per clip on a CPU)."""
    return max(batch_size, 32)


def batches_of(items: np.ndarray, batch_size: int) -> list[np.ndarray]:
    return [items[i : i + batch_size] for i in range(0, len(items), batch_size)]


def batch_loader(task: TrainingTask, store: Store, workers: int, device: torch.device) -> ClipLoader:
    """The training batches' loader. One worker: a thread running ``task.load_batch``. Several: processes reading
    each batch's clips (``task.clip_ids_of``) from the store, if the task can add its targets afterwards
    (``batch_from_clips``) and the store is not in-process memory. Measured (README "Loading clips"): on shuffled
    ids two processes read 1.0-1.25x what two threads read, which share one zarr event loop, while one thread beats
    one process (no transfer)."""
    pin = device.type == "cuda"
    if workers > 1 and hasattr(task, "clip_ids_of") and not store.is_in_process_only:
        return ClipLoader(ClipReader(store.url), workers, pin_memory=pin, kind="process")
    return ClipLoader(lambda part: task.load_batch(part) if len(part) else None, workers, pin_memory=pin)


def epoch_loads(task: TrainingTask, loader: ClipLoader, parts: Sequence[Any]) -> Iterator[Any]:
    """Each part's batch (None for an empty part), in order, through ``loader`` (see ``batch_loader``)."""
    if loader.kind == "thread":
        yield from loader.map(parts)
        return
    clips = loader.map([task.clip_ids_of(part) for part in parts])
    try:
        for part, part_clips in zip(parts, clips):
            yield task.batch_from_clips(part, part_clips) if len(part) else None
    finally:
        clips.close()


def prefetched(load: Callable[[Any], Any], specs: Iterable[Any]) -> Iterator[Any]:
    """``load(spec)`` for each spec, in order, loading the next one in a thread while the caller works."""
    return ClipLoader(load, 1, depth=1).map(specs)


def derived_seed(seed: int, *parts: int) -> int:
    """A 63-bit seed from ``seed`` and ``parts`` (e.g. the epoch), independent of Python's hash seed."""
    return int(np.random.SeedSequence([seed, *parts]).generate_state(2, np.uint64)[0] >> np.uint64(1))


# ---------------------------------------------------------------------------------------------- RNG state
@contextmanager
def deterministic_algorithms(enabled: bool, device: torch.device):
    """Deterministic kernels while training (warn-only); the previous settings are restored afterwards.

    Set through the debug mode rather than ``torch.use_deterministic_algorithms``, which also sets an inductor
    option and so imports ``torch._dynamo`` (2.6 s of CPU in every training process; nothing here compiles)."""
    previous = (torch.get_deterministic_debug_mode(), torch.backends.cudnn.deterministic,
                torch.backends.cudnn.benchmark)
    if enabled:
        if device.type == "cuda":
            os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.set_deterministic_debug_mode("warn")
        torch.backends.cudnn.deterministic = True
        torch.backends.cudnn.benchmark = False
    try:
        yield
    finally:
        torch.set_deterministic_debug_mode(previous[0])
        torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = previous[1], previous[2]


# ----------------------------------------------------------------------------------------------- the loop
@dataclass
class TrainingRun:
    """What :func:`run_training` leaves behind: the trained task (its modules hold the kept epoch's weights), the
    history rows and their column names, and which epoch was kept (from 1) by which metric."""

    task: TrainingTask
    history: list[dict]
    columns: list[str]
    resumed_from: int = 0
    groups: list[str] = field(default_factory=list)
    kept_epoch: int = 0
    selection: str | None = None  # the column that chose kept_epoch; None: the last epoch was kept
    selection_value: float | None = None

    @property
    def kept(self) -> dict:
        """The history row of the kept epoch."""
        return self.history[self.kept_epoch - 1]


def history_columns(task: TrainingTask, group_names: Sequence[str]) -> list[str]:
    """epoch, then lr per group, train_* terms, eval columns, timings (storage/training_artifacts.py types them)."""
    return (["epoch"] + [f"lr_{g}" for g in group_names] + [f"train_{c}" for c in task.train_columns]
            + ["train_samples"] + list(task.eval_columns) + ["train_seconds", "eval_seconds"])


def build_optimizer(groups: list[ParamGroup], options: TrainOptions):
    optimizer = torch.optim.SGD(
        [{"params": g.params, "lr": g.lr, "name": g.name,
          "weight_decay": options.weight_decay if g.weight_decay is None else g.weight_decay} for g in groups],
        lr=options.lr, momentum=options.momentum,
    )
    per_pass = [_no_decay_per_pass if is_per_sample(g.schedule) else g.schedule for g in groups]
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, per_pass)
    return optimizer, scheduler


def _set_sample_lrs(optimizer, groups: list[ParamGroup], samples_seen: int) -> None:
    """The LR of every per-sample group for a step taken after ``samples_seen`` training samples."""
    for group, spec in zip(optimizer.param_groups, groups):
        if is_per_sample(spec.schedule):
            group["lr"] = group["initial_lr"] * spec.schedule(samples_seen)


def run_training(
    store: Store,
    folder: str,
    task: TrainingTask,
    options: TrainOptions,
    runtime: RuntimeOptions,
    *,
    stage: str,
    quiet: bool = False,
    log: Callable[[str], None] = print,
    processes: TrainingProcesses = SINGLE_PROCESS,
    on_epoch: Callable[[list[dict]], None] | None = None,
    run_name: str | None = None,
) -> TrainingRun:
    """Train ``task`` for ``options.epochs`` epochs, resuming from ``<folder>/checkpoints/last.pt`` if present.

    A non-finite training loss stops it with a FloatingPointError naming ``stage``, ``run_name`` (the run or teacher)
    and the epoch; the epochs checkpointed before it stay, nothing is published.

    ``on_epoch(history)`` (rank 0 only) is called after each epoch's checkpoint with the history rows so far, the
    epochs before a resume included (the sweep reports the validation metric to its pruner there; raising stops
    the training).

    With several ``processes`` (torchrun) every process calls this; only rank 0 logs and writes to ``store``.
    """
    if not processes.is_main:
        quiet, log = True, _silent
    configure_threads(runtime, processes.local_world_size)  # local processes share the cores
    device = processes.device(runtime)
    workers = options.loader_workers or default_loader_workers(device)
    with deterministic_algorithms(options.deterministic, device), \
            batch_loader(task, store, workers, device) as loader, \
            synchronised_batchnorm(processes, options.sync_batchnorm) as batchnorm:
        seed_everything(options.seed)
        task.setup(device)
        for module in task.modules().values():
            to_runtime_layout(module, runtime)  # in place (channels-last 3D convolutions when the runtime asks)
        batchnorm.convert(task.modules().values())  # plain BatchNorm again when training ends (same state dicts)
        groups = task.param_groups()
        names = [g.name for g in groups]
        optimizer, scheduler = build_optimizer(groups, options)
        columns = history_columns(task, names)
        modules = task.modules()
        selection = getattr(task, "selection_column", None) if options.keep == "best" else None
        state = TrainingState(store, folder, modules, optimizer, scheduler, task)
        progress = state.resume(options.epochs, processes.world_size, stage, log)
        processes.check_in_sync(modules.values(), "before training")

        for epoch in range(progress.start, options.epochs):
            row = _train_epoch(task, modules, optimizer, groups, progress.samples_seen, options, runtime, device, epoch,
                               stage, quiet, processes, loader, batchnorm, run_name=run_name)
            progress.samples_seen += int(row["train_samples"])
            scheduler.step()
            processes.average_buffers(modules.values())
            processes.check_in_sync(modules.values(), f"after epoch {epoch + 1}")
            evaluate = (epoch + 1) % options.eval_every == 0 or epoch + 1 == options.epochs
            if processes.is_main:  # the others go on to the next epoch and wait in its first reduction
                _evaluate_epoch(task, modules, row, epoch, evaluate, selection, progress)
            progress.rows.append(processes.share(row))
            if processes.is_main:
                state.save(progress, epoch + 1, processes.world_size)
                artifacts.write_history(store, folder, progress.rows, columns)
            faults.checkpoint(f"{stage}.epoch")
            log(_epoch_line(stage, progress.rows[-1], options.epochs, task.eval_columns if evaluate else ()))
            if on_epoch is not None and processes.is_main:
                on_epoch(progress.rows)
        if processes.is_main:
            artifacts.write_history(store, folder, progress.rows, columns)
        kept_epoch, value = state.keep_best(progress)  # rank 0 only holds a best: it alone evaluates and writes
    return TrainingRun(task, progress.rows, columns, progress.start, names, kept_epoch,
                       selection if progress.best is not None else None, value)


def _silent(message: str) -> None:
    """The log of every process but rank 0."""


def _evaluate_epoch(task, modules: dict[str, nn.Module], row: dict, epoch: int, evaluate: bool,
                    selection: str | None, progress: Progress) -> None:
    """Rank 0: the epoch's evaluation columns in ``row``, and a snapshot of the weights when the selection column
    beat every earlier epoch (ties keep the earlier)."""
    began = time.perf_counter()
    metrics = task.evaluate(epoch) if evaluate else {}
    row.update({c: float(metrics.get(c, math.nan)) for c in task.eval_columns})
    row["eval_seconds"] = time.perf_counter() - began if evaluate else math.nan
    value = row.get(selection, math.nan) if selection else math.nan
    if math.isfinite(value) and (progress.best is None or value > progress.best["value"]):
        progress.best = {"epoch": epoch + 1, "value": value, "modules": snapshot(modules)}


def _train_epoch(task, modules, optimizer, groups: list[ParamGroup], samples_before: int, options, runtime, device,
                 epoch, stage, quiet, processes: TrainingProcesses, loader: ClipLoader,
                 batchnorm: BatchNormSync, run_name: str | None = None) -> dict:
    rng = np.random.default_rng([options.seed, epoch])
    generator = torch.Generator().manual_seed(derived_seed(options.seed, epoch, 1))
    if processes.distributed:
        # Each rank its own dropout stream, re-derived every epoch: a resumed run needs no other rank's RNG state.
        torch.manual_seed(derived_seed(options.seed, epoch, 3, processes.rank))
    for module in modules.values():
        module.train()
    _set_sample_lrs(optimizer, groups, samples_before)
    lrs = {f"lr_{g['name']}": float(g["lr"]) for g in optimizer.param_groups}  # the epoch's first step's
    specs = task.epoch_batches(epoch, rng)
    parts = [processes.shard(spec) for spec in specs]
    params = [p for group in optimizer.param_groups for p in group["params"]]
    after_step = getattr(task, "after_step", None)
    sums = {c: 0.0 for c in task.train_columns}
    samples = 0
    rank_samples = [0.0] * processes.world_size
    began = time.perf_counter()
    # closed on any exit (an exception in a step too), so no batch is still loading after the epoch
    with progress_bar(total=len(specs), desc=f"{stage} epoch {epoch + 1}", quiet=quiet) as bar, \
            closing(epoch_loads(task, loader, parts)) as batches:
        for spec, part, batch in zip(specs, parts, batches):
            optimizer.zero_grad(set_to_none=True)
            result = None
            batchnorm.begin_step(len(part), len(spec))
            if batch is not None:  # a rank's part of a short last batch can be empty
                with autocast(runtime, device):
                    result = task.train_step(batch, generator)
                if not torch.isfinite(result.loss.detach()).all():
                    who = f"{stage} {run_name}" if run_name else stage
                    raise FloatingPointError(f"{who}: the training loss became {float(result.loss.detach())} in "
                                             f"epoch {epoch + 1} of {options.epochs} (lr {options.lr:g}); lower the "
                                             "learning rate")
                result.loss.backward()
            if processes.distributed:
                logs, step_rank_samples = processes.reduce_step(
                    params, len(part) / len(spec), result.logs if result else None, result.samples if result else 0,
                    task.train_columns)
                step_samples = sum(step_rank_samples)
                rank_samples = [a + b for a, b in zip(rank_samples, step_rank_samples)]
            else:
                logs, step_samples = result.logs, result.samples
            _set_sample_lrs(optimizer, groups, samples_before + samples)  # the samples seen before this step
            optimizer.step()
            for c in task.train_columns:
                sums[c] += float(logs[c]) * step_samples
            samples += step_samples
            if after_step is not None:
                after_step(logs)
            bar.update(1)
            faults.checkpoint(f"{stage}.step")
    row = {"epoch": epoch + 1, **lrs}
    row.update({f"train_{c}": (sums[c] / samples if samples else math.nan) for c in task.train_columns})
    row["train_samples"] = float(samples)
    row["train_seconds"] = time.perf_counter() - began
    if processes.distributed:
        row["rank_train_samples"] = rank_samples  # not a history column: kept in the checkpoint and meta.json
    return row


def _epoch_line(stage: str, row: dict, epochs: int, eval_columns: Sequence[str]) -> str:
    shown = [f"{k} {row[k]:.4g}" for k in row
             if k.startswith("train_") and k not in ("train_samples", "train_seconds") and not math.isnan(row[k])]
    shown += [f"{k} {row[k]:.4g}" for k in eval_columns if not math.isnan(row[k])]
    return f"{stage}: epoch {row['epoch']}/{epochs} ({row['train_seconds']:.0f}s): " + ", ".join(shown)


def video_class_predictions(logits: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    """(V,) class of every video for evaluation: the argmax of the mean clip softmax over all its clips
    (``methods.video_prediction``, so it is the Dense prediction the report makes); ``offsets`` (V + 1,) delimit
    the videos' rows of ``logits`` (M, C)."""
    return video_predictions(softmax(logits, axis=1), offsets)
