"""`condi-pipe demo` end to end at a small size: two seeds, one store each, and Table 3 over the seeds."""

from __future__ import annotations

import json

import numpy as np
import pytest

from condi_pipe.recipes.demo import DEMO_LENGTH_PROFILE, DEMO_LOSSES, DEMO_TRAIN_SHARE, run_demo_seeds
from condi_pipe.video.synth import read_synth_config

SEEDS = (3, 4)
VIDEOS = 40  # 4 groups per class: 1 test, 3 train, of which the train share writes 2


@pytest.mark.slow
def test_demo_on_two_seeds_writes_each_seeds_tables_and_their_mean(tmp_path):
    lines = []
    rendered = run_demo_seeds(tmp_path / "demo", SEEDS, videos=VIDEOS, quiet=True, log=lines.append)
    per_seed = {}
    for seed in SEEDS:
        store = tmp_path / "demo" / f"seed-{seed}"
        config = read_synth_config(store / "synth")
        assert (config.seed, config.videos, config.length_profile, config.train_share) == (
            seed, VIDEOS, DEMO_LENGTH_PROFILE, DEMO_TRAIN_SHARE)
        assert sorted(p.name for p in (store / "students").iterdir()) == sorted(
            f"{loss}-resnet10_3d_motion_skim" for loss in DEMO_LOSSES)
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
    assert "ConDi-SR+ctx" in rendered and "±" in rendered
    assert any("tables over seeds 3, 4" in line for line in lines)
