"""The generated benchmark's clip kinds (``synth_clips.csv``, written by ``condi-pipe synth``) joined with a
store's clips: which clips are informative and which are ambiguous (occlusion, noise, pan, distractor)."""

from __future__ import annotations

import csv
from typing import Sequence

import numpy as np

from condi_pipe.report.inputs import ReportInputs, equals_mask, positions
from condi_pipe.storage import clip_outputs, tables
from condi_pipe.storage.errors import StoreError


def read_clip_kinds(path: str) -> dict[str, dict[int, str]]:
    """A clip-kinds sidecar (``condi-pipe synth``'s ``synth_clips.csv``: columns video, clip, kind, ...) as
    {video path relative to the dataset root: {clip index: kind}}; ValueError naming the file when unusable."""
    out: dict[str, dict[int, str]] = {}
    try:
        with open(path, newline="", encoding="utf-8") as fh:
            reader = csv.DictReader(fh)
            missing = [c for c in ("video", "clip", "kind") if c not in (reader.fieldnames or [])]
            if missing:
                raise ValueError(f"{path}: no column {', '.join(missing)}: not a clip-kinds file (synth_clips.csv, "
                                 "written by condi-pipe synth)")
            for line, row in enumerate(reader, start=2):
                try:
                    clip = int(row["clip"])
                except (TypeError, ValueError):
                    raise ValueError(f"{path}: line {line}: clip index {row['clip']!r} is not an integer") from None
                kind = (row["kind"] or "").strip()
                if not kind:
                    raise ValueError(f"{path}: line {line}: no kind")
                clips = out.setdefault(row["video"], {})
                if clip in clips:
                    raise ValueError(f"{path}: line {line}: video '{row['video']}' clip {clip} is listed twice")
                clips[clip] = kind
    except FileNotFoundError:
        raise ValueError(f"{path}: clip-kinds file not found") from None
    except UnicodeDecodeError:
        raise ValueError(f"{path}: not a UTF-8 CSV file") from None
    except csv.Error as exc:
        raise ValueError(f"{path}: not a readable CSV file ({exc})") from None
    except OSError as exc:
        raise ValueError(f"{path}: cannot read the clip-kinds file ({exc.strerror or exc})") from None
    return out


def teacher_clip_kinds(inputs: ReportInputs, path: str, preferred_order: Sequence[str] = ()
                       ) -> tuple[np.ndarray, tuple[str, ...]]:
    """Kind code of every clip of the teacher cache (all splits, cache row order) and the kind names, joined with
    the sidecar by video path (the store's videos.parquet) and clip index (its clips.parquet). Kind names follow
    ``preferred_order``, then any others alphabetically."""
    store = inputs.store
    sidecar = read_clip_kinds(path)
    cache = clip_outputs.read_clips(store, inputs.teacher_folder, ["clip_id", "video_id"])
    clip_id, video_id = cache.column("clip_id").to_numpy(), cache.column("video_id").to_numpy()
    videos = store.read_table(tables.VIDEOS, columns=["video_id", "path"])
    clips = store.read_table(tables.CLIPS, columns=["clip_id", "clip_index"])
    video_pos = positions(videos.column("video_id").to_numpy(), video_id)
    clip_pos = positions(clips.column("clip_id").to_numpy(), clip_id)
    if (video_pos < 0).any():
        raise StoreError(f"{store.path(tables.VIDEOS)}: no video {int(video_id[np.argmax(video_pos < 0)])} of "
                         f"teacher/{inputs.teacher}")
    if (clip_pos < 0).any():
        raise StoreError(f"{store.path(tables.CLIPS)}: no clip {int(clip_id[np.argmax(clip_pos < 0)])} of "
                         f"teacher/{inputs.teacher}")
    paths = np.asarray(videos.column("path").to_pylist(), dtype=object)[video_pos]
    clip_index = clips.column("clip_index").to_numpy()[clip_pos]
    seen = {kind for by_clip in sidecar.values() for kind in by_clip.values()}
    names = tuple(k for k in preferred_order if k in seen) + tuple(sorted(seen - set(preferred_order)))
    code = {name: i for i, name in enumerate(names)}
    kinds = np.empty(len(clip_id), dtype=np.int64)
    for i, (video, clip) in enumerate(zip(paths.tolist(), clip_index.tolist())):
        by_clip = sidecar.get(video)
        if by_clip is None:
            raise ValueError(f"{path}: no row for video '{video}' of store {store.url} (is this the sidecar of the "
                             "dataset the store was extracted from?)")
        if clip not in by_clip:
            raise ValueError(f"{path}: video '{video}' has no clip {clip} (the store has it)")
        kinds[i] = code[by_clip[clip]]
    return kinds, names



def teacher_clips_of_split(inputs: ReportInputs, split: str, column: str) -> tuple[np.ndarray, np.ndarray]:
    """(mask of the teacher cache's rows in ``split``, ``column`` of every row), over all rows of the cache."""
    cache = clip_outputs.read_clips(inputs.store, inputs.teacher_folder, ["split", column])
    return equals_mask(cache.column("split"), split), cache.column(column).to_numpy()
