"""``condi-pipe bundle``: a trained teacher and student pair out of a store, as a folder ``predict --model`` reads
with no training store (``storage.model_bundle``), and its model card."""

from __future__ import annotations

import dataclasses
import datetime
import hashlib
import io
from typing import Callable

import torch

from condi_pipe.app.model_choice import UNRANKED_METHODS, choose_student_run, only_teacher
from condi_pipe.compute.clip_inference import ModelRef
from condi_pipe.methods.registry import get_method
from condi_pipe.models import count_parameters
from condi_pipe.report import build_report
from condi_pipe.stages.extract import EXTRACT
from condi_pipe.stages.score import student_ref
from condi_pipe.stages.teacher_cache import cached_teacher
from condi_pipe.storage import clip_outputs
from condi_pipe.storage.model_bundle import (
    STUDENT_WEIGHTS,
    TEACHER_WEIGHTS,
    Bundle,
    BundledModel,
    write_bundle,
)
from condi_pipe.storage.run_state import software_versions, stage_record
from condi_pipe.storage.store import Store
from condi_pipe.video.decode import DecodeOptions


def _weights_bytes(store: Store, ref: ModelRef) -> bytes:
    if ref.store_weights:
        return store.read_bytes(ref.store_weights)
    if ref.weights_path:
        with open(ref.weights_path, "rb") as fh:
            return fh.read()
    # Random weights (a store made for tests or timing): the seeded ones its outputs came from, written out.
    buffer = io.BytesIO()
    torch.save(ref.build().state_dict(), buffer)
    return buffer.getvalue()


def _bundled(ref: ModelRef, file_name: str, data: bytes, runtime: dict | None) -> BundledModel:
    return BundledModel(ref.name, ref.num_classes, ref.width, file_name, hashlib.sha256(data).hexdigest(),
                        ref.sgs_stage, ref.sgs_kernel, ref.output_name, runtime)


def store_decode_options(store: Store) -> DecodeOptions:
    """How ``extract`` decoded the store's videos, so a bundle's models see new videos the same way."""
    config = (stage_record(store, EXTRACT.name).get("config") or {}).get("decode") or {}
    fields = {f.name for f in dataclasses.fields(DecodeOptions)}
    return DecodeOptions(**{name: value for name, value in config.items() if name in fields})


def make_bundle(store: Store, out: str, *, method: str = "condi-sr", k: int = 5, ks: int = 0,
                student_run: str | None = None, teacher: str | None = None,
                log: Callable[[str], None] = print) -> Bundle:
    """Bundle ``store``'s teacher and the student of ``student_run`` (without one: the store's only run of
    ``method``) for ``method`` at ``k`` teacher clips, ``ks`` of them by the student."""
    if k < 1 or not 0 <= ks <= k:
        raise ValueError(f"need k >= 1 and 0 <= ks <= k, got k={k}, ks={ks}")
    if method not in UNRANKED_METHODS:
        get_method(method)
    needs_student = method not in UNRANKED_METHODS or ks > 0
    student_meta = None
    if needs_student:
        if student_run is None:
            student_run = choose_student_run(store, teacher or only_teacher(store), method)
        student, student_meta = student_ref(store, student_run)
        teacher = teacher or student_meta["teacher"]
        if student_meta["teacher"] != teacher:
            raise ValueError(f"student run '{student_run}' was distilled from '{student_meta['teacher']}', not "
                             f"'{teacher}'")
    elif teacher is None:
        teacher = only_teacher(store)
    teacher_ref = cached_teacher(store, teacher)
    cache = clip_outputs.read_meta(store, clip_outputs.teacher_folder(teacher))
    weights = {TEACHER_WEIGHTS: _weights_bytes(store, teacher_ref)}
    bundled_teacher = _bundled(teacher_ref, TEACHER_WEIGHTS, weights[TEACHER_WEIGHTS], cache.get("runtime_choice"))
    bundled_student = None
    if needs_student:
        weights[STUDENT_WEIGHTS] = _weights_bytes(store, student)
        scored = clip_outputs.read_meta(store, clip_outputs.scores_folder(student_run)) \
            if clip_outputs.is_complete(store, clip_outputs.scores_folder(student_run)) else {}
        bundled_student = _bundled(student, STUDENT_WEIGHTS, weights[STUDENT_WEIGHTS], scored.get("runtime_choice"))
    bundle = Bundle(
        method=method, k=k, ks=ks, classes=list(cache["classes"]), teacher=bundled_teacher, student=bundled_student,
        decode=dataclasses.asdict(store_decode_options(store)),
        source={"store": store.url, "teacher": teacher, "student_run": student_run,
                "made_at": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
                "versions": software_versions()},
    )
    write_bundle(out, bundle, weights, model_card(store, bundle, teacher_ref,
                                                  None if not needs_student else student))
    log(f"bundle: {method} at K={k}" + (f", K_s={ks}" if ks else "") + f" with teacher '{teacher}'"
        + (f" and student '{student_run}'" if student_run and needs_student else "") + f" written to {out}")
    return dataclasses.replace(bundle, folder=out)


