"""Dataset layouts -> list of videos with 0-based labels, splits and failure records (condi_pipe.video.sources)."""

from __future__ import annotations

import csv
import hashlib
import json
import shutil
from pathlib import Path

import pytest

from condi_pipe.video.sources import SourceError, SourceFailure, VideoEntry, plan_source


def place(root: Path, rel: str, src: Path) -> Path:
    """Copy the real video ``src`` to ``root/rel``."""
    dest = root / rel
    dest.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(src, dest)
    return dest


def write(path: Path, text: str, newline: str = "\n") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(text.replace("\n", newline).encode())
    return path


def expected_hash_split(rel: str) -> str:
    """The documented split of layouts without one: 30% test by the SHA-256 of the relative path."""
    value = int.from_bytes(hashlib.sha256(rel.encode()).digest()[:8], "big") / 2**64
    return "test" if value < 0.3 else "train"


def kinds(plan) -> list[tuple[str, str]]:
    return [(f.path, f.kind) for f in plan.failures]


def assert_one_line_messages(plan) -> None:
    for failure in plan.failures:
        assert isinstance(failure, SourceFailure)
        assert failure.message and "\n" not in failure.message and "\r" not in failure.message


# --- UCF-101 ----------------------------------------------------------------------------------------------

# classInd order is not alphabetical, so labels must come from the numbers, not from sorting names.
UCF_CLASSES = ["YoYo", "Archery", "Biking"]
UCF_VIDEOS = [f"{c}/v_{c}_g{g:02d}_c01.avi" for c in UCF_CLASSES for g in (1, 8)]


def make_ucf(root: Path, avi: Path, list_dir: Path | None = None) -> Path:
    """UCF-101 with split 1 = groups 8 train / 1 test and split 2 the other way round; CRLF like the release."""
    list_dir = list_dir or root
    for rel in UCF_VIDEOS:
        place(root, rel, avi)
    write(list_dir / "classInd.txt", "".join(f"{i} {c}\n" for i, c in enumerate(UCF_CLASSES, 1)), "\r\n")
    for split, (train_g, test_g) in ((1, ("g08", "g01")), (2, ("g01", "g08"))):
        train = [f"{v} {UCF_CLASSES.index(v.split('/')[0]) + 1}\n" for v in UCF_VIDEOS if train_g in v]
        test = [f"{v}\n" for v in UCF_VIDEOS if test_g in v]
        write(list_dir / f"trainlist{split:02d}.txt", "".join(train), "\r\n")
        write(list_dir / f"testlist{split:02d}.txt", "".join(test), "\r\n")
    return root


def ucf_expected(train_group: str) -> list[VideoEntry]:
    return [VideoEntry(v, UCF_CLASSES.index(v.split("/")[0]), v.split("/")[0],
                       "train" if train_group in v else "test") for v in sorted(UCF_VIDEOS)]


def test_ucf101_lists_in_the_root(tmp_path, tiny_videos):
    root = make_ucf(tmp_path / "UCF-101", tiny_videos[".avi"])
    assert b"\r\n" in (root / "classInd.txt").read_bytes()
    plan = plan_source("ucf101", root)
    assert plan.root == str(root)
    assert plan.classes == UCF_CLASSES
    assert plan.entries == ucf_expected("g08")
    assert plan.entries[0] == VideoEntry("Archery/v_Archery_g01_c01.avi", 1, "Archery", "test")
    assert plan.failures == []


def test_ucf101_ucftraintestlist_subfolder_and_split_2(tmp_path, tiny_videos):
    root = tmp_path / "UCF-101"
    make_ucf(root, tiny_videos[".avi"], list_dir=root / "ucfTrainTestlist")
    assert plan_source("ucf101", root).entries == ucf_expected("g08")
    plan = plan_source("ucf101", root, split=2)
    assert plan.entries == ucf_expected("g01")
    assert plan.classes == UCF_CLASSES and plan.failures == []


