"""``condi-pipe migrate``: a format-1 store (trained teachers under ``teachers/``) is refused by every reading
command with a line saying how to migrate, and ``migrate`` moves it to format 2 with its checksums intact, also
when a first attempt was killed half-way."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from condi_pipe.cli import main as cli
from condi_pipe.pipeline.stage import open_store
from condi_pipe.storage import migrate as migrate_module
from condi_pipe.storage.checksums import damaged_files, record_checksums
from condi_pipe.storage.migrate import migrate_store
from condi_pipe.storage.run_state import RUN_FILE, StoreFormatError, read_run
from condi_pipe.storage.store import FORMAT_VERSION, Store
from condi_pipe.storage.training_artifacts import TEACHERS_ROOT

KEYS = {"teacher-train/t": ["teachers/t"], "teacher-cache/t": ["teacher/t"]}


def _format_1_store(path) -> Store:
    store = Store(str(path))
    store.write_bytes("teachers/t/weights.pt", b"weights")
    store.write_json("teachers/t/meta.json", {"weights": "teachers/t/weights.pt", "epochs": 3})
    store.write_json("teacher/t/meta.json", {"weights": "teachers/t/weights.pt", "clips": 12})
    for key, outputs in KEYS.items():
        record_checksums(store, key, outputs)
    stages = {key: {"status": "done", "outputs": outputs} for key, outputs in KEYS.items()}
    store.write_json(RUN_FILE, {"format_version": 1, "stages": stages})
    return store


def _assert_migrated(store: Store) -> None:
    assert read_run(store)["format_version"] == FORMAT_VERSION == 2
    assert not store.exists("teachers") and store.read_bytes(f"{TEACHERS_ROOT}/t/weights.pt") == b"weights"
    assert store.read_json("teacher/t/meta.json") == {"weights": f"{TEACHERS_ROOT}/t/weights.pt", "clips": 12}
    assert read_run(store)["stages"]["teacher-train/t"]["outputs"] == [f"{TEACHERS_ROOT}/t"]
    for key in KEYS:
        assert damaged_files(store, key) == [], key


def test_a_format_1_store_is_refused_with_the_migrate_command(tmp_path):
    store = _format_1_store(tmp_path / "old")
    with pytest.raises(StoreFormatError, match=r"format version 1 is older .*condi-pipe migrate --store"):
        open_store(store.url)
    result = CliRunner().invoke(cli, ["status", "--store", store.url])
    assert result.exit_code != 0 and "condi-pipe migrate --store" in result.output
    assert json.loads((tmp_path / "old" / RUN_FILE).read_text())["format_version"] == 1


def test_migrate_moves_the_trained_teachers_and_keeps_the_checksums(tmp_path):
    store = _format_1_store(tmp_path / "old")
    result = CliRunner().invoke(cli, ["migrate", "--store", store.url])
    assert result.exit_code == 0, result.output
    assert "moved teachers/ to trained_teachers/" in result.output and "format 1 -> 2" in result.output
    _assert_migrated(store)
    again = CliRunner().invoke(cli, ["migrate", "--store", store.url])
    assert again.exit_code == 0 and "already format 2" in again.output


def test_a_killed_migration_finishes_when_run_again(tmp_path, monkeypatch):
    store = _format_1_store(tmp_path / "old")
    real_write = Store.write_bytes

    def killed_at_the_second_json(self, rel, data):
        if rel.endswith("meta.json") and killed_at_the_second_json.writes == 1:
            raise KeyboardInterrupt("killed")
        killed_at_the_second_json.writes += rel.endswith("meta.json")
        return real_write(self, rel, data)

    killed_at_the_second_json.writes = 0
    monkeypatch.setattr(Store, "write_bytes", killed_at_the_second_json)
    with pytest.raises(KeyboardInterrupt, match="killed"):
        migrate_store(store)
    monkeypatch.setattr(Store, "write_bytes", real_write)
    assert store.read_json(RUN_FILE)["format_version"] == 1  # the version is stamped last
    assert migrate_module.migrate_store(store)[-1] == "format 1 -> 2"
    _assert_migrated(store)
