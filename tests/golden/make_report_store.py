"""Write the golden report store: a small, seeded store with every output the report reads.

``python tests/golden/make_report_store.py OUT`` writes it to ``OUT``; the copy the golden test reads is committed
under ``tests/golden/report_store/`` (its bytes, not this script, are the fixed input, so a change to the writers
cannot move the golden tables). It holds a plain teacher cache with a latency curve and FLOPs, an SGS teacher cache
of the same clips, five clip-level score runs and one video-level run, training histories, side-by-side timings,
the store's own videos / clips tables and a clip-kinds sidecar.
"""

from __future__ import annotations

import sys

import numpy as np
import pyarrow as pa

from condi_pipe.storage import clip_outputs, model_timings, tables
from condi_pipe.storage.run_state import set_stage
from condi_pipe.storage.store import Store

TEACHER, SGS_TEACHER = "golden_teacher", "golden_teacher+sgs"
CLASSES = 5
KINDS = ("informative", "occlusion", "noise", "pan", "distractor")
DEVICE = {"device": "cpu", "device_name": "Golden CPU", "threads": 2, "bf16": False}


def softmax(x):
    e = np.exp(x - x.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def entropy(p):
    return -(p * np.log(np.where(p > 0, p, 1.0))).sum(axis=-1)


def main(out: str) -> None:
    rng = np.random.default_rng(20261129)
    store = Store(out)
    videos = []  # (video_id, split, label, logits (N, C), seconds, kinds)
    for v in range(36):
        n = int(rng.integers(1, 10))
        label = v % CLASSES
        kinds = [KINDS[i] for i in rng.choice(5, n, p=[0.6, 0.1, 0.1, 0.1, 0.1])]
        logits = rng.normal(0, 2, (n, CLASSES))
        logits[:, label] += np.where(np.array(kinds) == "informative", 2.5, 0.0) + rng.normal(0, 1, n)
        split = "train" if v % 6 == 5 else "test"
        videos.append((200 + 7 * v, split, label, logits, float(rng.uniform(0.2, 1.5)), kinds))
    order = rng.permutation(len(videos))
    videos = [videos[i] for i in order]  # video ids not in clip order
    first, clip_ids = 5000, []
    for video in videos:
        clip_ids.append(first + np.arange(len(video[3])))
        first += len(video[3]) + 2  # gaps in clip ids

    set_stage(store, "extract", state="done", config={"golden": True})
    paths = {vid: f"C{label}/v_C{label}_g{vid:03d}_c01.mp4" for vid, _, label, *_ in videos}
    store.write_table(tables.VIDEOS, pa.table({"video_id": pa.array(list(paths), pa.int64()),
                                               "path": pa.array(list(paths.values()), pa.string())}))
    store.write_table(tables.CLIPS, pa.table({
        "clip_id": pa.array(np.concatenate(clip_ids), pa.int64()),
        "video_id": pa.array(np.concatenate([[v[0]] * len(v[3]) for v in videos]), pa.int64()),
        "clip_index": pa.array(np.concatenate([np.arange(len(v[3])) for v in videos]), pa.int32())}))

    def teacher_tables(logit_list, seconds, extra_columns):
        rows = {k: [] for k in ("clip_id", "video_id", "split", "label", "pred", "max_prob", "entropy", "true_prob",
                                "z")}
        for (vid, split, label, *_), lg, ids in zip(videos, logit_list, clip_ids):
            p = softmax(lg)
            rows["clip_id"] += ids.tolist()
            rows["video_id"] += [vid] * len(lg)
            rows["split"] += [split] * len(lg)
            rows["label"] += [label] * len(lg)
            rows["pred"] += p.argmax(1).tolist()
            rows["max_prob"] += p.max(1).tolist()
            rows["entropy"] += entropy(p).tolist()
            rows["true_prob"] += p[:, label].tolist()
            rows["z"] += (p.argmax(1) == label).astype(int).tolist()
        types = {"clip_id": pa.int64(), "video_id": pa.int64(), "split": pa.string(), "label": pa.int32(),
                 "pred": pa.int32(), "max_prob": pa.float32(), "entropy": pa.float32(), "true_prob": pa.float32(),
                 "z": pa.int8()}
        columns = {k: pa.array(rows[k], types[k]) for k in rows}
        columns.update(extra_columns)
        clips = pa.table(columns)
        video_table = pa.table({"video_id": pa.array([v[0] for v in videos], pa.int64()),
                                "split": pa.array([v[1] for v in videos], pa.string()),
                                "clips": pa.array([len(v[3]) for v in videos], pa.int32()),
                                "seconds": pa.array(seconds, pa.float64())})
        return clips, video_table

    num_clips = sum(len(v[3]) for v in videos)
    curve = {"batch": [1, 2, 4, 8], "seconds": [0.05, 0.08, 0.14, 0.26]}
    clips, video_table = teacher_tables([v[3] for v in videos], [v[4] for v in videos],
                                        {"flops": pa.array(np.full(num_clips, 4.2e9), pa.float64())})
    clip_outputs.write_outputs(store, clip_outputs.teacher_folder(TEACHER),
                               {"logits": np.concatenate([v[3] for v in videos]).astype(np.float32)}, clips,
                               video_table, {"model": "resnet10_3d_motion", **DEVICE, "classes": list(map(str, range(CLASSES))),
                                             "latency_curve": curve, "weights_sha256": "a" * 64,
                                             "z_labels": "out-of-fold", "folds": {"count": 3}})
    sgs_logits = [v[3] + rng.normal(0, 0.7, v[3].shape) for v in videos]
    bins = rng.integers(1, 5, num_clips)
    clips, video_table = teacher_tables(sgs_logits, [0.6 * v[4] for v in videos],
                                        {"flops": pa.array(1e9 + 0.8e9 * bins, pa.float64()),
                                         "sgs_bins": pa.array(bins, pa.int32())})
    clip_outputs.write_outputs(store, clip_outputs.teacher_folder(SGS_TEACHER),
                               {"logits": np.concatenate(sgs_logits).astype(np.float32)}, clips, video_table,
                               {"model": "resnet10_3d_motion", **DEVICE, "classes": list(map(str, range(CLASSES))),
                                "sgs": {"stage": "res2", "kernel": "linear"}, "weights_sha256": "b" * 64})

    test = [i for i, v in enumerate(videos) if v[1] == "test"]
    timing_rows = [{"model": model_timings.teacher_key(TEACHER), "batch": b, "median_s": s, "min_s": 0.9 * s,
                    "iqr_s": 0.05 * s, "repeats": 7} for b, s in zip(range(1, 10), np.linspace(0.05, 0.3, 9))]
    models = [{"model": model_timings.teacher_key(TEACHER), "weights_sha256": "a" * 64}]
    for run, loss in (("condi_sr", "condi-sr"), ("bce_conf", "bce-conf"), ("st_ent", "st-ent"),
                      ("st_conf", "st-conf"), ("trivial", "trivial-mt")):
        cols = {k: [] for k in ("clip_id", "video_id", "label", "pred", "confidence", "entropy", "rank_score")}
        logits, seconds = [], []
        for i in test:
            vid, _, label, teacher_logits, _, _ = videos[i]
            n = len(teacher_logits)
            z = softmax(teacher_logits).argmax(1) == label
            s_logits = rng.normal(0, 1.5, (n, CLASSES)) + 0.5 * teacher_logits
            conf = 1 / (1 + np.exp(-(rng.normal(0, 1.5, n) + 1.5 * (z - 0.5))))
            p = softmax(s_logits)
            rank = -entropy(p) if loss == "st-ent" else p.max(1) if loss == "trivial-mt" else conf
            cols["clip_id"] += clip_ids[i].tolist()
            cols["video_id"] += [vid] * n
            cols["label"] += [label] * n
            cols["pred"] += p.argmax(1).tolist()
            cols["confidence"] += (np.full(n, np.nan) if loss in ("st-ent", "trivial-mt") else conf).tolist()
            cols["entropy"] += entropy(p).tolist()
            cols["rank_score"] += rank.tolist()
            logits.append(s_logits.astype(np.float32))
            seconds.append(float(rng.uniform(0.01, 0.05)))
        types = {"clip_id": pa.int64(), "video_id": pa.int64(), "label": pa.int32(), "pred": pa.int32(),
                 "confidence": pa.float32(), "entropy": pa.float32(), "rank_score": pa.float32()}
        clips = pa.table({**{k: pa.array(cols[k], types[k]) for k in ("clip_id", "video_id")},
                          "split": pa.array(["test"] * len(cols["clip_id"]), pa.string()),
                          **{k: pa.array(cols[k], types[k]) for k in types if k not in ("clip_id", "video_id")}})
        video_table = pa.table({"video_id": pa.array([videos[i][0] for i in test], pa.int64()),
                                "split": pa.array(["test"] * len(test), pa.string()),
                                "clips": pa.array([len(videos[i][3]) for i in test], pa.int32()),
                                "seconds": pa.array(seconds, pa.float64())})
        digest = f"{len(models):x}" * 64
        clip_outputs.write_outputs(store, clip_outputs.scores_folder(run), {"logits": np.concatenate(logits)}, clips,
                                   video_table, {"run": run, "student": "resnet10_3d_motion_skim", "width": 1.0,
                                                 "loss": loss, "ranking": loss, **DEVICE, "teacher": TEACHER})
        set_stage(store, f"score/{run}", state="done", config={"student_weights_sha256": digest})
        models.append({"model": model_timings.run_key(run), "weights_sha256": digest})
        timing_rows += [{"model": model_timings.run_key(run), "batch": b, "median_s": s, "min_s": 0.9 * s,
                         "iqr_s": 0.05 * s, "repeats": 7} for b, s in zip(range(1, 10), np.linspace(0.004, 0.02, 9))]
        epochs = np.arange(1, 6)
        history = {"epoch": epochs.tolist(), "kd": np.linspace(2, 1, 5).tolist(),
                   "eval_clip_accuracy": rng.uniform(0.3, 0.6, 5).tolist(),
                   "eval_auroc": rng.uniform(0.55, 0.8, 5).tolist(), "eval_fpr": rng.uniform(0.2, 0.5, 5).tolist()}
        store.write_table(f"students/{run}/history.parquet", pa.table(history))
        store.write_json(f"students/{run}/meta.json", {"run": run, "loss": loss, "epoch_kept": 4})

    # a video-level student (Uniform-k): its stored predictions at its own k
    k_values = [min(3, len(videos[i][3])) for i in test]
    clips = pa.table({"clip_id": pa.array([], pa.int64()), "video_id": pa.array([], pa.int64()),
                      "split": pa.array([], pa.string()), "label": pa.array([], pa.int32()),
                      "pred": pa.array([], pa.int32()), "confidence": pa.array([], pa.float32()),
                      "entropy": pa.array([], pa.float32()), "rank_score": pa.array([], pa.float32())})
    video_table = pa.table({"video_id": pa.array([videos[i][0] for i in test], pa.int64()),
                            "split": pa.array(["test"] * len(test), pa.string()),
                            "clips": pa.array([len(videos[i][3]) for i in test], pa.int32()),
                            "seconds": pa.array(rng.uniform(0.01, 0.03, len(test)), pa.float64()),
                            "pred": pa.array(rng.integers(0, CLASSES, len(test)), pa.int32()),
                            "k": pa.array(k_values, pa.int32())})
    clip_outputs.write_outputs(store, clip_outputs.scores_folder("uniform"),
                               {"probs": np.full((len(test), CLASSES), 1.0 / CLASSES, np.float32)}, clips, video_table,
                               {"run": "uniform", "student": "resnet10_3d_motion_skim", "width": 1.0,
                                "loss": "uniform-k", "ranking": None, "k": 3, **DEVICE, "teacher": TEACHER})
    set_stage(store, "score/uniform", state="done", config={"student_weights_sha256": "f" * 64})
    models.append({"model": model_timings.run_key("uniform"), "weights_sha256": "f" * 64})
    timing_rows += [{"model": model_timings.run_key("uniform"), "batch": b, "median_s": s, "min_s": 0.9 * s,
                     "iqr_s": 0.05 * s, "repeats": 7} for b, s in zip(range(1, 10), np.linspace(0.003, 0.015, 9))]
    model_timings.write_timings(store, TEACHER, timing_rows, {"teacher": TEACHER, **DEVICE, "batches": list(range(1, 10)),
                                                       "max_batch": 9, "repeats": 7, "models": models,
                                                       "when": "2026-11-29T00:00:00Z"})

    lines = ["video,clip,start_frame,frames,kind,label,distractor_class,split"]
    lines += [f"{paths[v[0]]},{c},{16 * c},16,{kind},C{v[2]},,{v[1]}" for v in videos for c, kind in enumerate(v[5])]
    store.write_bytes("synth_clips.csv", ("\n".join(lines) + "\n").encode())


if __name__ == "__main__":
    main(sys.argv[1])
