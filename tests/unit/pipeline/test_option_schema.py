"""One option schema: each stage option's default, help and allowed values are its request field's, on the command
line, in a run config and in the Python API (a bad value gets the same one-line message from all three), the run
config's sections are made from the option tables, and the CLI and the runner build the same request from the same
options.

The correspondence of click parameters and run-config keys to request fields is written out here: a parameter or
key is a field of the same name somewhere in the stage's request (``epochs`` is ``train.epochs``), or listed below
as renamed, or as not an option of the stage's request. A new option that is none of these fails the test.
"""

from __future__ import annotations

import dataclasses
import textwrap
import typing

import click
import pytest
from click.testing import CliRunner

from condi_pipe.app.run_config import (
    ConfigError,
    DistillSection,
    ExtractSection,
    ScoreSection,
    SGSSection,
    TeacherSection,
    TeacherTrainSection,
    TimeModelsSection,
    load_run_config,
)
from condi_pipe.app.runner import PipelineRequests
from condi_pipe.cli import main as cli
from condi_pipe.compute.torch_runtime import RUNTIME_OPTIONS
from condi_pipe.compute.training import TrainOptions
from condi_pipe.methods.registry import method_names
from condi_pipe.models.sgs import SGSOptions
from condi_pipe.pipeline.executor import INFERENCE_WORKERS, ExecutorOptions
from condi_pipe.pipeline.options import constraint_of, default_of
from condi_pipe.pipeline.stage import step_order
from condi_pipe.stages.distill_request import DISTILL_OPTIONS, SCHEDULE_UNITS, DistillRequest, LossOptions
from condi_pipe.stages.extract import EXTRACT_OPTIONS, ExtractRequest
from condi_pipe.stages.score import SCORE_OPTIONS, ScoreRequest
from condi_pipe.stages.teacher_cache import TEACHER_CACHE_OPTIONS, TeacherCacheRequest, TeacherChoice
from condi_pipe.stages.teacher_train import TEACHER_TRAIN_OPTIONS, TeacherTrainRequest
from condi_pipe.stages.time_models import TIME_MODELS_OPTIONS, TimeModelsRequest
from condi_pipe.storage.run_state import set_stage
from condi_pipe.storage.store import Store

NO_DEFAULT = object()

# command -> (its option table, the request the table builds)
COMMANDS = {
    "extract": (EXTRACT_OPTIONS, ExtractRequest),
    "teacher-train": (TEACHER_TRAIN_OPTIONS, TeacherTrainRequest),
    "teacher-cache": (TEACHER_CACHE_OPTIONS, TeacherCacheRequest),
    "distill": (DISTILL_OPTIONS, DistillRequest),
    "score": (SCORE_OPTIONS, ScoreRequest),
    "time-models": (TIME_MODELS_OPTIONS, TimeModelsRequest),
}
# click parameters that are not options of the stage's request: where and how the stage runs
NOT_REQUEST_OPTIONS = {
    "extract": {"store", "strict", "workers", "scheduler_address", "force", "quiet"},
    "teacher-train": {"store", "force", "quiet"},
    "teacher-cache": {"store", "workers", "scheduler_address", "force", "quiet"},
    "distill": {"store", "force", "quiet"},
    "score": {"store", "workers", "scheduler_address", "force", "quiet"},
    "time-models": {"store", "force", "quiet"},
}
# click parameters that make one request field together: --sgs --sgs-stage --sgs-kernel are ``sgs`` (SGSOptions)
SGS_PARAMETERS = {"sgs_stage": (SGSOptions, "stage"), "sgs_kernel": (SGSOptions, "kernel")}
# defaults the command has although the request field has none (a required field the CLI fills in)
CLI_ONLY_DEFAULTS = {("distill", "loss")}


