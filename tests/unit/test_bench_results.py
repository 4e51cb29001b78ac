"""The benches' results files (bench/record.py) and the Results page's hook that renders them
(docs/hooks/results.py): both are scripts outside the package, loaded from their paths."""

import argparse
import importlib.util
import json
import os
import re
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

REPO = Path(__file__).resolve().parents[2]


def _load(name: str, path: Path):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


record = _load("bench_record", REPO / "bench" / "record.py")
hook = _load("results_hook", REPO / "docs" / "hooks" / "results.py")


def _head() -> str:
    return subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True, text=True,
                          check=True).stdout.strip()


def test_machine_slug_keeps_the_model_and_the_cores():
    assert record.machine_slug("Intel(R) Xeon(R) Platinum 8481C CPU @ 2.70GHz", 2) == "intel-xeon-platinum-8481c-2c"
    assert record.machine_slug("AMD EPYC 7B13 64-Core Processor", 16) == "amd-epyc-7b13-64-core-16c"
    assert record.machine_slug("", 4) == "unknown-cpu-4c"


def test_write_result_records_the_commit_the_machine_and_the_figures(tmp_path):
    path = record.write_result("demo_bench", {"ratio": 1.5, "rates": {"one": 10.0}, "unmeasured": float("nan")},
                               params={"videos": 8, "machine_load": "shared"}, folder=tmp_path)

    cores = os.cpu_count()
    slug = record.machine_slug(record.cpu_model(), cores)
    assert path == tmp_path / slug / "demo_bench.json"
    written = json.loads(path.read_text())
    assert written["bench"] == "demo_bench"
    assert written["commit"] == _head()
    assert isinstance(written["dirty"], bool)
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", written["date"])
    assert written["machine"]["slug"] == slug and written["machine"]["cores"] == cores
    assert written["machine"]["cpu"] == record.cpu_model()
    assert written["machine"]["torch"]
    assert written["params"] == {"videos": 8, "machine_load": "shared"}
    # JSON has no NaN: a figure that could not be measured is null
    assert written["figures"] == {"ratio": 1.5, "rates": {"one": 10.0}, "unmeasured": None}


def test_no_record_writes_nothing_and_record_keeps_the_options(tmp_path):
    args = argparse.Namespace(videos=8, quick=True, store=None, no_record=True, machine_load="shared")
    assert record.record("demo_bench", {"ratio": 1.0}, args, folder=tmp_path) is None
    assert list(tmp_path.iterdir()) == []

    args.no_record = False
    path = record.record("demo_bench", {"ratio": 1.0}, args, omit=("quick",), folder=tmp_path, threads=2)
    assert json.loads(path.read_text())["params"] == {"videos": 8, "machine_load": "shared", "threads": 2}


def test_hook_renders_a_table_per_machine_and_a_line_for_a_bench_without_results(tmp_path):
    record.write_result("demo_bench", {"online / cached": 6.25, "seconds": {"cached": 0.5, "online": 3125.0}},
                        params={"batch": 4, "machine_load": "shared"}, folder=tmp_path)

    markdown = hook.render_results(tmp_path, ["demo_bench", "idle_bench"])

    demo, idle = markdown.split("### `bench/idle_bench.py`")
    assert demo.startswith("### `bench/demo_bench.py`")
    assert f"| commit | `{_head()[:7]}`" in demo
    assert "| parameters | batch: 4, machine_load: shared |" in demo
    assert "| online / cached | 6.25 |" in demo
    assert "| seconds › cached | 0.5 |" in demo and "| seconds › online | 3,125 |" in demo
    assert f"| `{record.machine_slug(record.cpu_model(), os.cpu_count())}` | |\n|---|---|\n| commit |" in demo
    assert idle.strip() == "No results recorded yet (`python bench/idle_bench.py` writes them)."


def test_hook_says_so_when_there_are_no_results_at_all(tmp_path):
    assert hook.render_results(tmp_path / "results", ["extract"]) == (
        "### `bench/extract.py`\n\nNo results recorded yet (`python bench/extract.py` writes them).")


def test_hook_replaces_the_marker_of_the_results_page_only(tmp_path):
    (tmp_path / "bench").mkdir()
    (tmp_path / "bench" / "distill.py").write_text("")
    (tmp_path / "bench" / "record.py").write_text("")  # the writer is not a bench
    config = {"config_file_path": str(tmp_path / "mkdocs.yml")}
    text = f"# Results\n\n{hook.MARKER}\n"

    page = hook.on_page_markdown(text, SimpleNamespace(file=SimpleNamespace(src_uri="results.md")), config, None)
    other = hook.on_page_markdown(text, SimpleNamespace(file=SimpleNamespace(src_uri="index.md")), config, None)

    assert page == ("# Results\n\n### `bench/distill.py`\n\n"
                    "No results recorded yet (`python bench/distill.py` writes them).\n")
    assert other == text


def test_hook_names_a_results_file_that_is_not_json(tmp_path):
    (tmp_path / "some-machine-2c").mkdir()
    (tmp_path / "some-machine-2c" / "distill.json").write_text("{not json")
    with pytest.raises(hook.ResultsError, match=r"some-machine-2c/distill\.json: not a readable JSON file"):
        hook.render_results(tmp_path, ["distill"])


def test_the_repositorys_results_render_under_the_results_page_marker():
    assert hook.MARKER in (REPO / "docs" / "results.md").read_text()
    benches = hook.bench_names(REPO / "bench")
    assert {"extract", "teacher_cache", "distill", "clip_reads", "scale", "report"} <= set(benches)
    assert "record" not in benches
    markdown = hook.render_results(REPO / "bench" / "results", benches)
    assert all(f"### `bench/{bench}.py`" in markdown for bench in benches)