def test_ucf101_explicit_annotation_folder(tmp_path, tiny_videos):
    root = make_ucf(tmp_path / "videos", tiny_videos[".avi"], list_dir=tmp_path / "lists")
    plan = plan_source("ucf101", root, annotations=tmp_path / "lists", split=2)
    assert plan.entries == ucf_expected("g01") and plan.failures == []
    with pytest.raises(SourceError, match="classInd.txt"):
        plan_source("ucf101", root)  # not in the root nor in ucfTrainTestlist/


def test_ucf101_bad_rows_become_failures(tmp_path, tiny_videos):
    root = tmp_path / "UCF-101"
    for rel in UCF_VIDEOS:
        place(root, rel, tiny_videos[".avi"])
    place(tmp_path, "outside.avi", tiny_videos[".avi"])  # exists, but outside the root
    write(root / "classInd.txt", "2 Archery\n3 Biking\n1 YoYo\n", "\r\n")  # labels follow the numbers
    write(root / "trainlist01.txt", "\n".join([
        "YoYo/v_YoYo_g08_c01.avi 1",
        "Skiing/v_Skiing_g08_c01.avi 4",  # index 4 is not in classInd
        "Archery/v_Archery_g09_c01.avi 2",  # no such file
        "YoYo/v_YoYo_g08_c01.avi 1",  # listed twice
        "../outside.avi 1",
        "Biking/v_Biking_g08_c01.avi 3",
        "Biking/v_Biking_g01_c01.avi 9",  # the index, not the folder, names the class: 9 is unknown
    ]) + "\n", "\r\n")
    write(root / "testlist01.txt", "\n".join([
        "YoYo/v_YoYo_g01_c01.avi",
        "Skiing/v_Skiing_g01_c01.avi",  # class from the folder name, not in classInd
        "YoYo/v_YoYo_g08_c01.avi",  # already in the train list: the first (train) is kept
    ]) + "\n", "\r\n")
    plan = plan_source("ucf101", root)
    assert plan.classes == UCF_CLASSES
    assert plan.entries == [
        VideoEntry("Biking/v_Biking_g08_c01.avi", 2, "Biking", "train"),
        VideoEntry("YoYo/v_YoYo_g01_c01.avi", 0, "YoYo", "test"),
        VideoEntry("YoYo/v_YoYo_g08_c01.avi", 0, "YoYo", "train"),
    ]
    assert kinds(plan) == [
        ("Skiing/v_Skiing_g08_c01.avi", "unknown-class"),
        ("Archery/v_Archery_g09_c01.avi", "missing-file"),
        ("YoYo/v_YoYo_g08_c01.avi", "duplicate-row"),
        ("../outside.avi", "path-escapes-root"),
        ("Biking/v_Biking_g01_c01.avi", "unknown-class"),
        ("Skiing/v_Skiing_g01_c01.avi", "unknown-class"),
        ("YoYo/v_YoYo_g08_c01.avi", "duplicate-row"),
    ]
    assert_one_line_messages(plan)
    # Each message says where the row is; a missing file's message starts with its full path.
    rows = [f"trainlist01.txt:{n}" for n in (2, 3, 4, 5, 7)] + ["testlist01.txt:2", "testlist01.txt:3"]
    for failure, row in zip(plan.failures, rows):
        assert row in failure.message, (row, failure.message)
    assert plan.failures[0].message.startswith("trainlist01.txt:2: ")
    assert plan.failures[1].message.startswith(f"{root / 'Archery/v_Archery_g09_c01.avi'}: ")


# --- HMDB-51 ----------------------------------------------------------------------------------------------

HMDB = {  # class -> [(video, split-1 tag, split-2 tag)]
    "brush_hair": [("April_09_brush_hair_u_nm_np1_ba_goo_0.avi", "1", "2"),
                   ("Brushing_Hair_with_Beth_brush_hair_h_nm_np1_le_goo_0.avi", "2", "1"),
                   ("unused_brush_hair_f_nm_np1_ri_med_0.avi", "0", "1")],
    "cartwheel": [("Acrobacias_de_un_fenomeno_cartwheel_f_cm_np1_ba_bad_8.avi", "1", "0"),
                  ("Bodenturnen_2004_cartwheel_f_cm_np1_le_med_0.avi", "0", "2"),
                  ("Cartwheel_Tutorial_cartwheel_f_cm_np1_ri_med_1.avi", "2", "1")],
}


