"""Extract's compress-in-task path: clips are encoded by the clip array's own codecs in the decode task and the
shard writer only assembles them with zarr's sharding codec. The shards must be zarr's own format (byte for byte
what zarr writes itself), open with plain ``zarr.open``, and come out the same with 1 or 2 workers and after a
SIGKILL and a resume."""

from __future__ import annotations

import shutil
import signal
from pathlib import Path

import numpy as np
import pytest
import zarr

from condi_pipe.pipeline.executor import ExecutorOptions
from condi_pipe.stages.extract import ExtractRequest, extract
from condi_pipe.storage import clip_array
from condi_pipe.storage.errors import StoreError
from condi_pipe.storage.store import Store
from condi_pipe.video.decode import decode_video

# Short real files: 164 + 10 + 3 frames -> 11 + 1 + 1 clips, 7 shards of 2 (the last one partial).
FILES = {"Flip": ["test.avi"], "Spin": ["h265_video.mp4", "rotated_90.mov"]}
PER_SHARD = 2


def _store_files(folder: Path) -> dict[str, bytes]:
    """Every file of a store except run.json (it records times)."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*"))
            if p.is_file() and p.name != "run.json"}


def _extract(tree: Path, out: Path, workers: int) -> None:
    extract(Store(str(out)), ExtractRequest("folder", str(tree), clips_per_shard=PER_SHARD),
            ExecutorOptions(workers=workers), quiet=True, log=lambda m: None)


@pytest.fixture(scope="module")
def tree(media_dir, tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("chunks") / "data"
    for cls, names in FILES.items():
        (root / cls).mkdir(parents=True)
        for name in names:
            shutil.copy(media_dir / name, root / cls / name)
    return root


@pytest.fixture(scope="module")
def inline_store(tree, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("inline") / "store"
    _extract(tree, out, workers=0)
    return out


def _clips(seed: int, n: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    ramp = np.arange(clip_array.CROP_SIZE, dtype=np.uint8)[None, None, :, None, None]
    return (rng.integers(0, 30, (n, *clip_array.CLIP_SHAPE), dtype=np.uint8) + ramp).astype(np.uint8)


def test_assembled_shards_are_the_bytes_zarr_writes_itself(tmp_path):
    clips = _clips(0, 7)
    clips[2] = 0  # an all-fill-value clip: zarr stores no chunk for it
    by_zarr, assembled = Store(str(tmp_path / "a")), Store(str(tmp_path / "b"))
    clip_array.write_clip_range(clip_array.create_clip_array(by_zarr, 7, 3), 0, clips)
    array = clip_array.create_clip_array(assembled, 7, 3)
    encoder = clip_array.clip_chunk_encoder()
    for index, (start, stop) in enumerate(clip_array.shard_ranges(7, 3)):
        clip_array.write_encoded_shard(assembled, array, index, [encoder.encode(c) for c in clips[start:stop]],
                                       encoder.codecs)
    assert _store_files(tmp_path / "b") == _store_files(tmp_path / "a")
    assert encoder.encode(clips[2]) == b"" and len(encoder.encode(clips[0])) < clips[0].nbytes
    np.testing.assert_array_equal(zarr.open_array(str(tmp_path / "b" / clip_array.CLIPS_ARRAY), mode="r")[:], clips)


def test_an_all_zero_shard_leaves_no_file_as_zarr_does(tmp_path):
    store = Store(str(tmp_path))
    array = clip_array.create_clip_array(store, 4, 2)
    encoder = clip_array.clip_chunk_encoder()
    zeros = np.zeros(clip_array.CLIP_SHAPE, np.uint8)
    clip_array.write_encoded_shard(store, array, 1, [encoder.encode(zeros)] * 2, encoder.codecs)
    assert not store.exists(clip_array.CLIPS_ARRAY, "c", "1", "0", "0", "0", "0")
    assert not np.asarray(clip_array.open_clip_array(store)[2:4]).any()


def test_chunks_of_other_codecs_are_refused(tmp_path):
    store = Store(str(tmp_path))
    array = clip_array.create_clip_array(store, 2, 2)
    with pytest.raises(StoreError, match="chunks encoded with .*gzip.* the array uses"):
        clip_array.write_encoded_shard(store, array, 0, [b"x"], '[{"name": "gzip"}]')


def test_extracted_store_opens_with_plain_zarr_and_holds_the_decoded_clips(tree, inline_store):
    array = zarr.open(str(inline_store / clip_array.CLIPS_ARRAY), mode="r")
    assert array.shape == (13, *clip_array.CLIP_SHAPE) and array.shards == (PER_SHARD, *clip_array.CLIP_SHAPE)
    expected = np.concatenate([decode_video(tree / "Flip" / "test.avi").clips,
                               decode_video(tree / "Spin" / "h265_video.mp4").clips,
                               decode_video(tree / "Spin" / "rotated_90.mov").clips])
    np.testing.assert_array_equal(array[:], expected)


def test_zstd_level_1_stores_the_same_clips_in_zarrs_own_level_1_bytes(tree, inline_store, tmp_path):
    """``--zstd-level 1``: the level is in the array's metadata, the chunks are zarr's own level-1 bytes, the
    clips read back equal, and the default level's configuration is what stores made before the option hold."""
    out = tmp_path / "level1"
    extract(Store(str(out)), ExtractRequest("folder", str(tree), clips_per_shard=PER_SHARD, zstd_level=1),
            ExecutorOptions(workers=0), quiet=True, log=lambda m: None)
    fast, default = (zarr.open_array(str(folder / clip_array.CLIPS_ARRAY), mode="r") for folder in (out, inline_store))
    levels = [[c.to_dict()["configuration"].get("level") for c in a.metadata.codecs[0].codecs
               if c.to_dict()["name"] == "zstd"] for a in (fast, default)]
    assert levels == [[1], [3]]
    np.testing.assert_array_equal(fast[:], default[:])
    by_zarr = Store(str(tmp_path / "by_zarr"))
    clip_array.write_clip_range(clip_array.create_clip_array(by_zarr, 13, PER_SHARD, zstd_level=1), 0, default[:])
    chunks = lambda folder: _store_files(folder / clip_array.CLIPS_ARRAY)  # noqa: E731
    assert chunks(out) == chunks(tmp_path / "by_zarr") != chunks(inline_store)
    assert "zstd_level" not in ExtractRequest("folder", str(tree)).config()
    assert ExtractRequest("folder", str(tree), zstd_level=1).config()["zstd_level"] == 1
    with pytest.raises(ValueError, match=r"^zstd_level must be in \[1, 22\], got 0$"):
        ExtractRequest("folder", str(tree), zstd_level=0)


