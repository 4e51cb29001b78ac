"""read_clip_batch: clips in the requested order for any ids, equal to zarr's orthogonal selection (the slow path)."""

from __future__ import annotations

import numpy as np
import pytest

from condi_pipe.compute.training import read_clips
from condi_pipe.storage.clip_array import CLIP_SHAPE, create_clip_array, open_clip_array, write_clip_range
from condi_pipe.storage.manifests import read_clip_batch
from condi_pipe.storage.store import Store

N_CLIPS, CLIPS_PER_SHARD = 21, 8  # the last shard is partial


@pytest.fixture(scope="module")
def clip_array(tmp_path_factory):
    """A sharded clip array whose clip i is filled with recognisable random bytes."""
    store = Store(str(tmp_path_factory.mktemp("clip_reads") / "store"))
    array = create_clip_array(store, N_CLIPS, CLIPS_PER_SHARD)
    clips = np.random.default_rng(0).integers(0, 256, size=(N_CLIPS, *CLIP_SHAPE), dtype=np.uint8)
    for start in range(0, N_CLIPS, CLIPS_PER_SHARD):
        write_clip_range(array, start, clips[start : start + CLIPS_PER_SHARD])
    return open_clip_array(store)


def slow_path(array, ids: np.ndarray) -> np.ndarray:
    """Zarr's orthogonal selection of the sorted ids, put back in the requested order."""
    distinct, position = np.unique(ids, return_inverse=True)
    return array.get_orthogonal_selection((distinct,))[position.reshape(-1)]


@pytest.mark.parametrize("ids", [
    [3, 17, 9, 20, 0],  # scattered and unsorted, across shards
    [5, 5, 2, 5, 2],  # repeated
    [7, 8, 9, 10, 2, 3, 15, 16, 17],  # runs of consecutive ids crossing shard borders, unsorted
    [20, 19, 18, 17],  # descending
    [4],
    list(range(6, 14)),  # one contiguous run
])
def test_read_clip_batch_equals_the_orthogonal_selection(clip_array, ids):
    ids = np.array(ids, np.int64)
    fast = read_clip_batch(clip_array, ids)
    assert fast.dtype == np.uint8 and fast.shape == (len(ids), *CLIP_SHAPE)
    np.testing.assert_array_equal(fast, slow_path(clip_array, ids))
    np.testing.assert_array_equal(read_clips(clip_array, ids).numpy(), fast)  # the training loop's tensor view


def test_random_ids_equal_the_orthogonal_selection(clip_array):
    rng = np.random.default_rng(1)
    for _ in range(5):
        ids = rng.integers(0, N_CLIPS, size=12)
        np.testing.assert_array_equal(read_clip_batch(clip_array, ids), slow_path(clip_array, ids))


def test_no_ids_give_an_empty_batch(clip_array):
    assert read_clip_batch(clip_array, np.zeros(0, np.int64)).shape == (0, *CLIP_SHAPE)
    assert read_clips(clip_array, []).shape == (0, *CLIP_SHAPE)
