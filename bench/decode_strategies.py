"""Ways to read a video for each method, against decoding everything once at 112x112 (Dense's read).

    .venv/bin/python bench/decode_strategies.py [--lengths 7,10,60] [--k 5] [--reps 3] [--source FILE]
                                                [--machine-load shared|quiet] [--no-record]

Encodes ``--source`` (default ../shared/media/flipping_a_pancake.mkv, a real action clip; looped for longer
lengths) with the bundled ffmpeg as datasets are encoded, into a temporary folder:

* ``ucf-mpeg4``: MPEG-4 Part 2 in AVI, 320x240, 25 fps, ffmpeg's mpeg4 encoder with its defaults (GOP 12, no
  B-frames): key frames every 0.48 s, the case that flatters seeking.
* ``ucf-xvid``: the same through libxvid, UCF-101's own encoder, GOP 300 and 2 B-frames: what the real UCF-101 clip
  in ../shared/media (test.avi) has (one key frame in 164 frames, B-frames), i.e. a key frame per video.
* ``kinetics-h264``: H.264 (libx264 defaults: B-frames, key frames at most 250 frames = 8.3 s apart, plus scene
  cuts) in MP4, 340x256, 30 fps, as Kinetics' YouTube downloads (test.mp4 in ../shared/media: key frames 7.8 s
  apart).

Per file, each read runs ``--reps`` times, round-robin (every strategy once per round, so a load change hits all
of them alike); the figure is the median wall ms per video and the median CPU ms (this process and ffmpeg's).
Other work on the machine (the 2 cores are shared) slows every strategy: compare the ratios measured side by side
in one run, not absolute ms across runs. Strategies, all through ``video.clip_reader``:

* ``full``: every clip at 112 in windows with timestamps (= Dense's and ConDi's one-pass read);
* ``decode_video``: the same frames through ``decode.stream_clips`` (no timestamps): what showinfo costs;
* ``student_exact``: every second frame at 112 (the skim student's ``preprocess`` of it is bit-identical);
* ``student_56`` / ``lowres1`` / ``lowres2``: every second frame resized to 56 by ffmpeg (lowres: the MPEG-4 Part 2
  decoder's half/quarter-size decoding); these change the student's pixels (tolerance in the tests);
* ``seek_k``: K clips (drawn at random, seeded per file) at 112 by seeking, given the timeline;
* ``condi_*``: a student pass + ``seek_k``, the reads ConDi needs when the teacher's clips are decoded apart.
"""

from __future__ import annotations

import argparse
import resource
import statistics
import subprocess
import tempfile
import time
import zlib
from pathlib import Path

import numpy as np
from record import add_record_options, record

from condi_pipe.video.clip_reader import (
    FULL,
    LOWRES_STUDENT,
    STUDENT_56,
    STUDENT_EXACT,
    ClipReader,
    ReadSpec,
    decoded_frames,
    plan_reads,
    read_clips_at,
    read_timeline,
    seek_spans,
)
from condi_pipe.video.decode import DecodeOptions, stream_clips
from condi_pipe.video.ffmpeg_binary import ffmpeg_exe

REPO = Path(__file__).resolve().parent.parent
DEFAULT_SOURCE = REPO.parent / "shared" / "media" / "flipping_a_pancake.mkv"
ENCODINGS = {  # name -> (container suffix, encoder arguments, size, fps)
    "ucf-mpeg4": (".avi", ["-c:v", "mpeg4", "-q:v", "5"], "320:240", 25),
    "ucf-xvid": (".avi", ["-c:v", "libxvid", "-g", "300", "-bf", "2", "-q:v", "5"], "320:240", 25),
    "kinetics-h264": (".mp4", ["-c:v", "libx264", "-pix_fmt", "yuv420p"], "340:256", 30),
}
WINDOW = 32
PLANNED = {None: "full", STUDENT_EXACT: "condi_exact", STUDENT_56: "condi_56", LOWRES_STUDENT: "condi_lowres1"}


def encode(source: Path, folder: Path, name: str, seconds: int) -> Path:
    suffix, codec_args, size, fps = ENCODINGS[name]
    out = folder / f"{name}-{seconds}s{suffix}"
    subprocess.run([ffmpeg_exe(), "-hide_banner", "-loglevel", "error", "-y", "-stream_loop", "-1", "-i",
                    str(source), "-t", str(seconds), "-an", "-vf", f"scale={size},fps={fps}", *codec_args, str(out)],
                   check=True)
    return out


def drain(path: Path, spec: ReadSpec) -> int:
    return sum(len(window.clips) for window in ClipReader(path, WINDOW, spec))


