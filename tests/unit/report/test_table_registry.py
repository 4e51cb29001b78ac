"""A table is one registered function: registered here, it is offered by the CLI, accepted by run configs, built by
``build_report`` and rendered, with no other file edited."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from condi_pipe.app.run_config import ReportSection
from condi_pipe.cli import main as cli
from condi_pipe.report import ReportRow, ReportTable, build_report, table_names
from condi_pipe.report.registry import get_table, register_table, unregister_table

GOLDEN_STORE = Path(__file__).parents[2] / "golden" / "report_store"


@pytest.fixture()
def clip_count_table():
    """A dummy table: how many clips each video of the split has (from the loaded inputs alone)."""

    @register_table("clip-counts", summary="clips per video (a test table)", uses_methods=False)
    def clip_counts(request):
        inputs = request.inputs
        rows = tuple(ReportRow("clips", None, None, None, None, {"video_id": int(v), "clips": int(n)})
                     for v, n in zip(inputs.video_id, inputs.clips))
        cells = tuple((str(int(v)), str(int(n))) for v, n in zip(inputs.video_id, inputs.clips))
        return ReportTable("clip-counts", f"Clips per video, split '{inputs.split}'", ("Video", "Clips"), cells, rows,
                           tuple(f"Note: {note}" for note in request.notes))

    yield clip_counts
    unregister_table("clip-counts")


@pytest.fixture()
def store(tmp_path):
    shutil.copytree(GOLDEN_STORE, tmp_path / "store")
    return str(tmp_path / "store")


def test_a_registered_table_is_offered_everywhere(clip_count_table, store):
    assert "clip-counts" in table_names()
    help_text = CliRunner().invoke(cli, ["report", "--help"]).output
    assert "clip-counts" in help_text and "clips per video (a test table)" not in help_text  # help built at import
    assert ReportSection(tables=["3", "clip-counts"]).tables == ["3", "clip-counts"]

    report = build_report(store, "clip-counts")
    assert report.table == "clip-counts"
    counts = {row.extra["video_id"]: row.extra["clips"] for row in report.rows}
    assert len(counts) == 30 and all(1 <= n <= 9 for n in counts.values())  # the golden store's test split
    assert sum(counts.values()) == 140  # its 140 test clips

    result = CliRunner().invoke(cli, ["report", "--store", store, "--table", "clip-counts", "--format", "csv"])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0] == "Video,Clips" and len([line for line in lines if not line.startswith("#")]) == 31


def test_a_table_refuses_the_options_it_does_not_use(clip_count_table, store):
    with pytest.raises(ValueError, match="methods do not apply to the clip-counts table"):
        build_report(store, "clip-counts", methods="condi-sr")
    with pytest.raises(ValueError, match="applies to table 4 only"):
        build_report(store, "clip-counts", ks="1")


def test_unknown_tables_are_refused_with_the_registered_names():
    with pytest.raises(ValueError, match=r"unknown table 'nope'; choose one of: 3, 4, accuracy"):
        ReportSection(tables=["nope"])
    with pytest.raises(ValueError, match="unknown table 'nope'; choose one of: 3, 4, accuracy"):
        get_table("nope")
    result = CliRunner().invoke(cli, ["report", "--store", "x", "--table", "nope"])
    assert result.exit_code == 2 and "'nope' is not one of '3', '4', 'accuracy'" in result.output


def test_registering_a_name_twice_is_refused():
    with pytest.raises(ValueError, match="^table '3' is registered twice$"):
        register_table("3", summary="again")(lambda request: None)


def test_every_builtin_table_names_its_figure_or_none():
    """plot_report draws by the registered plot kind; the builtin kinds are the ones it knows."""
    kinds = {name: get_table(name).plot for name in table_names()}
    assert kinds["3"] == kinds["4"] == "accuracy-vs-time" and kinds["kinds"] is None
    assert set(kinds.values()) <= {"accuracy-vs-time", "accuracy-vs-k", "history", "histogram", "sweep", None}
    assert np.all([get_table(name).name == name for name in table_names()])


def test_registry_docstring_example():
    import doctest

    from condi_pipe.report import registry

    result = doctest.testmod(registry)
    assert result.failed == 0 and result.attempted > 0 and "demo" not in table_names()
