"""Each loss against an independent float64 NumPy computation written out term by term, plus gradient checks."""

import math

import numpy as np
import pytest
import torch

from condi_pipe.methods.losses import (
    BudgetLambda,
    LossTerms,
    bce_conf_loss,
    condi_sr_loss,
    fewer_frames_loss,
    st_conf_loss,
    st_ent_loss,
    trivial_mt_loss,
    uniform_k_loss,
)

SEEDS = [0, 1, 2]
CLASS_COUNTS = [10, 101]


# ------------------------------------------------------------------------------------- plain references


def softmax(row):
    e = np.exp(row - row.max())
    return e / e.sum()


def sigmoid(x):
    return 1.0 / (1.0 + math.exp(-x))


def reference_condi_sr(s, c, t, z, tau, lam, mu):
    """Eqs. 2-8 written out with loops."""
    batch, classes = s.shape
    kd = conf = 0.0
    for b in range(batch):
        p_teacher = softmax(t[b] / tau)
        p_student = softmax(s[b] / tau)
        z_tilde = sigmoid(c[b])
        if z[b] == 1:
            target = z_tilde * p_teacher + (1 - z_tilde) / classes
        else:
            target = (1 - z_tilde) * p_teacher + z_tilde / classes
        kd += sum(target[j] * (math.log(target[j]) - math.log(p_student[j])) for j in range(classes))
        conf += -(mu * z[b] * math.log(z_tilde) + (1 - z[b]) * math.log(1 - z_tilde))
    kd = tau**2 * kd / batch
    conf = conf / batch
    return kd + lam * conf, kd, conf


def reference_kd(s, t, tau):
    total = 0.0
    for b in range(s.shape[0]):
        p, q = softmax(t[b] / tau), softmax(s[b] / tau)
        total += np.sum(p * (np.log(p) - np.log(q)))
    return tau**2 * total / s.shape[0]


def reference_ce(s, labels):
    return float(np.mean([-math.log(softmax(s[b])[labels[b]]) for b in range(s.shape[0])]))


def random_batch(seed, classes, batch=8, positives=None):
    rng = np.random.default_rng(seed)
    s = rng.normal(0, 3, (batch, classes))
    t = rng.normal(0, 3, (batch, classes))
    c = rng.normal(0, 2, batch)
    z = rng.integers(0, 2, batch) if positives is None else np.full(batch, positives)
    labels = rng.integers(0, classes, batch)
    return s, c, t, z, labels


def tensors(*arrays, dtype=torch.float64):
    return [torch.tensor(a, dtype=dtype) for a in arrays]


# ------------------------------------------------------------------------------------------------ ConDi-SR


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("classes", CLASS_COUNTS)
@pytest.mark.parametrize("tau,lam,mu", [(0.9, 1.5, 1.5), (2.0, 0.5, 1.0), (0.5, 2.0, 3.0)])
def test_condi_sr_matches_plain_formula(seed, classes, tau, lam, mu):
    s, c, t, z, _ = random_batch(seed, classes)
    terms = condi_sr_loss(*tensors(s, c, t), torch.tensor(z), tau=tau, lam=lam, mu=mu)
    total, kd, conf = reference_condi_sr(s, c, t, z, tau, lam, mu)
    assert isinstance(terms, LossTerms)
    assert terms.total.item() == pytest.approx(total, rel=1e-10)
    assert terms.kd.item() == pytest.approx(kd, rel=1e-10)
    assert terms.conf.item() == pytest.approx(conf, rel=1e-10)
    assert terms.ce.item() == 0.0 and terms.rep.item() == 0.0
    assert terms.num_samples == len(z)


@pytest.mark.parametrize("positives", [0, 1])
@pytest.mark.parametrize("classes", CLASS_COUNTS)
def test_condi_sr_all_one_class(positives, classes):
    s, c, t, z, _ = random_batch(7, classes, positives=positives)
    terms = condi_sr_loss(*tensors(s, c, t), torch.tensor(z, dtype=torch.bool))
    total, kd, conf = reference_condi_sr(s, c, t, z, 0.9, 1.5, 1.5)
    assert terms.total.item() == pytest.approx(total, rel=1e-10)
    assert terms.kd.item() == pytest.approx(kd, rel=1e-10)


