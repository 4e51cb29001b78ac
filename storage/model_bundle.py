"""A model bundle: everything ``condi-pipe predict --model DIR`` needs, with no training store.

    DIR/bundle.json     the format, the method with its K and K_s, the class names, the decode options, each
                        model's architecture (registry name, width, classes, SGS) and weights digest, the runtime
                        chosen for it where the bundle was made, and where it came from
    DIR/teacher.pt      the teacher's weights (a plain state dict)
    DIR/student.pt      the student's (absent for dense and equidistant without K_s)
    DIR/README.md       the model card: what it classifies, how, and how well on the store's test split

``bundle.json`` is written last: a folder without it is not a bundle (a killed ``bundle`` leaves no half bundle
that reads as whole).
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict, dataclass, field
from typing import Any

import fsspec

from condi_pipe.storage.errors import StoreError

BUNDLE_FORMAT = 1
MANIFEST = "bundle.json"
CARD = "README.md"
TEACHER_WEIGHTS = "teacher.pt"
STUDENT_WEIGHTS = "student.pt"


@dataclass(frozen=True)
class BundledModel:
    """One model of a bundle: what builds it (``compute.clip_inference.ModelRef``'s fields) and its weights."""

    name: str
    num_classes: int
    width: float | None
    weights: str  # file name inside the bundle
    weights_sha256: str
    sgs_stage: str | None = None
    sgs_kernel: str | None = None
    output_name: str | None = None
    runtime: dict | None = None  # the runtime choice made for it where the bundle was made (machine included)


@dataclass(frozen=True)
class Bundle:
    method: str
    k: int
    ks: int
    classes: list[str]
    teacher: BundledModel
    student: BundledModel | None
    decode: dict = field(default_factory=dict)  # video.decode.DecodeOptions' fields
    source: dict = field(default_factory=dict)  # the store, student run and software it was made from
    folder: str = ""  # where it was read from (not written)

    def weights_path(self, model: BundledModel) -> str:
        return os.path.join(self.folder, model.weights)


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def write_bundle(folder: str, bundle: Bundle, weights: dict[str, bytes], card: str) -> None:
    """Write ``bundle`` to ``folder``: the weight files (by file name), the card, then ``bundle.json``."""
    fs, root = fsspec.core.url_to_fs(folder)
    fs.makedirs(root, exist_ok=True)
    if fs.exists(f"{root}/{MANIFEST}"):
        fs.rm(f"{root}/{MANIFEST}")  # rewriting a bundle: it is not whole until the new manifest is in
    for model in (bundle.teacher, bundle.student):
        if model is not None and _sha256(weights[model.weights]) != model.weights_sha256:
            raise ValueError(f"{model.weights}: the bytes given do not match the recorded sha256")
    for name, data in weights.items():
        with fs.open(f"{root}/{name}", "wb") as fh:
            fh.write(data)
    with fs.open(f"{root}/{CARD}", "w") as fh:
        fh.write(card)
    manifest = {"format": BUNDLE_FORMAT, **asdict(bundle)}
    manifest.pop("folder")
    with fs.open(f"{root}/{MANIFEST}", "w") as fh:
        fh.write(json.dumps(manifest, indent=2, sort_keys=True) + "\n")


def _model(value: Any, where: str) -> BundledModel:
    try:
        return BundledModel(**value)
    except TypeError as exc:
        raise StoreError(f"{where}: not a condi-pipe model entry ({exc})") from None


def read_bundle(folder: str) -> Bundle:
    """The bundle in ``folder`` (a local path: its weights are read as files), its weight files checked against
    their digests; StoreError naming the file and the reason otherwise."""
    path = os.path.join(folder, MANIFEST)
    if not os.path.isdir(folder):
        raise StoreError(f"{folder}: not a model bundle: the folder does not exist")
    if not os.path.exists(path):
        raise StoreError(f"{folder}: not a model bundle: no {MANIFEST} (`condi-pipe bundle` makes one)")
    try:
        manifest = json.loads(open(path, encoding="utf-8").read())
    except ValueError as exc:
        raise StoreError(f"{path}: not valid JSON ({exc})") from None
    if manifest.get("format") != BUNDLE_FORMAT:
        raise StoreError(f"{path}: bundle format {manifest.get('format')!r} is not {BUNDLE_FORMAT}")
    manifest.pop("format")
    try:
        teacher = _model(manifest.pop("teacher"), path)
        student = manifest.pop("student")
        bundle = Bundle(teacher=teacher, student=None if student is None else _model(student, path), folder=folder,
                        **manifest)
    except (KeyError, TypeError) as exc:
        raise StoreError(f"{path}: not a condi-pipe bundle manifest ({exc})") from None
    for model in (bundle.teacher, bundle.student):
        if model is None:
            continue
        weights = bundle.weights_path(model)
        if not os.path.exists(weights):
            raise StoreError(f"{weights}: missing from the bundle")
        with open(weights, "rb") as fh:
            if _sha256(fh.read()) != model.weights_sha256:
                raise StoreError(f"{weights}: its sha256 differs from {MANIFEST}'s: the bundle is damaged")
    return bundle
