"""The sections of a run config (``[extract]``, ``[teacher]``, ``[distill]`` ...): one frozen dataclass each,
checked when built. A key that is a stage option has the option's CLI name and default (``pipeline.options``)."""

from __future__ import annotations

from dataclasses import dataclass, field

from condi_pipe.compute.torch_runtime import bf16_mode, layout_mode
from condi_pipe.methods.registry import default_method_names, get_method
from condi_pipe.models.sgs import SGSOptions
from condi_pipe.pipeline.executor import INFERENCE_WORKERS, ExecutorOptions
from condi_pipe.pipeline.options import default_of
from condi_pipe.report.across_stores import SPLIT_SOURCES
from condi_pipe.report.registry import get_table, table_names
from condi_pipe.stages.distill_request import DISTILL_OPTIONS
from condi_pipe.stages.extract import EXTRACT_OPTIONS
from condi_pipe.stages.score import SCORE_OPTIONS
from condi_pipe.stages.teacher_cache import TEACHER_CACHE_OPTIONS
from condi_pipe.stages.teacher_train import TEACHER_TRAIN_OPTIONS
from condi_pipe.stages.time_models import TIME_MODELS_OPTIONS
from condi_pipe.storage.clip_array import clip_codec
from condi_pipe.video.decode import DecodeOptions


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


def _check_between(section, bounds: dict[str, tuple[float, float, bool]]) -> None:
    """ValueError naming the first key outside its [low, high] (open interval when the flag is True)."""
    for name, (low, high, open_interval) in bounds.items():
        value = getattr(section, name)
        inside = low < value < high if open_interval else low <= value <= high
        if not inside:
            brackets = "()" if open_interval else "[]"
            raise ValueError(f"{name} must be in {brackets[0]}{low:g}, {high:g}{brackets[1]}, got {value!r}")


# Every stage option's default is its request field's (pipeline.options): a section states none of its own.
_extract, _teacher_train = EXTRACT_OPTIONS.default, TEACHER_TRAIN_OPTIONS.default
_teacher_cache, _distill = TEACHER_CACHE_OPTIONS.default, DISTILL_OPTIONS.default
_score, _time_models = SCORE_OPTIONS.default, TIME_MODELS_OPTIONS.default


@dataclass(frozen=True)
class ExtractSection:
    """``condi-pipe extract``."""

    source: str
    root: str
    annotations: str | None = _extract("annotations")
    split: int | list[int] = _extract("split")  # a list: one store per split (folds), reported as their mean
    fps: float | None = _extract("fps")
    short_side: int = _extract("short_side")
    clips_per_shard: int = _extract("clips_per_shard")
    zstd_level: int = _extract("zstd_level")
    workers: int = ExecutorOptions().workers

    def __post_init__(self) -> None:
        _check_ranges(self, positive=("split", "fps", "clips_per_shard"), non_negative=("workers",))
        clip_codec(self.zstd_level)  # ValueError naming the allowed levels
        if self.short_side < DecodeOptions().crop:
            raise ValueError(f"short_side must be >= the {DecodeOptions().crop}-pixel crop, got {self.short_side!r}")
        if isinstance(self.split, list):

            if self.source not in SPLIT_SOURCES:
                raise ValueError(f"split: a list of splits (folds) applies to {' and '.join(SPLIT_SOURCES)}, whose "
                                 f"releases have three; source '{self.source}' has one split")
            if len(self.split) < 2 or len(set(self.split)) < len(self.split) or max(self.split) > 3:
                raise ValueError(f"split must be one split or a list of two or more different splits out of 1, 2, 3 "
                                 f"(folds), got {self.split!r}")

    @property
    def folds(self) -> list[int] | None:
        """The splits run as folds, one store each (``split = [1, 2, 3]``); None for one split."""
        return list(self.split) if isinstance(self.split, list) else None


