"""What a ``distill`` run is: :class:`DistillRequest` with its :class:`LossOptions`, and :data:`DISTILL_OPTIONS`,
the option table that the ``distill`` command and a run config's ``[distill]`` section both build it through
(``pipeline.options``). Every distill option's default is a field default here or in ``TrainOptions`` /
``RuntimeOptions``. The training itself is in :mod:`condi_pipe.stages.distill`."""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field

from condi_pipe.compute.torch_runtime import RUNTIME_OPTIONS, RuntimeOptions
from condi_pipe.compute.training import TRAIN_OPTIONS, TrainOptions
from condi_pipe.methods import losses as L
from condi_pipe.methods.registry import Method, get_method
from condi_pipe.models import model_spec
from condi_pipe.pipeline.options import OptionTable, nested_paths

SCHEDULE_UNITS = ("samples", "passes")
#: The reference epoch of the per-sample LR schedule: one clip per training video of UCF-101 split 1 (9,537
#: videos), the scale of the paper's epochs.
REFERENCE_EPOCH = 9537
#: The loss ``condi-pipe distill`` trains without ``--loss``: the method's own (the request has no default).
DEFAULT_LOSS = "condi-sr"


@dataclass(frozen=True)
class LossOptions:
    """Hyperparameters of the losses (each is ignored by the losses that do not use it)."""

    tau: float = L.DEFAULT_TAU  # temperature (condi-sr, st-ent, trivial-mt)
    lam: float = L.DEFAULT_LAMBDA  # weight of the confidence term (condi-sr, trivial-mt)
    mu: float = L.DEFAULT_MU  # weight of the positive BCE term (condi-sr, trivial-mt)
    detach_confidence: bool = False  # condi-sr: stop the KD gradient into z~ (Eq. 5)
    beta: float = 0.5  # trivial-mt: weight of CE
    downsample: bool = True  # bce-conf: balance z per batch
    budget: float = 0.3  # st-conf: the budget beta on mean(-log c)
    lambda_init: float = 0.1  # st-conf: initial lambda
    lambda_factor: float = 1.01  # st-conf: lambda update factor
    hint_fraction: float = 0.5  # st-conf: share of each batch given hints
    k: int = 3  # fewer-frames / uniform-k: clips the student sees per video
    alpha_rep: float = 1.0  # fewer-frames weights
    alpha_kl: float = 1.0
    alpha_ce: float = 1.0


def default_distill_options() -> TrainOptions:
    return TrainOptions(epochs=50, batch_size=32, lr=0.1, momentum=0.9, weight_decay=1e-4, seed=0)


def default_run_name(loss: str, student: str, width: float | None, k: int | None = None) -> str:
    """``<loss>-<student>-<width>`` (``-k<K>`` appended for the video-level losses)."""
    name = f"{loss}-{student}" + ("" if width is None else f"-{float(width)}")
    return name + (f"-k{k}" if get_method(loss).video_level and k is not None else "")


@dataclass(frozen=True)
class DistillRequest:
    loss: str
    student: str
    teacher: str
    width: float | None = None
    name: str | None = None  # default: default_run_name(...)
    losses: LossOptions = LossOptions()
    train: TrainOptions = field(default_factory=default_distill_options)
    conf_lr: float | None = None  # confidence head's base LR; None: the same as train.lr
    lr_decay: float = 1.25  # the network's LR is divided by this after every epoch
    conf_lr_decay: float = 5.0  # the confidence head's LR is divided by this after every epoch
    schedule_unit: str = "samples"  # what an epoch of the LR decays is: a reference epoch of samples, or a pass
    reference_epoch: int = REFERENCE_EPOCH  # samples per reference epoch (schedule_unit "samples")
    clips_per_video: int | None = None  # per-clip losses: train on this many random clips per video and epoch
    weights: str | None = None  # initialise the student from a local checkpoint (fine-tuning: use lr 0.01)
    reset_head: bool = False
    runtime: RuntimeOptions = RuntimeOptions()

    def __post_init__(self) -> None:
        get_method(self.loss)  # ValueError naming the registered methods
        if self.losses.k < 1:
            raise ValueError("--k must be >= 1")
        if self.schedule_unit not in SCHEDULE_UNITS:
            raise ValueError(f"--schedule-unit must be one of {', '.join(SCHEDULE_UNITS)}, got {self.schedule_unit!r}")
        if self.reference_epoch < 1:
            raise ValueError(f"--reference-epoch must be >= 1 sample, got {self.reference_epoch}")

    @property
    def method(self) -> Method:
        return get_method(self.loss)

    def resolved_width(self) -> float | None:

        spec = model_spec(self.student)
        if spec.widths is None:
            return None
        return spec.default_width if self.width is None else float(self.width)

    @property
    def run(self) -> str:
        return self.name or default_run_name(self.loss, self.student, self.resolved_width(), self.losses.k)

    def config(self) -> dict:
        cfg = asdict(self)
        cfg["width"] = self.resolved_width()
        cfg["name"] = self.run
        del cfg["train"]["loader_workers"]  # how batches are read, not what is trained: any value resumes
        if not self.train.sync_batchnorm:  # recorded only when on: runs made before the option keep their config
            del cfg["train"]["sync_batchnorm"]
        cfg["weights"] = os.path.abspath(self.weights) if self.weights else None
        if not self.method.video_level:
            cfg["losses"] = {k: v for k, v in cfg["losses"].items() if not k.startswith("alpha_") and k != "k"}
        return cfg


LOSS_OPTIONS = ("tau", "lam", "mu", "detach_confidence", "beta", "downsample", "budget", "lambda_init",
                "lambda_factor", "hint_fraction", "k", "alpha_rep", "alpha_kl", "alpha_ce")

#: Every option of ``condi-pipe distill`` (and of ``[distill]``, but for the per-run ``loss``, ``teacher`` and
#: ``name``) -> its field in :class:`DistillRequest`.
DISTILL_OPTIONS = OptionTable(DistillRequest, {
    "loss": "loss", "student": "student", "teacher": "teacher", "width": "width", "name": "name",
    **nested_paths("train", TRAIN_OPTIONS),
    "conf_lr": "conf_lr", "lr_decay": "lr_decay", "conf_lr_decay": "conf_lr_decay",
    "schedule_unit": "schedule_unit", "reference_epoch": "reference_epoch",
    **nested_paths("losses", LOSS_OPTIONS),
    "clips_per_video": "clips_per_video", "weights": "weights", "reset_head": "reset_head",
    **nested_paths("runtime", RUNTIME_OPTIONS),
})