def field_default(cls: type, path: str):
    """The default at ``path`` found by walking the dataclass fields (NO_DEFAULT when there is none)."""
    head, _, rest = path.partition(".")
    f = {f.name: f for f in dataclasses.fields(cls)}[head]
    if f.default is not dataclasses.MISSING:
        value = f.default
    elif f.default_factory is not dataclasses.MISSING:
        value = f.default_factory()
    else:
        return NO_DEFAULT
    for name in rest.split(".") if rest else ():
        value = getattr(value, name)
    return value


def table_field(table, name: str):
    """(class, path) of option ``name``: a nested part's class when the request builds it from options."""
    head, _, rest = table.paths[name].partition(".")
    if head in table.parts:
        return table.parts[head], rest
    return table.request_type, table.paths[name]


def command_options(command: str) -> dict[str, click.Option]:
    return {p.name: p for p in cli.commands[command].params if isinstance(p, click.Option)}


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_every_option_of_a_stage_command_has_its_request_fields_default(command):
    table, request_type = COMMANDS[command]
    assert table.request_type is request_type
    options = command_options(command)
    context = click.Context(cli.commands[command])
    unmatched = set(options) - set(table.names()) - NOT_REQUEST_OPTIONS[command] - set(SGS_PARAMETERS)
    assert not unmatched, f"{command}: options with no request field and not listed as such: {sorted(unmatched)}"
    assert set(table.names()) <= set(options), f"{command}: request options the command lacks"
    for name, param in options.items():
        if name in NOT_REQUEST_OPTIONS[command]:
            continue
        if name in SGS_PARAMETERS:
            cls, path = SGS_PARAMETERS[name]
        else:
            cls, path = table_field(table, name)
            assert path.rsplit(".", 1)[-1] == name, f"{command} --{name} is field {path}: list it as renamed"
        expected = field_default(cls, path)
        default = param.get_default(context)
        if name == "sgs":  # a flag for an optional field: off is no SGS
            assert default is False and expected is None
        elif expected is NO_DEFAULT:
            assert param.required or (command, name) in CLI_ONLY_DEFAULTS, f"{command} --{name}: a default of its own"
        else:
            assert default == expected, f"{command} --{name}: {default!r}, the request {expected!r}"


# section -> (the option table its keys are options of, {key: (class, path)} for keys named otherwise or not in
# the table, {keys whose defaults are the run config's own})
SECTIONS = {
    ExtractSection: (EXTRACT_OPTIONS, {"workers": (ExecutorOptions, "workers")}, set()),
    TeacherSection: (TEACHER_CACHE_OPTIONS, {"name": (TeacherChoice, "teacher")}, {"workers"}),
    TeacherTrainSection: (TEACHER_TRAIN_OPTIONS, {}, set()),
    DistillSection: (DISTILL_OPTIONS, {}, {"student", "losses"}),
    ScoreSection: (SCORE_OPTIONS, {}, set()),
    TimeModelsSection: (TIME_MODELS_OPTIONS, {}, set()),
    # the [sgs] teacher: teacher-train of a teacher with SGSOptions; lr is its fine-tuning rate, on purpose lower
    SGSSection: (TEACHER_TRAIN_OPTIONS, {"stage": (SGSOptions, "stage"), "kernel": (SGSOptions, "kernel")},
                 {"from_teacher", "lr"}),
}


@pytest.mark.parametrize("section", SECTIONS, ids=lambda s: s.__name__)
def test_every_run_config_key_has_its_request_fields_default(section):
    table, renamed, own = SECTIONS[section]
    required = {"source": "ucf101", "root": "data"} if section is ExtractSection else (
        {"name": "resnet10_3d_small"} if section is TeacherSection else {})
    instance = section(**required)
    for f in dataclasses.fields(section):
        if f.name in own or f.name in required and f.name not in renamed:
            continue
        if f.name in renamed:
            cls, path = renamed[f.name]
        else:
            assert f.name in table, f"[{section.__name__}] {f.name}: not a stage option; list it here"
            cls, path = table_field(table, f.name)
        expected = field_default(cls, path)
        if expected is NO_DEFAULT:
            assert f.name in required, f"{section.__name__}.{f.name}: a default the request does not have"
        else:
            assert getattr(instance, f.name) == expected, f"{section.__name__}.{f.name}"


