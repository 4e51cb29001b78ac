"""Where a sweep's study lives and how it is read back: an Optuna study in a real database.

``sweeps/<name>/study.db`` (SQLite) inside a local store by default, or any SQLAlchemy URL (PostgreSQL for several
machines); ``sweeps/<name>/sweep.json`` records which database and study, so ``report`` finds it;
``sweeps/<name>/best.toml`` is the winning run config. Only this module and ``stages.sweep`` touch Optuna.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Any

from condi_pipe.storage.errors import StoreError
from condi_pipe.storage.store import Store

SWEEPS = "sweeps"
RECORD = "sweep.json"
BEST_CONFIG = "best.toml"


def sweep_folder(name: str) -> str:
    return f"{SWEEPS}/{name}"


def default_storage_url(store: Store, name: str) -> str:
    """``sqlite:///<store>/sweeps/<name>/study.db``; a store on object storage needs a database URL of its own."""
    if not store.is_local:
        raise StoreError(f"{store.url}: a SQLite study needs a local store; give [sweep] storage = a database URL "
                         "(e.g. postgresql://host/db)")
    store.makedirs(sweep_folder(name))
    return f"sqlite:///{store.path(sweep_folder(name), 'study.db')}"


def shown_url(url: str) -> str:
    """``url`` without its password (what ``sweep.json`` records)."""
    from sqlalchemy.engine import make_url

    return make_url(url).render_as_string(hide_password=True)


def open_storage(url: str, attempts: int = 5):
    """An Optuna RDB storage on ``url``. Several processes may create the same new database at once; the loser of
    that race retries."""
    import optuna
    import sqlalchemy.exc

    engine = {"connect_args": {"timeout": 60}} if url.startswith("sqlite") else {}
    for attempt in range(attempts):
        try:
            return optuna.storages.RDBStorage(url, engine_kwargs=engine)
        except (sqlalchemy.exc.OperationalError, sqlalchemy.exc.IntegrityError):  # tables or version row: the other won
            if attempt + 1 == attempts:
                raise
            time.sleep(0.5 + attempt)


def write_record(store: Store, name: str, record: dict) -> None:
    store.write_json(f"{sweep_folder(name)}/{RECORD}", record)


def write_best_config(store: Store, name: str, text: str) -> str:
    rel = f"{sweep_folder(name)}/{BEST_CONFIG}"
    store.write_bytes(rel, text.encode())
    return store.path(rel)


@dataclass
class TrialRow:
    """One trial as the report shows it."""

    number: int
    state: str  # COMPLETE, PRUNED, FAIL, RUNNING, WAITING
    params: dict[str, Any]
    value: float | None  # the kept student's validation metric (pruned: the last reported one)
    epochs: int  # epochs reported to the pruner
    best_epoch_value: float | None  # the best per-epoch validation metric reported
    run: str | None
    curve: list[tuple[int, float]] = field(default_factory=list)  # (epoch, metric)


@dataclass
class SweepView:
    name: str
    metric: str
    direction: str
    trials: list[TrialRow]
    best: int | None  # the best COMPLETE trial's number (ties: the lowest number)


def best_trial_number(trials, direction: str) -> int | None:
    """The best finished-to-the-end trial (``number``, ``value``, ``state`` attributes); ties keep the lowest
    number."""
    complete = [t for t in trials if str(t.state).endswith("COMPLETE") and t.value is not None
                and math.isfinite(t.value)]
    if not complete:
        return None
    sign = -1.0 if direction == "maximize" else 1.0
    return min(complete, key=lambda t: (sign * t.value, t.number)).number


def read_sweeps(store: Store) -> list[SweepView]:
    """Every sweep recorded in ``store`` (``sweeps/*/sweep.json``), its trials read from its database."""
    import optuna

    views = []
    names = sorted(store.listdir(SWEEPS)) if store.exists(SWEEPS) else []
    for name in names:
        record = store.read_json(f"{sweep_folder(name)}/{RECORD}")
        if not record:
            continue
        url = record.get("storage") or default_storage_url(store, name)
        if "***" in url:
            raise StoreError(f"{store.path(sweep_folder(name), RECORD)}: its database URL needs a password; read "
                             "the study with optuna directly")
        study = optuna.load_study(study_name=record["study"], storage=open_storage(url))
        rows = []
        for t in study.get_trials(deepcopy=False):
            curve = sorted((int(e), float(v)) for e, v in t.intermediate_values.items())
            finite = [v for _, v in curve if math.isfinite(v)]
            best = (max if record["direction"] == "maximize" else min)(finite) if finite else None
            rows.append(TrialRow(t.number, t.state.name, dict(t.params), t.value, len(curve), best,
                                 t.user_attrs.get("run"), curve))
        views.append(SweepView(name, record["metric"], record["direction"], rows,
                               best_trial_number(rows, record["direction"])))
    return views
