"""The report: tables computed from real stores written with ``clip_outputs.write_outputs`` from synthetic numbers.

Expected values are computed here independently, video by video in plain NumPy (float64 softmax, explicit
loops), never through the vectorised code under test.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
from click.testing import CliRunner

from condi_pipe.cli import main as cli
from condi_pipe.stages.report import ReportTable, build_report, plot_report, render
from condi_pipe.storage import clip_outputs
from condi_pipe.storage.errors import StoreError
from condi_pipe.storage.store import Store

TEACHER = "r3d_test"
TEACHER_META = {"model": TEACHER, "device": "cpu", "device_name": "Test CPU 9000", "threads": 2, "bf16": False}


# ----------------------------------------------------------------------------------------- store builders


def softmax(logits):
    logits = np.asarray(logits, dtype=np.float64)
    e = np.exp(logits - logits.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def entropy(probs):
    probs = np.asarray(probs, dtype=np.float64)
    return -(probs * np.log(np.where(probs > 0, probs, 1.0))).sum(axis=-1)


class Videos:
    """Per-video teacher data: a list of (video_id, split, label, teacher logits (N, C), teacher seconds)."""

    def __init__(self, videos):
        self.videos = list(videos)
        first, self.first_clip = 1000, []
        for v in self.videos:
            self.first_clip.append(first)
            first += len(v[3]) + 3  # gaps in clip ids: the report must not assume contiguous ids

    def clip_ids(self, i):
        return self.first_clip[i] + np.arange(len(self.videos[i][3]))

    def of_split(self, split):
        return [i for i, v in enumerate(self.videos) if v[1] == split]


def write_teacher(store: Store, data: Videos, name: str = TEACHER, meta=None):
    rows = {k: [] for k in ("clip_id", "video_id", "split", "label", "pred", "max_prob", "entropy", "true_prob", "z")}
    logits = []
    for i, (vid, split, label, lg, _) in enumerate(data.videos):
        p = softmax(lg)
        n = len(lg)
        rows["clip_id"] += list(data.clip_ids(i))
        rows["video_id"] += [vid] * n
        rows["split"] += [split] * n
        rows["label"] += [label] * n
        rows["pred"] += list(p.argmax(1))
        rows["max_prob"] += list(p.max(1))
        rows["entropy"] += list(entropy(p))
        rows["true_prob"] += list(p[:, label])
        rows["z"] += list((p.argmax(1) == label).astype(np.int8))
        logits.append(np.asarray(lg, np.float32))
    clips = pa.table({
        "clip_id": pa.array(rows["clip_id"], pa.int64()), "video_id": pa.array(rows["video_id"], pa.int64()),
        "split": pa.array(rows["split"], pa.string()), "label": pa.array(rows["label"], pa.int32()),
        "pred": pa.array(rows["pred"], pa.int32()), "max_prob": pa.array(rows["max_prob"], pa.float32()),
        "entropy": pa.array(rows["entropy"], pa.float32()), "true_prob": pa.array(rows["true_prob"], pa.float32()),
        "z": pa.array(rows["z"], pa.int8()),
    })
    videos = pa.table({
        "video_id": pa.array([v[0] for v in data.videos], pa.int64()),
        "split": pa.array([v[1] for v in data.videos], pa.string()),
        "clips": pa.array([len(v[3]) for v in data.videos], pa.int32()),
        "seconds": pa.array([v[4] for v in data.videos], pa.float64()),
    })
    num_classes = logits[0].shape[1]
    meta = {**TEACHER_META, "classes": [f"c{i}" for i in range(num_classes)], **(meta or {})}
    clip_outputs.write_outputs(store, clip_outputs.teacher_folder(name),
                               {"logits": np.concatenate(logits)}, clips, videos, meta)


def write_scores(store: Store, data: Videos, run: str, loss: str, per_video, *, split="test", teacher=TEACHER,
                 ranking=None):
    """``per_video[i]`` = dict(logits=(N, C), rank_score=(N,), confidence=(N,) or None, seconds=float) for every
    video index i of ``split``. The student's entropy and prediction follow from its logits."""
    idx = data.of_split(split)
    cols = {k: [] for k in ("clip_id", "video_id", "label", "pred", "confidence", "entropy", "rank_score")}
    logits = []
    for i in idx:
        vid, _, label, _, _ = data.videos[i]
        s = per_video[i]
        p = softmax(s["logits"])
        n = len(p)
        cols["clip_id"] += list(data.clip_ids(i))
        cols["video_id"] += [vid] * n
        cols["label"] += [label] * n
        cols["pred"] += list(p.argmax(1))
        conf = s.get("confidence")
        cols["confidence"] += list(np.full(n, np.nan) if conf is None else conf)
        cols["entropy"] += list(entropy(p))
        cols["rank_score"] += list(s["rank_score"])
        logits.append(np.asarray(s["logits"], np.float32))
    clips = pa.table({
        "clip_id": pa.array(cols["clip_id"], pa.int64()), "video_id": pa.array(cols["video_id"], pa.int64()),
        "split": pa.array([split] * len(cols["clip_id"]), pa.string()),
        "label": pa.array(cols["label"], pa.int32()), "pred": pa.array(cols["pred"], pa.int32()),
        "confidence": pa.array(cols["confidence"], pa.float32()), "entropy": pa.array(cols["entropy"], pa.float32()),
        "rank_score": pa.array(cols["rank_score"], pa.float32()),
    })
    videos = pa.table({
        "video_id": pa.array([data.videos[i][0] for i in idx], pa.int64()),
        "split": pa.array([split] * len(idx), pa.string()),
        "clips": pa.array([len(data.videos[i][3]) for i in idx], pa.int32()),
        "seconds": pa.array([per_video[i]["seconds"] for i in idx], pa.float64()),
    })
    meta = {"run": run, "student": "shufflenetv2", "width": 1.0, "loss": loss, "ranking": ranking or loss,
            "device": "cpu", "device_name": "Student CPU 42", "threads": 1, "teacher": teacher}
    clip_outputs.write_outputs(store, clip_outputs.scores_folder(run), {"logits": np.concatenate(logits)}, clips,
                               videos, meta)


