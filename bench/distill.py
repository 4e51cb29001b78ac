"""Cached against online distillation: the time of one training step.

    .venv/bin/python bench/distill.py [--batch 8] [--repeats 5] [--threads N] [--device cpu] [--contiguous]

Cached (what ``condi-pipe distill`` does): the student's forward and backward pass and an SGD step with the
teacher's logits read from the cache. Online (what distillation without a cache does): the teacher's forward
pass (no grad, eval mode) on the same clips inside the step, then the same student step. Same student
(shufflenetv2_3d 0.5x), same batch of random uint8 clips, same ConDi-SR loss, the pipeline's memory layout
(channels-last 3D unless ``--contiguous``); random weights (the time does not depend on them). Prints the
median time of each and their ratio (target: online / cached >= 5), and records them (``bench/record.py``).
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from record import add_record_options, record

from condi_pipe.compute.torch_runtime import RuntimeOptions, synchronize, to_runtime_layout
from condi_pipe.methods.losses import condi_sr_loss
from condi_pipe.models import build_model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--teacher", default="r3d_18")
    parser.add_argument("--student", default="shufflenetv2_3d")
    parser.add_argument("--width", type=float, default=0.5)
    parser.add_argument("--classes", type=int, default=101)
    parser.add_argument("--contiguous", action="store_true",
                        help="NCDHW tensors instead of the pipeline's default channels-last 3D layout")
    add_record_options(parser)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    torch.manual_seed(0)

    runtime = RuntimeOptions(args.device, args.threads, channels_last=not args.contiguous)
    teacher = to_runtime_layout(build_model(args.teacher, num_classes=args.classes).to(device).eval(), runtime)
    student = build_model(args.student, num_classes=args.classes, width=args.width).to(device).train()
    student = to_runtime_layout(student, runtime)
    optimizer = torch.optim.SGD(student.parameters(), lr=0.01, momentum=0.9)
    clips = torch.randint(0, 256, (args.batch, 16, 112, 112, 3), dtype=torch.uint8, device=device)
    z = torch.randint(0, 2, (args.batch,), device=device)
    with torch.no_grad():
        cached_logits = teacher(to_runtime_layout(teacher.preprocess(clips), runtime)).logits  # what the cache holds

    def student_step(teacher_logits: torch.Tensor) -> None:
        out = student(to_runtime_layout(student.preprocess(clips), runtime))
        loss = condi_sr_loss(out.logits, out.confidence, teacher_logits, z).total
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    def cached_step() -> None:
        student_step(cached_logits)

    def online_step() -> None:
        with torch.no_grad():
            teacher_logits = teacher(to_runtime_layout(teacher.preprocess(clips), runtime)).logits
        student_step(teacher_logits)

    def median_seconds(step) -> float:
        step()  # warm-up: first-call allocations and kernel selection are not timed
        times = []
        for _ in range(args.repeats):
            synchronize(device)
            began = time.perf_counter()
            step()
            synchronize(device)
            times.append(time.perf_counter() - began)
        return statistics.median(times)

    cached = median_seconds(cached_step)
    online = median_seconds(online_step)
    layout = "NCDHW" if args.contiguous else "channels-last 3D"
    print(f"device {device} ({torch.get_num_threads()} threads, {layout}), batch {args.batch} clips of 16x112x112, "
          f"student {args.student} {args.width:g}x, teacher {args.teacher}, median of {args.repeats}")
    print(f"cached distillation step (student forward + backward, cached teacher logits): {cached:.3f} s")
    print(f"online distillation step ({args.teacher} forward in the loop + the same student step): {online:.3f} s")
    print(f"online / cached: {online / cached:.1f}x")
    record("distill", {"cached_step_s": cached, "online_step_s": online, "online_over_cached": online / cached},
           args, threads=torch.get_num_threads(), layout=layout)


if __name__ == "__main__":
    main()
