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
from condi_pipe.report import ReportTable, build_report, plot_report, render
from condi_pipe.report.render import format_seconds
from condi_pipe.storage import clip_outputs
from condi_pipe.storage.errors import StoreError
from condi_pipe.storage.run_state import set_stage
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


def record_stage(store: Store, key: str = f"teacher-cache/{TEACHER}") -> None:
    """The stage record a real run leaves: the CLI refuses a path that holds none (not a store)."""
    set_stage(store, key, state="done", counts={})


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
    from condi_pipe.methods.clip_selectors import RandomSelector, VideoClips

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


def test_confidence_table(random_store, tmp_path):
    import shutil

    shared, data, students = random_store
    shutil.copytree(shared.path(), tmp_path / "store")  # histories go into a copy: the module's store stays as made
    store = Store(str(tmp_path / "store"))
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
    assert report.columns[:4] == ("K", "Oracle", "Perfect z", "Random")
    assert [c[:2] for c in report.cells] == [("1", "100.00"), ("5", "0.00"), ("10", "0.00"), ("15", "0.00"),
                                             ("All", "0.00")]
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
    with_ci = re.compile(r"^\d+(\.\d+)?s \(\d+\.\d\d\) \[[+-]\d+\.\d, [+-]\d+\.\d\]$")  # CI against Dense
    for line in body[:-1]:
        cells = [c.strip() for c in line.strip("|").split("|")[1:]]
        assert cells and all(with_ci.match(c) for c in cells), line
    assert cell.match(body[-1].strip("|").split("|")[1].strip())  # All row: Dense under the first column, no CI
    # every printed cell shows its own row's time and accuracy, and its own CI
    displays = {"ConDi-SR": "condi-sr", "Equidistant": "equidistant"}
    for line in body[:-1]:
        k, *cells = [c.strip() for c in line.strip("|").split("|")]
        for display, text in zip(("ConDi-SR", "Equidistant"), cells):
            row = row_of(report, displays[display], int(k))
            low, high = row.extra["ci95_vs_dense_pp"]
            assert text == f"{format_seconds(row.time_per_video_s)} ({row.accuracy:.2f}) [{low:+.1f}, {high:+.1f}]"
    dense = row_of(report, "dense", None)
    assert body[-1].split("|")[2].strip() == f"{format_seconds(dense.time_per_video_s)} ({dense.accuracy:.2f})"
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


def test_plots_draw_the_table_rows(empty_store, tmp_path):
    """Each figure draws its table's numbers: one line per method through its rows, Dense as the reference."""
    import matplotlib.image

    division_store(empty_store)
    write_history(empty_store, "condi", [{"epoch": e, "fpr": 0.5 / e, "auroc": 0.6, "clip_accuracy": 0.5}
                                         for e in (1, 2, 3)])
    for table in ("3", "4", "accuracy", "oracle", "confidence"):
        path = tmp_path / f"fig_{table}.png"
        report = build_report(empty_store, table)
        figure = plot_report(report, str(path))
        pixels = matplotlib.image.imread(str(path))
        assert pixels.shape[:2] == (int(5.2 * 120), 8 * 120) and pixels.std() > 0.01, table  # an 8x5.2 in figure
        lines = {line.get_label(): line for line in figure.axes[0].get_lines()}
        dense = next((r for r in report.rows if r.method == "dense"), None)
        if table == "confidence":
            assert list(lines["ConDi-SR"].get_xdata()) == [1, 2, 3]
            assert list(lines["ConDi-SR"].get_ydata()) == pytest.approx([0.5, 0.25, 0.5 / 3])
            continue
        by_display: dict[str, list] = {}
        for row in report.rows:
            if row.method != "dense":
                by_display.setdefault(row.extra["display"], []).append(row)
        for display, rows in by_display.items():
            if table == "4":
                for k in {r.k for r in rows}:
                    sub = sorted((r for r in rows if r.k == k), key=lambda r: r.ks)
                    drawn = lines[f"{display}, K={k}"]
                    assert list(drawn.get_xdata()) == [r.time_per_video_s for r in sub]
                    assert list(drawn.get_ydata()) == [r.accuracy for r in sub]
                continue
            rows = sorted(rows, key=lambda r: r.k)
            x = [r.k for r in rows] if table in ("accuracy", "oracle") else [r.time_per_video_s for r in rows]
            assert list(lines[display].get_xdata()) == x and list(lines[display].get_ydata()) == [
                r.accuracy for r in rows], (table, display)
        assert any(label.startswith("Dense (") and f"{dense.accuracy:.2f}" in label for label in lines), table


