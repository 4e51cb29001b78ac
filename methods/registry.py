"""Distillation methods by name: each registers once, with everything the pipeline needs to know about it.

    @register_method("condi-sr", display="ConDi-SR", level="clip", ranking="confidence",
                     needs_confidence_head=True)
    def condi_sr(batch: ClipBatch, context: LossContext) -> tuple[LossTerms, float]: ...

    get_method("condi-sr").ranking        # "confidence"
    method_names(level="video")           # ("fewer-frames", "uniform-k")

The decorated function is the loss ``distill`` trains with (see ``methods.catalogue``, where the built-in methods
register; the ``condi_pipe.methods`` package imports it, so every lookup sees them). Neither module imports torch,
so the CLI and the report can read the registry without loading it.
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Callable, Iterator, Literal, Optional

import numpy as np

from condi_pipe.methods.metrics import softmax_entropy
from condi_pipe.registry import Registry, first_docstring_line

Level = Literal["clip", "video"]
Ranking = Optional[Literal["confidence", "entropy", "max-prob"]]
LEVELS = ("clip", "video")
RANKINGS = ("confidence", "entropy", "max-prob")
LossFunction = Callable[..., Any]


@dataclass(frozen=True)
class Method:
    """A registered distillation method: the loss ``distill`` trains with, and how its runs are treated after."""

    name: str  # what --loss, run configurations and students/<run>/meta.json call it
    display: str  # its name in the report's tables
    level: Level  # "clip": the student predicts per clip; "video": once per video, from K equidistant clips
    ranking: Ranking  # what ``score`` ranks clips by: the confidence logit, the student's entropy; None: no ranking
    needs_confidence_head: bool
    loss: LossFunction  # (ClipBatch or VideoBatch, LossContext) -> (LossTerms, weight of the confidence term)
    uses_teacher_features: bool = False  # matches the teacher's cached features (loads them; may learn a projection)
    steers_lambda: bool = False  # the confidence-term weight follows a budget after every step (BudgetLambda)
    default: bool = False  # trained by `condi-pipe run` and the demo when the configuration names no losses
    summary: str = ""  # the first line of the loss function's docstring

    @property
    def video_level(self) -> bool:
        return self.level == "video"

    def rank_scores(self, logits: np.ndarray, confidence: np.ndarray | None) -> np.ndarray:
        """What this method's sampler ranks clips by (see :func:`ranking_scores`)."""
        if self.ranking is None:
            raise ValueError(f"{self.name} runs predict per video; they do not rank clips")
        if self.ranking == "confidence" and confidence is None:
            raise ValueError(f"{self.name} ranks by confidence but the model has no confidence head")
        return ranking_scores(self.ranking, logits, confidence)


def ranking_scores(ranking: str, logits: np.ndarray, confidence: np.ndarray | None) -> np.ndarray:
    """Clip scores, higher = send to the teacher first: the confidence logit for ``"confidence"`` (the order of
    z~, or of ST-Conf's c, both sigmoids of it; the logit keeps confident clips apart where the sigmoid rounds to
    1.0), minus the student's softmax entropy for ``"entropy"``, the log of the student's largest softmax
    probability for ``"max-prob"`` (SCSampler's saliency; the log keeps the order of the probability)."""
    if ranking == "entropy":
        return -np.asarray(softmax_entropy(np.asarray(logits).astype(np.float64)))
    if ranking == "max-prob":
        return max_log_probability(logits)
    if ranking == "confidence":
        return np.asarray(confidence, np.float64)
    raise ValueError(f"unknown ranking {ranking!r}; choose one of: {', '.join(RANKINGS)}")


def max_log_probability(logits: np.ndarray) -> np.ndarray:
    """(M,) log of each row's largest softmax probability, float64: -log(sum_j exp(l_j - max l)), with the sum
    over the other classes through log1p, so a confident clip's value stays apart from 0 where its probability
    rounds to 1.0.

    >>> max_log_probability(np.log(np.array([[0.5, 0.25, 0.25], [0.05, 0.9, 0.05]]))).round(4).tolist()
    [-0.6931, -0.1054]
    """
    logits = np.asarray(logits, dtype=np.float64)
    if logits.ndim != 2 or logits.shape[1] == 0:
        raise ValueError(f"logits must have shape (M, C) with C >= 1, got {logits.shape}")
    shifted = np.exp(logits - logits.max(axis=1, keepdims=True))
    shifted[np.arange(len(shifted)), logits.argmax(axis=1)] = 0.0  # the top class's own exp(0) = 1, left out
    return -np.log1p(shifted.sum(axis=1))


