"""``condi-pipe run --config FILE.toml``: the whole pipeline from one checked configuration file.

Every section is a dataclass; the file is validated eagerly (unknown keys, wrong types, missing required
values) before any stage runs, and each error is one line naming the file and the key.
"""

from __future__ import annotations

import dataclasses
import os
import tomllib
import typing
from dataclasses import dataclass, field
from pathlib import Path

from condi_pipe.methods.registry import default_method_names, get_method


class ConfigError(ValueError):
    """The configuration file is unusable."""


def _check_ranges(section, *, positive: tuple[str, ...] = (), non_negative: tuple[str, ...] = ()) -> None:
    """ValueError naming the first key whose value (or any item of a list value) is out of range."""
    for names, ok, what in ((positive, lambda v: v > 0, "> 0"), (non_negative, lambda v: v >= 0, ">= 0")):
        for name in names:
            value = getattr(section, name)
            items = value if isinstance(value, list) else [value]
            if any(v is not None and not ok(v) for v in items):
                raise ValueError(f"{name} must be {what}, got {value!r}")


def _check_validation(section) -> None:
    """ValueError naming the key when the validation settings of a training section are unusable."""
    if not 0 <= section.val_fraction < 1:
        raise ValueError(f"val_fraction must be in [0, 1), got {section.val_fraction!r}")
    if section.keep not in ("best", "last"):
        raise ValueError(f"keep must be best or last, got {section.keep!r}")


@dataclass(frozen=True)
class ExtractSection:
    source: str
    root: str
    annotations: str | None = None
    split: int = 1
    fps: float | None = None
    clips_per_shard: int = 64
    workers: int = 2

    def __post_init__(self) -> None:
        _check_ranges(self, positive=("split", "fps", "clips_per_shard"), non_negative=("workers",))


@dataclass(frozen=True)
class TeacherSection:
    name: str
    width: float | None = None
    weights: str | None = None  # a checkpoint file or "pretrained"; without one, teacher-train trains the teacher first
    reset_head: bool = False
    device: str = "cpu"
    bf16: bool = False
    workers: int = 1
    z_labels: str | None = None  # "out-of-fold" | "in-sample"; default: out-of-fold when teacher_train has folds

    def __post_init__(self) -> None:
        _check_ranges(self, positive=("width",), non_negative=("workers",))
        if self.z_labels not in (None, "out-of-fold", "in-sample"):
            raise ValueError(f"z_labels must be out-of-fold or in-sample, got {self.z_labels!r}")


@dataclass(frozen=True)
class TeacherTrainSection:
    epochs: int = 10
    batch_size: int = 16
    lr: float = 0.1
    weight_decay: float = 1e-4
    flip: bool = True
    seed: int = 0
    val_fraction: float = 0.1  # validation carved from train (0: none); it picks the epoch kept
    val_seed: int = 0
    keep: str = "best"  # or "last"
    folds: int | None = None  # also train this many fold teachers: out-of-fold z labels in teacher-cache

    def __post_init__(self) -> None:
        _check_ranges(self, positive=("epochs", "batch_size", "lr"), non_negative=("weight_decay",))
        _check_validation(self)
        if self.folds is not None and self.folds < 2:
            raise ValueError(f"folds must be >= 2, got {self.folds!r}")


@dataclass(frozen=True)
class DistillSection:
    student: str = "shufflenetv2_3d"
    width: float | None = None
    losses: list[str] = field(default_factory=lambda: list(default_method_names()))  # names of registered methods
    epochs: int = 10
    batch_size: int = 32
    lr: float = 0.1
    tau: float = 0.9
    lam: float = 1.5
    mu: float = 1.5
    k: int = 3  # clips seen by the fewer-frames and uniform-k students
    seed: int = 0
    device: str = "cpu"
    val_fraction: float = 0.1  # validation carved from train (0: none); it picks the epoch kept
    val_seed: int = 0
    keep: str = "best"  # or "last"
    schedule_unit: str = "samples"  # the LR decays per reference epoch of samples, or per pass ("passes")
    reference_epoch: int = 9537  # samples per reference epoch (one clip per UCF-101 split-1 training video)

    def __post_init__(self) -> None:
        _check_ranges(self, positive=("width", "epochs", "batch_size", "lr", "tau", "k", "reference_epoch"),
                      non_negative=("lam", "mu"))
        _check_validation(self)
        for loss in self.losses:
            try:
                get_method(loss)
            except ValueError as exc:
                raise ValueError(f"losses: {exc}") from None
        if self.schedule_unit not in ("samples", "passes"):
            raise ValueError(f"schedule_unit must be samples or passes, got {self.schedule_unit!r}")


