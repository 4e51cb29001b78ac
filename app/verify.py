"""``condi-pipe verify`` and ``condi-pipe repair``: find damaged outputs by checksum and count, fix them.

``verify`` checks every finished stage's files against the checksums recorded when it finished, and the
manifests' counts against each other. ``repair`` re-decodes only the videos of a damaged ``clips.zarr``
shard and rewrites that shard (the bytes come out as before: decoding and encoding are deterministic). A damaged
teacher cache, student or score run is redone by running its stage again with the configuration its record holds
(a student retrained to other bytes, as on another CPU, also has its score run redone). Any other damaged output
is unpublished (its stage record cleared) so that re-running its stage, or ``condi-pipe run``, redoes exactly
that stage.
"""

from __future__ import annotations

import dataclasses
import os
import re
from typing import Callable, NamedTuple

import numpy as np

from condi_pipe.compute.clip_inference import ModelRef
from condi_pipe.compute.torch_runtime import RuntimeOptions
from condi_pipe.compute.training import TrainOptions
from condi_pipe.models.checkpoints import file_sha256
from condi_pipe.pipeline.executor import INFERENCE_WORKERS, ExecutorOptions
from condi_pipe.pipeline.stage import StageError
from condi_pipe.stages.distill import distill
from condi_pipe.stages.distill_request import DistillRequest, LossOptions
from condi_pipe.stages.score import ScoreRequest, score
from condi_pipe.stages.teacher_cache import IN_SAMPLE, OUT_OF_FOLD, TeacherCacheRequest, TeacherChoice, teacher_cache
from condi_pipe.storage import checksums, clip_array, clip_outputs, tables
from condi_pipe.storage import training_artifacts as artifacts
from condi_pipe.storage.lock import store_lock
from condi_pipe.storage.run_state import clear_stage, read_run
from condi_pipe.storage.store import Store
from condi_pipe.video.decode import DecodeOptions, decode_video

_SHARD_FILE = re.compile(rf"^{re.escape(clip_array.CLIPS_ARRAY)}/c/(\d+)/0/0/0/0$")


class Problem(NamedTuple):
    stage: str
    path: str
    problem: str


def _count_problems(store: Store, run: dict) -> list[Problem]:
    problems = []
    extract = run["stages"].get("extract", {})
    if extract.get("state") == "done":
        try:
            n_array = clip_array.open_clip_array(store).shape[0]
            n_rows = store.table_rows(tables.CLIPS)
            n_listed = sum(store.read_table(tables.VIDEOS, columns=["clips"]).column("clips").to_pylist())
            expected = extract["counts"]["clips"]
            if not n_array == n_rows == n_listed == expected:
                problems.append(Problem("extract", tables.CLIPS, f"clip counts disagree: array {n_array}, "
                                        f"clips.parquet {n_rows}, videos.parquet {n_listed}, run.json {expected}"))
        except Exception as exc:  # noqa: BLE001 - any unreadable manifest is itself the finding
            problems.append(Problem("extract", tables.CLIPS, f"cannot read manifests ({exc})"))
    for key, record in run["stages"].items():
        if key.startswith("teacher-cache/") and record.get("state") == "done":
            folder = clip_outputs.teacher_folder(key.split("/", 1)[1])
            try:
                rows = store.table_rows(f"{folder}/clips.parquet")
                if rows != record["counts"]["clips"]:
                    problems.append(Problem(key, f"{folder}/clips.parquet",
                                            f"{rows} rows, but the stage cached {record['counts']['clips']} clips"))
            except Exception as exc:  # noqa: BLE001
                problems.append(Problem(key, f"{folder}/clips.parquet", f"unreadable ({exc})"))
    return problems


def verify_store(store: Store) -> list[Problem]:
    """Every problem found: damaged or missing files of finished stages, and manifest counts that disagree."""
    run = read_run(store)
    problems = []
    for key, record in sorted(run["stages"].items()):
        if record.get("state") == "done":
            problems += [Problem(key, path, what) for path, what in checksums.damaged_files(store, key)]
    seen = {(p.stage, p.path) for p in problems}
    return problems + [p for p in _count_problems(store, run) if (p.stage, p.path) not in seen]


def _repair_shard(store: Store, shard: int, config: dict) -> None:

    array = clip_array.open_clip_array(store, read_only=False)
    per_shard = array.shards[0] if array.shards else array.chunks[0]
    start, stop = shard * per_shard, min((shard + 1) * per_shard, array.shape[0])
    videos = store.read_table(tables.VIDEOS, columns=["path", "first_clip", "clips"]).to_pylist()
    options = DecodeOptions(**config["decode"])
    parts = []
    for video in videos:
        first, last = video["first_clip"], video["first_clip"] + video["clips"]
        if last <= start or first >= stop:
            continue
        clips = decode_video(f"{config['root']}/{video['path']}", options).clips
        parts.append(clips[max(start, first) - first : min(stop, last) - first])
    clip_array.write_clip_range(array, start, np.concatenate(parts))


