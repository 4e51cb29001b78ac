"""The example run configs are the paper's protocol: each parses, and each value the paper gives matches it.

The paper's values are written out below once, each with the sentence of ``docs/method.md`` (the project's
summary of the paper) that states it; a test checks that the sentence is still there, so the table cannot drift
from the source it cites. Values the paper leaves open are not checked (the files mark them "decision").
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import tomllib

from condi_pipe.app.run_config import load_run_config
from condi_pipe.models.registry import build_model, count_parameters

REPO = Path(__file__).resolve().parents[3]
EXAMPLES = REPO / "examples"
METHOD = REPO / "docs" / "method.md"

# (value, the method.md sentence that gives it)
TAU = (0.9, "tau = 0.9 (larger did not converge)")
LAMBDAS = ({0.5, 1.5, 2.0}, "lambda in {0.5, 1.5, 2.0}")
MU = (1.5, "mu = 1.5")
FINE_TUNING_LR = (0.01, "Learning rate: 0.01 when fine-tuning, 0.1 from scratch.")
SCRATCH_LR = (0.1, "Learning rate: 0.01 when fine-tuning, 0.1 from scratch.")
CONF_DECAY = (5.0, "The confidence head's LR is divided by 5 every epoch")
NET_DECAY = (1.25, "the rest of the network's by 1.25 every epoch")
EPOCHS_50 = (50, "Epochs: 50 (UCF-101, SSv2), 60 (Kinetics).")
EPOCHS_60 = (60, "Epochs: 50 (UCF-101, SSv2), 60 (Kinetics).")
TEACHER = ("resnext101_3d", "Teachers: 3D ResNeXt-101 (cardinality 32")
TABLE3_K = ([1, 3, 5, 7], "| | 3 | 1.9s (90.12)")
UCF_KS = ([0, 1, 3, 5], "UCF-101 K=5: K_s 0 / 1 / 3 / 5")
KINETICS_KS = ([0, 1, 4, 7], "Kinetics-600 K=7: K_s 0 / 1 / 4 / 7")

# student name, width -> the published parameter count (600-class head) and its method.md row
STUDENT_PARAMS = {
    ("shufflenetv2_3d", 0.25): (0.83e6, "| 3D ShuffleNetV2 | 0.25x / 1.0x / 1.5x / 2.0x | 116 / 195 / 291 / 438 | 0.83M"),
    ("mobilenetv2_3d", 0.2): (0.96e6, "| 3D MobileNetV2 | 0.2x / 0.45x / 0.7x / 1.0x | 63 / 177 / 325 / 561 | 0.96M"),
}

COMMON = {"teacher.name": TEACHER, "distill.tau": TAU, "distill.lam": LAMBDAS, "distill.mu": MU,
          "distill.conf_lr_decay": CONF_DECAY, "distill.lr_decay": NET_DECAY, "report.k": TABLE3_K}
PAPER = {
    "ucf101_resnext101.toml": {**COMMON, "extract.source": ("ucf101", "UCF-101"), "distill.epochs": EPOCHS_50,
                               "distill.lr": FINE_TUNING_LR, "report.ks": UCF_KS},
    "ucf101_resnext101_mobilenetv2.toml": {**COMMON, "extract.source": ("ucf101", "UCF-101"),
                                           "distill.epochs": EPOCHS_50, "distill.lr": FINE_TUNING_LR,
                                           "report.ks": UCF_KS},
    "kinetics600_resnext101.toml": {**COMMON, "extract.source": ("kinetics", "Kinetics-600"),
                                    "distill.epochs": EPOCHS_60, "distill.lr": SCRATCH_LR, "report.ks": KINETICS_KS},
    "ssv2_resnext101.toml": {**COMMON, "extract.source": ("ssv2", "SSv2"), "distill.epochs": EPOCHS_50,
                             "distill.lr": FINE_TUNING_LR},
}


def _value(config, dotted: str):
    section, key = dotted.split(".")
    return getattr(getattr(config, section), key)


def test_every_example_is_listed_here_or_is_on_the_embedded_benchmark():
    names = {p.name for p in EXAMPLES.glob("*.toml")}
    assert {n for n in names if not n.startswith("embedded")} == set(PAPER)


@pytest.mark.parametrize("name", sorted(p.name for p in EXAMPLES.glob("*.toml")))
def test_every_example_parses(name):
    config = load_run_config(EXAMPLES / name)
    assert config.distill.losses, name


@pytest.mark.parametrize("name", sorted(PAPER))
def test_example_values_are_the_papers(name):
    config = load_run_config(EXAMPLES / name)
    for dotted, (expected, _) in PAPER[name].items():
        value = _value(config, dotted)
        if isinstance(expected, set):
            assert value in expected, f"{name}: {dotted} = {value!r}, the paper's choices are {sorted(expected)}"
        else:
            assert value == expected, f"{name}: {dotted} = {value!r}, the paper's is {expected!r}"


@pytest.mark.parametrize("name", sorted(PAPER))
def test_fine_tuning_and_learning_rate_go_together(name):
    """method.md: 0.01 when fine-tuning a pretrained student, 0.1 from scratch."""
    distill = load_run_config(EXAMPLES / name).distill
    assert distill.lr == (FINE_TUNING_LR[0] if distill.weights else SCRATCH_LR[0]), name
    assert distill.reset_head == bool(distill.weights), f"{name}: a Kinetics head must be replaced"


def test_the_cited_sentences_are_in_method_md():
    text = METHOD.read_text()
    cited = {source for values in PAPER.values() for _, source in values.values()}
    cited |= {source for _, source in STUDENT_PARAMS.values()}
    missing = [source for source in sorted(cited) if source not in text]
    assert not missing, f"{METHOD}: no longer says {missing}"


@pytest.mark.parametrize("name", sorted(PAPER))
def test_every_paper_value_is_annotated_with_its_source(name):
    """Each key whose value the paper gives carries a comment naming method.md (or says it is a decision)."""
    lines = (EXAMPLES / name).read_text().splitlines()
    section = None
    annotated: dict[str, str] = {}
    for line in lines:
        header = re.match(r"^\[(\w+)\]", line)
        if header:
            section = header.group(1)
            continue
        key = re.match(r"^(\w+)\s*=", line)
        if key and section:
            annotated[f"{section}.{key.group(1)}"] = line.partition("#")[2]
    for dotted in PAPER[name]:
        if dotted.startswith("extract.") or dotted not in annotated:
            continue
        assert "method.md" in annotated[dotted], f"{name}: {dotted} has no method.md annotation"
    for dotted in ("distill.momentum", "distill.batch_size"):
        if dotted in annotated:
            assert "decision" in annotated[dotted], f"{name}: {dotted} is not the paper's: say it is a decision"


@pytest.mark.parametrize("name", sorted(PAPER))
def test_the_student_is_the_papers_at_its_published_size(name):
    distill = load_run_config(EXAMPLES / name).distill
    key = (distill.student, distill.width)
    assert key in STUDENT_PARAMS, f"{name}: {key} is not a student of the paper"
    params = count_parameters(build_model(distill.student, num_classes=600, width=distill.width))
    assert params == pytest.approx(STUDENT_PARAMS[key][0], rel=0.01)


def test_every_example_file_parses_as_plain_toml_with_absolute_data_paths():
    """A user edits the data paths: they are absolute in the paper's examples, so none resolves into the repo."""
    for name in PAPER:
        raw = tomllib.loads((EXAMPLES / name).read_text())
        assert raw["store"].startswith("/"), name
        assert raw["extract"]["root"].startswith("/"), name


def test_the_ssv2_sweep_is_the_papers_grid_around_its_values():
    """The paper grid-searched lr, lambda, mu and tau: the grid holds lambda's published set and, for each of the
    other three, the value the paper settled on (so the search can find it)."""
    sweep = load_run_config(EXAMPLES / "ssv2_resnext101.toml").sweep
    assert sweep.sampler == "grid" and sweep.metric.startswith("eval_"), "chosen on validation, never on test"
    assert set(sweep.space["lam"]) == LAMBDAS[0]
    for key, (value, _) in (("tau", TAU), ("mu", MU), ("lr", FINE_TUNING_LR)):
        assert value in sweep.space[key], f"the grid over {key} misses the paper's {value}"
