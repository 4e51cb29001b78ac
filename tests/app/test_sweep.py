"""`condi-pipe sweep`: the [sweep] section's checks, trial parameters that depend only on the trial number, a sweep
in-process (finished trials never re-run, the best run config, the report's sweep table). Killing a sweep and
two processes on one study: tests/system/faults/test_sweep_kill.py."""

from __future__ import annotations

import shutil
import textwrap
from pathlib import Path

import pytest
from click.testing import CliRunner

from condi_pipe.app.run_config import ConfigError, load_run_config
from condi_pipe.app.sweep_config import SweepSection, grid_points
from condi_pipe.cli import main as cli

BASE = """
store = "store"
[extract]
source = "ucf101"
root = "data"
clips_per_shard = 8
[teacher]
name = "resnet10_3d_small"
[distill]
student = "shufflenetv2_3d"
width = 0.25
epochs = 1
batch_size = 8
clips_per_video = 1
threads = 1
"""
SWEEP = """
[sweep]
name = "lr"
[sweep.space]
lr = [0.01, 0.3]
"""


def write(folder: Path, text: str) -> Path:
    path = folder / "sweep.toml"
    path.write_text(textwrap.dedent(text))
    return path


@pytest.mark.parametrize("sweep, message", [
    ('[sweep]\nname = "a"\n', r"\[sweep\].space: give at least one parameter"),
    ('[sweep]\nname = "a"\n[sweep.space]\nepochs = [1, 2]\n', r"\[sweep\].space.epochs: not a numeric \[distill\] key"),
    ('[sweep]\nname = "a"\n[sweep.space]\nlr = [0.1, -0.1]\n', r"\[sweep\].space.lr must be > 0"),
    ('[sweep]\nname = "a"\n[sweep.space]\nlr = {low = 0.01, high = 0.1}\n',
     r"space.lr: the grid sampler needs a list of values"),
    ('[sweep]\nname = "a"\nsampler = "tpe"\n[sweep.space]\nlr = {low = 0.1, high = 0.01}\n',
     r"space.lr: low must be below high"),
    ('[sweep]\nname = "a"\ntrials = 5\n[sweep.space]\nlr = [0.01, 0.1]\n', r"trials: 5 is more than the grid's 2"),
    ('[sweep]\nname = "a"\nmetric = "test_auroc"\n[sweep.space]\nlr = [0.1]\n', r"\[sweep\].metric must be one of"),
    ('[sweep]\nname = "a"\nloss = "uniform-k"\n[sweep.space]\nlr = [0.1]\n',
     r"metric: eval_auroc is not recorded for the video-level loss uniform-k"),
    ('[sweep]\nname = "a b"\n[sweep.space]\nlr = [0.1]\n', r"\[sweep\].name must be letters"),
    ('[sweep]\nname = "a"\nstorage = "study.db"\n[sweep.space]\nlr = [0.1]\n', r"storage must be a SQLAlchemy URL"),
    ('[sweep]\nname = "a"\n[sweep.space]\nlr = [0.1]\n[distill]\nval_fraction = 0.0\n',
     r"\[sweep\] searches on the validation part .* val_fraction must be > 0"),
])
def test_bad_sweep_section_is_one_line_naming_the_file_and_key(tmp_path, sweep, message):
    base = BASE.replace("[distill]\n", "[distill]\nval_fraction = 0.0\n") if "val_fraction" in sweep else BASE
    sweep = sweep.split("[distill]")[0]
    path = write(tmp_path, base + sweep)
    with pytest.raises(ConfigError, match=message) as info:
        load_run_config(path)
    assert str(path) in str(info.value) and "\n" not in str(info.value)
    result = CliRunner().invoke(cli, ["sweep", "--config", str(path)])
    assert result.exit_code == 2 and result.stderr.startswith("error: ") and str(path) in result.stderr