def write_video_level(store: Store, data: Videos, run: str, loss: str, preds, ks, seconds, split="test"):
    idx = data.of_split(split)
    num_classes = data.videos[0][3].shape[1]
    clips = pa.table({"clip_id": pa.array([], pa.int64()), "video_id": pa.array([], pa.int64()),
                      "split": pa.array([], pa.string()), "label": pa.array([], pa.int32()),
                      "pred": pa.array([], pa.int32()), "confidence": pa.array([], pa.float32()),
                      "entropy": pa.array([], pa.float32()), "rank_score": pa.array([], pa.float32())})
    videos = pa.table({
        "video_id": pa.array([data.videos[i][0] for i in idx], pa.int64()),
        "split": pa.array([split] * len(idx), pa.string()),
        "clips": pa.array([len(data.videos[i][3]) for i in idx], pa.int32()),
        "seconds": pa.array(seconds, pa.float64()), "pred": pa.array(preds, pa.int32()),
        "k": pa.array(ks, pa.int32()),
    })
    meta = {"run": run, "student": "shufflenetv2", "width": 1.0, "loss": loss, "ranking": None, "device": "cpu",
            "device_name": "Student CPU 42", "threads": 1, "teacher": TEACHER}
    clip_outputs.write_outputs(store, clip_outputs.scores_folder(run),
                               {"probs": np.full((len(idx), num_classes), 1.0 / num_classes, np.float32)},
                               clips, videos, meta)


def write_history(store: Store, run: str, rows):
    table = pa.table({k: [r[k] for r in rows] for k in rows[0]})
    store.write_table(f"students/{run}/history.parquet", table)


# ------------------------------------------------------------------------------------------- reference math


def reference_prediction(teacher_logits, chosen):
    return int(softmax(teacher_logits)[np.sort(chosen)].mean(axis=0).argmax())


def top_k(scores, k):
    return np.argsort(-np.asarray(scores, np.float64), kind="stable")[:k]


def row_of(report: ReportTable, method, k, ks=None):
    found = [r for r in report.rows if r.method == method and r.k == k and r.ks == ks]
    assert len(found) == 1, (method, k, ks, [(r.method, r.k, r.ks) for r in report.rows])
    return found[0]


# ------------------------------------------------------------------------------------------- random store


@pytest.fixture(scope="module")
def random_store(tmp_path_factory):
    """40 test videos + 10 train videos, 1-9 clips, 5 classes, and four clip-level score runs."""
    rng = np.random.default_rng(7)
    classes = 5
    videos = []
    for v in range(50):
        n = int(rng.integers(1, 10))
        label = int(rng.integers(classes))
        logits = rng.normal(0, 2, (n, classes))
        logits[:, label] += rng.normal(0.8, 1.5, n)  # the teacher is right on about half of the clips
        split = "train" if v % 5 == 4 else "test"
        videos.append((100 + 3 * v, split, label, logits, float(rng.uniform(0.5, 3.0))))
    rng.shuffle(videos)  # video ids not in clip order
    data = Videos(videos)
    store = Store(str(tmp_path_factory.mktemp("report_random")))
    write_teacher(store, data)
    students = {}
    for run, loss in (("condi_a", "condi-sr"), ("bce_a", "bce-conf"), ("stent_a", "st-ent"), ("stconf_a", "st-conf")):
        per_video = {}
        for i in data.of_split("test"):
            n = len(data.videos[i][3])
            s_logits = rng.normal(0, 1.5, (n, classes))
            conf = 1 / (1 + np.exp(-rng.normal(0, 2, n)))
            rank = -entropy(softmax(s_logits)) if loss == "st-ent" else conf
            per_video[i] = {"logits": s_logits, "rank_score": rank.astype(np.float32),
                            "confidence": None if loss == "st-ent" else conf.astype(np.float32),
                            "seconds": float(rng.uniform(0.05, 0.3))}
        write_scores(store, data, run, loss, per_video)
        students[loss] = per_video
    return store, data, students


