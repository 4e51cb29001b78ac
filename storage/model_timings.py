"""Side-by-side model timings (``timings/<teacher>/``, written by ``condi-pipe time-models``).

- ``timings.parquet``: one row per (model, batch): ``model`` (``teacher/<name>`` or ``scores/<run>``), ``batch``
  (clips in one forward pass), ``median_s``, ``min_s``, ``iqr_s`` (seconds over the repeats) and ``repeats``;
- ``decode.parquet``: one row per sampled eval video whose decoding was timed beside the models: ``video_id``,
  ``path`` (relative to the dataset root), ``clips`` (clips decoded) and ``seconds`` (wall time, once);
- ``meta.json``: device, threads, repeats, when, and every model with its weights digest; ``decode``: how the
  decoding was sampled and timed, with ``skipped`` (why nothing was timed, e.g. the source files are gone) or
  null. Timings written before decoding was timed have no ``decode`` entry: decode time unknown. Written last, so
  its presence marks the folder complete;
- ``flops.parquet``: one row per timed model: ``model`` (as in ``timings.parquet``), ``architecture``, ``width``,
  ``weights_sha256`` (the weights timed, as in ``meta.json``), ``flops_per_clip`` (``models.flops``: one clip,
  a multiply-add = 2 FLOPs) and ``frames`` / ``height`` / ``width_px`` (the network input it was counted at). Timings
  written before FLOPs were counted have none (:func:`read_flops` gives None); ``time-models`` adds them to such a
  folder without re-timing.
"""

from __future__ import annotations

import posixpath
from dataclasses import dataclass, field
from typing import Iterable, Mapping, Sequence

import numpy as np
import pyarrow as pa

from condi_pipe.storage.errors import StoreError
from condi_pipe.storage.store import Store

TIMINGS_ROOT = "timings"
TABLE = "timings.parquet"
META = "meta.json"
DECODE_TABLE = "decode.parquet"
FLOPS_TABLE = "flops.parquet"

SCHEMA = pa.schema([
    ("model", pa.string()),
    ("batch", pa.int32()),
    ("median_s", pa.float64()),
    ("min_s", pa.float64()),
    ("iqr_s", pa.float64()),
    ("repeats", pa.int32()),
])


DECODE_SCHEMA = pa.schema([
    ("video_id", pa.int64()),
    ("path", pa.string()),
    ("clips", pa.int64()),
    ("seconds", pa.float64()),
])


FLOPS_SCHEMA = pa.schema([
    ("model", pa.string()),
    ("architecture", pa.string()),
    ("width", pa.float64()),  # null: an architecture without a width multiplier
    ("weights_sha256", pa.string()),
    ("flops_per_clip", pa.int64()),
    ("frames", pa.int32()),
    ("height", pa.int32()),
    ("width_px", pa.int32()),
])


@dataclass(frozen=True)
class ModelFlops:
    """FLOPs of one clip through a timed model, and the network input (frames, height, width) counted."""

    model: str  # ``teacher/<name>`` or ``scores/<run>``
    architecture: str
    width: float | None
    weights_sha256: str | None
    flops_per_clip: int
    input_shape: tuple[int, int, int]


@dataclass(frozen=True)
class DecodeTimings:
    """Wall seconds of decoding sampled eval videos from their source files into clips, one per video, or why
    none were timed (``skipped``; then the arrays are empty)."""

    video_id: np.ndarray  # int64 (S,)
    path: tuple[str, ...]  # relative to the dataset root
    clips: np.ndarray  # int64 (S,): clips decoded
    seconds: np.ndarray  # float64 (S,)
    how: dict = field(default_factory=dict)  # split, sample, decode options, order of the timing
    skipped: str = ""  # why nothing was timed; "" when timed

    @classmethod
    def not_timed(cls, why: str, how: dict | None = None) -> "DecodeTimings":
        return cls(np.zeros(0, np.int64), (), np.zeros(0, np.int64), np.zeros(0), dict(how or {}), why)

    @property
    def seconds_per_clip(self) -> float | None:
        """Seconds per decoded clip over the whole sample (total seconds / total clips); None when not timed."""
        total = int(self.clips.sum())
        return float(self.seconds.sum()) / total if total and not self.skipped else None


def timings_folder(teacher: str) -> str:
    return posixpath.join(TIMINGS_ROOT, teacher)


def teacher_key(teacher: str) -> str:
    """The ``model`` value of a teacher's rows (named like its cache folder)."""
    return posixpath.join("teacher", teacher)


def run_key(run: str) -> str:
    """The ``model`` value of a score run's student (named like its scores folder)."""
    return posixpath.join("scores", run)


