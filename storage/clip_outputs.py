"""Per-clip model outputs in the store: the teacher cache (``teacher/<name>/``) and student scores
(``scores/<run>/``) share one layout:

- ``<name>.zarr`` per array, rows aligned with ``clips.parquet`` (logits float32, features float16, ...)
- ``clips.parquet``: one row per clip, the columns the report reads (predictions, z, ranking scores)
- ``videos.parquet``: one row per video: clip count and the measured model time for its clips as one batch
- ``meta.json``: model, weights, device name, thread count, dtype
"""

from __future__ import annotations

import posixpath
from typing import Mapping

import numpy as np
import pyarrow as pa

from condi_pipe.storage import tables
from condi_pipe.storage.errors import StoreError
from condi_pipe.storage.store import Store

TEACHER_ROOT = "teacher"
SCORES_ROOT = "scores"
ROWS_PER_CHUNK = 4096
SCORE_CLIP_COLUMNS = tuple(tables.SCORE_CLIPS_SCHEMA.names)


def teacher_folder(name: str) -> str:
    return posixpath.join(TEACHER_ROOT, name)


def scores_folder(run: str) -> str:
    return posixpath.join(SCORES_ROOT, run)


def write_outputs(store: Store, folder: str, arrays: dict[str, np.ndarray], clips: pa.Table, videos: pa.Table,
                  meta: dict) -> None:
    """Write a complete output folder; ``meta.json`` goes last and marks it complete."""
    import zarr

    store.remove(folder, "meta.json")
    for name, values in arrays.items():
        array = zarr.create_array(
            store=store.zarr_store(posixpath.join(folder, f"{name}.zarr")),
            shape=values.shape, dtype=values.dtype, overwrite=True,
            chunks=(ROWS_PER_CHUNK, *values.shape[1:]), fill_value=0,
        )
        if len(values):
            array[...] = values
    store.write_table(posixpath.join(folder, "clips.parquet"), clips)
    store.write_table(posixpath.join(folder, "videos.parquet"), videos)
    store.write_json(posixpath.join(folder, "meta.json"), meta)


def write_teacher_cache(store: Store, name: str, arrays: dict[str, np.ndarray], clips: Mapping[str, object],
                        videos: Mapping[str, object], meta: dict) -> None:
    """``teacher/<name>/``: ``clips`` and ``videos`` are column arrays of TEACHER_CLIPS_SCHEMA (plus optional
    ``sgs_bins``) and OUTPUT_VIDEOS_SCHEMA."""
    write_outputs(store, teacher_folder(name), arrays,
                  tables.table_from_columns(clips, tables.TEACHER_CLIPS_SCHEMA, tables.TEACHER_OPTIONAL),
                  tables.table_from_columns(videos, tables.OUTPUT_VIDEOS_SCHEMA), meta)


def write_score_run(store: Store, run: str, arrays: dict[str, np.ndarray], clips: Mapping[str, object],
                    videos: Mapping[str, object], meta: dict) -> None:
    """``scores/<run>/``: ``clips`` and ``videos`` are column arrays of SCORE_CLIPS_SCHEMA and OUTPUT_VIDEOS_SCHEMA
    (plus ``pred`` and ``k`` for a video-level student, whose clips table is empty)."""
    write_outputs(store, scores_folder(run), arrays, tables.table_from_columns(clips, tables.SCORE_CLIPS_SCHEMA),
                  tables.table_from_columns(videos, tables.OUTPUT_VIDEOS_SCHEMA, tables.SCORE_VIDEO_LEVEL), meta)


def is_complete(store: Store, folder: str) -> bool:
    return store.exists(folder, "meta.json")


def _check(store: Store, folder: str) -> None:
    if not is_complete(store, folder):
        raise StoreError(f"{store.path(folder)}: no complete outputs here (run the stage that writes them)")


def read_meta(store: Store, folder: str) -> dict:
    _check(store, folder)
    return store.read_json(posixpath.join(folder, "meta.json"))


def read_array(store: Store, folder: str, name: str) -> np.ndarray:
    import zarr

    _check(store, folder)
    return zarr.open_array(store=store.zarr_store(posixpath.join(folder, f"{name}.zarr"), read_only=True), mode="r")[:]


def read_clips(store: Store, folder: str, columns: list[str] | None = None) -> pa.Table:
    _check(store, folder)
    return store.read_table(posixpath.join(folder, "clips.parquet"), columns=columns)


def read_videos(store: Store, folder: str, columns: list[str] | None = None) -> pa.Table:
    _check(store, folder)
    return store.read_table(posixpath.join(folder, "videos.parquet"), columns=columns)