def test_no_teacher_cache_names_the_store(tmp_path):
    store = Store(str(tmp_path / "bare"))
    store.makedirs("teacher")
    with pytest.raises(StoreError, match=re.escape(str(tmp_path / "bare")) + ".*no teacher cache"):
        build_report(store, "3")
    record_stage(store, "extract")
    result = CliRunner().invoke(cli, ["report", "--store", str(tmp_path / "bare"), "--table", "3"])
    assert result.exit_code == 2 and "no teacher cache" in result.output and str(tmp_path / "bare") in result.output


def test_cli_writes_json_and_plot(empty_store, tmp_path):
    division_store(empty_store)
    record_stage(empty_store)
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
    from condi_pipe.report import predictions as report_module

    monkeypatch.setattr(report_module, "BLOCK_VIDEOS", 7)  # many blocks of videos
    rng = np.random.default_rng(11)
    counts = rng.integers(1, 12, 300)
    offsets = np.concatenate([[0], np.cumsum(counts)])
    owner = samplers.video_ids(offsets)
    teacher = softmax(rng.normal(0, 2, (offsets[-1], 6))).astype(np.float32)
    student = softmax(rng.normal(0, 1, (offsets[-1], 6))).astype(np.float32)
    scores = rng.normal(size=offsets[-1])
    ranks = samplers.rank_within_videos(scores, offsets)
    order = report_module.rank_order(ranks, offsets, owner)
    top = report_module.mean_argmax(lambda rows: teacher[rows], order, offsets[:-1], counts, [1, 2, 5, 11, 20])
    for k, preds in top.items():
        mask = ranks < k
        assert (report_module.mask_predictions(teacher, owner, len(counts), mask)
                == samplers.predict_videos(teacher, offsets, mask)).all()
        assert (preds == samplers.predict_videos(teacher, offsets, mask)).mean() == 1.0, k
    ent_ranks = samplers.rank_within_videos(-entropy(student), offsets)
    for k, ks in ((1, 0), (3, 1), (5, 5), (7, 3)):
        expected = samplers.predict_videos_division(teacher, student, offsets, ranks, ent_ranks, k, ks).predictions
        got = report_module.division_predictions(teacher, student, owner, len(counts), ranks < k - ks, ent_ranks < ks)
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
    for table in ("3", "4", "accuracy", "oracle"):
        report = build_report(empty_store, table)
        dense = row_of(report, "dense", None)
        assert dense.accuracy == 100.0 and dense.time_per_video_s == pytest.approx(1.0)
        assert [r["method"] for r in json.loads(render(report, "json"))].count("dense") == 1
        for fmt in ("md", "csv", "latex"):
            text = render(report, fmt)
            assert "100.00" in text and "Accuracy: top-1 over the 5 videos" in text, (table, fmt)
    confidence = build_report(empty_store, "confidence")
    assert confidence.rows == () and json.loads(render(confidence, "json")) == []
    assert any("no finished score run" in line for line in confidence.footer)


def test_video_time_docstring_examples():
    import doctest

    from condi_pipe.methods import video_time

    result = doctest.testmod(video_time)
    assert result.failed == 0 and result.attempted >= 6


# ------------------------------------------------------------------ statistics, Perfect z and clip kinds


