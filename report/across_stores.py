"""Tables over folds: each fold's table, computed from its own store, combined cell by cell into the mean and the
spread over the folds.

UCF-101 and HMDB-51 ship three train / test splits and the paper reports the mean over them. ``condi-pipe run``
with ``split = [1, 2, 3]`` makes one store per split, and ``condi-pipe report --table 3 --store A --store B
--store C`` combines them. Each fold's table is the ordinary table of its store (its own teacher, students, test
videos, measured times); :func:`combine_folds` only averages finished tables, so it is a pure function over
:class:`~condi_pipe.report.results.ReportTable` objects (built from arrays by :mod:`condi_pipe.report.memory` in the
tests).

**Spread:** the sample standard deviation over the folds (``ddof = 1``), of accuracy and of time per video, printed
after ``±``; JSON rows carry the means (``accuracy``, ``time_per_video_s``, ``diff_vs_dense_pp``), their ``*_std`` and
every fold's value (``*_per_fold``, in the order of ``folds``), with each fold's bootstrap CI against Dense.

Folds must agree: the same table, teacher and split (its title), the same method columns and the same K (and K_s)
rows; anything else is refused with one line naming the folds.

>>> from condi_pipe.report.results import ReportRow, ReportTable
>>> def fold(acc, seconds):
...     rows = (ReportRow("dense", None, None, acc, seconds, {"display": "Dense"}),)
...     return ReportTable("3", "Table 3", ("K", "Dense"), (("All", "x"),), rows, ())
>>> table = combine_folds([FoldTable("split-1", fold(80.0, 0.5)), FoldTable("split-2", fold(90.0, 0.7))])
>>> row = table.rows[0]
>>> row.accuracy, round(row.extra["accuracy_std"], 3), row.extra["accuracy_per_fold"]
(85.0, 7.071, [80.0, 90.0])
>>> table.cells
(('All', '0.60s ± 0.141s (85.00 ± 7.07)'),)
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Iterable, Optional, Sequence, Union

import numpy as np

from condi_pipe.report.build import build_report
from condi_pipe.report.render import format_seconds, padded_rows
from condi_pipe.report.results import ReportRow, ReportTable
from condi_pipe.storage.run_state import stage_record
from condi_pipe.storage.store import Store

if TYPE_CHECKING:
    from condi_pipe.storage.store import Store

# Tables whose cells are one (method, K[, K_s]) figure of time and accuracy each: they combine cell by cell.
FOLD_TABLES = ("3", "4")
# The columns before the method columns in each table's layout.
KEY_COLUMNS = {"3": ("K",), "4": ("K", "K_s", "K_t")}
# Datasets whose releases have numbered train / test splits (``extract --split N``): their folds are named by it.
SPLIT_SOURCES = ("ucf101", "hmdb51")
SPREAD = "the sample standard deviation over the folds (ddof = 1)"


@dataclass(frozen=True)
class FoldTable:
    """One fold's finished table and the fold's name (``split-1``)."""

    fold: str
    table: ReportTable


class FoldMismatch(ValueError):
    """The folds' tables cannot be combined (different tables, teachers, methods or K)."""


def _std(values: Sequence[float]) -> float:
    return float(np.std(values, ddof=1)) if len(values) > 1 else 0.0


def fold_cell(row: Optional[ReportRow]) -> str:
    """A combined cell: mean time ± its spread (mean accuracy ± its spread): "0.0218s ± 0.0011s (78.33 ± 1.20)"."""
    if row is None:
        return ""
    time_sd = row.extra.get("time_per_video_s_std")
    time = format_seconds(row.time_per_video_s) + (f" ± {format_seconds(time_sd)}" if time_sd is not None else "")
    if row.accuracy is None:
        return f"{time} (n/a)"
    return f"{time} ({row.accuracy:.2f} ± {row.extra['accuracy_std']:.2f})"


def _row_key(row: ReportRow) -> tuple[str, Optional[int], Optional[int]]:
    """A row's place in a table: its column (the method's display name) and its K and K_s."""
    return str(row.extra.get("display", row.method)), row.k, row.ks


def _describe(key: tuple[str, Optional[int], Optional[int]]) -> str:
    name, k, ks = key
    return name + ("" if k is None else f" K={k}") + ("" if ks is None else f" K_s={ks}")


