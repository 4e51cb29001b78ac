"""A pretrained student from a run config, through ``condi-pipe run``: the paper fine-tunes Kinetics-pretrained
students on UCF-101 and SSv2 (lr 0.01), so ``[distill] weights`` / ``reset_head`` must reach distill.

The checkpoint is written the way the Resource-Efficient-3D-CNNs release saves its students (``{'arch',
'state_dict'}`` with DataParallel's ``module.`` prefix and a 600-class head). The run trains one epoch at a
learning rate too small to move the weights, so the student it stores must still be the checkpoint's backbone
(and not a fresh initialisation), with a new 10-class head. The teacher is the cheapest registered one and each
epoch sees one clip per video: neither matters to what reaches distill.
"""

from __future__ import annotations

import textwrap

import pytest
import torch
from click.testing import CliRunner

from condi_pipe.cli import main as cli
from condi_pipe.models.registry import build_model
from condi_pipe.storage.store import Store
from condi_pipe.storage.training_artifacts import read_meta, read_state_dict, student_folder

STUDENT, WIDTH = "shufflenetv2_3d", 0.25
TEACHER = "resnet10_3d_motion_skim"


@pytest.mark.slow
def test_run_fine_tunes_the_pretrained_student_named_in_the_config(tmp_path, synth_root):
    torch.manual_seed(123)
    kinetics = build_model(STUDENT, num_classes=600, width=WIDTH)
    checkpoint = tmp_path / "kinetics_shufflenetv2_0.25x_RGB_16_best.pth"
    torch.save({"arch": "shufflenetv2", "state_dict": {f"module.{k}": v for k, v in kinetics.state_dict().items()}},
               checkpoint)
    torch.manual_seed(7)
    teacher_file = tmp_path / "teacher.pt"
    torch.save(build_model(TEACHER, num_classes=10).state_dict(), teacher_file)
    config = tmp_path / "run.toml"
    config.write_text(textwrap.dedent(f"""
        store = "store"
        [extract]
        source = "ucf101"
        root = "{synth_root}"
        workers = 0
        [teacher]
        name = "{TEACHER}"
        weights = "teacher.pt"
        workers = 0
        [distill]
        student = "{STUDENT}"
        width = {WIDTH}
        weights = "{checkpoint.name}"
        reset_head = true
        losses = ["condi-sr"]
        epochs = 1
        clips_per_video = 1
        batch_size = 16
        lr = 1e-12
        momentum = 0.0
        weight_decay = 0.0
        val_fraction = 0.0
        [time_models]
        repeats = 1
        [report]
        tables = ["3"]
        k = [1]
        plots = false
        out_dir = "reports"
    """))
    result = CliRunner().invoke(cli, ["run", "--config", str(config), "--quiet"])
    assert result.exit_code == 0, result.output

    store = Store(str(tmp_path / "store"))
    run = f"condi-sr-{STUDENT}-{WIDTH}"
    meta = read_meta(store, student_folder(run))
    assert meta["config"]["weights"] == str(checkpoint) and meta["config"]["reset_head"] is True
    stored = read_state_dict(store, student_folder(run))
    pretrained = kinetics.state_dict()
    convs = [k for k, v in stored.items() if v.ndim == 5]
    assert convs, "the student has 3D convolutions"
    for key in convs:  # lr 1e-12: the backbone is the checkpoint's, to float precision
        torch.testing.assert_close(stored[key], pretrained[key], rtol=0, atol=1e-6, msg=key)
    torch.manual_seed(0)
    fresh = build_model(STUDENT, num_classes=10, width=WIDTH).state_dict()
    assert not torch.allclose(stored[convs[0]], fresh[convs[0]]), "the student was not initialised from scratch"
    replaced = [k for k in stored if stored[k].shape != pretrained[k].shape]
    assert replaced and all(stored[k].shape[0] == 10 and pretrained[k].shape[0] == 600 for k in replaced), \
        f"only the 600-class head is replaced, by the store's 10 classes: {replaced}"
    assert (tmp_path / "reports" / "table-3.md").is_file()
