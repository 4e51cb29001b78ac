"""``clips.zarr``: every clip of every video as uint8 (N, 16, 112, 112, 3) RGB, one clip per chunk.

Chunks are grouped into shards of ``clips_per_shard`` clips to keep the file count low. Zarr rewrites a
whole shard on each write, so a shard must have exactly one writer: writers are given whole shards.

Extract compresses each clip where it was decoded (``ClipChunkEncoder``: the array's own inner codecs, run by
zarr) and a shard's writer only assembles the encoded chunks with zarr's ``ShardingCodec``
(``write_encoded_shard``), so frames are compressed in parallel and never decoded again. The bytes equal what
``array[start:stop] = clips`` writes (``tests/stages/test_extract_chunks.py`` checks it), so ``repair`` and a
plain ``zarr.open`` see one format.
"""

from __future__ import annotations

import functools
import json
from typing import Sequence

import numpy as np

from condi_pipe.storage.errors import StoreError
from condi_pipe.storage.store import Store

CLIPS_ARRAY = "clips.zarr"
CLIP_LENGTH = 16
CROP_SIZE = 112
CLIP_SHAPE = (CLIP_LENGTH, CROP_SIZE, CROP_SIZE, 3)
DEFAULT_CLIPS_PER_SHARD = 64
#: The clips' compressor, chosen by the measured table in README "Decoding" (bytes per clip against MB/s on each
#: file shape): zstd, level 3 by default (zarr's default level 0 means 3); ``extract --zstd-level 1`` compresses
#: 2.5x faster into a 7-10% larger store.
DEFAULT_ZSTD_LEVEL = 3
ZSTD_LEVELS = (1, 22)


def clip_codec(zstd_level: int = DEFAULT_ZSTD_LEVEL) -> dict:
    """The clip array's compressor at ``zstd_level``; ValueError (naming the allowed levels) for anything else."""
    if (isinstance(zstd_level, bool) or not isinstance(zstd_level, int)
            or not ZSTD_LEVELS[0] <= zstd_level <= ZSTD_LEVELS[1]):
        raise ValueError(f"zstd level must be in {ZSTD_LEVELS[0]}..{ZSTD_LEVELS[1]}, got {zstd_level!r}")
    return {"name": "zstd", "configuration": {"level": int(zstd_level), "checksum": False}}


def _array_spec(store_like, n_clips: int, clips_per_shard: int, zstd_level: int = DEFAULT_ZSTD_LEVEL) -> dict:
    from zarr.codecs import ZstdCodec

    return dict(
        store=store_like,
        shape=(n_clips, *CLIP_SHAPE),
        chunks=(1, *CLIP_SHAPE),
        shards=(clips_per_shard, *CLIP_SHAPE),
        dtype="uint8",
        fill_value=0,
        compressors=[ZstdCodec.from_dict(clip_codec(zstd_level))],
        dimension_names=("clip", "frame", "y", "x", "rgb"),
        overwrite=True,
    )


def create_clip_array(store: Store, n_clips: int, clips_per_shard: int = DEFAULT_CLIPS_PER_SHARD,
                      zstd_level: int = DEFAULT_ZSTD_LEVEL):
    import zarr

    return zarr.create_array(**_array_spec(store.zarr_store(CLIPS_ARRAY), n_clips, clips_per_shard, zstd_level))


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


def _inner_codecs(array) -> tuple:
    """(the ShardingCodec, the JSON of its inner codecs) of a sharded clip array."""
    sharding = array.metadata.codecs[0]
    return sharding, json.dumps([c.to_dict() for c in sharding.codecs], sort_keys=True)


class ClipChunkEncoder:
    """One clip -> the bytes the clip array stores for its chunk, by the array's own inner codecs.

    An all-zero clip (the fill value) encodes to ``b""``: zarr does not store such chunks either.

    >>> encoder = ClipChunkEncoder()
    >>> encoder.encode(np.zeros(CLIP_SHAPE, np.uint8))
    b''
    >>> 0 < len(encoder.encode(np.full(CLIP_SHAPE, 7, np.uint8))) < 1000
    True
    """

    def __init__(self, zstd_level: int = DEFAULT_ZSTD_LEVEL):
        import zarr
        from zarr.core.array_spec import ArraySpec
        from zarr.core.buffer import default_buffer_prototype
        from zarr.storage import MemoryStore

        template = zarr.create_array(**_array_spec(MemoryStore(), 1, 1, zstd_level))
        self._sharding, self.codecs = _inner_codecs(template)
        meta = template.metadata
        self._spec = ArraySpec(shape=(1, *CLIP_SHAPE), dtype=meta.dtype, fill_value=meta.fill_value,
                               config=template._async_array.config, prototype=default_buffer_prototype())

    def encode(self, clip: np.ndarray) -> bytes:
        from zarr.core.buffer.cpu import NDBuffer
        from zarr.core.sync import sync

        if clip.shape != CLIP_SHAPE or clip.dtype != np.uint8:
            raise ValueError(f"a clip must be uint8 {CLIP_SHAPE}, got {clip.dtype} {clip.shape}")
        if not clip.any():
            return b""
        chunk = NDBuffer.from_numpy_array(clip[None])
        if not all(hasattr(codec, "_encode_sync") for codec in self._sharding.codecs):
            (encoded,) = sync(self._sharding.codec_pipeline.encode([(chunk, self._spec)]))
            return encoded.to_bytes()
        # The same codecs, called in this thread: the async pipeline hops to zarr's event loop and to a worker
        # thread for every clip.
        data, spec = chunk, self._spec
        for codec in self._sharding.codecs:
            data = codec._encode_sync(data, spec)
            spec = codec.resolve_metadata(spec)
        return data.to_bytes()


@functools.lru_cache(maxsize=4)
def clip_chunk_encoder(zstd_level: int = DEFAULT_ZSTD_LEVEL) -> ClipChunkEncoder:
    """The process's encoder for ``zstd_level`` (building one creates a template array)."""
    return ClipChunkEncoder(zstd_level)


def write_encoded_shard(store: Store, array, shard_index: int, chunks: Sequence[bytes], codecs: str) -> None:
    """Write shard ``shard_index`` from its clips' encoded chunks (``ClipChunkEncoder.encode``), in clip order.

    zarr's ShardingCodec lays the chunks out and encodes the index; the file is written atomically. ``codecs``
    is the encoder's ``codecs``: chunks encoded by other codecs than the array's are refused.
    """
    from zarr.core.buffer import default_buffer_prototype
    from zarr.core.sync import sync

    sharding, array_codecs = _inner_codecs(array)
    if codecs != array_codecs:
        raise StoreError(f"{store.path(CLIPS_ARRAY)}: chunks encoded with {codecs}, the array uses {array_codecs}")
    per_shard = array.shards[0]
    if len(chunks) > per_shard:
        raise ValueError(f"{len(chunks)} chunks for a shard of {per_shard} clips")
    prototype = default_buffer_prototype()
    by_position = {(i, 0, 0, 0, 0): prototype.buffer.from_bytes(c) for i, c in enumerate(chunks)}
    shard = sync(sharding._encode_shard_dict(by_position, chunks_per_shard=(per_shard, 1, 1, 1, 1),
                                             buffer_prototype=prototype))
    rel = f"{CLIPS_ARRAY}/{array.metadata.encode_chunk_key((shard_index, 0, 0, 0, 0))}"
    if shard is None:  # every clip all zeros: zarr keeps no file for such a shard
        store.remove(rel)
    else:
        store.write_bytes(rel, shard.to_bytes())