def test_dense_accuracy_and_time(random_store):
    store, data, _ = random_store
    report = build_report(store, "3")
    dense = row_of(report, "dense", None)
    test = data.of_split("test")
    correct = [reference_prediction(data.videos[i][3], np.arange(len(data.videos[i][3]))) == data.videos[i][2]
               for i in test]
    assert dense.accuracy == pytest.approx(100 * np.mean(correct))
    assert dense.time_per_video_s == pytest.approx(np.mean([data.videos[i][4] for i in test]), rel=1e-12)
    assert dense.extra["videos"] == len(test) == 40


def test_ranked_methods_and_time_model_match_the_reference(random_store):
    """Every ranked run: accuracy from the top K by rank_score, time = student + latency x min(K, N) + selection."""
    store, data, students = random_store
    report = build_report(store, "3", k=[1, 2, 3, 5, 7], methods="condi-sr,bce-conf,st-ent,st-conf,equidistant")
    test = data.of_split("test")
    for loss, per_video in students.items():
        for k in (1, 2, 3, 5, 7):
            row = row_of(report, loss, k)
            correct, teacher_s = [], []
            for i in test:
                _, _, label, lg, seconds = data.videos[i]
                n = len(lg)
                correct.append(reference_prediction(lg, top_k(per_video[i]["rank_score"], k)) == label)
                teacher_s.append(seconds / n * min(k, n))
            student_s = np.mean([per_video[i]["seconds"] for i in test])
            assert row.accuracy == pytest.approx(100 * np.mean(correct)), (loss, k)
            assert row.extra["student_s"] == pytest.approx(student_s, rel=1e-12)
            assert row.extra["teacher_s"] == pytest.approx(np.mean(teacher_s), rel=1e-12)
            assert 0 < row.extra["selection_s"] < 1e-2  # measured in this run, amortised per video
            assert row.time_per_video_s == pytest.approx(student_s + np.mean(teacher_s) + row.extra["selection_s"],
                                                         rel=1e-12)
    for k in (1, 2, 3, 5, 7):  # teacher-only: no student part
        row = row_of(report, "equidistant", k)
        assert row.extra["student_s"] == 0
        assert row.extra["teacher_s"] == pytest.approx(
            np.mean([data.videos[i][4] / len(data.videos[i][3]) * min(k, len(data.videos[i][3])) for i in test]))


def test_k_at_least_n_equals_dense(random_store):
    store, data, _ = random_store
    report = build_report(store, "accuracy", k=[9, 12], methods="oracle,random,equidistant,condi-sr,st-ent")
    dense = row_of(report, "dense", None)
    for method in ("oracle", "random", "equidistant", "condi-sr", "st-ent"):
        for k in (9, 12):  # every video has at most 9 clips
            row = row_of(report, method, k)
            assert row.accuracy == dense.accuracy, method
            assert row.extra["teacher_s"] == pytest.approx(dense.time_per_video_s, rel=1e-12)


def test_random_is_the_mean_of_three_seeds_and_deterministic(random_store):
    from condi_pipe.methods.samplers import RandomSelector, VideoClips

    store, data, _ = random_store
    first = build_report(store, "accuracy", k=[1, 2, 4], methods="random")
    second = build_report(store, "accuracy", k=[1, 2, 4], methods="random")
    test = data.of_split("test")
    for k in (1, 2, 4):
        a, b = row_of(first, "random", k), row_of(second, "random", k)
        assert a.accuracy == b.accuracy and a.extra["seed_accuracies"] == b.extra["seed_accuracies"]
        assert len(a.extra["seed_accuracies"]) == 3 and a.extra["seeds"] == [0, 1, 2]
        assert a.accuracy == pytest.approx(np.mean(a.extra["seed_accuracies"]))
        for seed, accuracy in zip((0, 1, 2), a.extra["seed_accuracies"]):
            # the per-video reference path, each video keyed by its id
            selector = RandomSelector(seed)
            correct = []
            for i in test:
                vid, _, label, lg, _ = data.videos[i]
                chosen = selector.select(VideoClips(softmax(lg), label, index=vid), k)
                correct.append(reference_prediction(lg, chosen) == label)
            assert accuracy == pytest.approx(100 * np.mean(correct))


