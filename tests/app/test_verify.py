"""verify names damaged outputs; repair rewrites a damaged shard to its original bytes."""

from __future__ import annotations

import hashlib
import shutil

from click.testing import CliRunner

from condi_pipe.app.verify import repair_store, verify_store
from condi_pipe.cli import main as cli
from condi_pipe.storage.run_state import stage_record
from condi_pipe.storage.store import Store

SHARD = "clips.zarr/c/1/0/0/0/0"


def _copy(synth_store, tmp_path):
    store_dir = tmp_path / "store"
    shutil.copytree(synth_store, store_dir)
    return store_dir


def test_intact_store_verifies(synth_store, tmp_path):
    store_dir = _copy(synth_store, tmp_path)
    assert verify_store(Store(str(store_dir))) == []
    result = CliRunner().invoke(cli, ["verify", "--store", str(store_dir)])
    assert result.exit_code == 0 and "all outputs intact" in result.output


def test_flipped_byte_in_a_shard_is_named_and_repaired_to_the_same_bytes(synth_store, tmp_path):
    store_dir = _copy(synth_store, tmp_path)
    shard = store_dir / SHARD
    original = hashlib.sha256(shard.read_bytes()).hexdigest()
    damaged = bytearray(shard.read_bytes())
    damaged[len(damaged) // 2] ^= 0x40
    shard.write_bytes(bytes(damaged))
    other_shard = store_dir / "clips.zarr/c/0/0/0/0/0"
    other_mtime = other_shard.stat().st_mtime_ns

    result = CliRunner().invoke(cli, ["verify", "--store", str(store_dir)])
    assert result.exit_code == 1 and f"extract: {SHARD}: content changed" in result.output

    assert repair_store(Store(str(store_dir)), log=lambda m: None) == []
    assert hashlib.sha256(shard.read_bytes()).hexdigest() == original
    assert other_shard.stat().st_mtime_ns == other_mtime  # only the damaged shard was rewritten


def test_deleted_table_is_named_and_its_stage_unpublished(synth_store, tmp_path):
    store_dir = _copy(synth_store, tmp_path)
    (store_dir / "clips.parquet").unlink()
    problems = verify_store(Store(str(store_dir)))
    assert ("extract", "clips.parquet", "missing") in [tuple(p) for p in problems]
    repair_store(Store(str(store_dir)), log=lambda m: None)
    assert stage_record(Store(str(store_dir)), "extract") == {}
