"""Context rankings (methods.context_rankings): a clip judged by what the student says of the video's other clips,
the choice among rankings on validation, and the report's `<method>+context` rows built from them."""

from __future__ import annotations

import numpy as np
import pytest

from condi_pipe.methods import context_rankings as cr
from condi_pipe.report.memory import MemoryInputs, build_table

LOG = np.log


def test_consensus_is_the_clip_probability_of_the_video_mean_argmax():
    # video 0: clips say class 0, 0, 1 -> consensus 0; video 1: one clip
    probs = np.array([[0.6, 0.4], [0.9, 0.1], [0.2, 0.8], [0.3, 0.7]])
    offsets = np.array([0, 3, 4])
    got = cr.consensus_log_agreement(LOG(probs), offsets)
    np.testing.assert_allclose(got, LOG([0.6, 0.9, 0.2, 0.7]))
    # the mean decides, not the vote: two weak 0-votes against one strong 1-vote give consensus 1
    probs = np.array([[0.55, 0.45], [0.55, 0.45], [0.0001, 0.9999]])
    np.testing.assert_allclose(cr.consensus_log_agreement(LOG(probs), np.array([0, 3])), LOG([0.45, 0.45, 0.9999]))


def test_a_confident_distractor_drops_behind_agreeing_clips():
    """Clip 2 is the most confident by z~ but shows another class than the video's other clips."""
    student = LOG(np.array([[0.7, 0.3], [0.8, 0.2], [0.05, 0.95], [0.6, 0.4]]))
    z_logit = np.array([0.5, 1.0, 4.0, 0.2])
    offsets = np.array([0, 4])
    own_top = int(np.argmax(z_logit))
    combined = cr.get_context_ranking("z-consensus").scores(z_logit, student, offsets)
    assert own_top == 2 and int(np.argmax(combined)) == 1 and int(np.argmin(combined)) == 2
    np.testing.assert_allclose(combined, cr.log_sigmoid(z_logit) + LOG([0.7, 0.8, 0.05, 0.6]))


def test_log_sigmoid_keeps_saturated_logits_apart():
    logits = np.array([40.0, 45.0, -800.0])
    values = cr.log_sigmoid(logits)
    assert values[1] > values[0] and np.isfinite(values).all()  # log(sigmoid) rounds both to 0.0 and -800 to -inf


def test_rankings_that_need_z_are_offered_only_to_confidence_ranked_runs():
    assert "z-consensus" in cr.context_ranking_names(confidence_ranked=True)
    assert cr.context_ranking_names(confidence_ranked=False) == ("consensus",)
    with pytest.raises(ValueError, match="unknown context ranking 'nope'; choose one of: consensus"):
        cr.get_context_ranking("nope")


def _two_videos():
    """Video 0 (label 0): clip 1 is a distractor the teacher gets wrong, z~ likes it best. Video 1 (label 1): z~
    already ranks its right clip first."""
    teacher = np.array([[0.9, 0.1], [0.01, 0.99], [0.8, 0.2], [0.3, 0.7], [0.6, 0.4]])
    student = LOG(np.array([[0.7, 0.3], [0.1, 0.9], [0.8, 0.2], [0.2, 0.8], [0.5, 0.5]]))
    z_logit = np.array([0.0, 3.0, -1.0, 2.0, 0.0])
    return teacher, student, z_logit, np.array([0, 1]), np.array([0, 3, 5])


def test_choice_on_validation_takes_the_best_mean_accuracy():
    teacher, student, z_logit, labels, offsets = _two_videos()
    record = cr.choose_on_validation(z_logit, student, teacher, labels, offsets, confidence_ranked=True, ks=(1, 2))
    candidates = record["candidates"]
    assert list(candidates) == ["own", "consensus", "z-consensus"]
    assert candidates["own"]["accuracy"] == {"1": 0.5, "2": 0.5}  # video 0 picks the distractor first
    assert candidates["consensus"]["accuracy"] == {"1": 1.0, "2": 1.0}
    assert record["chosen"] == "consensus" and record["videos"] == 2  # ties go to the earlier candidate


def test_ties_keep_the_runs_own_ranking():
    teacher = np.array([[0.9, 0.1], [0.8, 0.2]])
    record = cr.choose_on_validation(np.array([1.0, 0.0]), LOG(teacher), teacher, np.array([0]), np.array([0, 2]),
                                     confidence_ranked=True, ks=(1,))
    assert record["chosen"] == "own"


def test_report_ranks_the_context_variant_by_the_ranking_chosen_on_validation():
    teacher, student, z_logit, labels, offsets = _two_videos()
    chosen = {"chosen": "consensus", "videos": 70, "criterion": "mean video accuracy over K = 1 on validation",
              "candidates": {"own": {"mean_accuracy": 0.5}, "consensus": {"mean_accuracy": 0.9}}}
    inputs = MemoryInputs(video_id=[0, 1], labels=labels, clips=np.diff(offsets), teacher_logits=LOG(teacher),
                          teacher_seconds=[0.3, 0.2],
                          runs={"c": {"loss": "condi-sr", "logits": student, "rank_score": z_logit,
                                      "confidence": 1 / (1 + np.exp(-z_logit)), "seconds": [0.01, 0.01],
                                      "context_ranking": chosen}})
    table = build_table(inputs, "3", k=[1], methods="condi-sr,condi-sr+context")
    rows = {row.method: row for row in table.rows if row.k == 1}
    assert rows["condi-sr"].accuracy == 50.0 and rows["condi-sr+context"].accuracy == 100.0
    assert rows["condi-sr+context"].extra["ranking"] == "consensus"
    assert "ConDi-SR+ctx" in table.columns
    assert any("chose on the 70 validation videos" in line for line in table.footer)


def test_report_omits_the_variant_of_a_run_scored_without_a_validation_choice():
    teacher, student, z_logit, labels, offsets = _two_videos()
    inputs = MemoryInputs(video_id=[0, 1], labels=labels, clips=np.diff(offsets), teacher_logits=LOG(teacher),
                          teacher_seconds=[0.3, 0.2],
                          runs={"c": {"loss": "condi-sr", "logits": student, "rank_score": z_logit,
                                      "confidence": 1 / (1 + np.exp(-z_logit)), "seconds": [0.01, 0.01]}})
    table = build_table(inputs, "3", k=[1], methods="condi-sr,condi-sr+context")
    assert {row.method for row in table.rows} == {"condi-sr", "dense"}
    assert any("judged no ranking on a validation part" in line for line in table.footer)
    with pytest.raises(ValueError, match="unknown method 'nope\\+context'"):
        build_table(inputs, "3", k=[1], methods="nope+context")