def test_split_selection_and_unknown_split(random_store):
    store, data, _ = random_store
    train = build_report(store, "oracle", split="train", k=[1])
    assert row_of(train, "dense", None).extra["videos"] == len(data.of_split("train")) == 10
    with pytest.raises(StoreError, match="no clips in split 'val'"):
        build_report(store, "3", split="val")
    # score runs hold only the test split: asked for train they are omitted with a note
    table3 = build_report(store, "3", split="train")
    assert table3.columns == ("K", "Equidistant")
    assert any("ConDi-SR" in line and "no clips in split 'train'" in line for line in table3.footer)


def test_confidence_table(random_store):
    store, data, students = random_store
    nan = float("nan")
    write_history(store, "condi_a", [  # the distill stage's names; epoch 4 was not evaluated
        {"epoch": 1, "kd": 2.0, "eval_clip_accuracy": 0.4, "eval_auroc": 0.6, "eval_fpr": 0.5},
        {"epoch": 3, "kd": 1.0, "eval_clip_accuracy": 0.6, "eval_auroc": 0.8, "eval_fpr": 0.2},
        {"epoch": 2, "kd": 1.5, "eval_clip_accuracy": 0.5, "eval_auroc": 0.7, "eval_fpr": 0.3},
        {"epoch": 4, "kd": 0.9, "eval_clip_accuracy": nan, "eval_auroc": nan, "eval_fpr": nan},
    ])
    write_history(store, "stconf_a", [{"epoch": 1, "clip_accuracy": 0.3, "auroc": 0.55, "fpr": 0.45}])
    report = build_report(store, "confidence")
    test = data.of_split("test")
    for loss, per_video in students.items():
        row = next(r for r in report.rows if r.method == loss)
        z = np.concatenate([(softmax(data.videos[i][3]).argmax(1) == data.videos[i][2]) for i in test])
        rank = np.concatenate([per_video[i]["rank_score"] for i in test]).astype(np.float64)
        pos, neg = rank[z], rank[~z]
        expected_auroc = ((pos[:, None] > neg[None, :]).sum() + 0.5 * (pos[:, None] == neg[None, :]).sum()) / (
            len(pos) * len(neg))
        assert row.extra["auroc"] == pytest.approx(expected_auroc)
        if loss == "st-ent":
            assert row.extra["fpr"] is None or np.isnan(row.extra["fpr"])
        else:
            conf = np.concatenate([per_video[i]["confidence"] for i in test])
            assert row.extra["fpr"] == pytest.approx(np.mean(conf[~z] > 0.5))
        student_pred = np.concatenate([softmax(per_video[i]["logits"]).argmax(1) for i in test])
        labels = np.concatenate([[data.videos[i][2]] * len(data.videos[i][3]) for i in test])
        assert row.accuracy == pytest.approx(100 * np.mean(student_pred == labels))
    condi = next(r for r in report.rows if r.method == "condi-sr")
    assert (condi.extra["history_epoch"], condi.extra["history_fpr"], condi.extra["history_auroc"]) == (3, 0.2, 0.8)
    assert report.series["ConDi-SR"] == {"epoch": [1, 2, 3], "fpr": [0.5, 0.3, 0.2]}
    stconf = next(r for r in report.rows if r.method == "st-conf")
    assert (stconf.extra["history_epoch"], stconf.extra["history_fpr"]) == (1, 0.45)
    assert any("no evaluated epoch in students/bce_a/history.parquet" in line for line in report.footer)
    assert json.loads(render(report, "json"))[0]["fpr"] is not None


# -------------------------------------------------------------------------------------- constructed stores


def probs_logits(rows):
    """Logits whose softmax is exactly the given probability rows (up to float32)."""
    return np.log(np.asarray(rows, dtype=np.float64))


def one_hot_ish(c, classes, p):
    row = np.full(classes, (1 - p) / (classes - 1))
    row[c] = p
    return row


@pytest.fixture()
def empty_store(tmp_path):
    return Store(str(tmp_path / "store"))


def test_oracle_beats_dense_on_constructed_data(empty_store):
    # each video: one clip sure of the true class, three clips fairly sure of the same wrong class
    classes, videos = 4, []
    for v in range(6):
        label = v % classes
        wrong = (label + 1) % classes
        rows = [one_hot_ish(wrong, classes, 0.7)] * 3 + [one_hot_ish(label, classes, 0.9)]
        order = np.roll(np.arange(4), v)  # the right clip moves around
        videos.append((v, "test", label, probs_logits(np.asarray(rows)[order]), 1.0 + v))
    write_teacher(empty_store, Videos(videos))
    report = build_report(empty_store, "oracle")
    dense = row_of(report, "dense", None)
    assert dense.accuracy == 0.0
    assert row_of(report, "oracle", 1).accuracy == 100.0 >= dense.accuracy
    assert row_of(report, "oracle", 5).accuracy == dense.accuracy  # K >= N: Dense
    assert [c[:2] for c in report.cells] == [("Dense", "All"), ("Oracle", "1"), ("Oracle", "5"), ("Oracle", "10"),
                                             ("Oracle", "15")]
    assert row_of(report, "oracle", 1).extra["teacher_s"] == pytest.approx(np.mean([(1.0 + v) / 4 for v in range(6)]))


