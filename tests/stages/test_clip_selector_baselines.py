"""The field's clip selectors on a real extracted store: SCSampler distilled, scored and reported like any method
(``distill --loss sc-sampler``, ``score``, ``report``), and Motion energy computed from the extracted clip array,
both rows checked against the top K clips worked out here from the stored arrays."""

from __future__ import annotations

import shutil

import numpy as np
import pytest

from condi_pipe.report import build_report
from condi_pipe.storage import clip_outputs
from condi_pipe.storage.clip_array import open_clip_array
from condi_pipe.storage.store import Store

TEACHER = "resnet10_3d_small"
KS = (1, 2)


def softmax(logits):
    e = np.exp(logits - logits.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def top_k_accuracy(scores, teacher_probs, labels, offsets, k):
    """Top-1 (%) of each video's k best clips by ``scores`` (ties: the earlier clip) sent to the teacher."""
    correct = []
    for v, label in enumerate(labels):
        a, b = offsets[v], offsets[v + 1]
        chosen = a + np.argsort(-scores[a:b], kind="stable")[:k]
        correct.append(teacher_probs[chosen].mean(axis=0).argmax() == label)
    return 100.0 * float(np.mean(correct))


@pytest.mark.slow  # one distill and one score of a student on CPU: ~10 s on an idle machine, more under load
def test_sc_sampler_and_motion_energy_on_an_extracted_store(synth_teacher_store, distill_and_score, tmp_path):
    store_dir = tmp_path / "store"
    shutil.copytree(synth_teacher_store, store_dir)
    distill_and_score(store_dir, "salient", "sc-sampler")
    store = Store(str(store_dir))
    scores = clip_outputs.scores_folder("salient")
    meta = clip_outputs.read_meta(store, scores)
    assert (meta["loss"], meta["ranking"]) == ("sc-sampler", "max-prob")
    assert store.read_json("students/salient/meta.json")["ranking"] == "max-prob"

    clips = clip_outputs.read_clips(store, scores).to_pandas().sort_values(["video_id", "clip_id"])
    student = clip_outputs.read_array(store, scores, "logits")[clips.index.to_numpy()].astype(np.float64)
    # the saliency: the log of the student's largest softmax probability on each clip
    np.testing.assert_allclose(clips.rank_score, np.log(softmax(student).max(axis=1)), rtol=1e-9, atol=1e-12)

    teacher = clip_outputs.teacher_folder(TEACHER)
    cached = clip_outputs.read_clips(store, teacher, ["clip_id"]).column("clip_id").to_numpy()
    row_of = {int(c): i for i, c in enumerate(cached)}
    teacher_logits = clip_outputs.read_array(store, teacher, "logits")
    probs = softmax(teacher_logits[[row_of[int(c)] for c in clips.clip_id]].astype(np.float64))
    starts = np.flatnonzero(np.r_[True, clips.video_id.to_numpy()[1:] != clips.video_id.to_numpy()[:-1]])
    offsets = np.r_[starts, len(clips)]
    labels = clips.label.to_numpy()[starts]
    frames = open_clip_array(store)
    energy = np.array([np.abs(np.diff(np.asarray(frames[int(c)]).astype(np.int64), axis=0)).mean()
                       for c in clips.clip_id])

    report = build_report(store, "3", k=list(KS), methods="sc-sampler,motion-energy")
    assert report.columns == ("K", "SCSampler", "Motion energy")
    for k in KS:
        rows = {row.method: row for row in report.rows if row.k == k}
        assert rows["sc-sampler"].accuracy == pytest.approx(
            top_k_accuracy(clips.rank_score.to_numpy(), probs, labels, offsets, k), abs=1e-9)
        assert rows["motion-energy"].accuracy == pytest.approx(
            top_k_accuracy(energy, probs, labels, offsets, k), abs=1e-9)
        assert rows["sc-sampler"].extra["ranking"] == "max-prob" and rows["motion-energy"].extra["student_s"] == 0.0