def strategies(path: Path, codec: str, k: int, seed: int) -> tuple[dict, dict]:
    timeline = read_timeline(path, STUDENT_56)
    rng = np.random.default_rng(seed)
    chosen = sorted(rng.choice(timeline.clips, size=min(k, timeline.clips), replace=False).tolist())
    spans = seek_spans(chosen, timeline)
    reads = {
        "full": lambda: drain(path, FULL),
        "decode_video": lambda: stream_clips(path, DecodeOptions(), lambda clip: None),
        "student_exact": lambda: drain(path, STUDENT_EXACT),
        "student_56": lambda: drain(path, STUDENT_56),
        "seek_k": lambda: read_clips_at(path, chosen, timeline),
        "condi_exact": lambda: (drain(path, STUDENT_EXACT), read_clips_at(path, chosen, timeline)),
        "condi_56": lambda: (drain(path, STUDENT_56), read_clips_at(path, chosen, timeline)),
    }
    if codec == "mpeg4":
        for level in (1, 2):
            reads[f"lowres{level}"] = lambda level=level: drain(path, ReadSpec(56, 2, level))
        reads["condi_lowres1"] = lambda: (drain(path, LOWRES_STUDENT), read_clips_at(path, chosen, timeline))
    facts = {"frames": timeline.frames, "clips": timeline.clips, "keyframes": len(timeline.keyframes),
             "keyframe_interval_s": round(timeline.keyframe_interval_s(), 2), "chosen": chosen,
             "seek_decoded_frames": decoded_frames(spans), "seek_inputs": len(spans)}
    return reads, facts


def cpu_seconds() -> float:
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def measure(reads: dict, reps: int) -> dict:
    walls: dict[str, list[float]] = {name: [] for name in reads}
    cpus: dict[str, list[float]] = {name: [] for name in reads}
    for read in reads.values():  # warm the page cache and the binary
        read()
    for _ in range(reps):
        for name, read in reads.items():
            cpu, start = cpu_seconds(), time.perf_counter()
            read()
            walls[name].append(time.perf_counter() - start)
            cpus[name].append(cpu_seconds() - cpu)
    return {name: {"wall_ms": round(1000 * statistics.median(walls[name]), 1),
                   "cpu_ms": round(1000 * statistics.median(cpus[name]), 1)} for name in reads}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--lengths", default="7,10,60", help="video lengths in seconds")
    parser.add_argument("--k", type=int, default=5, help="clips the teacher reads")
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--encodings", default=",".join(ENCODINGS))
    parser.add_argument("--source", default=str(DEFAULT_SOURCE))
    add_record_options(parser)
    args = parser.parse_args()
    figures = {}
    with tempfile.TemporaryDirectory() as folder:
        for name in args.encodings.split(","):
            for seconds in (int(s) for s in args.lengths.split(",")):
                path = encode(Path(args.source), Path(folder), name, seconds)
                timeline = read_timeline(path)
                codec = timeline.info.codec
                reads, facts = strategies(path, codec, args.k, zlib.crc32(path.name.encode()))
                times = measure(reads, args.reps)
                full = times["full"]
                ratios = {f"{s} / full ({unit})": round(t[unit] / full[unit], 3)
                          for s, t in times.items() if s != "full" for unit in ("wall_ms", "cpu_ms")}
                plans = {}
                for approximate in (False, True):
                    plan = plan_reads(codec, student=True, k=args.k, frames=timeline.frames,
                                      keyframe_interval_frames=timeline.frames / len(timeline.keyframes),
                                      approximate_student=approximate)
                    chosen = PLANNED[plan.student]
                    plans["approximate" if approximate else "exact"] = {
                        "reads": chosen, "estimated": round(plan.estimated_cost, 3), "reason": plan.reason,
                        "measured_cpu": round(times[chosen]["cpu_ms"] / full["cpu_ms"], 3),
                        "measured_wall": round(times[chosen]["wall_ms"] / full["wall_ms"], 3)}
                figures[path.name] = {"codec": codec, **facts, "ms_per_video": times, "ratios": ratios,
                                      "plan": plans}
                print(f"\n{path.name}: {codec}, {facts['frames']} frames, {facts['clips']} clips, "
                      f"{facts['keyframes']} key frames ({facts['keyframe_interval_s']} s apart); K={args.k} "
                      f"clips {facts['chosen']}: seeking decodes {facts['seek_decoded_frames']} frames in "
                      f"{facts['seek_inputs']} runs")
                print(f"  {'read':<15}{'wall ms':>9}{'/ full':>8}{'cpu ms':>9}{'/ full':>8}")
                for s, t in times.items():
                    print(f"  {s:<15}{t['wall_ms']:>9.1f}{t['wall_ms'] / full['wall_ms']:>8.2f}"
                          f"{t['cpu_ms']:>9.1f}{t['cpu_ms'] / full['cpu_ms']:>8.2f}")
                for kind, plan in plans.items():
                    print(f"  plan ({kind} student input): {plan['reads']}, estimated {plan['estimated']:.2f}x, "
                          f"measured {plan['measured_cpu']:.2f}x CPU, {plan['measured_wall']:.2f}x wall")
    record("decode_strategies", figures, args)


if __name__ == "__main__":
    main()
