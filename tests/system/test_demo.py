"""`condi-pipe demo --seeds` end to end at its smallest size (40 videos, the shortest length profile, one epoch
per student; the numbers are not the point): one store per seed, each seed's tables, and Table 3 over the seeds."""

from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner

from condi_pipe.cli import main as cli
from condi_pipe.recipes.demo import DEMO_LOSSES, DEMO_TRAIN_SHARE
from condi_pipe.video.synth import read_synth_config

SEEDS = (3, 4)
VIDEOS = 40  # 4 groups per class: 1 test, 3 train, of which the train share writes 2 (a validation part needs 2)
PROFILE = "legacy"  # the shortest videos (6.9 clips on average; the demo's default is UCF-101's 11.3)
EPOCHS = 1


@pytest.mark.slow
def test_demo_on_two_seeds_writes_each_seeds_tables_and_their_mean(tmp_path):
    result = CliRunner().invoke(cli, ["demo", "--store", str(tmp_path / "demo"), "--seeds", ",".join(map(str, SEEDS)),
                                      "--videos", str(VIDEOS), "--length-profile", PROFILE, "--epochs", str(EPOCHS),
                                      "--quiet"])
    assert result.exit_code == 0, result.output + repr(result.exception)
    per_seed = {}
    for seed in SEEDS:
        store = tmp_path / "demo" / f"seed-{seed}"
        config = read_synth_config(store / "synth")
        assert (config.seed, config.videos, config.length_profile, config.train_share) == (
            seed, VIDEOS, PROFILE, DEMO_TRAIN_SHARE)
        students = sorted(p.name for p in (store / "students").iterdir())
        assert students == sorted(f"{loss}-resnet10_3d_motion_skim" for loss in DEMO_LOSSES)
        for run in students:  # --epochs reached every student
            assert json.loads((store / "students" / run / "meta.json").read_text())["config"]["train"]["epochs"] \
                == EPOCHS
        per_seed[seed] = json.loads((store / "reports" / "table-3.json").read_text())
    combined = json.loads((tmp_path / "demo" / "reports" / "table-3.json").read_text())
    methods = {row["method"] for row in combined}
    assert methods == {row["method"] for row in per_seed[SEEDS[0]]}
    assert {"condi-sr", "condi-sr+context", "equidistant", "bce-conf", "st-ent", "dense"} <= methods
    for row in combined:
        seeds_rows = [next(r for r in per_seed[s] if (r["method"], r["k"]) == (row["method"], row["k"]))
                      for s in SEEDS]
        values = [r["accuracy"] for r in seeds_rows]
        assert row["accuracy_per_fold"] == values
        assert row["accuracy"] == pytest.approx(np.mean(values))
    assert "ConDi-SR+ctx" in result.stdout and "±" in result.stdout
    assert "tables over seeds 3, 4" in result.stdout
