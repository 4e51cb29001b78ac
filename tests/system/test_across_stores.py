"""UCF-101 folds: `condi-pipe run` with ``split = [1, 3]`` on a generated UCF-101 layout with its trainlist0N /
testlist0N files runs each fold in its own store, and tables 3 and 4 over the folds hold, in every cell, the mean
and the spread of the folds' own tables; `condi-pipe report` with one --store per fold computes the same from the
stores. Two folds are the fewest a split list takes, and each is a whole pipeline; splits 1 and 3 rather than 1 and
2, so a fold named by its position instead of its split would show (the arithmetic over three folds is checked by
hand in tests/unit/report/test_fold_tables.py). The run-config checks of a split list are here too (fast)."""

from __future__ import annotations

import json
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from condi_pipe.app.run_config import ConfigError, load_run_config
from condi_pipe.app.runner import fold_configs
from condi_pipe.cli import main as cli
from condi_pipe.storage.manifests import load_videos, video_paths
from condi_pipe.storage.run_state import stage_record
from condi_pipe.storage.store import Store

# A tiny teacher and student, trained on one clip per video, keep whole pipelines cheap; the numbers are not the
# point, their combination is.
CONFIG = """
store = "store"
[extract]
source = "ucf101"
root = "{root}"
annotations = "lists"
split = [1, 2, 3]
workers = 0
[teacher]
name = "resnet10_3d_motion_skim"
workers = 0
[teacher_train]
epochs = 1
clips_per_video = 1
flip = false
[distill]
student = "resnet10_3d_motion_skim"
losses = ["condi-sr"]
epochs = 1
clips_per_video = 1
[time_models]
repeats = 1
[report]
tables = ["3", "4"]
k = [1, 2]
ks = [0, 1]
plots = false
out_dir = "reports"
"""

SPLITS = (1, 2, 3)  # the lists written, and the configuration's split list (CONFIG)
RUN_SPLITS = (1, 3)  # the folds `run` runs in fold_run


def group_tested_in(split: int, label: int) -> int:
    """The group of class ``label`` that split N tests on (the benchmark's 20 videos: groups 1 and 2 per class):
    split 1 tests on group 1, split 2 on group 2, split 3 on group 1 for the first five classes and 2 for the rest,
    so every video is a test video in some fold and a training video in another, as in UCF-101's three splits."""
    return {1: 1, 2: 2, 3: 1 if label < 5 else 2}[split]


def write_lists(root: Path, lists: Path) -> dict[int, dict[str, list[str]]]:
    """classInd.txt and the three trainlist0N / testlist0N files (CRLF, 1-based indices in the train lists, as
    UCF-101's ucfTrainTestlist); returns {split: {"train": paths, "test": paths}}."""
    lists.mkdir(parents=True)
    class_index = (root / "classInd.txt").read_text()
    (lists / "classInd.txt").write_text(class_index)
    classes = [line.split()[1] for line in class_index.splitlines() if line.strip()]
    videos = sorted(p.relative_to(root).as_posix() for p in root.glob("*/v_*_g*_c*.*"))
    out = {}
    for split in SPLITS:
        parts = {"train": [], "test": []}
        for video in videos:
            label = classes.index(video.split("/")[0])
            group = int(video.rsplit("_g", 1)[1][:2])
            parts["test" if group == group_tested_in(split, label) else "train"].append(video)
        (lists / f"trainlist{split:02d}.txt").write_text(
            "".join(f"{v} {classes.index(v.split('/')[0]) + 1}\r\n" for v in parts["train"]))
        (lists / f"testlist{split:02d}.txt").write_text("".join(f"{v}\r\n" for v in parts["test"]))
        out[split] = parts
    return out


def write_config(work: Path, root: Path, **changes: str) -> Path:
    text = textwrap.dedent(CONFIG.format(root=root))
    for old, new in changes.items():
        text = text.replace(old, new)
    path = work / "run.toml"
    path.write_text(text)
    return path


