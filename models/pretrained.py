"""Weights shipped inside the package, and how to name them.

``teacher-cache --weights pretrained`` (and ``weights = "pretrained"`` in a run config) loads the shipped
checkpoint of the named teacher instead of a file path. Each checkpoint has a model card beside it
(``<file>.json``: the data it was trained on, epochs, validation accuracy, the command that reproduces it);
``condi-pipe pretrain-teacher`` (``pipeline.pretrain``) is that command.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

PRETRAINED = "pretrained"  # the word that stands for "the shipped weights" where a checkpoint path is expected
WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"

# teacher architecture -> shipped checkpoint file (in WEIGHTS_DIR)
SHIPPED_WEIGHTS = {"resnet10_3d_motion": "resnet10_3d_motion-embedded.pt"}


def pretrained_weights_path(model: str) -> Path:
    """The shipped checkpoint of ``model``; a one-line error when none ships or the file is missing."""
    if model not in SHIPPED_WEIGHTS:
        raise ValueError(f"no pretrained weights ship for {model!r} (they do for: {', '.join(SHIPPED_WEIGHTS)})")
    path = WEIGHTS_DIR / SHIPPED_WEIGHTS[model]
    if not path.is_file():
        raise FileNotFoundError(f"{path}: the pretrained weights of {model} are missing from this installation; "
                                "make them with `condi-pipe pretrain-teacher`")
    return path


def model_card(model: str) -> dict:
    """The model card of ``model``'s shipped weights (``<weights>.json``)."""
    return json.loads(pretrained_weights_path(model).with_suffix(".json").read_text())


def is_shipped(weights: str | os.PathLike | None) -> bool:
    """True when ``weights`` is one of the checkpoints shipped with the package."""
    if not weights:
        return False
    path = Path(weights).resolve()
    return path.parent == WEIGHTS_DIR and path.name in SHIPPED_WEIGHTS.values()


def resolve_weights(model: str, weights: str | os.PathLike | None) -> str | None:
    """``weights`` as a file path: ``"pretrained"`` becomes ``model``'s shipped checkpoint, anything else is
    returned as given (None: no weights)."""
    if weights is None or str(weights) != PRETRAINED:
        return None if weights is None else str(weights)
    return str(pretrained_weights_path(model))