def test_the_worker_defaults_of_the_run_config_are_the_commands():
    def workers(command):
        return command_options(command)["workers"].get_default(click.Context(cli.commands[command]))

    assert ExtractSection("ucf101", "d").workers == workers("extract")
    for command in ("teacher-cache", "score"):
        assert workers(command) == INFERENCE_WORKERS == TeacherSection("t").workers


# a value other than the default for every [distill] and [teacher_train] key that is a request option
DISTILL_VALUES = {
    "width": 0.5, "epochs": 3, "batch_size": 8, "lr": 0.01, "momentum": 0.5, "weight_decay": 0.001, "seed": 4,
    "eval_every": 2, "val_fraction": 0.2, "val_seed": 5, "keep": "last", "conf_lr": 0.05, "lr_decay": 1.5,
    "conf_lr_decay": 4.0, "schedule_unit": "passes", "reference_epoch": 100, "tau": 2.0, "lam": 0.5, "mu": 0.25,
    "detach_confidence": True, "beta": 0.25, "downsample": False, "budget": 0.5, "lambda_init": 0.2,
    "lambda_factor": 1.5, "hint_fraction": 0.25, "k": 5, "alpha_rep": 0.5, "alpha_kl": 0.5, "alpha_ce": 0.5,
    "clips_per_video": 2, "weights": "kinetics_student.pt", "reset_head": True, "device": "cuda", "threads": 3,
    "bf16": True, "layout": "ncdhw", "student": "resnet10_3d_motion_tiny", "loader_workers": 2,
    "sync_batchnorm": True,
}
TEACHER_TRAIN_VALUES = {
    "epochs": 3, "batch_size": 8, "lr": 0.01, "momentum": 0.5, "weight_decay": 0.001, "flip": False, "seed": 4,
    "eval_every": 2, "val_fraction": 0.2, "val_seed": 5, "keep": "last", "clips_per_video": 2,
    "weights": "kinetics_teacher.pt", "reset_head": True, "oof_folds": 3, "sync_batchnorm": True, "loader_workers": 2,
}


def _toml(section: str, values: dict) -> str:
    def literal(v):
        return ("true" if v else "false") if isinstance(v, bool) else repr(v).replace("'", '"')

    return f"[{section}]\n" + "".join(f"{key} = {literal(value)}\n" for key, value in values.items())


def _config(tmp_path, text: str):
    path = tmp_path / "run.toml"
    base = 'store = "store"\n[extract]\nsource = "ucf101"\nroot = "data"\n[teacher]\nname = "resnet10_3d_small"\n'
    path.write_text(base + textwrap.dedent(text))
    return load_run_config(path)


def test_a_run_config_sets_every_distill_option_and_the_runner_passes_it_on(tmp_path):
    """[distill] weights (a pretrained student to fine-tune) and every other option reach each DistillRequest."""
    in_table = {f.name for f in dataclasses.fields(DistillSection) if f.name in DISTILL_OPTIONS}
    assert in_table <= set(DISTILL_VALUES), f"give a value to {sorted(in_table - set(DISTILL_VALUES))}"
    config = _config(tmp_path, _toml("distill", {**DISTILL_VALUES, "losses": ["condi-sr", "fewer-frames"]}))
    requests = PipelineRequests(config).distill()
    assert [r.loss for r in requests] == ["condi-sr", "fewer-frames"]
    for request in requests:
        assert request.teacher == "resnet10_3d_small" and request.name is None
        for name, value in DISTILL_VALUES.items():
            got = request
            for part in DISTILL_OPTIONS.paths[name].split("."):
                got = getattr(got, part)
            expected = str(tmp_path / value) if name == "weights" else value  # relative to the config file
            assert got == expected, name
    # the student's runtime scores the runs too
    for score in PipelineRequests(config).score():
        assert (score.runtime.device, score.runtime.threads, score.runtime.bf16, score.runtime.layout,
                score.runtime.channels_last) == ("cuda", 3, True, "ncdhw", False)


