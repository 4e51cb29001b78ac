"""Reading a training batch of scattered clips: ``read_clip_batch`` against zarr's orthogonal selection.

    .venv/bin/python bench/clip_reads.py [--clips 256] [--batch 32] [--repeats 5]

Builds a temporary sharded clip array (64 clips per shard, as ``extract`` writes it; clips are smooth noise so
they compress like video), then reads random batches of ``--batch`` distinct clip ids, the way a shuffled
epoch asks for them. Baseline: ``array.get_orthogonal_selection`` on the sorted ids. Prints the median time of
each and the ratio (the baseline is measured in the same run).
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time

import numpy as np

from condi_pipe.storage.clip_array import CLIP_SHAPE, create_clip_array, open_clip_array, write_clip_range
from condi_pipe.storage.manifests import read_clip_batch
from condi_pipe.storage.store import Store


def median_seconds(read, batches) -> float:
    times = []
    for ids in batches:
        began = time.perf_counter()
        read(ids)
        times.append(time.perf_counter() - began)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clips", type=int, default=256)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory() as folder:
        store = Store(folder)
        array = create_clip_array(store, args.clips, 64)
        base = rng.integers(0, 256, size=CLIP_SHAPE, dtype=np.uint8) // 4
        for start in range(0, args.clips, 64):
            n = min(64, args.clips - start)
            clips = base + rng.integers(0, 8, size=(n, *CLIP_SHAPE), dtype=np.uint8)
            write_clip_range(array, start, clips)
        array = open_clip_array(store)
        batches = [rng.choice(args.clips, size=args.batch, replace=False) for _ in range(args.repeats)]
        orthogonal = median_seconds(lambda ids: array.get_orthogonal_selection((np.sort(ids),)), batches)
        runs = median_seconds(lambda ids: read_clip_batch(array, ids), batches)
    print(f"{args.batch} random clips of {args.clips}: orthogonal selection {orthogonal:.3f} s, "
          f"read_clip_batch {runs:.3f} s, ratio {orthogonal / runs:.1f}x")


if __name__ == "__main__":
    main()