#: Every method; the built-ins register in ``methods.catalogue``, which ``condi_pipe.methods`` imports.
METHODS: Registry[Method] = Registry("method")


def register_method(
    name: str,
    *,
    display: str,
    level: Level,
    ranking: Ranking,
    needs_confidence_head: bool,
    uses_teacher_features: bool = False,
    steers_lambda: bool = False,
    default: bool = False,
) -> Callable[[LossFunction], LossFunction]:
    """Decorator registering a loss function as method ``name``; returns the function unchanged.

    Clip-level methods must rank clips and video-level ones must not (``score`` ranks every clip of a clip-level
    run); ranking by confidence needs a confidence head.
    """
    _check_identity(name, level, ranking, needs_confidence_head)
    attributes = dict(display=display, level=level, ranking=ranking, needs_confidence_head=needs_confidence_head,
                      uses_teacher_features=uses_teacher_features, steers_lambda=steers_lambda, default=default)

    def decorate(loss: LossFunction) -> LossFunction:
        METHODS.register(name, _method(name, loss, **attributes))
        return loss

    return decorate


def _check_identity(name: str, level: Level, ranking: Ranking, needs_confidence_head: bool) -> None:
    if level not in LEVELS:
        raise ValueError(f"method {name!r}: level must be one of {', '.join(LEVELS)}, got {level!r}")
    if ranking is not None and ranking not in RANKINGS:
        raise ValueError(f"method {name!r}: ranking must be None or one of {', '.join(RANKINGS)}, got {ranking!r}")
    if (ranking is None) != (level == "video"):
        raise ValueError(f"method {name!r}: clip-level methods rank clips and video-level ones do not "
                         f"(level {level!r}, ranking {ranking!r})")
    if ranking == "confidence" and not needs_confidence_head:
        raise ValueError(f"method {name!r} ranks by confidence, so it needs a confidence head")


def _method(name: str, loss: LossFunction, *, display: str, level: Level, ranking: Ranking,
            needs_confidence_head: bool, uses_teacher_features: bool = False, steers_lambda: bool = False,
            default: bool = False) -> Method:
    _check_identity(name, level, ranking, needs_confidence_head)
    return Method(name, display, level, ranking, needs_confidence_head, loss, uses_teacher_features, steers_lambda,
                  default, first_docstring_line(loss))


def unregister_method(name: str) -> Method:
    """Remove method ``name`` from the registry and return it."""
    return METHODS.unregister(name)


@contextmanager
def temporarily_registered(name: str, loss: LossFunction, **attributes: Any) -> Iterator[Method]:
    """Register ``loss`` as method ``name`` (``attributes`` as for :func:`register_method`) for a ``with`` block."""
    with METHODS.temporarily(name, _method(name, loss, **attributes)) as method:
        yield method


def get_method(name: str) -> Method:
    """The method registered under ``name``; UnknownName (a ValueError) listing the known names otherwise."""
    return METHODS.get(name)


def list_methods(level: Level | None = None) -> tuple[Method, ...]:
    """Every registered method (of ``level`` only, if given), in registration order."""
    if level is not None and level not in LEVELS:
        raise ValueError(f"level must be one of {', '.join(LEVELS)}, got {level!r}")
    return tuple(m for m in METHODS.values() if level is None or m.level == level)


def method_names(level: Level | None = None) -> tuple[str, ...]:
    """The names of :func:`list_methods`."""
    return tuple(m.name for m in list_methods(level))


def clip_methods() -> tuple[Method, ...]:
    return list_methods("clip")


def video_methods() -> tuple[Method, ...]:
    return list_methods("video")


def default_method_names() -> tuple[str, ...]:
    """The methods a run trains when its configuration names none."""
    return tuple(m.name for m in METHODS.values() if m.default)
