"""``condi-pipe status``: what each stage has done on a store, and how long each finished stage took."""

from __future__ import annotations

import math

from condi_pipe.pipeline.stage import open_store
from condi_pipe.storage.lock import LOCK_FILE
from condi_pipe.storage.run_state import read_run

# What the time of a stage means, for ``condi-pipe status --help`` and the footnote under a resumed stage.
TIME_HELP = ("TIME is a finished stage's wall time from the start of the run that finished it to its finish; a stage "
             "resumed after an interruption (marked *) shows that last run only, since an interrupted run's end is "
             "not recorded. '-': not finished, or finished before condi-pipe recorded times.")
RESUMED_NOTE = "* resumed: the time of its last run only (the interrupted runs before it are not counted)"


def _timing(record: dict, finished: bool) -> dict:
    """A stage's timing for the report: ``seconds`` (wall time of the run that finished it), ``started_at`` and
    ``finished_at`` (ISO UTC) and ``runs`` (runs it took); None where the record does not hold them (a stage not
    finished, or recorded before condi-pipe kept times)."""
    seconds = record.get("seconds") if finished else None
    if isinstance(seconds, bool) or not isinstance(seconds, (int, float)):
        seconds = None
    return {"seconds": seconds, "started_at": record.get("started_at"),
            "finished_at": record.get("finished_at") if finished else None, "runs": record.get("runs")}


def store_status(url: str) -> dict:
    """Each stage's state, counts and timing on the store at ``url`` (a StoreError if it is not a store)."""
    store = open_store(url)
    run = read_run(store)
    holder = store.read_json(LOCK_FILE) if store.exists(LOCK_FILE) else None
    stages = {}
    for name, record in sorted(run["stages"].items()):
        state = record.get("state", "unknown")
        if state == "running" and holder is None:
            state = "interrupted"  # nobody holds the lock: the run was killed; re-running resumes it
        stages[name] = {"state": state, "counts": record.get("counts", {}), "updated": record.get("updated"),
                        **_timing(record, state == "done")}
    return {"store": url, "format_version": run["format_version"], "locked_by": holder, "stages": stages}


def _significant(value: float, digits: int) -> str:
    """``value`` with at least ``digits`` significant digits, in fixed point (never 1.2e+03, never 1234.5678)."""
    if value == 0 or not math.isfinite(value):
        return f"{value:g}"
    decimals = max(0, digits - 1 - math.floor(math.log10(abs(value))))
    return f"{value:.{decimals}f}"


def format_count(key: str, value) -> str:
    """One stage count for people: accuracies as percents, times with their unit, counts as integers.

    The stored counts stay unrounded (``--json`` prints them as they are); only this text rounds.
    """
    if value is None:
        return "-"
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return str(value)
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if key.endswith("accuracy"):  # stored as a fraction in [0, 1]
        return f"{100 * value:.2f}%"
    if key.startswith("ms_") or "_ms_" in key:
        return f"{_significant(value, 3)} ms"
    if key == "seconds" or key.endswith("_seconds") or key.endswith("_s"):
        return f"{value:.2f} s"
    if "gflops" in key:
        return f"{_significant(value, 3)} GFLOPs"
    if isinstance(value, int) or float(value).is_integer():
        return str(int(value))
    return _significant(value, 4)  # AUROC, selection values, mean bins: unitless


def format_duration(seconds) -> str:
    """A stage's wall time, compact: ``0.41s``, ``12.35s``, ``4m05s``, ``2h03m``; ``-`` when not known."""
    if seconds is None or isinstance(seconds, bool) or not isinstance(seconds, (int, float)) \
            or not math.isfinite(seconds) or seconds < 0:
        return "-"
    if round(seconds, 2) < 60:
        return f"{seconds:.2f}s"
    whole = round(seconds)
    if whole < 3600:
        return f"{whole // 60}m{whole % 60:02d}s"
    minutes = round(seconds / 60)
    return f"{minutes // 60}h{minutes % 60:02d}m"


def _time_text(info: dict) -> str:
    text = format_duration(info.get("seconds"))
    resumed = text != "-" and isinstance(info.get("runs"), int) and info["runs"] > 1
    return text + ("*" if resumed else "")


def format_status(report: dict) -> list[str]:
    """The lines ``condi-pipe status`` prints for ``store_status``'s report: one row per stage, its name, state,
    time (:data:`TIME_HELP`) and counts each starting at the same column whatever the names' lengths; under them,
    what a resumed stage's time means when one is shown."""
    lines = [f"store {report['store']} (format {report['format_version']})"]
    holder = report.get("locked_by")
    if holder:
        lines.append(f"  locked by pid {holder.get('pid', '?')} on {holder.get('host', '?')} "
                     f"({holder.get('command', '?')})")
    stages = report["stages"]
    if not stages:
        lines.append("  no stage has run")
        return lines
    name_width = max(len(name) for name in stages)
    state_width = max(len(info["state"]) for info in stages.values())
    times = {name: _time_text(info) for name, info in stages.items()}
    time_width = max(len(text) for text in times.values())
    for name, info in stages.items():
        counts = ", ".join(f"{k} {format_count(k, v)}" for k, v in info.get("counts", {}).items())
        lines.append(f"  {name:<{name_width}}  {info['state']:<{state_width}}  {times[name]:>{time_width}}  "
                     f"{counts}".rstrip())
    if any(text.endswith("*") for text in times.values()):
        lines.append(f"  {RESUMED_NOTE}")
    return lines
