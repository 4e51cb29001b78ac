"""Which trained models a command on new videos uses (``predict``, ``infer``, ``bundle``): a store's student run
for a method, when the user names none."""

from __future__ import annotations

from condi_pipe.methods.registry import method_names
from condi_pipe.storage import clip_outputs
from condi_pipe.storage import training_artifacts as artifacts
from condi_pipe.storage.store import Store

UNRANKED_METHODS = ("dense", "equidistant")  # they need no student, unless the student classifies K_s clips


def predict_methods() -> tuple[str, ...]:
    """What ``--method`` takes: dense and equidistant, or a clip-ranking method (the loss a student was trained
    with)."""
    return (*UNRANKED_METHODS, *method_names("clip"))


def student_kind(method: str) -> str:
    return "clip-level student run" if method in UNRANKED_METHODS else f"{method} student run"


def only_teacher(store: Store) -> str:
    """The store's only finished teacher cache; ValueError naming them when there are several (or none)."""
    names = [name for name in sorted(store.listdir(clip_outputs.TEACHER_ROOT)) if not name.startswith(".")
             and clip_outputs.is_complete(store, clip_outputs.teacher_folder(name))]
    if len(names) != 1:
        raise ValueError(f"{store.url} holds {len(names)} finished teacher caches"
                         + (f" ({', '.join(names)})" if names else "") + ": name one with --teacher")
    return names[0]


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
                         f"{student_kind(method)} from teacher '{teacher}': run `condi-pipe distill`, or pass "
                         "--student RUN")
    if len(runs) > 1:
        raise ValueError(f"method '{method}' needs a student and {store.url} holds several "
                         f"{student_kind(method)}s from teacher '{teacher}': pass --student with one of "
                         f"{', '.join(runs)}")
    return runs[0]
