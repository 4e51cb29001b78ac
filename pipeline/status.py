"""``condi-pipe status``: what each stage has done on a store."""

from __future__ import annotations

import math

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


def format_status(report: dict) -> list[str]:
    """The lines ``condi-pipe status`` prints for ``store_status``'s report: one row per stage, its name, state
    and counts each starting at the same column whatever the names' lengths."""
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
    for name, info in stages.items():
        counts = ", ".join(f"{k} {format_count(k, v)}" for k, v in info.get("counts", {}).items())
        lines.append(f"  {name:<{name_width}}  {info['state']:<{state_width}}  {counts}".rstrip())
    return lines