@pytest.fixture(scope="module")
def fold_run(synth_root, tmp_path_factory):
    work = tmp_path_factory.mktemp("folds")
    parts = write_lists(synth_root, work / "lists")
    config = write_config(work, synth_root, **{"split = [1, 2, 3]": f"split = {list(RUN_SPLITS)}"})
    result = CliRunner().invoke(cli, ["run", "--config", str(config), "--quiet"])
    assert result.exit_code == 0, result.output + str(result.exception)
    return work, parts, result.output


def rows(path: Path) -> dict:
    return {(r["method"], r["k"], r["ks"]): r for r in json.loads(path.read_text())}


@pytest.mark.slow
def test_each_fold_is_its_split_in_its_own_store(fold_run):
    work, parts, _ = fold_run
    assert sorted(p.name for p in (work / "store").iterdir()) == [f"split-{split}" for split in RUN_SPLITS]
    for split in RUN_SPLITS:
        store = Store(str(work / "store" / f"split-{split}"))
        assert stage_record(store, "extract")["config"]["split"] == split
        for part in ("train", "test"):
            assert sorted(video_paths(store, load_videos(store, part)).tolist()) == sorted(parts[split][part])
        # the fold's teacher and student trained on the fold's train split only (10 videos, no validation carved:
        # one group per class), and were tested on its test split
        meta = json.loads((work / "store" / f"split-{split}" / "students" / "condi-sr-resnet10_3d_motion_skim" /
                           "meta.json").read_text())
        assert meta["fit_videos"] == len(parts[split]["train"]) == 10
        assert (work / "reports" / f"split-{split}" / "table-3.json").is_file()
    assert parts[1]["test"] != parts[3]["test"]


@pytest.mark.slow
@pytest.mark.parametrize("table", ["3", "4"])
def test_combined_tables_hold_the_mean_and_std_of_the_fold_tables(fold_run, table):
    work, _, output = fold_run
    combined = rows(work / "reports" / f"table-{table}.json")
    folds = [rows(work / "reports" / f"split-{split}" / f"table-{table}.json") for split in RUN_SPLITS]
    assert set(combined) == set(folds[0]) == set(folds[1])
    assert ("dense", None, None) in combined and len(combined) >= 3
    for key, row in combined.items():
        accuracy = [fold[key]["accuracy"] for fold in folds]
        seconds = [fold[key]["time_per_video_s"] for fold in folds]
        assert row["folds"] == ["split-1", "split-3"]
        assert row["accuracy_per_fold"] == accuracy and row["time_per_video_s_per_fold"] == seconds
        assert row["accuracy"] == pytest.approx(np.mean(accuracy))
        assert row["accuracy_std"] == pytest.approx(np.std(accuracy, ddof=1))
        assert row["time_per_video_s"] == pytest.approx(np.mean(seconds))
        assert row["time_per_video_s_std"] == pytest.approx(np.std(seconds, ddof=1))
        if key[0] != "dense":
            assert row["diff_vs_dense_pp"] == pytest.approx(np.mean([f[key]["diff_vs_dense_pp"] for f in folds]))
    md = (work / "reports" / f"table-{table}.md").read_text()
    assert "mean ± std over 2 folds: split-1, split-3" in md
    dense = combined[("dense", None, None)]
    assert f"({dense['accuracy']:.2f} ± {dense['accuracy_std']:.2f})" in md
    assert "± is the sample standard deviation over the folds" in (work / "reports" / f"table-{table}.csv").read_text()
    if table == "3":
        assert md in output  # `run` prints the combined table 3


