"""The ``[sweep]`` section of a run config: what ``condi-pipe sweep`` searches, and how.

>>> section = SweepSection(name="lr", space={"lr": [0.01, 0.1], "mu": [0.5, 1.0]})
>>> section.trial_count, section.resolved_direction
(4, 'maximize')
>>> [p["lr"] for p in grid_points(section)] == [p["lr"] for p in grid_points(section)]  # seeded, repeatable
True

A parameter of ``space`` is a numeric ``[distill]`` key. Grid sampling takes a list of values per parameter and
tries every combination (``trials`` at most their number; by default all of them), in an order shuffled by
``seed``: trial ``n`` always gets the grid's ``n``-th point, so a resumed sweep and several processes on one study
propose exactly what one uninterrupted process would. TPE takes ``{low, high, log}`` (or a list: categorical).
"""

from __future__ import annotations

import dataclasses
import itertools
import math
import typing
from dataclasses import dataclass, field

import numpy as np

from condi_pipe.app.config_sections import DistillSection
from condi_pipe.methods.registry import get_method, method_names
from condi_pipe.pipeline.options import check_fields, constraint_of, option

SAMPLERS = ("grid", "tpe")
PRUNERS = ("median", "none")
DIRECTIONS = ("maximize", "minimize")
#: What distill records per evaluated epoch on the validation part (``DistillTask.eval_columns``).
LOSS_TERMS = ("total", "kd", "conf", "ce", "rep")
METRICS = ("eval_auroc", "eval_clip_accuracy", "eval_video_accuracy", "eval_fpr", *(f"eval_{t}" for t in LOSS_TERMS))
CLIP_ONLY_METRICS = ("eval_auroc", "eval_clip_accuracy", "eval_fpr")  # NaN for the video-level losses
#: Lower is better for these; every other metric is maximised unless ``direction`` says otherwise.
MINIMISED = ("eval_fpr", *(f"eval_{t}" for t in LOSS_TERMS))


# Not hyperparameters of the student: the run's length, runtime and seeds, and the validation carve itself (a
# trial on another carve would be judged on other videos).
_NOT_SEARCHED = ("epochs", "threads", "seed", "val_seed", "eval_every", "val_fraction", "loader_workers")


def numeric_distill_keys() -> dict[str, type]:
    """``[distill]`` keys a sweep may search: the numeric ones (int or float, optional ones included), by the types
    of the section's fields (those of the distill options)."""
    hints = typing.get_type_hints(DistillSection)
    keys = {}
    for f in dataclasses.fields(DistillSection):
        hint = hints[f.name]
        kinds = set(typing.get_args(hint)) - {type(None)} if typing.get_args(hint) else {hint}
        if kinds in ({int}, {float}) and f.name not in _NOT_SEARCHED:
            keys[f.name] = next(iter(kinds))
    return keys


