"""The sections of a run config (``[extract]``, ``[teacher]``, ``[distill]`` ...): one frozen dataclass each,
checked when built. A key that is a stage option is made from the stage's option table (``pipeline.options``): the
option's CLI name, type, default, help and constraint, declared once on the request's field."""

from __future__ import annotations

from dataclasses import dataclass, field

from condi_pipe.compute.torch_runtime import RUNTIME_OPTIONS
from condi_pipe.methods.registry import default_method_names, method_names
from condi_pipe.models.sgs import SGSOptions
from condi_pipe.pipeline.executor import INFERENCE_WORKERS, ExecutorOptions
from condi_pipe.pipeline.options import check_fields, default_of, field_like, option
from condi_pipe.report.across_stores import SPLIT_SOURCES
from condi_pipe.report.registry import get_table, table_names
from condi_pipe.stages.distill_request import DISTILL_OPTIONS
from condi_pipe.stages.extract import EXTRACT_OPTIONS
from condi_pipe.stages.score import SCORE_OPTIONS
from condi_pipe.stages.teacher_cache import TEACHER_CACHE_OPTIONS
from condi_pipe.stages.teacher_train import TEACHER_TRAIN_OPTIONS
from condi_pipe.stages.time_models import TIME_MODELS_OPTIONS


class ConfigError(ValueError):
    """The configuration file is unusable."""


# A section whose keys are a stage's options is made from the stage's option table (OptionTable.section): each key
# has its option's type, default and constraint, checked as the Python API and the CLI check them. A section
# declares only its own keys, checks across keys and methods.


@dataclass(frozen=True)
class ExtractSection(EXTRACT_OPTIONS.section("ExtractOptions", types={"split": int | list[int]})):
    """``condi-pipe extract``. ``split`` may be a list: one store per split (folds), reported as their mean."""

    workers: int = field_like(ExecutorOptions, "workers")

    def __post_init__(self) -> None:
        super().__post_init__()
        if isinstance(self.split, list):
            if self.source not in SPLIT_SOURCES:
                raise ValueError(f"split: a list of splits (folds) applies to {' and '.join(SPLIT_SOURCES)}, whose "
                                 f"releases have three; source '{self.source}' has one split")
            if len(self.split) < 2 or len(set(self.split)) < len(self.split):
                raise ValueError(f"split must be one split or a list of two or more different splits out of 1, 2, 3 "
                                 f"(folds), got {self.split!r}")

    @property
    def folds(self) -> list[int] | None:
        """The splits run as folds, one store each (``split = [1, 2, 3]``); None for one split."""
        return list(self.split) if isinstance(self.split, list) else None


#: teacher-cache's options that [teacher] does not take: the teacher's store name is teacher-train's (or [sgs]'s),
#: SGS is [sgs]'s, and random weights are for tests and timing.
_NOT_TEACHER_KEYS = ("random_init", "sgs", "name")


@dataclass(frozen=True)
class TeacherSection(TEACHER_CACHE_OPTIONS.section("TeacherOptions", exclude=_NOT_TEACHER_KEYS,
                                                   renamed={"teacher": "name"})):
    """The teacher: ``condi-pipe teacher-cache`` (and the model, width and runtime of teacher-train). Without
    ``weights`` teacher-train trains it; ``bf16 = "auto"`` and ``layout = "auto"`` are timed
    (``compute.runtime_choice``)."""

    workers: int = field_like(ExecutorOptions, "workers", default=INFERENCE_WORKERS)  # teacher-cache's and score's

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.from_logits is not None:  # a teacher of another framework: nothing to train, load or run here
            given = [key for key, value in (("weights", self.weights), ("width", self.width),
                                            ("reset_head", self.reset_head),
                                            ("z_labels", self.z_labels if self.z_labels == "out-of-fold" else None))
                     if value not in (None, False)]
            if given:
                raise ValueError(f"{given[0]}: [teacher] from_logits imports the teacher's logits from a file, so "
                                 f"{', '.join(given)} does not apply")


