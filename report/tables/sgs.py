"""The plain teacher against its SGS version (Scene Graph Sampling of temporal slices): accuracy, time, GFLOPs."""

from __future__ import annotations

from typing import Optional

import numpy as np

from condi_pipe.methods import samplers
from condi_pipe.report.evaluate import (
    Evaluator,
    OutputUnavailable,
    ScoreRunOutputs,
    entry_name,
    load_inputs,
    resolve_methods,
)
from condi_pipe.report.footer import device_line, footer_lines
from condi_pipe.report.inputs import ReportInputs, teacher_caches, teacher_meta
from condi_pipe.report.predictions import ranking
from condi_pipe.report.registry import TableRequest, register_table
from condi_pipe.report.render import format_seconds, number_cell
from condi_pipe.report.results import ReportRow, ReportTable
from condi_pipe.storage.errors import StoreError
from condi_pipe.storage.store import Store

SGS_METHODS = ("condi-sr", "equidistant")  # methods shown with both teachers (besides Dense)


def _sgs_inputs(request: TableRequest) -> ReportInputs:
    """The SGS teacher's inputs on the main teacher's split, costed like the main teacher's where it can be."""
    inputs, notes = request.inputs, request.notes
    store, teacher_time = inputs.store, inputs.teacher_time
    sgs_name = choose_sgs_teacher(store, request.sgs_teacher, inputs.teacher)
    if sgs_name == inputs.teacher:
        raise ValueError(f"the SGS teacher '{sgs_name}' is also the main teacher; choose the plain one with --teacher")
    if teacher_time == "side-by-side":
        raise ValueError("table sgs compares two teacher caches, which `condi-pipe time-models` does not time "
                         "together; use teacher_time 'auto', 'curve' or 'share'")
    if inputs.side_by_side is not None:
        inputs.side_by_side_missing = "table sgs: the SGS teacher is not timed side by side with the plain one"
    sgs_inputs = load_inputs(store, sgs_name, inputs.split, teacher_time, runs_teacher=inputs.teacher)
    if teacher_time == "curve" and sgs_inputs.curve is None:
        sgs_inputs.teacher_time = "share"
        notes.append(f"teacher/{sgs_name}/meta.json has no latency curve: its K_t clips cost their share.")
    notes.extend(sgs_inputs.notes)
    return sgs_inputs


@register_table("sgs", summary="the teacher against its SGS version (GFLOPs, time, accuracy; --plot: histogram of B')",
                side_by_side=False, plot="histogram")
