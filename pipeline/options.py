"""One option schema: every stage option is declared in exactly one place, a field of the stage's request dataclass
(or of the option dataclasses it holds: ``TrainOptions``, ``RuntimeOptions``, ``LossOptions`` ...), with its
default, its help and what values it takes (:func:`option`: a range, a set of choices, or a check of its own).

A stage's :class:`OptionTable` names its options the way users write them, one name for the CLI parameter
(``--batch-size`` is ``batch_size``) and the run-config key, and says where each lives in the request as a dotted
field path (``train.batch_size``). From it come the click options (``cli_options``: default, help, a parameter type
that checks with the field's :class:`Constraint`) and the run-config sections (:meth:`OptionTable.section`: the
same fields, types, defaults and constraints), and the CLI and the runner both build requests with
:meth:`OptionTable.request`. So a value is refused with the same one-line message ("lambda_factor must be in
(1, 2), got 5.0") by the Python API (:func:`check_fields` in the dataclasses' ``__post_init__``), a run config and
the command line.
"""

from __future__ import annotations

import dataclasses
import typing
from collections.abc import Callable, Iterable, Mapping
from typing import Any

#: The key of a field's :class:`Constraint` in its ``dataclasses.field`` metadata.
OPTION = "condi_pipe.option"

#: Help texts of fields that several stages' requests have.
TEACHER_MODEL_HELP = "Registered teacher model (see `condi-pipe models`)."
RESET_HEAD_HELP = "With --weights: keep a fresh classifier (other class count)."


@dataclasses.dataclass(frozen=True)
class Constraint:
    """What values one option takes, and its help: a range (``low``/``high``, each closed unless ``*_open``), a set
    of ``choices`` (a tuple, or a callable giving them when asked: registered names), or ``validate``, a function
    that raises a ValueError with its own one-line message (``bf16_mode``). None (an unset optional option) is always
    allowed; a list or tuple value is checked item by item."""

    help: str = ""
    low: float | None = None
    high: float | None = None
    low_open: bool = False
    high_open: bool = False
    choices: tuple | Callable[[], Iterable[Any]] | None = None
    validate: Callable[[Any], Any] | None = None

    def allowed(self) -> tuple | None:
        """The choices (asked for now when they are a callable); None: any value."""
        return tuple(self.choices()) if callable(self.choices) else self.choices

    @property
    def bounded(self) -> bool:
        return self.low is not None or self.high is not None

    def range_text(self) -> str:
        """``in [0, 1)``, ``> 0``, ``>= 1``, ``<= 2`` ("" when unbounded)."""
        if self.low is not None and self.high is not None:
            return (f"in {'(' if self.low_open else '['}{self.low:g}, {self.high:g}"
                    f"{')' if self.high_open else ']'}")
        if self.low is not None:
            return f"{'>' if self.low_open else '>='} {self.low:g}"
        if self.high is not None:
            return f"{'<' if self.high_open else '<='} {self.high:g}"
        return ""

    def _inside(self, value) -> bool:
        above = self.low is None or (value > self.low if self.low_open else value >= self.low)
        below = self.high is None or (value < self.high if self.high_open else value <= self.high)
        return above and below

    def problem(self, name: str, value) -> str | None:
        """The one-line reason ``value`` is not a value of option ``name`` (None: it is)."""
        if isinstance(value, (list, tuple)):
            return next((p for p in (self.problem(name, item) for item in value) if p), None)
        if value is None:
            return None
        if self.validate is not None:
            try:
                self.validate(value)
            except ValueError as exc:
                return str(exc)
        allowed = self.allowed()
        if allowed is not None and value not in allowed:
            return f"{name} must be one of {', '.join(str(c) for c in allowed)}, got {value!r}"
        if self.bounded:
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                return f"{name} must be a number, got {value!r}"
            if not self._inside(value):
                return f"{name} must be {self.range_text()}, got {value!r}"
        return None

    def check(self, name: str, value) -> None:
        """ValueError with :meth:`problem`'s message when ``value`` is not allowed."""
        problem = self.problem(name, value)
        if problem:
            raise ValueError(problem)


def option(default: Any = dataclasses.MISSING, *, default_factory: Any = dataclasses.MISSING, help: str = "",
           low: float | None = None, high: float | None = None, low_open: bool = False, high_open: bool = False,
           choices: tuple | Callable[[], Iterable[Any]] | None = None,
           validate: Callable[[Any], Any] | None = None) -> Any:
    """A dataclass field that is a user option: its default (none: required), help and :class:`Constraint`, declared
    here once for the Python API, the CLI and the run config. The dataclass's ``__post_init__`` calls
    :func:`check_fields`.

    >>> from dataclasses import dataclass
    >>> @dataclass
    ... class Opts:
    ...     beta: float = option(0.5, low=0, high=1, help="CE weight.")
    ...     def __post_init__(self): check_fields(self)
    >>> Opts(2.0)
    Traceback (most recent call last):
    ...
    ValueError: beta must be in [0, 1], got 2.0
    """
    constraint = Constraint(help, low, high, low_open, high_open, choices, validate)
    return dataclasses.field(default=default, default_factory=default_factory, metadata={OPTION: constraint})