def make_hmdb(root: Path, avi: Path, list_dir: Path) -> None:
    for cls, rows in HMDB.items():
        for video, *_ in rows:
            place(root, f"{cls}/{video}", avi)
        for split in (1, 2):
            # The release's lines end with a space: "<video>.avi 1 ".
            write(list_dir / f"{cls}_test_split{split}.txt", "".join(f"{r[0]} {r[split]} \n" for r in rows))


@pytest.mark.parametrize("separate_lists", [False, True])
@pytest.mark.parametrize("split", [1, 2])
def test_hmdb51_tags_select_train_test_and_drop_unused(tmp_path, tiny_videos, split, separate_lists):
    root = tmp_path / "hmdb51"
    list_dir = tmp_path / "testTrainMulti_7030_splits" if separate_lists else root
    make_hmdb(root, tiny_videos[".avi"], list_dir)
    plan = plan_source("hmdb51", root, annotations=list_dir if separate_lists else None, split=split)
    assert plan.classes == ["brush_hair", "cartwheel"]
    expected = sorted(
        VideoEntry(f"{cls}/{row[0]}", i, cls, {"1": "train", "2": "test"}[row[split]])
        for i, (cls, rows) in enumerate(HMDB.items()) for row in rows if row[split] != "0")
    assert plan.entries == expected
    assert len(plan.entries) == 4 if split == 1 else 5
    assert plan.failures == []  # tag 0 is "unused", not a failure


def test_hmdb51_missing_video_and_unused_missing_video(tmp_path, tiny_videos):
    root = tmp_path / "hmdb51"
    make_hmdb(root, tiny_videos[".avi"], root)
    (root / "cartwheel/Acrobacias_de_un_fenomeno_cartwheel_f_cm_np1_ba_bad_8.avi").unlink()  # tag 1 in split 1
    (root / "brush_hair/unused_brush_hair_f_nm_np1_ri_med_0.avi").unlink()  # tag 0 in split 1
    plan = plan_source("hmdb51", root)
    assert kinds(plan) == [("cartwheel/Acrobacias_de_un_fenomeno_cartwheel_f_cm_np1_ba_bad_8.avi", "missing-file")]
    assert plan.failures[0].message.endswith("(listed in cartwheel_test_split1.txt:1)")
    assert len(plan.entries) == 3


# --- Kinetics ---------------------------------------------------------------------------------------------

KINETICS_HEADER = "label,youtube_id,time_start,time_end,split\n"


def test_kinetics_nested_layout(tmp_path, tiny_videos):
    root, mp4 = tmp_path / "kinetics400", tiny_videos[".mp4"]
    place(root, "train/abseiling/--07WQ2iBlw_000001_000011.mp4", mp4)
    place(root, "train/air drumming/-0Bx9D5u0yk_000030_000040.mp4", mp4)  # label folder with a space
    place(root, "train/air_drumming/0a1b2c3d4e5_000100_000110.mp4", mp4)  # ... or an underscore
    place(root, "validate/abseiling/zzzzzzzzzzz_000005_000015.mp4", mp4)
    place(root, "test/air drumming/ttttttttttt_000000_000010.mp4", mp4)
    annotations = write(tmp_path / "kinetics_400.csv", KINETICS_HEADER + "".join([
        "abseiling,--07WQ2iBlw,1,11,train\n",
        "air drumming,-0Bx9D5u0yk,30,40,train\n",
        "air drumming,0a1b2c3d4e5,100,110,train\n",
        "abseiling,missing0000,7,17,train\n",
        "abseiling,zzzzzzzzzzz,5.0,15.0,validate\n",
        "air drumming,ttttttttttt,0,10,test\n",
    ]))
    plan = plan_source("kinetics", root, annotations=annotations)
    assert plan.classes == ["abseiling", "air drumming"]
    assert plan.entries == [
        VideoEntry("test/air drumming/ttttttttttt_000000_000010.mp4", 1, "air drumming", "test"),
        VideoEntry("train/abseiling/--07WQ2iBlw_000001_000011.mp4", 0, "abseiling", "train"),
        VideoEntry("train/air drumming/-0Bx9D5u0yk_000030_000040.mp4", 1, "air drumming", "train"),
        VideoEntry("train/air_drumming/0a1b2c3d4e5_000100_000110.mp4", 1, "air drumming", "train"),
        VideoEntry("validate/abseiling/zzzzzzzzzzz_000005_000015.mp4", 0, "abseiling", "val"),
    ]
    assert kinds(plan) == [("train/abseiling/missing0000_000007_000017.mp4", "missing-file")]
    assert "kinetics_400.csv:5" in plan.failures[0].message
    assert_one_line_messages(plan)