def write_timings(store: Store, teacher: str, rows: Iterable[Mapping], meta: dict,
                  decode: DecodeTimings | None = None, flops: Sequence[ModelFlops] | None = None) -> None:
    """Replace ``timings/<teacher>/`` with ``rows`` (dicts with SCHEMA's columns), ``meta``, ``decode`` (None:
    decoding not timed, read back as unknown) and ``flops`` (None: not counted, read back as unknown)."""
    folder = timings_folder(teacher)
    store.remove(folder, META)
    store.remove(folder, DECODE_TABLE)  # an earlier run's sample must not outlive this run's meta
    store.remove(folder, FLOPS_TABLE)  # nor its counts
    if flops is not None:
        write_flops(store, teacher, flops)
    rows = list(rows)
    table = pa.Table.from_pydict({name: [row[name] for row in rows] for name in SCHEMA.names}, schema=SCHEMA)
    store.write_table(posixpath.join(folder, TABLE), table)
    if decode is not None:
        meta = {**meta, "decode": {**decode.how, "skipped": decode.skipped or None}}
        if not decode.skipped:
            store.write_table(posixpath.join(folder, DECODE_TABLE), pa.Table.from_pydict(
                {"video_id": decode.video_id, "path": list(decode.path), "clips": decode.clips,
                 "seconds": decode.seconds}, schema=DECODE_SCHEMA))
    store.write_json(posixpath.join(folder, META), meta)


def read_timings(store: Store, teacher: str) -> tuple[pa.Table, dict] | None:
    """(table, meta) of ``timings/<teacher>/``, or None when it has not been written (or is incomplete)."""
    folder = timings_folder(teacher)
    if not store.exists(folder, META):
        return None
    meta = store.read_json(posixpath.join(folder, META))
    table = store.read_table(posixpath.join(folder, TABLE))
    missing = [name for name in SCHEMA.names if name not in table.column_names]
    if missing:
        raise StoreError(f"{store.path(folder, TABLE)}: missing column(s) {', '.join(missing)}")
    return table, meta


def read_decode_timings(store: Store, teacher: str) -> DecodeTimings | None:
    """The decode timing stored beside ``timings/<teacher>/``'s model timings; None when unknown (no timings, or
    timings written before decoding was timed)."""
    folder = timings_folder(teacher)
    if not store.exists(folder, META):
        return None
    how = store.read_json(posixpath.join(folder, META)).get("decode")
    if not isinstance(how, dict):
        return None
    how = dict(how)
    skipped = how.pop("skipped", None)
    if skipped:
        return DecodeTimings.not_timed(str(skipped), how)
    table = store.read_table(posixpath.join(folder, DECODE_TABLE))
    missing = [name for name in DECODE_SCHEMA.names if name not in table.column_names]
    if missing:
        raise StoreError(f"{store.path(folder, DECODE_TABLE)}: missing column(s) {', '.join(missing)}")
    return DecodeTimings(table.column("video_id").to_numpy().astype(np.int64), tuple(table.column("path").to_pylist()),
                         table.column("clips").to_numpy().astype(np.int64),
                         table.column("seconds").to_numpy().astype(np.float64), how)


def write_flops(store: Store, teacher: str, flops: Sequence[ModelFlops]) -> None:
    """Write ``timings/<teacher>/flops.parquet`` (replacing it): one row per model."""
    columns = {"model": [f.model for f in flops], "architecture": [f.architecture for f in flops],
               "width": [f.width for f in flops], "weights_sha256": [f.weights_sha256 for f in flops],
               "flops_per_clip": [int(f.flops_per_clip) for f in flops],
               "frames": [int(f.input_shape[0]) for f in flops], "height": [int(f.input_shape[1]) for f in flops],
               "width_px": [int(f.input_shape[2]) for f in flops]}
    store.write_table(posixpath.join(timings_folder(teacher), FLOPS_TABLE),
                      pa.Table.from_pydict(columns, schema=FLOPS_SCHEMA))


def read_flops(store: Store, teacher: str) -> dict[str, ModelFlops] | None:
    """{model: its FLOPs per clip} stored beside ``timings/<teacher>/``; None when not counted (no timings, or
    timings written before FLOPs were counted)."""
    folder = timings_folder(teacher)
    if not store.exists(folder, FLOPS_TABLE):
        return None
    table = store.read_table(posixpath.join(folder, FLOPS_TABLE))
    missing = [name for name in FLOPS_SCHEMA.names if name not in table.column_names]
    if missing:
        raise StoreError(f"{store.path(folder, FLOPS_TABLE)}: missing column(s) {', '.join(missing)}")
    return {row["model"]: ModelFlops(row["model"], row["architecture"], row["width"], row["weights_sha256"],
                                     int(row["flops_per_clip"]), (row["frames"], row["height"], row["width_px"]))
            for row in table.to_pylist()}


def curves(table: pa.Table) -> dict[str, dict[str, list]]:
    """{model: {"batch": [...], "seconds": [median, ...]}} by increasing batch size."""
    out: dict[str, dict[str, list]] = {}
    data = table.sort_by([("model", "ascending"), ("batch", "ascending")]).to_pydict()
    for model, batch, median in zip(data["model"], data["batch"], data["median_s"]):
        curve = out.setdefault(model, {"batch": [], "seconds": []})
        curve["batch"].append(int(batch))
        curve["seconds"].append(float(median))
    return out
