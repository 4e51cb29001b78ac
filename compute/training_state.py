"""The resumable state of a training run: what ``checkpoints/last.pt`` holds after every epoch (weights, optimizer
and schedule, every RNG, the history, the best epoch so far), how a run resumes from it, and the kept epoch.

Everything in it is tensors and plain containers, so it loads with ``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import torch
from torch import nn

from condi_pipe.storage import training_artifacts as artifacts
from condi_pipe.storage.store import Store

CHECKPOINT_FORMAT = 1


def rng_state() -> dict:
    """The global RNG states as tensors and plain containers (loadable with weights_only=True)."""
    name, keys, pos, has_gauss, cached = np.random.get_state()
    version, internal, gauss = random.getstate()
    state = {
        "torch": torch.get_rng_state(),
        "numpy": {"name": name, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                  "has_gauss": int(has_gauss), "cached_gaussian": float(cached)},
        "python": {"version": version, "internal": list(internal), "gauss": gauss},
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    np_state = state["numpy"]
    np.random.set_state((np_state["name"], np_state["keys"].numpy().astype(np.uint32), np_state["pos"],
                         np_state["has_gauss"], np_state["cached_gaussian"]))
    py = state["python"]
    random.setstate((py["version"], tuple(py["internal"]), py["gauss"]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def snapshot(modules: dict[str, nn.Module]) -> dict:
    """A CPU copy of every module's state (the live tensors go on training)."""
    return {name: {k: v.detach().to("cpu", copy=True) for k, v in module.state_dict().items()}
            for name, module in modules.items()}


@dataclass
class Progress:
    """Where a run stands: the history rows, the epoch it resumed after, the training samples of every finished
    epoch (where per-sample LR schedules stand) and the best evaluated epoch so far ({"epoch", "value",
    "modules"})."""

    rows: list[dict] = field(default_factory=list)
    start: int = 0
    samples_seen: int = 0
    best: dict | None = None


@dataclass
class TrainingState:
    """The parts of a run its checkpoint saves and restores."""

    store: Store
    folder: str
    modules: dict[str, nn.Module]
    optimizer: torch.optim.Optimizer
    scheduler: object
    task: object

    def resume(self, epochs: int, world_size: int, stage: str, log: Callable[[str], None]) -> Progress:
        """The progress of ``<folder>/checkpoints/last.pt`` with every part restored from it, or a fresh start."""
        checkpoint = artifacts.read_checkpoint(self.store, self.folder)
        if checkpoint is None:
            return Progress()
        if checkpoint.get("format") != CHECKPOINT_FORMAT:
            raise ValueError(f"{self.store.path(self.folder)}: checkpoint format {checkpoint.get('format')} is not "
                             f"{CHECKPOINT_FORMAT}; re-run with --force")
        for name, module in self.modules.items():
            module.load_state_dict(checkpoint["modules"][name])
        self.optimizer.load_state_dict(checkpoint["optimizer"])
        self.scheduler.load_state_dict(checkpoint["schedulers"][0])
        self.task.load_extra_state(checkpoint["extra"])
        set_rng_state(checkpoint["rng"])
        rows = list(checkpoint["history"])
        start = int(checkpoint["epoch"])
        seen = int(checkpoint.get("samples_seen", sum(int(r["train_samples"]) for r in rows)))
        if start < epochs:
            log(f"{stage}: resuming after epoch {start} of {epochs}")
            saved_by = int(checkpoint.get("world_size", 1))
            if saved_by != world_size:
                log(f"{stage}: note: the checkpoint was written by a run with {saved_by} process(es), this one "
                    f"has {world_size}: same global batches and data order, but the weights will differ slightly "
                    "from an uninterrupted run")
        return Progress(rows, start, seen, checkpoint.get("best"))

    def save(self, progress: Progress, epoch: int, world_size: int) -> None:
        artifacts.write_checkpoint(self.store, self.folder, {
            "format": CHECKPOINT_FORMAT,
            "epoch": epoch,
            "world_size": world_size,
            "modules": {name: module.state_dict() for name, module in self.modules.items()},
            "optimizer": self.optimizer.state_dict(),
            "schedulers": [self.scheduler.state_dict()],
            "rng": rng_state(),
            "extra": self.task.extra_state(),
            "history": progress.rows,
            "samples_seen": progress.samples_seen,
            "best": progress.best,
        })

    def keep_best(self, progress: Progress) -> tuple[int, float | None]:
        """Load the best epoch's weights (when an epoch was selected) and return (kept epoch, its value)."""
        if progress.best is None:
            return len(progress.rows), None
        for name, module in self.modules.items():
            module.load_state_dict(progress.best["modules"][name])
        return int(progress.best["epoch"]), float(progress.best["value"])
