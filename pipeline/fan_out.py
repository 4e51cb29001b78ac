"""The resumable fan-out that extract, teacher-cache and score share: the items not yet staged run as tasks
(in-process or on Dask), each staging its own result; the stage assembles and publishes the staged results, marks
itself done, and only then clears its staging. A stage killed anywhere reruns only the items it had not staged.

>>> # inside ``with stage_run(store, SPEC, config) as run:``
>>> # run_unstaged(store, "score-r1", groups, lambda g: g.key, infer_group, executor, desc="score r1",
>>> #              fault_point="score.group", common=(store.url, ...))
>>> # ... assemble the staged results, write the outputs ...
>>> # finish_staged(run, store, ["score-r1"], counts)
"""

from __future__ import annotations

from typing import Any, Callable, Iterable, Sequence

from condi_pipe.pipeline import faults
from condi_pipe.pipeline.executor import ExecutorOptions, run_tasks
from condi_pipe.storage import staging
from condi_pipe.storage.store import Store


def run_unstaged(store: Store, staging_name: str, items: Iterable[Any], key: Callable[[Any], str],
                 task: Callable[..., Any], executor: ExecutorOptions, *, desc: str, fault_point: str,
                 quiet: bool = False, common: tuple = ()) -> int:
    """Run ``task(item, *common)`` for every item whose ``key(item)`` is not staged under ``staging_name`` yet
    (the task stages its result under that key); returns how many ran. ``fault_point`` is checked after each
    finished task, so tests can kill the stage between two staged items."""
    done = staging.staged_keys(store, staging_name)
    todo = [item for item in items if key(item) not in done]
    for _ in run_tasks(task, todo, executor, desc=desc, quiet=quiet, common=common):
        faults.checkpoint(fault_point)
    return len(todo)


def finish_staged(run, store: Store, staging_names: Sequence[str], counts: dict, *, fault_point: str | None = None,
                  **fields: Any) -> None:
    """Mark the stage done (its outputs are published), then clear its staging: a kill in between leaves staging
    that the next run clears without redoing anything."""
    run.done(counts, **fields)
    if fault_point is not None:
        faults.checkpoint(fault_point)
    for name in staging_names:
        staging.clear_staging(store, name)
