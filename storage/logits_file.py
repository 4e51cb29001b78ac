"""A teacher's per-clip logits handed over as a file (``condi-pipe teacher-cache --from-logits FILE``): the format,
reading it, and matching its rows to the store's clips.

One row per clip of the store (every split), in any order:

- ``video_id`` (integer): the video's id in the store (``videos.parquet`` ``video_id``);
- ``clip_index`` (integer): the clip's index within its video, from 0: clip i is frames 16i..16i+15 of the
  decoded video, the last clip padded by repeating the last frame (``clips.parquet`` ``clip_index``);
- the logits (pre-softmax scores, one per class in the store's class order): a list column ``logits`` (Parquet),
  or the columns ``logit_0`` .. ``logit_{C-1}`` (CSV, or Parquet).

A file ending ``.parquet`` (or ``.pq``) is read as Parquet, one ending ``.csv`` as CSV (comma separated, a header
line). Every problem is a :class:`LogitsFileError`, one line naming the file.
"""

from __future__ import annotations

import os
import re
from typing import NamedTuple

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pa_csv
import pyarrow.parquet as pq

from condi_pipe.storage.manifests import VideoSet

VIDEO_ID = "video_id"
CLIP_INDEX = "clip_index"
LOGITS = "logits"  # a list column
LOGIT_PREFIX = "logit_"  # logit_0 .. logit_{C-1}: one column per class
PARQUET_SUFFIXES = (".parquet", ".pq")
CSV_SUFFIXES = (".csv",)
CLIP_FRAMES = 16  # what clip_index counts in (video.decode.CLIP_LENGTH), for the messages


class LogitsFileError(ValueError):
    """The logits file cannot be used as this store's teacher cache; the message is one line naming the file."""


class ClipLogits(NamedTuple):
    """A logits file's rows as read, in the file's order."""

    video_id: np.ndarray  # int64 (R,)
    clip_index: np.ndarray  # int64 (R,)
    logits: np.ndarray  # float32 (R, C)


def _read_table(path: str) -> pa.Table:
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path}: no such logits file")
    lower = path.lower()
    try:
        if lower.endswith(PARQUET_SUFFIXES):
            return pq.read_table(path)
        if lower.endswith(CSV_SUFFIXES):
            return pa_csv.read_csv(path)
    except (pa.ArrowInvalid, OSError) as exc:
        first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise LogitsFileError(f"{path}: unreadable ({first_line})") from None
    raise LogitsFileError(f"{path}: unknown format: name a Parquet file *.parquet and a CSV file *.csv")


def _ids(path: str, table: pa.Table, name: str) -> np.ndarray:
    if name not in table.column_names:
        raise LogitsFileError(f"{path}: no column '{name}' (columns: {', '.join(table.column_names)})")
    column = table.column(name)
    if not pa.types.is_integer(column.type):
        raise LogitsFileError(f"{path}: column '{name}' must hold integers, not {column.type}")
    if column.null_count:
        raise LogitsFileError(f"{path}: column '{name}' has {column.null_count} empty values")
    return column.to_numpy().astype(np.int64)


def _logit_columns(path: str, table: pa.Table) -> np.ndarray:
    """(R, C) float64 of the file's logits, NaN where a value is empty."""
    if LOGITS in table.column_names:
        column = table.column(LOGITS)
        kind = column.type
        is_list = pa.types.is_list(kind) or pa.types.is_large_list(kind) or pa.types.is_fixed_size_list(kind)
        if not is_list or not (pa.types.is_floating(kind.value_type) or pa.types.is_integer(kind.value_type)):
            raise LogitsFileError(f"{path}: column '{LOGITS}' must be a list of numbers per row, not {column.type}")
        if column.null_count:
            raise LogitsFileError(f"{path}: column '{LOGITS}' has {column.null_count} empty rows")
        lengths = pc.list_value_length(column).to_numpy(zero_copy_only=False)
        if len(lengths) and (lengths != lengths[0]).any():
            row = int(np.argmax(lengths != lengths[0]))
            raise LogitsFileError(f"{path}: row {row} has {int(lengths[row])} logits, row 0 has {int(lengths[0])}")
        width = int(lengths[0]) if len(lengths) else 0
        values = pc.list_flatten(column).cast(pa.float64()).to_numpy(zero_copy_only=False)
        return values.reshape(len(lengths), width)
    numbered = {}
    for name in table.column_names:
        match = re.fullmatch(rf"{LOGIT_PREFIX}(\d+)", name)
        if match:
            numbered[int(match.group(1))] = name
    if not numbered:
        raise LogitsFileError(f"{path}: no logits: a list column '{LOGITS}' or columns {LOGIT_PREFIX}0 .. "
                              f"{LOGIT_PREFIX}<C-1> (columns: {', '.join(table.column_names)})")
    absent = sorted(set(range(max(numbered) + 1)) - set(numbered))
    if absent:
        raise LogitsFileError(f"{path}: logit columns must be {LOGIT_PREFIX}0 .. {LOGIT_PREFIX}{max(numbered)} "
                              f"without a gap; {LOGIT_PREFIX}{absent[0]} is missing")
    columns = []
    for index in range(len(numbered)):
        column = table.column(numbered[index])
        if not (pa.types.is_floating(column.type) or pa.types.is_integer(column.type) or pa.types.is_null(column.type)):
            raise LogitsFileError(f"{path}: column '{numbered[index]}' must hold numbers, not {column.type}")
        columns.append(column.cast(pa.float64()).to_numpy(zero_copy_only=False))
    return np.stack(columns, axis=1) if columns else np.zeros((table.num_rows, 0))


