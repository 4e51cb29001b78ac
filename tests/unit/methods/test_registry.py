"""A distillation method is one registered function: registered here, it is offered by `condi-pipe distill
--loss`, accepted by run configurations and distill requests; and every built-in method's registered identity
(level, ranking, confidence head, display name) is what distill, score and the report do with it."""

from __future__ import annotations

import math
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from condi_pipe.app.run_config import ConfigError, DistillSection, load_run_config
from condi_pipe.cli import main as cli
from condi_pipe.methods.catalogue import ClipBatch, LossContext, VideoBatch
from condi_pipe.methods.losses import BudgetLambda, st_ent_loss
from condi_pipe.methods.metrics import softmax, softmax_entropy
from condi_pipe.methods.registry import (
    clip_methods,
    get_method,
    list_methods,
    method_names,
    register_method,
    temporarily_registered,
    unregister_method,
    video_methods,
)
from condi_pipe.stages.distill import DistillRequest, LossOptions, default_run_name

STUDENT = "resnet10_3d_motion_skim"
DUMMY = "dummy-kd"


def dummy_kd(batch: ClipBatch, context: LossContext):
    """Plain KD at temperature 2 (a test method)."""
    return st_ent_loss(batch.logits, batch.teacher_logits, 2.0), math.nan


@pytest.fixture()
def dummy_method():
    with temporarily_registered(DUMMY, dummy_kd, display="Dummy-KD", level="clip", ranking="entropy",
                                needs_confidence_head=False) as method:
        yield method
    assert DUMMY not in method_names()


def _loss_choices(help_text: str) -> list[str]:
    """The values `--loss [a|b|...]` offers in `distill --help`."""
    start = help_text.index("--loss [") + len("--loss [")
    return help_text[start:help_text.index("]", start)].split("|")


# ------------------------------------------------------------------------------- a method registered in a test


def test_a_registered_method_is_offered_by_the_cli(dummy_method, tmp_path):
    assert _loss_choices(CliRunner().invoke(cli, ["distill", "--help"]).output)[-1] == DUMMY
    # --loss accepts it: the command gets as far as the student model, which does not exist (in a store: the CLI
    # refuses a path that is not one)
    from condi_pipe.storage.run_state import set_stage
    from condi_pipe.storage.store import Store

    set_stage(Store(str(tmp_path / "store")), "extract", state="done", counts={})
    result = CliRunner().invoke(cli, ["distill", "--loss", DUMMY, "--student", "no-such-model", "--teacher", "t",
                                      "--store", str(tmp_path / "store")])
    assert result.exit_code == 2 and "unknown model 'no-such-model'" in result.stderr, result.output
    assert "Invalid value for '--loss'" not in result.output


def test_a_registered_method_is_accepted_by_run_configurations_and_distill(dummy_method, tmp_path):
    assert DistillSection(losses=["condi-sr", DUMMY]).losses == ["condi-sr", DUMMY]
    path = tmp_path / "run.toml"
    path.write_text(textwrap.dedent(f"""
        store = "s"
        [extract]
        source = "ucf101"
        root = "data"
        [teacher]
        name = "resnet10_3d_small"
        [distill]
        losses = ["{DUMMY}", "st-ent"]
        """))
    assert load_run_config(path).distill.losses == [DUMMY, "st-ent"]
    request = DistillRequest(DUMMY, STUDENT, "t")
    assert request.method is dummy_method and request.run == f"{DUMMY}-{STUDENT}"
    assert get_method(DUMMY).summary == "Plain KD at temperature 2 (a test method)."
    assert DUMMY not in [m.name for m in video_methods()] and dummy_method in clip_methods()


