"""Every command takes its store as ``--store``; a path that is not a store is a one-line error everywhere.

Each command that reads an existing store refuses a missing path, an empty folder, a file and a run.json that
records no stage with one line naming the path and the reason (exit status 2), and leaves nothing behind. verify,
status and repair still take the store as a positional argument, for one release, with a deprecation warning.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner

from condi_pipe.cli import main as cli
from condi_pipe.storage.store import FORMAT_VERSION

TEACHER = "resnet10_3d_small"

# Every command that reads an existing store, with the other options it needs to get as far as the store.
# (extract, run, sweep and demo make their stores.) "VIDEO" stands for an existing file (infer's argument).
READING_COMMANDS = {
    "verify": (),
    "status": (),
    "status --json": ("--json",),
    "repair": (),
    "report": ("--table", "3"),
    "score": ("--student", "conf", "--workers", "0"),
    "teacher-train": ("--teacher", TEACHER, "--epochs", "1"),
    "teacher-cache": ("--teacher", TEACHER, "--random-init", "--workers", "0"),
    "distill": ("--loss", "condi-sr", "--student", "shufflenetv2_3d", "--teacher", TEACHER, "--epochs", "1"),
    "time-models": ("--teacher", TEACHER),
    "infer": ("VIDEO", "--teacher", TEACHER, "--method", "dense"),
}


def _not_a_store(kind: str, folder: Path) -> tuple[Path, str]:
    """A path of ``kind`` under ``folder`` that is not a store, and the reason the error must give."""
    if kind == "missing":
        return folder / "no" / "such" / "store", "the path does not exist"
    path = folder / "not-a-store"
    if kind == "file":
        path.write_text("x\n")
        return path, "it is a file"
    path.mkdir()
    if kind == "empty":
        return path, "it holds no run.json"
    (path / "run.json").write_text(json.dumps({"format_version": FORMAT_VERSION, "stages": {}}))  # repair cleared every stage
    return path, "its run.json records no stage"


def _tree(folder: Path) -> dict[str, bytes | None]:
    return {str(p.relative_to(folder)): p.read_bytes() if p.is_file() else None for p in sorted(folder.rglob("*"))}


def _invoke(*args: str):
    return CliRunner().invoke(cli, list(args))


@pytest.mark.parametrize("kind", ["missing", "empty", "file", "no-stage"])
@pytest.mark.parametrize("command", list(READING_COMMANDS))
def test_a_path_that_is_not_a_store_is_a_one_line_error_and_creates_nothing(command, kind, tmp_path):
    work = tmp_path / "work"
    work.mkdir()
    video = tmp_path / "video.mp4"
    video.write_bytes(b"")
    path, reason = _not_a_store(kind, work)
    before = _tree(work)
    name = command.split()[0]
    args = [str(video) if a == "VIDEO" else a for a in READING_COMMANDS[command]]
    result = _invoke(name, "--store", str(path), *args)
    assert result.exit_code == 2, (result.exit_code, result.output)
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith(f"error: {path}: not a store: ") and reason in lines[0], lines[0]
    assert _tree(work) == before  # no store folder, lock or run.json made on the way


@pytest.fixture
def store_dir(synth_store, tmp_path) -> Path:
    store_dir = tmp_path / "store"
    shutil.copytree(synth_store, store_dir)
    return store_dir


WARNING = "warning: `condi-pipe {command} STORE` is deprecated and will be removed in the next release; use " \
          "`condi-pipe {command} --store STORE`"


@pytest.mark.parametrize("command, extra", [
    ("verify", ()), ("status", ()), ("status", ("--json",)), ("repair", ())
], ids=["verify", "status", "status --json", "repair"])
def test_the_old_positional_store_still_works_with_a_warning(command, extra, store_dir):
    new = _invoke(command, "--store", str(store_dir), *extra)
    assert new.exit_code == 0 and new.stderr == "", new.output
    old = _invoke(command, *extra, str(store_dir))  # the store after the flags, as well as before them
    assert old.exit_code == 0, old.output
    assert old.stderr.splitlines() == [WARNING.format(command=command)]
    assert old.stdout == new.stdout
    before = _invoke(command, str(store_dir), *extra)
    assert before.exit_code == 0 and before.stdout == new.stdout and before.stderr == old.stderr
    if command == "verify":
        assert "verify: all outputs intact" in old.stdout
    elif command == "status" and extra:
        assert json.loads(old.stdout)["stages"]["extract"]["state"] == "done"
    elif command == "status":
        assert old.stdout.splitlines()[0] == f"store {store_dir} (format {FORMAT_VERSION})"
    else:
        assert old.stdout == ""  # repair: nothing was damaged, nothing to say


def test_the_positional_form_is_checked_like_the_option(tmp_path):
    """A mistyped positional store is refused like a mistyped --store (beneath the warning), creating nothing."""
    result = _invoke("verify", str(tmp_path / "nope"))
    assert result.exit_code == 2
    assert result.stderr.splitlines() == [WARNING.format(command="verify"),
                                          f"error: {tmp_path / 'nope'}: not a store: the path does not exist"]
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("command", ["verify", "status", "repair"])
def test_the_store_is_required(command, store_dir):
    result = _invoke(command)
    assert result.exit_code == 2 and "Missing option '--store'" in result.stderr
    both = _invoke(command, "--store", str(store_dir), str(store_dir))  # one store, not two
    assert both.exit_code == 2 and "unexpected extra argument" in both.stderr
