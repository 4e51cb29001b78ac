"""What the ``condi-pipe`` commands share: options whose defaults come from the stages' option tables
(``pipeline.options``), the option groups of the training and inference stages, and the one-line errors."""

from __future__ import annotations

import sys
from functools import wraps

import click

from condi_pipe.app.run_config import ConfigError
from condi_pipe.compute.torch_runtime import bf16_mode, layout_mode
from condi_pipe.models import CheckpointError
from condi_pipe.models.sgs import SGSOptions
from condi_pipe.pipeline.options import OptionTable, default_of
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


def option(table: OptionTable, *decls: str, **attrs):
    """``click.option(*decls, **attrs)`` for one of ``table``'s options, its default the request field's (shown
    in --help unless it is None): the CLI states no default of its own."""
    name = click.Option(list(decls)).name
    return click.option(*decls, default=table.default(name), show_default=True, **attrs)


def common_stage_options(fn):
    fn = click.option("--force", is_flag=True, help="Redo the stage even if it has finished.")(fn)
    fn = click.option("--quiet", is_flag=True, help="No progress bars.")(fn)
    return fn


def executor_options(workers: int):
    """--workers (``workers`` local Dask processes by default) and --scheduler-address."""

    def decorate(fn):
        fn = click.option("--scheduler-address", envvar="DASK_SCHEDULER_ADDRESS", default=None,
                          help="Use an existing Dask cluster (tcp://HOST:PORT) instead of starting local workers.")(fn)
        fn = click.option("--workers", type=click.IntRange(min=0), default=workers, show_default=True,
                          help="Local Dask worker processes (0: run in this process).")(fn)
        return fn

    return decorate


def fine_tuning_options(table: OptionTable, clips_help: str, weights_help: str):
    """--clips-per-video, --weights, --reset-head: what a training stage samples per video and starts from."""

    def decorate(fn):
        fn = option(table, "--reset-head", is_flag=True,
                    help="With --weights: keep a fresh classifier (other class count).")(fn)
        fn = option(table, "--weights", type=click.Path(exists=True, dir_okay=False), help=weights_help)(fn)
        fn = option(table, "--clips-per-video", type=click.IntRange(min=1), help=clips_help)(fn)
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


BF16_HELP = ("bfloat16 autocast: on (--bf16 alone), off, or auto (teacher-cache, score, infer: bf16 when it is faster "
             "here and agrees with fp32 on a calibration batch).")


def bf16_option(default):
    """The ``--bf16`` option with ``default`` (a RuntimeOptions.bf16 value), shown as off, on or auto."""
    return click.option("--bf16", type=Bf16Mode(), is_flag=False, flag_value="on", default=default,
                        show_default=bf16_mode(default), help=BF16_HELP)


class LayoutMode(click.ParamType):
    """``--layout [auto|ncdhw|channels-last]``, the value RuntimeOptions.layout's."""

    name = "[auto|ncdhw|channels-last]"

    def convert(self, value, param, ctx):
        try:
            return layout_mode(value)
        except ValueError as exc:
            self.fail(str(exc), param, ctx)


LAYOUT_HELP = ("Memory layout: auto (teacher-cache, score, infer: the faster here, timed once per machine; training: "
               "channels-last) or one pinned, for the same output bytes on machines that would time differently.")


def layout_option(default):
    return click.option("--layout", type=LayoutMode(), default=default, show_default=True, help=LAYOUT_HELP)


def runtime_options(table: OptionTable):
    """--device, --bf16, --layout, --threads: the stage's ``RuntimeOptions``."""

    def decorate(fn):
        fn = option(table, "--threads", type=click.IntRange(min=1),
                    help="Torch threads per process (default: the cores divided among the workers).")(fn)
        if "layout" in table:  # not time-models: it times each model in the runtime its stage recorded
            fn = layout_option(table.default("layout"))(fn)
        fn = bf16_option(table.default("bf16"))(fn)
        fn = option(table, "--device", help="cpu, cuda or cuda:N.")(fn)
        return fn

    return decorate


def train_options(table: OptionTable):
    """--epochs, --batch-size, --lr, --momentum, --weight-decay, --seed, --eval-every, and the validation split and
    epoch selection: --val-fraction, --val-seed, --keep, the batch readers: --loader-workers, and --sync-batchnorm;
    defaults: the stage's ``TrainOptions``."""

    def decorate(fn):
        fn = option(table, "--sync-batchnorm", is_flag=True,
                    help="Under torchrun: BatchNorm normalises with the statistics of the whole global batch rather "
                         "than each process's part (one all-reduce per BatchNorm layer, forward and backward). Keeps "
                         "the run close to one process when each process has few clips per step.")(fn)
        fn = option(table, "--loader-workers", type=click.IntRange(min=1),
                    help="Workers reading training batches, in order: 1 is a thread, more are processes started once "
                         "per run (default: 1 on a CPU, up to 4 with a GPU). The batches and the result do not "
                         "depend on it.")(fn)
        fn = option(table, "--keep", type=click.Choice(["best", "last"]),
                    help="Keep the evaluated epoch with the best validation selection metric (ties: the earlier), "
                         "or the last epoch.")(fn)
        fn = option(table, "--val-seed", type=int, help="Seed of the validation carve.")(fn)
        fn = option(table, "--val-fraction", type=click.FloatRange(0, 1, max_open=True),
                    help="Share of each class's groups carved from train for validation (every choice made during "
                         "training; 0: none, the last epoch is kept).")(fn)
        fn = option(table, "--eval-every", type=click.IntRange(min=1),
                    help="Evaluate on the validation split after every N-th epoch (and after the last).")(fn)
        fn = option(table, "--seed", type=int)(fn)
        fn = option(table, "--weight-decay", type=click.FloatRange(min=0))(fn)
        fn = option(table, "--momentum", type=click.FloatRange(min=0), help="SGD momentum.")(fn)
        fn = option(table, "--lr", type=click.FloatRange(min=0, min_open=True))(fn)
        fn = option(table, "--batch-size", type=click.IntRange(min=1))(fn)
        fn = option(table, "--epochs", type=click.IntRange(min=1))(fn)
        return fn

    return decorate


def sgs_options(fn):
    """--sgs, --sgs-stage, --sgs-kernel, --name: a teacher with SGS inserted, under its own name."""
    fn = click.option("--name", default=None,
                      help="The teacher's name in the store (default: --teacher, plus '+sgs' with --sgs).")(fn)
    fn = click.option("--sgs-kernel", type=click.Choice(["linear", "kronecker"]),
                      default=default_of(SGSOptions, "kernel"), show_default=True,
                      help="SGS kernel: linear (trainable embedding) or kronecker (each frame wholly in one bin).")(fn)
    fn = click.option("--sgs-stage", type=click.Choice(["res2", "res3", "res4"]),
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
