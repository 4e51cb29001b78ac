"""Which stores report.folds combines as folds, and what it calls them: one dataset's splits, or one protocol on
different data (the generated benchmark on several seeds)."""

from __future__ import annotations

import pytest

from condi_pipe.report.across_stores import FoldMismatch, fold_names
from condi_pipe.storage.run_state import set_stage
from condi_pipe.storage.store import Store


def extracted(path, root: str, split: int | None) -> Store:
    store = Store(str(path))
    set_stage(store, "extract", state="done", counts={}, config={"source": "ucf101", "root": root, "split": split})
    return store


def test_splits_of_one_dataset_are_named_by_split(tmp_path):
    stores = [extracted(tmp_path / f"s{n}", "/data/ucf101", n) for n in (1, 2, 3)]
    assert fold_names(stores) == ["split-1", "split-2", "split-3"]


def test_one_split_of_different_datasets_is_named_by_folder(tmp_path):
    """`demo --seeds`: every seed's store is split 1 of its own generated videos."""
    stores = [extracted(tmp_path / f"seed-{s}", f"/runs/seed-{s}/synth", 1) for s in (0, 1, 2)]
    assert fold_names(stores) == ["seed-0", "seed-1", "seed-2"]


def test_the_same_split_of_the_same_dataset_twice_is_refused(tmp_path):
    stores = [extracted(tmp_path / name, "/data/ucf101", 1) for name in ("a", "b")]
    with pytest.raises(FoldMismatch, match=r"are the same fold \(split-1\): give each split's store once"):
        fold_names(stores)