def test_one_and_two_workers_write_the_same_bytes(tree, inline_store, tmp_path):
    for workers in (1, 2):
        _extract(tree, tmp_path / f"w{workers}", workers)
        assert _store_files(tmp_path / f"w{workers}") == _store_files(inline_store), f"{workers} workers"


@pytest.mark.slow
@pytest.mark.parametrize("kill_at", ["extract.decoded:2"])  # kills in the shard phase: tests/stages/test_extract.py
def test_sigkill_then_resume_gives_the_same_bytes(tree, inline_store, tmp_path, run_cli, kill_at):
    store = tmp_path / "store"
    args = ("extract", "--source", "folder", "--root", str(tree), "--store", str(store), "--clips-per-shard",
            str(PER_SHARD), "--workers", "0", "--quiet")
    killed = run_cli(*args, env={"CONDI_PIPE_KILL_AT": kill_at})
    assert killed.returncode == -signal.SIGKILL
    staged = list((store / "staging" / "extract").glob("*.json"))
    assert 0 < len(staged) and not (store / "videos.parquet").exists()
    # What a decode task stages is already compressed: encoded chunks, never raw frames.
    assert all(sorted(p.name.split(".", 1)[1] for p in store.glob(f"staging/extract/{j.stem}.*"))
               == ["chunk_ends.npy", "chunks.npy", "json"] for j in staged)
    resumed = run_cli(*args)
    assert resumed.returncode == 0, resumed.stderr
    assert _store_files(store) == _store_files(inline_store)
