"""The benchmark on disk: UCF-101 lists, synth_clips.csv and synth.json written, and the ground truth read back."""

from __future__ import annotations

import concurrent.futures
import csv
import io
import json
import multiprocessing
import os
import re
from pathlib import Path
from typing import Callable, NamedTuple

from condi_pipe.video.synth.config import (
    CLASSES,
    CLIP_KINDS,
    DEFAULT_SEED,
    DEFAULT_VIDEOS,
    LEGACY_LENGTH_PROFILE,
    TRAIN_SHARE,
    SynthConfig,
)
from condi_pipe.video.synth.encoding import VideoRecord, _encoder_version, write_video
from condi_pipe.video.synth.plan import split_test_groups, written_train_groups

_FORMAT_VERSION = 1

_CRLF = "\r\n"
_VIDEO_NAME = re.compile(r"^v_(?P<cls>[A-Za-z]+)_g(?P<group>\d+)_c(?P<clip>\d+)\.mp4$")


class SynthSummary(NamedTuple):
    """What :func:`generate_benchmark` wrote."""

    root: Path
    videos: int
    train: dict[str, int]  # videos per class in trainlist01.txt
    test: dict[str, int]  # videos per class in testlist01.txt
    clip_kinds: dict[str, int]  # clips per kind, over all videos
    clips: int
    frames: int
    bytes: int  # total size of the mp4 files


def _atomic_write(path: Path, data: str, newline: str = "\n") -> None:
    tmp = path.with_name(f".{path.name}.part")
    with open(tmp, "w", encoding="utf-8", newline=newline) as f:
        f.write(data)
    os.replace(tmp, path)


def _crlf_lines(lines: list[str]) -> str:
    return "".join(line + _CRLF for line in lines)


def _metadata(config: SynthConfig, complete: bool, summary: dict | None = None) -> str:
    meta = {
        "generator": "condi_pipe.video.synth",
        "format_version": _FORMAT_VERSION,
        "complete": complete,
        "classes": list(CLASSES),
        "clip_kinds": list(CLIP_KINDS),
        "config": config.to_json(),
        "encoder": _encoder_version(),
    }
    if summary is not None:
        meta["summary"] = summary
    return json.dumps(meta, indent=2, sort_keys=True) + "\n"


def _prepare_root(root: Path) -> None:
    if root.exists():
        if not root.is_dir():
            raise NotADirectoryError(root)
        if any(root.iterdir()) and not (root / "synth.json").exists():
            raise FileExistsError(f"{root} is not empty and holds no synth.json: refusing to write a benchmark there")
    root.mkdir(parents=True, exist_ok=True)


def _remove_stale(root: Path, keep: set[str]) -> None:
    """Delete generated-looking mp4s (and leftovers of interrupted writes) of an earlier, bigger run."""
    for name in CLASSES:
        folder = root / name
        if not folder.is_dir():
            continue
        for p in folder.iterdir():
            rel = f"{name}/{p.name}"
            if p.name.startswith(".") and p.name.endswith(".part"):
                p.unlink()
            elif _VIDEO_NAME.match(p.name) and p.name.startswith(f"v_{name}_") and rel not in keep:
                p.unlink()


