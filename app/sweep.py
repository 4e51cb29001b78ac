"""Stage ``sweep``: search ``[distill]`` hyperparameters (lr, mu, lam, tau ...) with Optuna on the validation part.

Each trial is one distill run, ``sweep-<name>-t<NNN>``, trained on the fit part of the train split and judged on the
validation part carved from it (``pipeline.splits``; the test split chooses nothing). After every evaluated epoch
its validation metric goes to the pruner (median by default), which may stop it; its value is the kept student's
metric. The study lives in a database (``storage.sweep_study``), so:

* **Resume.** A killed sweep leaves its trial RUNNING. A sweep started later finds it stale (its owner, host + pid
  + process start time, is gone; or on another host its heartbeat stopped), puts it back in the queue with its
  parameters and number, and runs it again: its distill run resumes from its own checkpoint. Trial ``n``'s
  parameters depend only on ``n`` and the seed (grid: the seeded grid's ``n``-th point; TPE: a sampler seeded by
  ``(seed, n)`` over the trials finished before it), so a resumed sweep has the same trials and the same best as
  an uninterrupted one. A finished trial (COMPLETE, PRUNED, FAIL) is never run again; ``trials`` is the total, so
  re-running a finished sweep does nothing and says so.
* **Several processes** (here or on other machines, with a shared database) each take the next free trial number
  from the database, so they run different trials. Their distill runs take turns on the store's one-writer lock
  (``storage.lock``): each waits for it rather than failing.

Finally the best COMPLETE trial (ties: the lowest number) is written as a run config, ``sweeps/<name>/best.toml``:
the base config with the winning values in ``[distill]`` and only the swept loss.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import socket
import threading
import time
import zlib
from typing import Callable

from condi_pipe.app.run_config import RunConfig
from condi_pipe.app.runner import PipelineRequests, pipeline_steps
from condi_pipe.app.sweep_config import SweepSection, grid_points, run_config_toml, with_params
from condi_pipe.pipeline.stage import StageError, ensure_store, step_order
from condi_pipe.stages.distill import distill
from condi_pipe.storage import sweep_study
from condi_pipe.storage import training_artifacts as artifacts
from condi_pipe.storage.lock import StoreLockedError
from condi_pipe.storage.run_state import read_run
from condi_pipe.storage.store import Store

PREREQUISITES = ("extract", "teacher-train", "teacher-cache")
HEARTBEAT_SECONDS = 10.0
STALE_AFTER_SECONDS = 120.0  # a trial owned on another host with no heartbeat for this long is taken over
LOCK_POLL_SECONDS = 0.3


def trial_run_name(sweep: str, number: int) -> str:
    return f"sweep-{sweep}-t{number:03d}"


# -- who owns a trial ------------------------------------------------------------------------------------------


def _process_token(pid: int) -> str | None:
    """The process's start time (Linux /proc), so a reused pid is not taken for the trial's owner."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


def _owner() -> dict:
    return {"host": socket.gethostname(), "pid": os.getpid(), "token": _process_token(os.getpid())}


