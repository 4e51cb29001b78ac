"""Read the extract stage's manifests: videos and clips of a split, the class names, and clip arrays."""

from __future__ import annotations

import asyncio
from typing import NamedTuple

import numpy as np
import pyarrow.compute as pc

from condi_pipe.storage import tables
from condi_pipe.storage.damaged_reads import guarded_read
from condi_pipe.storage.errors import StoreError
from condi_pipe.storage.run_state import stage_record
from condi_pipe.storage.store import Store


class VideoSet(NamedTuple):
    """Videos of one split in clip-id order, as flat arrays (the layout every stage iterates over)."""

    video_id: np.ndarray  # int64 (V,)
    label: np.ndarray  # int64 (V,)
    first_clip: np.ndarray  # int64 (V,)
    clips: np.ndarray  # int64 (V,)

    @property
    def clip_ids(self) -> np.ndarray:
        """Clip ids of every video, concatenated in video order."""
        if len(self.clips) == 0:
            return np.zeros(0, np.int64)
        return np.concatenate([np.arange(f, f + n) for f, n in zip(self.first_clip, self.clips)])

    @property
    def offsets(self) -> np.ndarray:
        """(V + 1,) start of each video within ``clip_ids``."""
        return np.concatenate([[0], np.cumsum(self.clips)]).astype(np.int64)

    def subset(self, mask: np.ndarray) -> "VideoSet":
        return VideoSet(*(a[mask] for a in self))


def class_names(store: Store) -> list[str]:
    record = stage_record(store, "extract")
    if record.get("state") != "done":
        raise StoreError(f"{store.url}: extract has not finished; run `condi-pipe extract` first")
    return list(record["classes"])


def available_splits(store: Store) -> list[str]:
    return sorted(set(store.read_table(tables.VIDEOS, columns=["split"]).column("split").to_pylist()))


def load_videos(store: Store, split: str | None = None) -> VideoSet:
    """Videos of ``split`` (all splits when None), sorted by video id."""
    table = store.read_table(tables.VIDEOS, columns=["video_id", "label", "first_clip", "clips", "split"])
    if split is not None:
        if split not in set(table.column("split").to_pylist()):
            raise StoreError(f"{store.path(tables.VIDEOS)}: no videos in split '{split}' "
                             f"(splits: {', '.join(available_splits(store)) or 'none'})")
        table = table.filter(pc.equal(table.column("split"), split))
    table = table.sort_by("video_id")
    return VideoSet(*(table.column(c).to_numpy().astype(np.int64) for c in ("video_id", "label", "first_clip", "clips")))


def eval_split(store: Store) -> str:
    """The split results are reported on: ``test`` if the dataset has one, else ``val``."""
    splits = available_splits(store)
    return "test" if "test" in splits or "val" not in splits else "val"


def read_clip_batch(array, clip_ids: np.ndarray) -> np.ndarray:
    """uint8 (len(ids), 16, 112, 112, 3) clips in the order of ``clip_ids`` (any order, repeats allowed).

    The distinct ids are read as runs of consecutive ids, one slice per run, then put in the requested order.
    On the sharded clip array a slice is far faster than zarr's orthogonal selection of scattered ids, which
    decodes every shard index once per requested clip (1.3-3.5 s against 0.08 s for 32 random clips).
    """
    ids = np.asarray(clip_ids, dtype=np.int64).reshape(-1)
    if len(ids) == 0:
        return np.zeros((0, *array.shape[1:]), dtype=array.dtype)
    if not hasattr(array, "store_path"):  # not a Zarr array (an in-memory stand-in): nothing to name
        return _read_clip_batch(array, ids)
    return guarded_read(array, lambda: _read_clip_batch(array, ids), int(ids.min()), int(ids.max()) + 1)


def _read_clip_batch(array, ids: np.ndarray) -> np.ndarray:
    if np.all(np.diff(ids) == 1):
        return np.asarray(array[int(ids[0]) : int(ids[-1]) + 1])
    distinct, position = np.unique(ids, return_inverse=True)
    position = position.reshape(-1)
    run_starts = np.flatnonzero(np.diff(distinct) != 1) + 1
    runs = [(int(run[0]), int(run[-1]) + 1) for run in np.split(distinct, run_starts)]
    # Each run's clips go straight to their places: one copy, not a concatenation and then a gather (two copies
    # of the whole batch, 30% of a random batch's read time).
    out = np.empty((len(ids), *array.shape[1:]), dtype=array.dtype)
    run_of_distinct = np.repeat(np.arange(len(runs)), [stop - start for start, stop in runs])
    first_of_run = np.concatenate([[0], run_starts])
    parts = _read_runs(array, runs)
    for row, k in enumerate(position):
        run = run_of_distinct[k]
        out[row] = parts[run][k - first_of_run[run]]
    return out


def _read_runs(array, runs: list[tuple[int, int]]) -> list[np.ndarray]:
    """``array[start:stop]`` of every run, read in one pass of zarr's event loop: the runs' shard reads and chunk
    decodes overlap (zarr's codec pipeline decodes on its own threads) instead of waiting for each other."""
    if len(runs) == 1 or not hasattr(array, "async_array"):
        return [np.asarray(array[start:stop]) for start, stop in runs]
    from zarr.core.sync import sync

    async def read_all():
        return await asyncio.gather(*(array.async_array.getitem(slice(start, stop)) for start, stop in runs))

    return [np.asarray(part) for part in sync(read_all())]


def video_paths(store: Store, videos: VideoSet) -> np.ndarray:
    """The source path (relative to the dataset root) of each video of ``videos``, in its order."""
    table = store.read_table(tables.VIDEOS, columns=["video_id", "path"])
    ids = table.column("video_id").to_numpy().astype(np.int64)
    paths = np.asarray(table.column("path").to_pylist(), dtype=object)
    order = np.argsort(ids)
    where = np.searchsorted(ids[order], videos.video_id)
    if len(where) and ((where >= len(ids)).any()
                       or (ids[order][np.minimum(where, len(ids) - 1)] != videos.video_id).any()):
        raise StoreError(f"{store.path(tables.VIDEOS)}: some requested video ids are missing")
    return paths[order][where]