@dataclass(frozen=True)
class TeacherSection:
    """The teacher: ``condi-pipe teacher-cache`` (and the model, width and runtime of teacher-train)."""

    name: str
    width: float | None = _teacher_cache("width")
    weights: str | None = _teacher_cache("weights")  # a checkpoint or "pretrained"; without, teacher-train trains it
    reset_head: bool = _teacher_cache("reset_head")
    device: str = _teacher_cache("device")
    threads: int | None = _teacher_cache("threads")
    bf16: bool | str = _teacher_cache("bf16")  # true, false or "auto" (timed: pipeline.runtime_choice)
    layout: str = _teacher_cache("layout")  # auto (timed), ncdhw or channels-last
    workers: int = INFERENCE_WORKERS  # teacher-cache's and score's
    clips_per_group: int = _teacher_cache("clips_per_group")
    z_labels: str | None = _teacher_cache("z_labels")  # out-of-fold | in-sample; None: out-of-fold with oof_folds

    def __post_init__(self) -> None:
        _check_ranges(self, positive=("width", "threads", "clips_per_group"), non_negative=("workers",))
        bf16_mode(self.bf16)  # ValueError naming the allowed values
        layout_mode(self.layout)
        if self.z_labels not in (None, "out-of-fold", "in-sample"):
            raise ValueError(f"z_labels must be out-of-fold or in-sample, got {self.z_labels!r}")


@dataclass(frozen=True)
class TeacherTrainSection:
    """``condi-pipe teacher-train``, run when ``[teacher]`` has no weights (and for ``[sgs]``)."""

    epochs: int = _teacher_train("epochs")
    batch_size: int = _teacher_train("batch_size")
    lr: float = _teacher_train("lr")
    momentum: float = _teacher_train("momentum")
    weight_decay: float = _teacher_train("weight_decay")
    flip: bool = _teacher_train("flip")
    seed: int = _teacher_train("seed")
    eval_every: int = _teacher_train("eval_every")
    val_fraction: float = _teacher_train("val_fraction")  # validation carved from train (0: none); picks the epoch
    val_seed: int = _teacher_train("val_seed")
    keep: str = _teacher_train("keep")  # or "last"
    clips_per_video: int | None = _teacher_train("clips_per_video")
    weights: str | None = _teacher_train("weights")  # start from this checkpoint (fine-tuning)
    reset_head: bool = _teacher_train("reset_head")
    oof_folds: int | None = _teacher_train("oof_folds")  # also train this many fold teachers: out-of-fold z labels
    sync_batchnorm: bool = _teacher_train("sync_batchnorm")  # multi-process: the global batch's BatchNorm statistics

    def __post_init__(self) -> None:
        _check_ranges(self, positive=("epochs", "batch_size", "lr", "eval_every", "clips_per_video"),
                      non_negative=("momentum", "weight_decay"))
        _check_validation(self)
        if self.oof_folds is not None and self.oof_folds < 2:
            raise ValueError(f"oof_folds must be >= 2, got {self.oof_folds!r}")