def test_equidistant_picks_segment_centres(empty_store):
    # N = 10: centres are clips [5] for K=1, [1, 5, 8] for K=3 (floor((2i+1) N / 2K)); only those are right
    classes = 3
    rows = [one_hot_ish(1, classes, 0.95)] * 10
    for c in (1, 5, 8):
        rows[c] = one_hot_ish(0, classes, 0.95)
    videos = [(7, "test", 0, probs_logits(rows), 2.0)]
    # N = 4, K = 3: centres floor((2i+1) 4 / 6) = [0, 2, 3]; clip 1 is a strong wrong class
    rows4 = [one_hot_ish(0, classes, 0.6), one_hot_ish(2, classes, 0.99), one_hot_ish(0, classes, 0.6),
             one_hot_ish(0, classes, 0.6)]
    videos.append((8, "test", 0, probs_logits(rows4), 1.0))
    write_teacher(empty_store, Videos(videos))
    report = build_report(empty_store, "accuracy", k=[1, 2, 3, 4], methods="equidistant")
    # K=1: clip 5 / clip 2, both right. K=2: clips 2, 7 / clips 1, 3, both wrong. K=3: [1, 5, 8] / [0, 2, 3], right.
    # (the first/last clip or np.linspace endpoints would give other answers)
    assert row_of(report, "equidistant", 1).accuracy == 100.0
    assert row_of(report, "equidistant", 2).accuracy == 0.0
    assert row_of(report, "equidistant", 3).accuracy == 100.0
    assert row_of(report, "equidistant", 4).extra["teacher_s"] == pytest.approx((2.0 * 4 / 10 + 1.0) / 2)


def test_ranked_method_picks_exactly_the_top_k(empty_store):
    """Only the top-K clips by rank_score are right; any other clip in the mix flips the video to wrong."""
    classes, rng = 4, np.random.default_rng(3)
    videos, per_video, inverted = [], {}, {}
    right = [0.4, 0.2, 0.2, 0.2]  # class 0 at 0.4
    for v in range(8):
        n = 6
        rank = rng.permutation(n).astype(np.float32)  # distinct scores
        order = np.argsort(-rank, kind="stable")
        k_right = 1 + v % 3  # the top 1, 2 or 3 are right
        rows = np.empty((n, classes))
        for pos, clip in enumerate(order):
            rows[clip] = right if pos < k_right else [0.0033, 0.99, 0.0034, 0.0033]
        label = 0
        videos.append((v, "test", label, probs_logits(rows), 1.2))
        per_video[v] = {"logits": rng.normal(size=(n, classes)), "rank_score": rank, "confidence": rank / n,
                        "seconds": 0.1}
        inverted[v] = {**per_video[v], "rank_score": -rank}
    data = Videos(videos)
    write_teacher(empty_store, data)
    write_scores(empty_store, data, "good", "bce-conf", per_video)
    write_scores(empty_store, data, "reversed", "trivial-mt", inverted)
    report = build_report(empty_store, "3", k=[1, 2, 3], methods="bce-conf,trivial-mt")
    k_right = np.array([1 + v % 3 for v in range(8)])
    for k in (1, 2, 3):
        assert row_of(report, "bce-conf", k).accuracy == pytest.approx(100 * np.mean(k_right >= k))
        assert row_of(report, "trivial-mt", k).accuracy == 0.0


def division_store(store):
    """The overlap example: K=3, K_s=2 -> clip A (top z~, 2nd lowest entropy) in both lists, clip B student only.

    teacher A = [.88 .02 .10], student A = [.5 .4 .1]; student B = [.05 .8 .15]; clip C: high entropy, low z~.
    The rule's mean ((tA + sA) / 2 + sB) / 2 favours class 1 (the label); counting A's two vectors separately,
    or using only A's teacher vector, favours class 0.
    """
    teacher = [[0.88, 0.02, 0.10], [0.9, 0.05, 0.05], [0.9, 0.05, 0.05]]
    student = [[0.5, 0.4, 0.1], [0.05, 0.8, 0.15], [0.34, 0.33, 0.33]]
    z = np.array([3.0, 1.0, 2.0], np.float32)  # A first, then C, then B
    videos = [(1, "test", 1, probs_logits(teacher), 3.0)]
    # second video: the teacher is wrong everywhere, the student right: K_s = K uses only student vectors
    teacher2 = [[0.1, 0.1, 0.8]] * 4
    student2 = [[0.1, 0.7, 0.2], [0.2, 0.6, 0.2], [0.3, 0.4, 0.3], [0.05, 0.9, 0.05]]
    videos.append((2, "test", 1, probs_logits(teacher2), 2.0))
    data = Videos(videos)
    write_teacher(store, data)
    write_scores(store, data, "condi", "condi-sr", {
        0: {"logits": probs_logits(student), "rank_score": z, "confidence": 1 / (1 + np.exp(-z)), "seconds": 0.3},
        1: {"logits": probs_logits(student2), "rank_score": np.array([0.1, 0.2, 0.3, 0.4], np.float32),
            "confidence": np.array([0.5, 0.5, 0.6, 0.6], np.float32), "seconds": 0.1},
    })
    return data, teacher, student, teacher2, student2


