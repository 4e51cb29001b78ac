"""Moving a store written by an older condi-pipe to the current format (``condi-pipe migrate --store PATH``).

Format 2 renamed the trained teachers' folder ``teachers/`` to ``trained_teachers/`` (beside it, ``teacher/``
holds the teacher cache and the two names were one letter apart). Migrating renames the folder, rewrites the
store-relative paths that name it inside the store's JSON files (run records, checksum records, meta files), updates
the checksum records of the files it rewrote, and stamps the new version last: a migration killed half-way is
finished by running it again.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from condi_pipe.storage.checksums import CHECKSUMS, files_under
from condi_pipe.storage.run_state import RUN_FILE
from condi_pipe.storage.store import FORMAT_VERSION, Store
from condi_pipe.storage.training_artifacts import TEACHERS_ROOT

FORMAT_1_TEACHERS_ROOT = "teachers"


def store_format(store: Store) -> int | None:
    """The store's format version as recorded in run.json (None: no run.json, a store nothing wrote yet)."""
    run = store.read_json(RUN_FILE, default=None)
    return run.get("format_version") if isinstance(run, dict) else None


def _renamed(value: Any) -> Any:
    old = FORMAT_1_TEACHERS_ROOT + "/"
    if isinstance(value, str):
        return TEACHERS_ROOT + "/" + value[len(old):] if value.startswith(old) else value
    if isinstance(value, list):
        return [_renamed(v) for v in value]
    if isinstance(value, dict):
        return {_renamed(k): _renamed(v) for k, v in value.items()}
    return value


def migrate_store(store: Store) -> list[str]:
    """Bring ``store`` to :data:`FORMAT_VERSION`; returns what was done, one line each (empty: already current)."""
    version = store_format(store)
    if version is None or version == FORMAT_VERSION:
        return []
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise ValueError(f"{store.path(RUN_FILE)}: store format {version!r} is not one this condi-pipe migrates")
    done = []
    if store.exists(FORMAT_1_TEACHERS_ROOT):
        store.fs.mv(store.path(FORMAT_1_TEACHERS_ROOT), store.path(TEACHERS_ROOT), recursive=True)
        done.append(f"moved {FORMAT_1_TEACHERS_ROOT}/ to {TEACHERS_ROOT}/")
    # The new bytes of every JSON file naming the old folder, their checksum records updated before the files are
    # written: a rerun after a kill finds each file either still old (rewritten now) or new with its record right.
    rewritten = {}
    for rel in files_under(store, ""):
        if not rel.endswith(".json") or rel == RUN_FILE or rel.startswith(CHECKSUMS + "/"):
            continue
        original = json.loads(store.read_bytes(rel))
        if _renamed(original) != original:
            rewritten[rel] = (json.dumps(_renamed(original), indent=2, sort_keys=True) + "\n").encode()
    for rel in files_under(store, CHECKSUMS):
        record = _renamed(store.read_json(rel))
        for path, data in rewritten.items():
            if path in record.get("files", {}):
                record["files"][path] = {"size": len(data), "sha256": hashlib.sha256(data).hexdigest()}
        store.write_json(rel, record)
    for rel, data in rewritten.items():
        store.write_bytes(rel, data)
    if rewritten:
        done.append(f"rewrote the paths in {len(rewritten)} JSON file(s): {', '.join(sorted(rewritten))}")
    run = _renamed(store.read_json(RUN_FILE))
    run["format_version"] = FORMAT_VERSION
    store.write_json(RUN_FILE, run)
    done.append(f"format {version} -> {FORMAT_VERSION}")
    return done
