"""What the ``condi-pipe`` commands share: options declared by the stages' option tables (``pipeline.options``:
default, help and the values a field takes, checked with the same message as the Python API and a run config), the
option groups of the training and inference stages, and the one-line errors."""

from __future__ import annotations

import sys
import typing
from functools import wraps

import click

from condi_pipe.app.run_config import ConfigError
from condi_pipe.compute.torch_runtime import RuntimeOptions, bf16_mode, layout_mode
from condi_pipe.models import CheckpointError
from condi_pipe.models.sgs import KERNELS, SGS_STAGES, SGSOptions
from condi_pipe.pipeline.executor import SCHEDULER_ENV, ExecutorOptions
from condi_pipe.pipeline.options import Constraint, OptionTable, constraint_of, default_of
from condi_pipe.pipeline.stage import StageError
from condi_pipe.storage.errors import StoreError
from condi_pipe.video.sources import SourceError

# Errors a user can cause and fix: shown as one line, exit status 2, no traceback.
USER_ERRORS = (ConfigError, StageError, StoreError, SourceError, FileNotFoundError, ValueError, FloatingPointError)


def one_line_errors(fn):
    @wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except USER_ERRORS as exc:
            click.echo(f"error: {exc}", err=True)
            sys.exit(2)

    return wrapper


def model_errors(fn):
    """Unreadable checkpoints and diverging training are the user's to fix: one line, exit status 2."""

    @wraps(fn)
    def wrapper(*args, **kwargs):

        try:
            return fn(*args, **kwargs)
        except (CheckpointError, FloatingPointError) as exc:
            click.echo(f"error: {exc}", err=True)
            sys.exit(2)

    return wrapper


STORE_HELP = "Store path or fsspec URL."


def _first_positional(command: click.Command, ctx: click.Context, args: list[str]) -> int | None:
    """Index in ``args`` of the first argument that is neither an option nor an option's value (None: none)."""
    takes_value = {opt for param in command.get_params(ctx) if isinstance(param, click.Option)
                   and not param.is_flag and not param.count for opt in param.opts}
    i = 0
    while i < len(args):
        arg = args[i]
        if arg == "--":
            return i + 1 if i + 1 < len(args) else None
        if not arg.startswith("-") or arg == "-":
            return i
        i += 2 if arg in takes_value else 1
    return None


class StoreCommand(click.Command):
    """A command that takes its store as ``--store`` (required), as every command does, and for one release still
    as the one positional argument it took before (``condi-pipe verify STORE``): that form is rewritten to
    ``--store STORE`` with a deprecation warning on stderr, so that scripts keep working but are told."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        args = list(args)
        if not any(arg == "--store" or arg.startswith("--store=") for arg in args):
            i = _first_positional(self, ctx, args)
            if i is not None:
                store = args.pop(i)
                name = f"condi-pipe {ctx.info_name}"
                click.echo(f"warning: `{name} STORE` is deprecated and will be removed in the next release; use "
                           f"`{name} --store STORE`", err=True)
                args = ["--store", store, *args]
        return super().parse_args(ctx, args)


class RegistryChoice(click.Choice):
    """A choice whose values a registry gives when the command runs (or prints its help), so that a table or method
    registered after this module was imported is offered too."""

    def __init__(self, names) -> None:
        self._names = names
        super().__init__([], case_sensitive=True)

    @property
    def choices(self):
        return tuple(self._names())

    @choices.setter
    def choices(self, _value) -> None:  # click.Choice.__init__ assigns it; the registry is the source
        pass


def _refuse(param_type: click.ParamType, name: str, constraint: Constraint, value, param, ctx):
    """``value``, or click's usage error (exit status 2) with the constraint's one-line message: the message the
    Python API and a run config give for the same value."""
    problem = constraint.problem(name, value)
    if problem:
        param_type.fail(problem, param, ctx)
    return value


class CheckedChoice(RegistryChoice):
    """The choices of an option's :class:`Constraint` (a registry's names are asked for when the command runs)."""

    def __init__(self, name: str, constraint: Constraint) -> None:
        self.option, self.constraint = name, constraint
        super().__init__(constraint.allowed)

    def convert(self, value, param, ctx):
        return _refuse(self, self.option, self.constraint, value, param, ctx)


class CheckedIntRange(click.IntRange):
    """An int in the range of an option's :class:`Constraint` (shown in --help as click shows its ranges)."""

    def __init__(self, name: str, constraint: Constraint) -> None:
        self.option, self.constraint = name, constraint
        super().__init__(constraint.low, constraint.high, min_open=constraint.low_open, max_open=constraint.high_open)

    def convert(self, value, param, ctx):
        return _refuse(self, self.option, self.constraint, click.INT.convert(value, param, ctx), param, ctx)


