"""Shared pytest fixtures, in sections by topic. Tests run with ``--import-mode=importlib``, so shared helpers
live here as fixtures rather than in an importable module.

The suite runs on pytest-xdist workers (``addopts`` in pyproject.toml), a test file to a worker. The expensive
session fixtures below are built once per run, not once per worker: :func:`shared_folder` builds them in a folder
every worker of the run sees, under a file lock."""

from __future__ import annotations

import fcntl
import os
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from condi_pipe.video.ffmpeg_binary import ffmpeg_exe

# Before any test process loads torch's OpenMP runtime (xdist workers, CLI and Dask processes inherit it): with
# two workers' thread pools on two cores, OpenMP threads spinning while they wait for a core held by the other
# worker doubled the suite's CPU time (measured: 26.8 user-minutes spinning, 14.0 sleeping; 16.7 -> 9.4 minutes).
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


def pytest_collection_modifyitems(config, items) -> None:
    """Files with slow end-to-end tests first, the system tier leading: xdist hands out whole files in this
    order, so the long files start early and the many short unit files fill the workers' gaps at the end
    (a long file handed out last leaves the other worker idle for its whole length)."""
    slow = {item.path for item in items if item.get_closest_marker("slow")}
    system = Path(__file__).parent / "system"

    def order(item) -> tuple[bool, bool]:
        return item.path not in slow, system not in item.path.parents

    items.sort(key=order)  # stable: tests keep their order within a file

# ---------------------------------------------------------------------------------------------------------
# Running the CLI in a new process, and comparing stores byte for byte.
# ---------------------------------------------------------------------------------------------------------


def _run_cli(*args: str, env: dict | None = None, timeout: int = 600) -> subprocess.CompletedProcess:
    import sys

    return subprocess.run([sys.executable, "-m", "condi_pipe.cli", *args], env={**os.environ, **(env or {})},
                          capture_output=True, text=True, timeout=timeout)


def _fingerprint(folder: Path) -> dict[str, str]:
    import hashlib

    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def _run_folder(tmp_path_factory) -> Path:
    """The folder this test run's workers share: the run's base temporary folder (under xdist each worker's own
    base is a folder inside it)."""
    base = tmp_path_factory.getbasetemp()
    return base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base


