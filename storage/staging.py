"""Per-item staged results of a stage in progress, under ``STORE/staging/<stage>/``.

A parallel task writes its result here atomically; a resumed stage skips every item already staged. The
stage deletes its staging folder once its final outputs are in place.
"""

from __future__ import annotations

import io
import json

import numpy as np

from condi_pipe.storage.store import Store

STAGING = "staging"


def _rel(stage: str, key: str, suffix: str) -> str:
    return f"{STAGING}/{stage}/{key}{suffix}"


def stage_item(store: Store, stage: str, key: str, arrays: dict[str, np.ndarray] | None, meta: dict) -> None:
    """Stage named arrays and their metadata; the metadata is written last and marks the item complete."""
    # One plain .npy per array: no zip container, so no CRC pass over frames on write and read.
    for name, values in (arrays or {}).items():
        buf = io.BytesIO()
        np.save(buf, values, allow_pickle=False)
        store.write_bytes(_rel(stage, key, f".{name}.npy"), buf.getvalue())
    store.write_bytes(_rel(stage, key, ".json"), json.dumps({"meta": meta, "arrays": sorted(arrays or {})},
                                                            sort_keys=True).encode())


def _record(store: Store, stage: str, key: str) -> dict | None:
    rel = _rel(stage, key, ".json")
    return json.loads(store.read_bytes(rel)) if store.exists(rel) else None


def staged_meta(store: Store, stage: str, key: str) -> dict | None:
    record = _record(store, stage, key)
    return None if record is None else record["meta"]


def staged_keys(store: Store, stage: str) -> set[str]:
    return {name[: -len(".json")] for name in store.listdir(STAGING, stage) if name.endswith(".json")}


def staged_arrays(store: Store, stage: str, key: str) -> dict[str, np.ndarray]:
    names = _record(store, stage, key)["arrays"]
    return {name: np.load(io.BytesIO(store.read_bytes(_rel(stage, key, f".{name}.npy"))), allow_pickle=False)
            for name in names}


def clear_staging(store: Store, stage: str) -> None:
    store.remove(STAGING, stage)
    if store.exists(STAGING) and not store.listdir(STAGING):
        store.remove(STAGING)
