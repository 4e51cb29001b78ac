"""The Motion energy selection in the report: on a small store with a clip array of made-up frames and a teacher
cache, its rows equal the top K clips by motion energy computed here by hand (NumPy on each clip's frames, video
by video), its selection time is the motion arithmetic plus the ranking, and a store without clips omits it with
a note."""

from __future__ import annotations

import time

import numpy as np
import pyarrow as pa
import pytest
from click.testing import CliRunner

from condi_pipe.cli import main as cli
from condi_pipe.report import build_report, clip_motion
from condi_pipe.report.memory import MemoryInputs, build_table
from condi_pipe.storage import clip_outputs
from condi_pipe.storage.clip_array import CLIP_SHAPE, create_clip_array
from condi_pipe.storage.run_state import set_stage
from condi_pipe.storage.store import Store

TEACHER = "tiny_teacher"
CLASSES = 3


def softmax(logits):
    e = np.exp(logits - logits.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def made_up_clip(rng, moving_share: float) -> np.ndarray:
    """A still picture of which ``moving_share`` of the pixels take new values in every frame."""
    base = rng.integers(0, 256, CLIP_SHAPE[1:], dtype=np.uint8)
    frames = np.repeat(base[None], CLIP_SHAPE[0], axis=0)
    moving = rng.random((CLIP_SHAPE[0], *CLIP_SHAPE[1:3], 1)) < moving_share
    return np.where(moving, rng.integers(0, 256, CLIP_SHAPE, dtype=np.uint8), frames)


def build_store(folder, with_clips: bool = True):
    """7 test and 2 train videos of 1-5 clips, clip ids with gaps; the teacher is right on a clip only where it
    moves more than half of its video's clips (so the most moving clip is the right one to send)."""
    rng = np.random.default_rng(11)
    store = Store(str(folder))
    videos, clip_rows, logits, frames = [], [], [], {}
    next_id = 2
    for v in range(9):
        n = int(rng.integers(1, 6))
        label = int(rng.integers(CLASSES))
        split = "train" if v in (3, 7) else "test"
        shares = rng.permutation(np.linspace(0.05, 0.6, n)) if n > 1 else np.array([0.3])
        for i, share in enumerate(shares):
            clip_id = next_id + i
            frames[clip_id] = made_up_clip(rng, share)
            row = rng.normal(0, 0.5, CLASSES)
            right = share >= np.median(shares)
            row[label if right else (label + 1) % CLASSES] += 3.0
            logits.append(row)
            clip_rows.append((clip_id, 50 - v, split, label))
        videos.append((50 - v, split, n, float(rng.uniform(0.5, 2.0))))  # video ids against the clip order
        next_id += n + 2  # gaps: clip ids index the clip array, not the rows of the cache
    if with_clips:
        array = create_clip_array(store, next_id, clips_per_shard=4)
        for clip_id, clip in frames.items():
            array[clip_id] = clip
    probs = softmax(np.array(logits))
    clips = pa.table({
        "clip_id": pa.array([r[0] for r in clip_rows], pa.int64()),
        "video_id": pa.array([r[1] for r in clip_rows], pa.int64()),
        "split": pa.array([r[2] for r in clip_rows], pa.string()),
        "label": pa.array([r[3] for r in clip_rows], pa.int32()),
        "pred": pa.array(probs.argmax(1), pa.int32()),
        "z": pa.array((probs.argmax(1) == [r[3] for r in clip_rows]).astype(np.int8), pa.int8()),
    })
    video_table = pa.table({"video_id": pa.array([v[0] for v in videos], pa.int64()),
                            "split": pa.array([v[1] for v in videos], pa.string()),
                            "clips": pa.array([v[2] for v in videos], pa.int32()),
                            "seconds": pa.array([v[3] for v in videos], pa.float64())})
    meta = {"model": TEACHER, "device": "cpu", "device_name": "Test CPU", "threads": 1,
            "classes": [f"c{i}" for i in range(CLASSES)]}
    clip_outputs.write_outputs(store, clip_outputs.teacher_folder(TEACHER),
                               {"logits": np.array(logits, np.float32)}, clips, video_table, meta)
    set_stage(store, f"teacher-cache/{TEACHER}", state="done", counts={})
    return store, clip_rows, np.array(logits, np.float32), frames, videos


@pytest.fixture(scope="module")
def tiny_store(tmp_path_factory):
    return build_store(tmp_path_factory.mktemp("motion") / "store")


def expected_accuracy(clip_rows, logits, frames, k: int) -> float:
    """Top-1 (%) over the test videos of sending each video's k most moving clips (ties: the lower clip id)."""
    correct = []
    for video in sorted({r[1] for r in clip_rows if r[2] == "test"}):
        rows = sorted((i for i, r in enumerate(clip_rows) if r[1] == video), key=lambda i: clip_rows[i][0])
        energy = [np.abs(np.diff(frames[clip_rows[i][0]].astype(np.int64), axis=0)).mean() for i in rows]
        chosen = [rows[j] for j in np.argsort(-np.array(energy), kind="stable")[:k]]
        prediction = softmax(logits[chosen].astype(np.float64)).mean(axis=0).argmax()
        correct.append(prediction == clip_rows[rows[0]][3])
    return 100.0 * float(np.mean(correct))


def test_the_rows_are_the_top_k_clips_by_motion_energy(tiny_store):
    store, clip_rows, logits, frames, _ = tiny_store
    report = build_report(store, "accuracy", k=[1, 2, 3], methods="motion-energy,equidistant")
    rows = {row.k: row for row in report.rows if row.method == "motion-energy"}
    assert sorted(rows) == [1, 2, 3]
    for k, row in rows.items():
        assert row.accuracy == pytest.approx(expected_accuracy(clip_rows, logits, frames, k), abs=1e-9), k
        assert row.extra["display"] == "Motion energy" and row.extra["student_s"] == 0.0
    # the teacher is right on the more moving clips: motion picks them, equidistant does not
    assert rows[1].accuracy == 100.0
    assert next(r for r in report.rows if r.method == "equidistant" and r.k == 1).accuracy < 100.0
    assert "Motion energy" in report.columns


def test_the_selection_time_is_the_motion_arithmetic_and_the_ranking(tmp_path, monkeypatch):
    store, clip_rows, *_ = build_store(tmp_path / "store")
    ticks = iter(range(1 << 30))
    monkeypatch.setattr(time, "perf_counter", lambda: next(ticks) * 1e-3)  # every timed span: one tick
    monkeypatch.setattr(clip_motion, "MOTION_BLOCK_CLIPS", 4)
    report = build_report(store, "accuracy", k=[1, 2], methods="motion-energy")
    test_clips = sum(1 for r in clip_rows if r[2] == "test")
    test_videos = len({r[1] for r in clip_rows if r[2] == "test"})
    spans = -(-test_clips // 4) + 1  # one per block of clips, and the ranking
    for row in (r for r in report.rows if r.method == "motion-energy"):
        assert row.extra["selection_s"] == pytest.approx(spans * 1e-3 / test_videos, rel=1e-9)


def test_table_3_shows_motion_energy_by_default_and_omits_it_without_clips(tiny_store, tmp_path):
    store = tiny_store[0]
    assert "Motion energy" in build_report(store, "3", k=[1]).columns
    bare, *_ = build_store(tmp_path / "bare", with_clips=False)
    report = build_report(bare, "3", k=[1])
    assert "Motion energy" not in report.columns
    assert any(line.startswith("Note: Motion energy:") and "no clip array" in line and line.endswith("omitted.")
               for line in report.footer), report.footer


def test_in_memory_inputs_have_no_frames_to_rank():
    inputs = MemoryInputs(video_id=[1, 2], labels=[0, 1], clips=[2, 1],
                          teacher_logits=[[2.0, 0.0], [0.0, 1.0], [0.0, 3.0]], teacher_seconds=[0.2, 0.1])
    table = build_table(inputs, "accuracy", k=[1], methods="motion-energy")
    assert not any(row.method == "motion-energy" for row in table.rows)
    assert any("Motion energy: in-memory inputs hold no clip frames; omitted." in line for line in table.footer)


def test_the_cli_selects_motion_energy(tiny_store):
    store = tiny_store[0]
    result = CliRunner().invoke(cli, ["report", "--store", store.url, "--table", "accuracy", "--k", "1",
                                      "--methods", "motion-energy"])
    assert result.exit_code == 0, result.output
    header = next(line for line in result.output.splitlines() if line.startswith("| K"))
    assert [cell.strip() for cell in header.strip("|").split("|")] == ["K", "Motion energy"]