def test_kinetics_flat_layout_and_bad_rows(tmp_path, tiny_videos):
    root = tmp_path / "k400_flat"
    for stem in ("aaaaaaaaaaa_000000_000010", "bbbbbbbbbbb_000012_000022", "ccccccccccc_000003_000013"):
        place(root, f"{stem}.mp4", tiny_videos[".mp4"])
    annotations = write(tmp_path / "validate.csv", KINETICS_HEADER + "".join([
        "bowling,aaaaaaaaaaa,0,10,validate\n",
        "archery,bbbbbbbbbbb,12,22,train\n",
        "bowling,ccccccccccc,3,13,test\n",
        "archery,ddddddddddd,not-a-number,10,train\n",
    ]))
    plan = plan_source("kinetics", root, annotations=annotations)
    assert plan.classes == ["archery", "bowling"]
    assert plan.entries == [
        VideoEntry("aaaaaaaaaaa_000000_000010.mp4", 1, "bowling", "val"),
        VideoEntry("bbbbbbbbbbb_000012_000022.mp4", 0, "archery", "train"),
        VideoEntry("ccccccccccc_000003_000013.mp4", 1, "bowling", "test"),
    ]
    assert kinds(plan) == [("row 5", "bad-row")]
    assert plan.failures[0].message.startswith("validate.csv:5: ")
    assert_one_line_messages(plan)


# --- Something-Something V2 -------------------------------------------------------------------------------

SSV2_LABELS = {"Holding something": "0", "Putting something on something": "1",
               "Pushing something from left to right": "2"}


def make_ssv2(root: Path, webm: Path, label_dir: Path) -> None:
    for vid in ("101", "102", "201", "202", "203"):
        place(root, f"{vid}.webm", webm)
    write(label_dir / "labels.json", json.dumps(SSV2_LABELS, indent=4))
    write(label_dir / "train.json", json.dumps([
        {"id": "101", "label": "putting a cup on a table", "template": "Putting [something] on [something]",
         "placeholders": ["a cup", "a table"]},
        {"id": "102", "label": "holding a pen", "template": "Holding [something]", "placeholders": ["a pen"]},
        {"id": "103", "label": "holding a phone", "template": "Holding [something]", "placeholders": ["a phone"]},
    ]))
    write(label_dir / "validation.json", json.dumps([
        {"id": "201", "label": "pushing a box from left to right",
         "template": "Pushing [something] from left to right", "placeholders": ["a box"]},
        {"id": "202", "label": "spinning a top", "template": "Spinning [something] so it continues spinning",
         "placeholders": ["a top"]},
        {"id": "203", "label": "putting a lid on a pot", "template": "Putting [something] on [something]",
         "placeholders": ["a lid", "a pot"]},
    ]))


