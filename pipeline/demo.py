"""``condi-pipe demo``: generate the embedded benchmark and run the whole pipeline on it (the README's first
command). The configuration is ``examples/embedded.toml``'s, kept here so an installed package has it too
(``tests/test_run.py`` checks that the two agree)."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Callable

from condi_pipe.pipeline.pretrain import PRETRAIN_SEED
from condi_pipe.pipeline.run_config import (DistillSection, ExtractSection, ReportSection, RunConfig, SGSSection,
                                            TeacherSection, TeacherTrainSection)

DEMO_VIDEOS = 1000  # 300 test videos: one video is a third of a point, and a paired bootstrap can tell differences
DEMO_SEED = 0
SYNTH_FOLDER = "synth"  # the generated videos, inside the demo's store folder
REPORTS_FOLDER = "reports"


# `demo --sgs`: the trained teacher fine-tuned 4 epochs with SGS after res2 (about 1.5 more minutes here)
DEMO_SGS = SGSSection(stage="res2", kernel="linear", epochs=4, batch_size=16, lr=0.01)


def demo_config(store_dir: str | os.PathLike, *, sgs: bool = False) -> RunConfig:
    from condi_pipe.models.pretrained import PRETRAINED

    store_dir = os.path.abspath(store_dir)
    return RunConfig(
        store=store_dir,
        extract=ExtractSection(source="ucf101", root=os.path.join(store_dir, SYNTH_FOLDER), workers=2),
        # the shipped teacher, trained on a corpus of its own (`condi-pipe pretrain-teacher`): like the paper's
        # Kinetics-pretrained teacher, it never saw the clips the students learn its z from
        teacher=TeacherSection(name="resnet10_3d_motion", weights=PRETRAINED, workers=1),
        teacher_train=TeacherTrainSection(epochs=8, batch_size=16, lr=0.05, flip=False),  # only for `demo --sgs`
        # the default losses: the methods registered as trained by default (ConDi-SR and the three baseline samplers)
        distill=DistillSection(student="resnet10_3d_motion_skim", epochs=10, batch_size=32, lr=0.1),
        report=ReportSection(tables=["3", "4", "accuracy", "oracle", "confidence", "kinds"], k=[1, 2, 3, 4, 5, 7],
                             out_dir=os.path.join(store_dir, REPORTS_FOLDER),
                             clip_kinds=os.path.join(store_dir, SYNTH_FOLDER, "synth_clips.csv")),
        sgs=DEMO_SGS if sgs else None,
        source_file=os.path.join(store_dir, "demo.toml"),
    )


def run_demo(store_dir: str | os.PathLike, *, videos: int = DEMO_VIDEOS, seed: int = DEMO_SEED, quiet: bool = False,
             sgs: bool = False, log: Callable[[str], None] = print) -> dict[str, str]:
    """Generate (once) and run everything; returns the rendered tables. Re-running skips finished stages. ``sgs``
    also fine-tunes and caches an SGS teacher and renders table ``sgs``."""
    from condi_pipe.pipeline.runner import run_pipeline
    from condi_pipe.video.synth import benchmark_is_complete, generate_benchmark

    if seed == PRETRAIN_SEED:
        raise ValueError(f"seed {PRETRAIN_SEED} made the pretrained teacher's training corpus; a demo on it would "
                         "grade the teacher on its own training clips: pick another --seed")
    start = time.perf_counter()
    config = demo_config(store_dir, sgs=sgs)
    data = Path(config.extract.root)
    if not benchmark_is_complete(data, videos, seed):
        generate_benchmark(data, videos=videos, seed=seed, workers=2)
        log(f"synth: {videos} videos (seed {seed}) in {data}")
    rendered = run_pipeline(config, quiet=quiet, log=log)
    log(f"demo: finished in {time.perf_counter() - start:.0f} s")
    return rendered