def test_condi_sr_float32_matches_float64_and_accepts_column_confidence():
    s, c, t, z, _ = random_batch(3, 10)
    terms32 = condi_sr_loss(*tensors(s, c[:, None], t, dtype=torch.float32), torch.tensor(z))
    terms64 = condi_sr_loss(*tensors(s, c, t), torch.tensor(z))
    assert terms32.total.item() == pytest.approx(terms64.total.item(), rel=1e-5)


def test_mu_changes_loss_only_through_positives():
    s, c, t, z, _ = random_batch(4, 10)
    args = (*tensors(s, c, t), torch.tensor(z))
    low, high = condi_sr_loss(*args, mu=1.0), condi_sr_loss(*args, mu=2.5)
    assert low.kd.item() == pytest.approx(high.kd.item(), rel=1e-12)
    positive_log_loss = np.mean([-z[b] * math.log(sigmoid(c[b])) for b in range(len(z))])
    assert high.conf.item() - low.conf.item() == pytest.approx(1.5 * positive_log_loss, rel=1e-9)
    # without positives mu has no effect at all
    negatives = (*tensors(s, c, t), torch.zeros(len(z)))
    assert condi_sr_loss(*negatives, mu=1.0).total.item() == pytest.approx(
        condi_sr_loss(*negatives, mu=2.5).total.item(), rel=1e-12)


def test_kd_gradient_reaches_confidence_unless_detached():
    s, c, t, z, _ = random_batch(5, 10)
    s_t, t_t = tensors(s, t)
    s_t.requires_grad_()  # so KD has a graph even when it does not depend on c
    for detach in (False, True):
        c_t = torch.tensor(c, requires_grad=True)
        terms = condi_sr_loss(s_t, c_t, t_t, torch.tensor(z), detach_confidence=detach)
        (kd_grad,) = torch.autograd.grad(terms.kd, c_t, retain_graph=True, allow_unused=True,
                                         materialize_grads=True)
        (conf_grad,) = torch.autograd.grad(terms.conf, c_t)
        if detach:
            assert torch.all(kd_grad == 0)
        else:
            assert torch.all(kd_grad != 0)
        assert torch.all(conf_grad != 0)  # L_conf always trains the head
    # detaching changes gradients, never the value
    a = condi_sr_loss(*tensors(s, c, t), torch.tensor(z))
    b = condi_sr_loss(*tensors(s, c, t), torch.tensor(z), detach_confidence=True)
    assert a.total.item() == b.total.item()


def test_condi_sr_gradcheck():
    s, c, t, z, _ = random_batch(6, 5, batch=4)
    z[:2] = [0, 1]  # both branches of Eq. 5
    inputs = [torch.tensor(a, requires_grad=True) for a in (s, c, t)]
    z_t = torch.tensor(z)

    def total(student, confidence, teacher):
        return condi_sr_loss(student, confidence, teacher, z_t, tau=0.9, lam=1.5, mu=1.5).total

    def detached_total(student, confidence, teacher):
        return condi_sr_loss(student, confidence, teacher, z_t, detach_confidence=True).total

    assert torch.autograd.gradcheck(total, inputs)
    assert torch.autograd.gradcheck(detached_total, [inputs[0], inputs[1].detach(), inputs[2]])


def test_condi_sr_finite_for_saturated_logits():
    torch.manual_seed(0)
    s = (torch.randn(6, 10) * 200).requires_grad_()
    t = torch.randn(6, 10) * 200  # teacher softmax underflows to exact zeros
    c = torch.tensor([60.0, -60.0, 60.0, -60.0, 0.0, 30.0], requires_grad=True)  # sigmoid saturates at 0/1
    z = torch.tensor([1, 1, 0, 0, 1, 0])
    terms = condi_sr_loss(s, c, t, z)
    terms.total.backward()
    assert torch.isfinite(terms.total) and torch.isfinite(s.grad).all() and torch.isfinite(c.grad).all()


