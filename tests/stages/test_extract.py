"""The extract stage end to end: real decoding into a real Zarr/Parquet store, resume, locks, bad input."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

from condi_pipe.cli import main as cli
from condi_pipe.pipeline.executor import ExecutorOptions
from condi_pipe.pipeline.stage import StageError
from condi_pipe.stages.extract import ExtractRequest, extract
from condi_pipe.storage.clip_array import open_clip_array
from condi_pipe.storage.lock import LOCK_FILE, StoreLockedError
from condi_pipe.storage.store import Store
from condi_pipe.video.decode import decode_video

MEDIA = Path(__file__).resolve().parents[2].parent / "shared" / "media"
INLINE = ExecutorOptions(workers=0)


def build_tree(root: Path, copies: int = 1) -> Path:
    """A folder-layout dataset of real files, with a zero-byte file and a text file named .mp4."""
    layout = {
        "Flip": ["av1_video.mkv", "test.avi"],
        "Spin": ["h265_video.mp4", "rotated_90.mov", "corrupted.mp4"],
    }
    for cls, names in layout.items():
        (root / cls).mkdir(parents=True, exist_ok=True)
        for name in names:
            for copy in range(copies):
                stem, ext = os.path.splitext(name)
                shutil.copy(MEDIA / name, root / cls / f"{stem}_{copy}{ext}")
    (root / "Flip" / "empty.mp4").write_bytes(b"")
    (root / "Spin" / "notes.mp4").write_text("this is not a video\n")
    return root


def fingerprint(store_dir: Path) -> dict[str, str]:
    """sha256 of every file in a store except run.json (it records times)."""
    out = {}
    for path in sorted(store_dir.rglob("*")):
        if path.is_file() and path.name != "run.json":
            out[str(path.relative_to(store_dir))] = hashlib.sha256(path.read_bytes()).hexdigest()
    return out


@pytest.fixture(scope="module")
def tree(tmp_path_factory) -> Path:
    return build_tree(tmp_path_factory.mktemp("data"))


@pytest.fixture(scope="module")
def reference_store(tree, tmp_path_factory) -> Path:
    """An uninterrupted in-process run, the baseline every other run must equal byte for byte."""
    out = tmp_path_factory.mktemp("ref") / "store"
    extract(Store(str(out)), ExtractRequest("folder", str(tree), clips_per_shard=4), INLINE, quiet=True, log=lambda m: None)
    return out


def test_store_holds_every_clip_and_manifest(tree, reference_store):
    store = Store(str(reference_store))
    videos = pq.read_table(reference_store / "videos.parquet").to_pylist()
    clips = pq.read_table(reference_store / "clips.parquet").to_pylist()
    by_path = {v["path"]: v for v in videos}
    expected_frames = {"Flip/av1_video_0.mkv": 125, "Flip/test_0.avi": 164, "Spin/corrupted_0.mp4": 49,
                       "Spin/h265_video_0.mp4": 10, "Spin/rotated_90_0.mov": 3}
    assert {p: v["frames"] for p, v in by_path.items()} == expected_frames
    for path, frames in expected_frames.items():
        assert by_path[path]["clips"] == -(-frames // 16)
        assert by_path[path]["pad_frames"] == by_path[path]["clips"] * 16 - frames
        assert by_path[path]["sha256"] == hashlib.sha256((tree / path).read_bytes()).hexdigest()
    assert [v["label_name"] for v in videos] == ["Flip", "Flip", "Spin", "Spin", "Spin"]
    assert [v["video_id"] for v in videos] == list(range(5))
    # Clip ids are contiguous in video order and each video's first_clip points at its clip 0.
    assert [c["clip_id"] for c in clips] == list(range(len(clips)))
    for v in videos:
        own = [c for c in clips if c["video_id"] == v["video_id"]]
        assert own[0]["clip_id"] == v["first_clip"] and [c["clip_index"] for c in own] == list(range(v["clips"]))
        assert sum(c["pad_frames"] for c in own) == v["pad_frames"]
    array = open_clip_array(store)
    assert array.shape == (len(clips), 16, 112, 112, 3) and array.dtype == np.uint8
    rotated = by_path["Spin/rotated_90_0.mov"]
    np.testing.assert_array_equal(array[rotated["first_clip"]], decode_video(tree / "Spin/rotated_90_0.mov").clips[0])
    assert rotated["width"] < rotated["height"]  # portrait once the rotation tag is applied


def test_failures_are_recorded_one_line_each(reference_store):
    failures = pq.read_table(reference_store / "failures.parquet").to_pylist()
    kinds = {(f["path"], f["severity"], f["kind"]) for f in failures}
    assert kinds == {
        ("Flip/empty.mp4", "error", "empty-file"),
        ("Spin/notes.mp4", "error", "invalid-data"),
        ("Spin/corrupted_0.mp4", "warning", "decoded-with-errors"),
    }
    for f in failures:
        assert "\n" not in f["message"] and f["path"].split("/")[-1] in f["message"] and f["stage"] == "extract"


def test_rerun_is_a_noop_and_force_redoes_it(tree, reference_store, tmp_path):
    out = tmp_path / "store"
    shutil.copytree(reference_store, out)
    before = fingerprint(out)
    messages = []
    summary = extract(Store(str(out)), ExtractRequest("folder", str(tree), clips_per_shard=4), INLINE,
                      quiet=True, log=messages.append)
    assert summary.skipped and "already done" in messages[0]
    assert fingerprint(out) == before
    (out / "videos.parquet").unlink()
    summary = extract(Store(str(out)), ExtractRequest("folder", str(tree), clips_per_shard=4), INLINE,
                      force=True, quiet=True, log=messages.append)
    assert not summary.skipped and fingerprint(out) == before


def test_changed_configuration_needs_force(tree, reference_store, tmp_path):
    out = tmp_path / "store"
    shutil.copytree(reference_store, out)
    with pytest.raises(StageError, match="different configuration.*clips_per_shard"):
        extract(Store(str(out)), ExtractRequest("folder", str(tree), clips_per_shard=8), INLINE, quiet=True,
                log=lambda m: None)


def test_local_dask_workers_write_the_same_bytes(tree, reference_store, tmp_path):
    out = tmp_path / "store"
    extract(Store(str(out)), ExtractRequest("folder", str(tree), clips_per_shard=4), ExecutorOptions(workers=2),
            quiet=True, log=lambda m: None)
    assert fingerprint(out) == fingerprint(reference_store)


@pytest.mark.parametrize("scheme", ["file", "memory"])
def test_fsspec_url_stores(tree, reference_store, tmp_path, scheme):
    import fsspec

    url = f"file://{tmp_path}/store" if scheme == "file" else f"memory://condi-test-{os.getpid()}/store"
    store = Store(url)
    extract(store, ExtractRequest("folder", str(tree), clips_per_shard=4), ExecutorOptions(workers=1),
            quiet=True, log=lambda m: None)
    fs = fsspec.filesystem(scheme)
    for name in ("videos.parquet", "clips.parquet", "failures.parquet"):
        assert fs.cat_file(store.path(name)) == (reference_store / name).read_bytes()
    np.testing.assert_array_equal(open_clip_array(store)[:], open_clip_array(Store(str(reference_store)))[:])


def test_strict_exits_nonzero_with_one_line(tree, tmp_path):
    result = CliRunner().invoke(cli, ["extract", "--source", "folder", "--root", str(tree), "--store",
                                      str(tmp_path / "s"), "--workers", "0", "--strict", "--quiet"])
    assert result.exit_code == 2
    assert result.stderr.strip().startswith("error:") and "--strict" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    # The work was kept: the failures do not lose the good videos.
    assert pq.read_table(tmp_path / "s" / "videos.parquet").num_rows == 5


def test_second_run_is_refused_while_a_live_process_holds_the_lock(tree, tmp_path):
    store_dir = tmp_path / "s"
    store_dir.mkdir()
    holder = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        (store_dir / LOCK_FILE).write_text(json.dumps({"pid": holder.pid, "host": socket.gethostname(),
                                                       "command": "extract"}))
        with pytest.raises(StoreLockedError, match=f"pid {holder.pid}"):
            extract(Store(str(store_dir)), ExtractRequest("folder", str(tree)), INLINE, quiet=True, log=lambda m: None)
    finally:
        holder.kill()
        holder.wait()
    # Now the holder is dead: the lock is stale and the run takes it over.
    messages = []
    extract(Store(str(store_dir)), ExtractRequest("folder", str(tree)), INLINE, quiet=True, log=messages.append)
    assert any("stale lock" in m for m in messages) and not (store_dir / LOCK_FILE).exists()


def _cli_extract(tree: Path, store: Path, *extra: str, env=None) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "condi_pipe.cli", "extract", "--source", "folder", "--root", str(tree),
           "--store", str(store), "--clips-per-shard", "4", "--quiet", *extra]
    return subprocess.run(cmd, env={**os.environ, **(env or {})}, capture_output=True, text=True, timeout=600)


@pytest.fixture(scope="module")
def doubled_tree_and_reference(tmp_path_factory) -> tuple[Path, Path]:
    """Two copies of every file (so kills land between videos) and their uninterrupted CLI extract."""
    folder = tmp_path_factory.mktemp("doubled")
    tree = build_tree(folder / "data", copies=2)
    assert _cli_extract(tree, folder / "reference", "--workers", "0").returncode == 0
    return tree, folder / "reference"


@pytest.mark.slow
# One kill per phase a resume starts from. Mid-decode (videos staged, none published) is the "partial" kill, as soon
# as the first video is staged; the extract.decoded fault point, in the same phase, is killed in
# tests/stages/test_extract_chunks.py.
@pytest.mark.parametrize("kill_at", ["partial", "extract.shard:2", "extract.tables:1", "extract.done:1"])
def test_sigkill_then_resume_gives_identical_store(doubled_tree_and_reference, tmp_path, kill_at):
    tree, reference = doubled_tree_and_reference
    entries = sum(1 for p in tree.rglob("*") if p.is_file())  # every file is decoded or recorded as a failure
    store = tmp_path / "store"
    staged = store / "staging" / "extract"
    if kill_at == "partial":
        # Killed as soon as the first decoded video is staged (at no fault point): polled, not timed, so a slow
        # machine moves the kill later but never before some work.
        proc = subprocess.Popen([sys.executable, "-m", "condi_pipe.cli", "extract", "--source", "folder", "--root",
                                 str(tree), "--store", str(store), "--clips-per-shard", "4", "--quiet",
                                 "--workers", "0"])
        deadline = time.monotonic() + 600
        while not any(staged.glob("*.json")) and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.005)
        proc.send_signal(signal.SIGKILL)
        assert proc.wait() == -signal.SIGKILL, "finished (or failed) before any video was staged"
        # Where it landed: some videos staged, not all, nothing published.
        assert 0 < len(list(staged.glob("*.json"))) < entries
        assert not (store / "videos.parquet").exists()
    else:
        killed = _cli_extract(tree, store, "--workers", "0", env={"CONDI_PIPE_KILL_AT": kill_at})
        assert killed.returncode == -signal.SIGKILL
    resumed = _cli_extract(tree, store, "--workers", "0")
    assert resumed.returncode == 0, resumed.stderr
    assert fingerprint(store) == fingerprint(reference)
    assert not (store / LOCK_FILE).exists() and not (store / "staging").exists()


@pytest.mark.slow
def test_existing_dask_cluster_gives_the_same_store(dask_cluster, tree, reference_store, tmp_path):
    result = _cli_extract(tree, tmp_path / "store", env={"DASK_SCHEDULER_ADDRESS": dask_cluster})
    assert result.returncode == 0, result.stderr
    assert fingerprint(tmp_path / "store") == fingerprint(reference_store)
