"""``condi-pipe infer``: ``predict`` on a few files, printed instead of stored.

The same code path as ``predict`` (``app.predict``): the videos are predicted into a temporary output store, in this
process, and read back as one :class:`InferResult` each; a video that cannot be read is an error here, since the
user named it.
"""

from __future__ import annotations

import tempfile
from typing import Callable, NamedTuple

from condi_pipe.app.predict import PredictRequest, models_from_store, predict
from condi_pipe.compute.torch_runtime import RuntimeOptions
from condi_pipe.pipeline.executor import ExecutorOptions
from condi_pipe.storage.predictions import STEPS, read_failures, read_predictions, read_step_seconds
from condi_pipe.storage.store import Store
from condi_pipe.video.decode import DecodeError


class InferResult(NamedTuple):
    path: str
    clips: int
    teacher_clips: list[int]  # clip indices the teacher classified
    student_clips: list[int]  # clip indices the student classified (K_s)
    top5: list[tuple[str, float]]
    seconds: dict[str, float]  # decode, student, selection, teacher, and model = student + selection + teacher


def infer(store: Store, paths: list[str], *, teacher: str, method: str = "condi-sr", student_run: str | None = None,
          k: int = 3, ks: int = 0, runtime: RuntimeOptions | None = None,
          log: Callable[[str], None] = print) -> list[InferResult]:
    """Classify ``paths`` with ``method`` at ``k`` clips (``ks`` of them by the student), with the teacher
    ``teacher`` and the student of ``student_run`` (default: the store's only suitable run, named in the log)."""
    request = PredictRequest(method=method, k=k, ks=ks, runtime=runtime or RuntimeOptions())
    models = models_from_store(store, request, teacher=teacher, student_run=student_run, log=log)
    with tempfile.TemporaryDirectory(prefix="condi-pipe-infer-") as folder:
        out = Store(folder)
        predict(out, paths, models, request, ExecutorOptions(workers=0), quiet=True, log=lambda message: None)
        failures = read_failures(out).to_pylist()
        if failures:
            raise DecodeError(failures[0]["kind"], failures[0]["message"])
        rows, seconds = read_predictions(out).to_pylist(), read_step_seconds(out).to_pylist()
    results = []
    for row, timing in zip(rows, seconds):
        steps = {step: timing[f"{step}_s"] for step in STEPS}
        steps["model"] = steps["student"] + steps["selection"] + steps["teacher"]
        results.append(InferResult(row["path"], row["clips"], row["teacher_clips"], row["student_clips"],
                                   list(zip(row["top5"], row["top5_probability"])), steps))
    return results
