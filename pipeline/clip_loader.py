"""Loading the training batches of an epoch with several workers, in order, a bounded number ahead.

:class:`ClipLoader` maps a ``load(spec)`` function (a task's ``load_batch``: clip ids -> uint8 clips and their
targets) over an epoch's batch specs with ``workers`` threads (or processes) and yields the results in the order
of the specs, so the batches a training step sees (their order and their bytes) do not depend on the number of
workers, and the loader consumes no random numbers: a resumed run reads what an uninterrupted run reads.

At most ``depth`` batches are loading or loaded and not yet taken (the memory bound: ``depth + 1`` batches with
the one the caller holds). With ``pin_memory`` (training on CUDA) every tensor of a batch is put in page-locked
host memory by the worker, so the caller's ``.to(device, non_blocking=True)`` copies it while the GPU works.
Closing the generator (a ``break``, an exception in the caller, ``contextlib.closing``) cancels the batches not
started and waits for the running ones, so no worker outlives the epoch; an exception in ``load`` reaches the
caller unchanged when its batch's turn comes.

Threads or processes: reading a batch is zarr (its shard index, the event loop that every synchronous zarr call
in a process goes through, copies) plus zstd decompression, which releases the GIL. Threads share the task and
the opened clip array, need no pickling, and the batch is not copied; processes need a picklable ``load`` (sent
once to each worker) and pass tensors back through shared memory. ``bench/clip_reads.py`` measures both; the
training loop uses threads (its ``load`` is a task's bound method, see README "Loading clips").

    >>> loader = ClipLoader(lambda ids: [i * 10 for i in ids], workers=2, depth=3)
    >>> list(loader.map([[1, 2], [3], [4, 5]]))
    [[10, 20], [30], [40, 50]]
"""

from __future__ import annotations

import os
from collections import deque
from concurrent.futures import Executor, Future, ProcessPoolExecutor, ThreadPoolExecutor
from typing import Any, Callable, Iterable, Iterator

import torch

KINDS = ("thread", "process")
THREAD_NAME_PREFIX = "clip-loader"
_END = object()  # no more specs


def default_loader_workers(device: torch.device | str, cores: int | None = None) -> int:
    """Workers when the user sets none: 1 on a CPU (torch's threads already use every core to train, as the one
    prefetch thread did before), else up to 4 while leaving a core to drive the GPU.

    >>> default_loader_workers("cpu", 8), default_loader_workers("cuda", 8), default_loader_workers("cuda", 2)
    (1, 4, 1)
    """
    if torch.device(device).type == "cpu":
        return 1
    cores = cores or os.cpu_count() or 1
    return max(1, min(4, cores - 1))


class ClipReader:
    """Clip ids -> their uint8 (n, 16, 112, 112, 3) clips as a tensor, from the clip array of the store at ``url``.

    Picklable (the array is opened on first use, in the process that reads), so a process worker can be given
    one; threads may share one."""

    def __init__(self, url: str) -> None:
        self.url = str(url)
        self._array = None

    def __getstate__(self) -> dict:
        return {"url": self.url, "_array": None}

    def __call__(self, clip_ids) -> torch.Tensor:
        from condi_pipe.storage.clip_array import open_clip_array
        from condi_pipe.storage.manifests import read_clip_batch
        from condi_pipe.storage.store import Store

        if self._array is None:
            self._array = open_clip_array(Store(self.url))
        return torch.from_numpy(read_clip_batch(self._array, clip_ids))


def pinned(batch: Any) -> Any:
    """``batch`` (a tensor, or tuples / lists / dicts of them, other leaves kept) with every tensor in page-locked
    memory, for asynchronous copies to a GPU."""
    if isinstance(batch, torch.Tensor):
        return batch.pin_memory()
    if isinstance(batch, tuple):
        items = [pinned(item) for item in batch]
        return type(batch)(*items) if hasattr(batch, "_fields") else tuple(items)
    if isinstance(batch, list):
        return [pinned(item) for item in batch]
    if isinstance(batch, dict):
        return {key: pinned(value) for key, value in batch.items()}
    return batch


# The load function of this worker process (processes receive it once, in the pool's initializer).
_process_load: Callable[[Any], Any] | None = None


def _install_process_load(load: Callable[[Any], Any]) -> None:
    global _process_load
    _process_load = load


def _load_in_process(spec: Any) -> Any:
    return _process_load(spec)


class ClipLoader:
    """``load`` mapped over batch specs by ``workers`` threads (``kind="thread"``) or processes (``"process"``),
    results in the specs' order, at most ``depth`` ahead (default ``2 * workers``: a queued batch per worker)."""

    def __init__(self, load: Callable[[Any], Any], workers: int = 1, depth: int | None = None, *,
                 pin_memory: bool = False, kind: str = "thread") -> None:
        if workers < 1:
            raise ValueError(f"loader workers must be >= 1, got {workers}")
        if depth is not None and depth < 1:
            raise ValueError(f"the loader depth must be >= 1 batch, got {depth}")
        if kind not in KINDS:
            raise ValueError(f"the loader kind must be one of {', '.join(KINDS)}, got {kind!r}")
        self.load, self.workers, self.kind = load, int(workers), kind
        self.depth = int(depth) if depth is not None else 2 * self.workers
        self.pin_memory = pin_memory

    def _pool(self) -> Executor:
        if self.kind == "thread":
            return ThreadPoolExecutor(self.workers, thread_name_prefix=THREAD_NAME_PREFIX)
        # spawn: a forked child would inherit zarr's event-loop thread and torch's thread pools half alive
        context = torch.multiprocessing.get_context("spawn")
        return ProcessPoolExecutor(self.workers, mp_context=context, initializer=_install_process_load,
                                   initargs=(self.load,))

    def _submit(self, pool: Executor, spec: Any) -> Future:
        if self.kind == "process":
            return pool.submit(_load_in_process, spec)
        if self.pin_memory:  # pinned by the worker thread, off the training thread
            return pool.submit(lambda: pinned(self.load(spec)))
        return pool.submit(self.load, spec)

    def map(self, specs: Iterable[Any]) -> Iterator[Any]:
        """``load(spec)`` of every spec, in order. Close the generator to stop early; its workers stop with it."""
        specs = iter(specs)
        pending: deque[Future] = deque()
        pool = self._pool()
        try:
            for spec in specs:
                pending.append(self._submit(pool, spec))
                if len(pending) >= self.depth:
                    break
            while pending:
                batch = pending.popleft().result()
                nxt = next(specs, _END)
                if nxt is not _END:  # the freed slot goes to the next batch before this one is handed over
                    pending.append(self._submit(pool, nxt))
                # a process's batch is pinned here: pinning needs the CUDA context, which the workers lack
                yield pinned(batch) if self.pin_memory and self.kind == "process" else batch
        finally:
            for future in pending:
                future.cancel()
            pool.shutdown(wait=True, cancel_futures=True)

