"""ClipLoader: the batches of a plain sequential map, in order and byte for byte, with any number of workers
(threads or processes); at most ``depth`` batches ahead; a load's exception reaches the caller; closing the
generator stops its workers; a distill run reads the same batches, and ends with the same bytes, with 2 workers
as with 1."""

from __future__ import annotations

import errno
import shutil
import tempfile
import threading
import time
from concurrent.futures import Future
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch

from condi_pipe.compute.clip_loader import THREAD_NAME_PREFIX, ClipLoader, ClipReader, default_loader_workers
from condi_pipe.compute.torch_runtime import RuntimeOptions
from condi_pipe.compute.training import TrainOptions
from condi_pipe.storage.clip_array import CLIP_SHAPE, create_clip_array, write_clip_range
from condi_pipe.storage.store import Store

N_CLIPS = 24


@pytest.fixture(scope="module")
def clip_store(tmp_path_factory) -> str:
    """A real sharded clip array of 24 distinct clips (8 per shard), every clip's bytes different."""
    folder = str(tmp_path_factory.mktemp("loader") / "store")
    array = create_clip_array(Store(folder), N_CLIPS, 8)
    rng = np.random.default_rng(3)
    write_clip_range(array, 0, rng.integers(0, 256, size=(N_CLIPS, *CLIP_SHAPE), dtype=np.uint8))
    return folder


def epoch_specs(seed: int = 0, batch: int = 5) -> list[np.ndarray]:
    """A shuffled epoch's clip-id batches (the last one short), and one run of consecutive ids."""
    ids = np.random.default_rng(seed).permutation(N_CLIPS)
    return [ids[i : i + batch] for i in range(0, N_CLIPS, batch)] + [np.arange(8, 16)]


def late_for_early_specs(read: ClipReader):
    """``read`` that finishes the earlier specs last (each waits longer than the next), so in-order results
    cannot come from completion order."""

    def load(ids: np.ndarray) -> torch.Tensor:
        time.sleep(0.002 * (N_CLIPS - int(ids[0])))
        return read(ids)

    return load


@pytest.mark.parametrize("workers", [1, 2, 3])
def test_batches_come_in_order_with_the_bytes_of_a_sequential_map(clip_store, workers):
    read = ClipReader(clip_store)
    specs = epoch_specs()
    expected = [read(ids) for ids in specs]
    got = list(ClipLoader(late_for_early_specs(read), workers).map(specs))
    assert len(got) == len(expected)
    for mine, theirs, ids in zip(got, expected, specs):
        assert mine.dtype == torch.uint8 and mine.shape == (len(ids), *CLIP_SHAPE)
        assert torch.equal(mine, theirs)
    assert not torch.equal(got[0], got[1])  # distinct batches: a swap would be seen


@pytest.fixture
def loader_tasks(monkeypatch):
    """The picklable loads of ``loader_tasks.py``, importable by spawned workers (its folder on ``sys.path``)."""
    import importlib

    monkeypatch.syspath_prepend(str(Path(__file__).parent))
    return importlib.import_module("loader_tasks")


def _ring_folders() -> set[str]:
    return {p.name for p in Path(tempfile.gettempdir()).glob("condi-pipe-loader-*")} | \
        {p.name for p in Path("/dev/shm").glob("condi-pipe-loader-*")}