def test_division_overlap_rule_and_extremes(empty_store):
    data, teacher, student, teacher2, student2 = division_store(empty_store)
    report = build_report(empty_store, "4", k=[1, 2, 3], ks=[0, 1, 2, 3])
    # video 1, K=3, K_s=2: teacher A (K_t=1); student A, B: A averaged -> label 1. Video 2: teacher clip 3 (top z~)
    # says class 2, student clips 3, 0 (lowest entropy) say class 1: mean favours 1.
    row = row_of(report, "condi-sr", 3, ks=2)
    assert row.accuracy == 100.0
    expected_a = (np.array(teacher[0]) + np.array(student[0])) / 2
    assert ((expected_a + student[1]) / 2).argmax() == 1  # the rule
    assert (np.array(teacher[0]) + student[0] + student[1]).argmax() == 0  # double counting would be wrong
    assert row.extra["k_t"] == 1
    assert row.extra["teacher_s"] == pytest.approx((3.0 / 3 * 1 + 2.0 / 4 * 1) / 2)
    assert row.extra["student_s"] == pytest.approx(0.2)
    # K_s = K: student vectors only, no teacher time
    for k in (1, 2, 3):
        only_student = row_of(report, "condi-sr", k, ks=k)
        assert only_student.extra["teacher_s"] == 0
        expected = []
        for (_, _, label, _, _), s in zip(data.videos, (student, student2)):
            chosen = top_k(-entropy(np.asarray(s)), k)
            expected.append(np.asarray(s)[np.sort(chosen)].mean(0).argmax() == label)
        assert only_student.accuracy == pytest.approx(100 * np.mean(expected))
    # K_s = 0 equals ConDi-SR type a
    table3 = build_report(empty_store, "3", k=[1, 2, 3], methods="condi-sr")
    for k in (1, 2, 3):
        a, b = row_of(table3, "condi-sr", k), row_of(report, "condi-sr", k, ks=0)
        assert a.accuracy == b.accuracy
        assert (a.extra["teacher_s"], a.extra["student_s"]) == (b.extra["teacher_s"], b.extra["student_s"])
    assert [c[:3] for c in report.cells][:4] == [("1", "0", "1"), ("1", "1", "0"), ("2", "0", "2"), ("2", "1", "1")]
    assert report.cells[-1][0] == "All"
    with pytest.raises(ValueError, match="table 4 only"):
        build_report(empty_store, "3", ks=[0, 1])


def test_video_level_students(empty_store):
    classes = 3
    videos = [(v, "test", v % classes, probs_logits([one_hot_ish(v % classes, classes, 0.8)] * 5), 1.0)
              for v in range(4)]
    data = Videos(videos)
    write_teacher(empty_store, data)
    write_video_level(empty_store, data, "ff", "fewer-frames", preds=[0, 1, 0, 0], ks=[2, 2, 2, 2],
                      seconds=[0.1, 0.2, 0.3, 0.4])
    report = build_report(empty_store, "accuracy", k=[1, 3])
    row = row_of(report, "fewer-frames", 2)
    assert row.accuracy == 75.0 and row.time_per_video_s == pytest.approx(0.25)
    assert [c[0] for c in report.cells] == ["1", "3", "2", "All"]


# --------------------------------------------------------------------------------------- layout and output


def test_missing_runs_are_omitted_with_a_note(empty_store):
    data, *_ = division_store(empty_store)
    report = build_report(empty_store, "3")
    assert report.columns == ("K", "ConDi-SR", "Equidistant")
    notes = [line for line in report.footer if line.startswith("Note:")]
    assert any("BCE-Conf: no finished score run" in line and "omitted" in line for line in notes)
    assert any("ST-Ent: no finished score run" in line for line in notes)
    assert {r.method for r in report.rows} == {"condi-sr", "equidistant", "dense"}