def test_invalid_inputs_raise():
    s, c, t, z, _ = random_batch(0, 10)
    assert set(z) == {0, 1}  # so z * 2 holds a 2, not only zeros
    with pytest.raises(ValueError, match=r"z must contain only 0 and 1"):
        condi_sr_loss(*tensors(s, c, t), torch.tensor(z) * 2)
    with pytest.raises(ValueError, match=r"confidence_logit must have shape \(8,\) or \(8, 1\), got \(3,\)"):
        condi_sr_loss(*tensors(s, c[:3], t), torch.tensor(z))
    with pytest.raises(ValueError, match=r"teacher_logits \(8, 5\) and student_logits \(8, 10\) must have the same"):
        condi_sr_loss(*tensors(s, c, t[:, :5]), torch.tensor(z))
    with pytest.raises(ValueError, match=r"temperature tau must be > 0, got 0\.0"):
        condi_sr_loss(*tensors(s, c, t), torch.tensor(z), tau=0.0)


def test_to_floats_logs_every_term():
    s, c, t, z, _ = random_batch(0, 10)
    logged = condi_sr_loss(*tensors(s, c, t), torch.tensor(z)).to_floats()
    assert set(logged) == {"total", "kd", "conf", "ce", "rep", "num_samples"}
    assert all(isinstance(value, (int, float)) for value in logged.values())


# ----------------------------------------------------------------------------------- ablation and ST-Ent


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("classes", CLASS_COUNTS)
def test_trivial_mt_matches_plain_formula(seed, classes):
    s, c, t, z, labels = random_batch(seed, classes)
    beta, tau, lam, mu = 0.3, 0.9, 2.0, 1.5
    terms = trivial_mt_loss(*tensors(s, c, t), torch.tensor(labels), torch.tensor(z), beta=beta, tau=tau,
                            lam=lam, mu=mu)
    ce = reference_ce(s, labels)
    kd = reference_kd(s, t, tau)
    conf = np.mean([-(mu * z[b] * math.log(sigmoid(c[b])) + (1 - z[b]) * math.log(1 - sigmoid(c[b])))
                    for b in range(len(z))])
    assert terms.ce.item() == pytest.approx(ce, rel=1e-10)
    assert terms.kd.item() == pytest.approx(kd, rel=1e-10)
    assert terms.conf.item() == pytest.approx(conf, rel=1e-10)
    assert terms.total.item() == pytest.approx(beta * ce + (1 - beta) * kd + lam * conf, rel=1e-10)


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("classes", CLASS_COUNTS)
@pytest.mark.parametrize("tau", [0.9, 4.0])
def test_st_ent_matches_plain_formula(seed, classes, tau):
    s, _, t, _, _ = random_batch(seed, classes)
    terms = st_ent_loss(*tensors(s, t), tau=tau)
    assert terms.total.item() == pytest.approx(reference_kd(s, t, tau), rel=1e-10)
    assert terms.kd.item() == terms.total.item()


def test_st_ent_default_tau_is_condi_sr_tau():
    s, _, t, _, _ = random_batch(1, 10)
    assert st_ent_loss(*tensors(s, t)).total.item() == pytest.approx(reference_kd(s, t, 0.9), rel=1e-10)


# --------------------------------------------------------------------------------------------- BCE-Conf


def plain_bce(logit, label):
    p = sigmoid(logit)
    return -(label * math.log(p) + (1 - label) * math.log(1 - p))


def test_bce_conf_without_downsampling_is_plain_bce():
    _, c, _, z, _ = random_batch(2, 10, batch=12)
    terms = bce_conf_loss(torch.tensor(c), torch.tensor(z), downsample=False)
    assert terms.total.item() == pytest.approx(np.mean([plain_bce(c[b], z[b]) for b in range(12)]), rel=1e-10)
    assert terms.conf.item() == terms.total.item() and terms.num_samples == 12


