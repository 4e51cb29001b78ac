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
the opened clip array, need no pickling, and the batch is not copied, but every thread's reads pass through the
one zarr event loop of the process. Processes need a picklable ``load`` (sent once to each worker) and hand their
tensors back through a ring of shared-memory slots (``depth + 1`` files in ``/dev/shm``, or the temporary folder
when it has no room, each the size of the first batch): a worker copies its batch's tensors into a free slot, and the caller gets tensors that are views
of that slot, so nothing is pickled or faulted in again per batch (a batch that does not fit goes back pickled,
as torch shares tensors). A process batch's tensors are therefore valid until the next batch is taken: a caller
that keeps a batch longer clones it. ``bench/clip_reads.py`` measures both; the training loop uses threads (its
``load`` is a task's bound method, see README "Loading clips").

    >>> loader = ClipLoader(lambda ids: [i * 10 for i in ids], workers=2, depth=3)
    >>> list(loader.map([[1, 2], [3], [4, 5]]))
    [[10, 20], [30], [40, 50]]
"""

from __future__ import annotations

import os
import shutil
import tempfile
import warnings
from collections import deque
from concurrent.futures import Executor, Future, ProcessPoolExecutor, ThreadPoolExecutor, wait
from typing import Any, Callable, Iterable, Iterator, NamedTuple

import numpy as np
import torch

from condi_pipe.storage.clip_array import open_clip_array
from condi_pipe.storage.manifests import read_clip_batch
from condi_pipe.storage.store import Store

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

        if self._array is None:
            self._array = open_clip_array(Store(self.url))
        return torch.from_numpy(read_clip_batch(self._array, clip_ids))


def _map_leaves(batch: Any, leaf_type: type, fn: Callable[[Any], Any]) -> Any:
    """``batch`` (tuples, named tuples, lists and dicts, nested) with every ``leaf_type`` leaf replaced by
    ``fn(leaf)``, in order (dict values in their order), other leaves kept."""
    if isinstance(batch, leaf_type):
        return fn(batch)
    if isinstance(batch, tuple):
        items = [_map_leaves(item, leaf_type, fn) for item in batch]
        return type(batch)(*items) if hasattr(batch, "_fields") else tuple(items)
    if isinstance(batch, list):
        return [_map_leaves(item, leaf_type, fn) for item in batch]
    if isinstance(batch, dict):
        return {key: _map_leaves(value, leaf_type, fn) for key, value in batch.items()}
    return batch


def pinned(batch: Any) -> Any:
    """``batch`` (a tensor, or tuples / lists / dicts of them, other leaves kept) with every tensor in page-locked
    memory, for asynchronous copies to a GPU."""
    return _map_leaves(batch, torch.Tensor, lambda tensor: tensor.pin_memory())


# The load function of this worker process (processes receive it once, in the pool's initializer).
_process_load: Callable[[Any], Any] | None = None
_slot_maps: dict[str, np.memmap] = {}  # this worker's mappings of the ring's slots, opened once each


def _install_process_load(load: Callable[[Any], Any]) -> None:
    global _process_load
    _process_load = load


class _InSlot(NamedTuple):
    """A tensor a worker wrote into a shared slot: where, and as what."""

    offset: int
    dtype: str
    shape: tuple[int, ...]


class _NotInNumpy(Exception):
    """A tensor whose dtype numpy has no equivalent for: its batch cannot travel in a slot."""


def _slot_layout(batch: Any) -> tuple[Any, int, list[tuple[torch.Tensor, _InSlot]]]:
    """``batch`` with each tensor replaced by its place in a slot (64-byte aligned, in order), the bytes needed,
    and the (tensor, place) pairs to copy. Tensors numpy cannot hold (bfloat16) stop the layout: (None, -1, [])."""
    size, copies = 0, []

    def place(tensor: torch.Tensor) -> _InSlot:
        nonlocal size
        try:
            dtype = np.dtype(torch.empty(0, dtype=tensor.dtype).numpy().dtype)
        except TypeError as exc:  # bfloat16, float8
            raise _NotInNumpy from exc
        where = _InSlot(size, dtype.str, tuple(tensor.shape))
        size += -(-tensor.numel() * dtype.itemsize // 64) * 64
        copies.append((tensor, where))
        return where

    try:
        return _map_leaves(batch, torch.Tensor, place), size, copies
    except _NotInNumpy:
        return None, -1, []



def _slot_view(slot: np.ndarray, place: _InSlot) -> np.ndarray:
    dtype = np.dtype(place.dtype)
    count = int(np.prod(place.shape, dtype=np.int64))
    return slot[place.offset : place.offset + count * dtype.itemsize].view(dtype).reshape(place.shape)


def _load_in_process(spec: Any, slot_path: str | None = None) -> tuple[bool, Any]:
    """``(True, layout)`` with the batch's tensors copied into the slot at ``slot_path``, or ``(False, batch)``
    when there is no slot or the batch does not fit it (then pickled back)."""
    batch = _process_load(spec)
    if slot_path is None:
        return False, batch
    slot = _slot_maps.get(slot_path)
    if slot is None:
        slot = _slot_maps[slot_path] = np.memmap(slot_path, dtype=np.uint8, mode="r+")
    layout, size, copies = _slot_layout(batch)
    if size < 0 or size > len(slot):
        return False, batch
    for tensor, place in copies:
        np.copyto(_slot_view(slot, place), tensor.numpy(force=True), casting="no")
    return True, layout


def _from_slot(layout: Any, slot: np.ndarray) -> Any:
    """The batch whose tensors ``layout`` placed in ``slot``: tensors that are views of the slot."""
    return _map_leaves(layout, _InSlot, lambda place: torch.from_numpy(_slot_view(slot, place)))


SHARED_MEMORY_DIR = "/dev/shm"


class SlotRing:
    """``count`` files of ``size`` bytes, mapped once by this process and once by each worker that writes one;
    removed by :meth:`close`. They live in ``/dev/shm`` (memory) where it exists and has room, else in the temporary
    folder (the page cache). Their space is reserved up front (``posix_fallocate``): a slot in a full ``/dev/shm``
    would otherwise fail only when a worker first writes to it, with SIGBUS (containers often give it 64 MB)."""

    def __init__(self, count: int, size: int) -> None:
        self.maps: list[np.memmap] = []
        self.paths: list[str] = []
        self.folder = ""
        problems = []
        for where in (SHARED_MEMORY_DIR, None):
            if where is not None and not (os.path.isdir(where) and os.access(where, os.W_OK)):
                continue
            try:
                self._make(where, count, max(size, 1))
                break
            except OSError as exc:
                problems.append(f"{self.folder}: {exc}")
                self.close()
        else:
            raise OSError(f"no room for {count} loader slots of {size} bytes ({'; '.join(problems)})")
        self.free = deque(range(count))

    def _make(self, where: str | None, count: int, size: int) -> None:
        self.folder = tempfile.mkdtemp(prefix="condi-pipe-loader-", dir=where)
        self.paths, self.maps = [], []
        for i in range(count):
            path = os.path.join(self.folder, f"slot{i}")
            with open(path, "wb") as fh:
                os.posix_fallocate(fh.fileno(), 0, size)
            self.paths.append(path)
            self.maps.append(np.memmap(path, dtype=np.uint8, mode="r+"))

    def close(self) -> None:
        self.maps.clear()
        if self.folder:
            shutil.rmtree(self.folder, ignore_errors=True)


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
        self._kept_pool: Executor | None = None  # between open() and close(): one pool (and ring) for every map
        self._kept_ring: SlotRing | None = None
        self._no_ring = False  # set when no ring could be made: process batches come back pickled

    def open(self) -> "ClipLoader":
        """Keep one pool of workers (and, for processes, one ring of slots) for every ``map`` until
        :meth:`close`: a training run's process workers start (and import torch and zarr) once, not once per
        epoch. Without it, each ``map`` starts and stops its own."""
        if self._kept_pool is None:
            self._kept_pool = self._pool()
        return self

    def close(self) -> None:
        pool, ring, self._kept_pool, self._kept_ring = self._kept_pool, self._kept_ring, None, None
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)
        if ring is not None:
            ring.close()

    def __enter__(self) -> "ClipLoader":
        return self.open()

    def __exit__(self, *exc) -> None:
        self.close()

    def _pool(self) -> Executor:
        if self.kind == "thread":
            return ThreadPoolExecutor(self.workers, thread_name_prefix=THREAD_NAME_PREFIX)
        # spawn: a forked child would inherit zarr's event-loop thread and torch's thread pools half alive
        context = torch.multiprocessing.get_context("spawn")
        return ProcessPoolExecutor(self.workers, mp_context=context, initializer=_install_process_load,
                                   initargs=(self.load,))

    def _submit(self, pool: Executor, spec: Any, ring: SlotRing | None) -> tuple[Future, int | None]:
        """The future of ``spec``'s batch, and the ring slot its worker writes the batch into (processes)."""
        if self.kind == "process":
            slot = ring.free.popleft() if ring is not None else None
            return pool.submit(_load_in_process, spec, None if slot is None else ring.paths[slot]), slot
        if self.pin_memory:  # pinned by the worker thread, off the training thread
            return pool.submit(lambda: pinned(self.load(spec))), None
        return pool.submit(self.load, spec), None

    def _result(self, future: Future, slot: int | None, ring: SlotRing | None) -> tuple[Any, int | None]:
        """The batch of ``future`` and the slot it still occupies (None once free)."""
        if self.kind == "thread":
            return future.result(), None
        try:
            in_slot, value = future.result()
        except BaseException:
            if slot is not None:  # a kept ring keeps every slot
                ring.free.append(slot)
            raise
        if in_slot:
            return _from_slot(value, ring.maps[slot]), slot
        if slot is not None:  # it did not fit: pickled back, its slot is free again
            ring.free.append(slot)
        return value, None

    def map(self, specs: Iterable[Any]) -> Iterator[Any]:
        """``load(spec)`` of every spec, in order. Close the generator to stop early: the batches not started are
        cancelled and the running ones waited for (its own workers stop with it; an open loader's stay)."""
        specs = iter(specs)
        pending: deque[tuple[Future, int | None]] = deque()
        kept = self._kept_pool is not None
        pool = self._kept_pool if kept else self._pool()
        ring: SlotRing | None = self._kept_ring if kept else None
        held: int | None = None  # the slot of the batch the caller holds
        exhausted = False
        sizing = self.kind == "process" and ring is None and not self._no_ring

        def top_up() -> None:
            nonlocal exhausted
            # processes start with one batch: it sizes the ring's slots, which every later batch travels in
            limit = 1 if sizing else self.depth
            while not exhausted and len(pending) < limit:
                spec = next(specs, _END)
                if spec is _END:
                    exhausted = True
                else:
                    pending.append(self._submit(pool, spec, ring))

        try:
            top_up()
            while pending:
                batch, held = self._result(*pending.popleft(), ring)
                if sizing:
                    sizing = False
                    try:
                        ring = SlotRing(self.depth + 1, _slot_layout(batch)[1])
                    except OSError as exc:  # no room anywhere: batches go back pickled, as torch shares tensors
                        warnings.warn(f"clip loader: {exc}; batches are passed pickled", RuntimeWarning)
                        self._no_ring = True
                    if kept:
                        self._kept_ring = ring
                top_up()  # the freed places go to the next batches before this one is handed over
                # a process's batch is pinned here: pinning needs the CUDA context, which the workers lack
                yield pinned(batch) if self.pin_memory and self.kind == "process" else batch
                if held is not None:  # the caller asked for the next batch: this one's slot may be refilled
                    ring.free.append(held)
                    held = None
        finally:
            for future, _ in pending:
                future.cancel()
            if kept:  # the pool stays: wait for the running batches, then their slots are free again
                wait([future for future, _ in pending])
                if ring is not None:
                    ring.free.extend(slot for slot in [held, *(slot for _, slot in pending)] if slot is not None)
            else:
                pool.shutdown(wait=True, cancel_futures=True)
                if ring is not None:
                    ring.close()
