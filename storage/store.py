"""The store: one root (local path or fsspec URL) holding every artefact of a pipeline run.

Only this package knows paths and formats. Stages ask the store for tables, arrays and run state by name.
Every write that readers may see is atomic (written aside, then moved into place), so a killed stage never
leaves a half-written table that looks complete.
"""

from __future__ import annotations

import io
import json
import posixpath
import uuid
from typing import Any

import fsspec
import pyarrow as pa
import pyarrow.parquet as pq

from condi_pipe.storage.damaged_reads import guarded_parquet
from condi_pipe.storage.errors import StoreError

FORMAT_VERSION = 2  # 2: trained teachers under trained_teachers/ (storage.migrate moves format 1)


def _is_local(protocol: str | tuple[str, ...]) -> bool:
    protocols = (protocol,) if isinstance(protocol, str) else protocol
    return any(p in ("file", "local") for p in protocols)


class Store:
    """A pipeline store rooted at ``url`` (``/data/ucf``, ``file:///data/ucf``, ``memory://ucf``, ``s3://b/ucf``)."""

    def __init__(self, url: str):
        self.url = str(url)
        self.fs, root = fsspec.core.url_to_fs(self.url)
        self.root = root.rstrip("/") or "/"
        self.is_local = _is_local(self.fs.protocol)
        # Processes cannot share an in-memory filesystem, so work on such a store must stay in this process.
        self.is_in_process_only = "memory" in (
            (self.fs.protocol,) if isinstance(self.fs.protocol, str) else self.fs.protocol
        )

    def __repr__(self) -> str:
        return f"Store({self.url!r})"

    # -- paths -------------------------------------------------------------------------------------------------
    def path(self, *parts: str) -> str:
        return posixpath.join(self.root, *parts)

    def exists(self, *parts: str) -> bool:
        return self.fs.exists(self.path(*parts))

    def makedirs(self, *parts: str) -> None:
        self.fs.makedirs(self.path(*parts), exist_ok=True)

    def remove(self, *parts: str) -> None:
        """Delete a file or folder if present."""
        target = self.path(*parts)
        if self.fs.exists(target):
            self.fs.rm(target, recursive=True)

    def listdir(self, *parts: str) -> list[str]:
        """Base names under a folder; empty when it does not exist."""
        target = self.path(*parts)
        if not self.fs.exists(target):
            return []
        return sorted(posixpath.basename(p.rstrip("/")) for p in self.fs.ls(target, detail=False))

    # -- bytes -------------------------------------------------------------------------------------------------
    def write_bytes(self, rel: str, data: bytes) -> None:
        """Write ``data`` to ``rel`` atomically: readers see the old file or the whole new one."""
        final = self.path(rel)
        self.fs.makedirs(posixpath.dirname(final), exist_ok=True)
        tmp = f"{final}.tmp-{uuid.uuid4().hex}"
        with self.fs.open(tmp, "wb") as fh:
            fh.write(data)
        self.fs.mv(tmp, final)

    def read_bytes(self, rel: str) -> bytes:
        with self.fs.open(self.path(rel), "rb") as fh:
            return fh.read()

    # -- JSON --------------------------------------------------------------------------------------------------
    def write_json(self, rel: str, obj: Any) -> None:
        self.write_bytes(rel, (json.dumps(obj, indent=2, sort_keys=True) + "\n").encode())

    def read_json(self, rel: str, default: Any = None) -> Any:
        if not self.exists(rel):
            return default
        try:
            return json.loads(self.read_bytes(rel))
        except json.JSONDecodeError as exc:
            raise StoreError(f"{self.path(rel)}: not valid JSON ({exc.msg} at line {exc.lineno})") from None

    # -- tables ------------------------------------------------------------------------------------------------
    def write_table(self, rel: str, table: pa.Table) -> None:
        """Write a Parquet table atomically. Output bytes depend only on the table's content."""
        buf = io.BytesIO()
        pq.write_table(table, buf, compression="zstd", write_statistics=True)
        self.write_bytes(rel, buf.getvalue())

    def read_table(self, rel: str, columns: list[str] | None = None) -> pa.Table:
        if not self.exists(rel):
            raise StoreError(f"{self.path(rel)}: table not found (has the stage that writes it run?)")
        return guarded_parquet(self.path(rel), lambda: self.fs.open(self.path(rel), "rb"),
                               lambda fh: pq.read_table(fh, columns=columns))

    def table_rows(self, rel: str) -> int:
        """Row count from the Parquet footer, without reading the data."""
        return guarded_parquet(self.path(rel), lambda: self.fs.open(self.path(rel), "rb"),
                               lambda fh: pq.ParquetFile(fh).metadata.num_rows)

    # -- Zarr --------------------------------------------------------------------------------------------------
    def zarr_store(self, rel: str, read_only: bool = False):
        from zarr.storage import FsspecStore, LocalStore

        if self.is_local:
            return LocalStore(self.path(rel), read_only=read_only)
        return FsspecStore.from_url(posixpath.join(self.url.rstrip("/"), rel), read_only=read_only)
