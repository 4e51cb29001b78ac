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
from condi_pipe.methods.registry import Method, get_method, method_names
from condi_pipe.models import model_spec
from condi_pipe.pipeline.options import RESET_HEAD_HELP, OptionTable, check_fields, nested_paths, option

SCHEDULE_UNITS = ("samples", "passes")
#: The reference epoch of the per-sample LR schedule: one clip per training video of UCF-101 split 1 (9,537
#: videos), the scale of the paper's epochs.
REFERENCE_EPOCH = 9537
#: The loss ``condi-pipe distill`` trains without ``--loss``: the method's own (the request has no default).
DEFAULT_LOSS = "condi-sr"


@dataclass(frozen=True)
class LossOptions:
    """Hyperparameters of the losses (each is ignored by the losses that do not use it)."""

    tau: float = option(L.DEFAULT_TAU, low=0, low_open=True, help="Distillation temperature.")
    lam: float = option(L.DEFAULT_LAMBDA, low=0, help="Weight of the confidence term (condi-sr, trivial-mt).")
    mu: float = option(L.DEFAULT_MU, low=0, help="Weight of the positive BCE term (condi-sr, trivial-mt).")
    detach_confidence: bool = option(False, help="condi-sr: no KD gradient into z~ (Eq. 5).")
    beta: float = option(0.5, low=0, high=1, help="trivial-mt: CE weight.")
    downsample: bool = option(True, help="bce-conf: balance z = 0 and z = 1 in each batch.")
    budget: float = option(0.3, low=0, low_open=True, help="st-conf: the budget on mean(-log c).")
    lambda_init: float = option(0.1, low=0, low_open=True, help="st-conf: initial lambda.")
    # BudgetLambda divides lambda by the factor or by 2 - factor: both must stay in (0, 2)
    lambda_factor: float = option(1.01, low=1, high=2, low_open=True, high_open=True,
                                  help="st-conf: lambda update factor.")
    hint_fraction: float = option(0.5, low=0, high=1, help="st-conf: share of each batch given hints.")
    k: int = option(3, low=1, help="fewer-frames, uniform-k: equidistant clips the student sees per video.")
    alpha_rep: float = option(1.0, low=0, help="fewer-frames: weight of ||E_T - E_S||^2.")
    alpha_kl: float = option(1.0, low=0, help="fewer-frames: weight of KL(P_T || P_S).")
    alpha_ce: float = option(1.0, low=0, help="fewer-frames: weight of CE.")

    def __post_init__(self) -> None:
        check_fields(self)


def default_distill_options() -> TrainOptions:
    return TrainOptions(epochs=50, batch_size=32, lr=0.1, momentum=0.9, weight_decay=1e-4, seed=0)


def default_run_name(loss: str, student: str, width: float | None, k: int | None = None) -> str:
    """``<loss>-<student>-<width>`` (``-k<K>`` appended for the video-level losses)."""
    name = f"{loss}-{student}" + ("" if width is None else f"-{float(width)}")
    return name + (f"-k{k}" if get_method(loss).video_level and k is not None else "")


@dataclass(frozen=True)
class DistillRequest:
    loss: str = option(choices=method_names, help=(
        "condi-sr: the method; bce-conf, st-ent, st-conf: baseline samplers; trivial-mt: the cheating ablation; "
        "fewer-frames, uniform-k: one prediction per video from K clips; sc-sampler: SCSampler's clip classifier "
        "(labels only, ranked by its top softmax probability)."))
    student: str = option(help="Registered student model (see `condi-pipe models`).")
    teacher: str = option(help="Teacher whose cache to distil from (`condi-pipe teacher-cache`).")
    width: float | None = option(None, low=0, low_open=True, help="Width multiplier (default: the model's default).")
    name: str | None = option(None, help="Run name (default: <loss>-<student>-<width>, plus -k<K> for video losses).")
    losses: LossOptions = LossOptions()
    train: TrainOptions = field(default_factory=default_distill_options)
    conf_lr: float | None = option(None, low=0, low_open=True, help="Base LR of the confidence head (default: --lr).")
    lr_decay: float = option(1.25, low=1, help="The network's LR is divided by this per epoch (see --schedule-unit).")
    conf_lr_decay: float = option(5.0, low=1, help="The confidence head's LR is divided by this per epoch (see "
                                                   "--schedule-unit).")
    schedule_unit: str = option("samples", choices=SCHEDULE_UNITS, help=(
        "samples: the decays apply per --reference-epoch training samples, set before every optimizer step; "
        "passes: per pass over the data."))
    reference_epoch: int = option(REFERENCE_EPOCH, low=1, help=(
        f"Samples per epoch of the LR decays with --schedule-unit samples ({REFERENCE_EPOCH}: one clip per training "
        "video of UCF-101 split 1, the paper's scale)."))
    clips_per_video: int | None = option(None, low=1, help="Per-clip losses: train each epoch on this many random "
                                                           "clips of each video (default: all).")
    weights: str | None = option(None, help="Start the student from this local checkpoint (the paper fine-tunes at "
                                            "--lr 0.01).")
    reset_head: bool = option(False, help=RESET_HEAD_HELP)
    runtime: RuntimeOptions = RuntimeOptions()

    def __post_init__(self) -> None:
        check_fields(self)

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