def test_grid_order_is_seeded_and_covers_every_point():
    space = {"lr": [0.01, 0.1, 0.3], "mu": [0.5, 1.0], "tau": [0.9]}
    points = grid_points(SweepSection("a", space, seed=3))
    assert points == grid_points(SweepSection("a", space, seed=3))
    assert sorted((p["lr"], p["mu"], p["tau"]) for p in points) == [
        (lr, mu, 0.9) for lr in (0.01, 0.1, 0.3) for mu in (0.5, 1.0)]
    assert [tuple(p.values()) for p in points] != [tuple(p.values()) for p in grid_points(SweepSection("a", space))]
    assert SweepSection("a", space).trial_count == 6 and SweepSection("a", space, sampler="tpe").trial_count == 20


def test_tpe_proposals_depend_only_on_the_trial_number_and_the_finished_trials(tmp_path):
    """Two studies, one asked in a single run and one stopped after 4 trials and continued by a new sampler
    object (a resumed process), propose the same parameters for every trial."""
    import optuna

    from condi_pipe.app.sweep import _samplers, _suggest

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    space = {"lr": {"low": 0.001, "high": 1.0, "log": True}, "mu": {"low": 0.0, "high": 2.0}, "k": [1, 2, 3]}

    def ask(study, count):
        for _ in range(count):
            trial = study.ask()
            params = {name: _suggest(trial, name, space[name]) for name in sorted(space)}
            study.tell(trial, -(params["lr"] - 0.1) ** 2 - (params["mu"] - 1) ** 2 + params["k"])

    def new_study(name):
        _, tpe = _samplers()
        return optuna.create_study(storage=f"sqlite:///{tmp_path}/s.db", study_name=name, direction="maximize",
                                   sampler=tpe(seed=5, startup=3), load_if_exists=True)

    ask(new_study("one"), 8)
    ask(new_study("resumed"), 4)
    ask(new_study("resumed"), 4)
    params = {name: [t.params for t in new_study(name).get_trials()] for name in ("one", "resumed")}
    assert params["one"] == params["resumed"] and len({p["lr"] for p in params["one"]}) == 8


@pytest.fixture(scope="module")
def swept(validation_teacher_store, tmp_path_factory):
    """A 2-trial grid sweep of lr, in-process, on a copy of the validation store; (config, summary, log)."""
    from condi_pipe.app.sweep import sweep

    folder = tmp_path_factory.mktemp("sweep")
    shutil.copytree(validation_teacher_store, folder / "store")
    (folder / "data").symlink_to(validation_teacher_store.parent / "data")
    config = load_run_config(write(folder, BASE + SWEEP))
    lines: list[str] = []
    summary = sweep(config, quiet=True, log=lines.append)
    return config, summary, lines


def test_a_sweep_runs_its_trials_on_validation_and_writes_the_best_run_config(swept):
    from condi_pipe.storage import training_artifacts as artifacts
    from condi_pipe.storage.store import Store
    from condi_pipe.storage.sweep_study import read_sweeps

    config, summary, lines = swept
    store = Store(config.store)
    (view,) = read_sweeps(store)
    assert [(t.number, t.state, t.run) for t in view.trials] == [(0, "COMPLETE", "sweep-lr-t000"),
                                                                  (1, "COMPLETE", "sweep-lr-t001")]
    assert sorted(t.params["lr"] for t in view.trials) == [0.01, 0.3]
    for trial in view.trials:  # the trial's value is its kept student's validation AUROC, its lr the trial's
        meta = artifacts.read_meta(store, artifacts.student_folder(trial.run))
        assert meta["kept"]["eval_auroc"] == pytest.approx(trial.value, abs=1e-6)
        assert meta["config"]["train"]["lr"] == trial.params["lr"]
        assert meta["selection"]["split"] == "validation" and trial.curve == [(1, trial.value)]
    values = {t.number: t.value for t in view.trials}
    assert view.best == max(values, key=values.get) == summary["best"]["trial"]
    best = load_run_config(summary["best_config"])
    winner = view.trials[view.best].params["lr"]
    assert best.distill.lr == winner and best.distill.losses == ["condi-sr"] and best.sweep is None
    assert best.store == config.store and best.distill.width == 0.25 and best.extract == config.extract


