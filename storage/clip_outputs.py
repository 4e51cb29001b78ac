"""Per-clip model outputs in the store: the teacher cache (``teacher/<name>/``) and student scores
(``scores/<run>/``) share one layout:

- ``<name>.zarr`` per array, rows aligned with ``clips.parquet`` (logits float32, features float16, ...)
- ``clips.parquet``: one row per clip, the columns the report reads (predictions, z, ranking scores)
- ``videos.parquet``: one row per video: clip count and the measured model time for its clips as one batch
- ``meta.json``: model, weights, device name, thread count, dtype

A clip-level score run also keeps its student's outputs on the validation part carved from train:
``validation_clips.parquet`` (the columns of ``clips.parquet``) and ``validation_logits.zarr``.
"""

from __future__ import annotations

import posixpath
from typing import Mapping

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from condi_pipe.storage import tables
from condi_pipe.storage.damaged_reads import guarded_parquet, read_rows
from condi_pipe.storage.errors import StoreError
from condi_pipe.storage.store import Store

TEACHER_ROOT = "teacher"
SCORES_ROOT = "scores"
CLIPS = "clips.parquet"
VIDEOS = "videos.parquet"
META = "meta.json"
ROWS_PER_CHUNK = 4096
SCORE_CLIP_COLUMNS = tuple(tables.SCORE_CLIPS_SCHEMA.names)
VALIDATION_PREFIX = "validation_"  # a score run's outputs on its student's validation part, beside the eval split's


def teacher_folder(name: str) -> str:
    return posixpath.join(TEACHER_ROOT, name)


def scores_folder(run: str) -> str:
    return posixpath.join(SCORES_ROOT, run)


def write_outputs(store: Store, folder: str, arrays: dict[str, np.ndarray], clips: pa.Table, videos: pa.Table,
                  meta: dict, other_tables: Mapping[str, pa.Table] | None = None) -> None:
    """Write a complete output folder (``other_tables``: more Parquet files by name); ``meta.json`` goes last and
    marks it complete."""
    import zarr

    store.remove(folder, META)
    for name, values in arrays.items():
        array = zarr.create_array(
            store=store.zarr_store(posixpath.join(folder, f"{name}.zarr")),
            shape=values.shape, dtype=values.dtype, overwrite=True,
            chunks=(ROWS_PER_CHUNK, *values.shape[1:]), fill_value=0,
        )
        if len(values):
            array[...] = values
    store.write_table(posixpath.join(folder, CLIPS), clips)
    store.write_table(posixpath.join(folder, VIDEOS), videos)
    for name, table in (other_tables or {}).items():
        store.write_table(posixpath.join(folder, name), table)
    store.write_json(posixpath.join(folder, META), meta)


def write_teacher_cache(store: Store, name: str, arrays: dict[str, np.ndarray], clips: Mapping[str, object],
                        videos: Mapping[str, object], meta: dict) -> None:
    """``teacher/<name>/``: ``clips`` and ``videos`` are column arrays of TEACHER_CLIPS_SCHEMA (plus optional
    ``sgs_bins``) and OUTPUT_VIDEOS_SCHEMA."""
    write_outputs(store, teacher_folder(name), arrays,
                  tables.table_from_columns(clips, tables.TEACHER_CLIPS_SCHEMA, tables.TEACHER_OPTIONAL),
                  tables.table_from_columns(videos, tables.OUTPUT_VIDEOS_SCHEMA), meta)


def write_score_run(store: Store, run: str, arrays: dict[str, np.ndarray], clips: Mapping[str, object],
                    videos: Mapping[str, object], meta: dict,
                    validation: tuple[dict[str, np.ndarray], Mapping[str, object]] | None = None) -> None:
    """``scores/<run>/``: ``clips`` and ``videos`` are column arrays of SCORE_CLIPS_SCHEMA and OUTPUT_VIDEOS_SCHEMA
    (plus ``pred`` and ``k`` for a video-level student, whose clips table is empty). ``validation``: (arrays, clip
    columns) of the student's validation part, kept beside them as ``validation_clips.parquet`` (SCORE_CLIPS_SCHEMA)
    and ``validation_<array>.zarr``."""
    others = {}
    if validation is not None:
        validation_arrays, validation_clips = validation
        arrays = {**arrays, **{VALIDATION_PREFIX + name: values for name, values in validation_arrays.items()}}
        others[VALIDATION_PREFIX + CLIPS] = tables.table_from_columns(validation_clips, tables.SCORE_CLIPS_SCHEMA)
    write_outputs(store, scores_folder(run), arrays, tables.table_from_columns(clips, tables.SCORE_CLIPS_SCHEMA),
                  tables.table_from_columns(videos, tables.OUTPUT_VIDEOS_SCHEMA, tables.SCORE_VIDEO_LEVEL), meta,
                  others)