@pytest.mark.slow
def test_report_over_the_fold_stores(fold_run, monkeypatch):
    work, _, _ = fold_run
    stores = [arg for split in RUN_SPLITS for arg in ("--store", str(work / "store" / f"split-{split}"))]
    # Clip selection is the one time a report measures (methods.time_model.timed, on time.perf_counter); with the
    # clock stopped it is exactly 0, so every time below is the fold stores' stored model time alone.
    with monkeypatch.context() as frozen:
        frozen.setattr(time, "perf_counter", lambda: 0.0)
        result = CliRunner().invoke(cli, ["report", "--table", "3", *stores, "--k", "1,2", "--format", "json"])
    assert result.exit_code == 0, result.output
    mine, run = {(r["method"], r["k"]): r for r in json.loads(result.output)}, rows(work / "reports" / "table-3.json")
    folds = [rows(work / "reports" / f"split-{split}" / "table-3.json") for split in RUN_SPLITS]
    assert set(mine) == {(m, k) for m, k, _ in run}
    for (method, k), row in mine.items():
        key = (method, k, None)
        assert row["accuracy_per_fold"] == run[key]["accuracy_per_fold"]
        # each fold's time: the teacher and student seconds the run's own fold table took from the same store
        # (selection, measured by each report, is 0 here), and the combined time their mean over the folds
        stored = [fold[key]["teacher_s"] + fold[key]["student_s"] for fold in folds]
        assert all(fold[key]["time_per_video_s"] == pytest.approx(seconds + fold[key]["selection_s"], rel=1e-12)
                   for fold, seconds in zip(folds, stored))
        assert row["time_per_video_s_per_fold"] == pytest.approx(stored, rel=1e-12)
        assert row["time_per_video_s"] == pytest.approx(np.mean(stored), rel=1e-12)
        assert row["time_per_video_s_std"] == pytest.approx(np.std(stored, ddof=1), rel=1e-9, abs=1e-15)
    latex = CliRunner().invoke(cli, ["report", "--table", "4", *stores, "--k", "1,2", "--ks", "0,1",
                                     "--format", "latex"])
    assert latex.exit_code == 0 and "±" in latex.output and r"\begin{tabular}{llll}" in latex.output
    twice = CliRunner().invoke(cli, ["report", "--table", "3", *stores[:2], *stores[:2]])
    assert twice.exit_code == 2 and "same fold (split-1)" in twice.stderr and twice.stderr.count("\n") == 1
    other = CliRunner().invoke(cli, ["report", "--table", "accuracy", *stores])
    assert other.exit_code == 2 and "table accuracy does not combine over folds" in other.stderr


# --- the configuration of a split list (fast) ---------------------------------------------------------------


def test_a_split_list_is_one_fold_per_split(tmp_path):
    config = load_run_config(write_config(tmp_path, tmp_path / "data"))
    assert config.extract.split == [1, 2, 3] and config.extract.folds == [1, 2, 3]
    folds = fold_configs(config)
    assert [name for name, _ in folds] == ["split-1", "split-2", "split-3"]
    for split, (name, fold) in zip(SPLITS, folds):
        assert fold.extract.split == split and fold.extract.folds is None
        assert fold.store == str(tmp_path / "store" / name)
        assert fold.report.out_dir == str(tmp_path / "reports" / name)
        assert fold.distill == config.distill and fold.teacher == config.teacher
    one = load_run_config(write_config(tmp_path, tmp_path / "data", **{"split = [1, 2, 3]": "split = 2"}))
    assert one.extract.folds is None and fold_configs(one) == [] and one.store == str(tmp_path / "store")


@pytest.mark.parametrize("change, message", [
    ({"split = [1, 2, 3]": "split = [1, 1]"}, r"\[extract\].split must be one split or a list of two or more"),
    ({"split = [1, 2, 3]": "split = [2]"}, r"\[extract\].split must be one split or a list of two or more"),
    ({"split = [1, 2, 3]": "split = [1, 4]"}, r"\[extract\].split must be in \[1, 3\], got 4"),
    ({"split = [1, 2, 3]": "split = [0, 1]"}, r"\[extract\].split must be in \[1, 3\], got 0"),
    ({"split = [1, 2, 3]": 'split = ["1"]'}, r"\[extract\].split must be int \| list\[int\], got list"),
    ({'source = "ucf101"': 'source = "kinetics"'}, r"a list of splits \(folds\) applies to ucf101 and hmdb51"),
], ids=["repeated", "one", "four", "zero", "strings", "kinetics"])
def test_bad_split_lists_are_one_line_naming_the_file(tmp_path, change, message):
    path = write_config(tmp_path, tmp_path / "data", **change)
    with pytest.raises(ConfigError, match=message) as info:
        load_run_config(path)
    assert str(path) in str(info.value) and "\n" not in str(info.value)
