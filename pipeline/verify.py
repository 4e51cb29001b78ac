"""``condi-pipe verify`` and ``condi-pipe repair``: find damaged outputs by checksum and count, fix them.

``verify`` checks every finished stage's files against the checksums recorded when it finished, and the
manifests' counts against each other. ``repair`` re-decodes only the videos of a damaged ``clips.zarr``
shard and rewrites that shard (the bytes come out as before: decoding and encoding are deterministic). Any
other damaged output is unpublished (its stage record cleared) so that re-running its stage, or
``condi-pipe run``, redoes exactly that stage.
"""

from __future__ import annotations

import re
from typing import Callable, NamedTuple

import numpy as np

from condi_pipe.storage import checksums, clip_array, clip_outputs, tables
from condi_pipe.storage.lock import store_lock
from condi_pipe.storage.run_state import clear_stage, read_run
from condi_pipe.storage.store import Store

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
    from condi_pipe.video.decode import DecodeOptions, decode_video

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


def repair_store(store: Store, log: Callable[[str], None] = print) -> list[Problem]:
    """Repair what ``verify_store`` finds; returns what is still wrong afterwards."""
    with store_lock(store, "repair", log=log):
        problems = verify_store(store)
        run = read_run(store)
        unpublish = set()
        for problem in problems:
            shard = _SHARD_FILE.match(problem.path) if problem.stage == "extract" else None
            if shard:
                _repair_shard(store, int(shard[1]), run["stages"]["extract"]["config"])
                log(f"repair: rewrote shard {shard[1]} of {clip_array.CLIPS_ARRAY} ({problem.problem})")
            else:
                unpublish.add(problem.stage)
        for key in sorted(unpublish):
            clear_stage(store, key)
            store.remove(checksums.checksum_file(key))
            log(f"repair: {key} is damaged; its record is cleared, re-run `condi-pipe {key.split('/')[0]}` "
                "(or `condi-pipe run`) to redo it")
    return verify_store(store)
