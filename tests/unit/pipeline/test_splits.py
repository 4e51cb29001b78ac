"""The validation split carved from train (``pipeline.splits``): grouped, stratified, seeded, and what the training
stages take from it."""

from __future__ import annotations

import numpy as np
import pytest

from condi_pipe.pipeline.splits import carve_validation, training_splits, video_group
from condi_pipe.storage.manifests import load_videos, video_paths
from condi_pipe.storage.store import Store


def _dataset(groups_per_class: list[int], videos_per_group: int = 3) -> tuple[np.ndarray, np.ndarray]:
    """Labels and groups of a dataset whose class c has ``groups_per_class[c]`` groups of ``videos_per_group``."""
    labels, groups = [], []
    for label, n in enumerate(groups_per_class):
        for g in range(n):
            labels += [label] * videos_per_group
            groups += [f"C{label}_g{g:02d}"] * videos_per_group
    return np.array(labels), np.array(groups, dtype=object)


def test_no_group_is_on_both_sides():
    labels, groups = _dataset([5, 9, 2, 13], videos_per_group=4)
    mask = carve_validation(labels, groups, fraction=0.3, seed=4)
    assert mask.any() and (~mask).any()
    assert not set(groups[mask]) & set(groups[~mask])


def test_each_class_gives_its_share_of_groups():
    counts = [1, 2, 3, 7, 10, 20]
    labels, groups = _dataset(counts)
    mask = carve_validation(labels, groups, fraction=0.25, seed=0)
    for label, n in enumerate(counts):
        carved = len(set(groups[mask & (labels == label)]))
        # round(0.25 * n), at least one group for a class with two or more, never all of them
        expected = {1: 0, 2: 1, 3: 1, 7: 2, 10: 2, 20: 5}[n]
        assert carved == expected, (n, carved)


def test_a_class_with_one_group_keeps_it_whatever_the_fraction():
    labels, groups = _dataset([1, 1, 4])
    for fraction in (0.1, 0.5, 0.99):
        mask = carve_validation(labels, groups, fraction, seed=1)
        assert not mask[labels < 2].any()
        assert 1 <= len(set(groups[mask])) <= 3  # class 2 gives some of its four groups, never all


def test_the_carve_is_deterministic_and_follows_the_seed():
    labels, groups = _dataset([8] * 6)
    first = carve_validation(labels, groups, 0.25, seed=3)
    assert np.array_equal(first, carve_validation(labels, groups, 0.25, seed=3))
    assert np.array_equal(first, carve_validation(labels.copy(), groups.copy(), 0.25, seed=3))
    assert any(not np.array_equal(first, carve_validation(labels, groups, 0.25, seed=s)) for s in range(4, 8))


def test_fraction_zero_carves_nothing_and_bad_fractions_are_refused():
    labels, groups = _dataset([4, 4])
    assert not carve_validation(labels, groups, 0.0).any()
    for bad in (-0.1, 1.0, 1.5):
        with pytest.raises(ValueError, match=r"validation fraction must be in \[0, 1\)"):
            carve_validation(labels, groups, bad)


def test_training_splits_of_a_store(validation_teacher_store):
    store = Store(str(validation_teacher_store))
    train = load_videos(store, "train")
    splits = training_splits(store, 0.1, seed=0)
    fit, validation = splits.fit, splits.validation
    # 3 train groups per class: one of each class is carved (round(0.3) = 0, raised to the minimum of one).
    assert len(validation.video_id) == 10 and len(fit.video_id) == 20
    assert sorted(np.bincount(validation.label).tolist()) == [1] * 10
    assert sorted(np.concatenate([fit.video_id, validation.video_id]).tolist()) == train.video_id.tolist()
    fit_groups = {video_group(p) for p in video_paths(store, fit)}
    validation_groups = {video_group(p) for p in video_paths(store, validation)}
    assert not fit_groups & validation_groups
    assert splits.summary() == {"val_fraction": 0.1, "val_seed": 0, "fit_videos": 20, "validation_videos": 10}
    # The same store and seed give the same parts; fraction 0 leaves train whole.
    assert training_splits(store, 0.1, seed=0).validation.video_id.tolist() == validation.video_id.tolist()
    whole = training_splits(store, 0.0, seed=0)
    assert whole.validation is None and whole.fit.video_id.tolist() == train.video_id.tolist()
    assert whole.summary()["validation_videos"] == 0


def test_a_store_with_one_group_per_class_has_no_validation(synth_store):
    """The 20-video store has one train video per class, each its own group: nothing can be carved."""
    splits = training_splits(Store(str(synth_store)), 0.1, seed=0)
    assert splits.validation is None and len(splits.fit.video_id) == 10
