"""``condi-pipe run --config FILE.toml``: the whole pipeline from one checked configuration file.

Every section is a dataclass; the file is validated eagerly (unknown keys, wrong types, missing required
values) before any stage runs, and each error is one line naming the file and the key. A key that is a stage
option has the option's CLI name (``--batch-size``: ``batch_size``) and its default, the stage's request field's
(``pipeline.options``), and the runner builds the stage's request from it through the same table as the CLI.
"""

from __future__ import annotations

import dataclasses
import os
import typing
from dataclasses import dataclass
from pathlib import Path

import tomllib

from condi_pipe.app.config_sections import (
    ConfigError,
    DistillSection,
    ExtractSection,
    ReportSection,
    ScoreSection,
    SGSSection,
    TeacherSection,
    TeacherTrainSection,
    TimeModelsSection,
)
from condi_pipe.app.sweep_config import SweepSection
from condi_pipe.methods.registry import get_method
from condi_pipe.models.pretrained import PRETRAINED


@dataclass(frozen=True)
class RunConfig:
    store: str
    extract: ExtractSection
    teacher: TeacherSection
    teacher_train: TeacherTrainSection = TeacherTrainSection()
    distill: DistillSection = DistillSection()
    score: ScoreSection = ScoreSection()
    report: ReportSection = ReportSection()
    sgs: SGSSection | None = None  # [sgs]: also train, cache and report an SGS teacher
    time_models: TimeModelsSection = TimeModelsSection()
    sweep: SweepSection | None = None  # [sweep]: what `condi-pipe sweep` searches (pipeline.sweep_config)
    source_file: str = ""


def _type_ok(value, annotation) -> bool:
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, getattr(__import__("types"), "UnionType", None)):
        return any(_type_ok(value, arg) for arg in typing.get_args(annotation))
    if annotation is type(None):
        return value is None
    if origin is list:
        (item,) = typing.get_args(annotation)
        return isinstance(value, list) and all(_type_ok(v, item) for v in value)
    if annotation is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if annotation is int:
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, annotation)


#: Keys and sections an earlier condi-pipe read under another name: named in the error, so old files are easy to fix.
RENAMED_KEYS = {("teacher_train", "folds"): "oof_folds"}
RENAMED_SECTIONS = {"timing": "time_models"}


def _section(cls, values, where: str, path: str):
    if not isinstance(values, dict):
        raise ConfigError(f"{path}: [{where}] must be a table")
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    for key in values:
        if (where, key) in RENAMED_KEYS:
            raise ConfigError(f"{path}: [{where}] {key} is now called {RENAMED_KEYS[where, key]}: rename the key")
        if key not in names:
            raise ConfigError(f"{path}: unknown key '{key}' in [{where}] (known: {', '.join(names)})")
    for key, value in values.items():
        if not _type_ok(value, hints[key]):
            expected = getattr(hints[key], "__name__", None) if isinstance(hints[key], type) else None
            expected = expected or str(hints[key]).replace("typing.", "")
            raise ConfigError(f"{path}: [{where}].{key} must be {expected}, got {type(value).__name__} {value!r}")
    missing = [f.name for f in dataclasses.fields(cls)
               if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING and f.name not in values]
    if missing:
        raise ConfigError(f"{path}: [{where}] needs {', '.join(missing)}")
    try:
        return cls(**values)
    except ValueError as exc:
        raise ConfigError(f"{path}: [{where}].{exc}") from None


SECTIONS = {"extract": ExtractSection, "teacher": TeacherSection, "teacher_train": TeacherTrainSection,
            "distill": DistillSection, "score": ScoreSection, "report": ReportSection, "sgs": SGSSection,
            "time_models": TimeModelsSection, "sweep": SweepSection}


def _check_from_logits(sections: dict, path: str) -> None:
    """A teacher imported from a logits file has no model (nothing to fine-tune with SGS) and no features."""
    if "sgs" in sections:
        raise ConfigError(f"{path}: [sgs] fine-tunes the teacher with SGS, and [teacher] from_logits has no model to "
                          "fine-tune: remove one of the two")
    needing = [loss for loss in sections.get("distill", DistillSection()).losses
               if get_method(loss).uses_teacher_features]
    if needing:
        raise ConfigError(f"{path}: [distill] losses: {', '.join(needing)} needs the teacher's features, and a "
                          "teacher from [teacher] from_logits has none (a file carries logits only)")


def load_run_config(path: str | os.PathLike) -> RunConfig:
    """Parse and check ``path``; relative paths in it are relative to the file's folder."""
    path = Path(path)
    try:
        raw = tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"{path}: configuration file not found") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML ({exc})") from None
    for key in raw:
        if key in RENAMED_SECTIONS:
            raise ConfigError(f"{path}: section [{key}] is now called [{RENAMED_SECTIONS[key]}]: rename the section")
        if key != "store" and key not in SECTIONS:
            raise ConfigError(f"{path}: unknown section or key '{key}' (known: store, {', '.join(SECTIONS)})")
    if not isinstance(raw.get("store"), str):
        raise ConfigError(f"{path}: 'store' (a path or URL) is required and must be a string")
    for required in ("extract", "teacher"):
        if required not in raw:
            raise ConfigError(f"{path}: section [{required}] is required")
    sections = {name: _section(cls, raw[name], name, str(path)) for name, cls in SECTIONS.items() if name in raw}
    base = path.resolve().parent

    def local(p: str | None) -> str | None:
        return None if p is None or "://" in p else str((base / os.path.expanduser(p)).resolve())

    sections["extract"] = dataclasses.replace(sections["extract"], root=local(sections["extract"].root),
                                              annotations=local(sections["extract"].annotations))

    from_logits = sections["teacher"].from_logits
    if from_logits is not None:
        sections["teacher"] = dataclasses.replace(sections["teacher"], from_logits=local(from_logits))
        _check_from_logits(sections, str(path))
    weights = sections["teacher"].weights
    if weights != PRETRAINED:  # "pretrained" names the shipped checkpoint, not a file next to the config
        sections["teacher"] = dataclasses.replace(sections["teacher"], weights=local(weights))
    for name in ("teacher_train", "distill"):  # checkpoints to start training from
        if name in sections:
            sections[name] = dataclasses.replace(sections[name], weights=local(sections[name].weights))
    if weights and sections.get("teacher_train", TeacherTrainSection()).weights:
        raise ConfigError(f"{path}: [teacher_train] weights start teacher-train, which [teacher] weights skip (the "
                          "teacher is cached from them as they are): set one of the two")
    if "sweep" in sections and not sections.get("distill", DistillSection()).val_fraction > 0:
        raise ConfigError(f"{path}: [sweep] searches on the validation part carved from train: [distill] "
                          "val_fraction must be > 0")
    report = sections.get("report", ReportSection())
    sections["report"] = dataclasses.replace(report, out_dir=local(report.out_dir), clip_kinds=local(report.clip_kinds))
    store = raw["store"] if "://" in raw["store"] else local(raw["store"])
    return RunConfig(store=store, source_file=str(path), **sections)