def generate_benchmark(
    root: Path | str,
    videos: int = DEFAULT_VIDEOS,
    seed: int = DEFAULT_SEED,
    *,
    workers: int = 1,
    progress: Callable[[int, int], None] | None = None,
    length_profile: str = LEGACY_LENGTH_PROFILE,
    train_share: float = TRAIN_SHARE,
) -> SynthSummary:
    """Write the benchmark of ``videos`` videos under ``root`` in the UCF-101 layout; returns what was written.

    ``length_profile`` draws each video's clip count (``config.LENGTH_PROFILES``); ``train_share < 1`` writes only
    that share of each class's train groups (all test groups are written, so the test split is unchanged).

    ``root`` must be absent, empty, or an earlier benchmark (it has ``synth.json``); files of an earlier run that
    this run does not produce are removed. ``workers > 1`` renders and encodes videos in that many ``spawn``
    processes (a calling script needs the usual ``if __name__ == "__main__":`` guard); the bytes do not depend on
    it. ``progress(done, total)`` is called after each video. ``synth.json`` says ``"complete": false`` until the
    last file is written.
    """
    config = SynthConfig.with_profile(length_profile, videos=videos, seed=seed, train_share=train_share)
    root = Path(root)
    _prepare_root(root)
    _atomic_write(root / "synth.json", _metadata(config, complete=False))

    test_groups = split_test_groups(config)
    train_groups = written_train_groups(config, test_groups)
    indices = [i for i in range(videos)
               if (i // len(CLASSES) + 1) in test_groups[i % len(CLASSES)] | train_groups[i % len(CLASSES)]]
    slots = {index: slot for slot, index in enumerate(indices)}
    records: list[VideoRecord | None] = [None] * len(indices)
    done = 0
    if workers <= 1:
        for i in indices:
            records[slots[i]] = write_video(root, i, config)
            done += 1
            if progress is not None:
                progress(done, len(indices))
    else:
        ctx = multiprocessing.get_context("spawn")
        with concurrent.futures.ProcessPoolExecutor(max_workers=workers, mp_context=ctx) as pool:
            futures = {pool.submit(write_video, root, i, config): i for i in indices}
            try:
                for fut in concurrent.futures.as_completed(futures):
                    records[slots[futures[fut]]] = fut.result()
                    done += 1
                    if progress is not None:
                        progress(done, len(indices))
            except BaseException:
                for fut in futures:
                    fut.cancel()
                raise

    _remove_stale(root, {r.relpath for r in records})

    by_class = sorted(records, key=lambda r: (r.label, r.group))
    train_lines, test_lines = [], []
    train = {name: 0 for name in CLASSES}
    test = {name: 0 for name in CLASSES}
    for r in by_class:
        if r.group in test_groups[r.label]:
            test_lines.append(r.relpath)
            test[CLASSES[r.label]] += 1
        else:
            train_lines.append(f"{r.relpath} {r.label + 1}")
            train[CLASSES[r.label]] += 1
    _atomic_write(root / "classInd.txt", _crlf_lines([f"{i + 1} {name}" for i, name in enumerate(CLASSES)]), "")
    _atomic_write(root / "trainlist01.txt", _crlf_lines(train_lines), "")
    _atomic_write(root / "testlist01.txt", _crlf_lines(test_lines), "")

    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["video", "clip", "start_frame", "frames", "kind", "label", "distractor_class", "split"])
    kinds = {kind: 0 for kind in CLIP_KINDS}
    for r in by_class:
        split = "test" if r.group in test_groups[r.label] else "train"
        for c, (kind, dcls) in enumerate(zip(r.kinds, r.distractor_classes)):
            kinds[kind] += 1
            writer.writerow(
                [r.relpath, c, c * config.clip_frames, config.clip_frames, kind, CLASSES[r.label],
                 CLASSES[dcls] if dcls >= 0 else "", split]
            )  # fmt: skip
    _atomic_write(root / "synth_clips.csv", buf.getvalue(), "")

    summary = SynthSummary(
        root=root,
        videos=len(records),
        train=train,
        test=test,
        clip_kinds=kinds,
        clips=sum(len(r.kinds) for r in records),
        frames=sum(r.frames for r in records),
        bytes=sum(r.bytes for r in records),
    )
    summary_json = {k: v for k, v in summary._asdict().items() if k != "root"}
    _atomic_write(root / "synth.json", _metadata(config, complete=True, summary=summary_json))
    return summary


# ---------------------------------------------------------------------------------------------------------------
# Reading the ground truth back (for tests and analysis; the extractor never needs it)
# ---------------------------------------------------------------------------------------------------------------


def benchmark_is_complete(root: Path | str, videos: int, seed: int, length_profile: str = LEGACY_LENGTH_PROFILE,
                          train_share: float = TRAIN_SHARE) -> bool:
    """True when ``root`` already holds a complete benchmark of ``videos`` videos made with ``seed``, the length
    profile and the train share (a ``synth.json`` from before profiles is the legacy profile, all train groups)."""
    config = read_synth_config(root)
    if config is None:
        return False
    wanted = SynthConfig.with_profile(length_profile, videos=videos, seed=seed, train_share=train_share)
    return config == wanted


def read_synth_config(root: Path | str, *, finished_only: bool = True) -> SynthConfig | None:
    """The config of the benchmark under ``root`` (with ``finished_only``, only a complete one); None when there is
    none (absent, unfinished, damaged)."""
    try:
        meta = json.loads((Path(root) / "synth.json").read_text())
        if finished_only and not meta.get("complete"):
            return None
        return SynthConfig.from_json(meta["config"])
    except (FileNotFoundError, NotADirectoryError, json.JSONDecodeError, KeyError, TypeError, ValueError):
        return None


def read_clip_kinds(root: Path | str) -> dict[str, list[str]]:
    """``synth_clips.csv`` as {video relative path: [kind of clip 0, clip 1, ...]}."""
    out: dict[str, list[str]] = {}
    with open(Path(root) / "synth_clips.csv", newline="", encoding="utf-8") as f:
        for row in csv.DictReader(f):
            kinds = out.setdefault(row["video"], [])
            assert int(row["clip"]) == len(kinds), "synth_clips.csv rows out of order"
            kinds.append(row["kind"])
    return out
