"""``condi-pipe infer``: serve new videos the ConDi way and time every step.

Decode -> student over all N clips (one batch) -> rank -> teacher over the top K_t clips (one batch) ->
top-5 classes. With ``ks`` (ConDi-SR type b) the K_s clips of lowest student entropy are classified by the
student itself; a clip picked by both keeps the mean of the two softmax vectors. ``dense`` and
``equidistant`` need no student. Models come from a store: the teacher its cache was made with, the student
of a ``distill`` run.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
import torch

from condi_pipe.methods.samplers import equidistant_indices, top_k_indices
from condi_pipe.pipeline.clip_inference import ModelRef
from condi_pipe.pipeline.stage import StageError
from condi_pipe.pipeline.torch_runtime import (TIMING_REPEATS, RuntimeOptions, autocast, configure_threads, timed,
                                               to_runtime_layout)
from condi_pipe.stages.distill import RANKING, rank_scores
from condi_pipe.stages.score import student_ref
from condi_pipe.storage import clip_outputs
from condi_pipe.storage.run_state import read_run, stage_record
from condi_pipe.storage.store import Store
from condi_pipe.video.decode import DecodeOptions, decode_video

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

        return timed(forward, device, TIMING_REPEATS)


def _load(ref: ModelRef, store: Store, runtime: RuntimeOptions) -> _Model:
    device = runtime.torch_device()
    module = to_runtime_layout(ref.build(store).to(device).eval(), runtime)
    model = _Model(module, runtime)
    model(np.zeros((2, 16, 112, 112, 3), np.uint8))  # warm-up, as the caches were timed after one
    return model


def teacher_ref(store: Store, teacher: str) -> ModelRef:
    """The teacher exactly as ``teacher-cache`` ran it (its recorded configuration)."""
    record = stage_record(store, f"teacher-cache/{teacher}")
    if record.get("state") != "done":
        raise StageError(f"{store.url}: no finished teacher cache for '{teacher}'; run `condi-pipe teacher-cache`")
    return ModelRef(**record["config"]["teacher"])


def _softmax(logits: torch.Tensor) -> np.ndarray:
    return torch.softmax(logits.float(), dim=1).cpu().numpy()


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
) -> list[InferResult]:
    """Classify ``paths`` with ``method`` at ``k`` teacher clips (``ks`` of them by the student)."""
    if k < 1 or not 0 <= ks <= k:
        raise ValueError(f"need k >= 1 and 0 <= ks <= k, got k={k}, ks={ks}")
    read_run(store)  # refuses a store from a newer format version
    cache_meta = clip_outputs.read_meta(store, clip_outputs.teacher_folder(teacher))
    runtime = runtime or RuntimeOptions(bf16=bool(cache_meta.get("bf16")))
    configure_threads(RuntimeOptions(threads=cache_meta.get("threads")), 1)
    classes = cache_meta["classes"]
    teacher_model = _load(teacher_ref(store, teacher), store, runtime)
    student_model, loss = None, None
    if method not in UNRANKED_METHODS or ks:
        if student_run is None:
            raise ValueError(f"method '{method}' needs a student: pass --student RUN")
        ref, student_meta = student_ref(store, student_run)
        loss = student_meta["loss"]
        if method not in UNRANKED_METHODS and method != loss:
            raise ValueError(f"student run '{student_run}' was trained with {loss}, not {method}")
        if RANKING.get(loss) == "none":
            raise ValueError(f"student run '{student_run}' ({loss}) predicts per video and cannot rank clips")
        student_model = _load(ref, store, runtime)
    return [_infer_one(p, method, k, ks, teacher_model, student_model, loss, classes, decode) for p in paths]


def _infer_one(path, method, k, ks, teacher_model, student_model, loss, classes, decode) -> InferResult:
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
        student_order = top_k_indices(rank_scores(loss, logits, confidence), n)
        entropy_order = top_k_indices(rank_scores("st-ent", logits, None), n)
        seconds["rank"] = time.perf_counter() - start
    if method == "dense":
        teacher_clips = np.arange(n)
    elif method == "equidistant":
        teacher_clips = equidistant_indices(n, k - ks)
    else:
        teacher_clips = student_order[: max(k - ks, 0)]
    student_clips = entropy_order[:ks] if ks else np.zeros(0, int)
    vectors: dict[int, list[np.ndarray]] = {}
    if len(teacher_clips):
        out, seconds["teacher"] = teacher_model(clips[np.sort(teacher_clips)])
        for index, probs in zip(np.sort(teacher_clips), _softmax(out.logits)):
            vectors.setdefault(int(index), []).append(probs)
    for index in student_clips:
        vectors.setdefault(int(index), []).append(student_probs[index])
    video_probs = np.mean([np.mean(v, axis=0) for v in vectors.values()], axis=0)
    top = np.argsort(-video_probs, kind="stable")[:5]
    seconds["model"] = seconds["student"] + seconds["rank"] + seconds["teacher"]
    return InferResult(str(path), n, sorted(int(i) for i in teacher_clips), sorted(int(i) for i in student_clips),
                       [(classes[i], float(video_probs[i])) for i in top], seconds)