def _check_folds(folds: Sequence[FoldTable]) -> None:
    if len(folds) < 2:
        raise FoldMismatch(f"combining folds needs two or more, got {len(folds)}")
    names = [f.fold for f in folds]
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise FoldMismatch(f"fold {', '.join(repeated)} is given more than once (folds: {', '.join(names)})")
    first = folds[0]
    if first.table.table not in FOLD_TABLES:
        raise FoldMismatch(f"table {first.table.table} does not combine over folds (tables: {', '.join(FOLD_TABLES)})")
    for other in folds[1:]:
        pair = f"folds {first.fold} and {other.fold}"
        if other.table.table != first.table.table:
            raise FoldMismatch(f"{pair} hold different tables ({first.table.table}, {other.table.table})")
        if other.table.title != first.table.title:  # the title names the teacher and the split
            raise FoldMismatch(f"{pair} disagree on the teacher or split: '{first.table.title}' against "
                               f"'{other.table.title}'")
        if other.table.columns != first.table.columns:
            raise FoldMismatch(f"{pair} have different columns (methods): {list(first.table.columns)} against "
                               f"{list(other.table.columns)}")
        mine, theirs = [_row_key(r) for r in first.table.rows], [_row_key(r) for r in other.table.rows]
        if sorted(mine, key=repr) != sorted(theirs, key=repr) or len(set(mine)) != len(mine):
            missing = [_describe(k) for k in mine if k not in theirs]
            extra = [_describe(k) for k in theirs if k not in mine]
            raise FoldMismatch(f"{pair} have different rows (K or K_s): only in {first.fold}: "
                               f"{', '.join(missing) or 'none'}; only in {other.fold}: {', '.join(extra) or 'none'}")


def _mean_row(fold_names: list[str], rows: list[ReportRow]) -> ReportRow:
    """The rows of one cell over the folds -> one row of means with spreads and the per-fold values."""
    first = rows[0]
    accuracies = [r.accuracy for r in rows]
    times = [r.time_per_video_s for r in rows]
    extra: dict[str, Any] = {"display": first.extra.get("display", first.method), "run": first.extra.get("run"),
                             "split": first.extra.get("split"), "k_t": first.extra.get("k_t"), "folds": fold_names,
                             "videos_per_fold": [r.extra.get("videos") for r in rows], "spread": "std"}
    accuracy = None
    if all(a is not None for a in accuracies):
        accuracy = float(np.mean(accuracies))
        extra.update(accuracy_std=_std(accuracies), accuracy_per_fold=[float(a) for a in accuracies])
    time = None
    if all(t is not None for t in times):
        time = float(np.mean(times))
        extra.update(time_per_video_s_std=_std(times), time_per_video_s_per_fold=[float(t) for t in times])
    gflops = [r.extra.get("gflops_per_video") for r in rows]  # JSON only: the cells keep time and accuracy
    if all(g is not None for g in gflops):
        extra.update(gflops_per_video=float(np.mean(gflops)), gflops_per_video_per_fold=[float(g) for g in gflops])
    diffs = [r.extra.get("diff_vs_dense_pp") for r in rows]
    if all(d is not None for d in diffs):
        extra.update(diff_vs_dense_pp=float(np.mean(diffs)), diff_vs_dense_pp_std=_std(diffs),
                     diff_vs_dense_pp_per_fold=[float(d) for d in diffs],
                     ci95_vs_dense_pp_per_fold=[list(r.extra.get("ci95_vs_dense_pp") or []) for r in rows])
    return ReportRow(first.method, first.k, first.ks, accuracy, time, extra)


def _line_key(table: str, line: Sequence[str]) -> tuple[Optional[int], Optional[int]]:
    """(K, K_s) of a line of a fold's layout."""
    if table == "4":
        return int(line[0]), int(line[1])
    return int(line[0]), None


def _footer(folds: Sequence[FoldTable]) -> tuple[str, ...]:
    names = [f.fold for f in folds]
    lines = [f"Mean over {len(folds)} folds ({', '.join(names)}), cell by cell: each fold's figure is its own "
             "store's table (its own teacher, students, test videos and measured times); ± is "
             f"{SPREAD}. JSON: accuracy, time_per_video_s and diff_vs_dense_pp are the means, *_std their spreads, "
             "*_per_fold each fold's value in the order of 'folds' (with each fold's bootstrap CI against Dense)."]
    videos = [next((r.extra.get("videos") for r in f.table.rows if r.extra.get("videos") is not None), "?")
              for f in folds]
    lines.append("Videos per fold: " + ", ".join(f"{n} {v}" for n, v in zip(names, videos)) + ".")
    # Lines every fold's footer shares (how figures were obtained, z labels, notes) hold for the combination too;
    # the bootstrap note describes per-fold intervals the combined cells do not show.
    shared = [line for line in folds[0].table.footer
              if all(line in f.table.footer for f in folds[1:]) and "[low, high]" not in line]
    lines += shared
    if len(shared) < len(folds[0].table.footer):
        lines.append("Lines that differ between folds (measured devices and timings, counts, the bootstrap CIs "
                     "against Dense) are in each fold's own table.")
    return tuple(lines)