@pytest.mark.parametrize("seed", SEEDS)
def test_bce_conf_downsampling_keeps_equal_class_counts(seed):
    # 3 positives at logit 0.3, 9 negatives at logit -1.2: any balanced subset has the loss below,
    # any unbalanced subset a different one
    z = np.array([1] * 3 + [0] * 9)
    c = np.where(z == 1, 0.3, -1.2)
    terms = bce_conf_loss(torch.tensor(c), torch.tensor(z), generator=torch.Generator().manual_seed(seed))
    assert terms.num_samples == 6
    assert terms.total.item() == pytest.approx((plain_bce(0.3, 1) + plain_bce(-1.2, 0)) / 2, rel=1e-10)


def test_bce_conf_downsampling_is_reproducible_and_random():
    rng = np.random.default_rng(0)
    z = np.array([1] * 4 + [0] * 16)
    c = rng.normal(size=20)

    def loss(seed):
        generator = torch.Generator().manual_seed(seed)
        return bce_conf_loss(torch.tensor(c), torch.tensor(z), generator=generator).total.item()

    assert loss(3) == loss(3)
    assert len({round(loss(seed), 12) for seed in range(10)}) > 1


@pytest.mark.parametrize("positives", [0, 1])
def test_bce_conf_uses_all_samples_when_a_class_is_absent(positives):
    _, c, _, z, _ = random_batch(0, 10, batch=10, positives=positives)
    terms = bce_conf_loss(torch.tensor(c), torch.tensor(z))
    assert terms.num_samples == 10
    assert terms.total.item() == pytest.approx(np.mean([plain_bce(c[b], z[b]) for b in range(10)]), rel=1e-10)


# ---------------------------------------------------------------------------------------------- ST-Conf


def reference_st_conf(s, c, labels, lam, hinted):
    nll = 0.0
    for b in range(s.shape[0]):
        p = softmax(s[b])
        conf = sigmoid(c[b])
        if hinted[b]:
            onehot = np.eye(s.shape[1])[labels[b]]
            p = conf * p + (1 - conf) * onehot
        nll += -math.log(p[labels[b]])
    nll /= s.shape[0]
    penalty = np.mean([-math.log(sigmoid(x)) for x in c])
    return nll + lam * penalty, nll, penalty


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("classes", CLASS_COUNTS)
@pytest.mark.parametrize("fraction", [0.0, 0.5, 1.0])
def test_st_conf_matches_plain_formula(seed, classes, fraction):
    s, c, _, _, labels = random_batch(seed, classes, batch=9)
    batch = len(labels)
    hint_count = int(math.floor(fraction * batch + 0.5))
    # the hinted samples are the first hint_count of a randperm drawn from the same generator seed
    hinted_indices = torch.randperm(batch, generator=torch.Generator().manual_seed(seed))[:hint_count].numpy()
    hinted = np.isin(np.arange(batch), hinted_indices)
    terms = st_conf_loss(*tensors(s, c), torch.tensor(labels), lam=0.7, hint_fraction=fraction,
                         generator=torch.Generator().manual_seed(seed))
    total, nll, penalty = reference_st_conf(s, c, labels, 0.7, hinted)
    assert terms.total.item() == pytest.approx(total, rel=1e-10)
    assert terms.ce.item() == pytest.approx(nll, rel=1e-10)
    assert terms.conf.item() == pytest.approx(penalty, rel=1e-10)


def test_st_conf_hints_lower_the_nll_and_train_the_confidence():
    s, c, _, _, labels = random_batch(0, 10)
    c_t = torch.tensor(c, requires_grad=True)
    hinted = st_conf_loss(torch.tensor(s), c_t, torch.tensor(labels), lam=0.0, hint_fraction=1.0)
    plain = st_conf_loss(torch.tensor(s), torch.tensor(c), torch.tensor(labels), lam=0.0, hint_fraction=0.0)
    assert hinted.ce.item() < plain.ce.item()
    hinted.total.backward()
    assert torch.all(c_t.grad > 0)  # with lam = 0 hints push c down (asking for the label helps the NLL)


