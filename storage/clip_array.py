"""``clips.zarr``: every clip of every video as uint8 (N, 16, 112, 112, 3) RGB, one clip per chunk.

Chunks are grouped into shards of ``clips_per_shard`` clips to keep the file count low. Zarr rewrites a
whole shard on each write, so a shard must have exactly one writer: writers are given whole shards.
"""

from __future__ import annotations

import numpy as np

from condi_pipe.storage.errors import StoreError
from condi_pipe.storage.store import Store

CLIPS_ARRAY = "clips.zarr"
CLIP_LENGTH = 16
CROP_SIZE = 112
CLIP_SHAPE = (CLIP_LENGTH, CROP_SIZE, CROP_SIZE, 3)
DEFAULT_CLIPS_PER_SHARD = 64


def create_clip_array(store: Store, n_clips: int, clips_per_shard: int = DEFAULT_CLIPS_PER_SHARD):
    import zarr

    return zarr.create_array(
        store=store.zarr_store(CLIPS_ARRAY),
        shape=(n_clips, *CLIP_SHAPE),
        chunks=(1, *CLIP_SHAPE),
        shards=(clips_per_shard, *CLIP_SHAPE),
        dtype="uint8",
        fill_value=0,
        dimension_names=("clip", "frame", "y", "x", "rgb"),
        overwrite=True,
    )


def open_clip_array(store: Store, read_only: bool = True):
    import zarr

    if not store.exists(CLIPS_ARRAY, "zarr.json"):
        raise StoreError(f"{store.path(CLIPS_ARRAY)}: no clip array (run `condi-pipe extract` first)")
    return zarr.open_array(store=store.zarr_store(CLIPS_ARRAY, read_only=read_only), mode="r" if read_only else "r+")


def shard_ranges(n_clips: int, clips_per_shard: int) -> list[tuple[int, int]]:
    """[start, stop) clip ranges of each shard. ``shard_ranges(130, 64) == [(0, 64), (64, 128), (128, 130)]``."""
    return [(s, min(s + clips_per_shard, n_clips)) for s in range(0, n_clips, clips_per_shard)]


def write_clip_range(array, start: int, clips: np.ndarray) -> None:
    """Write a whole shard's clips in one call, so the shard is encoded once by its single writer."""
    if clips.dtype != np.uint8 or clips.shape[1:] != CLIP_SHAPE:
        raise ValueError(f"clips must be uint8 (n, {CLIP_SHAPE}), got {clips.dtype} {clips.shape}")
    array[start : start + len(clips)] = clips
