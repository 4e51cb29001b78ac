"""Benchmark ``condi-pipe report`` on a large synthetic store (default: 1M clips, ~100k videos, 101 classes).

    .venv/bin/python bench/report.py [--store DIR] [--clips 1000000] [--classes 101] [--keep]

Writes a store through ``storage.clip_outputs.write_outputs`` (a teacher cache, four clip-level score runs,
one fewer-frames run, training histories), every clip in the ``test`` split (the worst case: the report reads
everything), then times each table (build + Markdown rendering) and prints seconds and the ratio against a
baseline measured in the same run: reading just the columns and the logits every table needs
(teacher clips.parquet: clip_id, video_id, split, label; teacher logits.zarr). An existing ``--store`` that
holds a complete bench store of the same size is reused; a temporary one is deleted unless ``--keep``. The figures
are recorded with the commit and the machine (``bench/record.py``).
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
from record import add_record_options, record

from condi_pipe.report import build_report, render
from condi_pipe.storage import clip_outputs
from condi_pipe.storage.store import Store

TEACHER = "bench_teacher"
CLIP_RUNS = (("condi", "condi-sr"), ("bce", "bce-conf"), ("stent", "st-ent"), ("stconf", "st-conf"))
MARKER = "bench.json"


def _softmax32(logits: np.ndarray, block: int = 1 << 17) -> np.ndarray:
    out = np.empty_like(logits)
    for lo in range(0, len(logits), block):
        b = logits[lo : lo + block] - logits[lo : lo + block].max(axis=1, keepdims=True)
        np.exp(b, out=b)
        b /= b.sum(axis=1, keepdims=True)
        out[lo : lo + block] = b
    return out


def _entropy32(probs: np.ndarray, block: int = 1 << 17) -> np.ndarray:
    out = np.empty(len(probs), np.float32)
    for lo in range(0, len(probs), block):
        p = probs[lo : lo + block]
        out[lo : lo + block] = -(p * np.log(np.maximum(p, 1e-30))).sum(axis=1)
    return out


def generate(store: Store, clips: int, classes: int, seed: int = 0, log=print) -> dict:
    rng = np.random.default_rng(seed)
    counts = rng.integers(1, 20, size=clips // 10 + 1)  # 1..19 clips per video, mean 10
    counts = counts[: int(np.searchsorted(np.cumsum(counts), clips)) + 1]
    counts[-1] -= int(counts.sum()) - clips
    if counts[-1] <= 0:
        counts = counts[:-1]
        counts[-1] += clips - int(counts.sum())
    videos = len(counts)
    video_id = np.arange(videos, dtype=np.int64) * 2 + 5
    label = rng.integers(0, classes, videos).astype(np.int32)
    clip_video = np.repeat(video_id, counts)
    clip_label = np.repeat(label, counts)
    clip_id = np.arange(clips, dtype=np.int64)
    split = pa.DictionaryArray.from_arrays(pa.array(np.zeros(clips, np.int32)), pa.array(["test"])).cast(pa.string())

    t0 = time.perf_counter()
    # teacher: right on about 60% of the clips
    logits = rng.standard_normal((clips, classes), dtype=np.float32)
    logits *= 1.5
    logits[np.arange(clips), clip_label] += rng.normal(2.5, 2.0, clips).astype(np.float32)
    probs = _softmax32(logits)
    pred = probs.argmax(axis=1).astype(np.int32)
    teacher_clips = pa.table({
        "clip_id": clip_id, "video_id": clip_video, "split": split, "label": clip_label,
        "pred": pred, "max_prob": probs.max(axis=1), "entropy": _entropy32(probs),
        "true_prob": probs[np.arange(clips), clip_label], "z": (pred == clip_label).astype(np.int8),
    })
    per_clip_latency = rng.lognormal(np.log(0.35), 0.2, videos)
    teacher_videos = pa.table({"video_id": video_id, "split": pa.array(["test"] * videos),
                               "clips": counts.astype(np.int32), "seconds": per_clip_latency * counts})
    meta = {"model": TEACHER, "device": "cpu", "device_name": "bench (synthetic timings)", "threads": 2, "bf16": False,
            "classes": [f"class{i}" for i in range(classes)]}
    clip_outputs.write_outputs(store, clip_outputs.teacher_folder(TEACHER), {"logits": logits}, teacher_clips,
                               teacher_videos, meta)
    log(f"  teacher cache: {time.perf_counter() - t0:.1f}s")
    z = (pred == clip_label)
    del probs, teacher_clips
    for run, loss in CLIP_RUNS:
        t0 = time.perf_counter()
        student = logits * np.float32(0.6)
        student += rng.standard_normal((clips, classes), dtype=np.float32)
        s_probs = _softmax32(student)
        s_entropy = _entropy32(s_probs)
        # a confidence that knows z somewhat
        c = (rng.normal(0, 1.0, clips) + np.where(z, 0.8, -0.8)).astype(np.float32)
        confidence = (1 / (1 + np.exp(-c))).astype(np.float32)
        rank = -s_entropy if loss == "st-ent" else confidence
        s_pred = s_probs.argmax(axis=1).astype(np.int32)
        del s_probs
        score_clips = pa.table({
            "clip_id": clip_id, "video_id": clip_video, "split": split, "label": clip_label, "pred": s_pred,
            "confidence": np.full(clips, np.nan, np.float32) if loss == "st-ent" else confidence,
            "entropy": s_entropy, "rank_score": rank,
        })
        score_videos = pa.table({"video_id": video_id, "split": pa.array(["test"] * videos),
                                 "clips": counts.astype(np.int32),
                                 "seconds": rng.lognormal(np.log(0.02), 0.2, videos) * counts})
        meta = {"run": run, "student": "shufflenetv2", "width": 1.0, "loss": loss, "ranking": loss, "device": "cpu",
                "device_name": "bench (synthetic timings)", "threads": 1, "teacher": TEACHER}
        clip_outputs.write_outputs(store, clip_outputs.scores_folder(run), {"logits": student}, score_clips,
                                   score_videos, meta)
        epochs = np.arange(1, 51)
        store.write_table(f"students/{run}/history.parquet", pa.table({
            "epoch": epochs, "loss_kd": 2.0 / epochs, "clip_accuracy": 0.4 + 0.3 * (1 - np.exp(-epochs / 10)),
            "auroc": 0.6 + 0.2 * (1 - np.exp(-epochs / 10)), "fpr": 0.5 * np.exp(-epochs / 15) + 0.05}))
        del student
        log(f"  scores/{run} ({loss}): {time.perf_counter() - t0:.1f}s")
    k = 4
    vl_pred = np.where(rng.random(videos) < 0.6, label, rng.integers(0, classes, videos)).astype(np.int32)
    clip_outputs.write_outputs(
        store, clip_outputs.scores_folder("ff"), {"probs": np.zeros((videos, classes), np.float32)},
        pa.table({"clip_id": pa.array([], pa.int64()), "video_id": pa.array([], pa.int64()),
                  "split": pa.array([], pa.string())}),
        pa.table({"video_id": video_id, "split": pa.array(["test"] * videos), "clips": counts.astype(np.int32),
                  "seconds": rng.lognormal(np.log(0.03), 0.2, videos) * np.minimum(counts, k),
                  "pred": vl_pred, "k": np.full(videos, k, np.int32)}),
        {"run": "ff", "student": "shufflenetv2", "width": 1.0, "loss": "fewer-frames", "k": k, "device": "cpu",
         "device_name": "bench (synthetic timings)", "threads": 1, "teacher": TEACHER})
    info = {"clips": clips, "videos": videos, "classes": classes, "seed": seed}
    store.write_json(MARKER, info)
    return info


def baseline(store: Store) -> float:
    folder = clip_outputs.teacher_folder(TEACHER)
    start = time.perf_counter()
    clip_outputs.read_clips(store, folder, ["clip_id", "video_id", "split", "label"])
    clip_outputs.read_array(store, folder, "logits")
    return time.perf_counter() - start


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--store", default=None, help="Store folder (reused when it holds this bench's store).")
    parser.add_argument("--clips", type=int, default=1_000_000)
    parser.add_argument("--classes", type=int, default=101)
    parser.add_argument("--keep", action="store_true", help="Keep a temporary store.")
    parser.add_argument("--json", action="store_true", help="Also print the figures as JSON.")
    parser.add_argument("--generate-only", action="store_true", help=argparse.SUPPRESS)
    add_record_options(parser)
    args = parser.parse_args(argv)
    if args.generate_only:  # child process: keeps the generator's memory out of the timed process
        generate(Store(args.store), args.clips, args.classes)
        return 0

    temporary = args.store is None
    root = Path(tempfile.mkdtemp(prefix="condi-report-bench-")) if temporary else Path(args.store)
    store = Store(str(root))
    try:
        info = store.read_json(MARKER) if store.exists(MARKER) else None
        if info and info["clips"] == args.clips and info["classes"] == args.classes:
            print(f"reusing {root}: {info['clips']} clips, {info['videos']} videos, {info['classes']} classes")
        else:
            print(f"generating {root}: {args.clips} clips, {args.classes} classes ...", flush=True)
            t0 = time.perf_counter()
            subprocess.run([sys.executable, __file__, "--store", str(root), "--clips", str(args.clips),
                            "--classes", str(args.classes), "--generate-only"], check=True)
            info = store.read_json(MARKER)
            print(f"generated {info['videos']} videos in {time.perf_counter() - t0:.1f}s")
        base = min(baseline(store) for _ in range(3))
        print(f"baseline (read teacher clip_id/video_id/split/label + logits {args.clips}x{args.classes} float32): "
              f"{base:.2f}s")
        figures = {"clips": info["clips"], "videos": info["videos"], "classes": info["classes"], "baseline_s": base}
        cases = [("3", {}), ("3", {"methods": "condi-sr,equidistant,bce-conf,st-ent,st-conf,random,oracle"}),
                 ("4", {}), ("accuracy", {}), ("oracle", {}), ("confidence", {})]
        print(f"{'table':<24}{'wall s':>8}{'x baseline':>12}{'CPU s':>8}")
        for table, options in cases:
            start, cpu = time.perf_counter(), time.process_time()
            report = build_report(store, table, **options)
            render(report, "md")
            took, cpu = time.perf_counter() - start, time.process_time() - cpu
            name = f"{table}" + (" (7 methods)" if options else "")
            figures[f"table {name}"] = {"wall_s": took, "cpu_s": cpu, "x_baseline": took / base}
            print(f"{name:<24}{took:>8.2f}{took / base:>12.2f}{cpu:>8.2f}")
        print("(3 = ConDi-SR, Equidistant, BCE-Conf, ST-Ent, Dense; 7 methods adds ST-Conf, Random (3 seeds), Oracle; "
              "accuracy = K 1..10 for every method; CPU s = process CPU time, all threads)")
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        figures["peak_rss_mb"] = peak
        print(f"peak RSS of the reporting process (all tables): {peak:.0f} MB")
        print(render(build_report(store, "3"), "md"))
        if args.json:
            print(json.dumps(figures, indent=2))
        record("report", figures, args)
    finally:
        if temporary and not args.keep:
            shutil.rmtree(root, ignore_errors=True)
        elif temporary:
            print(f"kept {root}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
