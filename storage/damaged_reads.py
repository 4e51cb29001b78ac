"""Reads of stored Zarr arrays and Parquet tables that turn a damaged or truncated file into one line naming it.

The codecs fail on damaged bytes with their own messages, which name no file ("Zstd decompression error",
"Parquet magic bytes not found in footer", a checksum mismatch). A failed read is probed file by file: the first
file that cannot be read is named in a :class:`StoreError`; if every file reads on its own, the original error
goes on as it was (it was not damage).
"""

from __future__ import annotations

import posixpath
from typing import Callable, TypeVar

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from condi_pipe.storage.errors import StoreError

# What the Zarr codecs and pyarrow raise on damaged bytes (zstd: RuntimeError; crc32c: ValueError; Arrow: its own).
READ_ERRORS = (RuntimeError, ValueError, OSError, EOFError, pa.ArrowException)
FIX_HINT = "`condi-pipe verify --store STORE` lists the damaged files, `condi-pipe repair --store STORE` redoes them"

T = TypeVar("T")


def _reason(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {lines[0]}" if lines else type(exc).__name__


def damaged_file_error(path: str, kind: str, exc: BaseException) -> StoreError:
    return StoreError(f"{path}: damaged or truncated {kind} ({_reason(exc)}); {FIX_HINT}")


def array_location(array) -> str:
    """Where a Zarr array lives: its folder (a local path) or its URL path."""
    store = array.store_path.store
    root = str(getattr(store, "root", None) or getattr(store, "path", ""))
    return posixpath.join(root, array.store_path.path) if array.store_path.path else root


def _rows_per_file(array) -> int:
    return int(array.shards[0] if getattr(array, "shards", None) else array.chunks[0])


def _damaged_file(array, start: int, stop: int) -> tuple[str, BaseException] | None:
    """(store-relative key, error) of the first file holding rows ``start:stop`` that cannot be read alone."""
    per_file, total = _rows_per_file(array), int(array.shape[0])
    for index in range(start // per_file, (max(stop, start + 1) - 1) // per_file + 1):
        try:
            np.asarray(array[index * per_file : min((index + 1) * per_file, total)])
        except READ_ERRORS as exc:
            return array.metadata.chunk_key_encoding.encode_chunk_key((index,) + (0,) * (array.ndim - 1)), exc
    return None


def guarded_read(array, read: Callable[[], T], start: int = 0, stop: int | None = None) -> T:
    """``read()`` of rows ``start:stop`` (default: all) of the Zarr ``array``; a damaged file holding them becomes
    a StoreError naming it."""
    try:
        return read()
    except READ_ERRORS as exc:
        found = _damaged_file(array, start, int(array.shape[0]) if stop is None else stop)
        if found is None:
            raise
        key, error = found
        raise damaged_file_error(posixpath.join(array_location(array), key), "Zarr chunk", error) from exc


def read_rows(array, start: int = 0, stop: int | None = None) -> np.ndarray:
    """``array[start:stop]`` (default: all rows) as a NumPy array; a damaged file becomes a StoreError naming it."""
    stop = int(array.shape[0]) if stop is None else stop
    return guarded_read(array, lambda: np.asarray(array[start:stop]), start, stop)


def guarded_parquet(path: str, open_file: Callable, read: Callable[[object], T]) -> T:
    """``read(file)`` of the Parquet file at ``path`` (``open_file()`` opens it for reading); a file whose footer
    or data cannot be read becomes a StoreError naming it (an error of the request itself, such as an unknown
    column, goes on as it was)."""
    try:
        with open_file() as fh:
            return read(fh)
    except FileNotFoundError:  # missing, not damaged: the callers say which stage writes it
        raise
    except READ_ERRORS as exc:
        try:
            with open_file() as fh:
                pq.read_table(fh)
        except READ_ERRORS as damage:
            raise damaged_file_error(path, "Parquet file", damage) from exc
        raise