class CheckedFloatRange(click.FloatRange):
    """A float in the range of an option's :class:`Constraint`."""

    def __init__(self, name: str, constraint: Constraint) -> None:
        self.option, self.constraint = name, constraint
        super().__init__(constraint.low, constraint.high, min_open=constraint.low_open, max_open=constraint.high_open)

    def convert(self, value, param, ctx):
        return _refuse(self, self.option, self.constraint, click.FLOAT.convert(value, param, ctx), param, ctx)


def _value_type(hint) -> type:
    """The type of a field's value when set: ``int`` for ``int | None``."""
    kinds = [k for k in typing.get_args(hint) if k is not type(None)] if typing.get_args(hint) else [hint]
    return kinds[0] if len(kinds) == 1 else object


def checked_type(name: str, constraint: Constraint, hint) -> click.ParamType | None:
    """The click type of option ``name``: its constraint's choices or range, else its field's type (None: text)."""
    kind = _value_type(hint)
    if constraint.choices is not None:
        return CheckedChoice(name, constraint)
    if constraint.bounded:
        return CheckedIntRange(name, constraint) if kind is int else CheckedFloatRange(name, constraint)
    return {int: click.INT, float: click.FLOAT}.get(kind)


def _declared(name: str, constraint: Constraint, hint, decls: tuple[str, ...], attrs: dict):
    """``click.option`` with the declared help and checked type; refuses a type or help of the command's own."""
    if constraint.help and "help" in attrs:
        raise TypeError(f"--{name}: its help is declared on its field")
    if (constraint.choices is not None or constraint.bounded) and "type" in attrs:
        raise TypeError(f"--{name}: its values are declared on its field")
    flag = attrs.get("is_flag") or "/" in decls[0] or _value_type(hint) is bool
    if not flag and "type" not in attrs:
        attrs["type"] = checked_type(name, constraint, hint)
    return click.option(*decls, help=attrs.pop("help", constraint.help or None), show_default=True, **attrs)


def option(table: OptionTable, *decls: str, **attrs):
    """``click.option(*decls, **attrs)`` for one of ``table``'s options as its field declares it: the default (shown
    in --help unless it is None), the help, and a type that checks the value with the field's constraint, so the
    command refuses what the Python API and a run config refuse, with the same message. The CLI states no default
    of its own, unless the field has none (``--loss``)."""
    name = click.Option(list(decls)).name
    if "default" not in attrs and not attrs.get("required"):
        attrs["default"] = table.default(name)
    return _declared(name, table.constraint(name), table.type_of(name), decls, attrs)


def field_option(cls: type, field: str, *decls: str, **attrs):
    """:func:`option` for field ``field`` of a dataclass that is no stage's option table (``ExecutorOptions``)."""
    if "default" not in attrs and not attrs.get("required"):
        attrs["default"] = default_of(cls, field)
    return _declared(field, constraint_of(cls, field), typing.get_type_hints(cls)[field], decls, attrs)


def common_stage_options(fn):
    fn = click.option("--force", is_flag=True, help="Redo the stage even if it has finished.")(fn)
    fn = click.option("--quiet", is_flag=True, help="No progress bars.")(fn)
    return fn


def executor_options(workers: int):
    """--workers (``workers`` local Dask processes by default) and --scheduler-address."""

    def decorate(fn):
        fn = field_option(ExecutorOptions, "scheduler_address", "--scheduler-address", envvar=SCHEDULER_ENV)(fn)
        fn = field_option(ExecutorOptions, "workers", "--workers", default=workers)(fn)
        return fn

    return decorate


def fine_tuning_options(table: OptionTable):
    """--clips-per-video, --weights, --reset-head: what a training stage samples per video and starts from."""

    def decorate(fn):
        fn = option(table, "--reset-head", is_flag=True)(fn)
        fn = option(table, "--weights", type=click.Path(exists=True, dir_okay=False))(fn)
        fn = option(table, "--clips-per-video")(fn)
        return fn

    return decorate


