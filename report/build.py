"""``build_report``: one table computed from a store's stored outputs (no model runs)."""

from __future__ import annotations

from typing import Iterable, Optional, Union

import numpy as np

from condi_pipe.report.evaluate import load_inputs
from condi_pipe.report.inputs import ReportInputs
from condi_pipe.report.registry import DEFAULT_KS, TableRequest, TableSpec, get_table, table_names
from condi_pipe.report.results import ReportTable
from condi_pipe.storage.run_state import read_run
from condi_pipe.storage.store import Store

# How models are costed (methods/video_time.py): "side-by-side" from ``condi-pipe time-models`` (every model timed
# interleaved in one process); "share" / "curve": each model's own run (teacher-cache, score); auto: the first
# available of side-by-side, then curve, then share.
TEACHER_TIME = ("auto", "share", "curve", "side-by-side")


def parse_int_list(text: Union[str, Iterable[int], None], name: str) -> Optional[tuple[int, ...]]:
    """``"1,3,5"`` -> (1, 3, 5); an iterable of ints is validated; None stays None."""
    if text is None:
        return None
    if isinstance(text, str):
        parts = [p.strip() for p in text.split(",") if p.strip()]
        try:
            values = tuple(int(p) for p in parts)
        except ValueError:
            raise ValueError(f"{name} must be comma-separated integers, got '{text}'") from None
    else:
        values = tuple(text)
        if not all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in values):
            raise ValueError(f"{name} must be integers, got {values!r}")
        values = tuple(int(v) for v in values)
    if not values:
        raise ValueError(f"{name} is empty")
    return tuple(dict.fromkeys(values))  # keep order, drop repeats


def clip_budget_notes(inputs: "ReportInputs", k_values, explicit: bool) -> list[str]:
    """K above a video's clip count sends all its clips (short videos do): a note says how many videos that is.
    Explicit K values that all exceed every video's count ask for nothing but Dense: an error naming them."""
    if not len(inputs.clips):
        return []
    longest, notes = int(inputs.clips.max()), []
    if explicit and min(k_values) > longest:
        raise ValueError(f"K={','.join(map(str, k_values))} is larger than the longest {inputs.split} video's "
                         f"{longest} clips: every video would send all its clips (that is Dense); choose K <= {longest}")
    for k in k_values:
        short = int((inputs.clips < k).sum())
        if short == len(inputs.clips):
            notes.append(f"K={k}: at least every video's clip count, so every video uses all its clips (as Dense).")
        elif short:
            notes.append(f"K={k}: {short} of {len(inputs.clips)} videos have fewer than {k} clips and use all of them.")
    return notes


def _only_for(tables: Iterable[str]) -> str:
    """"table 4 only", "tables 3, 4 only": where an option applies."""
    names = list(tables)
    return f"table{'s' if len(names) > 1 else ''} {', '.join(names)} only"


def check_options(table: Union[str, int], k, ks, methods, clip_kinds: Optional[str]
                  ) -> tuple[TableSpec, tuple[int, ...], tuple[int, ...], Optional[list[str]]]:
    """The registered table and its options, checked against what it uses: (spec, K values, K_s values, methods)."""
    name = str(table).strip().lower()
    spec = get_table(name)
    k_values = parse_int_list(k, "k") or spec.default_k
    if any(v < 1 for v in k_values):
        raise ValueError(f"every K must be >= 1, got {list(k_values)}")
    if ks is not None and not spec.uses_ks:
        with_ks = [t for t in table_names() if get_table(t).uses_ks]
        raise ValueError(f"ks (K_s, the clips the student classifies) applies to {_only_for(with_ks)}; use k "
                         "for clip budgets")
    ks_values = parse_int_list(ks, "ks") or DEFAULT_KS
    if any(v < 0 for v in ks_values):
        raise ValueError(f"every K_s must be >= 0, got {list(ks_values)}")
    if not spec.uses_k and k is not None:
        raise ValueError(f"k does not apply to the {name} table")
    if isinstance(methods, str):
        methods = [m for m in methods.split(",") if m.strip()]
    methods = list(methods) if methods else None
    if not spec.uses_methods and methods:
        raise ValueError(f"methods do not apply to the {name} table{spec.methods_refusal}")
    if spec.needs_clip_kinds and clip_kinds is None:
        raise ValueError(f"table {name} needs the benchmark's clip kinds: --clip-kinds PATH/synth_clips.csv")
    if not spec.needs_clip_kinds and clip_kinds is not None:
        with_kinds = [t for t in table_names() if get_table(t).needs_clip_kinds]
        raise ValueError(f"clip kinds (--clip-kinds) apply to {_only_for(with_kinds)}")
    return spec, tuple(k_values), tuple(ks_values), methods


