"""Clip rankings that read a video's context: a clip's score also depends on what the student says of the
video's other clips, computed from the student's stored outputs at no model cost.

ConDi's z~ judges each clip alone. A *distractor* clip (the labelled object hidden, another object performing
another class) looks like a confident, clean clip to a student that sees only that clip, but its class disagrees
with what the rest of the video shows. The video's *consensus* is the argmax of the mean student softmax over
its clips; a clip's *agreement* is the student's probability of that class on the clip.

    get_context_ranking("consensus").scores(rank_score, student_logits, offsets)

Each ranking maps the run's stored per-clip ``rank_score`` (the confidence logit for confidence-ranked runs),
its student logits and the videos' CSR ``offsets`` to new per-clip scores, higher = send to the teacher first.
``score`` evaluates every registered ranking on the validation part carved from train and records which one
selects best (:func:`choose_on_validation`); the report shows the chosen one beside the paper's ranking, named
as such. No torch here: the report and the CLI import it.

>>> logits = np.log(np.array([[0.8, 0.2], [0.7, 0.3], [0.1, 0.9]]))
>>> get_context_ranking("consensus").scores(np.zeros(3), logits, np.array([0, 3])).round(3)
array([-0.223, -0.357, -2.303])
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np

from condi_pipe.methods.samplers import rank_within_videos, ranked_predictions_for_ks, video_ids
from condi_pipe.registry import Registry, first_docstring_line

#: The paper's own ranking (the run's stored rank_score), always a candidate and the tie-breaker.
OWN_RANKING = "own"
#: The clip budgets a ranking is judged at on validation: the small K where selection matters.
VALIDATION_KS = (1, 2, 3, 4, 5)


def log_softmax(logits: np.ndarray) -> np.ndarray:
    logits = np.asarray(logits, dtype=np.float64)
    shifted = logits - logits.max(axis=1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))


def log_sigmoid(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    return -np.logaddexp(0.0, -x)  # exact for large |x|, where log(sigmoid(x)) rounds to 0 or -inf


def consensus_log_agreement(student_logits: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    """(M,) log of each clip's student probability of its video's consensus class (the argmax of the video's mean
    student softmax)."""
    log_probs = log_softmax(student_logits)
    probs = np.exp(log_probs)
    offsets = np.asarray(offsets, dtype=np.int64)
    owner = video_ids(offsets)
    sums = np.add.reduceat(probs, offsets[:-1], axis=0) if len(probs) else probs
    consensus = sums.argmax(axis=1)  # the mean's argmax: the sum's, per video
    return log_probs[np.arange(len(owner)), consensus[owner]]


@dataclass(frozen=True)
class ContextRanking:
    name: str
    summary: str  # the first line of the function's docstring
    needs_confidence: bool  # combines the run's confidence logit (only for confidence-ranked runs)
    function: Callable[[np.ndarray, np.ndarray, np.ndarray], np.ndarray]

    def scores(self, rank_score: np.ndarray, student_logits: np.ndarray, offsets: np.ndarray) -> np.ndarray:
        out = np.asarray(self.function(np.asarray(rank_score, np.float64), student_logits, offsets), np.float64)
        if out.shape != (len(student_logits),):
            raise ValueError(f"context ranking {self.name!r} returned shape {out.shape} for "
                             f"{len(student_logits)} clips")
        return out


#: Every context ranking; the built-ins below register when this module is imported.
CONTEXT_RANKINGS: Registry[ContextRanking] = Registry("context ranking")


def register_context_ranking(name: str, *, needs_confidence: bool):
    """Decorator registering ``fn(rank_score, student_logits, offsets) -> scores`` as ranking ``name``."""
    if name == OWN_RANKING:
        raise ValueError(f"context ranking {name!r} is the name of the run's own ranking; choose another")

    def decorate(fn):
        CONTEXT_RANKINGS.register(name, ContextRanking(name, first_docstring_line(fn), needs_confidence, fn))
        return fn

    return decorate


def get_context_ranking(name: str) -> ContextRanking:
    return CONTEXT_RANKINGS.get(name)


def context_ranking_names(confidence_ranked: bool = True) -> tuple[str, ...]:
    """The rankings that apply to a run ranked by confidence (all) or by something else (those without z~)."""
    return tuple(r.name for r in CONTEXT_RANKINGS.values() if confidence_ranked or not r.needs_confidence)


@register_context_ranking("consensus", needs_confidence=False)
def consensus(rank_score: np.ndarray, student_logits: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    """The student's probability of the video's consensus class on the clip (z~ unused)."""
    return consensus_log_agreement(student_logits, offsets)


@register_context_ranking("z-consensus", needs_confidence=True)
def confidence_times_consensus(rank_score: np.ndarray, student_logits: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    """z~ times the clip's agreement with the video's consensus class (summed in log space)."""
    return log_sigmoid(rank_score) + consensus_log_agreement(student_logits, offsets)


def ranking_accuracy(scores: np.ndarray, teacher_probs: np.ndarray, labels: np.ndarray, offsets: np.ndarray,
                     ks: Sequence[int]) -> dict[int, float]:
    """Video accuracy (0..1) of sending each video's top-K clips by ``scores`` to the teacher, for every K."""
    ranks = rank_within_videos(np.asarray(scores, np.float64), offsets)
    predictions = ranked_predictions_for_ks(teacher_probs, offsets, ranks, list(ks))
    return {int(k): float((predictions[k] == np.asarray(labels)).mean()) for k in ks}


def choose_on_validation(rank_score: np.ndarray, student_logits: np.ndarray, teacher_probs: np.ndarray,
                         labels: np.ndarray, offsets: np.ndarray, *, confidence_ranked: bool,
                         ks: Sequence[int] = VALIDATION_KS) -> dict:
    """Every applicable ranking (the run's own first) judged on validation videos by its mean video accuracy over
    ``ks``; the best wins, ties to the earlier (the own ranking first). Returns a JSON-ready record."""
    candidates = {OWN_RANKING: np.asarray(rank_score, np.float64)}
    for name in context_ranking_names(confidence_ranked):
        candidates[name] = get_context_ranking(name).scores(rank_score, student_logits, offsets)
    judged = {}
    for name, scores in candidates.items():
        per_k = ranking_accuracy(scores, teacher_probs, labels, offsets, ks)
        judged[name] = {"mean_accuracy": float(np.mean(list(per_k.values()))),
                        "accuracy": {str(k): v for k, v in per_k.items()}}
    chosen = max(judged, key=lambda n: (judged[n]["mean_accuracy"], -list(judged).index(n)))
    return {"chosen": chosen, "ks": [int(k) for k in ks], "videos": int(len(offsets) - 1),
            "criterion": f"mean video accuracy over K = {', '.join(map(str, ks))} on the validation part",
            "candidates": judged}
