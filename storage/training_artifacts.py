"""What training stages keep in the store: trained teachers under ``trained_teachers/<name>/``, students under
``students/<run>/``. Both folders share one layout:

- ``checkpoints/last.pt``: the resumable training state after the last finished epoch (model and optimizer
  state, LR schedulers, RNG states, the epoch count, per-epoch history rows, method state). Only the latest is
  kept: a resume always continues from it, and older epochs are not needed to reproduce the run. It is deleted
  once the final weights are published.
- ``history.parquet``: one row per finished epoch (rewritten atomically after each epoch).
- ``weights.pt``: the final weights as a plain state dict (``torch.save`` of tensors only).
- ``<part>.pt``: further plain state dicts a run needs at inference (e.g. the fewer-frames ``projection.pt``).
- ``meta.json``: the model, its configuration and every hyperparameter; written last, it marks the folder
  complete.
- ``folds/<f>/``: a teacher's fold teachers (``teacher-train --oof-folds F``), each a folder of this same layout.

Every file here is read with ``torch.load(weights_only=True)``: a checkpoint holds only tensors and plain Python
containers of numbers and strings, never pickled objects.
"""

from __future__ import annotations

import io
import posixpath
from typing import Any

import pyarrow as pa

from condi_pipe.storage.errors import StoreError
from condi_pipe.storage.store import Store

TEACHERS_ROOT = "trained_teachers"
STUDENTS_ROOT = "students"
CHECKPOINT = "checkpoints/last.pt"
HISTORY = "history.parquet"
WEIGHTS = "weights.pt"
META = "meta.json"


def trained_teacher_folder(name: str) -> str:
    return posixpath.join(TEACHERS_ROOT, name)


def student_folder(run: str) -> str:
    return posixpath.join(STUDENTS_ROOT, run)


FOLDS = "folds"


def fold_teacher_folder(teacher_folder: str, fold: int) -> str:
    """Where fold teacher ``fold`` of ``teacher-train --oof-folds F`` lives: inside its full teacher's folder
    (``trained_teachers/<name>/folds/<fold>/``, same layout), so ``--force`` and the stage's checksums cover it."""
    return posixpath.join(teacher_folder, FOLDS, str(int(fold)))


def weights_rel(folder: str, part: str = "weights") -> str:
    """Store-relative path of a state dict file in ``folder`` (``weights.pt``, ``projection.pt``)."""
    return posixpath.join(folder, f"{part}.pt")


def _to_bytes(obj: Any) -> bytes:
    import torch

    buf = io.BytesIO()
    torch.save(obj, buf)
    return buf.getvalue()


def _from_bytes(data: bytes, what: str) -> Any:
    import pickle

    import torch

    try:
        return torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError) as exc:
        raise StoreError(f"{what}: not a readable checkpoint ({type(exc).__name__}: {exc})") from None


# -- checkpoints -----------------------------------------------------------------------------------------------
def write_checkpoint(store: Store, folder: str, state: dict) -> None:
    """Replace ``<folder>/checkpoints/last.pt`` atomically with ``state`` (tensors and plain containers only)."""
    store.write_bytes(posixpath.join(folder, CHECKPOINT), _to_bytes(state))


def read_checkpoint(store: Store, folder: str) -> dict | None:
    """The last checkpoint of ``folder``, or None when training has not finished an epoch yet."""
    rel = posixpath.join(folder, CHECKPOINT)
    if not store.exists(rel):
        return None
    return _from_bytes(store.read_bytes(rel), store.path(rel))


def remove_checkpoints(store: Store, folder: str) -> None:
    store.remove(folder, posixpath.dirname(CHECKPOINT))


# -- history ---------------------------------------------------------------------------------------------------
def history_schema(columns: list[str]) -> pa.Schema:
    """``epoch`` int32, every other column float64."""
    return pa.schema([(name, pa.int32() if name == "epoch" else pa.float64()) for name in columns])


def write_history(store: Store, folder: str, rows: list[dict], column_names: list[str]) -> None:
    """Rewrite ``<folder>/history.parquet`` with one row per finished epoch, exactly ``column_names``' columns."""
    schema = history_schema(column_names)
    columns = {name: [row.get(name) for row in rows] for name in schema.names}
    store.write_table(posixpath.join(folder, HISTORY), pa.Table.from_pydict(columns, schema=schema))


def has_history(store: Store, folder: str) -> bool:
    return store.exists(posixpath.join(folder, HISTORY))


def read_history(store: Store, folder: str) -> pa.Table:
    return store.read_table(posixpath.join(folder, HISTORY))


# -- final weights and metadata ----------------------------------------------------------------------------------
def write_state_dict(store: Store, folder: str, state_dict: dict, part: str = "weights") -> str:
    """Write a plain state dict (contiguous CPU tensors) as ``<folder>/<part>.pt``; returns its store-relative path."""
    rel = weights_rel(folder, part)
    store.write_bytes(rel, _to_bytes({k: v.detach().cpu().contiguous() for k, v in state_dict.items()}))
    return rel


def read_state_dict(store: Store, folder: str, part: str = "weights") -> dict:
    rel = weights_rel(folder, part)
    if not store.exists(rel):
        raise StoreError(f"{store.path(rel)}: no weights here (has the training stage finished?)")
    return _from_bytes(store.read_bytes(rel), store.path(rel))


def weights_sha256(store: Store, folder: str, part: str = "weights") -> str:
    """Hex SHA-256 of ``<folder>/<part>.pt``: recorded by the stages that use these weights."""
    import hashlib

    rel = weights_rel(folder, part)
    if not store.exists(rel):
        raise StoreError(f"{store.path(rel)}: no weights here (has the training stage finished?)")
    return hashlib.sha256(store.read_bytes(rel)).hexdigest()


def write_meta(store: Store, folder: str, meta: dict) -> None:
    """Write ``meta.json`` last: its presence marks the folder's weights complete."""
    store.write_json(posixpath.join(folder, META), meta)


def is_complete(store: Store, folder: str) -> bool:
    return store.exists(folder, META)


def read_meta(store: Store, folder: str) -> dict:
    if not is_complete(store, folder):
        raise StoreError(f"{store.path(folder)}: no finished training run here")
    return store.read_json(posixpath.join(folder, META))


def unpublish(store: Store, folder: str) -> None:
    """Remove ``meta.json`` so a folder being rewritten never looks complete."""
    store.remove(folder, META)


def read_meta_or_empty(store: Store, folder: str) -> dict:
    """``<folder>/meta.json``, or {} when the run has none (a score run whose student came from elsewhere)."""
    return store.read_json(posixpath.join(folder, META), {}) or {}