def test_a_run_config_sets_every_teacher_train_option(tmp_path):
    in_table = {f.name for f in dataclasses.fields(TeacherTrainSection)}
    assert in_table == set(TEACHER_TRAIN_VALUES)
    config = _config(tmp_path, _toml("teacher_train", TEACHER_TRAIN_VALUES))
    request = PipelineRequests(config).teacher_train()
    for name, value in TEACHER_TRAIN_VALUES.items():
        got = request
        for part in TEACHER_TRAIN_OPTIONS.paths[name].split("."):
            got = getattr(got, part)
        assert got == (str(tmp_path / value) if name == "weights" else value), name


def test_teacher_weights_in_both_teacher_sections_are_refused(tmp_path):
    """[teacher] weights skip teacher-train, so [teacher_train] weights (its starting point) would be ignored."""
    path = tmp_path / "run.toml"
    path.write_text('store = "s"\n[extract]\nsource = "ucf101"\nroot = "d"\n[teacher]\nname = "t"\nweights = "b.pt"\n'
                    '[teacher_train]\nweights = "a.pt"\n')
    with pytest.raises(ConfigError, match=r"\[teacher_train\] weights start teacher-train"):
        load_run_config(path)


def _a_store(folder) -> None:
    """A store the commands accept (they refuse a path holding no stage record); the stages here are stand-ins."""
    set_stage(Store(str(folder)), "extract", state="done", counts={})


def test_the_cli_and_a_run_config_build_the_same_distill_request(tmp_path, monkeypatch):
    """One translation: the distill command with the options of a [distill] section makes the runner's request."""
    import condi_pipe.stages.distill as stage

    made = []
    monkeypatch.setattr(stage, "distill", lambda store, request, **kw: made.append(request))
    _a_store(tmp_path / "store")
    weights = tmp_path / "kinetics_student.pt"
    weights.write_bytes(b"")
    args = ["distill", "--loss", "condi-sr", "--student", "resnet10_3d_motion_tiny", "--teacher", "resnet10_3d_small",
            "--store", str(tmp_path / "store"), "--epochs", "3", "--lr", "0.01", "--lambda", "0.5", "--k", "5",
            "--weights", str(weights), "--reset-head", "--bf16"]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    config = _config(tmp_path, _toml("distill", {
        "student": "resnet10_3d_motion_tiny", "losses": ["condi-sr"], "epochs": 3, "lr": 0.01, "lam": 0.5, "k": 5,
        "weights": "kinetics_student.pt", "reset_head": True, "bf16": True}))
    assert made == PipelineRequests(config).distill()
    # and with no options, the request's own defaults
    made.clear()
    result = CliRunner().invoke(cli, args[:9])
    assert result.exit_code == 0, result.output
    assert made == [DistillRequest("condi-sr", "resnet10_3d_motion_tiny", "resnet10_3d_small")]


def test_the_teacher_cache_command_leaves_its_teacher_to_the_stage(tmp_path, monkeypatch):
    """The CLI passes the teacher as named; the stage resolves its weights (TeacherChoice.resolve)."""
    import condi_pipe.stages.teacher_cache as stage

    made = []
    monkeypatch.setattr(stage, "teacher_cache", lambda store, request, executor, **kw: made.append(request))
    _a_store(tmp_path / "store")
    result = CliRunner().invoke(cli, ["teacher-cache", "--teacher", "resnet10_3d_motion", "--weights", "pretrained",
                                      "--store", str(tmp_path / "store"), "--sgs", "--sgs-stage", "res3"])
    assert result.exit_code == 0, result.output
    [request] = made
    assert request.teacher == TeacherChoice("resnet10_3d_motion", weights="pretrained", sgs=SGSOptions("res3"))
    assert request.clips_per_group == default_of(TeacherCacheRequest, "clips_per_group")