def combine_folds(folds: Sequence[FoldTable]) -> ReportTable:
    """One table from the same table of every fold: each cell the mean over the folds with its spread (see the
    module's docstring); FoldMismatch (a ValueError) when the folds do not hold the same table."""
    folds = list(folds)
    _check_folds(folds)
    first = folds[0].table
    names = [f.fold for f in folds]
    by_fold = [{_row_key(r): r for r in f.table.rows} for f in folds]
    combined = {key: _mean_row(names, [rows[key] for rows in by_fold]) for key in by_fold[0]}
    key_columns = KEY_COLUMNS[first.table]
    width = len(key_columns)
    cells = []
    for line in first.cells:
        if line[0] == "All":  # Dense's line: its cell stays in the column it has in the fold tables
            cells.append([cell if i < width else (fold_cell(combined[("Dense", None, None)]) if cell else "")
                          for i, cell in enumerate(line)])
            continue
        k, ks = _line_key(first.table, line)
        cells.append(list(line[:width]) + [fold_cell(combined.get((column, k, ks))) if cell else ""
                                           for column, cell in zip(first.columns[width:], line[width:])])
    title = first.title.replace(":", f" (mean ± std over {len(folds)} folds: {', '.join(names)}):", 1)
    return ReportTable(first.table, title, first.columns, padded_rows(cells, len(first.columns)),
                       tuple(combined[_row_key(r)] for r in first.rows), _footer(folds), {"folds": names})


def fold_name(store) -> str:
    """A fold's name: ``split-N`` for a UCF-101 / HMDB-51 store extracted with ``--split N``, else the store's
    folder name."""
    config = _extract_config(store)
    if config.get("source") in SPLIT_SOURCES and config.get("split") is not None:
        return f"split-{config['split']}"
    return _folder_name(store)


def _extract_config(store) -> dict:

    return stage_record(store, "extract").get("config") or {}


def _folder_name(store) -> str:
    return os.path.basename(store.url.rstrip("/")) or store.url


def fold_names(stores: Sequence["Store"]) -> list[str]:
    """Each store's fold name. Stores of one dataset (one extract root) are its splits, named by
    :func:`fold_name`; stores of different datasets (the generated benchmark on several seeds, one store each) by
    their folder names. The same split of the same dataset given twice is refused."""
    identities = [(_extract_config(s).get("root"), _extract_config(s).get("split")) for s in stores]
    seen: dict = {}
    for store, identity in zip(stores, identities):
        if identity in seen:
            raise FoldMismatch(f"{seen[identity]} and {store.url} are the same fold ({fold_name(store)}): give each "
                               "split's store once")
        seen[identity] = store.url
    if len({root for root, _ in identities}) == 1:
        names = [fold_name(s) for s in stores]
    else:
        names = [_folder_name(s) for s in stores]
    return names if len(set(names)) == len(names) else [s.url for s in stores]


def build_report_across_stores(stores: Iterable[Union["Store", str]], table: Union[str, int], **options: Any) -> ReportTable:
    """``table`` of every store (``options`` as :func:`condi_pipe.report.build_report`), combined over the stores
    as folds by :func:`combine_folds`. Each store is one fold: the same dataset's different splits (``condi-pipe
    run`` with ``split = [1, 2, 3]`` writes ``<store>/split-1`` ...), or one protocol on different data of one
    source (``condi-pipe demo --seeds`` writes ``<store>/seed-S``)."""

    name = str(table).strip().lower()
    stores = [s if isinstance(s, Store) else Store(s) for s in stores]
    if name not in FOLD_TABLES:
        raise FoldMismatch(f"table {name} does not combine over folds (several --store): tables "
                           f"{', '.join(FOLD_TABLES)} do")
    if len(stores) < 2:
        raise FoldMismatch(f"combining folds needs two or more stores, got {len(stores)}")
    sources = {s.url: (stage_record(s, "extract").get("config") or {}).get("source") for s in stores}
    if len(set(sources.values())) > 1:
        raise FoldMismatch("the stores hold different datasets: "
                           + ", ".join(f"{url} ({source})" for url, source in sources.items()))
    return combine_folds([FoldTable(fold, build_report(store, name, **options))
                          for fold, store in zip(fold_names(stores), stores)])