def test_an_unregistered_method_is_refused_with_the_known_names(tmp_path):
    help_text = CliRunner().invoke(cli, ["distill", "--help"]).output
    assert DUMMY not in _loss_choices(help_text)
    with pytest.raises(ValueError, match=r"unknown method 'dummy-kd'; choose one of: condi-sr, bce-conf, st-ent"):
        get_method(DUMMY)
    # one message wherever the name is given: the option's (pipeline.options), naming the registered methods
    known = r"must be one of condi-sr, bce-conf, st-ent, .*, got 'dummy-kd'$"
    with pytest.raises(ValueError, match=rf"^losses {known}"):
        DistillSection(losses=[DUMMY])
    path = tmp_path / "run.toml"
    path.write_text('store = "s"\n[extract]\nsource = "ucf101"\nroot = "d"\n[teacher]\nname = "x"\n'
                    f'[distill]\nlosses = ["{DUMMY}"]\n')
    with pytest.raises(ConfigError, match=rf"\[distill\]\.losses {known}"):
        load_run_config(path)
    with pytest.raises(ValueError, match=rf"^loss {known}"):
        DistillRequest(DUMMY, STUDENT, "t")
    result = CliRunner().invoke(cli, ["distill", "--loss", DUMMY, "--student", STUDENT, "--teacher", "t",
                                      "--store", str(tmp_path / "store")])
    assert result.exit_code == 2 and "loss must be one of condi-sr, bce-conf" in result.output


def test_registration_refuses_inconsistent_methods(dummy_method):
    with pytest.raises(ValueError, match="registered twice"):
        register_method(DUMMY, display="Again", level="clip", ranking="entropy",
                        needs_confidence_head=False)(dummy_kd)
    with pytest.raises(ValueError, match="video-level ones do not"):
        register_method("bad", display="Bad", level="video", ranking="entropy", needs_confidence_head=False)
    with pytest.raises(ValueError, match="clip-level methods rank clips"):
        register_method("bad", display="Bad", level="clip", ranking=None, needs_confidence_head=False)
    with pytest.raises(ValueError, match="needs a confidence head"):
        register_method("bad", display="Bad", level="clip", ranking="confidence", needs_confidence_head=False)
    with pytest.raises(ValueError, match="level must be one of clip, video"):
        register_method("bad", display="Bad", level="frame", ranking=None, needs_confidence_head=False)
    assert "bad" not in method_names()


def test_unregister_returns_the_method_and_refuses_unknown_names():
    register_method(DUMMY, display="Dummy-KD", level="clip", ranking="entropy", needs_confidence_head=False)(dummy_kd)
    assert unregister_method(DUMMY).loss is dummy_kd and DUMMY not in method_names()
    with pytest.raises(ValueError, match="unknown method"):
        unregister_method(DUMMY)


# ----------------------------------------------------------------------------------------- the built-in methods


def test_the_builtin_methods_keep_their_names_order_and_identity():
    assert method_names() == ("condi-sr", "bce-conf", "st-ent", "st-conf", "trivial-mt", "fewer-frames", "uniform-k",
                              "sc-sampler")
    assert method_names("clip") == ("condi-sr", "bce-conf", "st-ent", "st-conf", "trivial-mt", "sc-sampler")
    assert method_names(level="video") == ("fewer-frames", "uniform-k")
    assert {m.name: m.display for m in list_methods()} == {
        "condi-sr": "ConDi-SR", "bce-conf": "BCE-Conf", "st-ent": "ST-Ent", "st-conf": "ST-Conf",
        "trivial-mt": "Trivial-MT", "fewer-frames": "Fewer-frames", "uniform-k": "Uniform-k",
        "sc-sampler": "SCSampler"}
    assert {m.name: m.ranking for m in list_methods()} == {
        "condi-sr": "confidence", "bce-conf": "confidence", "trivial-mt": "confidence", "st-conf": "confidence",
        "st-ent": "entropy", "fewer-frames": None, "uniform-k": None, "sc-sampler": "max-prob"}
    assert [m.name for m in list_methods() if m.needs_confidence_head] == [
        "condi-sr", "bce-conf", "st-conf", "trivial-mt"]
    assert DistillSection().losses == ["condi-sr", "bce-conf", "st-ent", "st-conf"]
    with pytest.raises(ValueError, match="level must be one of clip, video"):
        method_names("frame")


