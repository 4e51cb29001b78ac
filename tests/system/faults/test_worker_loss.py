"""A Dask worker killed mid-task: each parallel stage, run through an existing cluster (a real ``dask scheduler``
and two ``dask worker`` processes) whose second worker SIGKILLs itself between computing a task's result and
staging it, still completes, and its outputs equal the uninterrupted in-process run's: nothing lost, nothing
duplicated."""

from __future__ import annotations

import shutil
import signal

import pytest

from condi_pipe.app.verify import verify_store
from condi_pipe.pipeline.faults import KILL_ENV, WORKER_TASK
from condi_pipe.pipeline.stage import ensure_store

pytestmark = pytest.mark.slow


@pytest.fixture
def own_dask_cluster(start_dask_cluster):
    """``start_dask_cluster`` for this test alone: its clusters are closed when the test ends (an idle cluster left
    for the rest of the session would keep taking CPU from the tests after it)."""
    started = []

    def start(*args, **kwargs):
        started.append(start_dask_cluster(*args, **kwargs))
        return started[-1]

    yield start
    for cluster in started:
        cluster.close()


@pytest.fixture
def cluster_losing_a_worker(own_dask_cluster):
    """A healthy worker and one that dies on its ``n``-th task (no nanny, so it stays dead)."""

    def start(n: int = 1):
        return own_dask_cluster([None, {KILL_ENV: f"{WORKER_TASK}:{n}"}])

    return start


def _assert_worker_was_killed(cluster) -> None:
    lost = cluster.workers[1]
    assert lost.wait(timeout=60) == -signal.SIGKILL, "the faulty worker never ran a task"
    assert cluster.workers[0].poll() is None  # the healthy worker is still serving


def _same_files(ours, reference, fingerprint, under: str) -> None:
    mine = fingerprint(ours / under)
    assert mine, f"{ours / under} is empty"
    assert mine == fingerprint(reference / under)


def test_extract_survives_a_killed_worker(cluster_losing_a_worker, corpus_root, pipeline_store, tmp_path, invoke_cli,
                                          fingerprint):
    cluster = cluster_losing_a_worker(2)
    store = tmp_path / "store"
    result = invoke_cli("extract", "--source", "ucf101", "--root", str(corpus_root), "--clips-per-shard", "8",
                        "--store", str(store), "--scheduler-address", cluster.address, "--quiet")
    assert result.exit_code == 0, (result.output, result.exception)
    _assert_worker_was_killed(cluster)
    _same_files(store, pipeline_store, fingerprint, "clips.zarr")
    for table in ("videos.parquet", "clips.parquet", "failures.parquet"):
        assert fingerprint(store)[table] == fingerprint(pipeline_store)[table], table
    assert not (store / "staging").exists()
    assert verify_store(ensure_store(str(store))) == []  # what `condi-pipe verify` checks


# Stage arguments and the folder it writes; videos.parquet and meta.json hold measured times, so only the
# per-clip outputs are compared. The teacher cache is cheap_teacher_store's cheaper one (CHEAP_MODEL in conftest.py).
CHEAP_TEACHER = "resnet10_3d_motion_skim"
MODEL_STAGES = {
    "teacher-cache": (("--teacher", CHEAP_TEACHER, "--random-init", "--clips-per-group", "16"),
                      f"teacher/{CHEAP_TEACHER}", ("clips.parquet", "logits.zarr", "features.zarr")),
    "score": (("--student", "conf", "--clips-per-group", "12"), "scores/conf", ("clips.parquet", "logits.zarr")),
}


@pytest.mark.parametrize("stage", sorted(MODEL_STAGES))
def test_model_stages_survive_a_killed_worker(stage, cluster_losing_a_worker, cheap_teacher_store, tmp_path,
                                              invoke_cli, fingerprint):
    args, folder, outputs = MODEL_STAGES[stage]
    store = tmp_path / "store"
    shutil.copytree(cheap_teacher_store, store)
    cluster = cluster_losing_a_worker(1)
    result = invoke_cli(stage, *args, "--threads", "1", "--force", "--store", str(store),
                        "--scheduler-address", cluster.address, "--quiet")
    assert result.exit_code == 0, (result.output, result.exception)
    _assert_worker_was_killed(cluster)
    for name in outputs:
        if name.endswith(".parquet"):
            assert fingerprint(store / folder)[name] == fingerprint(cheap_teacher_store / folder)[name], name
        else:
            _same_files(store, cheap_teacher_store, fingerprint, f"{folder}/{name}")
    assert not (store / "staging").exists()
    assert verify_store(ensure_store(str(store))) == []  # what `condi-pipe verify` checks


def test_gpu_tasks_run_only_on_workers_with_the_gpu_resource(own_dask_cluster, cheap_teacher_store, tmp_path,
                                                             fingerprint):
    """Teacher tasks for a CUDA device ask for ``GPU=1``: a worker started without that resource never gets one
    (here it would kill itself on its first task). On this CPU machine the tasks ask explicitly."""
    from condi_pipe.compute.clip_inference import ModelRef
    from condi_pipe.compute.torch_runtime import RuntimeOptions
    from condi_pipe.pipeline.executor import ExecutorOptions
    from condi_pipe.stages.teacher_cache import TeacherCacheRequest, teacher_cache
    from condi_pipe.storage.store import Store

    assert ExecutorOptions().for_device("cuda:1").resources == {"GPU": 1}
    assert ExecutorOptions().for_device("cpu").resources is None
    cluster = own_dask_cluster([{KILL_ENV: f"{WORKER_TASK}:1"}, None], [[], ["--resources", "GPU=1"]])
    store = tmp_path / "store"
    shutil.copytree(cheap_teacher_store, store)
    request = TeacherCacheRequest(ModelRef(CHEAP_TEACHER, 10), RuntimeOptions(threads=1), clips_per_group=16)
    options = ExecutorOptions(scheduler_address=cluster.address, resources={"GPU": 1})
    teacher_cache(Store(str(store)), request, options, force=True, quiet=True, log=lambda message: None)
    assert cluster.workers[0].poll() is None, "a task ran on the worker without a GPU"
    folder = f"teacher/{CHEAP_TEACHER}"
    assert fingerprint(store / folder / "logits.zarr") == fingerprint(cheap_teacher_store / folder / "logits.zarr")