def has_validation_scores(store: Store, folder: str) -> bool:
    """Whether the score run ``folder`` keeps its outputs on its student's validation part (runs scored before
    ``score`` kept them, and runs whose student carved none, do not)."""
    return is_complete(store, folder) and store.exists(posixpath.join(folder, VALIDATION_PREFIX + CLIPS))


def read_validation_clips(store: Store, folder: str, columns: list[str] | None = None) -> pa.Table:
    """``validation_clips.parquet`` of a score run: the validation clips' rows, as ``clips.parquet``'s."""
    _check(store, folder)
    return store.read_table(posixpath.join(folder, VALIDATION_PREFIX + CLIPS), columns=columns)


def read_validation_array(store: Store, folder: str, name: str) -> np.ndarray:
    """``validation_<name>.zarr`` of a score run, rows aligned with ``validation_clips.parquet``."""
    return read_array(store, folder, VALIDATION_PREFIX + name)


def is_complete(store: Store, folder: str) -> bool:
    return store.exists(folder, META)


def _check(store: Store, folder: str) -> None:
    if not is_complete(store, folder):
        raise StoreError(f"{store.path(folder)}: no complete outputs here (run the stage that writes them)")


def has_array(store: Store, folder: str, name: str) -> bool:
    """Whether the complete output folder ``folder`` holds ``<name>.zarr`` (a teacher cache imported from a logits
    file has no ``features``)."""
    return is_complete(store, folder) and store.exists(posixpath.join(folder, f"{name}.zarr"))


def read_meta(store: Store, folder: str) -> dict:
    _check(store, folder)
    return store.read_json(posixpath.join(folder, META))


def read_array(store: Store, folder: str, name: str) -> np.ndarray:
    import zarr

    _check(store, folder)
    return read_rows(zarr.open_array(store=store.zarr_store(posixpath.join(folder, f"{name}.zarr"), read_only=True),
                                     mode="r"))


def read_clips(store: Store, folder: str, columns: list[str] | None = None) -> pa.Table:
    _check(store, folder)
    return store.read_table(posixpath.join(folder, CLIPS), columns=columns)


def read_videos(store: Store, folder: str, columns: list[str] | None = None) -> pa.Table:
    _check(store, folder)
    return store.read_table(posixpath.join(folder, VIDEOS), columns=columns)


def output_folders(store: Store, root: str) -> tuple[list[str], list[str]]:
    """(complete, incomplete) output folder names under ``root`` (``teacher`` or ``scores``)."""
    complete, incomplete = [], []
    for name in store.listdir(root):
        if name.startswith(".") or ".tmp-" in name:
            continue
        (complete if is_complete(store, posixpath.join(root, name)) else incomplete).append(name)
    return complete, incomplete


def clip_column_names(store: Store, folder: str) -> list[str]:
    """Column names of ``<folder>/clips.parquet`` (from its footer: no data read)."""
    return _column_names(store, posixpath.join(folder, CLIPS))


def video_column_names(store: Store, folder: str) -> list[str]:
    """Column names of ``<folder>/videos.parquet`` (from its footer: no data read)."""
    return _column_names(store, posixpath.join(folder, VIDEOS))


def _column_names(store: Store, rel: str) -> list[str]:
    if not store.exists(rel):
        raise StoreError(f"{store.path(rel)}: table not found (has the stage that writes it run?)")
    return guarded_parquet(store.path(rel), lambda: store.fs.open(store.path(rel), "rb"),
                           lambda fh: list(pq.read_schema(fh).names))


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
        return read_rows(array)
    rows = np.asarray(rows, dtype=np.int64)
    if rows.size == 0:
        return np.zeros((0, *array.shape[1:]), dtype=array.dtype)
    if rows[0] < 0 or rows[-1] >= array.shape[0]:
        raise StoreError(f"{store.path(rel)}: has {array.shape[0]} rows, the table asks for row {int(rows[-1])}")
    lo, hi = int(rows[0]), int(rows[-1]) + 1
    block = read_rows(array, lo, hi)
    if hi - lo == rows.size:  # sorted and unique: contiguous
        return block
    return block[rows - lo]
