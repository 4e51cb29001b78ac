"""Bad inputs end to end, through the CLI: the foundation issue's corpus of bad videos inside a dataset that goes
through every stage (in real processes, ``pipeline_store``), then a checkpoint that needs pickle execution, bad
config files, K larger than the videos' clip counts and a store from a newer format version, each refused by the
CLI in this process (``CliRunner``: the refusals happen before any work, so a new process would only add its start;
a refusal's one line from a real process is tests/stages/test_oof_labels.py's). Each gives one line naming the
input (exit status 2), and nothing already stored changes."""

from __future__ import annotations

import argparse
import json
import shutil

import pyarrow.parquet as pq
import pytest
import torch
from click.testing import CliRunner

from condi_pipe.cli import main as cli
from condi_pipe.models import build_model

pytestmark = pytest.mark.slow


def _invoke(*args: str):
    """``condi-pipe ARGS`` in this process: a click Result (exit_code, stdout, stderr apart)."""
    return CliRunner().invoke(cli, list(args))


def _one_line_error(result, *names: str) -> str:
    """The error line of a refused command: exit status 2, one line on stderr, naming every one of ``names``."""
    assert result.exit_code == 2, (result.exit_code, result.stdout, result.stderr, result.exception)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    for name in names:
        assert name in lines[0], (name, lines[0])
    return lines[0]


# -- the bad-video corpus, through every stage ----------------------------------------------------------------
def test_every_bad_video_is_one_failure_row_and_the_good_ones_reach_the_scores(pipeline_store, corpus_root,
                                                                              bad_inputs, synth_root):
    failures = pq.read_table(pipeline_store / "failures.parquet").to_pylist()
    rows = {row["path"]: row for row in failures}
    for folder, name, _, _, severity, kind in bad_inputs:
        row = rows.pop(f"{folder}/{name}")
        assert (row["severity"], row["kind"]) == (severity, kind), row
        assert name in row["message"] and "\n" not in row["message"], row
    assert not rows  # no good video was blamed

    kept = [f"{folder}/{name}" for folder, name, _, _, severity, _ in bad_inputs if severity == "warning"]
    good = sorted([str(p.relative_to(synth_root)) for p in synth_root.rglob("*.mp4")] + kept)
    videos = pq.read_table(pipeline_store / "videos.parquet").to_pandas()
    assert sorted(videos["path"]) == good
    # every good test video was cached and scored, each clip once
    test_clips = int(videos.loc[videos["split"] == "test", "clips"].sum())
    scores = pq.read_table(pipeline_store / "scores" / "conf" / "clips.parquet").to_pandas()
    assert len(scores) == test_clips and scores["clip_id"].is_unique
    teacher = pq.read_table(pipeline_store / "teacher" / "resnet10_3d_small" / "clips.parquet").to_pandas()
    assert len(teacher) == int(videos["clips"].sum()) and teacher["clip_id"].is_unique


# -- bad inputs against a finished store ------------------------------------------------------------------------
@pytest.fixture
def pickle_checkpoint(tmp_path):
    """A real checkpoint whose loading needs pickle execution (an argparse.Namespace, as old releases saved)."""
    path = tmp_path / "needs_pickle.pth"
    state = build_model("resnet10_3d_small", num_classes=10).state_dict()
    torch.save({"state_dict": state, "opt": argparse.Namespace(lr=0.1)}, path)
    return path


@pytest.mark.parametrize("command", [
    ("teacher-cache", "--teacher", "resnet10_3d_small", "--force", "--workers", "0"),
    ("teacher-train", "--teacher", "resnet10_3d_small", "--epochs", "1"),
    ("distill", "--loss", "condi-sr", "--student", "shufflenetv2_3d", "--width", "0.25", "--teacher",
     "resnet10_3d_small", "--name", "conf", "--epochs", "1", "--force"),
], ids=lambda c: c[0])
def test_checkpoint_needing_pickle_is_refused_and_the_store_is_untouched(command, pickle_checkpoint, pipeline_store,
                                                                        fingerprint):
    before = fingerprint(pipeline_store)
    result = _invoke(*command, "--weights", str(pickle_checkpoint), "--store", str(pipeline_store), "--quiet")
    line = _one_line_error(result, str(pickle_checkpoint))
    assert "pickle" in line
    assert fingerprint(pipeline_store) == before


