"""Golden report: every table of a fixed, committed store rendered as JSON and Markdown must stay byte-identical.

The store under ``report_store/`` was written once by ``make_report_store.py`` and is committed as bytes, so only
the report code can move these files. Clip-selection time is the one measured quantity; a stepping clock makes it
a constant here. Regenerate the expected files (after a deliberate change) with
``CONDI_PIPE_UPDATE_GOLDEN=1 pytest tests/golden``: that run rewrites every expected file and reports each case
as *skipped* (never passed), since a rewritten file matches by construction. Review the diff of ``report/``,
run ``pytest tests/golden`` without the variable to see the cases pass, and say why in the commit.
"""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

import pytest

from condi_pipe.report import build_report, render

HERE = Path(__file__).parent
EXPECTED = HERE / "report"
STORE = HERE / "report_store"

CASES = {
    "table3": dict(table="3"),
    "table3_share": dict(table="3", teacher_time="share"),
    "table3_curve_all_methods": dict(table="3", teacher_time="curve", k="1,2,4",
                                     methods="condi-sr,bce-conf,st-ent,st-conf,trivial-mt,uniform-k,random,oracle,"
                                             "perfect-z,equidistant"),
    "pairwise": dict(table="pairwise"),
    "pairwise_all_methods": dict(table="pairwise", teacher_time="share", k="1,3",
                                 methods="condi-sr,equidistant,uniform-k,random,perfect-z"),
    "table4": dict(table="4"),
    "table4_ks": dict(table="4", k="2,6", ks="0,2,4", teacher_time="share"),
    "accuracy": dict(table="accuracy"),
    "oracle": dict(table="oracle"),
    "oracle_train": dict(table="oracle", split="train", k="1,2"),
    "confidence": dict(table="confidence"),
    "sgs": dict(table="sgs"),
    "kinds": dict(table="kinds", clip_kinds="{store}/synth_clips.csv"),
}


@pytest.fixture()
def golden_store(tmp_path, monkeypatch):
    store = tmp_path / "store"
    shutil.copytree(STORE, store)
    ticks = iter(range(1 << 40))
    monkeypatch.setattr(time, "perf_counter", lambda: next(ticks) * 1e-4)  # every timed span: a whole tick
    return store


@pytest.mark.parametrize("case", sorted(CASES))
def test_report_matches_the_golden_files(golden_store, case):
    options = {key: value.format(store=golden_store) if isinstance(value, str) else value
               for key, value in CASES[case].items()}
    report = build_report(str(golden_store), **options)
    texts = {EXPECTED / f"{case}.{fmt}": render(report, fmt).replace(str(golden_store), "<store>")
             for fmt in ("json", "md")}
    if os.environ.get("CONDI_PIPE_UPDATE_GOLDEN"):
        EXPECTED.mkdir(exist_ok=True)
        for path, text in texts.items():
            path.write_text(text, encoding="utf-8")
        pytest.skip(f"CONDI_PIPE_UPDATE_GOLDEN is set: rewrote {', '.join(sorted(p.name for p in texts))}; "
                    "review the diff of tests/golden/report/ and rerun without the variable (nothing was checked)")
    for path, text in texts.items():
        assert text == path.read_text(encoding="utf-8"), f"{path.name} changed"