def read_logits_file(path: str | os.PathLike) -> ClipLogits:
    """The rows of the logits file ``path`` (format: this module's docstring), checked for their columns and
    types; nothing is matched to a store yet (:func:`logits_in_clip_order`)."""
    path = os.fspath(path)
    table = _read_table(path)
    video_id, clip_index = _ids(path, table, VIDEO_ID), _ids(path, table, CLIP_INDEX)
    logits = _logit_columns(path, table)  # empty values are NaN: refused with the non-finite ones
    return ClipLogits(video_id, clip_index, logits)


def logits_in_clip_order(path: str | os.PathLike, rows: ClipLogits, videos: VideoSet, num_classes: int) -> np.ndarray:
    """(clips, C) float32 logits of the store's clips in ``videos.clip_ids`` order (the teacher cache's row order),
    from the file's ``rows``; a :class:`LogitsFileError` when they are not exactly one finite row of
    ``num_classes`` logits per clip of ``videos``: a wrong number of classes, a non-finite value, a duplicated
    clip, a clip the store does not have (extra), a video whose clip indices do not count 0..N-1 (misaligned) or a
    clip without a row (missing), checked in that order."""
    path = os.fspath(path)
    logits = rows.logits
    if logits.shape[1] != num_classes:
        raise LogitsFileError(f"{path}: wrong number of classes: {logits.shape[1]} logits per clip, the store has "
                              f"{num_classes} classes")
    finite = np.isfinite(logits).all(axis=1)
    if not finite.all():
        bad = int(np.argmax(~finite))
        value = logits[bad][~np.isfinite(logits[bad])][0]
        raise LogitsFileError(f"{path}: non-finite logit ({value:g}) at video {rows.video_id[bad]} clip "
                              f"{rows.clip_index[bad]} ({int((~finite).sum())} rows have one; an empty value reads as "
                              "nan)")
    order = np.lexsort((rows.clip_index, rows.video_id))
    vid, idx = rows.video_id[order], rows.clip_index[order]
    repeated = (vid[1:] == vid[:-1]) & (idx[1:] == idx[:-1])
    if repeated.any():
        at = int(np.argmax(repeated))
        times = int(((rows.video_id == vid[at]) & (rows.clip_index == idx[at])).sum())
        raise LogitsFileError(f"{path}: duplicate clip: video {vid[at]} clip {idx[at]} has {times} rows")
    position = np.searchsorted(videos.video_id, rows.video_id)
    position = np.minimum(position, max(len(videos.video_id) - 1, 0))
    known = (videos.video_id[position] == rows.video_id) if len(videos.video_id) else np.zeros(len(order), bool)
    if not known.all():
        bad = int(np.argmax(~known))
        raise LogitsFileError(f"{path}: extra clip: video {rows.video_id[bad]} is not in the store "
                              f"({int((~known).sum())} rows are of videos the store does not have)")
    store_clips = videos.clips[position]
    rows_per_video = np.bincount(position, minlength=len(videos.video_id))
    in_range = (rows.clip_index >= 0) & (rows.clip_index < store_clips)
    if not in_range.all():
        bad = int(np.argmax(~in_range))
        v, n = int(rows.video_id[bad]), int(store_clips[bad])
        if rows_per_video[position[bad]] > n:
            raise LogitsFileError(f"{path}: extra clip: video {v} has {int(rows_per_video[position[bad]])} rows, the "
                                  f"store {n} clips (clip_index 0..{n - 1}); its clip {rows.clip_index[bad]} is not "
                                  "one of them")
        of_video = rows.clip_index[position == position[bad]]
        raise LogitsFileError(f"{path}: misaligned clip index: video {v} has clip indices {int(of_video.min())}.."
                              f"{int(of_video.max())}, the store's are 0..{n - 1} (clip i is frames {CLIP_FRAMES}i.."
                              f"{CLIP_FRAMES}i+{CLIP_FRAMES - 1}, counted from 0)")
    short = rows_per_video < videos.clips
    if short.any():
        v = int(np.argmax(short))
        have = np.zeros(int(videos.clips[v]), bool)
        have[rows.clip_index[position == v]] = True
        missing_clips = int((videos.clips - rows_per_video).sum())
        raise LogitsFileError(f"{path}: missing clip: no row for video {int(videos.video_id[v])} clip "
                              f"{int(np.argmax(~have))} ({missing_clips} of the store's {int(videos.clips.sum())} "
                              "clips have none)")
    out = np.empty((int(videos.clips.sum()), num_classes), np.float32)
    out[videos.offsets[position] + rows.clip_index] = logits
    return out


def looks_like_probabilities(logits: np.ndarray) -> bool:
    """True when every row is in [0, 1] and sums to 1: softmax outputs, not logits (worth a warning: KD targets
    and entropies computed from them would be wrong)."""
    if logits.size == 0:
        return False
    return bool(((logits >= 0) & (logits <= 1)).all() and np.allclose(logits.sum(axis=1), 1.0, atol=1e-3))