def sgs_table(request: TableRequest) -> ReportTable:
    """The plain teacher against its SGS version (a cache made with ``teacher-cache --sgs``): Dense, ConDi-SR and
    Equidistant with each teacher. The same student rankings (score runs made for the plain teacher) choose the
    clips, and each teacher's own cache classifies and costs them; columns add the teacher's GFLOPs and the mean
    B' of the clips the SGS teacher classifies."""
    inputs, ks, methods, notes = request.inputs, request.k_values, request.methods, request.notes
    sgs_inputs = _sgs_inputs(request)
    if not np.array_equal(inputs.clip_id, sgs_inputs.clip_id):
        raise StoreError(f"{inputs.store.url}: teacher caches '{inputs.teacher}' and '{sgs_inputs.teacher}' hold "
                         f"different clips of split '{inputs.split}'; re-run teacher-cache for both on this store")
    bins = sgs_inputs.clip_values("sgs_bins")
    if bins is None:
        raise ValueError(f"{inputs.store.path(sgs_inputs.teacher_folder)}: no 'sgs_bins' column: not a teacher cache "
                         "made with teacher-cache --sgs")
    entries = [e for e in resolve_methods(inputs, methods or SGS_METHODS, builtins=("equidistant",), notes=notes)
               if e != "dense"]
    rows: list[ReportRow] = []
    cells: list[tuple[str, ...]] = []
    used: list[ScoreRunOutputs] = []
    for suffix, inp in (("", inputs), ("+sgs", sgs_inputs)):
        ev = Evaluator(inp)
        flops = inp.clip_values("flops")
        clip_bins = inp.clip_values("sgs_bins")
        tag = " (SGS teacher)" if suffix else ""
        if flops is None:
            notes.append(f"teacher/{inp.teacher}/clips.parquet has no 'flops' column (made before FLOPs were "
                         "stored); its GFLOPs are n/a.")

        def add(row: ReportRow, chosen: np.ndarray, display: str) -> None:
            extra = dict(row.extra)
            extra.update(display=display, teacher=inp.teacher, teacher_clips=int(chosen.sum()))
            if flops is not None:
                per_video = np.bincount(inp.owner()[chosen], weights=flops[chosen], minlength=inp.num_videos)
                extra["gflops_per_teacher_clip"] = float(flops[chosen].mean()) / 1e9
                extra["teacher_gflops_per_video"] = float(per_video.mean()) / 1e9
            if clip_bins is not None:
                extra["mean_sgs_bins"] = float(clip_bins[chosen].mean())
            row = ReportRow(row.method + suffix, row.k, row.ks, row.accuracy, row.time_per_video_s, extra)
            rows.append(row)
            cells.append((display, inp.teacher, "All" if row.k is None else str(row.k), number_cell(row.accuracy, 2),
                          format_seconds(row.time_per_video_s),
                          number_cell(extra.get("gflops_per_teacher_clip"), 3), number_cell(extra.get("teacher_gflops_per_video"), 3),
                          number_cell(extra.get("mean_sgs_bins"), 2) if clip_bins is not None else ""))

        add(ev.dense(), np.ones(inp.num_clips, dtype=bool), "Dense" + tag)
        for entry in entries:
            try:
                by_k = ev.method(entry, ks)
                if isinstance(entry, ScoreRunOutputs):
                    ranks = ranking(inp, f"scores/{entry.run} rank_score", lambda: inp.run_column(entry, "rank_score"))[0]
                    masks = {k: ranks < k for k in by_k}
                    if not suffix:
                        used.append(entry)
                else:
                    masks = {k: samplers.equidistant_mask(inp.offsets, k) for k in by_k}
            except OutputUnavailable as exc:
                notes.append(f"{entry_name(entry)}{tag}: {exc}; omitted.")
                continue
            for k, row in by_k.items():
                add(row, masks[k], entry_name(entry) + tag)
    counts = np.bincount(bins.astype(np.int64))
    series = {"sgs_bins": {"bins": list(range(1, len(counts))), "clips": counts[1:].tolist(),
                           "teacher": sgs_inputs.teacher}}
    sgs_meta = sgs_inputs.teacher_meta.get("sgs") or {}
    explain = [
        f"SGS teacher '{sgs_inputs.teacher}': SGS after {sgs_meta.get('stage', '?')}, {sgs_meta.get('kernel', '?')} "
        f"kernel; mean B' over the split's {len(bins)} clips {bins.mean():.2f}. Its rows use the same student "
        f"rankings (score runs made for teacher '{inputs.teacher}') to choose the same clips; "
        f"teacher/{sgs_inputs.teacher}/ classifies them and its measured seconds"
        + (" and latency curve" if sgs_inputs.curve is not None else "") + " cost them.",
        "GFLOPs: the teacher's, from each cache's clips.parquet 'flops' (torch.utils.flop_counter: 2 x "
        "multiply-accumulates of convolutions, linears and matmuls; with SGS measured as the part before SGS + the "
        "part after it at the clip's B'). Per teacher clip: mean over the clips the teacher classifies; per video: "
        "their sum, mean over videos. The student's cost is in the time only.",
        device_line(f"SGS teacher '{sgs_inputs.teacher}'", sgs_inputs.teacher_meta) + ".",
    ]
    columns = ("Method", "Teacher", "K", "Top-1 (%)", "Time per video", "GFLOPs per teacher clip",
               "Teacher GFLOPs per video", "Mean B'")
    return ReportTable(
        "sgs", f"Plain teacher '{inputs.teacher}' against SGS teacher '{sgs_inputs.teacher}': top-1, time per video "
               f"and GFLOPs, split '{inputs.split}'",
        columns, tuple(cells), tuple(rows), footer_lines(inputs, rows, used, notes + explain), series)


def choose_sgs_teacher(store: Store, sgs_teacher: Optional[str], main: str) -> str:
    """``sgs_teacher``, or the store's only teacher cache made with SGS."""
    if sgs_teacher is not None:
        return sgs_teacher
    complete, _ = teacher_caches(store)
    found = [name for name in complete if name != main and teacher_meta(store, name).get("sgs")]
    if len(found) != 1:
        what = "no teacher cache made with SGS" if not found else f"several SGS teacher caches ({', '.join(found)})"
        raise ValueError(f"{store.url}: {what}; name one with --sgs-teacher (run `condi-pipe teacher-cache --sgs`)")
    return found[0]
