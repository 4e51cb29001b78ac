"""Model-free training losses of Confidence Distillation (ConDi) and of the baselines it is compared with.

Equation numbers refer to Manzuri Shalmani et al., "Efficient Action Recognition Using Confidence Distillation"
(arXiv 2109.02137), summarised in ``docs/method.md``. Every loss takes plain tensors and returns :class:`LossTerms`, so a
training loop can log each term the same way whichever method it trains.

Shapes: ``B`` samples (clips, or videos for the fewer-frames losses), ``C`` classes. Logits are ``(B, C)``; a
confidence logit is ``(B,)`` or ``(B, 1)``; binary targets ``z`` are ``(B,)`` with values in {0, 1} (bool, int or
float); class labels are ``(B,)`` integers. Teacher tensors are used as given: compute them under ``no_grad`` (or
load them from the cache) so no gradient reaches the teacher.

All log-probabilities are computed with ``log_softmax``/``logsigmoid``/``logaddexp`` rather than ``log`` of a
probability, so no term is ``inf``/``nan`` for saturated logits in float32.
"""

from __future__ import annotations

import math
from typing import Callable, NamedTuple, Optional, Union

import torch
import torch.nn.functional as F
from torch import Tensor

# Paper values (docs/method.md): tau = 0.9 ("larger did not converge"), lambda in {0.5, 1.5, 2.0}, mu = 1.5.
DEFAULT_TAU = 0.9
DEFAULT_LAMBDA = 1.5
DEFAULT_MU = 1.5

__all__ = [
    "DEFAULT_TAU",
    "DEFAULT_LAMBDA",
    "DEFAULT_MU",
    "LossTerms",
    "BudgetLambda",
    "modified_teacher_log_targets",
    "confidence_bce",
    "condi_sr_loss",
    "bce_conf_loss",
    "st_ent_loss",
    "st_conf_loss",
    "trivial_mt_loss",
    "fewer_frames_loss",
    "uniform_k_loss",
    "sc_sampler_loss",
]


class LossTerms(NamedTuple):
    """Every term of a loss, each a scalar tensor stored *before* its weight; terms a loss lacks are zero.

    ``total`` is the weighted sum that is back-propagated. ``conf`` is the confidence term: the (mu-weighted) BCE
    of z~ against z for ConDi-SR, the trivial multi-task loss and BCE-Conf, and mean(-log c) for ST-Conf.
    ``num_samples`` is how many samples contributed (fewer than the batch only after BCE-Conf's downsampling).
    """

    total: Tensor
    kd: Tensor  # distillation KL, already multiplied by tau^2 where the method does
    conf: Tensor
    ce: Tensor  # cross-entropy / NLL against the hard labels
    rep: Tensor  # fewer-frames representation distance ||E_T - E_S||^2
    num_samples: int

    def to_floats(self) -> dict[str, float]:
        """All terms as Python numbers, for logging (one device sync per term)."""
        return {
            name: (value if isinstance(value, int) else float(value.detach()))
            for name, value in self._asdict().items()
        }


def _terms(reference: Tensor, num_samples: int, **values: Tensor) -> LossTerms:
    """Build :class:`LossTerms` with zeros (dtype/device of ``reference``) for the terms not given."""
    zero = reference.new_zeros(())
    fields = {name: values.get(name, zero) for name in ("total", "kd", "conf", "ce", "rep")}
    return LossTerms(**fields, num_samples=num_samples)


# --------------------------------------------------------------------------------------------- input checks


def _check_logits(logits: Tensor, name: str) -> None:
    if logits.ndim != 2 or logits.shape[0] == 0:
        raise ValueError(f"{name} must have shape (B, C) with B >= 1, got {tuple(logits.shape)}")


def _confidence_vector(confidence_logit: Tensor, batch: int) -> Tensor:
    """Accept a confidence logit of shape (B,) or (B, 1); return (B,)."""
    if confidence_logit.ndim == 2 and confidence_logit.shape[1] == 1:
        confidence_logit = confidence_logit[:, 0]
    if confidence_logit.shape != (batch,):
        raise ValueError(f"confidence_logit must have shape ({batch},) or ({batch}, 1), got "
                         f"{tuple(confidence_logit.shape)}")
    return confidence_logit


