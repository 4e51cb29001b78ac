"""How long the paper's protocol takes per stage on real datasets: measured here, projected to a GPU.

    python bench/paper_scale.py [--threads 2] [--repeats 3]

Measured in this run, on this machine: the ResNeXt-101 teacher's forward pass and each paper student's forward
and training step (forward + backward + SGD) per 16x112x112 clip, fp32 and bf16 autocast, and ffmpeg decoding a
UCF-101-like file (320x240 MPEG-4 Part 2, 25 fps) through extract's filter chain. Each stage's time on a dataset
is then clips x the measured per-clip cost (per core for decoding, so N cores divide it); distill uses the
example configs' epochs and clips per video (``examples/*.toml``).

The GPU column is a projection, not a measurement: the models' FLOPs (torch's counter) over a published peak
(A100: 312 TFLOP/s bf16 dense) at an assumed utilisation (``--gpu-utilisation``, 0.3 by default: 3D convolutions
at batch 32-64 rarely reach more). The paper's own rate is its published Dense time per video (method.md, Table 3:
UCF-101 3.7 s, Kinetics-600 5.3 s), which includes whatever its implementation spent besides the teacher. A GPU
student is fed by CPU cores reading clips (``--cores`` at ``--read-rate`` clips per core-second), and the slower
of reading and computing sets its time. The figures are recorded with the commit and the machine
(``bench/record.py``).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import tempfile
import time

import torch
from record import add_record_options, record

from condi_pipe.compute.torch_runtime import RuntimeOptions, configure_threads
from condi_pipe.models import build_model, measure_flops
from condi_pipe.video.ffmpeg_binary import ffmpeg_exe

# videos, mean decoded frames per video (clips = ceil(frames / 16), non-overlapping), training videos, and the
# example config's distill epochs and clips per video and epoch (None: every clip)
DATASETS = {
    "UCF-101": (13_320, 186, 9_537, 50, None),  # 27 h of 25 fps video (Soomro et al. 2012); split 1's train list
    "Kinetics-600": (420_000, 270, 392_000, 60, 1),  # ~392k train + ~30k val 10 s clips at ~27 fps
    "SSv2": (220_847, 45, 168_913, 50, 1),  # 168,913 train / 24,777 val / 27,157 test, ~3.8 s at 12 fps
}
PAPER_DENSE_SECONDS = {"UCF-101": 3.7, "Kinetics-600": 5.3}  # method.md, Table 3, "All"
TEACHER = ("resnext101_3d", None)
STUDENTS = (("shufflenetv2_3d", 0.25), ("mobilenetv2_3d", 0.2))
A100_BF16_TFLOPS = 312.0
CLIP = (3, 16, 112, 112)


def _median_seconds(step, repeats: int) -> float:
    step()  # warm-up (allocations, kernel selection)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        step()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def model_costs(name: str, width: float | None, batch: int, repeats: int, bf16: bool) -> dict[str, float]:
    """Seconds per clip: forward (inference) and, for a student, one training step."""
    model = build_model(name, num_classes=101, width=width)
    clips = torch.randn(batch, *CLIP)
    autocast = torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16)
    model.eval()
    with torch.inference_mode(), autocast:
        forward = _median_seconds(lambda: model(clips), repeats) / batch
    costs = {"forward": forward, "gflops": measure_flops(model) / 1e9}
    if name != TEACHER[0]:
        model.train()
        optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
        labels = torch.randint(0, 101, (batch,))

        def step():
            optimizer.zero_grad()
            with autocast:
                loss = torch.nn.functional.cross_entropy(model(clips).logits, labels)
            loss.backward()
            optimizer.step()

        costs["train"] = _median_seconds(step, repeats) / batch
    return costs


def decode_seconds_per_frame(repeats: int) -> float:
    """One core's seconds per decoded frame of a UCF-101-like file through extract's filter chain."""
    ffmpeg = ffmpeg_exe()
    with tempfile.TemporaryDirectory() as folder:
        video = os.path.join(folder, "ucf_like.avi")
        subprocess.run([ffmpeg, "-v", "error", "-f", "lavfi", "-i", "testsrc2=size=320x240:rate=25:duration=7",
                        "-c:v", "mpeg4", "-q:v", "5", video], check=True)
        chain = "scale=-2:128,crop=112:112,format=rgb24"
        command = [ffmpeg, "-v", "error", "-threads", "1", "-i", video, "-vf", chain, "-f", "null", "-"]
        seconds = _median_seconds(lambda: subprocess.run(command, check=True), repeats)
    return seconds / (25 * 7)


def _hours(seconds: float) -> str:
    return f"{seconds / 3600:.1f} h" if seconds >= 3600 else f"{seconds / 60:.1f} min"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--gpu-utilisation", type=float, default=0.3)
    parser.add_argument("--read-rate", type=float, default=800.0,
                        help="clips read per CPU-second by one core (bench/clip_reads.py measures it)")
    parser.add_argument("--cores", type=int, default=32, help="cores reading clips for the GPU")
    add_record_options(parser)
    args = parser.parse_args()
    configure_threads(RuntimeOptions(threads=args.threads))
    print(f"# {args.threads} threads, batch {args.batch}, median of {args.repeats}")

    costs, figures = {}, {}
    for name, width in (TEACHER, *STUDENTS):
        for bf16 in (False, True):
            cost = model_costs(name, width, args.batch, args.repeats, bf16)
            costs[name, bf16] = cost
            train = f", train step {cost['train'] * 1e3:.1f} ms/clip" if "train" in cost else ""
            print(f"{name} {width or ''} {'bf16' if bf16 else 'fp32'}: {cost['gflops']:.2f} GFLOPs, "
                  f"forward {cost['forward'] * 1e3:.1f} ms/clip{train}")
            figures[f"{name} {width or ''}".strip() + (" bf16" if bf16 else " fp32")] = {
                "gflops": cost["gflops"], **{f"{part} ms/clip": 1e3 * cost[part] for part in ("forward", "train")
                                             if part in cost}}
    decode = decode_seconds_per_frame(args.repeats)
    print(f"decode + filter chain (1 ffmpeg thread): {1 / decode:.0f} frames/s per core")
    figures["decode + filter chain, frames/s per core"] = 1 / decode

    gpu_rate = A100_BF16_TFLOPS * 1e12 * args.gpu_utilisation
    teacher = min(costs[TEACHER[0], bf]["forward"] for bf in (False, True))
    student = min(costs[STUDENTS[0][0], bf]["train"] for bf in (False, True))
    student_flops = 3 * costs[STUDENTS[0][0], False]["gflops"] * 1e9  # forward + backward ~ 3 forwards
    teacher_flops = costs[TEACHER[0], False]["gflops"] * 1e9
    read = args.cores * args.read_rate
    print(f"\n| dataset | clips | decode limit, 1 core | teacher-cache here | teacher-cache, A100 at "
          f"{args.gpu_utilisation:.0%} | teacher at the paper's Dense rate | distill here | distill, A100 fed by "
          f"{args.cores} cores |")
    print("|---|---|---|---|---|---|---|---|")
    for dataset, (videos, frames, train_videos, epochs, clips_per_video) in DATASETS.items():
        per_video = -(-frames // 16)
        clips = videos * per_video
        seen = 0.9 * train_videos * (clips_per_video or per_video) * epochs  # the fit part, every epoch
        paper = PAPER_DENSE_SECONDS.get(dataset)
        gpu_distill = max(seen * student_flops / gpu_rate, seen / read)  # compute or clip reads, the slower
        print(f"| {dataset} | {clips:,} | {_hours(videos * frames * decode)} | {_hours(clips * teacher)} | "
              f"{_hours(clips * teacher_flops / gpu_rate)} | {_hours(videos * paper) if paper else '-'} | "
              f"{_hours(seen * student)} ({epochs} epochs) | {_hours(gpu_distill)} |")
        figures[f"{dataset} hours (projected)"] = {
            "clips": clips, "decode, 1 core": videos * frames * decode / 3600,
            "teacher-cache here": clips * teacher / 3600,
            "teacher-cache, A100": clips * teacher_flops / gpu_rate / 3600,
            "paper's Dense": videos * paper / 3600 if paper else None, "distill here": seen * student / 3600,
            "distill, A100": gpu_distill / 3600}
    record("paper_scale", figures, args)


if __name__ == "__main__":
    main()
