"""Recorded runtime choices (``runtime/<digest>.json``): which memory layout and dtype a model ran fastest in on a
machine, written by ``pipeline.runtime_choice`` and looked up by the identity it was timed for (model, batch,
bf16 mode, machine), so a store re-times a model only on another machine, thread count or torch version.

Each file holds ``{"identity": ..., "choice": ...}``; the digest is the SHA-256 of the identity's canonical JSON.
No stage owns the folder (``--force`` keeps it): a choice is a fact about the machine, not a stage output.
"""

from __future__ import annotations

import hashlib
import json
import posixpath

from condi_pipe.storage.store import Store

RUNTIME_ROOT = "runtime"


def _rel(identity: dict) -> str:
    digest = hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:24]
    return posixpath.join(RUNTIME_ROOT, f"{digest}.json")


def read_choice(store: Store, identity: dict) -> dict | None:
    """The choice recorded for exactly ``identity``, or None."""
    record = store.read_json(_rel(identity))
    if not isinstance(record, dict) or record.get("identity") != json.loads(json.dumps(identity)):
        return None
    return record.get("choice")


def write_choice(store: Store, identity: dict, choice: dict) -> None:
    store.write_json(_rel(identity), {"identity": identity, "choice": choice})