def _binary_targets(z: Tensor, batch: int, like: Tensor) -> Tensor:
    """Validate z in {0, 1} with shape (B,); return it as a float tensor shaped like ``like``."""
    if z.shape != (batch,):
        raise ValueError(f"z must have shape ({batch},), got {tuple(z.shape)}")
    if not bool(((z == 0) | (z == 1)).all()):
        raise ValueError("z must contain only 0 and 1 (Eq. 1 confidence labels)")
    return z.to(dtype=like.dtype, device=like.device)


def _check_labels(labels: Tensor, batch: int) -> None:
    if labels.shape != (batch,):
        raise ValueError(f"labels must have shape ({batch},), got {tuple(labels.shape)}")


def _check_temperature(tau: float) -> None:
    if not tau > 0:
        raise ValueError(f"temperature tau must be > 0, got {tau}")


# ------------------------------------------------------------------------------------------ shared pieces


def _kl_from_log_probs(log_target: Tensor, log_prediction: Tensor) -> Tensor:
    """KL(target || prediction) per row, summed over classes, from log-probabilities.

    exp(log_target) may underflow to 0, and 0 * finite = 0, so this is the stable form of sum p log(p/q).
    """
    return (log_target.exp() * (log_target - log_prediction)).sum(dim=-1)


def modified_teacher_log_targets(
    teacher_logits: Tensor,
    confidence_logit: Tensor,
    z: Tensor,
    tau: float = DEFAULT_TAU,
    detach_confidence: bool = False,
) -> Tensor:
    """log p^t of Eq. 5, shape (B, C).

    p^t = z~ p~t + (1 - z~) U if z = 1 and (1 - z~) p~t + z~ U if z = 0, with p~t = softmax(s_t / tau),
    z~ = sigmoid(c) and U = 1/C. Both cases are w p~t + (1 - w) U with w = sigmoid(a), a = c if z = 1 else -c
    (because 1 - sigmoid(c) = sigmoid(-c)), which lets us work in log space:
    log p^t = logaddexp(log w + log p~t, log(1 - w) - log C). This is finite even when sigmoid saturates, so
    neither KL nor its gradient becomes nan (a plain xlogy(p^t, p^t) has a 0/0 gradient when p^t = 0).
    """
    _check_logits(teacher_logits, "teacher_logits")
    _check_temperature(tau)
    batch, num_classes = teacher_logits.shape
    c = _confidence_vector(confidence_logit, batch)
    if detach_confidence:
        c = c.detach()
    z_float = _binary_targets(z, batch, c)
    a = torch.where(z_float > 0.5, c, -c)
    log_teacher = F.log_softmax(teacher_logits / tau, dim=-1)
    log_weight = F.logsigmoid(a).unsqueeze(-1)
    log_one_minus_weight = F.logsigmoid(-a).unsqueeze(-1)
    return torch.logaddexp(log_weight + log_teacher, log_one_minus_weight - math.log(num_classes))


def confidence_bce(confidence_logit: Tensor, z: Tensor, mu: float = DEFAULT_MU) -> Tensor:
    """L_conf of Eq. 6: mean over the batch of -(mu z log z~ + (1 - z) log(1 - z~)), z~ = sigmoid(c).

    Written with logsigmoid (log z~ = logsigmoid(c), log(1 - z~) = logsigmoid(-c)) so it is exact for large |c|.
    mu > 1 up-weights the positives; mu = 1 is the plain BCE.
    """
    c = _confidence_vector(confidence_logit, confidence_logit.shape[0])
    z_float = _binary_targets(z, c.shape[0], c)
    per_sample = -(mu * z_float * F.logsigmoid(c) + (1.0 - z_float) * F.logsigmoid(-c))
    return per_sample.mean()


# ----------------------------------------------------------------------------------------------- ConDi-SR