def _owner_alive(owner: dict) -> bool:
    try:
        os.kill(int(owner["pid"]), 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    token = owner.get("token")
    return token is None or _process_token(int(owner["pid"])) == token


def _is_stale(trial, now: float) -> bool:
    owner = trial.user_attrs.get("owner")
    if owner and owner.get("host") == socket.gethostname():
        return not _owner_alive(owner)
    beat = trial.user_attrs.get("heartbeat") or (trial.datetime_start.timestamp() if trial.datetime_start else now)
    return now - float(beat) > STALE_AFTER_SECONDS


class _Heartbeat:
    """Writes the trial's ``heartbeat`` user attribute every few seconds while it runs."""

    def __init__(self, storage, trial_id: int) -> None:
        self.storage, self.trial_id, self.stop = storage, trial_id, threading.Event()
        self.thread = threading.Thread(target=self._beat, daemon=True)

    def _beat(self) -> None:
        while not self.stop.wait(HEARTBEAT_SECONDS):
            try:
                self.storage.set_trial_user_attr(self.trial_id, "heartbeat", time.time())
            except Exception:  # the trial finished meanwhile, or the database blinked: the next beat tries again
                pass

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop.set()
        self.thread.join()


# -- samplers: trial n's parameters depend only on n (and the trials finished before it, for TPE) -----------------


def _samplers():
    import optuna

    class PlannedGrid(optuna.samplers.BaseSampler):
        """Trial ``n`` gets point ``n`` of the seeded grid, whichever process asks."""

        def __init__(self, points: list[dict]) -> None:
            self.points = points

        def infer_relative_search_space(self, study, trial):
            return {}

        def sample_relative(self, study, trial, search_space):
            return {}

        def sample_independent(self, study, trial, name, distribution):
            return self.points[trial.number][name]

    class TrialSeededTPE(optuna.samplers.BaseSampler):
        """TPE whose randomness for parameter ``name`` of trial ``n`` is seeded by ``(seed, n, name)``: what it
        proposes depends on the finished trials only, not on which process asks or what it asked before."""

        def __init__(self, seed: int, startup: int) -> None:
            self.seed, self.startup = seed, startup

        def infer_relative_search_space(self, study, trial):
            return {}

        def sample_relative(self, study, trial, search_space):
            return {}

        def sample_independent(self, study, trial, name, distribution):
            seed = (self.seed * 1_000_003 + trial.number * 7919 + zlib.crc32(name.encode())) % 2**32
            sampler = optuna.samplers.TPESampler(seed=seed, n_startup_trials=self.startup)
            return sampler.sample_independent(study, trial, name, distribution)

    return PlannedGrid, TrialSeededTPE


def _suggest(trial, name: str, spec):
    """The trial's value of ``name``: a list is categorical (the grid's values), ``{low, high, log}`` a range."""
    if isinstance(spec, list):
        return trial.suggest_categorical(name, spec)
    if all(isinstance(spec[k], int) for k in ("low", "high")):
        return trial.suggest_int(name, spec["low"], spec["high"], log=spec.get("log", False))
    return trial.suggest_float(name, float(spec["low"]), float(spec["high"]), log=spec.get("log", False))


def _study(section: SweepSection, storage):
    import optuna

    planned_grid, trial_seeded_tpe = _samplers()
    sampler = (planned_grid(grid_points(section)) if section.sampler == "grid"
               else trial_seeded_tpe(section.seed, min(10, max(1, section.trial_count // 3))))
    pruner = (optuna.pruners.MedianPruner(n_startup_trials=section.prune_after_trials,
                                          n_warmup_steps=section.prune_after_epochs)
              if section.pruner == "median" else optuna.pruners.NopPruner())
    return optuna.create_study(storage=storage, study_name=section.name, direction=section.resolved_direction,
                               sampler=sampler, pruner=pruner, load_if_exists=True)


# -- the sweep ------------------------------------------------------------------------------------------------


# How the trials run but not what they are: may differ between the processes and runs of one sweep.
_RUNTIME_KEYS = ("device", "threads", "bf16", "loader_workers", "storage", "trials")


def _check_same_sweep(study, config: RunConfig, teacher: str) -> None:
    """Record what the study's trials are (the base [distill], the [sweep], the teacher) with the study, and refuse
    to add trials made another way to it: their values would not be comparable."""
    def without_runtime(section) -> dict:
        return {k: v for k, v in dataclasses.asdict(section).items() if k not in _RUNTIME_KEYS}

    current = json.loads(json.dumps({"teacher": teacher, "distill": without_runtime(config.distill),
                                     "sweep": without_runtime(config.sweep)}))  # as the database returns it
    recorded = study.user_attrs.get("config")
    if recorded is None:
        study.set_user_attr("config", current)
        return
    changed = ["[teacher]"] if current["teacher"] != recorded.get("teacher") else []
    for part in ("distill", "sweep"):
        old, new = recorded.get(part) or {}, current[part]
        changed += [f"[{part}] {key}" for key in sorted(set(old) | set(new)) if old.get(key) != new.get(key)]
    if changed:
        raise StageError(f"{config.source_file}: sweep '{config.sweep.name}' was started with a different "
                         f"configuration ({', '.join(changed)}); give the new search another [sweep] name")


def _wait_for_lock(work: Callable, log: Callable[[str], None]):
    """``work()``, retried while another process holds the store (its trial or stage is running)."""
    said = False
    while True:
        try:
            return work()
        except StoreLockedError as exc:
            if not said:
                log(f"sweep: waiting for the store: {exc}")
                said = True
            time.sleep(LOCK_POLL_SECONDS)


def _prerequisites(config: RunConfig, store: Store, quiet: bool, log: Callable[[str], None]) -> None:
    """Extract and the teacher's cache, as ``run`` makes them, unless the store has them (then they are used as
    they are: the sweep tunes the student only)."""

    steps = [s for s in pipeline_steps(config, store, quiet=quiet, log=log)
             if s.stage in PREREQUISITES and (config.sgs is None or "+sgs" not in s.key)]
    done = {k for k, v in read_run(store)["stages"].items() if v.get("state") == "done"}
    record_key = lambda step: f"{step.stage}/{step.key}" if step.key else step.stage  # noqa: E731  (run.json's)
    cached = any(s.stage == "teacher-cache" and record_key(s) in done for s in steps)
    for step in step_order(steps):
        if record_key(step) in done or (cached and step.stage == "teacher-train"):
            continue
        _wait_for_lock(step.run, log)


def _reclaim_stale(study, storage, target: int, log: Callable[[str], None]) -> None:
    """Put the RUNNING trials whose owner is gone back in the queue (same number, same parameters)."""
    from optuna.trial import TrialState

    now = time.time()
    study_id = storage.get_study_id_from_name(study.study_name)
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        if trial.number < target and _is_stale(trial, now):
            trial_id = storage.get_trial_id_from_study_id_trial_number(study_id, trial.number)
            storage.set_trial_state_values(trial_id, TrialState.WAITING)
            owner = trial.user_attrs.get("owner", {})
            log(f"sweep {study.study_name}: trial {trial.number} was left running by pid {owner.get('pid')} on "
                f"{owner.get('host')}, which is gone: running it again")


def _next_trial(study, storage, target: int, log: Callable[[str], None]):
    """The next trial to run (a reclaimed one first), or None when every one of the ``target`` is taken."""
    from optuna.trial import TrialState

    _reclaim_stale(study, storage, target, log)
    trials = study.get_trials(deepcopy=False)
    if len(trials) >= target and not any(t.state == TrialState.WAITING for t in trials):
        return None
    trial = study.ask()
    if trial.number >= target:  # another process took the last number at the same moment
        storage.set_trial_user_attr(trial._trial_id, "surplus", True)
        study.tell(trial, state=TrialState.FAIL)
        return None
    return trial


def _run_trial(study, storage, trial, section: SweepSection, config: RunConfig, store: Store, teacher: str,
               quiet: bool, log: Callable[[str], None]) -> str:
    """Run one trial to its end; returns its state's name."""
    import optuna
    from optuna.trial import TrialState


    number, run = trial.number, trial_run_name(section.name, trial.number)
    trial.set_user_attr("owner", _owner())
    trial.set_user_attr("run", run)
    params = {name: _suggest(trial, name, section.space[name]) for name in sorted(section.space)}
    request = dataclasses.replace(with_params(config.distill, section.loss, params).request(section.loss, teacher),
                                  name=run)
    shown = ", ".join(f"{k} {v:g}" for k, v in params.items())

    def on_epoch(history: list[dict]) -> None:
        """Report each evaluated epoch not yet reported (a resumed run's epochs before the kill too), in order,
        asking the pruner after each, as an uninterrupted trial would have."""
        reported = trial.storage.get_trial(trial._trial_id).intermediate_values
        for epoch, row in enumerate(history, start=1):
            value = float(row.get(section.metric, math.nan))
            if epoch in reported or not math.isfinite(value):
                continue
            trial.report(value, epoch)
            if trial.should_prune():
                raise optuna.TrialPruned()

    try:
        with _Heartbeat(storage, trial._trial_id):
            if trial.storage.get_trial(trial._trial_id).intermediate_values and trial.should_prune():
                raise optuna.TrialPruned()  # killed between its pruning and its record: prune it again
            _wait_for_lock(lambda: distill(store, request, quiet=True, log=log if not quiet else _silent,
                                           on_epoch=on_epoch), log)
        history = artifacts.read_history(store, artifacts.student_folder(run)).to_pylist()
        on_epoch(history)  # a run killed after its last epoch but before its record reported it in no process
        kept_epoch = artifacts.read_meta(store, artifacts.student_folder(run))["epoch_kept"]
        value = float(history[kept_epoch - 1].get(section.metric, math.nan))  # as reported (meta.json rounds)
        if not math.isfinite(value):
            raise FloatingPointError(f"the kept student (epoch {kept_epoch}) has no finite {section.metric}")
    except optuna.TrialPruned:
        study.tell(trial, state=TrialState.PRUNED)
        log(f"sweep {section.name}: trial {number} ({shown}) pruned after epoch "
            f"{max(trial.storage.get_trial(trial._trial_id).intermediate_values, default=0)}")
        return "PRUNED"
    except FloatingPointError as exc:  # the student diverged (too high a learning rate): a result, not a crash
        storage.set_trial_user_attr(trial._trial_id, "error", str(exc))
        study.tell(trial, state=TrialState.FAIL)
        log(f"sweep {section.name}: trial {number} ({shown}) failed: {exc}")
        return "FAIL"
    except BaseException:
        storage.set_trial_state_values(trial._trial_id, TrialState.WAITING)  # a later sweep runs it again
        raise
    study.tell(trial, float(value))
    log(f"sweep {section.name}: trial {number} ({shown}): {section.metric} {value:.4f}")
    return "COMPLETE"


def _silent(message: str) -> None:
    pass


def sweep(config: RunConfig, *, quiet: bool = False, log: Callable[[str], None] = print) -> dict:
    """Run the ``[sweep]`` of ``config`` until every one of its trials is finished or taken by another process;
    returns a summary (trials run here, finished, best, the best config's path)."""
    from optuna.trial import TrialState

    section = config.sweep
    if section is None:
        raise StageError(f"{config.source_file}: no [sweep] section")
    if getattr(config.extract, "folds", None):
        raise StageError(f"{config.source_file}: a sweep searches one split's validation part: set [extract] split "
                         "to one split (each fold's store can have a sweep of its own)")
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    store = ensure_store(config.store)
    _prerequisites(config, store, quiet, log)

    teacher = PipelineRequests(config).teacher().teacher_name
    url = section.storage or sweep_study.default_storage_url(store, section.name)
    storage = sweep_study.open_storage(url)
    study = _study(section, storage)
    _check_same_sweep(study, config, teacher)
    sweep_study.write_record(store, section.name, {
        "study": section.name, "storage": sweep_study.shown_url(url) if section.storage else None,
        "metric": section.metric, "direction": section.resolved_direction, "loss": section.loss,
        "sampler": section.sampler, "trials": section.trial_count, "space": section.space})
    target, ran = section.trial_count, 0
    while (trial := _next_trial(study, storage, target, log)) is not None:
        _run_trial(study, storage, trial, section, config, store, teacher, quiet, log)
        ran += 1
    trials = [t for t in study.get_trials(deepcopy=False) if t.number < target]
    finished = [t for t in trials if t.state.is_finished()]
    summary = {"sweep": section.name, "trials_run": ran, "finished": len(finished), "trials": target, "best": None,
               "best_config": None}
    if ran == 0 and len(finished) == target:
        log(f"sweep {section.name}: all {target} trials already finished; nothing to do")
    if len(finished) < target:
        log(f"sweep {section.name}: {len(finished)} of {target} trials finished, the others are running in other "
            "processes (the last one to finish writes the best config)")
        return summary
    best = sweep_study.best_trial_number(trials, section.resolved_direction)
    if best is None:
        log(f"sweep {section.name}: no trial completed (all pruned or failed); no best config")
        return summary
    winner = next(t for t in trials if t.number == best)
    best_config = dataclasses.replace(config, distill=with_params(config.distill, section.loss, winner.params),
                                      sweep=None)
    path = sweep_study.write_best_config(store, section.name, run_config_toml(best_config))
    summary.update(best={"trial": best, "value": winner.value, "params": winner.params}, best_config=path)
    counts = {s.name: sum(t.state == s for t in trials) for s in (TrialState.COMPLETE, TrialState.PRUNED,
                                                                   TrialState.FAIL)}
    log(f"sweep {section.name}: {target} trials ({', '.join(f'{v} {k.lower()}' for k, v in counts.items())}); "
        f"best trial {best}: {section.metric} {winner.value:.4f} with "
        + ", ".join(f"{k} {v:g}" for k, v in winner.params.items()) + f"; run config in {path}")
    return summary
