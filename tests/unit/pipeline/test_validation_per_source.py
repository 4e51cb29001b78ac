"""The validation part carved from train (pipeline.splits) on every dataset layout: each source's generated layout
(tiny real videos, laid out as in tests/unit/video/test_sources.py) extracted by the CLI, then carved as
teacher-train and distill carve it. Per source: the split results are reported on (test, or val-as-test for
Something-Something and Kinetics as the paper does), the dataset's own groups kept whole, every class with two or
more train groups giving some, and no video of any split but train in the fit or validation parts."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from condi_pipe.cli import main as cli
from condi_pipe.pipeline.splits import DEFAULT_VALIDATION_FRACTION, training_splits, video_group
from condi_pipe.storage.manifests import available_splits, eval_split, load_videos, video_paths
from condi_pipe.storage.store import Store


def place(root: Path, rel: str, src: Path) -> None:
    dest = root / rel
    dest.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(src, dest)


def ucf101(root: Path, videos: dict) -> tuple[None, dict]:
    """Two classes, groups g01..g03 of two clips each; split 1 tests on g01 (as the release's splits keep a group
    on one side)."""
    classes = ["YoYo", "Archery"]
    (root / "classInd.txt").parent.mkdir(parents=True, exist_ok=True)
    (root / "classInd.txt").write_text("".join(f"{i} {c}\r\n" for i, c in enumerate(classes, 1)))
    train, test, groups = [], [], {}
    for c in classes:
        for g in (1, 2, 3):
            for clip in (1, 2):
                rel = f"{c}/v_{c}_g{g:02d}_c{clip:02d}.avi"
                place(root, rel, videos[".avi"])
                groups[rel] = f"{c}_g{g:02d}"
                (test if g == 1 else train).append(rel)
    (root / "trainlist01.txt").write_text("".join(f"{v} {classes.index(v.split('/')[0]) + 1}\r\n" for v in train))
    (root / "testlist01.txt").write_text("".join(f"{v}\r\n" for v in test))
    return None, groups


def hmdb51(root: Path, videos: dict) -> tuple[None, dict]:
    """Two classes, three source videos of two clips each (the clips differ in tags and number); tag 2 (test)
    for the first source, 1 (train) for the others, and an unused (tag 0) clip."""
    groups = {}
    for cls in ("brush_hair", "cartwheel"):
        lines = []
        for s, (source, tag) in enumerate((("Tutorial", "2"), ("April_09", "1"), ("Beth", "1"))):
            for clip, tags in enumerate(("u_nm_np1_ba_goo", "f_cm_np1_le_med")):
                name = f"{source}_{cls}_{tags}_{clip}.avi"
                place(root, f"{cls}/{name}", videos[".avi"])
                groups[f"{cls}/{name}"] = f"{source}_{cls}"
                lines.append(f"{name} {tag} \n")
        place(root, f"{cls}/unused_{cls}_h_nm_np2_fr_bad_0.avi", videos[".avi"])
        lines.append(f"unused_{cls}_h_nm_np2_fr_bad_0.avi 0 \n")
        (root / f"{cls}_test_split1.txt").write_text("".join(lines))
    return None, groups


def kinetics(root: Path, videos: dict) -> tuple[Path, dict]:
    """The official train and validate CSV rows (no test rows, as the paper's Kinetics): per class two YouTube ids
    with two clips each in train, one clip in validate; flat layout."""
    rows, groups = ["label,youtube_id,time_start,time_end,split\n"], {}
    for c, label in enumerate(("abseiling", "air drumming")):
        for y in range(2):
            youtube_id = f"{label[:2]}{y}".ljust(11, "x")
            for start in (0, 20):
                rel = f"{youtube_id}_{start:06d}_{start + 10:06d}.mp4"
                place(root, rel, videos[".mp4"])
                groups[rel] = youtube_id
                rows.append(f"{label},{youtube_id},{start},{start + 10},train\n")
        rel = f"{f'val{c}'.ljust(11, 'x')}_000000_000010.mp4"
        place(root, rel, videos[".mp4"])
        groups[rel] = f"val{c}".ljust(11, "x")
        rows.append(f"{label},{f'val{c}'.ljust(11, 'x')},0,10,validate\n")
    annotations = root.parent / "kinetics.csv"
    annotations.write_text("".join(rows))
    return annotations, groups


def ssv2(root: Path, videos: dict) -> tuple[None, dict]:
    """labels.json, train.json (three videos per template) and validation.json (the paper's test set)."""
    labels = {"Holding something": "0", "Pushing something from left to right": "1"}
    templates = ["Holding [something]", "Pushing [something] from left to right"]
    train = [{"id": str(100 + 10 * t + i), "template": templates[t]} for t in range(2) for i in range(3)]
    validation = [{"id": str(200 + t), "template": templates[t]} for t in range(2)]
    for item in train + validation:
        place(root, f"{item['id']}.webm", videos[".webm"])
    (root / "labels.json").write_text(json.dumps(labels))
    (root / "train.json").write_text(json.dumps(train))
    (root / "validation.json").write_text(json.dumps(validation))
    return None, {f"{item['id']}.webm": f"{item['id']}.webm" for item in train + validation}


def folder(root: Path, videos: dict) -> tuple[None, dict]:
    """Eight videos per class folder; the 70/30 train / test split by path hash (one test video per class here)."""
    rels = [f"{cls}/{cls}_{i}.mp4" for cls in ("jump", "sit") for i in range(8)]
    for rel in rels:
        place(root, rel, videos[".mp4"])
    return None, {rel: rel for rel in rels}


def csv_layout(root: Path, videos: dict) -> tuple[Path, dict]:
    """A CSV with a split column naming train, val and test videos."""
    rows = [(f"{cls}/{i}.mp4", cls, "train" if i < 4 else ("val" if i == 4 else "test"))
            for cls in ("jump", "sit") for i in range(6)]
    for rel, *_ in rows:
        place(root, rel, videos[".mp4"])
    annotations = root.parent / "list.csv"
    with open(annotations, "w", newline="") as fh:
        csv.writer(fh).writerows([("path", "label", "split"), *rows])
    return annotations, {rel: rel for rel, *_ in rows}


# source -> (layout, the split results are reported on)
LAYOUTS = {"ucf101": (ucf101, "test"), "hmdb51": (hmdb51, "test"), "kinetics": (kinetics, "val"),
           "ssv2": (ssv2, "val"), "folder": (folder, "test"), "csv": (csv_layout, "test")}


@pytest.fixture(scope="module")
def stores(tiny_videos, tmp_path_factory) -> dict:
    """Every source's layout extracted by `condi-pipe extract` (in this process): {source: (store, {path: the
    dataset's group})}."""
    out = {}
    for source, (layout, _) in LAYOUTS.items():
        folder_ = tmp_path_factory.mktemp(source)
        annotations, groups = layout(folder_ / "data", tiny_videos)
        args = ["extract", "--source", source, "--root", str(folder_ / "data"), "--store", str(folder_ / "store"),
                "--clips-per-shard", "8", "--workers", "0", "--quiet"]
        result = CliRunner().invoke(cli, args + (["--annotations", str(annotations)] if annotations else []))
        assert result.exit_code == 0 and "0 failures" in result.output, result.output
        out[source] = Store(str(folder_ / "store")), groups
    return out


def split_paths(store: Store, split: str) -> set[str]:
    return set(video_paths(store, load_videos(store, split)).tolist())


@pytest.mark.parametrize("source", list(LAYOUTS))
def test_the_carve_keeps_groups_whole_takes_every_class_and_never_sees_the_test_split(stores, source):
    store, groups = stores[source]
    evaluated = LAYOUTS[source][1]
    assert evaluated in available_splits(store)
    assert eval_split(store) == evaluated  # SSv2 and Kinetics: their validation set is the test set
    splits = training_splits(store, DEFAULT_VALIDATION_FRACTION, seed=0)
    assert splits.validation is not None, source
    fit, validation = (set(video_paths(store, part).tolist()) for part in (splits.fit, splits.validation))
    train = split_paths(store, "train")
    assert fit | validation == train and not fit & validation
    # Nothing but train is fitted on or chosen on: not the evaluated split, nor a dataset's own val beside a test
    for other in set(available_splits(store)) - {"train"}:
        assert not split_paths(store, other) & (fit | validation), (source, other)
    # The dataset's groups: what video_group reads from the paths, kept whole
    assert {p: video_group(p) for p in train} == {p: groups[p] for p in train}
    assert not {groups[p] for p in fit} & {groups[p] for p in validation}
    # Stratified: every class with two or more train groups gives at least one, and never all of its groups
    labels = dict(zip(video_paths(store, load_videos(store, "train")).tolist(), load_videos(store, "train").label))
    for label in set(labels.values()):
        class_groups = {groups[p] for p in train if labels[p] == label}
        carved = {groups[p] for p in validation if labels[p] == label}
        if len(class_groups) >= 2:
            assert 1 <= len(carved) < len(class_groups), (source, label)


@pytest.mark.parametrize("source", ["ucf101", "hmdb51", "kinetics"])
def test_grouped_datasets_carve_whole_groups_of_several_videos(stores, source):
    """UCF-101's gXX, HMDB-51's source video and Kinetics' YouTube id each hold two train videos here: the
    validation part holds both or neither, for every seed."""
    store, groups = stores[source]
    for seed in range(4):
        splits = training_splits(store, DEFAULT_VALIDATION_FRACTION, seed=seed)
        validation = video_paths(store, splits.validation).tolist()
        carved = {groups[p] for p in validation}
        assert sorted(validation) == sorted(p for p, g in groups.items() if g in carved)
        assert len(validation) == 2 * len(carved)


def test_the_carve_follows_its_seed(stores):
    store, _ = stores["ucf101"]
    carves = {tuple(training_splits(store, DEFAULT_VALIDATION_FRACTION, seed=s).validation.video_id.tolist())
              for s in range(6)}
    assert len(carves) > 1
    first = training_splits(store, DEFAULT_VALIDATION_FRACTION, seed=0).validation.video_id
    assert np.array_equal(first, training_splits(store, DEFAULT_VALIDATION_FRACTION, seed=0).validation.video_id)