def test_paired_bootstrap_known_cases_and_index_resampling():
    from condi_pipe.methods.statistics import paired_bootstrap_ci

    same = np.array([1, 0, 1, 1, 0, 1], bool)
    assert paired_bootstrap_ci(same, same)[:3] == (0.0, 0.0, 0.0)
    assert paired_bootstrap_ci(np.ones(50), np.zeros(50))[:3] == (1.0, 1.0, 1.0)  # a constant shift
    # against the literal procedure: draw n video indices with replacement, the same for both methods
    rng = np.random.default_rng(5)
    a, b = rng.random(200) < 0.7, rng.random(200) < 0.6
    ci = paired_bootstrap_ci(a, b, resamples=20000, seed=1)
    idx = np.random.default_rng(2).integers(0, 200, (20000, 200))
    literal = np.percentile(a[idx].mean(1) - b[idx].mean(1), [2.5, 97.5])
    assert ci.difference == pytest.approx(a.mean() - b.mean())
    assert ci.low == pytest.approx(literal[0], abs=0.01) and ci.high == pytest.approx(literal[1], abs=0.01)
    assert ci.low < ci.difference < ci.high and (ci.resamples, ci.samples) == (20000, 200)
    # seeded: the same call gives the same interval; another seed a (slightly) different one
    assert paired_bootstrap_ci(a, b, seed=3) == paired_bootstrap_ci(a, b, seed=3)
    assert paired_bootstrap_ci(a, b, seed=3)[1:3] != paired_bootstrap_ci(a, b, seed=4)[1:3]
    with pytest.raises(ValueError, match="same length"):
        paired_bootstrap_ci(a, b[:-1])
    import doctest

    from condi_pipe.methods import statistics

    assert doctest.testmod(statistics).failed == 0


def dense_correct(data, idx):
    return np.array([reference_prediction(data.videos[i][3], np.arange(len(data.videos[i][3]))) == data.videos[i][2]
                     for i in idx], np.float64)


def test_table3_and_4_rows_carry_the_paired_bootstrap_ci(random_store):
    from condi_pipe.methods.statistics import paired_bootstrap_ci

    store, data, students = random_store
    report = build_report(store, "3", k=[1, 3, 9], methods="condi-sr,equidistant,random")
    test = data.of_split("test")
    dense = row_of(report, "dense", None)
    assert "ci95_vs_dense_pp" not in dense.extra and "diff_vs_dense_pp" not in dense.extra
    reference = dense_correct(data, test)
    for k in (1, 3):
        correct = np.array([reference_prediction(data.videos[i][3], top_k(students["condi-sr"][i]["rank_score"], k))
                            == data.videos[i][2] for i in test], np.float64)
        expected = paired_bootstrap_ci(correct, reference, resamples=2000, seed=0)
        row = row_of(report, "condi-sr", k)
        low, high = row.extra["ci95_vs_dense_pp"]
        assert (low, high) == pytest.approx((100 * expected.low, 100 * expected.high))
        assert row.extra["diff_vs_dense_pp"] == pytest.approx(row.accuracy - dense.accuracy)
        assert low <= row.extra["diff_vs_dense_pp"] <= high and low < high
    for method in ("condi-sr", "equidistant", "random"):  # K = 9 >= every N: Dense's own predictions
        assert row_of(report, method, 9).extra["ci95_vs_dense_pp"] == [0.0, 0.0]
    random_row = row_of(report, "random", 1)
    low, high = random_row.extra["ci95_vs_dense_pp"]
    assert low <= random_row.accuracy - dense.accuracy <= high
    # the md cell of ConDi-SR at K = 1 shows that row's own accuracy and interval
    md = render(report, "md")
    line = next(line for line in md.splitlines() if line.startswith("| 1 "))
    row = row_of(report, "condi-sr", 1)
    low, high = row.extra["ci95_vs_dense_pp"]
    assert f"({row.accuracy:.2f}) [{low:+.1f}, {high:+.1f}]" in line.split("|")[2]
    assert "2,000 resamples of the 40 videos" in md
    rows = json.loads(render(report, "json"))
    assert all(("ci95_vs_dense_pp" in r) == (r["method"] != "dense") for r in rows)
    table4 = build_report(store, "4", k=[3], ks=[0, 1])
    for ks in (0, 1):
        row = row_of(table4, "condi-sr", 3, ks=ks)
        low, high = row.extra["ci95_vs_dense_pp"]
        assert low <= row.accuracy - row_of(table4, "dense", None).accuracy <= high
    assert row_of(table4, "condi-sr", 3, ks=0).extra["ci95_vs_dense_pp"] == pytest.approx(
        row_of(report, "condi-sr", 3).extra["ci95_vs_dense_pp"])


