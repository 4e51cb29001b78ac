"""Fixtures for the fault-injection tests: a dataset that holds the foundation issue's bad-input corpus beside
good videos; a store built from it by the CLI through every stage, and a copy of it with a second, cheaper teacher
cache (the baselines the faults are judged against; the tests kill stages in processes of their own); and the CLI
in this process, for the commands nothing kills."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

from condi_pipe.cli import main as cli
from condi_pipe.video.ffmpeg_binary import ffmpeg_exe

TEACHER = "resnet10_3d_small"  # the student's teacher (test_bad_inputs.py reads its cache)
# The cheapest registered model (it reads clips at 8x56x56) for what the fault tests run again, the student and
# cheap_teacher_store's teacher cache: they check how stages survive kills and resume, the same for every architecture.
CHEAP_MODEL = "resnet10_3d_motion_skim"
STUDENT_RUN = "conf"

# (class folder, file name, list it is in, how it is made, severity and kind of the failure row extract records).
# The truncated file keeps its index (the synth files are written with it first), so its decodable frames stay.
BAD_INPUTS = (
    ("Grow", "v_Grow_g90_c01.mp4", "test", "empty", "error", "empty-file"),
    ("Shrink", "v_Shrink_g91_c01.mp4", "train", "text", "error", "invalid-data"),
    ("Shrink", "v_Shrink_g92_c01.mp4", "test", "truncated", "warning", "decoded-with-errors"),
    ("TranslateUp", "v_TranslateUp_g93_c01.mp4", "train", "audio-only", "error", "no-video-stream"),
    ("TranslateUp", "v_TranslateUp_g94_c01.mp4", "test", "missing", "error", "missing-file"),
)


def _make_bad_file(path: Path, how: str, good_video: Path) -> None:
    if how == "empty":
        path.write_bytes(b"")
    elif how == "text":
        path.write_text("this is not a video\n")
    elif how == "truncated":  # moov atom at the end: cutting the file loses the index
        data = good_video.read_bytes()
        path.write_bytes(data[: len(data) // 3])
    elif how == "audio-only":
        subprocess.run([ffmpeg_exe(), "-v", "error", "-nostdin", "-y", "-f", "lavfi", "-i", "sine=duration=1",
                        "-c:a", "aac", str(path)], check=True)
    elif how != "missing":
        raise ValueError(how)


@pytest.fixture(scope="session")
def bad_inputs() -> tuple:
    """(class folder, file name, split, how it was made, severity, kind) per bad input."""
    return BAD_INPUTS


@pytest.fixture(scope="session")
def corpus_root(synth_root, build_once) -> Path:
    """The 20 synth videos plus every bad input, listed in the UCF-101 split files like the good ones."""

    def build(folder: Path) -> None:
        root = folder / "data"
        shutil.copytree(synth_root, root)
        good_video = next(root.rglob("*.mp4"))
        for class_folder, name, split, how, *_ in BAD_INPUTS:
            _make_bad_file(root / class_folder / name, how, good_video)
            with open(root / f"{split}list01.txt", "a") as fh:
                fh.write(f"{class_folder}/{name}" + (" 1\n" if split == "train" else "\n"))

    return build_once("corpus", build) / "data"


@pytest.fixture(scope="session")
def invoke_cli():
    """``invoke_cli(*args) -> click Result``: ``condi-pipe ARGS`` in this process (``CliRunner``: a new process's
    imports cost more CPU than these small stages), torch's thread count restored after it (``--threads`` sets it
    for the whole process). For commands nothing kills: a killed command needs a process of its own."""

    def invoke(*args: str):
        threads = torch.get_num_threads()
        try:
            return CliRunner().invoke(cli, list(args))
        finally:
            torch.set_num_threads(threads)

    return invoke


@pytest.fixture(scope="session")
def pipeline_store(corpus_root, build_once, invoke_cli) -> Path:
    """extract -> teacher-cache (random-init teacher) -> distill (1 epoch) -> score, and teacher-train (2 epochs)
    of another teacher, each through the CLI (in this process) with no workers and one thread, so reruns elsewhere
    can be compared byte for byte."""
    return build_once("faults", lambda folder: _run_pipeline(corpus_root, folder / "store", invoke_cli)) / "store"


TEACHER_CACHE = ("teacher-cache", "--random-init", "--clips-per-group", "16", "--threads", "1", "--workers", "0")


def _run_pipeline(corpus_root: Path, store: Path, invoke_cli) -> None:
    steps = [
        ("extract", "--source", "ucf101", "--root", str(corpus_root), "--clips-per-shard", "8", "--workers", "0"),
        (*TEACHER_CACHE, "--teacher", TEACHER),
        ("distill", "--loss", "condi-sr", "--student", CHEAP_MODEL, "--name", STUDENT_RUN, "--teacher", TEACHER,
         "--epochs", "1", "--batch-size", "8", "--clips-per-video", "1", "--threads", "1"),
        ("score", "--student", STUDENT_RUN, "--clips-per-group", "12", "--threads", "1", "--workers", "0"),
        # another architecture than the teacher caches' (here and in cheap_teacher_store; the cheapest one left), so
        # its trained weights replace no random-init teacher
        ("teacher-train", "--teacher", "resnet10_3d_motion_tiny", "--epochs", "2", "--batch-size", "8",
         "--clips-per-video", "1", "--threads", "1"),
    ]
    for command, *args in steps:
        _invoke_step(invoke_cli, store, command, *args)


def _invoke_step(invoke_cli, store: Path, command: str, *args: str) -> None:
    result = invoke_cli(command, *args, "--store", str(store), "--quiet")
    assert result.exit_code == 0, f"{command}: {result.output} {result.exception!r}"


@pytest.fixture(scope="session")
def cheap_teacher_store(pipeline_store, build_once, invoke_cli) -> Path:
    """``pipeline_store`` plus a second teacher cache, of CHEAP_MODEL, made as TEACHER's was: the one the tests that
    kill a teacher cache run again, at a fraction of TEACHER's cost. A copy, because ``condi-pipe report`` without
    --teacher (test_bad_inputs.py) needs ``pipeline_store``'s teacher cache to be its only one."""

    def build(folder: Path) -> None:
        shutil.copytree(pipeline_store, folder / "store")
        _invoke_step(invoke_cli, folder / "store", *TEACHER_CACHE, "--teacher", CHEAP_MODEL)

    return build_once("faults_cheap_teacher", build) / "store"