def condi_sr_loss(
    student_logits: Tensor,
    confidence_logit: Tensor,
    teacher_logits: Tensor,
    z: Tensor,
    tau: float = DEFAULT_TAU,
    lam: float = DEFAULT_LAMBDA,
    mu: float = DEFAULT_MU,
    detach_confidence: bool = False,
) -> LossTerms:
    """ConDi-SR loss, Eqs. 2-8: L = L_KD(p^t, p~s) + lam * L_conf.

    L_KD = tau^2 * KL(p^t || p~s), summed over classes and averaged over the batch (Eqs. 7-8), with p^t the
    confidence-modified teacher target of Eq. 5 and p~s = softmax(s_s / tau). By default z~ is *not* detached
    inside p^t, so the KD term also trains the confidence head (the BCE term keeps it from collapsing to 0);
    ``detach_confidence=True`` stops that gradient and leaves only L_conf training the head.
    """
    _check_logits(student_logits, "student_logits")
    if teacher_logits.shape != student_logits.shape:
        raise ValueError(f"teacher_logits {tuple(teacher_logits.shape)} and student_logits "
                         f"{tuple(student_logits.shape)} must have the same shape")
    log_target = modified_teacher_log_targets(teacher_logits, confidence_logit, z, tau, detach_confidence)
    log_student = F.log_softmax(student_logits / tau, dim=-1)
    kd = tau**2 * _kl_from_log_probs(log_target, log_student).mean()
    conf = confidence_bce(confidence_logit, z, mu)
    return _terms(kd, student_logits.shape[0], total=kd + lam * conf, kd=kd, conf=conf)


def trivial_mt_loss(
    student_logits: Tensor,
    confidence_logit: Tensor,
    teacher_logits: Tensor,
    labels: Tensor,
    z: Tensor,
    beta: float = 0.5,
    tau: float = DEFAULT_TAU,
    lam: float = DEFAULT_LAMBDA,
    mu: float = DEFAULT_MU,
) -> LossTerms:
    """Ablation "trivial multi-task": L = beta * CE + (1 - beta) * KD + lam * L_conf.

    KD is the *unmodified* tau^2 * KL(p~t || p~s) and L_conf the same mu-weighted BCE as ConDi-SR. Nothing ties
    the confidence head to what the student distils, so the paper finds its ranking no better than random.
    """
    _check_logits(student_logits, "student_logits")
    batch = student_logits.shape[0]
    _check_labels(labels, batch)
    ce = F.cross_entropy(student_logits, labels)
    kd = st_ent_loss(student_logits, teacher_logits, tau).kd
    conf = confidence_bce(confidence_logit, z, mu)
    total = beta * ce + (1.0 - beta) * kd + lam * conf
    return _terms(kd, batch, total=total, kd=kd, conf=conf, ce=ce)


# ---------------------------------------------------------------------------------------------- baselines


def bce_conf_loss(
    confidence_logit: Tensor,
    z: Tensor,
    generator: Optional[torch.Generator] = None,
    downsample: bool = True,
) -> LossTerms:
    """BCE-Conf baseline: plain BCE of z~ = sigmoid(c) against the teacher's z, nothing else.

    With ``downsample`` the majority class of the batch is randomly subsampled (``generator``) to the minority
    count, so the loss sees as many z = 1 as z = 0 samples. If a class is absent from the batch there is nothing
    to balance against, so all samples are used. ``num_samples`` reports how many were kept.
    """
    batch = confidence_logit.shape[0]
    c = _confidence_vector(confidence_logit, batch)
    z_float = _binary_targets(z, batch, c)
    positives = torch.nonzero(z_float > 0.5).flatten()
    negatives = torch.nonzero(z_float <= 0.5).flatten()
    keep_count = min(len(positives), len(negatives))
    if downsample and keep_count > 0:
        kept = []
        for indices in (positives, negatives):
            # randperm on the generator's device keeps draws reproducible; move the result next to the data
            device = generator.device if generator is not None else torch.device("cpu")
            order = torch.randperm(len(indices), generator=generator, device=device)[:keep_count]
            kept.append(indices[order.to(indices.device)])
        keep = torch.cat(kept)
        c, z_float = c[keep], z_float[keep]
    bce = F.binary_cross_entropy_with_logits(c, z_float)
    return _terms(bce, int(c.shape[0]), total=bce, conf=bce)


