"""Stages as named steps from stored inputs to stored outputs, with their state kept in ``run.json``.

A stage declares which earlier stages it reads; that is checked before any work starts. A finished stage
re-run with the same configuration is a no-op that says so; a different configuration needs ``--force``.
"""

from __future__ import annotations

import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator

from condi_pipe.storage.checksums import record_checksums
from condi_pipe.storage.errors import StoreError
from condi_pipe.storage.lock import store_lock
from condi_pipe.storage.run_state import RUN_FILE, read_run, set_stage, utc_now
from condi_pipe.storage.store import Store


class StageError(RuntimeError):
    """A stage cannot run: a missing input, a conflicting configuration, or a failure under --strict."""


@dataclass(frozen=True)
class StageSpec:
    name: str
    reads: tuple[str, ...]  # stages whose outputs this one needs
    writes: tuple[str, ...]  # store paths it owns (deleted by --force)
    summary: str
    # stages whose outputs it uses when they exist (teacher-cache: a trained teacher, unless given weights): not
    # checked, but a pipeline runs them first
    uses: tuple[str, ...] = ()


STAGES: dict[str, StageSpec] = {}


def define_stage(name: str, reads: tuple[str, ...], writes: tuple[str, ...], summary: str,
                 uses: tuple[str, ...] = ()) -> StageSpec:
    spec = StageSpec(name, reads, writes, summary, uses)
    STAGES[name] = spec
    return spec


@dataclass(frozen=True)
class PipelineStep:
    """One run of a stage in a pipeline: stage ``stage`` under record key ``key`` (``distill`` of one run, the
    teacher-cache of one teacher), done by ``run``. ``after``: ids of steps it needs beyond what its stage declares
    (the SGS teacher's training starts from the plain teacher's)."""

    stage: str
    key: str
    run: Callable[[], Any]
    after: tuple[str, ...] = ()

    @property
    def id(self) -> str:
        return f"{self.stage}/{self.key}"


def step_order(steps: list[PipelineStep]) -> list[PipelineStep]:
    """``steps`` in an order that runs each after the steps it needs, derived from the stages' ``reads`` and
    ``uses``: of each such stage, its step under the same key if there is one (score of a run needs distill of
    that run), else all its steps (distill needs every teacher cache); plus ``after``. Depth first from the steps
    nothing needs, so one chain finishes before the next begins (a student is scored before the next one trains:
    a kill in between loses one student's work, not all of it). ValueError on a cycle."""
    by_id = {step.id: step for step in steps}

    def needs(step: PipelineStep) -> list[PipelineStep]:
        spec = STAGES[step.stage]
        needed = []
        for stage in (*spec.reads, *spec.uses):
            of_stage = [s for s in steps if s.stage == stage]
            needed += [s for s in of_stage if s.key == step.key] or of_stage
        return needed + [by_id[i] for i in step.after if i in by_id]

    needed_by_some = {n.id for step in steps for n in needs(step)}
    order: list[PipelineStep] = []
    done: set[str] = set()
    visiting: set[str] = set()

    def visit(step: PipelineStep) -> None:
        if step.id in done:
            return
        if step.id in visiting:
            raise ValueError(f"pipeline steps depend on each other: {', '.join(sorted(visiting))}")
        visiting.add(step.id)
        for needed in needs(step):
            visit(needed)
        visiting.discard(step.id)
        done.add(step.id)
        order.append(step)

    for step in [s for s in steps if s.id not in needed_by_some] + steps:
        visit(step)
    return order


@dataclass
class StageRun:
    """Handle for a stage in progress: ``skip`` is True when it had already finished."""

    store: Store
    spec: StageSpec
    record_key: str
    skip: bool
    previous: dict
    started: float = field(default_factory=time.monotonic)  # when this run began (time.monotonic)

    @property
    def outputs(self) -> list[str]:
        """Store paths of this run's outputs (``writes`` with the record key filled in, staging left out)."""
        name = self.record_key.split("/", 1)[-1]
        return [w.format(key=name) for w in self.spec.writes if not w.startswith("staging")]

    def done(self, counts: dict[str, Any], **fields: Any) -> None:
        """Record the outputs' checksums, then mark the stage finished with its counts and the wall seconds this
        run took from its start (or resume) to here (both shown by ``status``)."""
        record_checksums(self.store, self.record_key, self.outputs)
        seconds = round(time.monotonic() - self.started, 3)
        set_stage(self.store, self.record_key, state="done", counts=counts, finished_at=utc_now(), seconds=seconds,
                  **fields)


