"""Recorded runtime choices: which memory layout and dtype a model ran fastest in on a machine, written by
``pipeline.runtime_choice`` and looked up by the identity it was timed for (model, batch, bf16 and layout modes,
machine), so a model is re-timed only on another machine, thread count or torch version.

Two places hold them, as ``<digest>.json`` files of ``{"identity": ..., "choice": ...}`` (the digest is the
SHA-256 of the identity's canonical JSON):

- the store's ``runtime/`` folder: no stage owns it (``--force`` keeps it), a choice is a fact about the machine;
- this machine's cache, ``$CONDI_PIPE_RUNTIME_CACHE`` (``off`` disables it), else
  ``$XDG_CACHE_HOME/condi-pipe/runtime``, else ``~/.cache/condi-pipe/runtime``: every store made on the machine
  then computes a model in one runtime. Its first writer wins, so processes that timed at once agree. It also
  remembers other facts about a model on this machine under identities of their own (a model's FLOP table:
  ``pipeline.clip_inference.model_flop_table``), in the same ``{"identity", "choice"}`` files.
"""

from __future__ import annotations

import hashlib
import json
import os
import posixpath
from pathlib import Path

from condi_pipe.storage.store import Store

RUNTIME_ROOT = "runtime"
MACHINE_CACHE_ENV = "CONDI_PIPE_RUNTIME_CACHE"


def _file_name(identity: dict) -> str:
    return hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:24] + ".json"


def _rel(identity: dict) -> str:
    return posixpath.join(RUNTIME_ROOT, _file_name(identity))


def _choice_of(record, identity: dict) -> dict | None:
    if not isinstance(record, dict) or record.get("identity") != json.loads(json.dumps(identity)):
        return None
    return record.get("choice")


def read_choice(store: Store, identity: dict) -> dict | None:
    """The choice recorded for exactly ``identity``, or None."""
    return _choice_of(store.read_json(_rel(identity)), identity)


def write_choice(store: Store, identity: dict, choice: dict) -> None:
    store.write_json(_rel(identity), {"identity": identity, "choice": choice})


def machine_cache_dir() -> Path | None:
    """This machine's cache folder of choices, or None when ``$CONDI_PIPE_RUNTIME_CACHE`` is ``off``."""
    configured = os.environ.get(MACHINE_CACHE_ENV, "").strip()
    if configured.lower() == "off":
        return None
    if configured:
        return Path(configured).expanduser()
    cache_home = os.environ.get("XDG_CACHE_HOME", "").strip() or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(cache_home) / "condi-pipe" / "runtime"


def read_machine_record(identity: dict) -> dict | None:
    """The choice (or other record) this machine's cache holds for exactly ``identity``, or None (no cache, no
    file, or unreadable: a damaged file is as good as none, the choice is timed again)."""
    folder = machine_cache_dir()
    if folder is None:
        return None
    try:
        return _choice_of(json.loads((folder / _file_name(identity)).read_text()), identity)
    except (OSError, ValueError):
        return None


def record_machine_record(identity: dict, choice: dict) -> tuple[dict, str | None]:
    """Record ``choice`` (or another record) for ``identity`` in this machine's cache unless another process
    recorded one first. Returns the record to use (the first writer's) and, when the cache could not be written,
    why."""
    folder = machine_cache_dir()
    if folder is None:
        return choice, None
    target = folder / _file_name(identity)
    temporary = folder / f".{target.name}.{os.getpid()}.tmp"
    try:
        folder.mkdir(parents=True, exist_ok=True)
        temporary.write_text(json.dumps({"identity": identity, "choice": choice}, indent=2, sort_keys=True) + "\n")
        try:
            os.link(temporary, target)  # atomic, and fails when a choice is already there
        except FileExistsError:
            first = read_machine_record(identity)
            if first is not None:
                return first, None
            os.replace(temporary, target)  # a damaged file: ours replaces it
        return choice, None
    except OSError as exc:
        return choice, f"could not record the runtime choice in {folder} ({exc})"
    finally:
        temporary.unlink(missing_ok=True)
