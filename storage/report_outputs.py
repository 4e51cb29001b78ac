"""What the report reads besides :mod:`clip_outputs`' whole-folder readers: a subset of rows of an output array,
a table's column names without its data, the finished output folders under a root, and training histories
(``students/<run>/history.parquet``)."""

from __future__ import annotations

import posixpath

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from condi_pipe.storage import clip_outputs
from condi_pipe.storage.errors import StoreError
from condi_pipe.storage.store import Store

STUDENTS_ROOT = "students"
HISTORY = "history.parquet"


def student_folder(run: str) -> str:
    return posixpath.join(STUDENTS_ROOT, run)


def output_folders(store: Store, root: str) -> tuple[list[str], list[str]]:
    """(complete, incomplete) output folder names under ``root`` (``teacher`` or ``scores``)."""
    complete, incomplete = [], []
    for name in store.listdir(root):
        if name.startswith(".") or ".tmp-" in name:
            continue
        (complete if clip_outputs.is_complete(store, posixpath.join(root, name)) else incomplete).append(name)
    return complete, incomplete


def column_names(store: Store, rel: str) -> list[str]:
    """Column names of a Parquet table from its footer (no data read)."""
    if not store.exists(rel):
        raise StoreError(f"{store.path(rel)}: table not found (has the stage that writes it run?)")
    with store.fs.open(store.path(rel), "rb") as fh:
        return list(pq.read_schema(fh).names)


def array_shape(store: Store, folder: str, name: str) -> tuple[int, ...]:
    import zarr

    rel = posixpath.join(folder, f"{name}.zarr")
    if not store.exists(rel):
        raise StoreError(f"{store.path(rel)}: array not found")
    return tuple(zarr.open_array(store=store.zarr_store(rel, read_only=True), mode="r").shape)


def array_rows(store: Store, folder: str, name: str, rows: np.ndarray | None = None) -> np.ndarray:
    """Rows ``rows`` (sorted, unique) of ``<folder>/<name>.zarr``; all rows when None.

    Reads one slice covering the requested rows (a contiguous block is returned as is), so a split that
    occupies part of the array does not cost reading all of it.
    """
    import zarr

    rel = posixpath.join(folder, f"{name}.zarr")
    if not store.exists(rel):
        raise StoreError(f"{store.path(rel)}: array not found")
    array = zarr.open_array(store=store.zarr_store(rel, read_only=True), mode="r")
    if rows is None:
        return array[...]
    rows = np.asarray(rows, dtype=np.int64)
    if rows.size == 0:
        return np.zeros((0, *array.shape[1:]), dtype=array.dtype)
    if rows[0] < 0 or rows[-1] >= array.shape[0]:
        raise StoreError(f"{store.path(rel)}: has {array.shape[0]} rows, the table asks for row {int(rows[-1])}")
    lo, hi = int(rows[0]), int(rows[-1]) + 1
    block = array[lo:hi]
    if hi - lo == rows.size:  # sorted and unique: contiguous
        return block
    return block[rows - lo]


def read_history(store: Store, run: str) -> pa.Table | None:
    """A student's per-epoch training history, or None when the run has none."""
    rel = posixpath.join(student_folder(run), HISTORY)
    if not store.exists(rel):
        return None
    return store.read_table(rel)


def read_student_meta(store: Store, run: str) -> dict:
    """``students/<run>/meta.json`` ({} when absent): which epoch distill kept, its LR schedule, ..."""
    return store.read_json(posixpath.join(student_folder(run), "meta.json"), {}) or {}
