"""ConDi against Dense on new videos, end to end (decode included), side by side in one process.

    .venv/bin/python bench/predict.py --store DEMO_STORE [--student RUN] [--k 5] [--videos 60] [--rounds 2]
                                      [--encodings ucf-xvid,kinetics-h264] [--hour] [--collection 200]
                                      [--machine-load shared|quiet] [--no-record]

The store's test videos (``--videos``, as many per class) are re-encoded with the bundled ffmpeg as real datasets
are (``bench/decode_strategies.py``'s encodings: UCF-101's MPEG-4 Part 2 in AVI at 320x240 with key frames a video
apart and B-frames, Kinetics' H.264 in MP4 at 340x256), keeping their frame rate so their clips are the store's.
Each round predicts every file with ConDi-SR at ``--k`` and with Dense, in alternating order, each into a fresh
output store, in this process (``workers=0``); the figures are videos per second (median over the rounds), the
ratio ConDi / Dense, the seconds per step, and both methods' top-1 accuracy on those videos.

``--hour``: peak RSS (VmHWM) of the ``condi-pipe predict`` process on a one-hour 320x240 MPEG-4 video (ffmpeg's
``testsrc2``), each method in its own process (ffmpeg's own process apart: one frame buffer and its decoder).
``--collection N``: N videos (the UCF-like files repeated) of which 5% are broken (truncated, emptied or missing):
predicted once whole, then killed with SIGKILL three times at random videos and resumed; it checks every good
video has a row, every broken one a failure row, and that the resumed ``predictions.parquet`` has the
uninterrupted run's bytes.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq

sys.path.insert(0, str(Path(__file__).resolve().parent))
from decode_strategies import ENCODINGS  # noqa: E402  (the bench folder is not a package)
from record import add_record_options, record  # noqa: E402

from condi_pipe.app.predict import PredictRequest, models_from_store, predict  # noqa: E402
from condi_pipe.compute.torch_runtime import RuntimeOptions  # noqa: E402
from condi_pipe.pipeline.executor import ExecutorOptions  # noqa: E402
from condi_pipe.pipeline.faults import KILL_ENV  # noqa: E402
from condi_pipe.storage.predictions import PREDICTIONS, STEPS  # noqa: E402
from condi_pipe.storage.store import Store  # noqa: E402
from condi_pipe.video.ffmpeg_binary import ffmpeg_exe  # noqa: E402

QUIET = dict(quiet=True, log=lambda message: None)


def reencode(source: Path, out: Path, encoding: str) -> Path:
    suffix, codec_args, size, _ = ENCODINGS[encoding]
    target = out.with_suffix(suffix)
    subprocess.run([ffmpeg_exe(), "-hide_banner", "-loglevel", "error", "-y", "-i", str(source), "-an", "-vf",
                    f"scale={size}", *codec_args, str(target)], check=True)
    return target


def test_videos(store: Store, per_class: int) -> list[tuple[Path, str]]:
    extract = json.loads(Path(store.path("run.json")).read_text())["stages"]["extract"]["config"]
    videos = pq.read_table(store.path("videos.parquet"), columns=["path", "split", "label_name"]).to_pylist()
    chosen, seen = [], {}
    for video in videos:
        if video["split"] == "test" and seen.get(video["label_name"], 0) < per_class:
            seen[video["label_name"]] = seen.get(video["label_name"], 0) + 1
            chosen.append((Path(extract["root"]) / video["path"], video["label_name"]))
    return chosen


def run_method(models, request, files, labels, folder: Path) -> dict:
    if folder.exists():
        shutil.rmtree(folder)
    start = time.perf_counter()
    predict(Store(str(folder)), [str(f) for f in files], models, request, ExecutorOptions(workers=0), **QUIET)
    seconds = time.perf_counter() - start
    rows = pq.read_table(folder / PREDICTIONS, columns=["top1"]).column("top1").to_pylist()
    steps = pq.read_table(folder / "step_seconds.parquet").to_pandas()
    return {"videos_per_s": len(files) / seconds, "seconds": seconds,
            "accuracy": 100.0 * float(np.mean([a == b for a, b in zip(rows, labels)])),
            "ms_per_video": {step: 1000 * float(steps[f"{step}_s"].mean()) for step in STEPS}}


def compare(store: Store, args, sources) -> dict:
    runtime = RuntimeOptions(device=args.device, threads=args.threads, bf16=False)
    condi = PredictRequest(method="condi-sr", k=args.k, runtime=runtime)
    dense = PredictRequest(method="dense", k=args.k, runtime=runtime)
    condi_models = models_from_store(store, condi, student_run=args.student, log=lambda m: None)
    dense_models = models_from_store(store, dense, teacher=condi_models.teacher.teacher_name, log=lambda m: None)
    figures = {}
    with tempfile.TemporaryDirectory(prefix="bench-predict-") as tmp:
        tmp = Path(tmp)
        for encoding in args.encodings.split(","):
            (tmp / encoding).mkdir()
            files = [reencode(path, tmp / encoding / f"{i:04d}", encoding) for i, (path, _) in enumerate(sources)]
            labels = [label for _, label in sources]
            runs = {"condi-sr": [], "dense": []}
            for r in range(args.rounds):
                order = [("condi-sr", condi_models, condi), ("dense", dense_models, dense)]
                for name, models, request in order if r % 2 == 0 else order[::-1]:
                    runs[name].append(run_method(models, request, files, labels, tmp / f"out-{name}"))
            summary = {name: {"videos_per_s": float(np.median([x["videos_per_s"] for x in results])),
                              "accuracy": results[-1]["accuracy"],
                              "ms_per_video": {s: float(np.median([x["ms_per_video"][s] for x in results]))
                                               for s in STEPS}}
                       for name, results in runs.items()}
            summary["condi_over_dense_videos_per_s"] = (summary["condi-sr"]["videos_per_s"]
                                                        / summary["dense"]["videos_per_s"])
            figures[encoding] = summary
            print(f"\n{encoding}: {len(files)} videos, K={args.k}, {args.rounds} rounds")
            print("| method | videos/s | top-1 (%) | " + " | ".join(f"{s} ms" for s in STEPS) + " |")
            print("|---|---|---|" + "---|" * len(STEPS))
            for name in ("condi-sr", "dense"):
                s = summary[name]
                print(f"| {name} | {s['videos_per_s']:.2f} | {s['accuracy']:.2f} | "
                      + " | ".join(f"{s['ms_per_video'][step]:.1f}" for step in STEPS) + " |")
            print(f"ConDi-SR / Dense videos per second: {summary['condi_over_dense_videos_per_s']:.2f}x")
    return figures


def _cli(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "condi_pipe.cli", *args], capture_output=True, text=True,
                          env={**os.environ, **(env or {})})


def peak_rss(store: Store, args) -> dict:
    """Peak RSS of predict on a one-hour 320x240 video, each method in a fresh process (its children included)."""
    figures = {}
    with tempfile.TemporaryDirectory(prefix="bench-hour-") as tmp:
        video = Path(tmp) / "hour.avi"
        subprocess.run([ffmpeg_exe(), "-hide_banner", "-loglevel", "error", "-y", "-f", "lavfi", "-i",
                        "testsrc2=size=320x240:rate=25", "-t", "3600", "-c:v", "mpeg4", "-q:v", "8", str(video)],
                       check=True)
        for method in ("condi-sr", "dense"):
            # VmHWM, not ru_maxrss: Linux carries the forking process's high-water mark across exec into ru_maxrss
            code = ("import re, sys\nfrom condi_pipe.cli import main\n"
                    "main(sys.argv[1:], standalone_mode=False)\n"
                    "print('PEAK_KB', re.search(r'VmHWM:\\s+(\\d+)', open('/proc/self/status').read()).group(1))")
            extra = ["--student", args.student] if method != "dense" else ["--teacher", args.teacher]
            done = subprocess.run([sys.executable, "-c", code, "predict", str(video), "--store", store.url, *extra,
                                   "--method", method, "--k", str(args.k), "--out", str(Path(tmp) / method),
                                   "--quiet"], capture_output=True, text=True)
            line = [x for x in done.stdout.splitlines() if x.startswith("PEAK_KB")]
            if not line:
                raise RuntimeError(done.stderr[-2000:])
            own = int(line[0].split()[1])
            figures[method] = {"peak_rss_mb": own / 1024}
            print(f"one hour, {method}: peak RSS of the predict process {own / 1024:.0f} MB (ffmpeg apart)")
    return figures


def collection(store: Store, args, sources) -> dict:
    """--collection N: 5% broken, killed three times and resumed: rows, failure rows and bytes."""
    rng = random.Random(0)
    with tempfile.TemporaryDirectory(prefix="bench-collection-") as tmp:
        tmp = Path(tmp)
        base = [reencode(path, tmp / f"src-{i:04d}", "ucf-xvid") for i, (path, _) in enumerate(sources)]
        folder = tmp / "videos"
        folder.mkdir()
        broken = set(rng.sample(range(args.collection), max(1, args.collection // 20)))
        for i in range(args.collection):
            target = folder / f"{i:05d}.avi"
            shutil.copyfile(base[i % len(base)], target)
            if i in broken:
                kind = i % 3
                if kind == 0:
                    target.write_bytes(target.read_bytes()[:200])
                elif kind == 1:
                    target.write_bytes(b"")
                else:
                    target.unlink()
        listing = tmp / "list.csv"
        listing.write_text("path\n" + "".join(f"videos/{i:05d}.avi\n" for i in range(args.collection)))
        common = ["--list", str(listing), "--store", store.url, "--student", args.student, "--k", str(args.k),
                  "--quiet", "--layout", "channels-last", "--bf16", "off"]
        start = time.perf_counter()
        whole = _cli("predict", *common, "--out", str(tmp / "whole"))
        whole_s = time.perf_counter() - start
        if whole.returncode:
            raise RuntimeError(whole.stderr[-2000:])
        kills = 0
        for at in sorted(rng.sample(range(1, args.collection // 3), 3)):
            killed = _cli("predict", *common, "--out", str(tmp / "resumed"), env={KILL_ENV: f"predict.video:{at}"})
            kills += killed.returncode == -9
        resumed = _cli("predict", *common, "--out", str(tmp / "resumed"))
        if resumed.returncode:
            raise RuntimeError(resumed.stderr[-2000:])
        rows = pq.read_table(tmp / "whole" / PREDICTIONS, columns=["video_index"]).column("video_index").to_pylist()
        failures = pq.read_table(tmp / "whole" / "failures.parquet").num_rows
        same = (tmp / "whole" / PREDICTIONS).read_bytes() == (tmp / "resumed" / PREDICTIONS).read_bytes()
        figures = {"videos": args.collection, "broken": len(broken), "predicted": len(rows), "failure_rows": failures,
                   "every_good_video_predicted": sorted(set(range(args.collection)) - broken) == sorted(rows),
                   "kills": kills, "resumed_bytes_equal": same, "videos_per_s": args.collection / whole_s}
        print(f"collection: {figures}")
        return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--store", required=True, help="A demo store: its teacher cache, student and test videos.")
    parser.add_argument("--student", default="condi-sr-resnet10_3d_motion_skim")
    parser.add_argument("--teacher", default="resnet10_3d_motion")
    parser.add_argument("--k", type=int, default=5)
    parser.add_argument("--videos", type=int, default=60, help="Test videos (as many per class).")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N (decoding stays on the CPU).")
    parser.add_argument("--encodings", default="ucf-xvid,kinetics-h264")
    parser.add_argument("--hour", action="store_true", help="Also the peak RSS on a one-hour video.")
    parser.add_argument("--collection", type=int, default=0, help="Also N videos with 5%% broken, killed, resumed.")
    add_record_options(parser)
    args = parser.parse_args()
    store = Store(args.store)
    classes = len({label for _, label in test_videos(store, 10**6)})
    sources = test_videos(store, max(1, args.videos // classes))
    figures = {"side_by_side": compare(store, args, sources)}
    if args.hour:
        figures["one_hour"] = peak_rss(store, args)
    if args.collection:
        figures["collection"] = collection(store, args, sources)
    if args.device.startswith("cuda"):
        import torch

        figures["peak_gpu_memory_mb"] = torch.cuda.max_memory_allocated() / 2**20
        print(f"peak GPU memory allocated: {figures['peak_gpu_memory_mb']:.0f} MB")
    record("predict", figures, args)
    print(f"\n(rusage of this process: {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MB peak)")


if __name__ == "__main__":
    main()