@pytest.mark.slow  # spawns two Python processes that import torch and zarr (seconds on this machine)
def test_process_workers_hand_batches_back_through_a_ring_of_shared_slots(clip_store, loader_tasks):
    """Every batch equals a sequential load (tensors, nesting, plain leaves); the batches after the first travel in
    at most depth + 1 shared buffers, reused, so a caller that keeps a batch clones it; a batch larger than the
    first (which sized the slots) comes back pickled, intact; the slots are removed at the end."""
    load = loader_tasks.LabelledClips(clip_store)
    specs = epoch_specs(seed=1, batch=6) * 2 + [np.arange(0, 12)]  # 10 batches, the last twice the first's size
    expected = [load(ids) for ids in specs]
    before = _ring_folders()
    got, buffers = [], []
    loader = ClipLoader(load, 2, kind="process")
    for batch in loader.map(specs):
        buffers.append(batch["clips"].data_ptr())
        got.append({**batch, "clips": batch["clips"].clone(), "ids": batch["ids"].clone(),
                    "targets": tuple(t.clone() for t in batch["targets"])})
    assert len(got) == len(expected)
    for mine, theirs in zip(got, expected):
        assert torch.equal(mine["clips"], theirs["clips"]) and torch.equal(mine["ids"], theirs["ids"])
        assert all(torch.equal(a, b) and a.dtype == b.dtype for a, b in zip(mine["targets"], theirs["targets"]))
        assert mine["note"] == theirs["note"] and isinstance(mine["targets"], tuple) and mine["pid"] != theirs["pid"]
    in_slots = buffers[1:-1]  # the first sized the ring; the last did not fit it
    assert len(set(in_slots)) <= loader.depth + 1 < len(in_slots)
    assert buffers[-1] not in in_slots
    assert _ring_folders() == before


@pytest.mark.slow  # spawns two Python processes
def test_an_open_loader_keeps_its_processes_and_slots_for_every_map_until_closed(clip_store, loader_tasks):
    """A training run's epochs: one pool and one ring; an epoch stopped early, or failed, hands its slots back."""
    load = loader_tasks.LabelledClips(clip_store, fail_on=23)
    specs = epoch_specs(seed=4, batch=4)[:-1]  # 6 batches: more than the ring's slots
    expected = [load(ids)["note"] for ids in specs if 23 not in ids]
    before = _ring_folders()
    with ClipLoader(load, 2, depth=2, kind="process") as loader:
        first = loader.map([ids for ids in specs if 23 not in ids])
        got_first = [next(first)["note"], next(first)["note"]]
        first.close()  # stopped early, holding a batch with more in flight
        pids, notes = set(), []
        for _ in range(2):  # two whole epochs after it
            for batch in loader.map([ids for ids in specs if 23 not in ids]):
                notes.append(batch["note"])
                pids.add(batch["pid"])
            assert len(_ring_folders() - before) == 1  # the ring stays between epochs
        with pytest.raises(ValueError, match="clip 23 is unreadable"):
            list(loader.map(specs))  # a failed epoch
        again = [batch["note"] for batch in loader.map([ids for ids in specs if 23 not in ids])]
    assert got_first == expected[:2] and notes == expected * 2 and again == expected
    assert len(pids) <= 2  # the same two processes served every epoch
    assert _ring_folders() == before  # closed: slots removed


@pytest.mark.slow  # spawns two Python processes
def test_an_exception_in_a_process_load_reaches_the_caller_and_the_slots_are_removed(clip_store, loader_tasks):
    specs = [np.array(ids) for ids in ([0, 1, 2], [3, 4], [9, 10], [5, 6], [7, 8], [11, 12])]
    failing = 3  # the batch with clip 5: the three before it come through the slots first
    before = _ring_folders()
    got = []
    with pytest.raises(ValueError, match="^clips.zarr: clip 5 is unreadable$"):
        for batch in ClipLoader(loader_tasks.LabelledClips(clip_store, fail_on=5), 2, kind="process").map(specs):
            got.append(batch["note"])
    assert got == [ids.tolist() for ids in specs[:failing]]
    assert _ring_folders() == before


def test_loading_draws_no_random_numbers(clip_store):
    """A resumed run must draw what an uninterrupted one draws: the loader leaves every global RNG as it was."""
    from condi_pipe.compute.training_state import rng_state

    np.random.seed(5)
    torch.manual_seed(5)
    before = rng_state()
    list(ClipLoader(ClipReader(clip_store), 3).map(epoch_specs()))
    after = rng_state()
    assert torch.equal(before["torch"], after["torch"]) and torch.equal(before["numpy"]["keys"], after["numpy"]["keys"])
    assert before["numpy"]["pos"] == after["numpy"]["pos"] and before["python"] == after["python"]


