"""What ``condi-pipe predict`` writes to its output folder (a store of its own):

- ``predictions.parquet``: one row per video predicted, in input order: its top-5 classes and probabilities, the
  clips the teacher (and the student, for K_s) classified with their start and end in seconds on the stream's
  clock, and every clip's z~ (the student's confidence; empty for methods without a student).
- ``step_seconds.parquet``: the measured seconds per video and step (decode, student, selection, teacher). Kept
  apart so that ``predictions.parquet`` is a function of the videos and the models alone: a resumed run writes
  it byte for byte as an uninterrupted one, while the clock never repeats itself.
- ``failures.parquet``: one row per video that could not be predicted, with the reason (``tables.FAILURES_SCHEMA``).
"""

from __future__ import annotations

from typing import Iterable, Mapping

import pyarrow as pa

from condi_pipe.storage.store import Store
from condi_pipe.storage.tables import FAILURES, FAILURES_SCHEMA, table_from_rows

PREDICTIONS = "predictions.parquet"
STEP_SECONDS = "step_seconds.parquet"
STEPS = ("decode", "student", "selection", "teacher")

_CLIP_LIST = pa.list_(pa.int32())
_SECONDS_LIST = pa.list_(pa.float64())

PREDICTIONS_SCHEMA = pa.schema(
    [
        ("video_index", pa.int64()),  # position in the input list
        ("path", pa.string()),
        ("clips", pa.int32()),  # N: the video's clips
        ("top1", pa.string()),
        ("top5", pa.list_(pa.string())),
        ("top5_probability", pa.list_(pa.float32())),
        ("teacher_clips", _CLIP_LIST),  # clip indices, ascending
        ("teacher_clip_start_s", _SECONDS_LIST),
        ("teacher_clip_end_s", _SECONDS_LIST),  # the end of the clip's last frame (its start plus its duration)
        ("student_clips", _CLIP_LIST),  # the K_s clips the student classified itself
        ("student_clip_start_s", _SECONDS_LIST),
        ("student_clip_end_s", _SECONDS_LIST),
        ("z_tilde", pa.list_(pa.float32())),  # per clip, in clip order
    ]
)

STEP_SECONDS_SCHEMA = pa.schema(
    [("video_index", pa.int64()), ("path", pa.string())]
    + [(f"{step}_s", pa.float64()) for step in STEPS]
    + [("total_s", pa.float64())]
)


def write_predictions(store: Store, predictions: Iterable[Mapping], step_seconds: Iterable[Mapping],
                      failures: Iterable[Mapping]) -> dict[str, int]:
    """Write the three tables (each sorted by input order already); returns their row counts."""
    tables = {
        PREDICTIONS: table_from_rows(predictions, PREDICTIONS_SCHEMA),
        STEP_SECONDS: table_from_rows(step_seconds, STEP_SECONDS_SCHEMA),
        FAILURES: table_from_rows(failures, FAILURES_SCHEMA),
    }
    for rel, table in tables.items():
        store.write_table(rel, table)
    return {"videos": tables[PREDICTIONS].num_rows, "failures": tables[FAILURES].num_rows}


def read_predictions(store: Store, columns: list[str] | None = None) -> pa.Table:
    return store.read_table(PREDICTIONS, columns)


def read_step_seconds(store: Store) -> pa.Table:
    return store.read_table(STEP_SECONDS)


def read_failures(store: Store) -> pa.Table:
    return store.read_table(FAILURES)