def _config_changes(old: dict, new: dict, prefix: str = "") -> list[str]:
    """Keys whose values differ, nested ones dotted (``teacher.weights_sha256``); a key absent on one side equals
    None, so an option added later with a None default does not invalidate older runs."""
    changed = []
    for k in sorted(set(old) | set(new)):
        a, b = old.get(k), new.get(k)
        if isinstance(a, dict) and isinstance(b, dict):
            changed += _config_changes(a, b, f"{prefix}{k}.")
        elif a != b:
            changed.append(f"{prefix}{k}")
    return changed


@contextmanager
def stage_run(
    store: Store,
    spec: StageSpec,
    config: dict[str, Any],
    *,
    force: bool = False,
    record_key: str | None = None,
    log: Callable[[str], None] = print,
) -> Iterator[StageRun]:
    """Lock the store, check inputs and state, and mark the stage running; yield a :class:`StageRun`.

    ``record_key`` names the record in run.json when one stage runs several times (``teacher-cache/r3d_18``).

    The record keeps this run's timing: ``started_at`` (ISO UTC) now, ``finished_at`` and ``seconds`` (wall time of
    this run) once :meth:`StageRun.done`; ``runs`` counts the runs it took (a resumed stage: more than one, and its
    ``seconds`` are the last run's, since an interrupted run's end is not known).
    """
    key = record_key or spec.name
    with store_lock(store, key, log=log):
        run = read_run(store)
        for needed in spec.reads:
            if run["stages"].get(needed, {}).get("state") != "done" and not any(
                k.startswith(needed + "/") and v.get("state") == "done" for k, v in run["stages"].items()
            ):
                raise StageError(f"{store.url}: '{key}' needs '{needed}' to have finished; run `condi-pipe {needed}` first")
        previous = run["stages"].get(key, {})
        if previous and not force:
            changed = _config_changes(previous.get("config", {}), config)
            if changed:
                what = "finished" if previous.get("state") == "done" else "started"
                raise StageError(
                    f"{store.url}: '{key}' was {what} with a different configuration ({', '.join(changed)}); "
                    "re-run with --force to redo it with the new one"
                )
            if previous.get("state") == "done":
                counts = ", ".join(f"{k} {v}" for k, v in previous.get("counts", {}).items())
                log(f"{key}: already done ({counts}); nothing to do (use --force to redo)")
                yield StageRun(store, spec, key, True, previous)
                return
            log(f"{key}: resuming an interrupted run")
        resumed = bool(previous) and not force and previous.get("state") != "done"
        if force:
            for rel in spec.writes:
                store.remove(rel.format(key=key.split("/", 1)[-1]))
        started = time.monotonic()
        runs = int(previous.get("runs") or 1) + 1 if resumed else 1
        set_stage(store, key, state="running", config=config, started_at=utc_now(), finished_at=None, seconds=None,
                  runs=runs)
        yield StageRun(store, spec, key, False, previous, started)


def _store_at(url: str) -> Store:
    try:
        return Store(url)
    except (ValueError, ImportError) as exc:
        raise StoreError(f"{url}: cannot open store ({exc})") from None


def ensure_store(url: str) -> Store:
    """The store at ``url`` for a command that may create it (extract, run, sweep, demo, pretrain-teacher): it need
    not exist yet. Commands that read a store use :func:`open_store`."""
    store = _store_at(url)
    read_run(store)  # refuses a store from a newer format version
    return store


def open_store(url: str) -> Store:
    """The existing store at ``url``, for every command that reads one (all but those that create a store).

    A path that is not a store is a :class:`StoreError` naming it and why: it does not exist, it is a file, it holds
    no run.json, its run.json records no stage, or it is of a newer format. Only reads: a mistyped path never leaves
    an empty store folder behind.
    """
    store = _store_at(url)
    if not store.exists(RUN_FILE):
        if not store.exists():
            why = "the path does not exist"
        elif not store.fs.isdir(store.root):
            why = "it is a file, not a store folder"
        else:
            why = f"it holds no {RUN_FILE} (`condi-pipe extract` makes a store)"
        raise StoreError(f"{url}: not a store: {why}")
    run = read_run(store)  # refuses a store from a newer format version, or a run.json not ours
    if not run["stages"]:
        raise StoreError(f"{url}: not a store: its {RUN_FILE} records no stage (`condi-pipe extract` makes a store)")
    return store
