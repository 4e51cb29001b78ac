"""Schemas of the store's Parquet tables and their locations.

Columns are typed explicitly so readers can select just what they need (the report reads a few columns of a
million-row table) and so two runs that computed the same rows write the same bytes.
"""

from __future__ import annotations

from typing import Iterable, Mapping

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
