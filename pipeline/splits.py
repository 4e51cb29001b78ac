"""Grouped, seeded partitions of a training split: a validation split carved from train, and folds.

Clips of one *group* never straddle two parts. A group is what the dataset says belongs together: UCF-101's
``gXX`` (clips cut from one long recording), HMDB-51's source video (the name before its meta tags), a Kinetics
YouTube id; any other source puts each video in its own group. Parts are stratified by class (each class's groups
are dealt out separately), and every choice comes from ``numpy.random.default_rng([seed, class])``, so the same
store and seed give the same parts anywhere.

>>> labels = np.array([0, 0, 0, 0, 1, 1, 1, 1])
>>> groups = np.array(["a", "a", "b", "c", "d", "e", "f", "g"])
>>> mask = carve_validation(labels, groups, fraction=0.25, seed=0)
>>> bool(mask[0]) == bool(mask[1])  # the two videos of group "a" go together
True
>>> sorted(set(grouped_folds(labels, groups, folds=2, seed=0).tolist()))
[0, 1]
"""

from __future__ import annotations

import os
import re
from typing import NamedTuple

import numpy as np

from condi_pipe.storage.manifests import VideoSet, load_videos, video_paths
from condi_pipe.storage.store import Store

__all__ = ["video_group", "carve_validation", "grouped_folds", "TrainingSplits", "training_splits",
           "DEFAULT_VALIDATION_FRACTION"]

_UCF_GROUP = re.compile(r"^v_(?P<cls>.+)_g(?P<group>\d+)_c\d+$")
_KINETICS_CLIP = re.compile(r"^(?P<youtube_id>.{11})_\d{6}_\d{6}$")
# HMDB-51: <source video>_<class>_<body part>_<camera motion>_<people>_<viewpoint>_<quality>_<clip number>
_HMDB_CLIP = re.compile(r"^(?P<source>.+)_[fhul]_(?:cm|nm)_np\d+_(?:fr|ba|le|ri)_(?:bad|med|goo)_\d+$")


def video_group(path: str) -> str:
    """The group a video belongs to, from its path: ``<Class>_gXX`` for UCF-101 names (``v_<Class>_gXX_cYY``),
    the YouTube id for Kinetics names (``<id>_<start>_<end>``), the source video and class for HMDB-51 names (the
    clips of one source video differ only in their meta tags and clip number), otherwise the path itself.

    >>> video_group("ApplyEyeMakeup/v_ApplyEyeMakeup_g08_c01.avi")
    'ApplyEyeMakeup_g08'
    >>> video_group("train/abseiling/0wR5jVB-WPk_000417_000427.mp4")
    '0wR5jVB-WPk'
    >>> video_group("brush_hair/April_09_brush_hair_u_nm_np1_ba_goo_2.avi")
    'April_09_brush_hair'
    >>> video_group("cats/clip3.mp4")
    'cats/clip3.mp4'
    """
    stem = os.path.splitext(os.path.basename(path))[0]
    match = _UCF_GROUP.match(stem)
    if match:
        return f"{match['cls']}_g{int(match['group']):02d}"
    match = _KINETICS_CLIP.match(stem)
    if match:
        return match["youtube_id"]
    match = _HMDB_CLIP.match(stem)
    if match:
        return match["source"]
    return path


def _groups_by_class(labels: np.ndarray, groups: np.ndarray) -> dict[int, list[str]]:
    """Each class's distinct groups, sorted (a group takes the class of its first video)."""
    labels = np.asarray(labels)
    groups = np.asarray(groups).astype(str)
    if labels.shape != groups.shape:
        raise ValueError(f"labels {labels.shape} and groups {groups.shape} must have one entry per video")
    owner: dict[str, int] = {}
    for label, group in zip(labels.tolist(), groups.tolist()):
        owner.setdefault(group, int(label))
    by_class: dict[int, list[str]] = {}
    for group, label in owner.items():
        by_class.setdefault(label, []).append(group)
    return {label: sorted(gs) for label, gs in sorted(by_class.items())}


def carve_validation(labels: np.ndarray, groups: np.ndarray, fraction: float, seed: int = 0) -> np.ndarray:
    """A boolean mask over the videos: True for the validation part. Per class, ``round(fraction * G)`` of its
    G groups (at least one when the class has two or more, never all of them) are drawn with
    ``default_rng([seed, class])``."""
    if not 0.0 <= fraction < 1.0:
        raise ValueError(f"the validation fraction must be in [0, 1), got {fraction}")
    groups = np.asarray(groups).astype(str)
    chosen: set[str] = set()
    if fraction > 0:
        for label, class_groups in _groups_by_class(labels, groups).items():
            n = len(class_groups)
            take = min(max(int(round(fraction * n)), 1 if n >= 2 else 0), n - 1)
            order = np.random.default_rng([seed, label]).permutation(n)
            chosen.update(class_groups[i] for i in order[:take])
    return np.isin(groups, list(chosen)) if chosen else np.zeros(len(groups), bool)


def grouped_folds(labels: np.ndarray, groups: np.ndarray, folds: int, seed: int = 0) -> np.ndarray:
    """The fold (0 .. folds-1) of every video. Per class, its groups in a ``default_rng([seed, class])`` order are
    dealt to the folds in turn, starting where the previous class stopped, so folds differ in size by at most
    one group per class and every fold holds some of the data when there are at least ``folds`` groups."""
    if folds < 2:
        raise ValueError(f"need at least 2 folds, got {folds}")
    groups = np.asarray(groups).astype(str)
    fold_of: dict[str, int] = {}
    turn = 0
    for label, class_groups in _groups_by_class(labels, groups).items():
        for i in np.random.default_rng([seed, label]).permutation(len(class_groups)):
            fold_of[class_groups[i]] = turn % folds
            turn += 1
    return np.array([fold_of[g] for g in groups.tolist()], dtype=np.int64)


class TrainingSplits(NamedTuple):
    """The store's train split cut in two: ``fit`` (what a model trains on) and ``validation`` (every choice made
    during training: epochs kept, early stopping, hyperparameters), carved by :func:`carve_validation`.
    ``validation`` is None when the fraction is 0."""

    fit: VideoSet
    validation: VideoSet | None
    fraction: float
    seed: int

    def summary(self) -> dict:
        """How the train split was cut (for ``meta.json``): the carve's settings and the videos on each side."""
        return {"val_fraction": self.fraction, "val_seed": self.seed, "fit_videos": int(len(self.fit.video_id)),
                "validation_videos": 0 if self.validation is None else int(len(self.validation.video_id))}


TRAIN_SPLIT = "train"  # the split training stages fit on (and carve their validation part from)
DEFAULT_VALIDATION_FRACTION = 0.1  # the paper carves 10% of Something-Something's train split for validation


def training_splits(store: Store, fraction: float = DEFAULT_VALIDATION_FRACTION, seed: int = 0,
                    split: str = "train") -> TrainingSplits:
    """``split``'s videos (the store's train split) as fit / validation parts, grouped by :func:`video_group`."""
    videos = load_videos(store, split)
    if fraction <= 0:
        return TrainingSplits(videos, None, 0.0, seed)
    groups = np.array([video_group(p) for p in video_paths(store, videos)], dtype=object)
    is_validation = carve_validation(videos.label, groups, fraction, seed)
    validation = videos.subset(is_validation) if is_validation.any() else None
    return TrainingSplits(videos.subset(~is_validation), validation, float(fraction), seed)
