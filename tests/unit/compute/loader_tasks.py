"""Picklable loads for the process-worker tests of ClipLoader (not a test module: the tests put this folder on
``sys.path``, so spawned workers import it as ``loader_tasks``)."""

from __future__ import annotations

import os

import numpy as np
import torch

from condi_pipe.compute.clip_loader import ClipReader


class LabelledClips:
    """Clip ids -> a batch of several tensors and a plain leaf, as a training task's load returns:
    ``{"clips": uint8 clips, "ids": int64 ids, "targets": (float32, bool), "note": [ids], "pid": the reader's}``.
    Raises on ``fail_on``."""

    def __init__(self, url: str, fail_on: int | None = None) -> None:
        self.read, self.fail_on = ClipReader(url), fail_on

    def __call__(self, ids: np.ndarray) -> dict:
        if self.fail_on is not None and self.fail_on in ids:
            raise ValueError(f"clips.zarr: clip {self.fail_on} is unreadable")
        ids64 = torch.as_tensor(np.asarray(ids), dtype=torch.int64)
        return {"clips": self.read(ids), "ids": ids64, "targets": (ids64.float() / 7, ids64 % 2 == 0),
                "note": [int(i) for i in ids], "pid": os.getpid()}
