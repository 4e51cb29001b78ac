"""Side-by-side model timings (``timings/<teacher>/``, written by ``condi-pipe time-models``).

- ``timings.parquet``: one row per (model, batch): ``model`` (``teacher/<name>`` or ``scores/<run>``), ``batch``
  (clips in one forward pass), ``median_s``, ``min_s``, ``iqr_s`` (seconds over the repeats) and ``repeats``;
- ``meta.json``: device, threads, repeats, when, and every model with its weights digest; written last, so its
  presence marks the folder complete.
"""

from __future__ import annotations

import posixpath
from typing import Iterable, Mapping

import pyarrow as pa

from condi_pipe.storage.errors import StoreError
from condi_pipe.storage.store import Store

TIMINGS_ROOT = "timings"
TABLE = "timings.parquet"
META = "meta.json"

SCHEMA = pa.schema([
    ("model", pa.string()),
    ("batch", pa.int32()),
    ("median_s", pa.float64()),
    ("min_s", pa.float64()),
    ("iqr_s", pa.float64()),
    ("repeats", pa.int32()),
])


def timings_folder(teacher: str) -> str:
    return posixpath.join(TIMINGS_ROOT, teacher)


def teacher_key(teacher: str) -> str:
    """The ``model`` value of a teacher's rows (named like its cache folder)."""
    return posixpath.join("teacher", teacher)


def run_key(run: str) -> str:
    """The ``model`` value of a score run's student (named like its scores folder)."""
    return posixpath.join("scores", run)


def write_timings(store: Store, teacher: str, rows: Iterable[Mapping], meta: dict) -> None:
    """Replace ``timings/<teacher>/`` with ``rows`` (dicts with SCHEMA's columns) and ``meta``."""
    folder = timings_folder(teacher)
    store.remove(folder, META)
    rows = list(rows)
    table = pa.Table.from_pydict({name: [row[name] for row in rows] for name in SCHEMA.names}, schema=SCHEMA)
    store.write_table(posixpath.join(folder, TABLE), table)
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


def curves(table: pa.Table) -> dict[str, dict[str, list]]:
    """{model: {"batch": [...], "seconds": [median, ...]}} by increasing batch size."""
    out: dict[str, dict[str, list]] = {}
    data = table.sort_by([("model", "ascending"), ("batch", "ascending")]).to_pydict()
    for model, batch, median in zip(data["model"], data["batch"], data["median_s"]):
        curve = out.setdefault(model, {"batch": [], "seconds": []})
        curve["batch"].append(int(batch))
        curve["seconds"].append(float(median))
    return out