def test_md_json_csv_latex_layout(empty_store):
    division_store(empty_store)
    report = build_report(empty_store, "3")
    md = render(report, "md")
    lines = md.splitlines()
    header = next(line for line in lines if line.startswith("| K"))
    assert [c.strip() for c in header.strip("|").split("|")] == ["K", "ConDi-SR", "Equidistant"]
    body = [line for line in lines if re.match(r"\| (\d+|All) ", line)]
    assert [line.split("|")[1].strip() for line in body] == ["1", "3", "5", "7", "All"]
    cell = re.compile(r"^\d+(\.\d+)?s \(\d+\.\d\d\)$")
    for line in body[:-1]:
        cells = [c.strip() for c in line.strip("|").split("|")[1:]]
        assert cells and all(cell.match(c) for c in cells), line
    assert cell.match(body[-1].strip("|").split("|")[1].strip())  # All row: Dense under the first column
    assert "Test CPU 9000" in md and "threads 2" in md and "Student CPU 42" in md
    assert "teacher's per-clip latency" in md and "min(K_t, N)" in md
    rows = json.loads(render(report, "json"))
    assert isinstance(rows, list) and rows
    for row in rows:
        assert {"method", "k", "ks", "accuracy", "time_per_video_s"} <= set(row)
    assert [r for r in rows if r["method"] == "dense"][0]["k"] is None
    csv_text = render(report, "csv")
    assert csv_text.splitlines()[0] == "K,ConDi-SR,Equidistant" and "\n# Accuracy:" in csv_text
    latex = render(report, "latex")
    assert r"\begin{tabular}{lll}" in latex and r"All &" in latex


def test_plots_are_png_files(empty_store, tmp_path):
    division_store(empty_store)
    write_history(empty_store, "condi", [{"epoch": e, "fpr": 0.5 / e, "auroc": 0.6, "clip_accuracy": 0.5}
                                         for e in (1, 2, 3)])
    for table in ("3", "4", "accuracy", "oracle", "confidence"):
        path = tmp_path / f"fig_{table}.png"
        plot_report(build_report(empty_store, table), str(path))
        data = path.read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 5000, table


def test_no_teacher_cache_names_the_store(tmp_path):
    store = Store(str(tmp_path / "bare"))
    store.makedirs("teacher")
    with pytest.raises(StoreError, match=re.escape(str(tmp_path / "bare")) + ".*no teacher cache"):
        build_report(store, "3")
    result = CliRunner().invoke(cli, ["report", "--store", str(tmp_path / "bare"), "--table", "3"])
    assert result.exit_code == 2 and "no teacher cache" in result.output and str(tmp_path / "bare") in result.output


def test_cli_writes_json_and_plot(empty_store, tmp_path):
    division_store(empty_store)
    out, png = tmp_path / "t3.json", tmp_path / "t3.png"
    result = CliRunner().invoke(cli, ["report", "--store", empty_store.url, "--table", "3", "--k", "1,2",
                                      "--methods", "condi-sr,oracle", "--format", "json", "--out", str(out),
                                      "--plot", str(png)])
    assert result.exit_code == 0, result.output
    rows = json.loads(out.read_text())
    assert {(r["method"], r["k"]) for r in rows} == {("condi-sr", 1), ("condi-sr", 2), ("oracle", 1), ("oracle", 2),
                                                     ("dense", None)}
    assert png.stat().st_size > 0
    result = CliRunner().invoke(cli, ["report", "--store", empty_store.url, "--table", "3", "--methods", "nope"])
    assert result.exit_code == 2 and "unknown method 'nope'" in result.output
    result = CliRunner().invoke(cli, ["report", "--store", empty_store.url, "--table", "4", "--ks", "0,1"])
    assert result.exit_code == 0 and "| All" in result.output


def test_vectorised_averaging_equals_samplers(monkeypatch):
    """The report's one-pass averaging gives samplers' predictions (masks, top-K by rank, division), over blocks."""
    from condi_pipe.methods import samplers
    from condi_pipe.stages import report as report_module

    monkeypatch.setattr(report_module, "BLOCK_VIDEOS", 7)  # many blocks of videos
    rng = np.random.default_rng(11)
    counts = rng.integers(1, 12, 300)
    offsets = np.concatenate([[0], np.cumsum(counts)])
    owner = samplers.video_ids(offsets)
    teacher = softmax(rng.normal(0, 2, (offsets[-1], 6))).astype(np.float32)
    student = softmax(rng.normal(0, 1, (offsets[-1], 6))).astype(np.float32)
    scores = rng.normal(size=offsets[-1])
    ranks = samplers.rank_within_videos(scores, offsets)
    order = report_module._rank_order(ranks, offsets, owner)
    top = report_module._mean_argmax(lambda rows: teacher[rows], order, offsets[:-1], counts, [1, 2, 5, 11, 20])
    for k, preds in top.items():
        mask = ranks < k
        assert (report_module._mask_predictions(teacher, owner, len(counts), mask)
                == samplers.predict_videos(teacher, offsets, mask)).all()
        assert (preds == samplers.predict_videos(teacher, offsets, mask)).mean() == 1.0, k
    ent_ranks = samplers.rank_within_videos(-entropy(student), offsets)
    for k, ks in ((1, 0), (3, 1), (5, 5), (7, 3)):
        expected = samplers.predict_videos_division(teacher, student, offsets, ranks, ent_ranks, k, ks).predictions
        got = report_module._division_predictions(teacher, student, owner, len(counts), ranks < k - ks, ent_ranks < ks)
        assert (got == expected).all(), (k, ks)