class Instrumented:
    """A load that records how many loads run at once, and for each started spec how many batches the consumer
    had already taken (``taken`` is set by the test as it consumes)."""

    def __init__(self, seconds: float = 0.01) -> None:
        self.lock = threading.Lock()
        self.running = self.most_running = self.taken = 0
        self.ahead: list[int] = []  # spec index - batches taken, at each load's start
        self.seconds = seconds

    def __call__(self, index: int) -> int:
        with self.lock:
            self.running += 1
            self.most_running = max(self.most_running, self.running)
            self.ahead.append(index - self.taken)
        time.sleep(self.seconds)
        with self.lock:
            self.running -= 1
        return index


@pytest.mark.parametrize("workers, depth", [(1, 1), (2, 2), (2, 5), (3, 4)])
def test_at_most_depth_batches_are_ahead_and_at_most_workers_load_at_once(workers, depth):
    load = Instrumented()
    got = []
    for index in ClipLoader(load, workers, depth).map(range(20)):
        got.append(index)
        time.sleep(0.02)  # a slow consumer: the loader would run far ahead if it were unbounded
        load.taken += 1
    assert got == list(range(20))
    assert load.most_running <= workers
    assert max(load.ahead) == depth  # the spec ``depth`` past the last one taken starts, and none further
    if workers > 1:
        assert load.most_running > 1  # the workers do run at once


def test_an_exception_in_a_load_reaches_the_caller_after_the_batches_before_it():
    def load(index: int) -> int:
        if index == 3:
            raise ValueError("clips.zarr: shard 3 is truncated")
        return index

    got = []
    with pytest.raises(ValueError, match="^clips.zarr: shard 3 is truncated$"):
        for index in ClipLoader(load, 2).map(range(8)):
            got.append(index)
    assert got == [0, 1, 2]
    assert not _loader_threads()


def _loader_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith(THREAD_NAME_PREFIX)]


class GatedLoad:
    """A load that records when each spec starts and ends, and ends only once that spec's gate is open, so the
    test, not the scheduler, decides which loads are running and which are still queued. A gate left shut past
    ``timeout`` fails the load (a bounded failure, never a hang); open gates never wait."""

    def __init__(self, timeout: float = 30.0) -> None:
        self.timeout = timeout
        self.lock = threading.Lock()
        self.started: list[int] = []
        self.finished: list[int] = []
        self.threads: set[str] = set()
        self.starts: dict[int, threading.Event] = {}
        self.gates: dict[int, threading.Event] = {}

    def _event(self, events: dict[int, threading.Event], index: int) -> threading.Event:
        with self.lock:
            return events.setdefault(index, threading.Event())

    def open(self, *indices: int) -> None:
        for index in indices:
            self._event(self.gates, index).set()

    def wait_started(self, index: int) -> None:
        assert self._event(self.starts, index).wait(self.timeout), f"load {index} never started"

    def __call__(self, index: int) -> int:
        with self.lock:
            self.started.append(index)
            self.threads.add(threading.current_thread().name)
        self._event(self.starts, index).set()
        if not self._event(self.gates, index).wait(self.timeout):
            raise TimeoutError(f"load {index}: its gate stayed shut")
        with self.lock:
            self.finished.append(index)
        return index


