"""`condi-pipe run`: configuration checks, the demo's configuration, and the whole pipeline end to end."""

from __future__ import annotations

import dataclasses
import textwrap
from pathlib import Path

import pytest
from click.testing import CliRunner

from condi_pipe.app.run_config import ConfigError, load_run_config
from condi_pipe.cli import main as cli
from condi_pipe.recipes.demo import demo_config

ROOT = Path(__file__).resolve().parents[2]

MINIMAL = """
store = "s"
[extract]
source = "ucf101"
root = "data"
[teacher]
name = "resnet10_3d_small"
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "run.toml"
    path.write_text(textwrap.dedent(text))
    return path


def test_minimal_config_resolves_paths_relative_to_the_file(tmp_path):
    config = load_run_config(write(tmp_path, MINIMAL))
    assert config.store == str(tmp_path / "s") and config.extract.root == str(tmp_path / "data")
    assert config.distill.losses == ["condi-sr", "bce-conf", "st-ent", "st-conf"] and config.distill.tau == 0.9


@pytest.mark.parametrize("extra, message", [
    ("[distill]\nepochz = 3\n", r"unknown key 'epochz' in \[distill\]"),
    ("[distill]\nepochs = \"three\"\n", r"\[distill\].epochs must be int, got str"),
    ("[distill]\nlosses = \"condi-sr\"\n", r"\[distill\].losses must be list\[str\]"),
    ("[teacher_train]\nflip = 1\n", r"\[teacher_train\].flip must be bool"),
    ("[reporting]\nx = 1\n", r"unknown section or key 'reporting'"),
    ("[distill]\nschedule_unit = \"steps\"\n",
     r"\[distill\].schedule_unit must be one of samples, passes, got 'steps'$"),
    ("[distill]\nreference_epoch = 0\n", r"\[distill\].reference_epoch must be >= 1, got 0$"),
    ("[teacher_train]\nkeep = \"first\"\n", r"\[teacher_train\].keep must be one of best, last, got 'first'$"),
    ("[teacher_train]\nval_fraction = 1.0\n", r"\[teacher_train\].val_fraction must be in \[0, 1\)"),
    ("[distill]\nlambda_factor = 2.5\n", r"\[distill\].lambda_factor must be in \(1, 2\)"),
    ("[distill]\nweights = 3\n", r"\[distill\].weights must be str \| None"),
    ("[score]\nclips_per_group = 0\n", r"\[score\].clips_per_group must be >= 1, got 0$"),
])
def test_bad_config_is_one_line_naming_the_file_and_key(tmp_path, extra, message):
    path = write(tmp_path, MINIMAL + extra)
    with pytest.raises(ConfigError, match=message) as info:
        load_run_config(path)
    assert str(path) in str(info.value) and "\n" not in str(info.value)
    result = CliRunner().invoke(cli, ["run", "--config", str(path)])
    assert result.exit_code == 2 and result.stderr.startswith("error: ") and str(path) in result.stderr


def test_validation_and_schedule_keys_reach_the_sections(tmp_path):
    extra = ("[teacher_train]\nval_fraction = 0.2\nval_seed = 3\nkeep = \"last\"\n"
             "[distill]\nval_fraction = 0.0\nschedule_unit = \"passes\"\nreference_epoch = 500\n")
    config = load_run_config(write(tmp_path, MINIMAL + extra))
    tt, di = config.teacher_train, config.distill
    assert (tt.val_fraction, tt.val_seed, tt.keep) == (0.2, 3, "last")
    assert (di.val_fraction, di.val_seed, di.keep, di.schedule_unit, di.reference_epoch) == (
        0.0, 0, "best", "passes", 500)


def test_missing_section_and_bad_toml(tmp_path):
    with pytest.raises(ConfigError, match=r"section \[teacher\] is required"):
        load_run_config(write(tmp_path, 'store = "s"\n[extract]\nsource = "ucf101"\nroot = "d"\n'))
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_run_config(write(tmp_path, "store = \n"))
    with pytest.raises(ConfigError, match=r"\[extract\] needs root"):
        load_run_config(write(tmp_path, 'store = "s"\n[extract]\nsource = "ucf101"\n[teacher]\nname = "x"\n'))


def test_demo_runs_the_example_configuration():
    """`condi-pipe demo` and `condi-pipe run --config recipes/embedded.toml` describe the same run."""
    example = load_run_config(ROOT / "recipes" / "embedded.toml")
    demo = demo_config(ROOT / "demo_store")
    strip = dict(store=None, source_file=None)
    assert dataclasses.replace(example, **strip) == dataclasses.replace(demo, **strip)
    assert example.store == demo.store


def test_ucf101_example_parses():
    config = load_run_config(ROOT / "examples" / "ucf101_resnext101.toml")
    assert config.teacher.name == "resnext101_3d" and config.extract.split == [1, 2, 3] and config.distill.epochs == 50
