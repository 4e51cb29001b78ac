"""Every distillation method condi-pipe trains, one registered function each: the loss ``distill`` computes on a
batch, with the method's identity (name, display name, level, ranking, what it needs) in its decorator.

=============  ============================================================  ==============================
loss           trains                                                        ranking (``score``)
=============  ============================================================  ==============================
condi-sr       KD to the confidence-modified teacher target + lam * BCE(z~, z)  z~ = sigmoid(confidence logit)
bce-conf       only BCE(z~, z), majority class downsampled per batch           z~
st-ent         plain soft-label KD (Hinton)                                    lowest student entropy
st-conf        NLL with hints on half the batch + lam * -log c, lam steered    c = sigmoid(confidence logit)
               towards the budget (BudgetLambda, one-hot labels only)
trivial-mt     beta * CE + (1 - beta) * KD + lam * BCE (the cheating ablation)  z~
fewer-frames   video level: the student sees K equidistant clips, averages     none: one prediction per video
               its pooled features, matches the teacher's mean feature over
               all clips (through a learned Linear when widths differ) + KL
               to the teacher's mean softmax + CE
uniform-k      the same student on K equidistant clips, CE only               none
sc-sampler     CE of every clip against its video's label, no teacher         largest student softmax
               (SCSampler's saliency classifier; not a default method)         probability (``max-prob``)
=============  ============================================================  ==============================

A clip-level method gets a :class:`ClipBatch`, a video-level one a :class:`VideoBatch`; both get the run's
:class:`LossContext`. Each returns its :class:`~condi_pipe.methods.losses.LossTerms` and the weight its confidence
term had (NaN when it has none; the history's ``lam`` column). To add a method, register one more function here.

The loss math is in ``methods.losses``, imported inside each function: the registry (which imports this module)
must not load torch.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, NamedTuple, Optional

from condi_pipe.methods.registry import register_method

if TYPE_CHECKING:
    import torch
    from torch import Tensor

    from condi_pipe.methods.losses import BudgetLambda, LossTerms

NO_WEIGHT = math.nan  # the confidence-term weight of a loss without a confidence term


class ClipBatch(NamedTuple):
    """B clips: the student's outputs, the teacher's cached ones, and the clips' labels."""

    logits: Tensor  # (B, C) student logits
    confidence: Optional[Tensor]  # (B,) confidence logits; None without a confidence head
    teacher_logits: Tensor  # (B, C)
    z: Tensor  # (B,) Eq. 1: was the teacher right on the clip
    labels: Tensor  # (B,) the video's class
    generator: torch.Generator  # for the losses that draw (bce-conf's downsampling, st-conf's hints)


class VideoBatch(NamedTuple):
    """B videos, each seen by the student through K equidistant clips."""

    features: Tensor  # (B, D_s) mean of the student's pooled clip features
    logits: Tensor  # (B, C) the student's head on them
    teacher_features: Tensor  # (B, D_t) mean teacher feature over all the video's clips (D_t = 0 if not loaded)
    teacher_probs: Tensor  # (B, C) mean teacher softmax over all the video's clips
    labels: Tensor  # (B,)


@dataclass(frozen=True)
class LossContext:
    """What a loss reads besides its batch: the run's hyperparameters and the state ``distill`` keeps for it."""

    options: Any  # stages.distill.LossOptions
    budget: BudgetLambda  # ST-Conf's lambda, steered after every step
    projection: Optional[Any] = None  # fewer-frames: nn.Linear from the student's feature width to the teacher's
    rep_scale: float = 1.0  # fewer-frames: mean ||E_T||^2 over the training videos (||E_T - E_S||^2 is divided by it)


@register_method("condi-sr", display="ConDi-SR", level="clip", ranking="confidence", needs_confidence_head=True,
                 default=True)
