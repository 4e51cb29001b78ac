"""Figures of the tables (PNG through matplotlib's Agg canvas): accuracy against K, accuracy against time, FPR per
epoch, the histogram of B'; beside Table 3's and the adaptive table's, accuracy against GFLOPs per video with the
Pareto front."""

from __future__ import annotations

import math
import os

from condi_pipe.report.cost import PLOT_SERIES, budget_label
from condi_pipe.report.registry import get_table
from condi_pipe.report.render import format_seconds
from condi_pipe.report.results import ReportRow, ReportTable


def line_styles():
    """Colour, marker and line style per line, all three varying, so lines that coincide stay distinguishable."""
    import itertools

    colors = ["tab:blue", "tab:orange", "tab:green", "tab:red", "tab:purple", "tab:brown", "tab:pink", "tab:olive",
              "tab:cyan", "tab:gray"]
    markers = ["o", "s", "^", "D", "v", "P", "X", "<", ">", "h"]
    dashes = ["-", "--", "-.", ":"]
    for i in itertools.count():
        yield {"color": colors[i % len(colors)], "marker": markers[i % len(markers)],
               "linestyle": dashes[i % len(dashes)], "markersize": 6 - (i % 3)}


def plot_report(report: ReportTable, path: str):
    """Write a PNG for ``report`` with matplotlib's Agg canvas (no GUI, no global backend switch).

    accuracy: accuracy against K per method, Dense dashed (Fig. 4); 3, 4 and adaptive: accuracy against time per
    video (the trade-off; an adaptive policy's line runs through its targets); oracle: accuracy against k;
    confidence: FPR per epoch per run (Fig. 5); sgs: the histogram of B' over the split's clips. Returns the
    matplotlib Figure (its axes hold the drawn data).
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator


    kind = get_table(report.table).plot
    if kind is None:
        raise ValueError(f"no plot for table '{report.table}'")

    fig = Figure(figsize=(8, 5.2), dpi=120)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    rows = report.rows
    dense = next((r for r in rows if r.method == "dense"), None)
    groups: dict[str, list[ReportRow]] = {}
    for row in rows:
        if row.method != "dense":
            groups.setdefault(str(row.extra.get("display", row.method)), []).append(row)
    styles = line_styles()

    def line(xs, ys, label, **kwargs):
        style = next(styles)
        return ax.plot(xs, ys, label=label, alpha=0.85, **{**style, **kwargs})[0]

    def annotate(text, x, y, color):
        ax.annotate(text, (x, y), textcoords="offset points", xytext=(4, 4), fontsize=7, color=color)

    if kind == "accuracy-vs-k":
        for name, group in groups.items():
            group = sorted(group, key=lambda r: r.k)
            line([r.k for r in group], [r.accuracy for r in group], name,
                 **({} if len(group) > 1 else {"linestyle": "none", "markersize": 8}))
        if dense is not None:
            ax.axhline(dense.accuracy, color="black", linestyle="--", label=f"Dense ({dense.accuracy:.2f})")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_xlabel("K (clips sent to the teacher)")
        ax.set_ylabel("top-1 accuracy (%)")
    elif kind == "accuracy-vs-time":
        divisions = any(row.ks is not None for row in rows)  # table 4: a line per K through its K_s
        for name, group in groups.items():
            if divisions:
                for k in sorted({r.k for r in group}):
                    sub = sorted((r for r in group if r.k == k), key=lambda r: r.ks)
                    drawn = line([r.time_per_video_s for r in sub], [r.accuracy for r in sub], f"{name}, K={k}")
                    for r in sub:
                        annotate(f"K_s={r.ks}", r.time_per_video_s, r.accuracy, drawn.get_color())
            else:  # by K; an adaptive policy's rows (no K, one per target) by time
                group = sorted(group, key=lambda r: (r.k is None, r.k or 0, r.time_per_video_s))
                drawn = line([r.time_per_video_s for r in group], [r.accuracy for r in group], name)
                for r in group:
                    annotate(budget_label(r), r.time_per_video_s, r.accuracy, drawn.get_color())
        if dense is not None:
            ax.plot([dense.time_per_video_s], [dense.accuracy], marker="*", markersize=14, color="black",
                    linestyle="none", label=f"Dense ({format_seconds(dense.time_per_video_s)}, {dense.accuracy:.2f})")
        ax.set_xlabel("mean time per video (s)")
        ax.set_ylabel("top-1 accuracy (%)")
    elif kind == "histogram":
        data = report.series.get("sgs_bins", {})
        ax.bar(data.get("bins", []), data.get("clips", []), color="tab:blue", alpha=0.85)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_xlabel(f"B' (temporal slices kept after SGS), teacher '{data.get('teacher', '?')}'")
        ax.set_ylabel("clips")
    elif kind == "history":
        for name, data in report.series.items():
            points = [(e, f) for e, f in zip(data["epoch"], data["fpr"]) if f is not None]
            line([p[0] for p in points], [p[1] for p in points], name)
        if not report.series:
            ax.text(0.5, 0.5, "no training history with an 'fpr' column", ha="center", va="center",
                    transform=ax.transAxes)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_xlabel("epoch")
        ax.set_ylabel("false-positive rate of z~ > 0.5")
    elif kind == "sweep":  # the validation metric per epoch of each trial (a pruned one's line stops early)
        for name, data in report.series.items():
            line(data["epoch"], data["value"], name)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_xlabel("epoch")
        ax.set_ylabel(next((d["metric"] for d in report.series.values()), "validation metric") + " (validation)")
    else:
        raise ValueError(f"table '{report.table}': unknown plot kind '{kind}'")
    ax.set_title(report.title, fontsize=9, wrap=True)
    ax.grid(True, alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=8, loc="best", framealpha=0.85)
    fig.tight_layout()
    fig.savefig(path, format="png")
    return fig


def plot_accuracy_vs_gflops(report: ReportTable, path: str):
    """Write a PNG of accuracy against GFLOPs per video: every method and K of the table (one marker and colour per
    method, and per adaptive policy, its targets annotated; Dense a star), the Pareto front ringed and drawn as a
    step line (the best accuracy each budget buys); a log scale when the costs span more than a factor of 10.
    Reads ``report.series`` (:func:`condi_pipe.report.cost.cost_front`); returns the Figure."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.ticker import FuncFormatter

    data = report.series.get(PLOT_SERIES)
    if not data:
        raise ValueError(f"table '{report.table}' has no GFLOPs per video to plot (`condi-pipe time-models` counts "
                         "them)")
    fig = Figure(figsize=(8, 5.2), dpi=120)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    styles = line_styles()
    groups: dict[str, list[dict]] = {}
    for point in data["points"]:
        groups.setdefault(point["group"], []).append(point)
    for name, points in groups.items():
        if all(p["method"] == "dense" for p in points):  # Dense
            ax.plot([p["gflops"] for p in points], [p["accuracy"] for p in points], marker="*", markersize=14,
                    color="black", linestyle="none", label=name)
            continue
        style = {**next(styles), "linestyle": "none"}
        drawn = ax.plot([p["gflops"] for p in points], [p["accuracy"] for p in points], label=name, alpha=0.85,
                        **style)[0]
        for p in points:
            ax.annotate(p["label"][len(name):].strip(), (p["gflops"], p["accuracy"]), textcoords="offset points",
                        xytext=(4, 4), fontsize=7, color=drawn.get_color())
    front = sorted((p for p in data["points"] if p["front"]), key=lambda p: (p["gflops"], p["accuracy"]))
    xs, ys = [p["gflops"] for p in front], [p["accuracy"] for p in front]
    ax.plot(xs, ys, drawstyle="steps-post", color="black", linewidth=1.2, alpha=0.7, label="Pareto front")
    ax.plot(xs, ys, marker="o", markersize=11, markerfacecolor="none", markeredgecolor="black", linestyle="none")
    costs = [p["gflops"] for p in data["points"] if p["gflops"] > 0]
    wide = bool(costs) and max(costs) > 10 * min(costs)  # a video-level student next to Dense: orders of magnitude
    if wide:
        ax.set_xscale("log")
        ax.xaxis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:g}"))
        ax.xaxis.set_minor_formatter(FuncFormatter(  # 2 and 5 of each decade: enough to read a point off
            lambda value, _: f"{value:g}" if value > 0 and round(value / 10 ** math.floor(math.log10(value))) in (2, 5)
            else ""))
    ax.set_xlabel("GFLOPs per video (mean over the split's videos" + (", log scale)" if wide else ")"))
    ax.set_ylabel("top-1 accuracy (%)")
    ax.set_title(report.title.replace("mean time per video (top-1 accuracy, %)",
                                      "top-1 accuracy (%) against GFLOPs per video"), fontsize=9, wrap=True)
    ax.grid(True, alpha=0.3, which="both")
    ax.legend(fontsize=8, loc="best", framealpha=0.85)
    fig.tight_layout()
    fig.savefig(path, format="png")
    return fig


def beside_path(path: str, suffix: str) -> str:
    """``table-3.png`` -> ``table-3-gflops.png``: where a figure drawn beside a table's own goes."""
    stem, ext = os.path.splitext(path)
    return f"{stem}-{suffix}{ext or '.png'}"


def plot_figures(report: ReportTable, path: str) -> list[str]:
    """The table's figure at ``path`` (:func:`plot_report`) and, when it has GFLOPs per video (Table 3 of a store
    `condi-pipe time-models` counted), accuracy against GFLOPs beside it (:func:`beside_path`, ``-gflops``): the
    paths written."""
    plot_report(report, path)
    written = [path]
    if report.series.get(PLOT_SERIES):
        written.append(beside_path(path, "gflops"))
        plot_accuracy_vs_gflops(report, written[-1])
    return written