class FutureWatchingLoader(ClipLoader):
    """ClipLoader that keeps each spec's future (test-only view of ``_submit``), so the test can act on a queued
    batch's cancellation as it happens instead of sleeping."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.futures: dict[int, Future] = {}

    def _submit(self, pool, spec, ring):
        future, slot = super()._submit(pool, spec, ring)
        self.futures[spec] = future
        return future, slot


def test_closing_the_generator_early_stops_its_workers():
    load = GatedLoad()
    load.open(0, 1)
    loader = FutureWatchingLoader(load, 2, depth=3)
    batches = loader.map(range(100))
    assert [next(batches), next(batches)] == [0, 1]
    # Handing over batch 1 topped the queue up to depth 3 past it: specs 2 and 3 occupy both workers (their gates
    # shut) and spec 4 waits in the pool's queue, unstarted. Wait for that state rather than for time to pass.
    load.wait_started(2)
    load.wait_started(3)
    assert sorted(loader.futures) == [0, 1, 2, 3, 4] and sorted(load.started) == [0, 1, 2, 3]
    assert _loader_threads()
    # The running loads may end only once close has cancelled the queued one: closing must cancel spec 4 first,
    # and then wait for 2 and 3, which the cancellation releases (a close that does not cancel fails the gates'
    # timeout with spec 4 started).
    loader.futures[4].add_done_callback(lambda future: load.open(2, 3))
    batches.close()
    assert loader.futures[4].cancelled()
    assert sorted(load.finished) == [0, 1, 2, 3]  # the running loads were waited for: none is still running
    assert sorted(load.started) == [0, 1, 2, 3]  # the queued spec never started, and none was submitted past depth
    assert sorted(loader.futures) == [0, 1, 2, 3, 4]
    # Every load ran on a loader thread, and none of them is left: nothing can start a load after close.
    assert load.threads and all(name.startswith(THREAD_NAME_PREFIX) for name in load.threads)
    assert not _loader_threads()


def test_bad_settings_are_refused_and_the_default_is_one_worker_on_a_cpu():
    for kwargs, message in (({"workers": 0}, "workers must be >= 1"), ({"depth": 0}, "depth must be >= 1"),
                            ({"kind": "fibre"}, "kind must be one of thread, process")):
        with pytest.raises(ValueError, match=message):
            ClipLoader(lambda spec: spec, **kwargs)
    with pytest.raises(ValueError, match="^loader_workers must be >= 1, got 0$"):
        TrainOptions(1, 8, 0.1, loader_workers=0)
    assert default_loader_workers("cpu", cores=16) == 1
    assert default_loader_workers("cuda", cores=16) == 4


@pytest.mark.skipif(not torch.cuda.is_available(), reason="page-locked memory needs CUDA")
def test_batches_for_a_gpu_are_pinned(clip_store):
    specs = epoch_specs()
    for batch in ClipLoader(lambda ids: (ClipReader(clip_store)(ids), ids.tolist()), 2, pin_memory=True).map(specs):
        assert batch[0].is_pinned() and isinstance(batch[1], list)


@pytest.mark.parametrize("loss", ["condi-sr", "uniform-k"])  # clip batches; video batches (K clips per video)
def test_a_distill_run_with_two_loader_workers_ends_with_the_bytes_of_one(synth_teacher_store, tmp_path, loss):
    """One worker is a thread running the task's load; two are processes reading the clips (``batch_loader``)."""
    from condi_pipe.stages.distill import DistillRequest, LossOptions, distill

    results = {}
    for workers in (1, 2):
        store_dir = tmp_path / f"workers{workers}"
        shutil.copytree(synth_teacher_store, store_dir)
        train = TrainOptions(2, 4, 0.1, seed=1, val_fraction=0, loader_workers=workers)
        request = DistillRequest(loss, "shufflenetv2_3d", "resnet10_3d_small", 0.25, name="run",
                                 losses=LossOptions(k=2), train=train, clips_per_video=1,
                                 runtime=RuntimeOptions(threads=1))
        distill(Store(str(store_dir)), request, quiet=True, log=lambda message: None)
        history = pq.read_table(store_dir / "students" / "run" / "history.parquet").to_pydict()
        results[workers] = ((store_dir / "students" / "run" / "weights.pt").read_bytes(), history)
    (weights_1, history_1), (weights_2, history_2) = results[1], results[2]
    assert weights_1 == weights_2
    assert history_1.keys() == history_2.keys() and len(history_1["epoch"]) == 2
    for column in history_1:
        if not column.endswith("_seconds"):  # measured times differ; every other value is equal (NaN too)
            np.testing.assert_array_equal(history_1[column], history_2[column], err_msg=column)


def test_the_worked_examples_run():
    import doctest

    from condi_pipe.compute import clip_loader

    results = doctest.testmod(clip_loader)
    assert results.attempted >= 3 and results.failed == 0