def perfect_z_order(logits, label, video_id, seed):
    """Clips the teacher gets right first, then the rest; within each group by the seeded draw (descending)."""
    from condi_pipe.methods.samplers import hashed_uniform_scores

    n = len(logits)
    z = softmax(logits).argmax(1) == label
    draws = hashed_uniform_scores(seed, np.full(n, video_id), np.arange(n))
    return sorted(range(n), key=lambda c: (not z[c], -draws[c], c))


def perfect_z_prediction(logits, label, video_id, seed, k):
    return reference_prediction(logits, np.array(perfect_z_order(logits, label, video_id, seed)[:k]))


def test_oracle_table_perfect_z_random_and_gap_share(random_store):
    store, data, students = random_store
    report = build_report(store, "oracle", k=[1, 2, 4])
    test = data.of_split("test")
    # K = 1: a video is right exactly when the teacher is right on at least one of its clips, whatever the seed
    any_right = [(softmax(data.videos[i][3]).argmax(1) == data.videos[i][2]).any() for i in test]
    assert row_of(report, "perfect-z", 1).accuracy == pytest.approx(100 * np.mean(any_right))
    for k in (1, 2, 4):
        perfect = row_of(report, "perfect-z", k)
        seeds = [100 * np.mean([perfect_z_prediction(data.videos[i][3], data.videos[i][2], data.videos[i][0], seed, k)
                                == data.videos[i][2] for i in test]) for seed in (0, 1, 2)]
        assert perfect.extra["seed_accuracies"] == pytest.approx(seeds)
        assert perfect.accuracy == pytest.approx(np.mean(seeds))
        assert perfect.accuracy >= row_of(report, "random", k).accuracy
        random_acc, perfect_acc = row_of(report, "random", k).accuracy, perfect.accuracy
        for loss in ("condi-sr", "bce-conf", "st-ent", "st-conf"):
            row = row_of(report, loss, k)
            expected = np.mean([reference_prediction(data.videos[i][3], top_k(students[loss][i]["rank_score"], k))
                                == data.videos[i][2] for i in test])
            assert row.accuracy == pytest.approx(100 * expected)
            assert row.extra["gap_share"] == pytest.approx((row.accuracy - random_acc) / (perfect_acc - random_acc))
    assert report.columns == ("K", "Oracle", "Perfect z", "Random", "ConDi-SR (gap share)", "BCE-Conf (gap share)",
                              "ST-Ent (gap share)", "ST-Conf (gap share)")
    # the printed cells are their own rows' numbers
    first = report.cells[0]
    condi = row_of(report, "condi-sr", 1)
    assert first[:4] == ("1", *(f"{row_of(report, method, 1).accuracy:.2f}" for method in ("oracle", "perfect-z",
                                                                                          "random")))
    assert first[4] == f"{condi.accuracy:.2f} ({condi.extra['gap_share']:.2f})"
    assert report.cells[-1][:2] == ("All", f"{row_of(report, 'dense', None).accuracy:.2f}")
    assert any("Perfect z: the z-first selector, the clips the teacher classifies right first" in line
               and "not a ceiling" in line for line in report.footer)
    # no gap when K covers every clip: the share is undefined, not a division by zero
    full = build_report(store, "oracle", k=[9])
    assert json.loads(render(full, "json"))[-1]["gap_share"] is None and "n/a" in full.cells[0][4]


KINDS = ("informative", "pan", "distractor", "occlusion", "noise")