def test_a_finished_sweep_re_run_runs_nothing_and_says_so(swept):
    from condi_pipe.app.sweep import sweep
    from condi_pipe.storage.store import Store
    from condi_pipe.storage.sweep_study import read_sweeps

    config, summary, _ = swept
    before = read_sweeps(Store(config.store))
    lines: list[str] = []
    again = sweep(config, quiet=True, log=lines.append)
    assert again["trials_run"] == 0 and again["best"] == summary["best"]
    assert any("all 2 trials already finished; nothing to do" in line for line in lines), lines
    assert read_sweeps(Store(config.store))[0].trials == before[0].trials


def test_report_sweep_table_and_figure(swept):
    from condi_pipe.report import build_report, plot_report, render

    config, summary, _ = swept
    report = build_report(config.store, "sweep")
    rows = [row.extra for row in report.rows]
    assert [(r["trial"], r["state"], r["epochs"], r["best"]) for r in rows] == [
        (0, "COMPLETE", 1, summary["best"]["trial"] == 0), (1, "COMPLETE", 1, summary["best"]["trial"] == 1)]
    text = render(report, "md")
    best_cell = f"| {summary['best']['trial']} *"
    assert best_cell in text and "| lr " in text and f"{summary['best']['value']:.4f}" in text
    fig = plot_report(report, str(Path(config.store).parent / "sweep.png"))
    drawn = {line.get_label(): list(line.get_ydata()) for line in fig.axes[0].get_lines()}
    assert drawn == {f"lr #{r['trial']}": [r["value"]] for r in rows}
    with pytest.raises(ValueError, match="methods do not apply to the sweep table"):
        build_report(config.store, "sweep", methods="condi-sr")


def test_a_sweep_with_another_search_or_base_config_under_the_same_name_is_refused(swept):
    import dataclasses

    from condi_pipe.app.sweep import sweep
    from condi_pipe.pipeline.stage import StageError

    config, summary, _ = swept
    other_space = dataclasses.replace(config, sweep=dataclasses.replace(config.sweep, space={"lr": [0.01, 0.2]}))
    with pytest.raises(StageError, match=r"sweep 'lr' was started with a different configuration \(\[sweep\] space\)"):
        sweep(other_space, quiet=True, log=lambda message: None)
    other_base = dataclasses.replace(config, distill=dataclasses.replace(config.distill, epochs=2, mu=0.5))
    with pytest.raises(StageError, match=r"\(\[distill\] epochs, \[distill\] mu\); give the new search another"):
        sweep(other_base, quiet=True, log=lambda message: None)
    # how the trials run is not what they are: another thread count joins the same study (and finds it finished)
    runtime = dataclasses.replace(config, distill=dataclasses.replace(config.distill, threads=2))
    assert sweep(runtime, quiet=True, log=lambda message: None)["trials_run"] == 0


def test_the_example_sweep_config_loads():
    config = load_run_config(Path(__file__).resolve().parents[2] / "examples" / "embedded_sweep.toml")
    assert config.sweep.sampler == "tpe" and sorted(config.sweep.space) == ["lam", "lr", "mu", "tau"]
    assert config.sweep.resolved_direction == "maximize" and config.distill.val_fraction > 0


def test_a_sweep_over_several_splits_is_refused_before_anything_runs(tmp_path):
    from condi_pipe.app.sweep import sweep
    from condi_pipe.pipeline.stage import StageError

    config = load_run_config(write(tmp_path, BASE.replace("clips_per_shard = 8", "split = [1, 2]") + SWEEP))
    with pytest.raises(StageError, match=r"sweep searches one split's validation part: set \[extract\] split"):
        sweep(config, quiet=True, log=lambda message: None)
    assert not (tmp_path / "store").exists()