def condi_sr(batch: ClipBatch, context: LossContext) -> tuple[LossTerms, float]:
    """KD to the confidence-modified teacher target + lam * BCE(z~, z) (Eqs. 2-8)."""
    from condi_pipe.methods.losses import condi_sr_loss

    o = context.options
    return condi_sr_loss(batch.logits, batch.confidence, batch.teacher_logits, batch.z, o.tau, o.lam, o.mu,
                         o.detach_confidence), o.lam


@register_method("bce-conf", display="BCE-Conf", level="clip", ranking="confidence", needs_confidence_head=True,
                 default=True)
def bce_conf(batch: ClipBatch, context: LossContext) -> tuple[LossTerms, float]:
    """Only BCE(z~, z), the majority class downsampled per batch."""
    from condi_pipe.methods.losses import bce_conf_loss

    return bce_conf_loss(batch.confidence, batch.z, batch.generator, context.options.downsample), NO_WEIGHT


@register_method("st-ent", display="ST-Ent", level="clip", ranking="entropy", needs_confidence_head=False,
                 default=True)
def st_ent(batch: ClipBatch, context: LossContext) -> tuple[LossTerms, float]:
    """Plain soft-label KD (Hinton); clips ranked by lowest student entropy."""
    from condi_pipe.methods.losses import st_ent_loss

    return st_ent_loss(batch.logits, batch.teacher_logits, context.options.tau), NO_WEIGHT


@register_method("st-conf", display="ST-Conf", level="clip", ranking="confidence", needs_confidence_head=True,
                 steers_lambda=True, default=True)
def st_conf(batch: ClipBatch, context: LossContext) -> tuple[LossTerms, float]:
    """NLL with hints on part of the batch + lam * -log c, lam steered towards the budget (one-hot labels only)."""
    from condi_pipe.methods.losses import st_conf_loss

    lam = context.budget.value
    return st_conf_loss(batch.logits, batch.confidence, batch.labels, lam, context.options.hint_fraction,
                        batch.generator), lam


@register_method("trivial-mt", display="Trivial-MT", level="clip", ranking="confidence", needs_confidence_head=True)
def trivial_mt(batch: ClipBatch, context: LossContext) -> tuple[LossTerms, float]:
    """beta * CE + (1 - beta) * KD + lam * BCE: the cheating ablation."""
    from condi_pipe.methods.losses import trivial_mt_loss

    o = context.options
    return trivial_mt_loss(batch.logits, batch.confidence, batch.teacher_logits, batch.labels, batch.z, o.beta,
                           o.tau, o.lam, o.mu), o.lam


@register_method("fewer-frames", display="Fewer-frames", level="video", ranking=None, needs_confidence_head=False,
                 uses_teacher_features=True)
def fewer_frames(batch: VideoBatch, context: LossContext) -> tuple[LossTerms, float]:
    """Match the teacher's mean feature and mean softmax over all clips from K clips, + CE (Bhardwaj et al.)."""
    from condi_pipe.methods.losses import fewer_frames_loss

    o = context.options
    return fewer_frames_loss(batch.features, batch.teacher_features, batch.logits, batch.teacher_probs, batch.labels,
                             context.projection, o.alpha_rep / context.rep_scale, o.alpha_kl, o.alpha_ce), NO_WEIGHT


@register_method("uniform-k", display="Uniform-k", level="video", ranking=None, needs_confidence_head=False)
def uniform_k(batch: VideoBatch, context: LossContext) -> tuple[LossTerms, float]:
    """CE on K equidistant clips, no teacher."""
    from condi_pipe.methods.losses import uniform_k_loss

    return uniform_k_loss(batch.logits, batch.labels), NO_WEIGHT


@register_method("sc-sampler", display="SCSampler", level="clip", ranking="max-prob", needs_confidence_head=False)
def sc_sampler(batch: ClipBatch, context: LossContext) -> tuple[LossTerms, float]:
    """CE of every clip against its video's label, no teacher; clips ranked by the largest softmax probability."""
    from condi_pipe.methods.losses import sc_sampler_loss

    return sc_sampler_loss(batch.logits, batch.labels), NO_WEIGHT
