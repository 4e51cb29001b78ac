"""What a table is: machine rows (:class:`ReportRow`, the JSON output) and the human layout (:class:`ReportTable`)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Mapping, Optional

import numpy as np

# ------------------------------------------------------------------------------------------------ results


@dataclass(frozen=True)
class ReportRow:
    """One result: ``method`` at clip budget ``k`` (None = All) with ``ks`` student clips (division only).

    ``accuracy`` is top-1 video accuracy in percent; ``time_per_video_s`` the mean measured time per video.
    ``extra`` holds the rest (display name, run, time parts, video count, seeds, FPR/AUROC, ...).
    """

    method: str
    k: Optional[int]
    ks: Optional[int]
    accuracy: Optional[float]
    time_per_video_s: Optional[float]
    extra: Mapping[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        row = {"method": self.method, "k": self.k, "ks": self.ks, "accuracy": self.accuracy,
               "time_per_video_s": self.time_per_video_s}
        row.update(self.extra)
        return {key: json_value(value) for key, value in row.items()}


@dataclass(frozen=True)
class ReportTable:
    """A finished table: machine rows, the human layout (``columns`` x ``cells``), and the footer."""

    table: str
    title: str
    columns: tuple[str, ...]  # header of the human layout
    cells: tuple[tuple[str, ...], ...]  # human layout, one tuple per line, aligned with ``columns``
    rows: tuple[ReportRow, ...]  # machine rows (``render(..., "json")``)
    footer: tuple[str, ...]  # how accuracy and time were obtained, devices, and notes on omitted methods
    series: Mapping[str, Any] = field(default_factory=dict)  # extra plot data (per-epoch histories)

    def to_json(self) -> list[dict[str, Any]]:
        return [row.to_json() for row in self.rows]


def json_value(value: Any) -> Any:
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        value = float(value)
        return None if math.isnan(value) or math.isinf(value) else value
    if isinstance(value, (list, tuple)):
        return [json_value(v) for v in value]
    if isinstance(value, dict):
        return {k: json_value(v) for k, v in value.items()}
    return value
