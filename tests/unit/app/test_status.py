"""``condi-pipe status`` text: columns aligned whatever the stage names' lengths, times and counts rounded with
units."""

from __future__ import annotations

import json
import re
import shutil
import time
from datetime import datetime, timezone

import pytest

from condi_pipe.app.status import RESUMED_NOTE, format_count, format_duration, format_status, store_status
from condi_pipe.pipeline.stage import StageSpec, stage_run
from condi_pipe.storage.lock import LOCK_FILE
from condi_pipe.storage.run_state import read_run, set_stage
from condi_pipe.storage.store import Store

# A stage row: two-space indent, name, state, time (right-aligned), then the counts (absent for a stage without
# counts).
ROW = re.compile(r"^  (?P<name>\S+) +(?P<state>\S+) +(?P<time>-|\S+s\*?|\S+m\*?)(?:  (?P<counts>\S.*))?$")


def _rows(lines: list[str], stages: dict) -> list[re.Match]:
    rows = [ROW.match(line) for line in lines if line.strip().split(" ")[0] in stages]
    assert len(rows) == len(stages) and all(rows), lines
    return rows


def _assert_aligned(rows: list[re.Match]) -> None:
    """Every row's state starts at one offset, its time ends at one offset, and every row with counts has them
    start at one offset."""
    assert len({row.start("state") for row in rows}) == 1, [row.string for row in rows]
    assert len({row.end("time") for row in rows}) == 1, [row.string for row in rows]
    assert len({row.start("counts") for row in rows if row["counts"]}) <= 1, [row.string for row in rows]


def test_real_store_is_aligned_and_rounded(synth_teacher_store, tmp_path):
    store_dir = tmp_path / "store"
    shutil.copytree(synth_teacher_store, store_dir)
    store = Store(str(store_dir))
    # A short and a long name beside the store's own stages; "running" with no lock holder reads "interrupted".
    set_stage(store, "x", state="running", counts={})
    long_name = "distill/condi-sr-shufflenetv2_3d-w0.25-k2-a-much-longer-run-name"
    set_stage(store, long_name, state="done", counts={"epochs": 3, "accuracy": 0.123456789, "auroc": 0.876543219,
                                                      "epoch_kept": 2, "selection_metric": "eval_auroc",
                                                      "selection_value": 0.876543219})
    report = store_status(str(store_dir))
    lines = format_status(report)
    stored = read_run(store)["stages"]
    assert set(report["stages"]) == set(stored) and len(stored) >= 4  # extract, teacher-cache, and the two above
    rows = {row["name"]: row for row in _rows(lines, stored)}
    _assert_aligned(list(rows.values()))
    assert rows["x"]["state"] == "interrupted" and rows["x"]["counts"] is None and rows["x"]["time"] == "-"
    assert rows[long_name]["time"] == "-"  # finished, but recorded without a time (as before times were kept)
    assert re.fullmatch(r"\d+\.\d\ds", rows["extract"]["time"])  # recorded by the fixture's real extract run

    teacher = rows["teacher-cache/resnet10_3d_small"]["counts"]
    counts = stored["teacher-cache/resnet10_3d_small"]["counts"]
    accuracy = re.search(r"clip_accuracy (\d+\.\d\d)%", teacher)
    assert accuracy and float(accuracy[1]) == pytest.approx(100 * counts["clip_accuracy"], abs=0.005)
    ms = re.search(r"ms_per_clip (\d+(?:\.\d+)?) ms", teacher)
    assert ms and float(ms[1]) == pytest.approx(counts["ms_per_clip"], rel=0.01)
    assert len(ms[1].replace(".", "").lstrip("0")) <= 4  # 3 significant digits (4 for >= 1000 ms)
    for key in ("clips", "videos"):
        assert re.search(rf"\b{key} {counts[key]}\b", teacher), teacher
    extract = rows["extract"]["counts"]
    for key in ("videos", "clips", "errors", "warnings"):
        assert re.search(rf"\b{key} {stored['extract']['counts'][key]}\b", extract), extract
    assert set(rows[long_name]["counts"].split(", ")) == {  # (run.json keeps its keys sorted)
        "epochs 3", "accuracy 12.35%", "auroc 0.8765", "epoch_kept 2", "selection_metric eval_auroc",
        "selection_value 0.8765"}
    # No raw float anywhere: five or more decimals means a value went out unrounded.
    assert not re.search(r"\d\.\d{5,}", "\n".join(lines)), lines
    # the command prints exactly these lines
    from click.testing import CliRunner

    from condi_pipe.cli import main as cli

    result = CliRunner().invoke(cli, ["status", "--store", str(store_dir)])
    assert result.exit_code == 0 and result.output.splitlines() == lines, result.output


def test_lock_holder(tmp_path):
    store_dir = tmp_path / "store"
    store_dir.mkdir()
    (store_dir / LOCK_FILE).write_text('{"pid": 123, "host": "h", "command": "distill"}')
    set_stage(Store(str(store_dir)), "distill/a", state="running", counts={})
    lines = format_status(store_status(str(store_dir)))
    assert lines[1] == "  locked by pid 123 on h (distill)"
    assert _rows(lines, {"distill/a"})[0]["state"] == "running"  # a live holder: not "interrupted"


@pytest.mark.parametrize("key, value, text", [
    ("clip_accuracy", 0.6114245416078985, "61.14%"),
    ("accuracy", 1.0, "100.00%"),
    ("ms_per_clip", 9.733340082510088, "9.73 ms"),
    ("ms_per_video", 123.456, "123 ms"),
    ("ms_per_video", 0.012345, "0.0123 ms"),
    ("teacher_ms_per_clip", 1234.5678, "1235 ms"),
    ("seconds", 12.3456, "12.35 s"),
    ("gflops_per_clip", 0.0421, "0.0421 GFLOPs"),
    ("clips", 240, "240"),
    ("epochs", 3.0, "3"),
    ("mean_sgs_bins", 2.3456789, "2.346"),
    ("auroc", None, "-"),
    ("selection_metric", "eval_auroc", "eval_auroc"),
    ("auroc", float("nan"), "nan"),
])
def test_format_count(key, value, text):
    assert format_count(key, value) == text