def test_teacher_time_from_the_latency_curve(empty_store):
    """--teacher-time curve (the default with a curve): K_t < N clips cost one batch of K_t on the cache's curve; K_t >= N the measured seconds."""
    classes = 3
    videos = [(v, "test", 0, probs_logits([one_hot_ish(0, classes, 0.8)] * n), seconds)
              for v, (n, seconds) in enumerate([(4, 2.0), (10, 3.0), (2, 0.5)])]
    curve = {"batch": [1, 2, 4, 8], "seconds": [0.3, 0.4, 0.6, 1.0]}
    data = Videos(videos)
    write_teacher(empty_store, data, meta={"latency_curve": curve})
    per_video = {i: {"logits": np.zeros((len(v[3]), classes)), "rank_score": np.arange(len(v[3]), dtype=np.float32),
                     "confidence": np.full(len(v[3]), 0.7, np.float32), "seconds": 0.1} for i, v in enumerate(videos)}
    write_scores(empty_store, data, "c", "condi-sr", per_video)
    shared = build_report(empty_store, "3", k=[1, 3, 9], teacher_time="share")
    curved = build_report(empty_store, "3", k=[1, 3, 9], teacher_time="curve")
    # The default uses the curve whenever the cache has one.
    default = build_report(empty_store, "3", k=[1, 3, 9])
    assert [(r.method, r.k, r.extra["teacher_s"]) for r in default.rows] == [
        (r.method, r.k, r.extra["teacher_s"]) for r in curved.rows]
    expected_curve = {1: [0.3, 0.3, 0.3], 3: [0.5, 0.5, 0.5], 9: [2.0, 1.125, 0.5]}  # 9 >= N: seconds; 9 < 10: 1.0/8*9
    for k, per in expected_curve.items():
        row = row_of(curved, "condi-sr", k)
        assert row.extra["teacher_s"] == pytest.approx(np.mean(per))
        assert row.time_per_video_s == pytest.approx(0.1 + np.mean(per) + row.extra["selection_s"])
        share = row_of(shared, "condi-sr", k)
        assert share.extra["teacher_s_curve"] == pytest.approx(np.mean(per))
        assert share.extra["teacher_s"] == share.extra["teacher_s_share"] == pytest.approx(
            np.mean([s / n * min(k, n) if k < n else s for n, s in [(4, 2.0), (10, 3.0), (2, 0.5)]]))
    assert row_of(curved, "dense", None).time_per_video_s == pytest.approx(np.mean([2.0, 3.0, 0.5]))
    assert any("latency curve" in line and "--teacher-time curve" in line for line in shared.footer)
    assert any("from the latency curve" in line for line in curved.footer)
    table4 = build_report(empty_store, "4", k=[3], ks=[1], teacher_time="curve")
    # K_t = 2: one batch of 2 on the curve, except the 2-clip video: its measured seconds
    assert row_of(table4, "condi-sr", 3, ks=1).extra["teacher_s"] == pytest.approx((0.4 + 0.4 + 0.5) / 3)
    bare = Store(str(Path(empty_store.root).parent / "bare"))
    write_teacher(bare, data)
    with pytest.raises(ValueError, match="no latency_curve"):
        build_report(bare, "3", teacher_time="curve")


def test_teacher_only_store_renders_every_table(empty_store):
    """Only a teacher cache: student methods are notes, teacher-only methods and Dense still render."""
    classes = 3
    videos = [(v, "test", v % classes, probs_logits([one_hot_ish(v % classes, classes, 0.7)] * (1 + v)), 1.0)
              for v in range(5)]
    write_teacher(empty_store, Videos(videos))
    table3 = build_report(empty_store, "3", methods="condi-sr,st-ent")
    assert table3.columns == ("K", "Dense") and table3.cells[-1] == ("All", "1.00s (100.00)")
    assert all(len(row) == 2 for row in table3.cells)
    for table in ("3", "4", "accuracy", "oracle", "confidence"):
        report = build_report(empty_store, table)
        for fmt in ("md", "csv", "json", "latex"):
            assert render(report, fmt)
    assert build_report(empty_store, "confidence").rows == ()


def test_time_model_docstring_examples():
    import doctest

    from condi_pipe.methods import time_model

    result = doctest.testmod(time_model)
    assert result.failed == 0 and result.attempted >= 6