def test_the_runner_orders_its_steps_by_what_the_stages_read_and_use(tmp_path):
    """The order comes from the StageSpecs: each student is scored before the next one trains, the SGS teacher
    trains after the plain one, and time-models comes last."""
    from condi_pipe.app.runner import pipeline_steps

    config = _config(tmp_path, '[distill]\nstudent = "resnet10_3d_motion_tiny"\nlosses = ["condi-sr", "st-ent"]\n'
                               '[sgs]\n')
    # listed by stage name (distill first, extract second ...): the order is step_order's; ties keep the listing's
    steps = sorted(pipeline_steps(config, store=None, log=lambda message: None), key=lambda step: step.stage)
    plain, sgs = "resnet10_3d_small", "resnet10_3d_small+sgs"
    runs = [f"{loss}-resnet10_3d_motion_tiny" for loss in ("condi-sr", "st-ent")]
    assert [s.id for s in step_order(steps)] == [
        "extract/", f"teacher-train/{plain}", f"teacher-cache/{plain}", f"teacher-train/{sgs}",
        f"teacher-cache/{sgs}", f"distill/{runs[0]}", f"score/{runs[0]}", f"distill/{runs[1]}", f"score/{runs[1]}",
        f"time-models/{plain}"]


# ------------------------------------------------------------------------------ one check, one message everywhere

# the run-config section each command's options are set in
SECTION_OF = {"extract": "extract", "teacher-train": "teacher_train", "teacher-cache": "teacher", "distill": "distill",
              "score": "score", "time-models": "time_models"}
# what each command's request needs, through the Python API and on the command line
API_REQUIRED = {"extract": {"source": "ucf101", "root": "data"}, "teacher-train": {"teacher": "t"},
                "teacher-cache": {"teacher": "t"}, "distill": {"loss": "condi-sr", "student": "s", "teacher": "t"},
                "score": {"run": "r"}, "time-models": {"teacher": "t"}}
CLI_REQUIRED = {"extract": ["--source", "ucf101", "--root", "{tmp}"], "teacher-train": ["--teacher", "t"],
                "teacher-cache": ["--teacher", "t"], "distill": ["--student", "s", "--teacher", "t"],
                "score": ["--student", "r"], "time-models": ["--teacher", "t"]}

# option, the command taking it, a bad value as typed on the command line and as written in TOML, and the message
BAD_VALUES = [
    ("lambda_factor", "distill", "5.0", 5.0, "lambda_factor must be in (1, 2), got 5.0"),
    ("beta", "distill", "1.5", 1.5, "beta must be in [0, 1], got 1.5"),
    ("lr", "distill", "-0.1", -0.1, "lr must be > 0, got -0.1"),
    ("epochs", "teacher-train", "0", 0, "epochs must be >= 1, got 0"),
    ("schedule_unit", "distill", "steps", "steps", "schedule_unit must be one of samples, passes, got 'steps'"),
    ("val_fraction", "teacher-train", "1.0", 1.0, "val_fraction must be in [0, 1), got 1.0"),
    ("keep", "distill", "first", "first", "keep must be one of best, last, got 'first'"),
    ("layout", "distill", "sideways", "sideways", "layout must be one of auto, ncdhw, channels-last, got 'sideways'"),
    ("bf16", "teacher-cache", "maybe", "maybe", "bf16 must be one of off, on, auto (or true/false), got 'maybe'"),
    ("k", "distill", "0", 0, "k must be >= 1, got 0"),
    ("threads", "distill", "0", 0, "threads must be >= 1, got 0"),
    ("loader_workers", "teacher-train", "0", 0, "loader_workers must be >= 1, got 0"),
    ("split", "extract", "4", 4, "split must be in [1, 3], got 4"),
    ("zstd_level", "extract", "23", 23, "zstd_level must be in [1, 22], got 23"),
    ("short_side", "extract", "100", 100, "short_side must be >= 112, got 100"),
    ("z_labels", "teacher-cache", "oof", "oof", "z_labels must be one of out-of-fold, in-sample, got 'oof'"),
    ("oof_folds", "teacher-train", "1", 1, "oof_folds must be >= 2, got 1"),
    ("clips_per_group", "score", "0", 0, "clips_per_group must be >= 1, got 0"),
    ("repeats", "time-models", "0", 0, "repeats must be >= 1, got 0"),
]


