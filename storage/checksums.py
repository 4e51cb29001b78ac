"""Checksums of every file a finished stage wrote, so ``condi-pipe verify`` can name what is damaged.

``checksums/<stage key>.json`` maps each output file (store-relative) to its size and sha256. They are
written when the stage finishes, just before it is marked done.
"""

from __future__ import annotations

import hashlib
import posixpath

from condi_pipe.storage.store import Store

CHECKSUMS = "checksums"
# Work-in-progress files a stage deletes once it has finished: never part of its outputs.
TRANSIENT = ("staging/", "checkpoints/")


def _transient(rel: str) -> bool:
    return any(rel.startswith(t) or f"/{t}" in rel for t in TRANSIENT)


def _file_digest(store: Store, rel: str) -> str:
    digest = hashlib.sha256()
    with store.fs.open(store.path(rel), "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def files_under(store: Store, rel: str) -> list[str]:
    """Store-relative paths of every file at or under ``rel`` (sorted); empty when absent."""
    target = store.path(rel)
    if not store.fs.exists(target):
        return []
    if store.fs.isfile(target):
        return [rel]
    prefix = store.root.strip("/") + "/"
    relative = (p.strip("/")[len(prefix):] for p in store.fs.find(target))
    return sorted(p for p in relative if not _transient(p))


def checksum_file(key: str) -> str:
    return posixpath.join(CHECKSUMS, key.replace("/", "__") + ".json")


def record_checksums(store: Store, key: str, outputs: list[str]) -> int:
    """Record size and sha256 of every file under ``outputs``; returns how many."""
    entries = {}
    for rel in outputs:
        for path in files_under(store, rel):
            entries[path] = {"size": store.fs.size(store.path(path)), "sha256": _file_digest(store, path)}
    store.write_json(checksum_file(key), {"stage": key, "outputs": outputs, "files": entries})
    return len(entries)


def read_checksums(store: Store, key: str) -> dict | None:
    return store.read_json(checksum_file(key))


def damaged_files(store: Store, key: str) -> list[tuple[str, str]]:
    """(path, problem) for every recorded file that is missing, resized or changed, and unrecorded extras."""
    record = read_checksums(store, key)
    if record is None:
        return [(checksum_file(key), "missing checksum record")]
    problems = []
    for path, expected in sorted(record["files"].items()):
        if not store.exists(path):
            problems.append((path, "missing"))
        elif store.fs.size(store.path(path)) != expected["size"]:
            problems.append((path, f"size {store.fs.size(store.path(path))} != recorded {expected['size']}"))
        elif _file_digest(store, path) != expected["sha256"]:
            problems.append((path, "content changed (sha256 mismatch)"))
    present = {p for rel in record["outputs"] for p in files_under(store, rel)}
    for path in sorted(present - set(record["files"])):
        problems.append((path, "not written by the stage"))
    return problems