def test_budget_lambda_moves_towards_the_budget():
    lam = BudgetLambda(initial=0.1, budget=0.3, factor=1.01)
    assert lam.update(0.1) == pytest.approx(0.1 / 1.01)  # below budget: relax the penalty
    lam = BudgetLambda(initial=0.1, budget=0.3, factor=1.01)
    assert lam.update(torch.tensor(0.5)) == pytest.approx(0.1 / 0.99)  # above budget: raise it
    assert lam.update(0.3) > 0.1 / 0.99  # at the budget: raise (reference code uses budget <= loss)
    restored = BudgetLambda()
    restored.load_state_dict(lam.state_dict())
    assert restored.state_dict() == lam.state_dict()
    assert restored.update(0.0) == lam.update(0.0)


# ---------------------------------------------------------------------------------------- fewer frames


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("classes", CLASS_COUNTS)
def test_fewer_frames_matches_plain_formula(seed, classes):
    rng = np.random.default_rng(seed)
    batch, student_width, teacher_width = 5, 6, 9
    student_features = rng.normal(size=(batch, student_width))
    teacher_features = rng.normal(size=(batch, teacher_width))
    student_logits = rng.normal(0, 2, (batch, classes))
    teacher_probs = np.stack([softmax(rng.normal(0, 3, classes)) for _ in range(batch)])
    teacher_probs[0, :3] = 0.0  # classes the teacher rules out: 0 log 0 = 0
    teacher_probs[0] /= teacher_probs[0].sum()
    labels = rng.integers(0, classes, batch)

    projection = torch.nn.Linear(student_width, teacher_width).double()
    weight = projection.weight.detach().numpy()
    bias = projection.bias.detach().numpy()
    terms = fewer_frames_loss(*tensors(student_features, teacher_features, student_logits, teacher_probs),
                              torch.tensor(labels), projection=projection, alpha_rep=0.5, alpha_kl=2.0, alpha_ce=0.3)

    rep = np.mean([np.sum((teacher_features[b] - (weight @ student_features[b] + bias)) ** 2) for b in range(batch)])
    kl = 0.0
    for b in range(batch):
        q = softmax(student_logits[b])
        kl += sum(p * (math.log(p) - math.log(q[j])) for j, p in enumerate(teacher_probs[b]) if p > 0)
    kl /= batch
    ce = reference_ce(student_logits, labels)
    assert terms.rep.item() == pytest.approx(rep, rel=1e-10)
    assert terms.kd.item() == pytest.approx(kl, rel=1e-10)
    assert terms.ce.item() == pytest.approx(ce, rel=1e-10)
    assert terms.total.item() == pytest.approx(0.5 * rep + 2.0 * kl + 0.3 * ce, rel=1e-10)
    terms.total.backward()
    assert projection.weight.grad is not None and torch.isfinite(projection.weight.grad).all()


def test_fewer_frames_needs_projection_for_width_mismatch():
    with pytest.raises(ValueError, match=r"student features \(2, 4\) \(after projection\) must match teacher features "
                                         r"\(2, 8\) with batch 2; pass a projection when the widths differ"):
        fewer_frames_loss(torch.zeros(2, 4), torch.zeros(2, 8), torch.zeros(2, 3), torch.full((2, 3), 1 / 3),
                          torch.tensor([0, 1]))


def test_uniform_k_is_cross_entropy_only():
    s, _, _, _, labels = random_batch(0, 101)
    terms = uniform_k_loss(torch.tensor(s), torch.tensor(labels))
    assert terms.total.item() == pytest.approx(reference_ce(s, labels), rel=1e-10)
    assert terms.kd.item() == terms.conf.item() == terms.rep.item() == 0.0