def constraint_of(cls: type, name: str) -> Constraint:
    """The :class:`Constraint` declared on field ``name`` of dataclass ``cls`` (an empty one: anything goes)."""
    fields = {f.name: f for f in dataclasses.fields(cls)}
    if name not in fields:
        raise LookupError(f"{cls.__name__} has no field '{name}'")
    return fields[name].metadata.get(OPTION, Constraint())


def field_like(cls: type, name: str, **default: Any) -> Any:
    """A field declared as ``cls``'s field ``name`` (help, constraint and default; ``default=`` or
    ``default_factory=`` to give another), for a class that takes the same option under its own roof."""
    source = {f.name: f for f in dataclasses.fields(cls)}[name]
    if not default:
        default = ({"default": source.default} if source.default is not dataclasses.MISSING
                   else {"default_factory": source.default_factory})
    return dataclasses.field(**default, metadata=source.metadata)


def check_fields(instance, constraints: Mapping[str, Constraint] | None = None) -> None:
    """ValueError naming the first field of dataclass ``instance`` whose value its constraint refuses (the ones
    declared with :func:`option`, or given in ``constraints`` by field name)."""
    for f in dataclasses.fields(instance):
        constraint = (constraints or {}).get(f.name) or f.metadata.get(OPTION)
        if constraint is not None:
            constraint.check(f.name, getattr(instance, f.name))


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
    ``teacher`` is built as a ``TeacherChoice``, and those options' defaults are that class's fields'.
    ``constraints`` holds the constraints of options whose field is in a class of a lower layer, which cannot
    declare them with :func:`option` (extract's ``decode.fps`` is ``video.decode.DecodeOptions``')."""

    request_type: type
    paths: Mapping[str, str]
    parts: Mapping[str, type] = dataclasses.field(default_factory=dict)
    constraints: Mapping[str, Constraint] = dataclasses.field(default_factory=dict)

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
        names = getattr(section, "option_names", {})  # a section made by section(): its renamed keys
        values = {names.get(f.name, f.name): getattr(section, f.name) for f in dataclasses.fields(section)}
        return {name: value for name, value in values.items() if name in self.paths}

    def _leaf(self, name: str) -> tuple[type, str]:
        """(the dataclass declaring option ``name``'s field, the field's name)."""
        head, _, rest = self.paths[name].partition(".")
        if head in self.parts:
            cls, path = self.parts[head], rest
        else:
            cls, path = self.request_type, self.paths[name]
        *parents, leaf = path.split(".")
        for parent in parents:
            cls = typing.get_type_hints(cls)[parent]
        return cls, leaf

    def constraint(self, name: str) -> Constraint:
        """Option ``name``'s :class:`Constraint`: declared on its field, or in :attr:`constraints`."""
        if name in self.constraints:
            return self.constraints[name]
        return constraint_of(*self._leaf(name))

    def help(self, name: str) -> str:
        return self.constraint(name).help

    def type_of(self, name: str) -> Any:
        """The type annotation of option ``name``'s field (``int | None``)."""
        cls, leaf = self._leaf(name)
        return typing.get_type_hints(cls)[leaf]

    def check(self, name: str, value: Any) -> None:
        """ValueError with option ``name``'s one-line message when ``value`` is not one of its values."""
        self.constraint(name).check(name, value)

    def section(self, class_name: str, *, exclude: Iterable[str] = (), only: Iterable[str] | None = None,
                defaults: Mapping[str, Any] | None = None, types: Mapping[str, Any] | None = None,
                renamed: Mapping[str, str] | None = None) -> type:
        """A frozen dataclass of run-config keys made from this table's options (``only`` them, or all but
        ``exclude``), each with its field's type, default and constraint (checked when the section is built), so a
        section repeats none of them; ``defaults`` and ``types`` give a key its section's own default or type,
        ``renamed`` another key name (option -> key). Subclass it as a ``@dataclass(frozen=True)`` for keys of the
        section's own, checks across keys (call ``super().__post_init__()``) and methods."""
        names = list(only) if only is not None else [n for n in self.paths if n not in set(exclude)]
        defaults, types, renamed = dict(defaults or {}), dict(types or {}), dict(renamed or {})
        required, optional = [], []
        for name in names:
            try:
                default = defaults[name] if name in defaults else self.default(name)
            except LookupError:
                default = dataclasses.MISSING
            kind = {"default_factory": lambda d=default: list(d)} if isinstance(default, list) else {"default": default}
            spec = (renamed.get(name, name), types.get(name, self.type_of(name)),
                    dataclasses.field(**kind, metadata={OPTION: self.constraint(name)}))
            (required if default is dataclasses.MISSING else optional).append(spec)
        namespace = {"option_names": {renamed.get(n, n): n for n in names}}
        return dataclasses.make_dataclass(class_name, required + optional, bases=(CheckedSection,), frozen=True,
                                          namespace=namespace)


class CheckedSection:
    """The base of :meth:`OptionTable.section`'s dataclasses: every key's constraint is checked when one is built."""

    option_names: typing.ClassVar[dict[str, str]] = {}

    def __post_init__(self) -> None:
        check_fields(self)


def nested_paths(prefix: str, names: tuple[str, ...]) -> dict[str, str]:
    """``{name: "<prefix>.<name>"}``: options named as the fields of a nested dataclass."""
    return {name: f"{prefix}.{name}" for name in names}
