"""``condi-pipe pretrain-teacher``: the one command that makes the embedded benchmark's shipped teacher.

The paper's teacher comes pretrained (ResNeXt-101 on Kinetics) and is then used on UCF-101; its confidence labels z
on the student's training clips are honest because the teacher never saw those clips. The embedded benchmark does
the same: its teacher is trained once on a large generated corpus whose seed no demo uses (:data:`PRETRAIN_SEED`;
``condi-pipe demo`` refuses it and every seed sharing its random streams, and so does ``teacher-cache`` with the
shipped teacher on a store generated with one: :func:`~condi_pipe.video.synth.pretraining_corpus.pretraining_corpus_overlap`), and ships inside the package
(``models/weights/resnet10_3d_motion-embedded.pt`` with its model card ``.json``).

Steps, each a normal resumable stage in ``WORK/store`` (a killed run continues where it stopped):

1. ``synth``: :data:`PRETRAIN_VIDEOS` videos with seed :data:`PRETRAIN_SEED` (70% train, 30% held out);
2. ``extract``;
3. ``teacher-train`` on the corpus's whole train split (cosine schedule, no flips, the last epoch kept: nothing is
   chosen on data, so the held-out part is an honest validation estimate);
4. ``teacher-cache`` with the trained weights, whose held-out rows give the card's accuracies, per clip kind from the
   generator's sidecar (which only this analysis reads);
5. the weights and the card are written to ``--out``.

The same command on the same CPU model and thread count reproduces the weights byte for byte (training is
deterministic there); another CPU gives weights of the same accuracy within noise, not the same bytes.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from condi_pipe.compute.torch_runtime import RuntimeOptions
from condi_pipe.compute.training import TrainOptions
from condi_pipe.methods.metrics import softmax
from condi_pipe.pipeline.executor import ExecutorOptions
from condi_pipe.pipeline.stage import ensure_store
from condi_pipe.stages.extract import ExtractRequest, extract
from condi_pipe.stages.teacher_cache import TeacherCacheRequest, TeacherChoice, teacher_cache
from condi_pipe.stages.teacher_train import TeacherTrainRequest, teacher_train
from condi_pipe.storage import clip_outputs, training_artifacts
from condi_pipe.storage.manifests import available_splits, eval_split, load_videos, video_paths
from condi_pipe.video.synth import benchmark_is_complete, generate_benchmark, read_clip_kinds
from condi_pipe.video.synth.pretraining_corpus import PRETRAIN_SEED, PRETRAIN_VIDEOS

TEACHER = "resnet10_3d_motion"


@dataclass(frozen=True)
class PretrainOptions:
    """The recipe of the shipped teacher (its defaults are what made the shipped file)."""

    videos: int = PRETRAIN_VIDEOS
    seed: int = PRETRAIN_SEED
    epochs: int = 8
    clips_per_video: int = 2
    batch_size: int = 16
    lr: float = 0.05
    eval_every: int = 4
    train_seed: int = 0
    threads: int = 2


def pretrain_teacher(work: str | os.PathLike, out: str | os.PathLike, options: PretrainOptions = PretrainOptions(), *,
                     quiet: bool = False, log: Callable[[str], None] = print) -> dict:
    """Run the recipe in ``work`` and write the weights to ``out`` and the card to ``out`` with ``.json``."""

    work, out = Path(work).resolve(), Path(out).resolve()
    began = time.perf_counter()
    data = work / "synth"
    if not benchmark_is_complete(data, options.videos, options.seed):
        generate_benchmark(data, videos=options.videos, seed=options.seed, workers=2)
    log(f"pretrain-teacher: {options.videos} videos (seed {options.seed}) in {data}")
    store = ensure_store(str(work / "store"))
    extract(store, ExtractRequest("ucf101", str(data)), ExecutorOptions(workers=2), quiet=quiet, log=log)
    runtime = RuntimeOptions(threads=options.threads)
    # the corpus's whole train split, the last epoch kept: nothing is chosen on data, so the held-out split
    # stays an honest estimate
    train = TrainOptions(epochs=options.epochs, batch_size=options.batch_size, lr=options.lr,
                         seed=options.train_seed, eval_every=options.eval_every, val_fraction=0.0, keep="last")
    request = TeacherTrainRequest(TEACHER, train=train, flip=False, clips_per_video=options.clips_per_video,
                                  runtime=runtime)
    teacher_train(store, request, quiet=quiet, log=log)
    folder = training_artifacts.trained_teacher_folder(TEACHER)
    teacher_cache(store, TeacherCacheRequest(TeacherChoice(TEACHER), runtime), quiet=quiet, log=log)

    history = _history_rows(store, folder)
    out.parent.mkdir(parents=True, exist_ok=True)
    partial = out.with_name(out.name + ".partial")
    partial.write_bytes(store.read_bytes(training_artifacts.weights_rel(folder)))
    os.replace(partial, out)
    card = {
        "model": TEACHER,
        "weights_sha256": training_artifacts.weights_sha256(store, folder),
        "command": f"condi-pipe pretrain-teacher --work {work.name} --out {out.name}",
        "recipe": asdict(options),
        "data": _corpus_summary(store),
        "held_out": held_out_accuracy(store, TEACHER, data),
        "history": history,
        "train_seconds": round(sum(row["train_seconds"] for row in history), 1),  # the epochs' own clocks
        "total_seconds": round(time.perf_counter() - began, 1),  # this invocation (finished stages are skipped)
        "threads": options.threads,
        "cpu": _cpu_name(),
    }
    out.with_suffix(".json").write_text(json.dumps(card, indent=2) + "\n")
    log(f"pretrain-teacher: weights in {out}, card in {out.with_suffix('.json')} "
        f"(held-out clip accuracy {card['held_out']['clip_accuracy']:.1%}, informative clips "
        f"{card['held_out']['by_kind'].get('informative', {}).get('accuracy', float('nan')):.1%})")
    return card


def held_out_accuracy(store, teacher: str, synth_root: Path) -> dict:
    """The cached teacher's accuracy on the corpus's held-out split: per clip, per video (mean softmax over its
    clips) and per clip kind from the generator's ``synth_clips.csv``."""

    folder = clip_outputs.teacher_folder(teacher)
    videos = load_videos(store, eval_split(store))
    clip_ids = videos.clip_ids
    table = clip_outputs.read_clips(store, folder, ["clip_id", "z"])
    row_of = {int(c): i for i, c in enumerate(table.column("clip_id").to_numpy())}
    rows = np.array([row_of[int(c)] for c in clip_ids], dtype=np.int64)
    z = table.column("z").to_numpy().astype(bool)[rows]
    logits = clip_outputs.read_array(store, folder, "logits")[rows]
    probs = softmax(logits.astype(np.float64))
    sums = np.add.reduceat(probs, videos.offsets[:-1], axis=0)
    video_correct = sums.argmax(1) == videos.label
    kinds_by_path = read_clip_kinds(synth_root)
    kinds = np.concatenate([kinds_by_path[p][:n] for p, n in zip(video_paths(store, videos), videos.clips)])
    by_kind = {k: {"clips": int((kinds == k).sum()), "accuracy": round(float(z[kinds == k].mean()), 4)}
               for k in sorted(set(kinds.tolist()))}
    return {"split": eval_split(store), "videos": int(len(videos.video_id)), "clips": int(len(clip_ids)),
            "clip_accuracy": round(float(z.mean()), 4), "video_accuracy": round(float(video_correct.mean()), 4),
            "by_kind": by_kind}


def _corpus_summary(store) -> dict:

    return {split: {"videos": int(len(v.video_id)), "clips": int(v.clips.sum())}
            for split in available_splits(store) for v in [load_videos(store, split)]}


def _history_rows(store, folder: str) -> list[dict]:

    rows = training_artifacts.read_history(store, folder).to_pylist()
    keep = ("epoch", "train_loss", "train_accuracy", "eval_clip_accuracy", "eval_video_accuracy", "train_seconds")
    return [{k: (None if v != v else round(float(v), 4)) for k, v in row.items() if k in keep} for row in rows]


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    import platform

    return platform.processor() or platform.machine()