def test_a_batch_laid_out_in_a_slot_reads_back_as_views_and_bfloat16_is_left_to_pickling():
    """The slot layout a process worker writes and the caller reads (no processes needed to check it)."""
    from condi_pipe.compute.clip_loader import _from_slot, _slot_layout, _slot_view

    batch = {"clips": torch.arange(30, dtype=torch.uint8).reshape(2, 3, 5), "rest": (torch.tensor([1.5, -2.0]),
             [torch.tensor([True, False, True]), "kept"], 7)}
    layout, size, copies = _slot_layout(batch)
    assert size == 64 * 3 and [place.offset for _, place in copies] == [0, 64, 128]  # 64-byte aligned, in order
    slot = np.zeros(size, np.uint8)
    for tensor, place in copies:
        _slot_view(slot, place)[...] = tensor.numpy()
    back = _from_slot(layout, slot)
    assert torch.equal(back["clips"], batch["clips"]) and torch.equal(back["rest"][0], batch["rest"][0])
    assert torch.equal(back["rest"][1][0], batch["rest"][1][0]) and back["rest"][1][1:] == ["kept"]
    assert back["rest"][2] == 7 and isinstance(back["rest"], tuple) and isinstance(back["rest"][1], list)
    slot[0] = 99  # views of the slot, not copies
    assert int(back["clips"][0, 0, 0]) == 99
    assert _slot_layout((torch.ones(2), torch.ones(2, dtype=torch.bfloat16)))[1] == -1


def test_training_reads_with_processes_only_when_several_workers_can_share_the_store(clip_store):
    from condi_pipe.compute.training import batch_loader

    class ClipTask:
        def clip_ids_of(self, spec):
            return spec

    class OpaqueTask:  # its load_batch cannot be split into clips and targets
        pass

    cpu = torch.device("cpu")
    assert batch_loader(ClipTask(), Store(clip_store), 2, cpu).kind == "process"
    assert batch_loader(ClipTask(), Store(clip_store), 1, cpu).kind == "thread"
    assert batch_loader(OpaqueTask(), Store(clip_store), 2, cpu).kind == "thread"
    assert batch_loader(ClipTask(), Store("memory://loader-test"), 2, cpu).kind == "thread"


def _no_room(fd, offset, length):
    raise OSError(errno.ENOSPC, "No space left on device")


def test_slots_go_to_the_temporary_folder_when_shared_memory_has_no_room(monkeypatch, tmp_path):
    """A full /dev/shm (64 MB in many containers) fails when the space is reserved, not later with SIGBUS."""
    import os as os_module

    from condi_pipe.compute import clip_loader

    reserve = os_module.posix_fallocate
    full = str(tmp_path / "shm")
    os_module.makedirs(full)

    def fallocate(fd, offset, length):
        if os_module.readlink(f"/proc/self/fd/{fd}").startswith(full):
            raise OSError(errno.ENOSPC, "No space left on device")
        return reserve(fd, offset, length)

    monkeypatch.setattr(clip_loader, "SHARED_MEMORY_DIR", full)
    monkeypatch.setattr(os_module, "posix_fallocate", fallocate)
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))
    os_module.makedirs(tmp_path / "tmp")
    ring = clip_loader.SlotRing(3, 1000)
    assert ring.folder.startswith(str(tmp_path / "tmp")) and len(ring.maps) == 3 and len(ring.maps[0]) == 1000
    assert os_module.listdir(full) == []  # the failed attempt left nothing behind
    ring.close()
    assert os_module.listdir(tmp_path / "tmp") == []
    monkeypatch.setattr(os_module, "posix_fallocate", _no_room)
    with pytest.raises(OSError, match="no room for 3 loader slots of 1000 bytes"):
        clip_loader.SlotRing(3, 1000)


@pytest.mark.slow  # spawns two Python processes
def test_without_room_for_slots_process_batches_come_back_pickled(clip_store, loader_tasks, monkeypatch):
    import os as os_module

    monkeypatch.setattr(os_module, "posix_fallocate", _no_room)
    load = loader_tasks.LabelledClips(clip_store)
    specs = epoch_specs(seed=5, batch=6)
    with pytest.warns(RuntimeWarning, match="batches are passed pickled"):
        got = [batch["clips"].clone() for batch in ClipLoader(load, 2, kind="process").map(specs)]
    assert len(got) == len(specs) and all(torch.equal(a, load(ids)["clips"]) for a, ids in zip(got, specs))
