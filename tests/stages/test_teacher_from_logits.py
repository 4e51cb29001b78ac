"""teacher-cache --from-logits: a teacher of another framework handed over as per-clip logits (Parquet or CSV). The
file is made here from a teacher cache computed by teacher-cache (the documented format), imported under another
name, and must give the same cache; every malformed file is one line naming it, with nothing written; distill,
score and report run on the imported cache, and what needs features or a model refuses it in one line."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

from condi_pipe.app.verify import repair_store, verify_store
from condi_pipe.cli import main as cli
from condi_pipe.compute.torch_runtime import RuntimeOptions
from condi_pipe.compute.training import TrainOptions
from condi_pipe.pipeline.faults import KILL_ENV
from condi_pipe.pipeline.stage import StageError
from condi_pipe.report import render
from condi_pipe.report.build import build_report
from condi_pipe.stages.distill import DistillRequest, LossOptions, distill
from condi_pipe.stages.teacher_cache import (
    FROM_LOGITS_FAULT,
    TeacherCacheRequest,
    TeacherChoice,
    cached_teacher,
    teacher_cache,
)
from condi_pipe.storage import clip_outputs
from condi_pipe.storage.logits_file import LogitsFileError
from condi_pipe.storage.run_state import read_run, stage_record
from condi_pipe.storage.store import Store

TEACHER = "resnet10_3d_small"  # synth_teacher_store's cache, computed by teacher-cache
QUIET = {"quiet": True, "log": lambda message: None}
# Columns that say where a row came from rather than what the teacher predicted: an imported cache's rows are the
# file's and it has no FLOPs (null); every other column must equal the computed cache's.
PROVENANCE = ("teacher_source", "flops")


@pytest.fixture(scope="module")
def store_dir(synth_teacher_store, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("from_logits") / "store"
    shutil.copytree(synth_teacher_store, out)
    return out


@pytest.fixture(scope="module")
def dumped(store_dir) -> pd.DataFrame:
    """The computed cache's logits as the documented file rows (video_id, clip_index, logits), shuffled: the file's
    row order must not matter."""
    store = Store(str(store_dir))
    folder = clip_outputs.teacher_folder(TEACHER)
    logits = clip_outputs.read_array(store, folder, "logits")
    cache = clip_outputs.read_clips(store, folder, ["clip_id", "video_id"]).to_pandas()
    index = pq.read_table(store_dir / "clips.parquet", columns=["clip_id", "clip_index"]).to_pandas()
    rows = cache.merge(index, on="clip_id", how="left")
    assert rows["clip_index"].notna().all()
    frame = pd.DataFrame({"video_id": rows["video_id"], "clip_index": rows["clip_index"].astype("int64"),
                          "logits": list(logits)})
    return frame.sample(frac=1.0, random_state=0).reset_index(drop=True)


def write_parquet(frame: pd.DataFrame, path: Path) -> Path:
    logits = pa.array([np.asarray(row, np.float32) for row in frame["logits"]], pa.list_(pa.float32()))
    pq.write_table(pa.table({"video_id": pa.array(frame["video_id"], pa.int64()),
                             "clip_index": pa.array(frame["clip_index"], pa.int64()), "logits": logits}), path)
    return path


def write_csv(frame: pd.DataFrame, path: Path) -> Path:
    logits = np.stack(frame["logits"].to_numpy()) if len(frame) else np.zeros((0, 10))
    columns = {f"logit_{c}": logits[:, c] for c in range(logits.shape[1])}
    # 9 significant digits: every float32 comes back exactly
    pd.DataFrame({"video_id": frame["video_id"], "clip_index": frame["clip_index"], **columns}).to_csv(
        path, index=False, float_format="%.9g")
    return path


def import_logits(store_dir: Path, path: Path, name: str, **kwargs) -> dict:
    request = TeacherCacheRequest(TeacherChoice(name), from_logits=str(path))
    return teacher_cache(Store(str(store_dir)), request, **kwargs, **QUIET)


@pytest.fixture(scope="module")
def imported(store_dir, dumped, tmp_path_factory) -> dict[str, Path]:
    """The computed cache imported from its Parquet dump and from its CSV dump, as caches of their own."""
    folder = tmp_path_factory.mktemp("dumps")
    files = {"mm-parquet": write_parquet(dumped, folder / "logits.parquet"),
             "mm-csv": write_csv(dumped, folder / "logits.csv")}
    for name, path in files.items():
        import_logits(store_dir, path, name)
    return files


@pytest.mark.parametrize("name", ["mm-parquet", "mm-csv"])
def test_an_imported_dump_equals_the_cache_teacher_cache_computed(store_dir, imported, name):
    store = Store(str(store_dir))
    computed, made = clip_outputs.teacher_folder(TEACHER), clip_outputs.teacher_folder(name)
    for array in ("logits",):
        expected, got = clip_outputs.read_array(store, computed, array), clip_outputs.read_array(store, made, array)
        assert got.dtype == expected.dtype and got.tobytes() == expected.tobytes()
    expected_clips, got_clips = clip_outputs.read_clips(store, computed), clip_outputs.read_clips(store, made)
    assert got_clips.drop_columns(list(PROVENANCE)).equals(expected_clips.drop_columns(list(PROVENANCE)))
    assert set(got_clips.column("teacher_source").to_pylist()) == {"file"}
    assert got_clips.column("flops").null_count == got_clips.num_rows  # unknown, not zero
    assert 0 < np.mean(got_clips.column("z").to_numpy()) < 1  # both labels occur: the comparison means something
    videos, expected_videos = clip_outputs.read_videos(store, made), clip_outputs.read_videos(store, computed)
    assert videos.drop_columns(["seconds"]).equals(expected_videos.drop_columns(["seconds"]))
    assert np.isnan(videos.column("seconds").to_numpy()).all()  # no timings: nothing was run
    assert not clip_outputs.has_array(store, made, "features")
    meta = clip_outputs.read_meta(store, made)
    digest = hashlib.sha256(imported[name].read_bytes()).hexdigest()
    assert meta["from_logits"]["sha256"] == meta["weights_sha256"] == digest
    assert meta["from_logits"]["path"] == str(imported[name])
    assert meta["classes"] == clip_outputs.read_meta(store, computed)["classes"]
    record = stage_record(store, f"teacher-cache/{name}")
    assert record["state"] == "done" and record["config"]["from_logits_sha256"] == digest
    assert not (store_dir / "staging").exists()


def test_importing_again_is_a_no_op_and_another_file_needs_force(store_dir, imported, dumped, tmp_path):
    messages = []
    request = TeacherCacheRequest(TeacherChoice("mm-parquet"), from_logits=str(imported["mm-parquet"]))
    teacher_cache(Store(str(store_dir)), request, quiet=True, log=messages.append)
    assert any("already done" in m for m in messages)
    changed = dumped.copy()
    changed["logits"] = [row + 1.0 for row in changed["logits"]]
    with pytest.raises(StageError, match="different configuration.*from_logits"):
        import_logits(store_dir, write_parquet(changed, tmp_path / "other.parquet"), "mm-parquet")


def _drop_first(frame):
    return frame.iloc[1:]


def _unknown_video(frame):
    extra = frame.iloc[:1].copy()
    extra["video_id"] = frame["video_id"].max() + 100
    return pd.concat([frame, extra])


def _one_clip_too_many(frame):
    video = frame["video_id"].iloc[0]
    extra = frame.iloc[:1].copy()
    extra["clip_index"] = frame.loc[frame["video_id"] == video, "clip_index"].max() + 1
    return pd.concat([frame, extra])


def _duplicate(frame):
    return pd.concat([frame, frame.iloc[:1]])


def _counted_from_one(frame):
    frame = frame.copy()
    video = frame["video_id"].iloc[0]
    frame.loc[frame["video_id"] == video, "clip_index"] += 1
    return frame


def _nine_classes(frame):
    frame = frame.copy()
    frame["logits"] = [row[:-1] for row in frame["logits"]]
    return frame


def _nan(frame):
    frame = frame.copy()
    row = frame["logits"].iloc[3].copy()
    row[2] = np.nan
    frame["logits"] = [row if i == 3 else r for i, r in enumerate(frame["logits"])]
    return frame


FAULTS = {
    "missing": (_drop_first, "missing clip: no row for video \\d+ clip \\d+ \\(1 of the store's \\d+ clips"),
    "extra video": (_unknown_video, "extra clip: video \\d+ is not in the store"),
    "extra clip": (_one_clip_too_many, "extra clip: video \\d+ has \\d+ rows, the store \\d+ clips"),
    "duplicate": (_duplicate, "duplicate clip: video \\d+ clip \\d+ has 2 rows"),
    "misaligned": (_counted_from_one, r"misaligned clip index: video \d+ has clip indices 1\.\.\d+, the store's are 0"),
    "classes": (_nine_classes, "wrong number of classes: 9 logits per clip, the store has 10 classes"),
    "nan": (_nan, "non-finite logit \\(nan\\) at video \\d+ clip \\d+ \\(1 rows have one"),
}


@pytest.mark.parametrize("fmt", ["parquet", "csv"])
@pytest.mark.parametrize("fault", list(FAULTS))
def test_a_malformed_file_is_one_line_naming_it_and_nothing_is_written(store_dir, dumped, tmp_path, fault, fmt):
    make, reason = FAULTS[fault]
    writer = write_parquet if fmt == "parquet" else write_csv
    path = writer(make(dumped), tmp_path / f"bad.{fmt}")
    before = read_run(Store(str(store_dir)))["stages"]
    with pytest.raises(LogitsFileError, match=f"^{path}: {reason}") as caught:
        import_logits(store_dir, path, "mm-bad")
    assert "\n" not in str(caught.value)
    assert not (store_dir / "teacher" / "mm-bad").exists() and not (store_dir / "staging").exists()
    assert read_run(Store(str(store_dir)))["stages"] == before  # not even a record of the attempt


def test_the_command_prints_the_one_line_and_exits_2(store_dir, dumped, tmp_path):
    path = write_parquet(_drop_first(dumped), tmp_path / "short.parquet")
    result = CliRunner().invoke(cli, ["teacher-cache", "--store", str(store_dir), "--teacher", "mm-cli",
                                      "--from-logits", str(path)])
    assert result.exit_code == 2
    assert result.output.strip().splitlines() == [result.output.strip()]
    assert result.output.startswith(f"error: {path}: missing clip")
    assert not (store_dir / "teacher" / "mm-cli").exists()


@pytest.mark.parametrize("options, reason", [
    ({"teacher": TEACHER}, "'resnet10_3d_small' is a registered model"),
    ({"teacher": "mm", "weights": "w.pt"}, "so weights does not apply"),
    ({"teacher": "../mm"}, "not a usable cache name"),
])
def test_options_that_choose_a_model_are_refused(store_dir, imported, options, reason):
    request = TeacherCacheRequest(TeacherChoice(**options), from_logits=str(imported["mm-parquet"]))
    with pytest.raises(ValueError, match=reason):
        teacher_cache(Store(str(store_dir)), request, **QUIET)


def test_kill_before_publishing_leaves_no_cache_and_a_rerun_finishes_it(store_dir, imported, run_cli):
    store = Store(str(store_dir))
    args = ["teacher-cache", "--store", str(store_dir), "--teacher", "mm-killed", "--from-logits",
            str(imported["mm-parquet"])]
    killed = run_cli(*args, env={KILL_ENV: f"{FROM_LOGITS_FAULT}:1"})
    assert killed.returncode == -9, killed.stderr
    assert not clip_outputs.is_complete(store, clip_outputs.teacher_folder("mm-killed"))
    assert stage_record(store, "teacher-cache/mm-killed")["state"] == "running"
    with pytest.raises(StageError, match="no finished teacher cache"):
        cached_teacher(store, "mm-killed")
    resumed = run_cli(*args)
    assert resumed.returncode == 0, resumed.stderr
    assert "resuming" in resumed.stdout
    assert (clip_outputs.read_array(store, clip_outputs.teacher_folder("mm-killed"), "logits").tobytes()
            == clip_outputs.read_array(store, clip_outputs.teacher_folder(TEACHER), "logits").tobytes())
    assert not (store_dir / "staging").exists()


def _student(store_dir: Path, teacher: str, run: str, loss: str = "condi-sr") -> dict:
    request = DistillRequest(loss, "shufflenetv2_3d", teacher, 0.25, name=run, losses=LossOptions(k=2),
                             train=TrainOptions(1, 8, 0.1, seed=2), clips_per_video=1,
                             runtime=RuntimeOptions(threads=2))
    return distill(Store(str(store_dir)), request, **QUIET)


def test_distill_and_report_run_on_an_imported_cache(store_dir, imported):
    """One epoch of ConDi-SR distilled from the imported cache, recorded as made from the file; the report on the
    imported cache has the computed cache's accuracies, and no teacher times (nothing was timed), said in a note."""
    store = Store(str(store_dir))
    assert _student(store_dir, "mm-parquet", "from-file")["epochs"] == 1
    meta = json.loads((store_dir / "students" / "from-file" / "meta.json").read_text())
    assert meta["final"]["train_kd"] > 0 and meta["final"]["train_conf"] > 0  # KD to the imported logits, BCE to z
    assert meta["teacher"] == "mm-parquet"
    assert meta["teacher_weights_sha256"] == hashlib.sha256(imported["mm-parquet"].read_bytes()).hexdigest()

    methods = "oracle,equidistant"  # teacher-only selections: no score run needed
    got = build_report(store, "3", teacher="mm-parquet", k=[1, 2], methods=methods)
    expected = build_report(store, "3", teacher=TEACHER, k=[1, 2], methods=methods)
    accuracies = {(row.method, row.k): row.accuracy for row in got.rows}
    assert len(accuracies) == 5  # dense, and both methods at both K
    assert accuracies == {(row.method, row.k): row.accuracy for row in expected.rows}
    assert all(row.time_per_video_s is not None for row in expected.rows)
    assert all(row["time_per_video_s"] is None for row in got.to_json())  # NaN in JSON is null
    assert any("imported from a logits file" in line for line in got.footer)
    assert not any("imported from a logits file" in line for line in expected.footer)
    assert "n/a (" in render(got, "md")