def _clip_batch(confidence: bool) -> ClipBatch:
    generator = torch.Generator().manual_seed(0)
    logits = torch.randn(8, 5, generator=generator, requires_grad=True)
    conf = torch.randn(8, generator=generator, requires_grad=True) if confidence else None
    return ClipBatch(logits, conf, torch.randn(8, 5, generator=generator), torch.tensor([1, 0] * 4),
                     torch.arange(8) % 5, generator)


def _video_batch(teacher_width: int) -> VideoBatch:
    generator = torch.Generator().manual_seed(0)
    return VideoBatch(torch.randn(4, 6, generator=generator, requires_grad=True),
                      torch.randn(4, 5, generator=generator, requires_grad=True),
                      torch.randn(4, teacher_width, generator=generator),
                      torch.softmax(torch.randn(4, 5, generator=generator), 1), torch.arange(4) % 5)


@pytest.mark.parametrize("name", method_names())
def test_each_builtin_method_trains_and_ranks_as_registered(name):
    method = get_method(name)
    options = LossOptions()
    context = LossContext(options, BudgetLambda(options.lambda_init, options.budget, options.lambda_factor),
                          torch.nn.Linear(6, 3), rep_scale=2.0)
    logits = np.random.default_rng(0).normal(size=(6, 5))
    confidence = np.random.default_rng(1).normal(size=6)
    if method.video_level:
        assert method.ranking is None and not method.needs_confidence_head
        terms, weight = method.loss(_video_batch(3 if method.uses_teacher_features else 0), context)
        with pytest.raises(ValueError, match="do not rank clips"):
            method.rank_scores(logits, confidence)
        # distill keeps K and the video weights in the run's configuration, and K in its name
        assert "alpha_rep" in DistillRequest(name, STUDENT, "t").config()["losses"]
        assert default_run_name(name, STUDENT, None, 3).endswith("-k3")
    else:
        terms, weight = method.loss(_clip_batch(confidence=True), context)
        if not method.needs_confidence_head:  # a student without a confidence head can train it
            method.loss(_clip_batch(confidence=False), context)
        scores = method.rank_scores(logits, confidence)
        if method.ranking == "max-prob":  # SCSampler's saliency: the largest softmax probability, as its log
            np.testing.assert_allclose(scores, np.log(softmax(logits, axis=1).max(axis=1)), rtol=1e-12, atol=0)
        else:
            expected = confidence if method.ranking == "confidence" else -softmax_entropy(logits)
            np.testing.assert_array_equal(scores, expected)
        assert "alpha_rep" not in DistillRequest(name, STUDENT, "t").config()["losses"]
        assert default_run_name(name, STUDENT, None, 3) == f"{name}-{STUDENT}"
    assert torch.isfinite(terms.total) and terms.total.requires_grad
    # the history's lam column: the confidence-term weight of the losses that have one
    assert math.isnan(weight) == (name not in ("condi-sr", "st-conf", "trivial-mt"))
    assert method.steers_lambda == (name == "st-conf")
    assert method.uses_teacher_features == (name == "fewer-frames")


def test_confidence_ranked_methods_need_the_confidence_logits():
    with pytest.raises(ValueError, match="condi-sr ranks by confidence but the model has no confidence head"):
        get_method("condi-sr").rank_scores(np.zeros((2, 3)), None)


def test_the_registry_does_not_load_torch():
    """The CLI's choices and the report read the registry; torch loads only with the losses."""
    code = ("import sys, condi_pipe.methods.registry as r; "
            "assert {'condi-sr', 'uniform-k', 'sc-sampler'} <= set(r.method_names()); "
            "assert 'torch' not in sys.modules, 'torch was imported'")
    subprocess.run([sys.executable, "-c", code], check=True)