@dataclass(frozen=True)
class SGSSection:
    """An SGS teacher (``models.sgs``) beside the plain one: by default the plain teacher fine-tuned with SGS
    inserted after ``stage``, cached as ``<teacher>+sgs`` (or ``name``) and compared in the report's table ``sgs``."""

    stage: str = "res2"  # res2 = layer1, res3 = layer2, res4 = layer3
    kernel: str = "linear"  # or "kronecker"
    name: str | None = None  # the SGS teacher's name in the store (default: <teacher>+sgs)
    from_teacher: bool = True  # start from the plain teacher's weights (false: train from scratch)
    epochs: int = 4
    batch_size: int = 16
    lr: float = 0.01

    def __post_init__(self) -> None:
        _check_ranges(self, positive=("epochs", "batch_size", "lr"))
        from condi_pipe.models.sgs import SGSOptions

        try:
            SGSOptions(self.stage, self.kernel)
        except ValueError as exc:
            raise ValueError(f"stage / kernel: {exc}") from None

    @property
    def options(self):
        from condi_pipe.models.sgs import SGSOptions

        return SGSOptions(self.stage, self.kernel)


@dataclass(frozen=True)
class ReportSection:
    tables: list[str] = field(default_factory=lambda: ["3", "4", "accuracy", "oracle", "confidence"])
    k: list[int] = field(default_factory=lambda: [1, 3, 5, 7])
    ks: list[int] = field(default_factory=lambda: [0, 1, 3, 5])
    out_dir: str = "reports"
    plots: bool = True
    clip_kinds: str | None = None  # table "kinds": the generated benchmark's synth_clips.csv

    def __post_init__(self) -> None:
        from condi_pipe.report.registry import get_table, table_names

        _check_ranges(self, positive=("k",), non_negative=("ks",))
        unknown = [str(t) for t in self.tables if str(t) not in table_names()]
        if unknown:
            raise ValueError(f"tables: unknown table {', '.join(repr(t) for t in unknown)} (tables: {', '.join(table_names())})")
        for table in self.tables:
            if get_table(str(table)).needs_clip_kinds and self.clip_kinds is None:
                raise ValueError(f"clip_kinds: table '{table}' needs the benchmark's synth_clips.csv")


@dataclass(frozen=True)
class TimingSection:
    """``condi-pipe time-models`` after scoring: the teacher and every student timed side by side for the report."""

    repeats: int = 7  # interleaved repeats per model and batch size

    def __post_init__(self) -> None:
        _check_ranges(self, positive=("repeats",))


@dataclass(frozen=True)
class RunConfig:
    store: str
    extract: ExtractSection
    teacher: TeacherSection
    teacher_train: TeacherTrainSection = TeacherTrainSection()
    distill: DistillSection = DistillSection()
    report: ReportSection = ReportSection()
    sgs: SGSSection | None = None  # [sgs]: also train, cache and report an SGS teacher
    timing: TimingSection = TimingSection()
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


def _section(cls, values, where: str, path: str):
    if not isinstance(values, dict):
        raise ConfigError(f"{path}: [{where}] must be a table")
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    for key in values:
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
            "distill": DistillSection, "report": ReportSection, "sgs": SGSSection, "timing": TimingSection}


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
    from condi_pipe.models.pretrained import PRETRAINED

    weights = sections["teacher"].weights
    if weights != PRETRAINED:  # "pretrained" names the shipped checkpoint, not a file next to the config
        sections["teacher"] = dataclasses.replace(sections["teacher"], weights=local(weights))
    report = sections.get("report", ReportSection())
    sections["report"] = dataclasses.replace(report, out_dir=local(report.out_dir), clip_kinds=local(report.clip_kinds))
    store = raw["store"] if "://" in raw["store"] else local(raw["store"])
    return RunConfig(store=store, source_file=str(path), **sections)