def _toml_config(tmp_path, section: str, values: dict):
    """A run config with the required sections and ``values`` set in ``section``; its path."""
    sections = {"extract": {"source": "ucf101", "root": "data"}, "teacher": {"name": "t"}}
    sections.setdefault(section, {}).update(values)
    path = tmp_path / "run.toml"
    path.write_text('store = "store"\n' + "".join(_toml(name, keys) for name, keys in sections.items()))
    return path


def _cli(tmp_path, command: str, *args: str):
    required = [arg.format(tmp=tmp_path) for arg in CLI_REQUIRED[command]]
    return CliRunner().invoke(cli, [command, *required, "--store", str(tmp_path / "store"), *args])


@pytest.mark.parametrize("name, command, typed, written, message", BAD_VALUES, ids=[c[0] for c in BAD_VALUES])
def test_a_bad_value_gets_one_message_from_the_api_a_run_config_and_the_cli(tmp_path, name, command, typed, written,
                                                                          message):
    table, _ = COMMANDS[command]
    with pytest.raises(ValueError) as api:  # the request's (and its option dataclasses') constructors
        table.request(**API_REQUIRED[command], **{name: written})
    assert str(api.value) == message

    path = _toml_config(tmp_path, SECTION_OF[command], {name: written})
    with pytest.raises(ConfigError) as config:
        load_run_config(path)
    assert str(config.value) == f"{path}: [{SECTION_OF[command]}].{message}"

    result = _cli(tmp_path, command, f"--{name.replace('_', '-')}", typed)
    assert result.exit_code == 2 and message in result.output, result.output
    assert "Traceback" not in result.output


def test_the_losses_are_the_registered_methods_everywhere(tmp_path):
    refused = f"must be one of {', '.join(method_names())}, got 'nope'"
    with pytest.raises(ValueError) as api:
        DistillRequest("nope", "s", "t")
    assert str(api.value) == f"loss {refused}"
    path = _toml_config(tmp_path, "distill", {"losses": ["condi-sr", "nope"]})
    with pytest.raises(ConfigError) as config:
        load_run_config(path)
    assert str(config.value) == f"{path}: [distill].losses {refused}"
    result = _cli(tmp_path, "distill", "--loss", "nope")
    assert result.exit_code == 2 and f"loss {refused}" in result.output