@dataclass(frozen=True)
class SweepSection:
    """``condi-pipe sweep``: a hyperparameter search of one loss's distill runs on the validation part."""

    name: str
    space: dict = field(default_factory=dict)  # parameter -> list of values (grid, tpe) or {low, high, log} (tpe)
    sampler: str = option("grid", choices=SAMPLERS)
    trials: int | None = option(None, low=1)  # the total number of trials (grid: default every point)
    seed: int = 0  # the grid's order; TPE's proposals
    # distill's own epoch selection metric for the clip-ranked losses
    metric: str = option("eval_auroc", choices=METRICS)
    # default: minimize the loss terms and the FPR, maximize the rest
    direction: str | None = option(None, choices=DIRECTIONS)
    loss: str = option("condi-sr", choices=method_names)
    storage: str | None = None  # a SQLAlchemy URL; default: sqlite:///<store>/sweeps/<name>/study.db
    pruner: str = option("median", choices=PRUNERS)
    prune_after_trials: int = option(5, low=0)  # the median pruner prunes nothing before this many trials finished
    prune_after_epochs: int = option(0, low=0)  # ... nor at or before this epoch

    def __post_init__(self) -> None:
        if not self.name or not all(c.isalnum() or c in "-_." for c in self.name):
            raise ValueError(f"name must be letters, digits, '-', '_' or '.', got {self.name!r}")
        check_fields(self)
        if get_method(self.loss).video_level and self.metric in CLIP_ONLY_METRICS:
            raise ValueError(f"metric: {self.metric} is not recorded for the video-level loss {self.loss} "
                             "(use eval_video_accuracy)")
        if self.storage is not None and "://" not in self.storage:
            raise ValueError(f"storage must be a SQLAlchemy URL (sqlite:///PATH, postgresql://...), got "
                             f"{self.storage!r}")
        self._check_space()
        if self.sampler == "grid" and self.trials is not None and self.trials > self.grid_size:
            raise ValueError(f"trials: {self.trials} is more than the grid's {self.grid_size} points")

    def _check_space(self) -> None:
        if not self.space:
            raise ValueError("space: give at least one parameter, e.g. [sweep.space] lr = [0.01, 0.1]")
        keys = numeric_distill_keys()
        for name, spec in self.space.items():
            if name not in keys:
                raise ValueError(f"space.{name}: not a numeric [distill] key (searchable: {', '.join(sorted(keys))})")
            if isinstance(spec, list):
                values = spec
                if not values or len(set(values)) != len(values):
                    raise ValueError(f"space.{name}: give distinct values, got {spec!r}")
            elif isinstance(spec, dict):
                if self.sampler == "grid":
                    raise ValueError(f"space.{name}: the grid sampler needs a list of values, got a range")
                unknown = set(spec) - {"low", "high", "log"}
                if unknown or "low" not in spec or "high" not in spec:
                    raise ValueError(f"space.{name}: a range is {{low, high, log}}, got {spec!r}")
                if not isinstance(spec.get("log", False), bool):
                    raise ValueError(f"space.{name}.log must be true or false")
                values = [spec["low"], spec["high"]]
                if not values[0] < values[1]:
                    raise ValueError(f"space.{name}: low must be below high, got {spec!r}")
                if spec.get("log") and values[0] <= 0:
                    raise ValueError(f"space.{name}: a log range needs low > 0, got {spec!r}")
            else:
                raise ValueError(f"space.{name}: a list of values or {{low, high, log}}, got {spec!r}")
            for value in values:
                wanted = keys[name]
                if isinstance(value, bool) or not isinstance(value, (int, float)) or (
                        wanted is int and not isinstance(value, int)):
                    raise ValueError(f"space.{name}: {value!r} is not {'an int' if wanted is int else 'a number'}")
                problem = constraint_of(DistillSection, name).problem(name, value)  # lr > 0, beta in [0, 1] ...
                if problem:
                    raise ValueError(f"space.{problem}")

    @property
    def grid_size(self) -> int:
        return math.prod(len(v) for v in self.space.values() if isinstance(v, list))

    @property
    def trial_count(self) -> int:
        if self.trials is not None:
            return self.trials
        return self.grid_size if self.sampler == "grid" else 20

    @property
    def resolved_direction(self) -> str:
        return self.direction or ("minimize" if self.metric in MINIMISED else "maximize")


def grid_points(section: SweepSection) -> list[dict]:
    """Every combination of the grid's values, in an order shuffled by ``section.seed`` (parameters by name)."""
    names = sorted(section.space)
    points = [dict(zip(names, values)) for values in itertools.product(*(section.space[n] for n in names))]
    order = np.random.default_rng([section.seed, 0x5EED]).permutation(len(points))
    return [points[i] for i in order]


def with_params(distill, loss: str, params: dict):
    """The ``[distill]`` section of one trial: ``distill`` with ``params`` set and the one loss."""
    return dataclasses.replace(distill, losses=[loss], **params)


def _toml_value(value) -> str:
    import json

    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value) if math.isfinite(value) else ("inf" if value > 0 else "-inf")
    if isinstance(value, str):
        return json.dumps(value)  # a JSON string is a TOML basic string
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    raise TypeError(f"cannot write {value!r} to TOML")


def run_config_toml(config) -> str:
    """``config`` (a :class:`~condi_pipe.app.run_config.RunConfig`) as run-config TOML, every key written out
    (paths absolute, None left out), so ``load_run_config`` reads back the same configuration."""
    lines = [f"store = {_toml_value(config.store)}"]
    for field_ in dataclasses.fields(config):
        section = getattr(config, field_.name)
        if not dataclasses.is_dataclass(section):
            continue
        lines += ["", f"[{field_.name}]"]
        for key, value in dataclasses.asdict(section).items():
            if value is not None:
                lines.append(f"{key} = {_toml_value(value)}")
    return "\n".join(lines) + "\n"
