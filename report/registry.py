"""The tables of ``condi-pipe report``, registered by name: adding a table is one decorated function.

>>> @register_table("demo", summary="a worked example", default_k=(1,))
... def demo_table(request):
...     ...
>>> "demo" in table_names()
True
>>> _ = unregister_table("demo")

The CLI's ``--table`` choices and help, the run config's ``[report] tables``, the option checks of
:func:`condi_pipe.report.build_report` and the figures of :func:`condi_pipe.report.plot_report` all read this
registry. The built-in tables (:mod:`condi_pipe.report.tables`) register when ``condi_pipe.report`` is imported.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Callable, Optional

from condi_pipe.registry import Registry

if TYPE_CHECKING:
    from condi_pipe.report.inputs import ReportInputs
    from condi_pipe.report.results import ReportTable

DEFAULT_KS = (0, 1, 3, 5)  # table 4: the student clips K_s


@dataclass
class TableRequest:
    """What a table function gets: the loaded inputs and the checked options. ``notes`` is the table's list of
    footer notes so far (a table appends to it)."""

    inputs: "ReportInputs"
    k_values: tuple[int, ...]
    student_ks: tuple[int, ...]
    methods: Optional[list[str]]
    notes: list[str] = field(default_factory=list)
    clip_kinds: Optional[str] = None
    sgs_teacher: Optional[str] = None


@dataclass(frozen=True)
class TableSpec:
    """A registered table. ``uses_*`` say which options apply (others are refused with a one-line error);
    ``side_by_side``: whether `time-models` timings may cost it; ``plot``: the figure kind of
    :mod:`condi_pipe.report.plot` (None: no figure)."""

    name: str
    build: Callable[[TableRequest], "ReportTable"]
    summary: str
    default_k: tuple[int, ...] = (1, 3, 5, 7)
    uses_k: bool = True
    uses_ks: bool = False
    uses_methods: bool = True
    methods_refusal: str = ""  # why methods do not apply, when they do not
    needs_clip_kinds: bool = False
    side_by_side: bool = True
    plot: Optional[str] = None


#: Every table, in the order the CLI lists them.
TABLES: Registry[TableSpec] = Registry("table")


def register_table(name: str, *, summary: str, **options) -> Callable:
    """Decorator: register ``fn(request: TableRequest) -> ReportTable`` as table ``name`` (see :class:`TableSpec`
    for the options)."""

    def decorate(fn: Callable[[TableRequest], "ReportTable"]) -> Callable[[TableRequest], "ReportTable"]:
        TABLES.register(name, TableSpec(name, fn, summary, **options))
        return fn

    return decorate


def unregister_table(name: str) -> TableSpec:
    """Remove a table (tests that register a dummy table clean up with this)."""
    return TABLES.unregister(name)


def table_names() -> tuple[str, ...]:
    return TABLES.names()


def get_table(name: str) -> TableSpec:
    """The table registered as ``name``; UnknownName (a ValueError) listing the tables otherwise."""
    return TABLES.get(name)


def tables_help() -> str:
    """One line per table for ``--table``'s help."""
    return "; ".join(f"{spec.name}: {spec.summary}" for spec in TABLES.values()) + "."
