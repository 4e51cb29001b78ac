"""``condi-pipe report``: tables and figures from a store's stored outputs (no model runs), written to files.

The tables themselves live in :mod:`condi_pipe.report` (one registered function each); this stage renders one
table to the formats asked and writes it, with its figure when the table has one.
"""

from __future__ import annotations

import os
from typing import Any, Callable, Optional, Sequence, Union

from condi_pipe.report import ReportTable, build_report, render
from condi_pipe.report.plot import plot_figures
from condi_pipe.report.registry import get_table
from condi_pipe.storage.store import Store


def write_report(store: Union[Store, str], table: str, stem: str, *, formats: Sequence[str] = ("md",),
                 plot: bool = False, log: Optional[Callable[[str], None]] = None, **options: Any) -> ReportTable:
    """Build ``table`` (``options`` as :func:`condi_pipe.report.build_report`) and write ``<stem>.<format>`` for
    each format, and ``<stem>.png`` when ``plot`` and the table has a figure."""
    report = write_table(build_report(store, table, **options), stem, formats=formats, plot=plot)
    if log is not None:
        log(f"report: wrote table {table} to {stem}.{{{','.join(formats)}}}" + (" and a figure" if plot else ""))
    return report


def write_table(report: ReportTable, stem: str, *, formats: Sequence[str] = ("md",), plot: bool = False
                ) -> ReportTable:
    """Write a finished table as ``<stem>.<format>`` for each format, and ``<stem>.png`` when ``plot`` and the
    table has a figure (Tables 3 and adaptive with GFLOPs per video also ``<stem>-gflops.png``,
    :func:`report.plot.plot_figures`)."""
    folder = os.path.dirname(stem)
    if folder:
        os.makedirs(folder, exist_ok=True)
    for fmt in formats:
        with open(f"{stem}.{fmt}", "w", encoding="utf-8") as fh:
            fh.write(render(report, fmt))
    if plot and get_table(report.table).plot is not None:
        plot_figures(report, f"{stem}.png")
    return report