@dataclass(frozen=True)
class DistillSection:
    """``condi-pipe distill`` for each of ``losses`` (the run's teacher: ``[teacher]``), then ``score``: every
    distill option but the per-run loss, teacher and name."""

    student: str = "shufflenetv2_3d"
    width: float | None = _distill("width")
    losses: list[str] = field(default_factory=lambda: list(default_method_names()))  # names of registered methods
    epochs: int = _distill("epochs")
    batch_size: int = _distill("batch_size")
    lr: float = _distill("lr")
    momentum: float = _distill("momentum")
    weight_decay: float = _distill("weight_decay")
    seed: int = _distill("seed")
    eval_every: int = _distill("eval_every")
    val_fraction: float = _distill("val_fraction")  # validation carved from train (0: none); it picks the epoch
    val_seed: int = _distill("val_seed")
    keep: str = _distill("keep")  # or "last"
    conf_lr: float | None = _distill("conf_lr")  # None: lr
    lr_decay: float = _distill("lr_decay")
    conf_lr_decay: float = _distill("conf_lr_decay")
    schedule_unit: str = _distill("schedule_unit")  # the LR decays per reference epoch of samples, or per pass
    reference_epoch: int = _distill("reference_epoch")  # samples per reference epoch
    tau: float = _distill("tau")
    lam: float = _distill("lam")
    mu: float = _distill("mu")
    detach_confidence: bool = _distill("detach_confidence")
    beta: float = _distill("beta")
    downsample: bool = _distill("downsample")
    budget: float = _distill("budget")
    lambda_init: float = _distill("lambda_init")
    lambda_factor: float = _distill("lambda_factor")
    hint_fraction: float = _distill("hint_fraction")
    k: int = _distill("k")  # clips seen by the fewer-frames and uniform-k students
    alpha_rep: float = _distill("alpha_rep")
    alpha_kl: float = _distill("alpha_kl")
    alpha_ce: float = _distill("alpha_ce")
    clips_per_video: int | None = _distill("clips_per_video")
    weights: str | None = _distill("weights")  # a pretrained student to fine-tune (a local checkpoint)
    reset_head: bool = _distill("reset_head")
    device: str = _distill("device")  # the student's runtime, in distill and score
    threads: int | None = _distill("threads")
    bf16: bool | str = _distill("bf16")  # "auto": score times bf16 against fp32; distill runs fp32
    layout: str = _distill("layout")  # auto: score times it, distill runs channels-last; or ncdhw, channels-last
    loader_workers: int | None = _distill("loader_workers")  # batch readers (None: 1 on a CPU; 2+: processes)
    sync_batchnorm: bool = _distill("sync_batchnorm")  # under torchrun: the global batch's BatchNorm statistics

    def __post_init__(self) -> None:
        _check_ranges(self, positive=("width", "epochs", "batch_size", "lr", "eval_every", "conf_lr", "tau", "k",
                                      "reference_epoch", "budget", "lambda_init", "clips_per_video", "threads",
                                      "loader_workers"),
                      non_negative=("momentum", "weight_decay", "lam", "mu", "alpha_rep", "alpha_kl", "alpha_ce"))
        _check_validation(self)
        bf16_mode(self.bf16)
        layout_mode(self.layout)
        _check_between(self, {"beta": (0, 1, False), "hint_fraction": (0, 1, False), "lambda_factor": (1, 2, True),
                              "lr_decay": (1, float("inf"), False), "conf_lr_decay": (1, float("inf"), False)})
        for loss in self.losses:
            try:
                get_method(loss)
            except ValueError as exc:
                raise ValueError(f"losses: {exc}") from None
        if self.schedule_unit not in ("samples", "passes"):
            raise ValueError(f"schedule_unit must be samples or passes, got {self.schedule_unit!r}")

    def request(self, loss: str, teacher: str):
        """The distill request of ``loss``'s run: the translation the ``distill`` command makes too."""
        return DISTILL_OPTIONS.request(loss=loss, teacher=teacher, **DISTILL_OPTIONS.values(self))


@dataclass(frozen=True)
class ScoreSection:
    """``condi-pipe score`` of every distill run (runtime: ``[distill]``'s; workers: ``[teacher]``'s)."""

    clips_per_group: int = _score("clips_per_group")

    def __post_init__(self) -> None:
        _check_ranges(self, positive=("clips_per_group",))


@dataclass(frozen=True)
class SGSSection:
    """An SGS teacher (``models.sgs``) beside the plain one: by default the plain teacher fine-tuned with SGS
    inserted after ``stage``, cached as ``<teacher>+sgs`` (or ``name``) and compared in the report's table ``sgs``."""

    stage: str = default_of(SGSOptions, "stage")  # res2 = layer1, res3 = layer2, res4 = layer3
    kernel: str = default_of(SGSOptions, "kernel")  # or "kronecker"
    name: str | None = _teacher_train("name")  # the SGS teacher's name in the store (default: <teacher>+sgs)
    from_teacher: bool = True  # start from the plain teacher's weights (false: train from scratch)
    epochs: int = _teacher_train("epochs")
    batch_size: int = _teacher_train("batch_size")
    lr: float = 0.01  # fine-tuning an already trained teacher: a fifth of teacher-train's lr

    def __post_init__(self) -> None:
        _check_ranges(self, positive=("epochs", "batch_size", "lr"))
        try:
            SGSOptions(self.stage, self.kernel)
        except ValueError as exc:
            raise ValueError(f"stage / kernel: {exc}") from None

    @property
    def options(self) -> SGSOptions:
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

        _check_ranges(self, positive=("k",), non_negative=("ks",))
        unknown = [str(t) for t in self.tables if str(t) not in table_names()]
        if unknown:
            raise ValueError(f"tables: unknown table {', '.join(repr(t) for t in unknown)}; "
                             f"choose one of: {', '.join(table_names())}")
        for table in self.tables:
            if get_table(str(table)).needs_clip_kinds and self.clip_kinds is None:
                raise ValueError(f"clip_kinds: table '{table}' needs the benchmark's synth_clips.csv")


@dataclass(frozen=True)
class TimeModelsSection:
    """``condi-pipe time-models`` after scoring: the teacher and every student timed side by side for the report."""

    repeats: int = _time_models("repeats")  # interleaved repeats per model and batch size

    def __post_init__(self) -> None:
        _check_ranges(self, positive=("repeats",))