def st_ent_loss(student_logits: Tensor, teacher_logits: Tensor, tau: float = DEFAULT_TAU) -> LossTerms:
    """ST-Ent student: plain soft-label KD (Hinton et al.), tau^2 * KL(softmax(t/tau) || softmax(s/tau)).

    Summed over classes, mean over the batch, no hard-label term. The default tau is ConDi-SR's 0.9 rather than
    Hinton's usual 2-20, so that ST-Ent differs from ConDi-SR only in the Eq. 5 target and the confidence head
    (the paper reports that larger tau did not converge in this setting). Clips are later ranked by the
    student's entropy at temperature 1.
    """
    _check_logits(student_logits, "student_logits")
    _check_temperature(tau)
    if teacher_logits.shape != student_logits.shape:
        raise ValueError(f"teacher_logits {tuple(teacher_logits.shape)} and student_logits "
                         f"{tuple(student_logits.shape)} must have the same shape")
    log_teacher = F.log_softmax(teacher_logits / tau, dim=-1)
    log_student = F.log_softmax(student_logits / tau, dim=-1)
    kd = tau**2 * _kl_from_log_probs(log_teacher, log_student).mean()
    return _terms(kd, student_logits.shape[0], total=kd, kd=kd)


def st_conf_loss(
    student_logits: Tensor,
    confidence_logit: Tensor,
    labels: Tensor,
    lam: float,
    hint_fraction: float = 0.5,
    generator: Optional[torch.Generator] = None,
) -> LossTerms:
    """ST-Conf baseline (DeVries & Taylor 2018): NLL(p') + lam * mean(-log c), trained on one-hot labels only.

    c = sigmoid(confidence_logit). A random subset of round(hint_fraction * B) samples (exactly that many, drawn
    with ``generator``; the reference code draws a Bernoulli per sample instead) gets hints
    p' = c p + (1 - c) onehot(y); the others use p. Only p'_y enters the NLL, computed in log space as
    log p'_y = logaddexp(log c + log p_y, log(1 - c)). The -log c term is averaged over the whole batch, as in the
    reference code. ``conf`` holds mean(-log c) before lam: feed it to :meth:`BudgetLambda.update`.
    """
    _check_logits(student_logits, "student_logits")
    if not 0.0 <= hint_fraction <= 1.0:
        raise ValueError(f"hint_fraction must be in [0, 1], got {hint_fraction}")
    batch = student_logits.shape[0]
    _check_labels(labels, batch)
    c = _confidence_vector(confidence_logit, batch)
    log_p_true = F.log_softmax(student_logits, dim=-1).gather(1, labels.long().unsqueeze(1)).squeeze(1)
    log_c = F.logsigmoid(c)
    log_p_hinted = torch.logaddexp(log_c + log_p_true, F.logsigmoid(-c))

    hint_count = int(math.floor(hint_fraction * batch + 0.5))
    device = generator.device if generator is not None else torch.device("cpu")
    hinted = torch.randperm(batch, generator=generator, device=device)[:hint_count].to(c.device)
    is_hinted = torch.zeros(batch, dtype=torch.bool, device=c.device)
    is_hinted[hinted] = True

    nll = -torch.where(is_hinted, log_p_hinted, log_p_true).mean()
    negative_log_confidence = -log_c.mean()
    return _terms(nll, batch, total=nll + lam * negative_log_confidence, conf=negative_log_confidence, ce=nll)


class BudgetLambda:
    """ST-Conf's lambda, steered each step towards the budget beta on mean(-log c) (DeVries & Taylor 2018).

    As in the reference implementation: if mean(-log c) < budget the network asks for few hints, so the penalty
    is relaxed, lam /= factor (1.01); otherwise (>= budget) it is raised, lam /= (2 - factor) (0.99 for 1.01).
    """

    def __init__(self, initial: float = 0.1, budget: float = 0.3, factor: float = 1.01) -> None:
        if not (initial > 0 and budget > 0 and 1.0 < factor < 2.0):
            raise ValueError("need initial > 0, budget > 0 and 1 < factor < 2")
        self.value = float(initial)
        self.budget = float(budget)
        self.factor = float(factor)

    def update(self, conf_term: Union[float, Tensor]) -> float:
        """Adjust lambda from this step's mean(-log c) (``LossTerms.conf`` of :func:`st_conf_loss`); return it."""
        if isinstance(conf_term, Tensor):
            conf_term = float(conf_term.detach())
        if conf_term < self.budget:
            self.value /= self.factor
        else:
            self.value /= 2.0 - self.factor
        return self.value

    def state_dict(self) -> dict[str, float]:
        return {"value": self.value, "budget": self.budget, "factor": self.factor}

    def load_state_dict(self, state: dict[str, float]) -> None:
        self.value = float(state["value"])
        self.budget = float(state["budget"])
        self.factor = float(state["factor"])

    def __repr__(self) -> str:
        return f"BudgetLambda(value={self.value:.6g}, budget={self.budget}, factor={self.factor})"


