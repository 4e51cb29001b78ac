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


def stage_array(store: Store, stage: str, key: str, array: np.ndarray, meta: dict) -> None:
    """Stage an array and its metadata; the metadata is written last and marks the item complete."""
    if array is not None:
        buf = io.BytesIO()
        np.save(buf, array, allow_pickle=False)
        store.write_bytes(_rel(stage, key, ".npy"), buf.getvalue())
    store.write_bytes(_rel(stage, key, ".json"), json.dumps(meta, sort_keys=True).encode())


def staged_meta(store: Store, stage: str, key: str) -> dict | None:
    rel = _rel(stage, key, ".json")
    return json.loads(store.read_bytes(rel)) if store.exists(rel) else None


def staged_keys(store: Store, stage: str) -> set[str]:
    return {name[: -len(".json")] for name in store.listdir(STAGING, stage) if name.endswith(".json")}


def staged_array(store: Store, stage: str, key: str) -> np.ndarray:
    return np.load(io.BytesIO(store.read_bytes(_rel(stage, key, ".npy"))), allow_pickle=False)


def clear_staging(store: Store, stage: str) -> None:
    store.remove(STAGING, stage)
    if store.exists(STAGING) and not store.listdir(STAGING):
        store.remove(STAGING)