def test_losses_needing_teacher_features_refuse_an_imported_cache(store_dir, imported):
    with pytest.raises(StageError, match="--loss fewer-frames needs the teacher's features, and teacher cache "
                                         "'mm-csv' has none"):
        _student(store_dir, "mm-csv", "no-features", loss="fewer-frames")
    assert "distill/no-features" not in read_run(Store(str(store_dir)))["stages"]


def test_what_needs_the_teacher_model_refuses_an_imported_cache(store_dir, imported):
    with pytest.raises(StageError, match="imported from .*logits.csv.*no model to run or time"):
        cached_teacher(Store(str(store_dir)), "mm-csv")


def test_repair_imports_a_damaged_cache_again_from_its_file(store_dir, imported):
    store = Store(str(store_dir))
    logits = store_dir / "teacher" / "mm-csv" / "logits.zarr"
    chunk = next(path for path in sorted(logits.rglob("*")) if path.is_file() and path.name != "zarr.json")
    chunk.write_bytes(b"damaged")
    assert [p.stage for p in verify_store(store)] == ["teacher-cache/mm-csv"]
    assert repair_store(store, log=lambda message: None) == []
    assert (clip_outputs.read_array(store, clip_outputs.teacher_folder("mm-csv"), "logits").tobytes()
            == clip_outputs.read_array(store, clip_outputs.teacher_folder(TEACHER), "logits").tobytes())
