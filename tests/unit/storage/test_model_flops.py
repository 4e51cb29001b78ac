"""storage.model_timings' FLOPs record: written beside the timings, read back as written, gone with a re-timing."""

from __future__ import annotations

import pyarrow as pa
import pytest

from condi_pipe.storage import model_timings
from condi_pipe.storage.errors import StoreError
from condi_pipe.storage.store import Store

TEACHER = "t"
COUNTS = [model_timings.ModelFlops("teacher/t", "resnet10_3d_motion", None, "aa", 1_001_736_704, (16, 112, 112)),
          model_timings.ModelFlops("scores/s", "shufflenetv2_3d", 0.25, None, 32_743_808, (8, 56, 56))]
ROW = {"model": "teacher/t", "batch": 1, "median_s": 0.1, "min_s": 0.09, "iqr_s": 0.01, "repeats": 3}


def test_flops_read_back_as_written(tmp_path):
    store = Store(str(tmp_path / "store"))
    assert model_timings.read_flops(store, TEACHER) is None  # never counted
    model_timings.write_timings(store, TEACHER, [ROW], {"teacher": TEACHER}, flops=COUNTS)
    assert model_timings.read_flops(store, TEACHER) == {count.model: count for count in COUNTS}


def test_timings_written_without_flops_drop_an_earlier_count(tmp_path):
    store = Store(str(tmp_path / "store"))
    model_timings.write_timings(store, TEACHER, [ROW], {"teacher": TEACHER}, flops=COUNTS)
    model_timings.write_timings(store, TEACHER, [ROW], {"teacher": TEACHER})  # as time-models did before counting
    assert model_timings.read_flops(store, TEACHER) is None
    model_timings.write_flops(store, TEACHER, COUNTS[:1])  # what a later no-op time-models adds
    assert list(model_timings.read_flops(store, TEACHER)) == ["teacher/t"]


def test_a_damaged_flops_table_names_its_missing_column(tmp_path):
    store = Store(str(tmp_path / "store"))
    store.write_table(f"timings/{TEACHER}/{model_timings.FLOPS_TABLE}", pa.table({"model": ["teacher/t"]}))
    with pytest.raises(StoreError, match="flops.parquet: missing column.*flops_per_clip"):
        model_timings.read_flops(store, TEACHER)
