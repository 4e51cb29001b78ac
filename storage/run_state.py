"""``run.json``: the store's format version, software versions, and each stage's configuration and state.

A stage is ``running`` while it works and ``done`` once all its outputs are in place; a stage found
``running`` with no lock holder was killed and resumes from its staged work.
"""

from __future__ import annotations

import platform
import time
from typing import Any

from condi_pipe.storage.errors import StoreError
from condi_pipe.storage.store import FORMAT_VERSION, Store

RUN_FILE = "run.json"


class StoreFormatError(StoreError):
    """The store was written by a newer condi-pipe."""


def software_versions() -> dict[str, str]:
    import importlib.metadata as md

    versions = {"python": platform.python_version()}
    for dist in ("condi-pipe", "torch", "torchvision", "zarr", "pyarrow", "dask", "numpy"):
        try:
            versions[dist] = md.version(dist)
        except md.PackageNotFoundError:
            pass
    return versions


def utc_now() -> str:
    """The current time as run.json writes it: ISO 8601, UTC, whole seconds (``2024-05-01T12:00:00Z``)."""
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def read_run(store: Store) -> dict[str, Any]:
    run = store.read_json(RUN_FILE, default=None)
    if run is None:
        return {"format_version": FORMAT_VERSION, "stages": {}}
    if not isinstance(run, dict):
        raise StoreError(f"{store.path(RUN_FILE)}: not a condi-pipe run file (not a JSON object)")
    version = run.get("format_version")
    if isinstance(version, int) and version < FORMAT_VERSION:
        raise StoreFormatError(
            f"{store.path(RUN_FILE)}: store format version {version} is older than this condi-pipe's "
            f"({FORMAT_VERSION}); run `condi-pipe migrate --store {store.url}` to bring it up to date"
        )
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise StoreFormatError(
            f"{store.path(RUN_FILE)}: store format version {version!r} is newer than this condi-pipe "
            f"understands ({FORMAT_VERSION}); upgrade condi-pipe"
        )
    if not isinstance(run.get("stages"), dict):
        raise StoreError(f"{store.path(RUN_FILE)}: not a condi-pipe run file (no stage records)")
    return run


def stage_record(store: Store, stage: str) -> dict[str, Any]:
    return read_run(store)["stages"].get(stage, {})


def set_stage(store: Store, stage: str, **fields: Any) -> dict[str, Any]:
    """Merge ``fields`` into the stage's record and write run.json atomically."""
    run = read_run(store)
    record = dict(run["stages"].get(stage, {}))
    record.update(fields)
    record["updated"] = utc_now()
    run["stages"][stage] = record
    run["format_version"] = FORMAT_VERSION
    run["versions"] = software_versions()
    store.write_json(RUN_FILE, run)
    return record


def clear_stage(store: Store, stage: str) -> None:
    run = read_run(store)
    if stage in run["stages"]:
        del run["stages"][stage]
        store.write_json(RUN_FILE, run)