@pytest.mark.parametrize("label_dir", ["labels", "annotations", "."])
def test_ssv2_templates_map_to_labels(tmp_path, tiny_videos, label_dir):
    root = tmp_path / "20bn-something-something-v2"
    make_ssv2(root, tiny_videos[".webm"], root / label_dir)
    plan = plan_source("ssv2", root)
    assert plan.classes == ["Holding something", "Putting something on something",
                            "Pushing something from left to right"]
    assert plan.entries == [
        VideoEntry("101.webm", 1, "Putting something on something", "train"),
        VideoEntry("102.webm", 0, "Holding something", "train"),
        VideoEntry("201.webm", 2, "Pushing something from left to right", "val"),
        VideoEntry("203.webm", 1, "Putting something on something", "val"),
    ]
    assert kinds(plan) == [("103.webm", "missing-file"), ("202.webm", "unknown-class")]
    assert plan.failures[1].message.startswith("validation.json[1]: ")
    assert_one_line_messages(plan)


def test_ssv2_explicit_annotations_and_invalid_json(tmp_path, tiny_videos):
    root = tmp_path / "videos"
    make_ssv2(root, tiny_videos[".webm"], tmp_path / "something-v2-labels")
    plan = plan_source("ssv2", root, annotations=tmp_path / "something-v2-labels")
    assert [e.path for e in plan.entries] == ["101.webm", "102.webm", "201.webm", "203.webm"]
    bad = write(tmp_path / "something-v2-labels" / "labels.json", '{"Holding something": "0",')
    with pytest.raises(SourceError) as excinfo:
        plan_source("ssv2", root, annotations=tmp_path / "something-v2-labels")
    assert str(bad) in str(excinfo.value) and "\n" not in str(excinfo.value)


# --- folder -----------------------------------------------------------------------------------------------


def test_folder_layout(tmp_path, tiny_videos):
    root = tmp_path / "my_dataset"
    place(root, "walk/a.mp4", tiny_videos[".mp4"])
    place(root, "walk/b.AVI", tiny_videos[".avi"])  # extension case does not matter
    place(root, "walk/notes.txt", tiny_videos[".mp4"])  # not a video extension: ignored
    place(root, "run/c.webm", tiny_videos[".webm"])
    place(root, ".cache/d.mp4", tiny_videos[".mp4"])  # hidden folder: not a class
    place(root, "top_level.mp4", tiny_videos[".mp4"])  # not inside a class folder: ignored
    (root / "zzz_empty").mkdir()
    plan = plan_source("folder", root)
    assert plan.classes == ["run", "walk", "zzz_empty"]
    assert plan.entries == [
        VideoEntry("run/c.webm", 0, "run", expected_hash_split("run/c.webm")),
        VideoEntry("walk/a.mp4", 1, "walk", expected_hash_split("walk/a.mp4")),
        VideoEntry("walk/b.AVI", 1, "walk", expected_hash_split("walk/b.AVI")),
    ]
    assert plan.failures == []


def test_hash_split_is_70_30_and_depends_only_on_the_relative_path(tmp_path, tiny_videos):
    names = [f"clip_{i:03d}.mp4" for i in range(100)]
    for root in (tmp_path / "one", tmp_path / "two"):
        for name in names:
            place(root, f"cls/{name}", tiny_videos[".mp4"])
    one, two = plan_source("folder", tmp_path / "one"), plan_source("folder", tmp_path / "two")
    splits = [e.split for e in one.entries]
    assert splits == [e.split for e in two.entries] == [e.split for e in plan_source("folder", tmp_path / "one").entries]
    assert splits == [expected_hash_split(f"cls/{n}") for n in names]
    assert 15 <= splits.count("test") <= 45 and set(splits) == {"train", "test"}


# --- csv --------------------------------------------------------------------------------------------------


@pytest.fixture
def csv_tree(tmp_path, tiny_videos) -> Path:
    root = tmp_path / "data"
    for rel in ("jump/1.mp4", "jump/2.mp4", "sit/3.mp4", "sit/4.avi"):
        place(root, rel, tiny_videos[".mp4"])
    return root