def _accuracy_lines(store: Store, bundle: Bundle) -> list[str]:
    """The method's and Dense's test accuracy at the bundle's K, from the store's report (when it can be built)."""
    table = "4" if bundle.ks else "3"
    methods = None if bundle.method in UNRANKED_METHODS else [bundle.method]
    try:
        report = build_report(store, table, teacher=bundle.source["teacher"], k=[bundle.k], methods=methods)
    except Exception as exc:  # the card is still useful without it; say why it is missing
        return [f"Accuracy on the store's test split: not available ({type(exc).__name__}: {exc})."]
    rows = [r for r in report.rows if (r.k in (None, bundle.k)) and r.accuracy is not None
            and (table == "3" or r.ks in (None, bundle.ks))]
    lines = ["| method | K | K_s | top-1 (%) | time per video (s) |", "|---|---|---|---|---|"]
    for row in rows:
        name = row.extra.get("display", row.method)
        time = "" if row.time_per_video_s is None else f"{row.time_per_video_s:.4f}"
        lines.append(f"| {name} | {'all' if row.k is None else row.k} | {row.ks if row.ks is not None else ''} | "
                     f"{row.accuracy:.2f} | {time} |")
    return [f"On the store's test split (report table {table}, computed from its stored outputs):", "", *lines]


def model_card(store: Store, bundle: Bundle, teacher: ModelRef, student: ModelRef | None) -> str:
    def describe(ref: ModelRef) -> str:
        params = count_parameters(ref.build(device="meta"))
        width = f", width {ref.width}" if ref.width is not None else ""
        return f"`{ref.name}`{width}, {params / 1e6:.2f}M parameters"

    budget = f"K = {bundle.k}" + (f" (K_s = {bundle.ks} by the student)" if bundle.ks else "")
    lines = [
        f"# {bundle.method} at {budget}: a condi-pipe model bundle", "",
        f"Classifies a video into one of {len(bundle.classes)} classes ({', '.join(bundle.classes[:10])}"
        + (", ..." if len(bundle.classes) > 10 else "") + ").", "",
        f"- Teacher: {describe(teacher)}.",
        f"- Student: {describe(student)}." if student is not None else "- Student: none.",
        f"- Method: {bundle.method}: " + ("the student scores every clip and the teacher classifies the top K."
                                          if bundle.method not in UNRANKED_METHODS else
                                          "the teacher classifies " + ("every clip." if bundle.method == "dense"
                                                                      else "K equidistant clips.")),
        f"- Clips: 16 frames, short side {bundle.decode.get('short_side')}, centre crop {bundle.decode.get('crop')}.",
        f"- Made from `{bundle.source['store']}` at {bundle.source['made_at']}.", "",
        *_accuracy_lines(store, bundle), "",
        "Use: `condi-pipe predict --model THIS_FOLDER --root VIDEOS --out PREDICTIONS`.", "",
    ]
    return "\n".join(lines)

