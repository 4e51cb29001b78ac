"""One option schema: every stage option has its default in exactly one place, a field of the stage's request
dataclass (or of the option dataclasses it holds: ``TrainOptions``, ``RuntimeOptions``, ``LossOptions`` ...).

A stage's :class:`OptionTable` names its options the way users write them, one name for the CLI parameter
(``--batch-size`` is ``batch_size``) and the run-config key, and says where each lives in the request as a dotted
field path (``train.batch_size``). The click options take their defaults from it (``cli_options``), so do the
run-config sections (``pipeline.run_config``), and the CLI and the runner both build requests with
:meth:`OptionTable.request`, so the two cannot translate an option differently.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any


def _field_default(cls: type, name: str) -> Any:
    fields = {f.name: f for f in dataclasses.fields(cls)}
    if name not in fields:
        raise LookupError(f"{cls.__name__} has no field '{name}'")
    f = fields[name]
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    raise LookupError(f"{cls.__name__}.{name} has no default")


def default_of(cls: type, path: str) -> Any:
    """The default of the field at the dotted ``path`` of dataclass ``cls``: ``default_of(DistillRequest,
    "train.epochs")`` is the epochs of the request's default ``TrainOptions`` (50), not of ``TrainOptions``
    itself. LookupError when a field on the path has no default."""
    head, _, rest = path.partition(".")
    value = _field_default(cls, head)
    for name in rest.split(".") if rest else ():
        value = getattr(value, name)
    return value


def replaced(base, values: Mapping[str, Any]):
    """``base`` (a dataclass instance) with the fields at dotted paths set, e.g. ``{"train.lr": 0.01}``."""
    top: dict[str, Any] = {}
    nested: dict[str, dict[str, Any]] = {}
    for path, value in values.items():
        head, _, rest = path.partition(".")
        if rest:
            nested.setdefault(head, {})[rest] = value
        else:
            top[head] = value
    for head, inner in nested.items():
        top[head] = replaced(top.get(head, getattr(base, head)), inner)
    return dataclasses.replace(base, **top) if top else base


@dataclasses.dataclass(frozen=True)
class OptionTable:
    """A stage's options: flat name (CLI parameter, run-config key) -> dotted field path in ``request_type``.

    ``parts`` names request fields that have no default and are built from options of their own: teacher-cache's
    ``teacher`` is built as a ``TeacherChoice``, and those options' defaults are that class's fields'."""

    request_type: type
    paths: Mapping[str, str]
    parts: Mapping[str, type] = dataclasses.field(default_factory=dict)

    def __contains__(self, name: str) -> bool:
        return name in self.paths

    def names(self) -> tuple[str, ...]:
        return tuple(self.paths)

    def default(self, name: str) -> Any:
        """The default of option ``name``: its field's (LookupError when the field has none)."""
        head, _, rest = self.paths[name].partition(".")
        if head in self.parts:
            return default_of(self.parts[head], rest)
        return default_of(self.request_type, self.paths[name])

    def request(self, **values: Any):
        """The request with the named options set; every other field keeps its default, nested ones too (distill's
        ``train`` starts from the request's default ``TrainOptions``, 50 epochs, not from ``TrainOptions``)."""
        unknown = [name for name in values if name not in self.paths]
        if unknown:
            raise TypeError(f"{self.request_type.__name__}: unknown option {', '.join(unknown)}")
        by_path = {self.paths[name]: value for name, value in values.items()}
        direct = {path: value for path, value in by_path.items() if "." not in path}
        for head, part in self.parts.items():
            direct[head] = part(**{path.partition(".")[2]: value for path, value in by_path.items()
                                   if path.partition(".")[0] == head})
        nested = {path: value for path, value in by_path.items()
                  if "." in path and path.partition(".")[0] not in self.parts}
        return replaced(self.request_type(**direct), nested)

    def values(self, section: Any) -> dict[str, Any]:
        """The options of this table that ``section`` (a run-config section) sets, by name."""
        return {f.name: getattr(section, f.name) for f in dataclasses.fields(section) if f.name in self.paths}


def nested_paths(prefix: str, names: tuple[str, ...]) -> dict[str, str]:
    """``{name: "<prefix>.<name>"}``: options named as the fields of a nested dataclass."""
    return {name: f"{prefix}.{name}" for name in names}