@pytest.mark.parametrize("header", [True, False])
def test_csv_with_split_column(tmp_path, csv_tree, header):
    rows = [["jump/1.mp4", "jump", "train"], ["jump/2.mp4", "jump", "validation"], ["sit/3.mp4", "sit", "Test"],
            ["sit/4.avi", "sit", "somewhere"]]  # an unknown split name falls back to the hash split
    path = tmp_path / "list.csv"
    with open(path, "w", newline="") as fh:
        writer = csv.writer(fh)
        if header:
            writer.writerow(["path", "label", "split"])
        writer.writerows(rows)
    plan = plan_source("csv", csv_tree, annotations=path)
    assert plan.classes == ["jump", "sit"]
    assert plan.entries == [
        VideoEntry("jump/1.mp4", 0, "jump", "train"),
        VideoEntry("jump/2.mp4", 0, "jump", "val"),
        VideoEntry("sit/3.mp4", 1, "sit", "test"),
        VideoEntry("sit/4.avi", 1, "sit", expected_hash_split("sit/4.avi")),
    ]
    assert plan.failures == []


@pytest.mark.parametrize("header", ["", "path,label\n", "Path , Label\n"])
def test_csv_without_split_column_and_bad_rows(tmp_path, csv_tree, header):
    place(tmp_path, "secret.mp4", csv_tree / "jump/1.mp4")
    path = write(tmp_path / "list.csv", header + "".join([
        "./jump/1.mp4,jump\n",
        "jump\\2.mp4,jump\n",  # Windows separators
        "\n",
        "sit/3.mp4, sit \n",
        "jump/1.mp4,jump\n",  # the same file as ./jump/1.mp4
        "sit/9.mp4,sit\n",
        "../secret.mp4,sit\n",
        "/etc/passwd,sit\n",
        "lonely.mp4\n",
        "sit/4.avi,stand\n",
    ]), "\r\n")
    plan = plan_source("csv", csv_tree, annotations=path)
    assert plan.classes == ["jump", "sit", "stand"]
    assert plan.entries == [
        VideoEntry("jump/1.mp4", 0, "jump", expected_hash_split("jump/1.mp4")),
        VideoEntry("jump/2.mp4", 0, "jump", expected_hash_split("jump/2.mp4")),
        VideoEntry("sit/3.mp4", 1, "sit", expected_hash_split("sit/3.mp4")),
        VideoEntry("sit/4.avi", 2, "stand", expected_hash_split("sit/4.avi")),
    ]
    assert kinds(plan) == [("jump/1.mp4", "duplicate-row"), ("sit/9.mp4", "missing-file"),
                           ("../secret.mp4", "path-escapes-root"), ("/etc/passwd", "path-escapes-root"),
                           ("lonely.mp4", "bad-row")]
    assert_one_line_messages(plan)


# --- unusable sources -------------------------------------------------------------------------------------


def _source_error(*args, **kwargs) -> str:
    with pytest.raises(SourceError) as excinfo:
        plan_source(*args, **kwargs)
    message = str(excinfo.value)
    assert "\n" not in message
    return message


def test_unknown_source_kind(tmp_path):
    message = _source_error("youtube8m", tmp_path)
    assert "youtube8m" in message
    for known in ("csv", "folder", "hmdb51", "kinetics", "ssv2", "ucf101"):
        assert known in message


def test_root_that_is_not_a_directory(tmp_path):
    assert str(tmp_path / "nowhere") in _source_error("folder", tmp_path / "nowhere")
    file_root = write(tmp_path / "file.txt", "x")
    assert str(file_root) in _source_error("folder", file_root)


def test_missing_annotation_files_name_the_path(tmp_path, tiny_videos):
    root = make_ucf(tmp_path / "UCF-101", tiny_videos[".avi"])
    assert str(root / "trainlist03.txt") in _source_error("ucf101", root, split=3)
    (root / "testlist01.txt").unlink()
    assert str(root / "testlist01.txt") in _source_error("ucf101", root)
    empty = tmp_path / "empty"
    empty.mkdir()
    assert str(empty) in _source_error("ucf101", empty)
    assert str(empty) in _source_error("hmdb51", empty)
    assert str(empty) in _source_error("ssv2", empty)
    assert str(tmp_path / "kinetics.csv") in _source_error("kinetics", empty, annotations=tmp_path / "kinetics.csv")
    assert str(tmp_path / "list.csv") in _source_error("csv", empty, annotations=tmp_path / "list.csv")