@pytest.fixture(scope="module")
def kinds_store(tmp_path_factory):
    """30 test + 10 train videos with the store's own videos/clips tables, a clip-kinds sidecar, a ConDi-SR run
    (with a confidence) and an ST-Ent run (without)."""
    from condi_pipe.storage import tables

    rng = np.random.default_rng(21)
    classes, videos, kinds = 4, [], {}
    for v in range(40):
        n = int(rng.integers(1, 8))
        label = v % classes
        logits = rng.normal(0, 2, (n, classes))
        logits[:, label] += rng.normal(1.0, 1.5, n)
        videos.append((500 + v, "test" if v % 4 else "train", label, logits, 1.0))
        kinds[500 + v] = [KINDS[i] for i in rng.choice(5, n, p=[0.6, 0.1, 0.1, 0.1, 0.1])]
    data = Videos(videos)
    folder = tmp_path_factory.mktemp("report_kinds")
    store = Store(str(folder / "store"))
    write_teacher(store, data)
    record_stage(store)
    path = {vid: f"C{label}/v_C{label}_g{vid:03d}_c01.mp4" for vid, _, label, _, _ in videos}
    store.write_table(tables.VIDEOS, pa.table({"video_id": pa.array(list(path), pa.int64()),
                                               "path": pa.array(list(path.values()), pa.string())}))
    clip_rows = [(int(cid), vid, c) for i, (vid, *_rest) in enumerate(videos) for c, cid in enumerate(data.clip_ids(i))]
    store.write_table(tables.CLIPS, pa.table({"clip_id": pa.array([r[0] for r in clip_rows], pa.int64()),
                                              "video_id": pa.array([r[1] for r in clip_rows], pa.int64()),
                                              "clip_index": pa.array([r[2] for r in clip_rows], pa.int32())}))
    sidecar = folder / "synth_clips.csv"
    lines = ["video,clip,start_frame,frames,kind,label,distractor_class,split"]
    lines += [f"{path[vid]},{c},{16 * c},16,{kind},C0,,x" for vid in reversed(list(kinds)) for c, kind in
              enumerate(kinds[vid])]  # any row order
    sidecar.write_text("\n".join(lines) + "\n")
    students = {}
    for run, loss in (("condi", "condi-sr"), ("stent", "st-ent")):
        per_video = {}
        for i in data.of_split("test"):
            n = len(data.videos[i][3])
            conf = 1 / (1 + np.exp(-rng.normal(0, 2, n)))
            s_logits = rng.normal(0, 1.5, (n, classes))
            rank = conf if loss == "condi-sr" else -entropy(softmax(s_logits))
            per_video[i] = {"logits": s_logits, "seconds": 0.1, "rank_score": rank.astype(np.float32),
                            "confidence": conf.astype(np.float32) if loss == "condi-sr" else None}
        write_scores(store, data, run, loss, per_video)
        students[loss] = per_video
    return store, data, kinds, sidecar, students


def kinds_row(report, method, kind, k=None):
    found = [r for r in report.rows if r.method == method and r.extra["kind"] == kind and r.k == k]
    assert len(found) == 1, (method, kind, k)
    return found[0]


