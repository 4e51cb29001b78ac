"""Schemas of the store's Parquet tables and their locations.

Columns are typed explicitly so readers can select just what they need (the report reads a few columns of a
million-row table) and so two runs that computed the same rows write the same bytes.
"""

from __future__ import annotations

from typing import Iterable, Mapping

import numpy as np
import pyarrow as pa

VIDEOS = "videos.parquet"
CLIPS = "clips.parquet"
FAILURES = "failures.parquet"

VIDEOS_SCHEMA = pa.schema(
    [
        ("video_id", pa.int64()),
        ("path", pa.string()),  # relative to the source root
        ("label", pa.int32()),
        ("label_name", pa.string()),
        ("split", pa.string()),
        ("frames", pa.int32()),  # decoded frames (after --fps resampling, before padding)
        ("fps", pa.float32()),  # frame rate of the decoded frames
        ("width", pa.int32()),  # display size after rotation and pixel-aspect correction
        ("height", pa.int32()),
        ("rotation", pa.int16()),
        ("codec", pa.string()),
        ("clips", pa.int32()),
        ("pad_frames", pa.int16()),
        ("first_clip", pa.int64()),
        ("file_size", pa.int64()),
        ("sha256", pa.string()),
    ]
)

CLIPS_SCHEMA = pa.schema(
    [
        ("clip_id", pa.int64()),
        ("video_id", pa.int64()),
        ("clip_index", pa.int32()),
        ("start_frame", pa.int32()),
        ("pad_frames", pa.int16()),
    ]
)

FAILURES_SCHEMA = pa.schema(
    [
        ("path", pa.string()),
        ("stage", pa.string()),
        ("severity", pa.string()),  # "error": the input was skipped; "warning": kept, with a caveat
        ("kind", pa.string()),
        ("message", pa.string()),
    ]
)


def table_from_rows(rows: Iterable[Mapping], schema: pa.Schema) -> pa.Table:
    """Build a table with exactly ``schema``'s columns from row dicts (extra keys are an error)."""
    rows = list(rows)
    columns = {name: [row[name] for row in rows] for name in schema.names}
    return pa.Table.from_pydict(columns, schema=schema)


# Per-clip model outputs (storage/clip_outputs.py): teacher caches (teacher/<name>/) and score runs (scores/<run>/).
OUTPUT_VIDEOS_SCHEMA = pa.schema(
    [
        ("video_id", pa.int64()),
        ("split", pa.string()),
        ("clips", pa.int32()),
        ("seconds", pa.float64()),  # measured model time for the video's clips as one batch
    ]
)

TEACHER_CLIPS_SCHEMA = pa.schema(
    [
        ("clip_id", pa.int64()),
        ("video_id", pa.int64()),
        ("split", pa.string()),
        ("label", pa.int32()),
        ("pred", pa.int32()),
        ("max_prob", pa.float32()),
        ("entropy", pa.float32()),  # nats
        ("true_prob", pa.float32()),
        ("z", pa.int8()),  # 1 where the teacher's top-1 is the label (the confidence label)
        ("teacher_source", pa.string()),  # "full" or "fold-<f>": which teacher produced the row
        ("flops", pa.int64()),
    ]
)
TEACHER_OPTIONAL = {"sgs_bins": pa.int16()}  # caches made with SGS: the temporal slices B' kept per clip

SCORE_CLIPS_SCHEMA = pa.schema(
    [
        ("clip_id", pa.int64()),
        ("video_id", pa.int64()),
        ("split", pa.string()),
        ("label", pa.int32()),
        ("pred", pa.int32()),
        ("confidence", pa.float64()),  # z~ (NaN for students without a confidence head)
        ("entropy", pa.float32()),
        ("rank_score", pa.float64()),  # what the report ranks clips by (higher first)
    ]
)
SCORE_VIDEO_LEVEL = {"pred": pa.int32(), "k": pa.int32()}  # video-level students: their prediction at their k


def table_from_columns(columns: Mapping[str, object], schema: pa.Schema,
                       optional: Mapping[str, pa.DataType] | None = None) -> pa.Table:
    """Build a table with ``schema``'s columns (all required) plus any of ``optional``'s, from column arrays."""
    optional = optional or {}
    unknown = [name for name in columns if name not in schema.names and name not in optional]
    missing = [name for name in schema.names if name not in columns]
    if unknown or missing:
        raise ValueError(f"columns do not match the schema: missing {missing}, unknown {unknown}")
    fields = list(schema) + [pa.field(name, optional[name]) for name in optional if name in columns]
    return pa.Table.from_pydict({f.name: _column_array(columns[f.name], f.type) for f in fields},
                                schema=pa.schema(fields))


def _column_array(values: object, dtype: pa.DataType) -> pa.Array:
    """Numeric columns cast with NumPy's rules (as ``astype``), others (strings) converted as they are; None in a
    numeric column is a null (unknown: a teacher imported from a file has no FLOPs)."""
    if pa.types.is_integer(dtype) or pa.types.is_floating(dtype):
        array = np.asarray(values)
        if array.dtype == object:
            return pa.array(array.tolist(), dtype)
        return pa.array(array.astype(dtype.to_pandas_dtype(), copy=False), dtype)
    return pa.array(list(values) if isinstance(values, np.ndarray) else values, dtype)
