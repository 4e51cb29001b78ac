"""The commands around the stages: `synth` writes decodable videos and its config, and `models` lists every
registered architecture and width with its fields. (`pretrain-teacher` has no size options: its recipe runs at a
tiny size in tests/stages/test_pretrained.py, whose written weights `teacher-cache --weights` accepts there.)"""

from __future__ import annotations

import json

from click.testing import CliRunner

from condi_pipe.cli import main as cli


def test_synth_writes_decodable_videos_in_the_ucf101_layout_and_its_config(tmp_path):
    from condi_pipe.video.decode import DecodeOptions, decode_video
    from condi_pipe.video.synth import read_synth_config
    from condi_pipe.video.synth.config import CLASSES

    root = tmp_path / "data"
    result = CliRunner().invoke(cli, ["synth", "--out", str(root), "--videos", "10", "--seed", "3", "--workers", "1",
                                      "--length-profile", "legacy"])
    assert result.exit_code == 0, result.output
    config = read_synth_config(root)
    assert (config.videos, config.seed, config.length_profile) == (10, 3, "legacy")
    listed = [line.split()[0] for name in ("trainlist01.txt", "testlist01.txt")
              for line in (root / name).read_text().splitlines() if line.strip()]
    videos = sorted(root.glob("*/v_*.mp4"))
    assert sorted(str(p.relative_to(root)) for p in videos) == sorted(listed) and len(videos) == 10
    assert {p.parent.name for p in videos} <= set(CLASSES)
    clips = 0
    for path in videos:  # real ffmpeg decoding of every file
        decoded = decode_video(str(path), DecodeOptions())
        assert decoded.clips.shape[1:] == (16, 112, 112, 3) and decoded.clips.any()
        clips += len(decoded.clips)
    assert f"synth: wrote 10 videos ({clips} clips, profile legacy) to {root} (seed 3)" in result.output


def test_models_lists_every_registered_architecture_and_width_with_its_fields(monkeypatch):
    import functools

    import condi_pipe.models
    from condi_pipe.models import build_model, list_models

    # the table and its JSON are the same rows: measure the FLOPs of every model once, not once per form
    monkeypatch.setattr(condi_pipe.models, "model_table", functools.cache(condi_pipe.models.model_table))
    as_json = CliRunner().invoke(cli, ["models", "--num-classes", "10", "--json"])
    assert as_json.exit_code == 0, as_json.output
    rows = json.loads(as_json.output)
    expected = [(spec.name, width, spec.role) for spec in list_models() for width in spec.widths or (None,)]
    assert [(r["name"], r["width"], r["role"]) for r in rows] == expected
    assert all(r["params"] > 0 and r["flops"] > 0 for r in rows)
    # the parameters are the model's own, its confidence head aside (counted on a real build of one student)
    row = next(r for r in rows if r["name"] == "shufflenetv2_3d" and r["width"] == 0.25)
    model = build_model("shufflenetv2_3d", 10, 0.25)
    assert row["params"] + row["confidence_head_params"] == sum(p.numel() for p in model.parameters())

    table = CliRunner().invoke(cli, ["models", "--num-classes", "10"])
    assert table.exit_code == 0, table.output
    lines = table.output.splitlines()
    assert lines[0].split() == ["name", "width", "role", "params", "GFLOPs"]
    for r, line in zip(rows, lines[1:]):
        width = "-" if r["width"] is None else f"{r['width']:g}"
        assert line.split() == [r["name"], width, r["role"], f"{r['params']:,}", f"{r['flops'] / 1e9:.2f}"]
    assert lines[len(rows) + 1].startswith("(10-class heads; FLOPs = 2 x multiply-accumulates")