class Bf16Mode(click.ParamType):
    """``--bf16 [off|on|auto]``: ``--bf16`` alone is ``on`` (the old flag); the value is RuntimeOptions.bf16's."""

    name = "[off|on|auto]"

    def convert(self, value, param, ctx):
        try:
            mode = bf16_mode(value)
        except ValueError as exc:
            self.fail(str(exc), param, ctx)
        return "auto" if mode == "auto" else mode == "on"


def bf16_option(default, help: str = constraint_of(RuntimeOptions, "bf16").help):
    """The ``--bf16`` option with ``default`` (a RuntimeOptions.bf16 value), shown as off, on or auto."""
    return click.option("--bf16", type=Bf16Mode(), is_flag=False, flag_value="on", default=default,
                        show_default=bf16_mode(default), help=help)


class LayoutMode(click.ParamType):
    """``--layout [auto|ncdhw|channels-last]``, the value RuntimeOptions.layout's."""

    name = "[auto|ncdhw|channels-last]"

    def convert(self, value, param, ctx):
        try:
            return layout_mode(value)
        except ValueError as exc:
            self.fail(str(exc), param, ctx)


def layout_option(default, help: str = constraint_of(RuntimeOptions, "layout").help):
    return click.option("--layout", type=LayoutMode(), default=default, show_default=True, help=help)


def runtime_options(table: OptionTable):
    """--device, --bf16, --layout, --threads: the stage's ``RuntimeOptions``."""

    def decorate(fn):
        fn = option(table, "--threads")(fn)
        if "layout" in table:  # not time-models: it times each model in the runtime its stage recorded
            fn = layout_option(table.default("layout"), table.help("layout"))(fn)
        fn = bf16_option(table.default("bf16"), table.help("bf16"))(fn)
        fn = option(table, "--device")(fn)
        return fn

    return decorate


def train_options(table: OptionTable):
    """--epochs, --batch-size, --lr, --momentum, --weight-decay, --seed, --eval-every, and the validation split and
    epoch selection: --val-fraction, --val-seed, --keep, the batch readers: --loader-workers, and --sync-batchnorm;
    defaults: the stage's ``TrainOptions``."""

    def decorate(fn):
        fn = option(table, "--sync-batchnorm", is_flag=True)(fn)
        fn = option(table, "--loader-workers")(fn)
        fn = option(table, "--keep")(fn)
        fn = option(table, "--val-seed")(fn)
        fn = option(table, "--val-fraction")(fn)
        fn = option(table, "--eval-every")(fn)
        fn = option(table, "--seed")(fn)
        fn = option(table, "--weight-decay")(fn)
        fn = option(table, "--momentum")(fn)
        fn = option(table, "--lr")(fn)
        fn = option(table, "--batch-size")(fn)
        fn = option(table, "--epochs")(fn)
        return fn

    return decorate


def sgs_options(fn):
    """--sgs, --sgs-stage, --sgs-kernel, --name: a teacher with SGS inserted, under its own name."""
    fn = click.option("--name", default=None,
                      help="The teacher's name in the store (default: --teacher, plus '+sgs' with --sgs).")(fn)
    fn = click.option("--sgs-kernel", type=click.Choice(KERNELS),
                      default=default_of(SGSOptions, "kernel"), show_default=True,
                      help="SGS kernel: linear (trainable embedding) or kronecker (each frame wholly in one bin).")(fn)
    fn = click.option("--sgs-stage", type=click.Choice(list(SGS_STAGES)),
                      default=default_of(SGSOptions, "stage"), show_default=True,
                      help="Insert SGS after this stage (res2 = layer1, res3 = layer2, res4 = layer3).")(fn)
    fn = click.option("--sgs", is_flag=True,
                      help="Insert Similarity Guided Sampling (ATFR) into the 3D ResNet: fewer temporal slices B' "
                           "for similar frames. With --weights, everything but the new SGS parameters loads.")(fn)
    return fn


def sgs_from(options: dict) -> dict:
    """``options`` with --sgs, --sgs-stage and --sgs-kernel made one ``sgs`` (SGSOptions, or None without --sgs)."""
    options = dict(options)
    sgs, stage, kernel = options.pop("sgs"), options.pop("sgs_stage"), options.pop("sgs_kernel")
    options["sgs"] = SGSOptions(stage, kernel) if sgs else None
    return options
