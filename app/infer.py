"""``condi-pipe infer``: serve new videos the ConDi way and time every step.

Decode -> student over all N clips (one batch) -> rank -> teacher over the top K_t clips (one batch) ->
top-5 classes. With ``ks`` (ConDi-SR type b) the K_s clips of lowest student entropy are classified by the
student itself; a clip picked by both keeps the mean of the two softmax vectors. ``dense`` and
``equidistant`` need no student. Models come from a store: the teacher its cache was made with, the student
of a ``distill`` run (without one named, the store's only run of the method made from that teacher).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, replace
from typing import Callable, NamedTuple

import numpy as np
import torch

from condi_pipe.compute.clip_inference import MAX_BATCH, ModelRef
from condi_pipe.compute.runtime_choice import resolve_runtime, typical_batch
from condi_pipe.compute.torch_runtime import RuntimeOptions, autocast, timed, to_runtime_layout
from condi_pipe.methods.registry import get_method, method_names, ranking_scores
from condi_pipe.methods.samplers import equidistant_indices, top_k_indices
from condi_pipe.methods.video_prediction import video_mean_probs
from condi_pipe.stages.score import student_ref
from condi_pipe.stages.teacher_cache import cached_teacher
from condi_pipe.storage import clip_outputs
from condi_pipe.storage import training_artifacts as artifacts
from condi_pipe.storage.manifests import load_videos
from condi_pipe.storage.run_state import read_run
from condi_pipe.storage.store import Store
from condi_pipe.video.decode import DecodeOptions, decode_video

#: infer reports its own time per video: each model pass runs twice and the faster counts (other work only adds).
INFER_TIMING_REPEATS = 2
UNRANKED_METHODS = ("dense", "equidistant")


class InferResult(NamedTuple):
    path: str
    clips: int
    teacher_clips: list[int]  # clip indices the teacher classified
    student_clips: list[int]  # clip indices the student classified (K_s)
    top5: list[tuple[str, float]]
    seconds: dict[str, float]  # decode, student, rank, teacher, and model = student + rank + teacher


@dataclass
class _Model:
    module: torch.nn.Module
    runtime: RuntimeOptions

    def __call__(self, clips: np.ndarray):
        device = self.runtime.torch_device()
        batch = torch.from_numpy(np.ascontiguousarray(clips)).to(device)

        def forward():
            with torch.inference_mode(), autocast(self.runtime, device):
                return self.module(to_runtime_layout(self.module.preprocess(batch), self.runtime))

        return timed(forward, device, INFER_TIMING_REPEATS)


def _load(ref: ModelRef, store: Store, runtime: RuntimeOptions, batch: int, log: Callable[[str], None]) -> _Model:
    """``ref`` in the layout and dtype timed fastest at ``batch`` clips on this machine (recorded in the store and
    reused: ``pipeline.runtime_choice``)."""
    runtime, _ = resolve_runtime(store, ref, runtime, batch=batch, log=log, what=f"infer {ref.teacher_name}")
    device = runtime.torch_device()
    module = to_runtime_layout(ref.build(store).to(device).eval(), runtime)
    model = _Model(module, runtime)
    model(np.zeros((2, 16, 112, 112, 3), np.uint8))  # warm-up, as the caches were timed after one
    return model


def _softmax(logits: torch.Tensor) -> np.ndarray:
    return torch.softmax(logits.float(), dim=1).cpu().numpy()


def choose_student_run(store: Store, teacher: str, method: str) -> str:
    """The store's only finished student run that ``method`` can use and that was distilled from ``teacher``'s
    cache: a run of that loss, or for ``dense``/``equidistant`` with K_s any clip-level run. ValueError naming the
    candidates when there is none or several."""
    runs = []
    for run in sorted(store.listdir(artifacts.STUDENTS_ROOT)):
        folder = artifacts.student_folder(run)
        if run.startswith(".") or not artifacts.is_complete(store, folder):
            continue
        meta = artifacts.read_meta(store, folder)
        loss = meta.get("loss")
        usable = loss == method if method not in UNRANKED_METHODS else loss in method_names("clip")
        if usable and meta.get("teacher") == teacher:
            runs.append(run)
    if not runs:
        raise ValueError(f"method '{method}' needs a student and {store.url} holds no finished "
                         f"{_student_kind(method)} from teacher '{teacher}': run `condi-pipe distill`, or pass "
                         "--student RUN")
    if len(runs) > 1:
        raise ValueError(f"method '{method}' needs a student and {store.url} holds several "
                         f"{_student_kind(method)}s from teacher '{teacher}': pass --student with one of "
                         f"{', '.join(runs)}")
    return runs[0]


def _student_kind(method: str) -> str:
    return "clip-level student run" if method in UNRANKED_METHODS else f"{method} student run"


def infer(
    store: Store,
    paths: list[str],
    *,
    teacher: str,
    method: str = "condi-sr",
    student_run: str | None = None,
    k: int = 3,
    ks: int = 0,
    runtime: RuntimeOptions | None = None,
    decode: DecodeOptions = DecodeOptions(),
    log: Callable[[str], None] = print,
) -> list[InferResult]:
    """Classify ``paths`` with ``method`` at ``k`` teacher clips (``ks`` of them by the student). Without
    ``student_run``, a method that needs a student uses the store's only suitable run (:func:`choose_student_run`)
    and logs which."""
    if k < 1 or not 0 <= ks <= k:
        raise ValueError(f"need k >= 1 and 0 <= ks <= k, got k={k}, ks={ks}")
    read_run(store)  # refuses a store from a newer format version
    cache_meta = clip_outputs.read_meta(store, clip_outputs.teacher_folder(teacher))
    runtime = runtime or RuntimeOptions(bf16=bool(cache_meta.get("bf16")))
    if runtime.threads is None:  # the cache's threads, as its latency curve was measured with; layout: timed
        runtime = replace(runtime, threads=cache_meta.get("threads"))
    classes = cache_meta["classes"]
    student_model, ranked_by = None, None
    if method not in UNRANKED_METHODS or ks:
        if student_run is None:
            student_run = choose_student_run(store, teacher, method)
            log(f"infer: no --student given; using '{student_run}', the store's only {_student_kind(method)} from "
                f"teacher '{teacher}'")
        ref, student_meta = student_ref(store, student_run)
        loss = student_meta["loss"]
        if method not in UNRANKED_METHODS and method != loss:
            raise ValueError(f"student run '{student_run}' was trained with {loss}, not {method}")
        ranked_by = get_method(loss)
        if ranked_by.video_level:
            raise ValueError(f"student run '{student_run}' ({loss}) predicts per video and cannot rank clips")
        # The student classifies a video's clips as one batch; the teacher k of them (dense: all).
        student_model = _load(ref, store, runtime, typical_batch(load_videos(store).clips, MAX_BATCH), log)
    teacher_batch = typical_batch(load_videos(store).clips, MAX_BATCH) if method == "dense" else k - ks
    teacher_model = _load(cached_teacher(store, teacher), store, runtime, max(teacher_batch, 1), log)
    return [_infer_one(p, method, k, ks, teacher_model, student_model, ranked_by, classes, decode) for p in paths]


def _infer_one(path, method, k, ks, teacher_model, student_model, ranked_by, classes, decode) -> InferResult:
    start = time.perf_counter()
    clips = decode_video(path, decode).clips
    seconds = {"decode": time.perf_counter() - start, "student": 0.0, "rank": 0.0, "teacher": 0.0}
    n = len(clips)
    student_probs = None
    if student_model is not None:
        out, seconds["student"] = student_model(clips)
        start = time.perf_counter()
        logits = out.logits.float().cpu().numpy()
        confidence = None if out.confidence is None else out.confidence.float().cpu().numpy()
        student_probs = _softmax(out.logits)
        student_order = top_k_indices(ranked_by.rank_scores(logits, confidence), n)
        entropy_order = top_k_indices(ranking_scores("entropy", logits, None), n)
        seconds["rank"] = time.perf_counter() - start
    if method == "dense":
        teacher_clips = np.arange(n)
    elif method == "equidistant":
        teacher_clips = equidistant_indices(n, k - ks)
    else:
        teacher_clips = student_order[: max(k - ks, 0)]
    student_clips = entropy_order[:ks] if ks else np.zeros(0, int)
    # one vector per chosen clip: the teacher's softmax, the student's, or their mean when both classified it
    vectors = np.zeros((n, len(classes)), np.float32)
    if len(teacher_clips):
        out, seconds["teacher"] = teacher_model(clips[np.sort(teacher_clips)])
        vectors[np.sort(teacher_clips)] = _softmax(out.logits)
    in_teacher = np.isin(np.arange(n), teacher_clips)
    in_student = np.isin(np.arange(n), student_clips)
    if ks:
        vectors[in_student & ~in_teacher] = student_probs[in_student & ~in_teacher]
        both = in_student & in_teacher
        vectors[both] = (vectors[both] + student_probs[both]) / 2
    video_probs = video_mean_probs(vectors, np.array([0, n]), in_teacher | in_student)[0]
    top = np.argsort(-video_probs, kind="stable")[:5]
    seconds["model"] = seconds["student"] + seconds["rank"] + seconds["teacher"]
    return InferResult(str(path), n, sorted(int(i) for i in teacher_clips), sorted(int(i) for i in student_clips),
                       [(classes[i], float(video_probs[i])) for i in top], seconds)
