"""The paper's tables and figures, computed only from stored outputs (no model runs).

Inputs (read by :mod:`condi_pipe.report.inputs`): one teacher cache ``teacher/<name>/``, every finished
score run ``scores/<run>/`` made from that teacher, training histories ``students/<run>/``, and the side-by-side
timings of ``condi-pipe time-models``.

* :mod:`~condi_pipe.report.registry`: the tables by name (``@register_table``); the CLI's choices come from it.
* :mod:`~condi_pipe.report.tables`: one module per family of tables (3 and 4; accuracy and oracle; confidence;
  kinds; sgs).
* :mod:`~condi_pipe.report.evaluate` and :mod:`~condi_pipe.report.predictions`: which clips each method sends to
  the teacher, the accuracy that gives, and the measured time per video (:mod:`condi_pipe.methods.video_time`),
  vectorised over videos.
* :mod:`~condi_pipe.report.footer`, :mod:`~condi_pipe.report.render`, :mod:`~condi_pipe.report.plot`: how a table
  explains itself, and its text and figure.

Time per video is measured, never assumed: the student's seconds over all N clips + the teacher's time for the K_t
clips + the clip-ranking time measured in this run, amortised per video. Every table's footer says so, with devices
and thread counts.
"""

from condi_pipe.report.build import TEACHER_TIME, build_report, parse_int_list
from condi_pipe.report.plot import plot_report
from condi_pipe.report.registry import register_table, table_names
from condi_pipe.report.render import FORMATS, render
from condi_pipe.report.results import ReportRow, ReportTable

# The built-in tables register after the registry exists: each table module imports it.
from condi_pipe.report import tables  # noqa: E402,F401  isort: skip

__all__ = ["FORMATS", "TEACHER_TIME", "ReportRow", "ReportTable", "build_report", "parse_int_list", "plot_report",
           "register_table", "render", "table_names"]