# -- how long each finished stage took ---------------------------------------------------------------------------


@pytest.mark.parametrize("seconds, text", [
    (0.414, "0.41s"),
    (12.3456, "12.35s"),
    (59.999, "1m00s"),
    (245.4, "4m05s"),
    (3599.6, "1h00m"),
    (7384.0, "2h03m"),
    (None, "-"),
    (float("nan"), "-"),
])
def test_format_duration(seconds, text):
    assert format_duration(seconds) == text


def _status(store_dir, *args: str):
    from click.testing import CliRunner

    from condi_pipe.cli import main as cli

    result = CliRunner().invoke(cli, ["status", "--store", str(store_dir), *args])
    assert result.exit_code == 0 and result.stderr == "", result.output
    return json.loads(result.stdout) if args else result.stdout.splitlines()


def _utc(text: str) -> datetime:
    return datetime.strptime(text, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=timezone.utc)


def test_status_shows_how_long_a_real_stage_run_took(synth_store, synth_root, tmp_path):
    from click.testing import CliRunner

    from condi_pipe.cli import main as cli

    store_dir = tmp_path / "store"
    shutil.copytree(synth_store, store_dir)
    began = datetime.now(timezone.utc).replace(microsecond=0)
    t0 = time.monotonic()
    result = CliRunner().invoke(cli, ["extract", "--source", "ucf101", "--root", str(synth_root), "--store",
                                      str(store_dir), "--clips-per-shard", "8", "--workers", "0", "--quiet", "--force"])
    took = time.monotonic() - t0
    assert result.exit_code == 0, result.output
    extract = _status(store_dir, "--json")["stages"]["extract"]
    assert extract["state"] == "done" and extract["runs"] == 1
    assert 0 < extract["seconds"] <= took  # this run's wall time, from its start to its finish
    started, finished = _utc(extract["started_at"]), _utc(extract["finished_at"])
    assert began <= started <= finished <= datetime.now(timezone.utc)
    assert (finished - started).total_seconds() == pytest.approx(extract["seconds"], abs=1.01)  # whole seconds
    row = {row["name"]: row for row in _rows(_status(store_dir), {"extract"})}["extract"]
    assert row["time"] == format_duration(extract["seconds"])


def test_a_stage_recorded_without_times_shows_a_dash(synth_store, tmp_path):
    """A store from before stages recorded their times: "-" and null, not an error."""
    store_dir = tmp_path / "store"
    shutil.copytree(synth_store, store_dir)
    run = json.loads((store_dir / "run.json").read_text())
    for key in ("started_at", "finished_at", "seconds", "runs"):
        run["stages"]["extract"].pop(key, None)
    (store_dir / "run.json").write_text(json.dumps(run))
    extract = _status(store_dir, "--json")["stages"]["extract"]
    assert extract["state"] == "done"
    assert extract["seconds"] is extract["started_at"] is extract["finished_at"] is extract["runs"] is None
    lines = _status(store_dir)
    row = _rows(lines, {"extract"})[0]
    assert row["time"] == "-" and "videos 20" in row["counts"]
    assert RESUMED_NOTE not in "\n".join(lines)


def test_a_resumed_stage_shows_its_last_run_and_says_so(tmp_path):
    """Interrupted, then resumed: the time is the resuming run's (marked *, with a note); --force starts over."""
    store_dir = tmp_path / "store"
    store = Store(str(store_dir))
    spec = StageSpec("timed", (), (), "a test stage")
    quiet = dict(log=lambda line: None)
    with pytest.raises(KeyboardInterrupt):
        with stage_run(store, spec, {"a": 1}, **quiet):
            raise KeyboardInterrupt  # killed midway: no finish recorded
    interrupted = _status(store_dir, "--json")["stages"]["timed"]
    assert interrupted["state"] == "interrupted" and interrupted["seconds"] is None and interrupted["runs"] == 1
    assert _rows(_status(store_dir), {"timed"})[0]["time"] == "-"

    t0 = time.monotonic()
    with stage_run(store, spec, {"a": 1}, **quiet) as run:
        time.sleep(0.3)
        run.done({"items": 1})
    took = time.monotonic() - t0
    resumed = _status(store_dir, "--json")["stages"]["timed"]
    assert resumed["state"] == "done" and resumed["runs"] == 2
    assert 0.3 <= resumed["seconds"] <= took  # the last run only
    lines = _status(store_dir)
    assert _rows(lines, {"timed"})[0]["time"] == format_duration(resumed["seconds"]) + "*"
    assert lines[-1] == f"  {RESUMED_NOTE}"

    with stage_run(store, spec, {"a": 1}, force=True, **quiet) as run:
        run.done({"items": 1})
    forced = _status(store_dir, "--json")["stages"]["timed"]
    assert forced["runs"] == 1 and forced["seconds"] < resumed["seconds"]
    lines = _status(store_dir)
    assert _rows(lines, {"timed"})[0]["time"] == format_duration(forced["seconds"])
    assert RESUMED_NOTE not in "\n".join(lines)


def test_status_help_says_what_the_time_means():
    from click.testing import CliRunner

    from condi_pipe.cli import main as cli

    text = " ".join(CliRunner().invoke(cli, ["status", "--help"]).output.split())
    assert "wall time from the start of the run that finished it to its finish" in text
    assert "resumed after an interruption (marked *) shows that last run only" in text