def test_kinds_table_matches_a_direct_computation(kinds_store):
    from condi_pipe.methods.clip_selectors import RandomSelector, VideoClips

    store, data, kinds, sidecar, students = kinds_store
    report = build_report(store, "kinds", clip_kinds=str(sidecar))
    test, train = data.of_split("test"), data.of_split("train")

    def clips_of(idx):  # (kind, z) per clip, straight from the logits
        return [(kinds[data.videos[i][0]][c], int(softmax(data.videos[i][3])[c].argmax() == data.videos[i][2]))
                for i in idx for c in range(len(data.videos[i][3]))]

    eval_clips, train_clips = clips_of(test), clips_of(train)
    shares = []
    for kind in KINDS:
        row = kinds_row(report, "teacher", kind)
        z_eval = [z for k, z in eval_clips if k == kind]
        z_train = [z for k, z in train_clips if k == kind]
        assert row.extra["eval_clips"] == len(z_eval) and row.extra["train_clips"] == len(z_train)
        assert row.extra["eval_share"] == pytest.approx(len(z_eval) / len(eval_clips))
        assert row.extra["z_rate_eval"] == pytest.approx(np.mean(z_eval))
        assert row.extra["z_rate_train"] == pytest.approx(np.mean(z_train))
        assert row.accuracy == pytest.approx(100 * np.mean(z_eval))  # the teacher's clip accuracy is z on eval
        shares.append(row.extra["eval_share"])
    assert sum(shares) == pytest.approx(1.0)
    assert kinds_row(report, "teacher", "all").extra["z_rate_train"] == pytest.approx(
        np.mean([z for _, z in train_clips]))
    # the students: mean z~ per kind (ST-Ent has no confidence) and the AUROC of the ranking, informative vs the rest
    for loss in ("condi-sr", "st-ent"):
        rank = np.concatenate([students[loss][i]["rank_score"] for i in test]).astype(np.float64)
        informative = np.array([k == "informative" for k, _ in eval_clips])
        pos, neg = rank[informative], rank[~informative]
        expected = ((pos[:, None] > neg).sum() + 0.5 * (pos[:, None] == neg).sum()) / (len(pos) * len(neg))
        assert kinds_row(report, loss, "all").extra["auroc_informative_vs_ambiguous"] == pytest.approx(expected)
    conf = np.concatenate([students["condi-sr"][i]["confidence"] for i in test]).astype(np.float64)
    for kind in KINDS:
        mine = np.array([k == kind for k, _ in eval_clips])
        assert kinds_row(report, "condi-sr", kind).extra["mean_confidence"] == pytest.approx(conf[mine].mean())
        assert kinds_row(report, "st-ent", kind).to_json()["mean_confidence"] is None
    # the kind of the clip each method picks at K = 1, video by video
    picks = {m: [] for m in ("condi-sr", "st-ent", "oracle", "equidistant")}
    for i in test:
        vid, _, label, logits, _ = data.videos[i]
        picks["condi-sr"].append(top_k(students["condi-sr"][i]["rank_score"], 1)[0])
        picks["st-ent"].append(top_k(students["st-ent"][i]["rank_score"], 1)[0])
        picks["oracle"].append(top_k(softmax(logits)[:, label], 1)[0])
        picks["equidistant"].append(len(logits) // 2)  # the centre of one segment
    picked_kinds = {m: [kinds[data.videos[i][0]][c] for i, c in zip(test, chosen)] for m, chosen in picks.items()}
    for seeded in ("random", "perfect-z"):
        picked_kinds[seeded] = []
        for seed in (0, 1, 2):
            for i in test:
                vid, _, label, logits, _ = data.videos[i]
                if seeded == "random":
                    c = RandomSelector(seed).select(VideoClips(softmax(logits), label, index=vid), 1)[0]
                else:
                    c = perfect_z_order(logits, label, vid, seed)[0]
                picked_kinds[seeded].append(kinds[vid][c])
    for method, chosen in picked_kinds.items():
        total = 0.0
        for kind in KINDS:
            share = kinds_row(report, method, kind, k=1).extra["pick_share"]
            assert share == pytest.approx(chosen.count(kind) / len(chosen)), (method, kind)
            total += share
        assert total == pytest.approx(1.0)
    # the printed md shows each row's own numbers (kinds in the generator's order, then "all")
    md = render(report, "md")
    header = next(line for line in md.splitlines() if line.startswith("| Quantity"))
    assert [c.strip() for c in header.strip("|").split("|")][2:8] == [*KINDS, "all"]
    line = next(line for line in md.splitlines() if line.startswith("| z rate, train"))
    cells = [c.strip() for c in line.strip("|").split("|")]
    assert cells[2:8] == [f"{kinds_row(report, 'teacher', k).extra['z_rate_train']:.2f}" for k in (*KINDS, "all")]
    line = next(line for line in md.splitlines() if re.match(r"\| Share of picks, K=1 +\| Oracle ", line))
    cells = [c.strip() for c in line.strip("|").split("|")]
    assert cells[2:7] == [f"{kinds_row(report, 'oracle', k, k=1).extra['pick_share']:.2f}" for k in KINDS]
    assert "Time per video" not in md  # no times in this table
    for fmt in ("csv", "json", "latex"):
        assert render(report, fmt)


def test_kinds_sidecar_errors_name_the_file(kinds_store, tmp_path):
    store, data, kinds, sidecar, _ = kinds_store
    lines = sidecar.read_text().splitlines()
    first_video = lines[1].split(",")[0]
    no_video = tmp_path / "no_video.csv"
    no_video.write_text("\n".join([lines[0]] + [ln for ln in lines[1:] if not ln.startswith(first_video + ",")]))
    with pytest.raises(ValueError, match=re.escape(str(no_video)) + f": no row for video '{re.escape(first_video)}'"):
        build_report(store, "kinds", clip_kinds=str(no_video))
    no_clip = tmp_path / "no_clip.csv"
    no_clip.write_text("\n".join([lines[0]] + [ln for ln in lines[1:] if not ln.startswith(first_video + ",0,")]))
    with pytest.raises(ValueError, match=re.escape(str(no_clip)) + f": video '{re.escape(first_video)}' has no clip 0"):
        build_report(store, "kinds", clip_kinds=str(no_clip))
    bad = tmp_path / "bad.csv"
    bad.write_text("path,label\na.mp4,1\n")
    for path, message in ((bad, "no column video, clip, kind"), (tmp_path / "absent.csv", "not found")):
        result = CliRunner().invoke(cli, ["report", "--store", store.url, "--table", "kinds",
                                          "--clip-kinds", str(path)])
        assert result.exit_code == 2 and str(path) in result.output and message in result.output, result.output
        assert len(result.output.strip().splitlines()) == 1
    result = CliRunner().invoke(cli, ["report", "--store", store.url, "--table", "kinds"])
    assert result.exit_code == 2 and "--clip-kinds" in result.output
    with pytest.raises(ValueError, match="table kinds only"):
        build_report(store, "3", clip_kinds=str(sidecar))
    result = CliRunner().invoke(cli, ["report", "--store", store.url, "--table", "kinds", "--clip-kinds", str(sidecar),
                                      "--format", "json"])
    assert result.exit_code == 0
    assert {"teacher", "condi-sr", "st-ent", "oracle", "perfect-z"} <= {r["method"] for r in json.loads(result.output)}


def test_run_config_report_needs_the_sidecar_for_kinds():
    from condi_pipe.app.run_config import ReportSection

    with pytest.raises(ValueError, match="clip_kinds"):
        ReportSection(tables=["3", "kinds"])
    assert ReportSection(tables=["kinds"], clip_kinds="synth_clips.csv").clip_kinds == "synth_clips.csv"


def test_kinds_table_on_a_generated_benchmark(synth_teacher_store, synth_root):
    """The real sidecar joins the real store: per kind, the eval and train clip counts are the sidecar's own."""
    import csv

    report = build_report(str(synth_teacher_store), "kinds", clip_kinds=str(synth_root / "synth_clips.csv"))
    with open(synth_root / "synth_clips.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    for kind in {r["kind"] for r in rows}:
        row = kinds_row(report, "teacher", kind)
        assert row.extra["eval_clips"] == sum(r["kind"] == kind and r["split"] == "test" for r in rows)
        assert row.extra["train_clips"] == sum(r["kind"] == kind and r["split"] == "train" for r in rows)
    assert sum(r.extra["eval_share"] for r in report.rows if r.method == "teacher" and r.extra["kind"] != "all") == \
        pytest.approx(1.0)


def test_confidence_table_reads_the_epoch_distill_kept():
    """The epoch columns show the epoch distill kept (meta.json epoch_kept), not the last one trained."""
    import pyarrow as pa

    from condi_pipe.report.tables.confidence import history_summary as _history_summary

    history = pa.table({"epoch": [1, 2, 3], "eval_auroc": [0.6, 0.9, 0.7], "eval_fpr": [0.5, 0.2, 0.4],
                        "eval_clip_accuracy": [0.1, 0.3, 0.5]})
    kept, _ = _history_summary(history, kept_epoch=2)
    assert (kept["history_epoch"], kept["history_auroc"], kept["history_fpr"]) == (2, 0.9, 0.2)
    last, curve = _history_summary(history)
    assert (last["history_epoch"], last["history_auroc"]) == (3, 0.7)
    assert curve == {"epoch": [1, 2, 3], "fpr": [0.5, 0.2, 0.4]}
