"""The sweep table: every trial of every ``condi-pipe sweep`` in the store, with its parameters, validation metric
and state (read from the study's database by ``storage.sweep_study``); its figure, the metric per epoch of each
trial."""

from __future__ import annotations

from condi_pipe.report.registry import TableRequest, register_table
from condi_pipe.report.render import number_cell
from condi_pipe.report.results import ReportRow, ReportTable
from condi_pipe.storage.sweep_study import read_sweeps


@register_table("sweep", summary="the trials of each hyperparameter sweep (condi-pipe sweep)", uses_k=False,
                uses_methods=False, methods_refusal=" (it lists the sweeps' trials)", side_by_side=False,
                plot="sweep")
def sweep_table(request: TableRequest) -> ReportTable:
    """One line per trial: sweep, trial number, each parameter, the kept student's validation metric (pruned: the
    last epoch's), the best epoch's, epochs run, state; the best COMPLETE trial of each sweep is starred."""
    sweeps = read_sweeps(request.inputs.store)
    params = sorted({name for view in sweeps for trial in view.trials for name in trial.params})
    columns = ("sweep", "trial", *params, "metric", "value", "best epoch", "epochs", "state")
    rows, cells, series = [], [], {}
    for view in sweeps:
        for trial in sorted(view.trials, key=lambda t: t.number):
            best = trial.number == view.best
            rows.append(ReportRow(f"sweep:{view.name}", None, None, None, None, {
                "sweep": view.name, "trial": trial.number, "params": trial.params, "metric": view.metric,
                "direction": view.direction, "value": trial.value, "best_epoch_value": trial.best_epoch_value,
                "epochs": trial.epochs, "state": trial.state, "run": trial.run, "best": best}))
            cells.append((view.name, f"{trial.number}{' *' if best else ''}",
                          *(f"{trial.params[p]:g}" if p in trial.params else "" for p in params), view.metric,
                          number_cell(trial.value), number_cell(trial.best_epoch_value), str(trial.epochs),
                          trial.state.lower()))
            series[f"{view.name} #{trial.number}"] = {"epoch": [e for e, _ in trial.curve],
                                                      "value": [v for _, v in trial.curve], "metric": view.metric}
    notes = list(request.notes)
    if not sweeps:
        notes.append(f"{request.inputs.store.url}: no sweep recorded (run `condi-pipe sweep --config FILE.toml`).")
    footer = ("value: the kept student's validation metric (the validation part carved from train; the test split "
              "chooses nothing); pruned trials: their last reported epoch's. * the best complete trial of its "
              "sweep, written to sweeps/<name>/best.toml.", *notes)
    return ReportTable("sweep", "Hyperparameter sweeps: trials on the validation part", columns, tuple(cells),
                       tuple(rows), footer, series)
