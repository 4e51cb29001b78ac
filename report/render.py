"""A table as text: its cells (the paper's "0.0639s (88.87)" with the CI against Dense) and the output formats
Markdown, CSV, JSON and LaTeX."""

from __future__ import annotations

import csv
import io
import json
import math
from typing import Optional, Sequence

import numpy as np

from condi_pipe.report.results import ReportRow, ReportTable

FORMATS = ("md", "csv", "json", "latex")


def format_seconds(seconds: float) -> str:
    if math.isnan(seconds):  # not measured: a teacher imported from a logits file has no timings
        return "n/a"
    if seconds >= 1:
        return f"{seconds:.2f}s"
    return np.format_float_positional(seconds, precision=3, unique=False, fractional=False, trim="k") + "s"


def format_gflops(value: float) -> str:
    """GFLOPs with three significant digits, never in exponent form: 0.0327, 1.00, 12.3, 1234."""
    if value == 0:
        return "0"
    digits = max(0, 2 - int(math.floor(math.log10(abs(value)))))
    return f"{value:.{digits}f}"


def time_accuracy_cell(row: Optional[ReportRow]) -> str:
    """The paper's cell: "1.24s (88.87)", with the GFLOPs per video after the time when counted ("1.24s, 45.1
    GFLOPs (88.87)"), then the 95% CI of the difference from Dense when the row has one: "1.24s (88.87) [-3.3,
    +5.0]"."""
    if row is None:
        return ""
    gflops = row.extra.get("gflops_per_video")
    cost = format_seconds(row.time_per_video_s) + ("" if gflops is None else f", {format_gflops(gflops)} GFLOPs")
    text = f"{cost} ({row.accuracy:.2f})"
    interval = row.extra.get("ci95_vs_dense_pp")
    if interval is not None:
        text += f" [{interval[0]:+.1f}, {interval[1]:+.1f}]"
    return text


def difference_cell(difference_pp: Optional[float], interval_pp: Optional[Sequence[float]]) -> str:
    """A paired difference in percentage points and its 95% CI: "+3.0 [+0.3, +5.7]" ("" when there is none)."""
    if difference_pp is None or interval_pp is None:
        return ""
    return f"{difference_pp:+.1f} [{interval_pp[0]:+.1f}, {interval_pp[1]:+.1f}]"


def number_cell(value: Optional[float], digits: int = 4) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    return f"{value:.{digits}f}"


def padded_rows(cells: Sequence[Sequence[str]], width: int) -> tuple[tuple[str, ...], ...]:
    """Rows padded with empty cells to the header's width."""
    return tuple(tuple(row) + ("",) * (width - len(row)) for row in cells)


def render(report: ReportTable, fmt: str = "md") -> str:
    """The table as Markdown, CSV (footer as ``#`` lines), JSON (a list of row objects) or LaTeX."""
    fmt = fmt.lower()
    if fmt == "json":
        return json.dumps(report.to_json(), indent=2) + "\n"
    if fmt == "md":
        widths = [max(len(c), *(len(row[i]) for row in report.cells)) if report.cells else len(c)
                  for i, c in enumerate(report.columns)]
        line = lambda cells: "| " + " | ".join(c.ljust(w) for c, w in zip(cells, widths)) + " |"  # noqa: E731
        out = [f"**{report.title}**", "", line(report.columns), "|" + "|".join("-" * (w + 2) for w in widths) + "|"]
        out += [line(row) for row in report.cells]
        out += [""] + [f"{text}  " if i < len(report.footer) - 1 else text for i, text in enumerate(report.footer)]
        return "\n".join(out) + "\n"
    if fmt == "csv":
        buf = io.StringIO()
        writer = csv.writer(buf, lineterminator="\n")
        writer.writerow(report.columns)
        writer.writerows(report.cells)
        for text in report.footer:
            buf.write(f"# {text}\n")
        return buf.getvalue()
    if fmt == "latex":
        return latex(report)
    raise ValueError(f"unknown format '{fmt}' (formats: {', '.join(FORMATS)})")


LATEX_ESCAPES = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_",
                  "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}",
                  "<": r"\textless{}", ">": r"\textgreater{}"}


def tex(text: str) -> str:
    return "".join(LATEX_ESCAPES.get(ch, ch) for ch in str(text))


def latex(report: ReportTable) -> str:
    spec = "l" * len(report.columns)
    out = [r"% needs \usepackage{booktabs}", r"\begin{table}[t]", r"\centering", rf"\caption{{{tex(report.title)}}}",
           rf"\begin{{tabular}}{{{spec}}}",
           r"\toprule", " & ".join(tex(c) for c in report.columns) + r" \\", r"\midrule"]
    out += [" & ".join(tex(c) for c in row) + r" \\" for row in report.cells]
    out += [r"\bottomrule", r"\end{tabular}", r"\par\smallskip", r"{\footnotesize"]
    out += [tex(text) + r"\par" for text in report.footer]
    out += ["}", r"\end{table}"]
    return "\n".join(out) + "\n"
