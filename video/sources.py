"""Dataset layouts: turn a dataset's root and annotation files into a list of videos with labels and splits.

Each reader returns a :class:`SourcePlan`. Rows that cannot be used (missing file, a path escaping the root,
an unknown class, a duplicate) become failure records and never stop the others.

Splits are normalised to ``train``, ``val`` and ``test``. Layouts without a split (``folder``, ``csv``
without a split column) get a deterministic 70/30 train/test split by a hash of each path.
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
import posixpath
import re
from pathlib import Path
from typing import Callable, NamedTuple

from condi_pipe.registry import Registry, UnknownName

VIDEO_EXTENSIONS = (".avi", ".mp4", ".mkv", ".webm", ".mov", ".m4v", ".mpg", ".mpeg", ".flv", ".wmv", ".3gp")
SPLIT_NAMES = {"train": "train", "training": "train", "val": "val", "valid": "val", "validate": "val",
               "validation": "val", "test": "test", "testing": "test"}


class SourceError(ValueError):
    """The annotations themselves are unusable (missing list file, unreadable JSON)."""


class VideoEntry(NamedTuple):
    path: str  # relative to the root, POSIX separators
    label: int  # 0-based
    label_name: str
    split: str


class SourceFailure(NamedTuple):
    path: str
    kind: str
    message: str


class SourcePlan(NamedTuple):
    root: str
    classes: list[str]  # label -> name
    entries: list[VideoEntry]  # sorted by path
    failures: list[SourceFailure]


#: Every dataset layout: ``reader(root, annotations, split) -> SourcePlan``, registered below as this module loads.
SOURCES: Registry[Callable[..., SourcePlan]] = Registry("source")


def plan_source(kind: str, root: str | os.PathLike, annotations: str | os.PathLike | None = None,
                split: int = 1) -> SourcePlan:
    """Read the dataset ``kind`` at ``root``. ``split`` selects UCF-101's / HMDB-51's split 1, 2 or 3."""
    try:
        reader = SOURCES.get(kind)
    except UnknownName as unknown:
        raise SourceError(str(unknown)) from None
    root = Path(root)
    if not root.is_dir():
        raise SourceError(f"{root}: dataset root is not a directory")
    return reader(root, Path(annotations) if annotations else None, split)


class _PlanBuilder:
    """Collects entries, rejecting paths that escape the root, missing files, unknown classes and duplicates."""

    def __init__(self, root: Path, classes: list[str]):
        self.root, self.classes = root, classes
        self.index = {name: i for i, name in enumerate(classes)}
        self.entries: dict[str, VideoEntry] = {}
        self.failures: list[SourceFailure] = []

    def fail(self, path: str, kind: str, message: str) -> None:
        self.failures.append(SourceFailure(path, kind, message))

    def add(self, rel_path: str, label_name: str, split: str, where: str) -> None:
        rel = rel_path.strip().replace("\\", "/")
        normal = posixpath.normpath(rel)
        if rel.startswith("/") or normal == ".." or normal.startswith("../"):
            self.fail(rel, "path-escapes-root", f"{where}: path '{rel}' escapes the dataset root {self.root}")
            return
        if label_name not in self.index:
            self.fail(normal, "unknown-class", f"{where}: class '{label_name}' of '{normal}' is not in the class list")
            return
        if normal in self.entries:
            self.fail(normal, "duplicate-row", f"{where}: '{normal}' is listed more than once; kept the first")
            return
        if not (self.root / normal).is_file():
            self.fail(normal, "missing-file", f"{self.root / normal}: file not found (listed in {where})")
            return
        self.entries[normal] = VideoEntry(normal, self.index[label_name], label_name, split)

    def plan(self) -> SourcePlan:
        entries = sorted(self.entries.values(), key=lambda e: e.path)
        return SourcePlan(str(self.root), self.classes, entries, self.failures)


def _read_lines(path: Path) -> list[str]:
    if not path.is_file():
        raise SourceError(f"{path}: annotation file not found")
    # UCF-101's lists use CRLF line endings; splitlines handles both.
    return [ln.strip() for ln in path.read_text(encoding="utf-8-sig").splitlines() if ln.strip()]


def _find_annotation_dir(root: Path, annotations: Path | None, marker: str, extra: tuple[str, ...] = ()) -> Path:
    candidates = [annotations] if annotations else [root, *(root / e for e in extra)]
    for folder in candidates:
        if folder is not None and (folder / marker).is_file():
            return folder
    raise SourceError(f"{candidates[0]}: no {marker} found (pass --annotations DIR)")


def _hash_split(rel_path: str, test_fraction: float = 0.3) -> str:
    digest = int.from_bytes(hashlib.sha256(rel_path.encode()).digest()[:8], "big")
    return "test" if digest / 2**64 < test_fraction else "train"


@SOURCES.register("ucf101")
def ucf101(root: Path, annotations: Path | None, split: int) -> SourcePlan:
    """UCF-101: ``classInd.txt`` ("1 ApplyEyeMakeup", 1-based), ``trainlist0N.txt`` ("Class/v_x.avi 1"),
    ``testlist0N.txt`` ("Class/v_x.avi"), with videos at ``<root>/<Class>/v_<Class>_gXX_cYY.avi``."""
    folder = _find_annotation_dir(root, annotations, "classInd.txt", ("ucfTrainTestlist",))
    numbered = {}
    for line in _read_lines(folder / "classInd.txt"):
        number, name = line.split(maxsplit=1)
        numbered[int(number)] = name.strip()
    classes = [numbered[i] for i in sorted(numbered)]
    builder = _PlanBuilder(root, classes)
    for split_name, list_name in (("train", f"trainlist{split:02d}.txt"), ("test", f"testlist{split:02d}.txt")):
        for line_no, line in enumerate(_read_lines(folder / list_name), 1):
            parts = line.split()
            rel = parts[0]
            label_name = rel.split("/")[0]
            if len(parts) > 1 and parts[1].isdigit():
                label_name = numbered.get(int(parts[1]), f"#{parts[1]}")
            builder.add(rel, label_name, split_name, f"{list_name}:{line_no}")
    return builder.plan()


@SOURCES.register("hmdb51")
def hmdb51(root: Path, annotations: Path | None, split: int) -> SourcePlan:
    """HMDB-51: ``<class>_test_split<N>.txt`` lines "<video>.avi <tag>" (1 train, 2 test, 0 unused),
    videos at ``<root>/<class>/<video>.avi``."""
    folder = annotations or root
    pattern = re.compile(rf"^(?P<cls>.+)_test_split{split}\.txt$")
    lists = sorted(p for p in folder.iterdir() if pattern.match(p.name)) if folder.is_dir() else []
    if not lists:
        raise SourceError(f"{folder}: no <class>_test_split{split}.txt files found (pass --annotations DIR)")
    classes = sorted(pattern.match(p.name)["cls"] for p in lists)
    builder = _PlanBuilder(root, classes)
    for list_path in lists:
        cls = pattern.match(list_path.name)["cls"]
        for line_no, line in enumerate(_read_lines(list_path), 1):
            name, tag = (line.split() + ["?"])[:2]
            if tag in ("1", "2"):
                builder.add(f"{cls}/{name}", cls, "train" if tag == "1" else "test", f"{list_path.name}:{line_no}")
    return builder.plan()


@SOURCES.register("kinetics")
def kinetics(root: Path, annotations: Path | None, split: int) -> SourcePlan:
    """Kinetics: a CSV ``label,youtube_id,time_start,time_end,split``; videos at
    ``<root>/<split>/<label>/<id>_<start:06d>_<end:06d>.mp4`` or flat ``<root>/<id>_<start:06d>_<end:06d>.mp4``."""
    if annotations is None or not annotations.is_file():
        raise SourceError(f"{annotations}: Kinetics needs its CSV (pass --annotations FILE.csv)")
    with open(annotations, newline="", encoding="utf-8-sig") as fh:
        rows = list(csv.DictReader(fh))
    classes = sorted({r["label"].strip() for r in rows if (r.get("label") or "").strip()})
    builder = _PlanBuilder(root, classes)
    for line_no, row in enumerate(rows, 2):
        where = f"{annotations.name}:{line_no}"
        label = (row.get("label") or "").strip()
        split_name = SPLIT_NAMES.get((row.get("split") or "train").strip().lower(), "train")
        try:
            stem = f"{row['youtube_id'].strip()}_{int(float(row['time_start'])):06d}_{int(float(row['time_end'])):06d}"
        except (KeyError, ValueError, AttributeError):
            builder.fail(f"row {line_no}", "bad-row", f"{where}: malformed row {dict(row)}")
            continue
        raw_split = (row.get("split") or "").strip()
        # Downloaders name split folders by the CSV ("validate") or shortened ("val"), labels with spaces or "_".
        split_dirs = dict.fromkeys([raw_split, split_name, *(k for k, v in SPLIT_NAMES.items() if v == split_name)])
        label_dirs = dict.fromkeys([label, label.replace(" ", "_")])
        candidates = [f"{d}/{lab}/{stem}.mp4" for d in split_dirs if d for lab in label_dirs]
        candidates += [f"{lab}/{stem}.mp4" for lab in label_dirs] + [f"{stem}.mp4"]
        found = next((c for c in candidates if (root / c).is_file()), candidates[0])
        builder.add(found, label, split_name, where)
    return builder.plan()


@SOURCES.register("ssv2")
def ssv2(root: Path, annotations: Path | None, split: int) -> SourcePlan:
    """Something-Something V2: ``labels.json`` (template -> id) and ``train.json`` / ``validation.json``
    (lists of {id, template with [something] placeholders}); videos at ``<root>/<id>.webm``."""
    folder = _find_annotation_dir(root, annotations, "labels.json", ("annotations", "labels"))
    try:
        labels = json.loads((folder / "labels.json").read_text())
    except json.JSONDecodeError as exc:
        raise SourceError(f"{folder / 'labels.json'}: invalid JSON ({exc.msg})") from None
    by_id = {int(v): k for k, v in labels.items()}
    classes = [by_id[i] for i in sorted(by_id)]
    builder = _PlanBuilder(root, classes)
    for split_name, file_name in (("train", "train.json"), ("val", "validation.json")):
        path = folder / file_name
        if not path.is_file():
            continue
        for n, item in enumerate(json.loads(path.read_text())):
            template = re.sub(r"\[(.*?)\]", r"\1", item.get("template", ""))
            builder.add(f"{item['id']}.webm", template, split_name, f"{file_name}[{n}]")
    return builder.plan()


@SOURCES.register("folder")
def folder(root: Path, annotations: Path | None, split: int) -> SourcePlan:
    """A plain tree ``<root>/<class>/<video>``; classes sorted by name; 70/30 train/test split by path hash."""
    classes = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    builder = _PlanBuilder(root, classes)
    for cls in classes:
        for video in sorted((root / cls).iterdir()):
            if video.is_file() and video.suffix.lower() in VIDEO_EXTENSIONS:
                rel = f"{cls}/{video.name}"
                builder.add(rel, cls, _hash_split(rel), f"{root}/{cls}")
    return builder.plan()


@SOURCES.register("csv")
def csv_source(root: Path, annotations: Path | None, split: int) -> SourcePlan:
    """A CSV ``path,label[,split]`` (header optional), paths relative to the root; classes sorted by name."""
    if annotations is None or not annotations.is_file():
        raise SourceError(f"{annotations}: the csv source needs a CSV file (pass --annotations FILE.csv)")
    with open(annotations, newline="", encoding="utf-8-sig") as fh:
        rows = [r for r in csv.reader(fh) if r and any(c.strip() for c in r)]
    # A header is any first row whose first cell is not a video file name ("path,label", "video,class", ...).
    if rows and not rows[0][0].strip().lower().endswith(VIDEO_EXTENSIONS):
        rows = rows[1:]
    classes = sorted({r[1].strip() for r in rows if len(r) > 1 and r[1].strip()})
    builder = _PlanBuilder(root, classes)
    for line_no, row in enumerate(rows, 1):
        where = f"{annotations.name}:{line_no}"
        if len(row) < 2:
            builder.fail(row[0] if row else f"row {line_no}", "bad-row", f"{where}: expected path,label[,split]")
            continue
        rel = row[0].strip().replace("\\", "/")  # the hash split must see the same path as the entry
        split_name = SPLIT_NAMES.get(row[2].strip().lower(), None) if len(row) > 2 else None
        builder.add(rel, row[1].strip(), split_name or _hash_split(posixpath.normpath(rel)), where)
    return builder.plan()
