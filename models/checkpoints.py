"""Loading local weight files into condi-pipe models, without ever executing pickled code.

Accepted files (all read with ``torch.load(..., weights_only=True)``):

* a plain state dict, e.g. a torchvision video model's ``state_dict()``;
* ``{'arch': ..., 'state_dict': {...}, ...}`` as saved by 3D-ResNets (Hara et al.) and Resource-Efficient-3D-CNNs
  (Kopuklu et al.), usually with DataParallel's ``module.`` prefix on every key.

The models reuse those releases' module names, so keys map directly; a model class lists any remaining renames
in ``checkpoint_key_renames``. Keys the file may lack without error: the student's confidence head (classification
checkpoints have none), BatchNorm ``num_batches_tracked`` (older PyTorch did not save it), and the classification
head when ``reset_head=True``.
"""

from __future__ import annotations

import hashlib
import logging
import os
import pickle
from pathlib import Path

import torch
from torch import Tensor

from .base import CONFIDENCE_HEAD, ClipModel

log = logging.getLogger(__name__)

DATA_PARALLEL_PREFIX = "module."


class CheckpointError(ValueError):
    """A weight file that cannot be loaded into the model as asked."""


def load_weights(model: ClipModel, path: str | os.PathLike, *, reset_head: bool = False) -> ClipModel:
    """Load the weights in ``path`` into ``model`` (in place) and return the model.

    With ``reset_head=True`` the classification head keeps its fresh initialisation (whatever its class count in
    the file) and everything else loads; otherwise a head with a different class count is an error.
    Raises CheckpointError for files needing pickle execution, unknown layouts, missing or unexpected keys and
    shape mismatches.
    """
    path = Path(path)
    return load_state(model, _read_state_dict(path), origin=str(path), reset_head=reset_head)


def load_state(model: ClipModel, state: dict[str, Tensor], *, origin: str, reset_head: bool = False) -> ClipModel:
    """:func:`load_weights` for a state dict already in memory (``origin`` names it in errors)."""
    path = origin
    state = _strip_prefix(state, DATA_PARALLEL_PREFIX)
    state = _rename_keys(state, model.checkpoint_key_renames)
    expected = model.state_dict()

    head_prefix = model.head_name + "."
    if reset_head:
        state = {k: v for k, v in state.items() if not k.startswith(head_prefix)}
    else:
        _check_head_classes(model, state, path)

    optional = tuple(prefix + "." for prefix in (CONFIDENCE_HEAD, *model.checkpoint_optional))

    def may_be_absent(key: str) -> bool:
        return (
            key.startswith(optional)
            or key.endswith("num_batches_tracked")
            or (reset_head and key.startswith(head_prefix))
        )

    missing = [k for k in expected if k not in state and not may_be_absent(k)]
    unexpected = [k for k in state if k not in expected]
    if missing or unexpected:
        parts = []
        if missing:
            parts.append(f"missing keys {_few(missing)}")
        if unexpected:
            parts.append(f"unexpected keys {_few(unexpected)}")
        raise CheckpointError(f"{path}: does not fit {model.config.name}: {'; '.join(parts)}")
    mismatched = [
        f"{k} {tuple(v.shape)} vs model {tuple(expected[k].shape)}"
        for k, v in state.items()
        if v.shape != expected[k].shape
    ]
    if mismatched:
        raise CheckpointError(f"{path}: shape mismatch for {model.config.name}: {_few(mismatched)}")

    model.load_state_dict(state, strict=False)
    fresh = sorted({k.split(".")[0] for k in expected if k not in state and not k.endswith("num_batches_tracked")})
    if fresh:
        log.info("%s loaded into %s; freshly initialised: %s", path, model.config.name, ", ".join(fresh))
    return model


def check_checkpoint(path: str | os.PathLike | None) -> None:
    """Raise what loading ``path`` would raise (missing file, pickle needed, not a state dict), without a model:
    stages call it before they touch the store, so a bad file costs nothing already stored."""
    if path is not None:
        _read_state_dict(Path(path))


def _read_state_dict(path: Path) -> dict[str, Tensor]:
    try:
        loaded = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        raise CheckpointError(
            f"{path}: loading it needs pickle execution (it holds objects other than tensors and plain "
            f"containers), which is refused"
        ) from None
    except FileNotFoundError:
        raise
    except Exception as exc:  # torch raises assorted types for files that are not checkpoints at all
        raise CheckpointError(f"{path}: not a readable PyTorch checkpoint ({type(exc).__name__}: {exc})") from exc

    if isinstance(loaded, dict) and "state_dict" in loaded:
        loaded = loaded["state_dict"]
    if not isinstance(loaded, dict) or not loaded or not all(isinstance(v, Tensor) for v in loaded.values()):
        kind = f"keys {_few(list(loaded))}" if isinstance(loaded, dict) else type(loaded).__name__
        raise CheckpointError(f"{path}: neither a state dict nor a {{'state_dict': ...}} checkpoint ({kind})")
    return dict(loaded)


def _strip_prefix(state: dict[str, Tensor], prefix: str) -> dict[str, Tensor]:
    if all(k.startswith(prefix) for k in state):
        return {k[len(prefix) :]: v for k, v in state.items()}
    return state


def _rename_keys(state: dict[str, Tensor], renames: tuple[tuple[str, str], ...]) -> dict[str, Tensor]:
    if not renames:
        return state
    renamed = {}
    for key, value in state.items():
        for old, new in renames:
            key = key.replace(old, new)
        renamed[key] = value
    return renamed


def file_sha256(path: str | os.PathLike) -> str:
    """Hex SHA-256 of a weights file: recorded in stage configurations, so changed weights count as a change."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _check_head_classes(model: ClipModel, state: dict[str, Tensor], path) -> None:
    linear = model.classifier_linear
    weight_key = next(name for name, p in model.named_parameters() if p is linear.weight)
    if weight_key in state and state[weight_key].shape[0] != linear.out_features:
        raise CheckpointError(
            f"{path}: checkpoint head has {state[weight_key].shape[0]} classes, model {model.config.name} has "
            f"{linear.out_features}; pass reset_head=True to load everything but the head"
        )


def _few(items: list[str], limit: int = 5) -> str:
    shown = ", ".join(items[:limit])
    return shown + (f" ... ({len(items) - limit} more)" if len(items) > limit else "")
