"""``condi-pipe demo``: generate the embedded benchmark and run the whole pipeline on it (the README's first
command). Its run configuration is ``embedded.toml`` beside this module, shipped with the package;
``condi-pipe run --config`` runs the same file."""

from __future__ import annotations

import dataclasses
import os
import time
from importlib import resources
from pathlib import Path
from typing import Callable, Sequence

from condi_pipe.app.run_config import RunConfig, SGSSection, load_run_config
from condi_pipe.app.runner import run_pipeline
from condi_pipe.methods.registry import default_method_names
from condi_pipe.report import render
from condi_pipe.report.across_stores import build_report_across_stores
from condi_pipe.report.write import write_table
from condi_pipe.video.synth import benchmark_is_complete, generate_benchmark
from condi_pipe.video.synth.pretraining_corpus import pretraining_corpus_overlap

DEMO_VIDEOS = 1000  # 300 test videos: one video is a third of a point, and a paired bootstrap can tell differences
DEMO_SEED = 0
DEMO_LENGTH_PROFILE = "ucf101"  # videos as long as UCF-101's (11.3 clips on average)
# Half of each class's train groups (350 train videos, ~4,000 clips): the students need no more, and generating,
# extracting and caching the other half would cost ~4 minutes; the 300 test videos are all written.
DEMO_TRAIN_SHARE = 0.5
SEEDS_TABLES = ("3",)  # `demo --seeds`: the tables combined over the seeds' stores
SYNTH_FOLDER = "synth"  # the generated videos, inside the demo's store folder
REPORTS_FOLDER = "reports"
DEMO_CONFIG = resources.files("condi_pipe.recipes") / "embedded.toml"


# `demo --sgs`: the trained teacher fine-tuned 4 epochs with SGS after res2 (about 1.5 more minutes here)
DEMO_SGS = SGSSection(stage="res2", kernel="linear", epochs=4, batch_size=16, lr=0.01)


def demo_config(store_dir: str | os.PathLike, *, sgs: bool = False, all_students: bool = False,
                epochs: int | None = None) -> RunConfig:
    """The shipped ``embedded.toml`` with its store at ``store_dir`` (data, reports and the generator's clip kinds
    inside it); ``sgs`` adds :data:`DEMO_SGS`, ``all_students`` trains every default method, ``epochs`` (if given)
    replaces the students' training epochs."""
    store_dir = os.path.abspath(store_dir)
    with resources.as_file(DEMO_CONFIG) as path:
        shipped = load_run_config(path)
    synth = os.path.join(store_dir, SYNTH_FOLDER)
    losses = list(default_method_names()) if all_students else shipped.distill.losses
    return dataclasses.replace(
        shipped, store=store_dir, source_file=os.path.join(store_dir, "demo.toml"),
        extract=dataclasses.replace(shipped.extract, root=synth),
        distill=dataclasses.replace(shipped.distill, losses=losses, epochs=epochs or shipped.distill.epochs),
        report=dataclasses.replace(shipped.report, out_dir=os.path.join(store_dir, REPORTS_FOLDER),
                                   clip_kinds=os.path.join(synth, "synth_clips.csv")),
        sgs=DEMO_SGS if sgs else None,
    )


#: The students Table 3 compares ConDi-SR with: the shipped file's (``demo --all-students`` adds ST-Conf).
DEMO_LOSSES = tuple(demo_config(os.curdir).distill.losses)


def run_demo(store_dir: str | os.PathLike, *, videos: int = DEMO_VIDEOS, seed: int = DEMO_SEED, quiet: bool = False,
             sgs: bool = False, all_students: bool = False, length_profile: str = DEMO_LENGTH_PROFILE,
             train_share: float = DEMO_TRAIN_SHARE, epochs: int | None = None,
             log: Callable[[str], None] = print) -> dict[str, str]:
    """Generate (once) and run everything; returns the rendered tables. Re-running skips finished stages. ``sgs``
    also fine-tunes and caches an SGS teacher and renders table ``sgs``; ``all_students`` trains every default
    method, not only Table 3's; ``epochs``: each student's training epochs (default: the shipped file's)."""

    overlap = pretraining_corpus_overlap(seed, videos)
    if overlap is not None:
        raise ValueError(f"seed {seed} {overlap}; a demo on it would grade the pretrained teacher on its own "
                         "training clips: pick another --seed")
    start = time.perf_counter()
    config = demo_config(store_dir, sgs=sgs, all_students=all_students, epochs=epochs)
    data = Path(config.extract.root)
    if not benchmark_is_complete(data, videos, seed, length_profile, train_share):
        made = generate_benchmark(data, videos=videos, seed=seed, workers=2, length_profile=length_profile,
                                  train_share=train_share)
        log(f"synth: {made.videos} of {videos} videos ({made.clips} clips, profile {length_profile}, seed {seed}) in "
            f"{data} in {time.perf_counter() - start:.0f} s")
    rendered = run_pipeline(config, quiet=quiet, log=log)
    log(f"demo: finished in {time.perf_counter() - start:.0f} s")
    return rendered


def run_demo_seeds(store_dir: str | os.PathLike, seeds: Sequence[int], *, log: Callable[[str], None] = print,
                   **options) -> str:
    """The demo on every seed (one store each, ``<store_dir>/seed-<S>``), then Table 3 over the seeds: the mean
    and spread of each cell, with every seed's value and paired CIs in its JSON (``report.folds``), written to
    ``<store_dir>/reports/``. Returns that table rendered, followed by each seed's own Table 3 and pairwise
    table."""

    if len(seeds) < 2:
        raise ValueError(f"--seeds needs two or more seeds, got {len(seeds)}")
    stores, own = [], []
    for seed in seeds:
        store = os.path.join(os.path.abspath(store_dir), f"seed-{seed}")
        rendered = run_demo(store, seed=seed, log=log, **options)
        stores.append(store)
        own += [f"Seed {seed}:\n", rendered["3"], rendered.get("pairwise", "")]
    config = demo_config(store_dir)
    out_dir = os.path.join(os.path.abspath(store_dir), REPORTS_FOLDER)
    os.makedirs(out_dir, exist_ok=True)
    tables = {}
    for table in SEEDS_TABLES:
        tables[table] = build_report_across_stores(stores, table, teacher=config.teacher.name, k=config.report.k)
        write_table(tables[table], os.path.join(out_dir, f"table-{table}"), formats=("md", "json", "csv"))
    log(f"demo: tables over seeds {', '.join(map(str, seeds))} written to {out_dir}")
    return "\n".join([render(tables["3"], "md"), *own])