def test_the_option_dataclasses_check_their_own_fields():
    """A LossOptions or TrainOptions made directly (not through a request) refuses what the CLI refuses."""
    with pytest.raises(ValueError, match=r"^lambda_factor must be in \(1, 2\), got 5\.0$"):
        LossOptions(lambda_factor=5.0)
    with pytest.raises(ValueError, match=r"^lambda_factor must be in \(1, 2\), got 2\.0$"):
        DistillRequest("condi-sr", "s", "t", losses=LossOptions(lambda_factor=2.0))
    with pytest.raises(ValueError, match=r"^batch_size must be >= 1, got 0$"):
        TrainOptions(epochs=1, batch_size=0, lr=0.1)
    with pytest.raises(ValueError, match=r"^workers must be >= 0, got -1$"):
        ExecutorOptions(workers=-1)
    assert LossOptions(lambda_factor=1.5).lambda_factor == 1.5


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_every_option_of_a_stage_command_has_its_fields_help_and_values(command):
    """The help, the choices and the range --help shows are the field's declaration, not the command's."""
    table, _ = COMMANDS[command]
    for name, param in command_options(command).items():
        if name in table and name != "sgs":  # --sgs, --sgs-stage and --sgs-kernel make one field: sgs_options
            constraint = table.constraint(name)
            assert constraint.help and param.help == constraint.help, f"{command} --{name}"
            if constraint.choices is not None:
                assert tuple(param.type.choices) == constraint.allowed(), f"{command} --{name}"
            if constraint.bounded:
                bounds = (param.type.min, param.type.max, param.type.min_open, param.type.max_open)
                assert bounds == (constraint.low, constraint.high, constraint.low_open, constraint.high_open)
        elif name in ("workers", "scheduler_address"):
            assert param.help == constraint_of(ExecutorOptions, name).help
    if command == "distill":
        assert command_options(command)["schedule_unit"].type.choices == SCHEDULE_UNITS


# section -> (the table it is made from, the options it leaves out, options under another key, keys of its own)
GENERATED = {
    ExtractSection: (EXTRACT_OPTIONS, set(), {}, {"workers"}),
    TeacherSection: (TEACHER_CACHE_OPTIONS, {"random_init", "sgs", "name"}, {"teacher": "name"}, {"workers"}),
    TeacherTrainSection: (TEACHER_TRAIN_OPTIONS, {"teacher", "width", "sgs", "name", *RUNTIME_OPTIONS}, {}, set()),
    DistillSection: (DISTILL_OPTIONS, {"loss", "teacher", "name"}, {}, {"losses"}),  # per run: each of losses
    ScoreSection: (SCORE_OPTIONS, {"run", *RUNTIME_OPTIONS}, {}, set()),
    TimeModelsSection: (TIME_MODELS_OPTIONS, {"teacher", "runs", "device", "threads", "bf16"}, {}, set()),
    SGSSection: (TEACHER_TRAIN_OPTIONS, set(TEACHER_TRAIN_OPTIONS.names()) - {"name", "epochs", "batch_size", "lr"},
                 {}, {"stage", "kernel", "from_teacher"}),
}


@pytest.mark.parametrize("section", GENERATED, ids=lambda s: s.__name__)
def test_a_section_declares_by_hand_only_the_keys_of_its_own(section):
    """Every other key is made from the option table, with the option's type and constraint."""
    table, left_out, renamed, own = GENERATED[section]
    options = [name for name in table.names() if name not in left_out]
    assert {f.name for f in dataclasses.fields(section)} == {renamed.get(n, n) for n in options} | own
    assert set(vars(section).get("__annotations__", {})) == own
    hints = typing.get_type_hints(section)
    for name in options:
        key = renamed.get(name, name)
        assert constraint_of(section, key) is table.constraint(name), f"{section.__name__}.{key}"
        if (section, key) != (ExtractSection, "split"):  # a list of splits: one store each (folds)
            assert hints[key] == table.type_of(name), f"{section.__name__}.{key}"


def test_a_sweep_checks_its_space_with_the_distill_options_constraints():
    from condi_pipe.app.sweep_config import SweepSection, numeric_distill_keys

    keys = numeric_distill_keys()
    assert keys["lambda_factor"] is float and keys["k"] is int and "epochs" not in keys and "keep" not in keys
    with pytest.raises(ValueError, match=r"^space\.lambda_factor must be in \(1, 2\), got 5\.0$"):
        SweepSection("a", {"lambda_factor": [1.5, 5.0]})
    with pytest.raises(ValueError, match=r"^space\.k must be >= 1, got 0$"):
        SweepSection("a", {"k": [0, 3]})