def build_report(
    store: Union[Store, str],
    table: Union[str, int],
    *,
    teacher: Optional[str] = None,
    split: Optional[str] = None,
    k: Union[str, Iterable[int], None] = None,
    ks: Union[str, Iterable[int], None] = None,
    methods: Union[str, Iterable[str], None] = None,
    teacher_time: str = "auto",
    sgs_teacher: Optional[str] = None,
    clip_kinds: Optional[str] = None,
) -> ReportTable:
    """Compute one table from the stored outputs of ``store``.

    ``table``: a registered table (:func:`condi_pipe.report.registry.table_names`). ``k``: clip budgets K (default
    per table: 1,3,5,7; accuracy 1..10; oracle 1,5,10,15). ``ks``: the K_s values of table 4 (default 0,1,3,5;
    only K_s <= K is computed). ``methods``: method names or score-run names (comma-separated or a list); default
    per table. ``teacher``: the teacher cache (needed only when the store has several); ``split``: default
    ``test``, else ``val``. ``teacher_time``: how the K_t < N clips sent to the teacher are costed: ``share`` (the
    video's per-clip share of its measured batch, x K_t), ``curve`` (one batch of K_t from the teacher cache's
    measured latency curve) or ``side-by-side`` (every model's curve from ``condi-pipe time-models``); ``auto``
    (default): the first of those three the store holds, from the last; see :mod:`condi_pipe.methods.video_time`.
    ``sgs_teacher``: table ``sgs``'s SGS teacher cache (default: the store's only cache made with SGS).
    ``clip_kinds``: table ``kinds``'s sidecar, the generated benchmark's ``synth_clips.csv`` (a local path).
    """
    spec, k_values, ks_values, methods = check_options(table, k, ks, methods, clip_kinds)
    store = store if isinstance(store, Store) else Store(store)
    read_run(store)  # refuses a store from a newer format version before reading anything
    if teacher_time not in TEACHER_TIME:
        raise ValueError(f"unknown teacher time model '{teacher_time}' (models: {', '.join(TEACHER_TIME)})")
    inputs = load_inputs(store, teacher, split, teacher_time)
    if teacher_time == "auto":
        inputs.teacher_time = teacher_time = ("side-by-side" if inputs.side_by_side is not None and spec.side_by_side
                                              else "curve" if inputs.curve is not None else "share")
    if teacher_time == "side-by-side" and inputs.side_by_side is None:
        raise ValueError(f"{store.url}: {inputs.side_by_side_missing}; run `condi-pipe time-models --teacher "
                         f"{inputs.teacher}` (or use teacher_time 'curve' or 'share')")
    if teacher_time == "curve" and inputs.curve is None:
        raise ValueError(f"{store.path(inputs.teacher_folder, 'meta.json')}: no latency_curve in this teacher cache; "
                         "use teacher_time 'share' (or re-run teacher-cache)")
    notes = list(inputs.notes)
    if spec.uses_k:
        notes += clip_budget_notes(inputs, k_values, explicit=k is not None)
    return spec.build(TableRequest(inputs, tuple(k_values), tuple(ks_values), methods, notes, clip_kinds,
                                   sgs_teacher))