# Stages repair runs again from their records, in this order (each reads the outputs of those before it).
REDONE = ("teacher-cache", "distill", "score")


def _known(cls, values: dict) -> dict:
    """The entries of a recorded configuration that are fields of ``cls`` (the record may hold fewer or more)."""
    names = {f.name for f in dataclasses.fields(cls)}
    return {k: v for k, v in values.items() if k in names}


def _runtime(config: dict) -> RuntimeOptions:
    return RuntimeOptions(**_known(RuntimeOptions, config["runtime"]))


def _redo(store: Store, key: str, config: dict, executor: ExecutorOptions, log: Callable[[str], None]) -> None:
    """Run the stage of record ``key`` again (--force) with the configuration it recorded."""
    stage = key.split("/", 1)[0]
    again = {"force": True, "quiet": True, "log": log}
    if stage == "teacher-cache" and config.get("from_logits"):  # imported: again from the same file, unchanged
        path = config["from_logits"]
        if os.path.isfile(path) and file_sha256(path) != config.get("from_logits_sha256"):
            raise StageError(f"{path}: changed since {key} was imported from it; import it again with "
                             "`condi-pipe teacher-cache --from-logits ... --force`")
        teacher_cache(store, TeacherCacheRequest(TeacherChoice(config["teacher"]["name"]), from_logits=path),
                      **again)
    elif stage == "teacher-cache":
        z_labels = OUT_OF_FOLD if config.get("z_labels") == OUT_OF_FOLD else IN_SAMPLE
        teacher = ModelRef(**_known(ModelRef, config["teacher"]))
        teacher_cache(store, TeacherCacheRequest(teacher, _runtime(config), config["clips_per_group"], z_labels),
                      executor, **again)
    elif stage == "score":
        score(store, ScoreRequest(**{**_known(ScoreRequest, config), "runtime": _runtime(config)}), executor,
              **again)
    else:
        distill(store, DistillRequest(**{**_known(DistillRequest, config),
                                         "losses": LossOptions(**_known(LossOptions, config["losses"])),
                                         "train": TrainOptions(**_known(TrainOptions, config["train"])),
                                         "runtime": _runtime(config)}), **again)


def _weights_digest(store: Store, key: str) -> str | None:
    """The recorded sha256 of a distill run's weights.pt (None: not recorded)."""
    record = checksums.read_checksums(store, key) or {}
    weights = artifacts.weights_rel(artifacts.student_folder(key.split("/", 1)[1]))
    return record.get("files", {}).get(weights, {}).get("sha256")


def repair_store(store: Store, log: Callable[[str], None] = print,
                 executor: ExecutorOptions = ExecutorOptions(workers=INFERENCE_WORKERS)) -> list[Problem]:
    """Repair what ``verify_store`` finds (``executor``: where a redone teacher-cache or score runs its tasks);
    returns what is still wrong afterwards."""
    with store_lock(store, "repair", log=log):
        problems = verify_store(store)
        run = read_run(store)
        damaged: dict[str, str] = {}
        for problem in problems:
            shard = _SHARD_FILE.match(problem.path) if problem.stage == "extract" else None
            if shard:
                _repair_shard(store, int(shard[1]), run["stages"]["extract"]["config"])
                log(f"repair: rewrote shard {shard[1]} of {clip_array.CLIPS_ARRAY} ({problem.problem})")
            else:
                damaged.setdefault(problem.stage, f"{problem.path}: {problem.problem}")
        redo = sorted((k for k in damaged if k.split("/", 1)[0] in REDONE),
                      key=lambda k: (REDONE.index(k.split("/", 1)[0]), k))
        for key in sorted(set(damaged) - set(redo)):
            clear_stage(store, key)
            store.remove(checksums.checksum_file(key))
            log(f"repair: {key} is damaged ({damaged[key]}); its record is cleared, re-run "
                f"`condi-pipe {key.split('/')[0]}` (or `condi-pipe run`) to redo it")
    while redo:  # outside the lock: each stage takes it
        key = redo.pop(0)
        log(f"repair: {key} is damaged ({damaged[key]}); redoing it with its recorded configuration")
        before = _weights_digest(store, key) if key.startswith("distill/") else None
        _redo(store, key, run["stages"][key]["config"], executor, log)
        scored = f"score/{key.split('/', 1)[1]}"
        if (before is not None and _weights_digest(store, key) != before and scored not in redo
                and run["stages"].get(scored, {}).get("state") == "done"):
            redo.append(scored)  # the retrained weights differ (another CPU): their scores are stale
            damaged[scored] = f"scored with the weights {key} had before it was redone"
    return verify_store(store)
