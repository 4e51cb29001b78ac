"""pipeline.training's epoch loop on a one-parameter task, where every step's LR can be read back from the weight:
per-sample LR schedules stepped before every optimizer step, per-pass schedules unchanged, the epoch kept by the
validation selection metric, and a resume that restores both."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from condi_pipe.compute.torch_runtime import RuntimeOptions
from condi_pipe.compute.training import (
    ParamGroup,
    SampleDecay,
    StepDecay,
    StepResult,
    TrainOptions,
    deterministic_algorithms,
    run_training,
)
from condi_pipe.storage import training_artifacts as artifacts
from condi_pipe.storage.store import Store

QUIET = dict(quiet=True, log=lambda message: None)
BATCH_SIZES = (3, 5, 2)  # samples of the steps of every epoch: 10 per epoch
LR = 0.5


class Scalar(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.zeros((), dtype=torch.float64))  # exact enough to read LRs back


class SlopeTask:
    """Loss ``w`` (gradient 1): with momentum and weight decay 0, every SGD step lowers ``w`` by exactly its LR.
    ``evaluate`` returns the scripted ``scores`` of each epoch as the selection column."""

    train_columns = ("w",)
    eval_columns = ("eval_score",)
    selection_column = "eval_score"

    def __init__(self, schedule, scores: list[float] | None = None) -> None:
        self.schedule, self.scores = schedule, scores or []
        self.w_before_step: list[float] = []
        self.w_after_epoch: list[float] = []

    def setup(self, device) -> None:
        self.model = Scalar()

    def modules(self) -> dict:
        return {"model": self.model}

    def param_groups(self) -> list[ParamGroup]:
        return [ParamGroup("main", [self.model.w], LR, self.schedule)]

    def epoch_batches(self, epoch, rng) -> list[np.ndarray]:
        return [np.arange(n) for n in BATCH_SIZES]

    def load_batch(self, spec):
        return spec

    def train_step(self, batch, generator) -> StepResult:
        self.w_before_step.append(float(self.model.w.detach()))
        return StepResult(self.model.w * 1.0, {"w": float(self.model.w.detach())}, len(batch))

    def evaluate(self, epoch: int) -> dict[str, float]:
        self.w_after_epoch.append(float(self.model.w.detach()))
        return {"eval_score": self.scores[epoch]} if epoch < len(self.scores) else {}

    def extra_state(self) -> dict:
        return {}

    def load_extra_state(self, state: dict) -> None:
        pass


def _train(tmp_path, task, epochs: int, keep: str = "best"):
    options = TrainOptions(epochs, batch_size=4, lr=LR, momentum=0.0, weight_decay=0.0, seed=0, keep=keep,
                           deterministic=False)
    return run_training(Store(str(tmp_path / "store")), "run", task, options, RuntimeOptions(threads=1), stage="toy",
                        **QUIET)


def _step_lrs(task: SlopeTask, final_w: float) -> list[float]:
    w = task.w_before_step + [final_w]
    return [a - b for a, b in zip(w, w[1:])]


def test_per_sample_decay_sets_the_lr_before_every_step(tmp_path):
    factor, reference = 4.0, 7
    task = SlopeTask(SampleDecay(factor, reference))
    run = _train(tmp_path, task, epochs=3, keep="last")
    seen, expected = 0, []
    for _ in range(3):
        for n in BATCH_SIZES:
            expected.append(LR * factor ** (-seen / reference))  # the samples seen before the step
            seen += n
    assert _step_lrs(task, float(task.model.w.detach())) == pytest.approx(expected, rel=1e-5)
    # lr_main is the LR of each epoch's first step: after 0, 10 and 20 samples.
    assert [r["lr_main"] for r in run.history] == pytest.approx([LR * factor ** (-s / reference) for s in (0, 10, 20)])


def test_per_pass_decay_holds_the_lr_for_a_whole_pass(tmp_path):
    task = SlopeTask(StepDecay(5.0))
    run = _train(tmp_path, task, epochs=3, keep="last")
    expected = [LR / 5.0**epoch for epoch in range(3) for _ in BATCH_SIZES]
    assert _step_lrs(task, float(task.model.w.detach())) == pytest.approx(expected, rel=1e-5)
    assert [r["lr_main"] for r in run.history] == pytest.approx([LR, LR / 5, LR / 25])


def test_the_best_validation_epoch_is_kept_and_ties_keep_the_earlier(tmp_path):
    scores = [0.2, 0.9, 0.9, 0.5]
    task = SlopeTask(StepDecay(2.0), scores)
    run = _train(tmp_path, task, epochs=4)
    assert (run.kept_epoch, run.selection, run.selection_value) == (2, "eval_score", 0.9)
    assert run.kept["eval_score"] == max(r["eval_score"] for r in run.history)
    assert float(task.model.w.detach()) == task.w_after_epoch[1] != task.w_after_epoch[-1]

    last = SlopeTask(StepDecay(2.0), scores)
    run = _train(tmp_path / "last", last, epochs=4, keep="last")
    assert (run.kept_epoch, run.selection) == (4, None)
    assert float(last.model.w.detach()) == last.w_after_epoch[-1]


def test_without_a_finite_selection_value_the_last_epoch_is_kept(tmp_path):
    task = SlopeTask(StepDecay(2.0), scores=[])  # no validation split: every eval column is NaN
    run = _train(tmp_path, task, epochs=2)
    assert (run.kept_epoch, run.selection, run.selection_value) == (2, None, None)
    assert all(math.isnan(r["eval_score"]) for r in run.history)


def test_resume_restores_the_samples_seen_and_the_best_snapshot(tmp_path):
    """Trained 2 epochs, then continued to 4 from the checkpoint: the same steps' LRs, the same kept weights and
    the same history as 4 epochs in one go (the per-sample schedule does not depend on the epoch count)."""
    scores = [0.3, 0.8, 0.1, 0.4]
    whole = SlopeTask(SampleDecay(3.0, 9), scores)
    reference = _train(tmp_path / "whole", whole, epochs=4)

    first = SlopeTask(SampleDecay(3.0, 9), scores)
    _train(tmp_path / "parts", first, epochs=2)
    checkpoint = artifacts.read_checkpoint(Store(str(tmp_path / "parts" / "store")), "run")
    assert checkpoint["samples_seen"] == 20 and checkpoint["best"]["epoch"] == 2
    second = SlopeTask(SampleDecay(3.0, 9), scores)
    resumed = _train(tmp_path / "parts", second, epochs=4)

    assert resumed.resumed_from == 2 and resumed.kept_epoch == reference.kept_epoch == 2
    assert float(second.model.w.detach()) == float(whole.model.w.detach()) == whole.w_after_epoch[1]
    assert second.w_before_step == whole.w_before_step[len(BATCH_SIZES) * 2:]
    strip = lambda rows: [{k: v for k, v in r.items() if not k.endswith("seconds")} for r in rows]  # noqa: E731
    assert strip(resumed.history) == strip(reference.history)


def test_bad_selection_options_are_refused():
    with pytest.raises(ValueError, match=r"^keep must be one of best, last, got 'first'$"):
        TrainOptions(1, 1, 0.1, keep="first")
    with pytest.raises(ValueError, match=r"^val_fraction must be in \[0, 1\), got 1.0$"):
        TrainOptions(1, 1, 0.1, val_fraction=1.0)
    with pytest.raises(ValueError, match="reference epoch must be >= 1"):
        SampleDecay(5, 0)


@pytest.mark.parametrize("before", [0, 2])  # off; on and raising
def test_training_runs_with_warn_only_deterministic_kernels_and_restores_the_callers_mode(before):
    torch.set_deterministic_debug_mode(before)
    try:
        with deterministic_algorithms(True, torch.device("cpu")):
            assert torch.are_deterministic_algorithms_enabled() and torch.is_deterministic_algorithms_warn_only_enabled()
        assert torch.get_deterministic_debug_mode() == before
        with deterministic_algorithms(False, torch.device("cpu")):
            assert torch.get_deterministic_debug_mode() == before
    finally:
        torch.set_deterministic_debug_mode(0)
