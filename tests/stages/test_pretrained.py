"""The shipped teacher and the skim student: how `pretrained` resolves, the command that makes the shipped weights,
the refusal of stores whose clips it trained on, and the student's reduced input (FLOPs are counted at the size the
network really reads)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from condi_pipe.models import build_model, measure_flops, model_table
from condi_pipe.models.pretrained import (
    PRETRAINED,
    SHIPPED_WEIGHTS,
    model_card,
    pretrained_weights_path,
    resolve_weights,
)
from condi_pipe.video.synth.pretraining_corpus import PRETRAIN_SEED, PRETRAIN_VIDEOS


def test_pretrained_resolves_to_the_shipped_file_and_other_names_pass_through():
    path = pretrained_weights_path("resnet10_3d_motion")
    assert path.name == SHIPPED_WEIGHTS["resnet10_3d_motion"] and path.is_file()
    assert resolve_weights("resnet10_3d_motion", PRETRAINED) == str(path)
    assert resolve_weights("resnet10_3d_motion", "/some/file.pt") == "/some/file.pt"
    assert resolve_weights("resnet10_3d_motion", None) is None
    with pytest.raises(ValueError, match="no pretrained weights ship for 'r3d_18'"):
        resolve_weights("r3d_18", PRETRAINED)


def test_shipped_weights_load_and_match_their_card():
    from condi_pipe.models import load_weights
    from condi_pipe.models.checkpoints import file_sha256

    card = model_card("resnet10_3d_motion")
    path = pretrained_weights_path("resnet10_3d_motion")
    assert card["weights_sha256"] == file_sha256(path)
    model = build_model("resnet10_3d_motion", 10)
    load_weights(model, str(path))
    # the card's numbers are the held-out split's, from more than a handful of clips
    held_out = card["held_out"]
    assert held_out["clips"] >= 1000 and 0.0 <= held_out["clip_accuracy"] <= 1.0
    assert sum(k["clips"] for k in held_out["by_kind"].values()) == held_out["clips"]
    assert card["recipe"]["seed"] != 0  # never the demo's default seed


def test_skim_student_reads_half_the_frames_at_half_the_size():
    model = build_model("resnet10_3d_motion_skim", 10).eval()
    clips = torch.randint(0, 256, (2, 16, 112, 112, 3), dtype=torch.uint8)
    x = model.preprocess(clips)
    assert tuple(x.shape) == (2, 3, 8, 56, 56) == model.network_input_shape((2, 3, 16, 112, 112))
    # every second frame, 2x2 pixel means of the normalised values
    full = build_model("resnet10_3d_motion_tiny", 10).preprocess(clips)
    expected = full[:, :, ::2].reshape(2, 3, 8, 56, 2, 56, 2).mean(dim=(4, 6))
    torch.testing.assert_close(x, expected)
    with torch.inference_mode():
        out = model(x)
    assert out.logits.shape == (2, 10) and out.confidence.shape == (2,)


def test_skim_student_costs_under_a_twentieth_of_the_teacher_in_flops():
    rows = {r["name"]: r for r in model_table(10, ["resnet10_3d_motion", "resnet10_3d_motion_skim"])}
    ratio = rows["resnet10_3d_motion"]["flops"] / rows["resnet10_3d_motion_skim"]["flops"]
    assert ratio >= 20, ratio
    # counted at the reduced input: a forward pass on the reduced shape gives the same number
    with torch.device("meta"):
        model = build_model("resnet10_3d_motion_skim", 10)
    assert measure_flops(model) == rows["resnet10_3d_motion_skim"]["flops"]


@pytest.mark.parametrize("corpus_video", [0, 1, PRETRAIN_VIDEOS - 1])
def test_demo_refuses_every_seed_sharing_the_pretraining_corpus_streams(tmp_path, monkeypatch, corpus_video):
    """Not only the corpus's seed: numpy seeds ``PRETRAIN_SEED + j * 2**32`` with corpus video j's streams."""
    import condi_pipe.app.runner
    import condi_pipe.video.synth
    from condi_pipe.recipes.demo import run_demo

    def past_the_check(*args, **kwargs):
        raise AssertionError("the demo went on past its seed check")

    monkeypatch.setattr(condi_pipe.video.synth, "generate_benchmark", past_the_check)
    monkeypatch.setattr(condi_pipe.app.runner, "run_pipeline", past_the_check)
    seed = PRETRAIN_SEED + corpus_video * 2**32
    with pytest.raises(ValueError, match=f"seed {seed} shares random streams with the pretrained teacher's training "
                                         f"corpus.*corpus video {corpus_video}'s.*pick another --seed"):
        run_demo(tmp_path / "store", videos=20, seed=seed, log=lambda m: None)
    assert not (tmp_path / "store").exists()


def _generated_store(folder, seed: int):
    """A 10-video benchmark generated with ``seed`` (``folder/data``), extracted into ``folder/store``."""
    from condi_pipe.pipeline.executor import ExecutorOptions
    from condi_pipe.stages.extract import ExtractRequest, extract
    from condi_pipe.storage.store import Store
    from condi_pipe.video.synth import generate_benchmark

    generate_benchmark(folder / "data", videos=10, seed=seed)
    store = Store(str(folder / "store"))
    extract(store, ExtractRequest("ucf101", str(folder / "data"), clips_per_shard=8), ExecutorOptions(workers=0),
            quiet=True, log=lambda m: None)
    return store


def test_teacher_cache_refuses_the_shipped_teacher_on_a_store_sharing_its_corpus_streams(tmp_path, fingerprint):
    from condi_pipe.compute.clip_inference import ModelRef
    from condi_pipe.pipeline.executor import ExecutorOptions
    from condi_pipe.pipeline.stage import StageError
    from condi_pipe.stages.teacher_cache import (
        TeacherCacheRequest,
        TeacherChoice,
        refuse_pretraining_clips,
        teacher_cache,
    )

    seed = PRETRAIN_SEED + 2**32  # not the corpus's seed, but its video 0's plan stream is corpus video 1's
    store = _generated_store(tmp_path, seed)
    before = fingerprint(tmp_path / "store")
    request = TeacherCacheRequest(TeacherChoice("resnet10_3d_motion", weights=PRETRAINED))
    with pytest.raises(StageError, match=f"refusing the shipped teacher: the store's videos come from `condi-pipe "
                                         f"synth --seed {seed} --videos 10`.*shares random streams with the pretrained "
                                         "teacher's training corpus.*in-sample; generate the benchmark with another "
                                         "--seed") as refused:
        teacher_cache(store, request, ExecutorOptions(workers=0), quiet=True, log=lambda m: None)
    assert "\n" not in str(refused.value)
    assert fingerprint(tmp_path / "store") == before  # no cache, no record, not even a staging folder

    # other weights on that store, and the shipped ones on a store of a real dataset (no synth.json), pass
    refuse_pretraining_clips(store, ModelRef("resnet10_3d_motion", 10, weights_path=str(tmp_path / "mine.pt")))
    (tmp_path / "data" / "synth.json").unlink()
    refuse_pretraining_clips(store, request.resolved(store).teacher)


def test_teacher_cache_calls_the_shipped_teachers_z_labels_honest(tmp_path, monkeypatch):
    """A store at the corpus's size edge (seed PRETRAIN_SEED + PRETRAIN_VIDEOS * 2**32 would need a corpus video
    PRETRAIN_VIDEOS to share a stream) is cached, and the stage's last line names the labels as what they are. Small
    random weights stand in for the shipped file (the same path through the stage, in a fraction of the time)."""
    import condi_pipe.stages.teacher_cache as stage
    from condi_pipe.compute.clip_inference import ModelRef
    from condi_pipe.compute.torch_runtime import RuntimeOptions
    from condi_pipe.pipeline.executor import ExecutorOptions

    store = _generated_store(tmp_path, PRETRAIN_SEED + PRETRAIN_VIDEOS * 2**32)
    torch.manual_seed(0)
    weights = tmp_path / "stand-in.pt"
    torch.save(build_model("resnet10_3d_small", 10).state_dict(), weights)
    monkeypatch.setattr(stage, "is_shipped", lambda path: path == str(weights))
    monkeypatch.setattr(stage, "LATENCY_BATCHES", (1,))  # the latency curve is most of the time, and not tested here
    messages: list[str] = []
    request = stage.TeacherCacheRequest(ModelRef("resnet10_3d_small", 10, weights_path=str(weights)),
                                        RuntimeOptions(threads=2, layout="channels_last_3d"))  # nothing to time
    stage.teacher_cache(store, request, ExecutorOptions(workers=0), quiet=True, log=messages.append)
    last = messages[-1]
    assert last.startswith("teacher-cache resnet10_3d_small: ") and "in-sample" not in last
    assert last.endswith("honest z labels (shipped pretrained weights, which never saw these clips)")


@pytest.mark.slow
def test_pretrain_command_writes_a_card_and_weights_teacher_cache_accepts(tmp_path):
    """The recipe on a tiny corpus: a card whose held-out accuracy is recomputed here from the teacher cache and
    the generator's sidecar, and weights that teacher-cache accepts. The recipe is teacher-train on a generated
    corpus; that training reproduces its weight bytes is tested in tests/stages/test_teacher_train.py (a resumed run
    ends with the uninterrupted run's bytes), and the generator's in tests/unit/video/test_synth.py."""
    from condi_pipe.recipes.pretrain import PretrainOptions, pretrain_teacher
    from condi_pipe.storage import clip_outputs, training_artifacts
    from condi_pipe.storage.manifests import eval_split, load_videos, video_paths
    from condi_pipe.storage.store import Store
    from condi_pipe.video.synth import read_clip_kinds

    options = PretrainOptions(videos=20, seed=11, epochs=1, clips_per_video=1, batch_size=8, eval_every=1)
    a = tmp_path / "a" / "teacher.pt"
    card_a = pretrain_teacher(tmp_path / "a" / "work", a, options, quiet=True, log=lambda m: None)
    assert json.loads(a.with_suffix(".json").read_text())["weights_sha256"] == card_a["weights_sha256"]

    store = Store(str(tmp_path / "a" / "work" / "store"))
    # the recipe trains on the corpus's whole train split and keeps the last epoch: nothing is chosen on data
    meta = training_artifacts.read_meta(store, training_artifacts.trained_teacher_folder("resnet10_3d_motion"))
    assert meta["validation_videos"] == 0 and meta["fit_videos"] == len(load_videos(store, "train").video_id)
    assert meta["epoch_kept"] == options.epochs
    videos = load_videos(store, eval_split(store))
    table = clip_outputs.read_clips(store, clip_outputs.teacher_folder("resnet10_3d_motion"), ["clip_id", "z"])
    z_of = dict(zip(table.column("clip_id").to_pylist(), table.column("z").to_pylist()))
    kinds = read_clip_kinds(tmp_path / "a" / "work" / "synth")
    per_kind: dict[str, list[int]] = {}
    for path, first, n in zip(video_paths(store, videos), videos.first_clip, videos.clips):
        for i in range(int(n)):
            per_kind.setdefault(kinds[path][i], []).append(int(z_of[int(first) + i]))
    assert card_a["held_out"]["clips"] == int(videos.clips.sum())
    for kind, zs in per_kind.items():
        assert card_a["held_out"]["by_kind"][kind] == {"clips": len(zs), "accuracy": round(float(np.mean(zs)), 4)}

    # the written file is a checkpoint teacher-cache --weights accepts (under another name, beside the recipe's own
    # cache): it records the card's digest and gives the recipe's cache's logits
    from click.testing import CliRunner

    from condi_pipe.cli import main as cli
    from condi_pipe.storage.run_state import stage_record

    result = CliRunner().invoke(cli, ["teacher-cache", "--teacher", "resnet10_3d_motion", "--weights", str(a),
                                      "--name", "from-file", "--store", str(tmp_path / "a" / "work" / "store"),
                                      "--workers", "0", "--quiet"])
    assert result.exit_code == 0, result.output
    record = stage_record(store, "teacher-cache/from-file")
    assert record["state"] == "done" and record["config"]["teacher"]["weights_sha256"] == card_a["weights_sha256"]
    recipe_logits = clip_outputs.read_array(store, clip_outputs.teacher_folder("resnet10_3d_motion"), "logits")
    file_logits = clip_outputs.read_array(store, clip_outputs.teacher_folder("from-file"), "logits")
    np.testing.assert_allclose(file_logits, recipe_logits, rtol=1e-3, atol=1e-3)