# ------------------------------------------------------------------------------------ fewer frames (Bhardwaj)


def fewer_frames_loss(
    student_video_features: Tensor,
    teacher_video_features: Tensor,
    student_video_logits: Tensor,
    teacher_mean_probs: Tensor,
    labels: Tensor,
    projection: Optional[Callable[[Tensor], Tensor]] = None,
    alpha_rep: float = 1.0,
    alpha_kl: float = 1.0,
    alpha_ce: float = 1.0,
) -> LossTerms:
    """Fewer-frames student (Bhardwaj et al. 2019): alpha_rep ||E_T - E_S||^2 + alpha_kl KL(P_T || P_S) + alpha_ce CE.

    E_S, E_T are video-level features (B, D_s) and (B, D_t); ``projection`` (e.g. an ``nn.Linear(D_s, D_t)``)
    maps the student's to the teacher's width and is required when they differ. The squared distance is summed
    over dimensions and averaged over the batch. P_T is the teacher's mean clip softmax over *all* clips (B, C),
    P_S = softmax(student_video_logits); KL is summed over classes, mean over the batch, at temperature 1.
    """
    _check_logits(student_video_logits, "student_video_logits")
    batch = student_video_logits.shape[0]
    _check_labels(labels, batch)
    projected = projection(student_video_features) if projection is not None else student_video_features
    if projected.shape != teacher_video_features.shape or projected.shape[0] != batch:
        raise ValueError(f"student features {tuple(projected.shape)} (after projection) must match teacher "
                         f"features {tuple(teacher_video_features.shape)} with batch {batch}; "
                         "pass a projection when the widths differ")
    if teacher_mean_probs.shape != student_video_logits.shape:
        raise ValueError(f"teacher_mean_probs {tuple(teacher_mean_probs.shape)} must match student logits "
                         f"{tuple(student_video_logits.shape)}")
    rep = (teacher_video_features - projected).pow(2).sum(dim=-1).mean()
    log_student = F.log_softmax(student_video_logits, dim=-1)
    # xlogy gives 0 log 0 = 0 for classes the teacher rules out entirely
    kl = (torch.xlogy(teacher_mean_probs, teacher_mean_probs) - teacher_mean_probs * log_student).sum(-1).mean()
    ce = F.cross_entropy(student_video_logits, labels)
    total = alpha_rep * rep + alpha_kl * kl + alpha_ce * ce
    return _terms(ce, batch, total=total, kd=kl, ce=ce, rep=rep)


def uniform_k_loss(student_video_logits: Tensor, labels: Tensor) -> LossTerms:
    """Uniform-k / Random-k / First-Middle-Last-k baselines: cross-entropy only, no teacher."""
    _check_logits(student_video_logits, "student_video_logits")
    _check_labels(labels, student_video_logits.shape[0])
    ce = F.cross_entropy(student_video_logits, labels)
    return _terms(ce, student_video_logits.shape[0], total=ce, ce=ce)


# ------------------------------------------------------------------------------------- SCSampler (Korbar et al.)


def sc_sampler_loss(student_logits: Tensor, labels: Tensor) -> LossTerms:
    """SCSampler's saliency classifier (Korbar et al., ICCV 2019): cross-entropy of each clip against its video's
    label, mean over the batch; no teacher, no confidence term.

    Every clip of a video carries the video's label, the uninformative ones too: the classifier learns to be
    confident only on clips that show their class, and its largest softmax probability ranks the clips
    (the registry's ``"max-prob"`` ranking).
    """
    _check_logits(student_logits, "student_logits")
    _check_labels(labels, student_logits.shape[0])
    ce = F.cross_entropy(student_logits, labels.long())
    return _terms(ce, student_logits.shape[0], total=ce, ce=ce)
