"""``condi-pipe status``: what each stage has done on a store."""

from __future__ import annotations

from condi_pipe.storage.lock import LOCK_FILE
from condi_pipe.storage.run_state import read_run
from condi_pipe.storage.store import Store


def store_status(url: str) -> dict:
    store = Store(url)
    if not store.exists():
        raise FileNotFoundError(f"{url}: no such store")
    run = read_run(store)
    holder = store.read_json(LOCK_FILE) if store.exists(LOCK_FILE) else None
    stages = {}
    for name, record in sorted(run["stages"].items()):
        state = record.get("state", "unknown")
        if state == "running" and holder is None:
            state = "interrupted"  # nobody holds the lock: the run was killed; re-running resumes it
        stages[name] = {"state": state, "counts": record.get("counts", {}), "updated": record.get("updated")}
    return {"store": url, "format_version": run["format_version"], "locked_by": holder, "stages": stages}