#: teacher-train's options that [teacher_train] does not take: [teacher] gives the model, width and runtime, [sgs]
#: the SGS teacher.
_NOT_TEACHER_TRAIN_KEYS = ("teacher", "width", "sgs", "name", *RUNTIME_OPTIONS)


@dataclass(frozen=True)
class TeacherTrainSection(TEACHER_TRAIN_OPTIONS.section("TeacherTrainOptions", exclude=_NOT_TEACHER_TRAIN_KEYS)):
    """``condi-pipe teacher-train``, run when ``[teacher]`` has no weights (and for ``[sgs]``)."""


#: distill's options that differ per run: each of ``losses`` is one run, all from the run's teacher, each named
#: by default.
_PER_RUN_KEYS = ("loss", "teacher", "name")


@dataclass(frozen=True)
class DistillSection(DISTILL_OPTIONS.section("DistillOptions", exclude=_PER_RUN_KEYS,
                                             defaults={"student": "shufflenetv2_3d"})):
    """``condi-pipe distill`` for each of ``losses`` (the run's teacher: ``[teacher]``), then ``score``: every
    distill option but the per-run loss, teacher and name. The runtime is the student's, in distill and score."""

    losses: list[str] = option(default_factory=lambda: list(default_method_names()), choices=method_names,
                               help="The distill runs: one per registered method named.")

    def request(self, loss: str, teacher: str):
        """The distill request of ``loss``'s run: the translation the ``distill`` command makes too."""
        return DISTILL_OPTIONS.request(loss=loss, teacher=teacher, **DISTILL_OPTIONS.values(self))


@dataclass(frozen=True)
class ScoreSection(SCORE_OPTIONS.section("ScoreOptions", only=("clips_per_group",))):
    """``condi-pipe score`` of every distill run (runtime: ``[distill]``'s; workers: ``[teacher]``'s)."""


@dataclass(frozen=True)
class SGSSection(TEACHER_TRAIN_OPTIONS.section("SGSOptions", only=("name", "epochs", "batch_size", "lr"),
                                               defaults={"lr": 0.01})):
    """An SGS teacher (``models.sgs``) beside the plain one: by default the plain teacher fine-tuned with SGS
    inserted after ``stage``, cached as ``<teacher>+sgs`` (or ``name``) and compared in the report's table ``sgs``.
    Its ``lr`` is for fine-tuning an already trained teacher: a fifth of teacher-train's."""

    stage: str = default_of(SGSOptions, "stage")  # res2 = layer1, res3 = layer2, res4 = layer3
    kernel: str = default_of(SGSOptions, "kernel")  # or "kronecker"
    from_teacher: bool = True  # start from the plain teacher's weights (false: train from scratch)

    def __post_init__(self) -> None:
        super().__post_init__()
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
    k: list[int] = option(default_factory=lambda: [1, 3, 5, 7], low=1, help="Clip budgets K.")
    ks: list[int] = option(default_factory=lambda: [0, 1, 3, 5], low=0, help="Table 4: student clips K_s.")
    out_dir: str = "reports"
    plots: bool = True
    clip_kinds: str | None = None  # table "kinds": the generated benchmark's synth_clips.csv

    def __post_init__(self) -> None:
        check_fields(self)
        unknown = [str(t) for t in self.tables if str(t) not in table_names()]
        if unknown:
            raise ValueError(f"tables: unknown table {', '.join(repr(t) for t in unknown)}; "
                             f"choose one of: {', '.join(table_names())}")
        for table in self.tables:
            if get_table(str(table)).needs_clip_kinds and self.clip_kinds is None:
                raise ValueError(f"clip_kinds: table '{table}' needs the benchmark's synth_clips.csv")


@dataclass(frozen=True)
class TimeModelsSection(TIME_MODELS_OPTIONS.section("TimeModelsOptions", only=("repeats",))):
    """``condi-pipe time-models`` after scoring: the teacher and every student timed side by side for the report."""