VALID_CONFIG = "store = 'x'\n[extract]\nsource = 'ucf101'\nroot = '.'\n[teacher]\nname = 'resnet10_3d_small'\n"


@pytest.mark.parametrize("body, names", [
    (VALID_CONFIG + "[distill]\nstudent = 'shufflenetv2_3d'\nepohcs = 2\n", ["epohcs", "distill"]),
    (VALID_CONFIG.replace("[teacher]", "workers = 'two'\n[teacher]"), ["workers", "two"]),
    (VALID_CONFIG.replace("name = 'resnet10_3d_small'", "name = 3"), ["name", "teacher"]),
    (VALID_CONFIG + "[teacher_train]\nepochs = 0\n", ["epochs"]),
    (VALID_CONFIG + "[extract\n", []),
], ids=["unknown-key", "wrong-type", "wrong-type-nested", "out-of-range", "not-toml"])
def test_bad_config_file_is_one_line_naming_the_file(body, names, tmp_path):
    path = tmp_path / "bad.toml"
    path.write_text(body)
    result = _invoke("run", "--config", str(path))
    _one_line_error(result, str(path), *names)
    assert not (tmp_path / "x").exists()  # validated before anything ran


def test_k_values_all_larger_than_every_video_are_refused(pipeline_store, fingerprint):
    before = fingerprint(pipeline_store)
    longest = int(pq.read_table(pipeline_store / "videos.parquet").column("clips").to_numpy().max())
    result = _invoke("report", "--store", str(pipeline_store), "--table", "3", "--k", f"{longest + 1},{longest + 5}")
    _one_line_error(result, f"{longest + 1},{longest + 5}", str(longest))
    assert fingerprint(pipeline_store) == before


def test_k_larger_than_a_short_video_uses_all_its_clips(pipeline_store):
    """K above some videos' clip counts is normal (short videos): they send every clip, and the table says so."""
    clips = pq.read_table(pipeline_store / "videos.parquet").to_pandas()
    clips = clips.loc[clips["split"] == "test", "clips"]
    k = int(clips.min()) + 1
    assert k <= clips.max()
    result = _invoke("report", "--store", str(pipeline_store), "--table", "3", "--k", str(k))
    assert result.exit_code == 0, result.output
    short = int((clips < k).sum())
    assert f"K={k}: {short} of {len(clips)} videos have fewer than {k} clips and use all of them." in result.stdout


@pytest.fixture
def newer_store(pipeline_store, tmp_path):
    store = tmp_path / "store"
    shutil.copytree(pipeline_store, store)
    run = json.loads((store / "run.json").read_text())
    run["format_version"] += 1
    (store / "run.json").write_text(json.dumps(run))
    return store


@pytest.mark.parametrize("command", [
    ("status",),
    ("verify",),
    ("report", "--table", "3"),
    ("teacher-cache", "--teacher", "resnet10_3d_small", "--random-init", "--workers", "0"),
    ("distill", "--loss", "st-ent", "--student", "shufflenetv2_3d", "--width", "0.25", "--teacher",
     "resnet10_3d_small", "--epochs", "1"),
    ("score", "--student", "conf", "--workers", "0"),
], ids=lambda c: c[0])
def test_store_from_a_newer_format_version_is_refused_untouched(command, newer_store, fingerprint):
    before = fingerprint(newer_store)
    name, *args = command
    result = _invoke(name, "--store", str(newer_store), *args)
    line = _one_line_error(result, str(newer_store / "run.json"))
    assert "newer" in line
    assert fingerprint(newer_store) == before