def shared_folder(tmp_path_factory, name: str, build: Callable[[Path], None]) -> Path:
    """``<run folder>/shared/<name>``, made by ``build(folder)`` once per test run: the first worker to ask builds
    it while holding the folder's lock, the others wait for it and reuse it. Fixtures built this way are read-only
    for tests (they copy before writing), as they are without workers."""
    root = _run_folder(tmp_path_factory) / "shared"
    root.mkdir(exist_ok=True)
    folder, done = root / name, root / f"{name}.done"
    with open(root / f"{name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes
        if not done.exists():
            shutil.rmtree(folder, ignore_errors=True)  # a build that failed in another worker
            folder.mkdir()
            build(folder)
            done.touch()
    return folder


@pytest.fixture(scope="session")
def build_once(tmp_path_factory):
    """``build_once(name, build) -> Path``: :func:`shared_folder` for the conftests below this one."""
    return lambda name, build: shared_folder(tmp_path_factory, name, build)


@pytest.fixture(scope="session", autouse=True)
def machine_runtime_cache(tmp_path_factory):
    """This session's cache of runtime choices (``storage.runtime_choices``), in place of the user's: every store
    the tests make computes a model in one runtime, and nothing outside the session is read or written. Set in
    the environment, so CLI processes and Dask workers started by the tests share it."""
    from condi_pipe.storage.runtime_choices import MACHINE_CACHE_ENV

    # one cache for every worker of the run, so that stores built by one worker are computed in the runtime the
    # others choose (the cache's first writer wins, see storage.runtime_choices)
    folder = _run_folder(tmp_path_factory) / "runtime_choices"
    folder.mkdir(exist_ok=True)
    previous = os.environ.get(MACHINE_CACHE_ENV)
    os.environ[MACHINE_CACHE_ENV] = str(folder)
    yield folder
    if previous is None:
        os.environ.pop(MACHINE_CACHE_ENV, None)
    else:
        os.environ[MACHINE_CACHE_ENV] = previous


@pytest.fixture(scope="session")
def run_cli():
    """``run_cli(*args, env=None)``: ``condi-pipe ARGS`` in a new process (``env`` overlays the environment,
    e.g. a fault point); a CompletedProcess with text output."""
    return _run_cli


@pytest.fixture(scope="session")
def fingerprint():
    """``fingerprint(folder)``: {relative path: sha256} of every file under ``folder``."""
    return _fingerprint


# ---------------------------------------------------------------------------------------------------------
# Video fixtures: the real files in ../shared/media and tiny synthetic videos made with the bundled ffmpeg.
# ---------------------------------------------------------------------------------------------------------

MEDIA_DIR = Path(__file__).resolve().parents[1].parent / "shared" / "media"


@pytest.fixture(scope="session")
def media_dir() -> Path:
    """The real test videos (CI always checks out ../shared beside the repository)."""
    assert (MEDIA_DIR / "README.md").is_file(), f"{MEDIA_DIR}: shared test media not found"
    return MEDIA_DIR


@pytest.fixture(scope="session")
def ffmpeg_video(tmp_path_factory):
    """Factory ``ffmpeg_video(name, *args) -> Path``: run ``ffmpeg <args> <out>`` once per session.

    ``name`` is the output file name (its extension picks the container); the same name returns the cached file,
    so tests sharing a synthetic video encode it only once.
    """
    folder = tmp_path_factory.mktemp("ffmpeg_videos")
    made: dict[str, tuple[tuple[str, ...], Path]] = {}

    def make(name: str, *args: str) -> Path:
        if name in made:
            cached_args, cached = made[name]
            assert cached_args == args, f"{name} was already made with other ffmpeg arguments"
            return cached
        out = folder / name
        cmd = [ffmpeg_exe(), "-hide_banner", "-loglevel", "error", "-nostdin", "-y", *args, str(out)]
        proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
        assert proc.returncode == 0 and out.stat().st_size > 0, f"ffmpeg failed: {cmd}\n{proc.stderr}"
        made[name] = (args, out)
        return out

    return make


TESTSRC_FRAMES = 20


@pytest.fixture(scope="session")
def tiny_videos(ffmpeg_video) -> dict[str, Path]:
    """Tiny real videos (64x48 testsrc, 25 fps, 20 frames) per extension, in the codecs datasets use:
    ``.mp4`` H.264 (Kinetics), ``.avi`` XviD MPEG-4 (UCF-101, HMDB-51), ``.webm`` VP9 (Something-Something V2)."""
    src = ("-f", "lavfi", "-i", "testsrc=size=64x48:rate=25", "-frames:v", str(TESTSRC_FRAMES), "-pix_fmt", "yuv420p")
    return {
        ".mp4": ffmpeg_video("tiny.mp4", *src, "-c:v", "libx264"),
        ".avi": ffmpeg_video("tiny.avi", *src, "-c:v", "mpeg4", "-vtag", "XVID"),
        ".webm": ffmpeg_video("tiny.webm", *src, "-c:v", "libvpx-vp9", "-deadline", "realtime", "-cpu-used", "8"),
    }


# ---------------------------------------------------------------------------------------------------------
# Store fixtures: a small embedded-benchmark dataset, extracted once per session. Tests that modify a store
# copy it first (``shutil.copytree``).
# ---------------------------------------------------------------------------------------------------------

SYNTH_VIDEOS = 20


@pytest.fixture(scope="session")
def synth_root(tmp_path_factory) -> Path:
    """20 embedded-benchmark videos (2 per class, real H.264 files in the UCF-101 layout)."""
    from condi_pipe.video.synth import generate_benchmark

    def build(folder: Path) -> None:
        generate_benchmark(folder / "data", videos=SYNTH_VIDEOS, seed=7)

    return shared_folder(tmp_path_factory, "synth", build) / "data"


@pytest.fixture(scope="session")
def synth_store(synth_root, tmp_path_factory) -> Path:
    """``synth_root`` extracted into a store (in-process, 8 clips per shard)."""
    from condi_pipe.pipeline.executor import ExecutorOptions
    from condi_pipe.stages.extract import ExtractRequest, extract
    from condi_pipe.storage.store import Store

    def build(folder: Path) -> None:
        extract(Store(str(folder / "store")), ExtractRequest("ucf101", str(synth_root), clips_per_shard=8),
                ExecutorOptions(workers=0), quiet=True, log=lambda message: None)

    return shared_folder(tmp_path_factory, "synth_store", build) / "store"


@pytest.fixture(scope="session")
def synth_teacher_store(synth_store, tmp_path_factory) -> Path:
    """``synth_store`` plus a random-init ``resnet10_3d_small`` teacher cache (z has both values on the eval
    split). Shared: tests copy it before writing."""
    from condi_pipe.compute.clip_inference import ModelRef
    from condi_pipe.compute.torch_runtime import RuntimeOptions
    from condi_pipe.pipeline.executor import ExecutorOptions
    from condi_pipe.stages.teacher_cache import TeacherCacheRequest, teacher_cache
    from condi_pipe.storage.store import Store

    def build(folder: Path) -> None:
        shutil.copytree(synth_store, folder / "store")
        request = TeacherCacheRequest(ModelRef("resnet10_3d_small", 10), RuntimeOptions(threads=2),
                                      clips_per_group=64)
        teacher_cache(Store(str(folder / "store")), request, ExecutorOptions(workers=0), quiet=True,
                      log=lambda message: None)

    return shared_folder(tmp_path_factory, "synth_teacher", build) / "store"


def _distill_and_score(store_dir: Path, run: str, loss: str) -> None:
    """One-epoch ``shufflenetv2_3d`` (width 0.25) student ``run`` of ``loss`` from the ``resnet10_3d_small``
    cache (K = 2, seed 2, one clip per video), then scored in-process in groups of 20 clips."""
    from condi_pipe.compute.torch_runtime import RuntimeOptions
    from condi_pipe.compute.training import TrainOptions
    from condi_pipe.pipeline.executor import ExecutorOptions
    from condi_pipe.stages.distill import DistillRequest, LossOptions, distill
    from condi_pipe.stages.score import ScoreRequest, score
    from condi_pipe.storage.store import Store

    store = Store(str(store_dir))
    quiet = dict(quiet=True, log=lambda message: None)
    request = DistillRequest(loss, "shufflenetv2_3d", "resnet10_3d_small", 0.25, name=run, losses=LossOptions(k=2),
                             train=TrainOptions(1, 8, 0.1, seed=2), clips_per_video=1,
                             runtime=RuntimeOptions(threads=2))
    distill(store, request, **quiet)
    score(store, ScoreRequest(run, RuntimeOptions(threads=2), clips_per_group=20), ExecutorOptions(workers=0), **quiet)


@pytest.fixture(scope="session")
def distill_and_score():
    """``distill_and_score(store_dir, run, loss)``: add one scored student to a store, made exactly like the
    students of ``synth_scored_store`` (so a module can add its own runs to a copy of it)."""
    return _distill_and_score


SCORED_RUNS = {"conf": "condi-sr", "ent": "st-ent"}


@pytest.fixture(scope="session")
def synth_scored_store(synth_teacher_store, tmp_path_factory) -> Path:
    """``synth_teacher_store`` plus two one-epoch students scored on the eval split (``distill_and_score``):
    ``conf`` (condi-sr, confidence ranking) and ``ent`` (st-ent, entropy ranking). Shared: tests copy it before
    writing."""
    def build(folder: Path) -> None:
        shutil.copytree(synth_teacher_store, folder / "store")
        for run, loss in SCORED_RUNS.items():
            _distill_and_score(folder / "store", run, loss)

    return shared_folder(tmp_path_factory, "synth_scored", build) / "store"


VALIDATION_VIDEOS = 40


@pytest.fixture(scope="session")
def validation_teacher_store(tmp_path_factory) -> Path:
    """40 embedded-benchmark videos (4 groups per class: 3 train, 1 test; seed 7, so its first 20 videos are
    ``synth_root``'s) extracted, with a random-init ``resnet10_3d_small`` teacher cache. Unlike ``synth_store``
    its train split has several groups per class, so the default validation carve (``pipeline.splits``) takes one
    group of each class: 20 fit, 10 validation and 10 test videos. Shared: tests copy it before writing."""
    from condi_pipe.compute.clip_inference import ModelRef
    from condi_pipe.compute.torch_runtime import RuntimeOptions
    from condi_pipe.pipeline.executor import ExecutorOptions
    from condi_pipe.stages.extract import ExtractRequest, extract
    from condi_pipe.stages.teacher_cache import TeacherCacheRequest, teacher_cache
    from condi_pipe.storage.store import Store
    from condi_pipe.video.synth import generate_benchmark

    def build(folder: Path) -> None:
        generate_benchmark(folder / "data", videos=VALIDATION_VIDEOS, seed=7)
        store = Store(str(folder / "store"))
        quiet = dict(quiet=True, log=lambda message: None)
        extract(store, ExtractRequest("ucf101", str(folder / "data"), clips_per_shard=8), ExecutorOptions(workers=0),
                **quiet)
        request = TeacherCacheRequest(ModelRef("resnet10_3d_small", 10), RuntimeOptions(threads=2),
                                      clips_per_group=64)
        teacher_cache(store, request, ExecutorOptions(workers=0), **quiet)

    return shared_folder(tmp_path_factory, "validation_store", build) / "store"


# ---------------------------------------------------------------------------------------------------------
# A real Dask cluster: `dask scheduler` and two `dask worker` processes on 127.0.0.1.
# ---------------------------------------------------------------------------------------------------------


WORKER_DASK_CONFIG = """\
distributed:
  nanny:
    pre-spawn-environ:
      MALLOC_TRIM_THRESHOLD_: null
"""


class DaskProcesses:
    """A ``dask scheduler`` and ``dask worker`` processes on 127.0.0.1, started as separate OS processes.

    ``workers`` lists one environment overlay per worker (``None``: the plain environment). A worker with an
    overlay runs without a nanny, so a worker that kills itself stays dead instead of being restarted.
    ``worker_args``: extra ``dask worker`` arguments per worker (e.g. ``["--resources", "GPU=1"]``).
    """

    def __init__(self, folder: Path, workers: list[dict | None], worker_args: list[list[str]] | None = None) -> None:
        import json
        import os
        import sys
        import time

        from distributed import Client

        bindir = Path(sys.executable).parent
        scheduler_file = folder / "scheduler.json"
        # The README's recipe for a cluster started outside the pipeline: a Dask config file that stops the nanny
        # setting MALLOC_TRIM_THRESHOLD_ in its worker (a setting that slows every forward pass there).
        (folder / "dask-config").mkdir()
        (folder / "dask-config" / "condi-pipe.yaml").write_text(WORKER_DASK_CONFIG)
        os_env = {**os.environ, "DASK_CONFIG": str(folder / "dask-config")}
        quiet = dict(stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.scheduler = subprocess.Popen([str(bindir / "dask"), "scheduler", "--host", "127.0.0.1", "--port", "0",
                                           "--no-dashboard", "--scheduler-file", str(scheduler_file)], **quiet)
        self.workers: list[subprocess.Popen] = []
        try:
            deadline = time.time() + 60
            while not scheduler_file.exists() and time.time() < deadline:
                time.sleep(0.2)
            self.address = json.loads(scheduler_file.read_text())["address"]
            for env, args in zip(workers, worker_args or [[] for _ in workers]):
                cmd = [str(bindir / "dask"), "worker", self.address, "--nthreads", "1", "--no-dashboard",
                       "--host", "127.0.0.1", *args] + (["--no-nanny"] if env else [])
                self.workers.append(subprocess.Popen(cmd, env={**os_env, **(env or {})}, **quiet))
            with Client(self.address, timeout=60) as client:
                client.wait_for_workers(len(workers), timeout=60)
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        # Workers first, while their scheduler still answers (a worker whose scheduler is gone can spend minutes
        # trying to reconnect before it exits); anything still running after 30 s is killed.
        for group in (list(reversed(self.workers)), [self.scheduler]):
            for proc in group:
                if proc.poll() is None:
                    proc.terminate()
            for proc in group:
                try:
                    proc.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait(timeout=30)


@pytest.fixture(scope="session")
def start_dask_cluster(tmp_path_factory):
    """Factory ``start_dask_cluster(workers, worker_args=None) -> DaskProcesses`` (closed at the end of the session)."""
    started: list[DaskProcesses] = []

    def start(workers: list[dict | None], worker_args: list[list[str]] | None = None) -> DaskProcesses:
        started.append(DaskProcesses(tmp_path_factory.mktemp("dask"), workers, worker_args))
        return started[-1]

    yield start
    for cluster in started:
        cluster.close()


@pytest.fixture(scope="session")
def dask_cluster(start_dask_cluster):
    """Address of a scheduler with two single-thread workers, started as separate processes."""
    return start_dask_cluster([None, None]).address
