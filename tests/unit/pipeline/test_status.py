"""``condi-pipe status`` text: columns aligned whatever the stage names' lengths, counts rounded with units."""

from __future__ import annotations

import re
import shutil

import pytest

from condi_pipe.pipeline.status import format_count, format_status, store_status
from condi_pipe.storage.lock import LOCK_FILE
from condi_pipe.storage.run_state import read_run, set_stage
from condi_pipe.storage.store import Store

# A stage row: two-space indent, name, state, then the counts (absent for a stage without counts).
ROW = re.compile(r"^  (?P<name>\S+) +(?P<state>\S+)(?: +(?P<counts>\S.*))?$")


def _rows(lines: list[str], stages: dict) -> list[re.Match]:
    rows = [ROW.match(line) for line in lines if line.strip().split(" ")[0] in stages]
    assert len(rows) == len(stages) and all(rows), lines
    return rows


def _assert_aligned(rows: list[re.Match]) -> None:
    """Every row's state starts at one offset, and every row with counts has them start at one offset."""
    assert len({row.start("state") for row in rows}) == 1, [row.string for row in rows]
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
    assert rows["x"]["state"] == "interrupted" and rows["x"]["counts"] is None

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

    result = CliRunner().invoke(cli, ["status", str(store_dir)])
    assert result.exit_code == 0 and result.output.splitlines() == lines, result.output


def test_lock_holder_and_empty_store(tmp_path):
    store_dir = tmp_path / "store"
    store_dir.mkdir()
    assert format_status(store_status(str(store_dir)))[1:] == ["  no stage has run"]
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
