"""SGS / ATFR: the module on hand-made inputs, inside the 3D ResNets, and as a teacher in the pipeline (teacher-train
--sgs, teacher-cache with B' and FLOPs per clip, the report's SGS table), plus the weights digest of teacher-cache."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch
from click.testing import CliRunner

from condi_pipe.cli import main as cli
from condi_pipe.compute.clip_inference import ModelRef
from condi_pipe.models import build_model, flop_table, load_weights
from condi_pipe.models.sgs import KERNEL_FLOOR, SGS, SGSOptions
from condi_pipe.pipeline.executor import ExecutorOptions
from condi_pipe.stages.teacher_cache import TeacherCacheRequest
from condi_pipe.storage import clip_outputs
from condi_pipe.storage.store import Store

QUIET = dict(quiet=True, log=lambda message: None)
TEACHER = "resnet10_3d_motion"
SGS_TEACHER = TEACHER + "+sgs"


# ------------------------------------------------------------------------------------------------ the module
class FixedMagnitude(SGS):
    """SGS whose magnitudes are given (Delta_t = the first channel's spatial mean), to place frames in bins."""

    def magnitudes(self, x):
        return x[:, 0].mean(dim=(2, 3)).double()


def frames_with(magnitudes, channels=3, size=2):
    """(1, C, T, H, W) features whose first channel is each frame's magnitude; other channels are frame ids."""
    t = len(magnitudes)
    x = torch.zeros(1, channels, t, size, size, dtype=torch.float64)
    x[0, 0] = torch.tensor(magnitudes, dtype=torch.float64)[:, None, None]
    for c in range(1, channels):
        x[0, c] = (torch.arange(t, dtype=torch.float64) * 10 + c)[:, None, None]
    return x


@pytest.mark.parametrize("kernel", ["linear", "kronecker"])
def test_identical_frames_give_one_slice_equal_to_the_frame(kernel):
    torch.manual_seed(0)
    sgs = SGS(4, kernel=kernel).double()
    frame = torch.randn(1, 4, 1, 3, 3, dtype=torch.float64)
    result = sgs(frame.expand(2, 4, 8, 3, 3).contiguous())
    assert result.bins.tolist() == [1, 1] and result.output.shape == (2, 4, 1, 3, 3)
    torch.testing.assert_close(result.output, frame.expand(2, 4, 1, 3, 3))


@pytest.mark.parametrize("kernel", ["linear", "kronecker"])
def test_distinct_magnitudes_at_the_bin_centres_keep_every_slice(kernel):
    # T = 8 frames at the 8 bin centres (2b - 1) * gamma with max = 16 -> gamma = 1: centres 1, 3, ..., 15; the
    # largest frame (16) is the bins' outer edge, so put it last and the others at the first 7 centres.
    magnitudes = [1, 3, 5, 7, 9, 11, 13, 16]
    x = frames_with(magnitudes)
    result = FixedMagnitude(3, kernel=kernel)(x)
    assert result.bins.tolist() == [8] and result.mask.all()
    # each of the first 7 bins holds exactly its frame (the linear kernel puts weight 1 on it, 0 on the others)
    torch.testing.assert_close(result.output[0, 1:, :7], x[0, 1:, :7])


def test_shuffled_frames_come_out_in_magnitude_order_and_empty_bins_are_dropped():
    magnitudes = [9.0, 1.0, 16.0, 1.0, 9.0, 1.0, 9.0, 1.0]  # bins 1, 5 and 8 (the largest frame) hold frames
    x = frames_with(magnitudes)
    result = FixedMagnitude(3, kernel="kronecker")(x)
    assert result.bins.tolist() == [3]
    mean = lambda ids: x[0, 1:, ids].mean(dim=1)  # noqa: E731
    torch.testing.assert_close(result.output[0, 1:, 0], mean([1, 3, 5, 7]))
    torch.testing.assert_close(result.output[0, 1:, 1], mean([0, 4, 6]))
    torch.testing.assert_close(result.output[0, 1:, 2], x[0, 1:, 2])


def test_kronecker_kernel_is_the_mean_of_each_bins_frames():
    torch.manual_seed(1)
    sgs = SGS(6, kernel="kronecker").double()
    x = torch.randn(3, 6, 8, 4, 4, dtype=torch.float64)
    result = sgs(x)
    delta = sgs.magnitudes(x)
    gamma = delta.max(dim=1, keepdim=True).values / (2 * 8)
    bin_of = torch.clamp(torch.floor(delta / (2 * gamma)), max=7).long()  # bin b covers [2(b-1), 2b) * gamma
    for n in range(3):
        used = sorted(set(bin_of[n].tolist()))
        assert int(result.bins[n]) == len(used)
        for j, b in enumerate(used):
            expected = x[n, :, bin_of[n] == b].mean(dim=1)
            torch.testing.assert_close(result.output[n, :, j], expected)
        assert not result.output[n, :, len(used):].any()  # padding after B' is zero
        assert result.mask[n].tolist() == [j < len(used) for j in range(result.output.shape[2])]


def test_the_frame_with_the_largest_magnitude_is_kept():
    # Without the 1e-7 the largest frame (on the last bin's outer edge) would get weight 0 in every bin.
    magnitudes = [1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 16.0]
    x = frames_with(magnitudes)
    result = FixedMagnitude(3, kernel="linear")(x)
    assert result.bins.tolist() == [2]
    torch.testing.assert_close(result.output[0, 1:, 1], x[0, 1:, 7])  # alone in its bin: the frame itself
    weights, _ = FixedMagnitude(3, kernel="linear").bin_weights(torch.tensor([magnitudes], dtype=torch.float64))
    assert weights[0, 7, 1] == 1.0 and KERNEL_FLOOR > 0


def test_gradients_reach_the_embedding():
    torch.manual_seed(3)
    sgs = SGS(4, kernel="linear").double()
    x = torch.randn(2, 4, 8, 3, 3, dtype=torch.float64)
    result = sgs(x)
    assert (result.bins > 1).all()
    (result.output * torch.randn_like(result.output)).sum().backward()
    for param in sgs.embedding.parameters():
        assert param.grad is not None and param.grad.abs().sum() > 0

    # gradcheck of the output against the embedding's first weight, at a point away from bin edges
    weight = sgs.embedding[0].weight.detach().clone().requires_grad_(True)

    def output_of(w):
        return torch.func.functional_call(sgs, {"embedding.0.weight": w}, (x,)).output

    delta = sgs.magnitudes(x).detach()
    gamma = delta.max(dim=1, keepdim=True).values / 16
    # kinks of the linear kernel: bin edges (position 0 mod 2) and centres (1 mod 2); the largest frame is always on
    # the outer edge (its position relative to gamma is fixed at 2B), so only the others must stay clear
    position = ((delta / gamma) % 2)[delta < delta.max(dim=1, keepdim=True).values]
    assert ((position - 1).abs() > 1e-3).all() and (position > 1e-3).all() and (position < 2 - 1e-3).all()
    assert torch.autograd.gradcheck(output_of, (weight,), eps=1e-6, atol=1e-5)


# ------------------------------------------------------------------------------------------------ in the ResNets
def _static_and_moving_clips(n=4):
    torch.manual_seed(5)
    x = torch.randn(n, 3, 16, 112, 112)
    x[0] = x[0, :, :1]  # a static clip: identical frames
    return x


def test_sgs_model_padded_batch_equals_each_clip_alone():
    torch.manual_seed(0)
    model = build_model(TEACHER, 10, sgs_stage="res2").eval()
    x = _static_and_moving_clips()
    with torch.no_grad():
        out = model(x)
        result = model.sgs(model.features_before_sgs(x))
        padded = model.features_after_sgs_padded(result)
        alone = torch.cat([model(x[i : i + 1]).features for i in range(len(x))])
    assert out.sgs_bins[0] == 1 and len(set(out.sgs_bins.tolist())) > 1  # the batch really mixes B'
    torch.testing.assert_close(out.features, alone, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(padded, alone, rtol=1e-4, atol=1e-5)


def test_masked_batchnorm_statistics_skip_padded_slices():
    torch.manual_seed(0)
    model = build_model(TEACHER, 10, sgs_stage="res2").train()
    x = _static_and_moving_clips()
    with torch.no_grad():
        result = model.sgs(model.features_before_sgs(x))
        bn = model.layer2[0].bn1
        before = bn.running_mean.clone()
        model._validity.set(result.bins, result.output.shape[2])
        try:
            conv_out = model.layer2[0].conv1(result.output)
        finally:
            model._validity.clear()
        lengths = (result.bins + 1) // 2  # stride 2 in T
        valid = torch.cat([conv_out[i, :, : int(lengths[i])].flatten(1) for i in range(len(x))], dim=1)
        model.features_after_sgs_padded(result)
    expected = before * 0.9 + 0.1 * valid.mean(dim=1)
    torch.testing.assert_close(bn.running_mean, expected, rtol=1e-4, atol=1e-6)


def test_every_resnet_takes_sgs_and_plain_checkpoints_load_all_but_sgs(tmp_path):
    torch.manual_seed(0)
    plain = build_model(TEACHER, 10)
    path = tmp_path / "plain.pt"
    torch.save(plain.state_dict(), path)
    for stage in ("res2", "res3", "res4"):
        model = load_weights(build_model(TEACHER, 10, sgs_stage=stage), path)
        for key, value in plain.state_dict().items():
            torch.testing.assert_close(model.state_dict()[key], value)
        assert any(k.startswith("sgs.") for k in model.state_dict())
    with pytest.raises(ValueError, match="res2, res3, res4"):
        build_model(TEACHER, 10, sgs_stage="res5")
    assert build_model("resnet10_3d_small", 10, sgs_stage="res3").sgs is not None


def test_flops_fall_with_fewer_slices_and_match_a_real_forward():
    ref = ModelRef(TEACHER, 10, sgs_stage="res2")
    table = flop_table(ref.build(device="meta"))
    plain = flop_table(ModelRef(TEACHER, 10).build(device="meta")).fixed
    assert sorted(table.after_sgs) == list(range(1, 9))
    assert all(table.after_sgs[b] <= table.after_sgs[b + 1] for b in range(1, 8))
    assert table.fixed + table.after_sgs[1] < plain < table.fixed + table.after_sgs[8] * 1.1
    # a real forward of a static clip (B' = 1) counts exactly fixed + after_sgs[1]
    from torch.utils.flop_counter import FlopCounterMode

    model = build_model(TEACHER, 10, sgs_stage="res2").eval()
    x = _static_and_moving_clips(1)
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        out = model(x)
    assert out.sgs_bins.tolist() == [1]
    assert counter.get_total_flops() == table.per_clip(1, np.array([1]))[0]


# ------------------------------------------------------------------------------------------------ weights digest
def test_teacher_weights_digest_is_part_of_the_cache_configuration(synth_store, tmp_path):
    """The bug: after teacher-train --force, teacher-cache said "already done" and kept stale logits. Now the
    reference carries the weights' sha256, so new weights are a changed configuration, and a model is never built
    from weights other than the ones configured."""
    from condi_pipe.models.checkpoints import CheckpointError
    from condi_pipe.pipeline.stage import _config_changes
    from condi_pipe.stages.teacher_cache import TeacherChoice

    def teacher_ref(store, teacher, **choice):  # as teacher-cache resolves the teacher it is given
        return TeacherChoice(teacher, **choice).resolve(store)

    store = Store(str(synth_store))
    path = tmp_path / "w.pt"
    torch.manual_seed(0)
    torch.save(build_model(TEACHER, 10).state_dict(), path)
    first = teacher_ref(store, TEACHER, weights=str(path))
    assert first.weights_sha256 == hashlib.sha256(path.read_bytes()).hexdigest()
    assert teacher_ref(store, TEACHER, weights=str(path)) == first  # same weights: same configuration
    first.build()
    torch.manual_seed(1)
    torch.save(build_model(TEACHER, 10).state_dict(), path)  # retrained in place
    second = teacher_ref(store, TEACHER, weights=str(path))
    changes = _config_changes(TeacherCacheRequest(first).config(), TeacherCacheRequest(second).config())
    assert changes == ["teacher.weights_sha256"]
    with pytest.raises(CheckpointError, match="sha256 differs"):
        first.build()  # a worker never caches weights other than the configured ones
    # options added later with a None default do not invalidate older records
    old = TeacherCacheRequest(ModelRef(TEACHER, 10)).config()
    for key in ("weights_sha256", "sgs_stage", "sgs_kernel", "output_name"):
        del old["teacher"][key]
    assert _config_changes(old, TeacherCacheRequest(ModelRef(TEACHER, 10)).config()) == []
    assert teacher_ref(store, TEACHER, random_init=True, sgs=SGSOptions()).teacher_name == SGS_TEACHER


# ------------------------------------------------------------------------------------------------ in the pipeline
TRAIN = ["--epochs", "1", "--batch-size", "8", "--clips-per-video", "1", "--threads", "2", "--no-flip", "--quiet"]
CACHE = ["--workers", "0", "--threads", "2", "--clips-per-group", "64", "--quiet"]


def invoke(*args):
    result = CliRunner().invoke(cli, [str(a) for a in args])
    assert result.exit_code == 0, (result.output, result.stderr, result.exception)
    return result


@pytest.fixture(scope="module")
def sgs_store(synth_store, tmp_path_factory):
    """A plain teacher trained 1 epoch, the same teacher fine-tuned with SGS inserted (1 epoch), both cached, and one
    ConDi-SR student scored for the plain teacher."""
    from condi_pipe.compute.torch_runtime import RuntimeOptions
    from condi_pipe.compute.training import TrainOptions
    from condi_pipe.stages.distill import DistillRequest, distill
    from condi_pipe.stages.score import ScoreRequest, score

    store_dir = tmp_path_factory.mktemp("sgs") / "store"
    shutil.copytree(synth_store, store_dir)
    invoke("teacher-train", "--teacher", TEACHER, "--store", store_dir, *TRAIN)
    plain_weights = store_dir / "trained_teachers" / TEACHER / "weights.pt"
    invoke("teacher-train", "--teacher", TEACHER, "--sgs", "--weights", plain_weights, "--store", store_dir, *TRAIN,
           "--lr", "0.01")
    invoke("teacher-cache", "--teacher", TEACHER, "--store", store_dir, *CACHE)
    invoke("teacher-cache", "--teacher", TEACHER, "--sgs", "--store", store_dir, *CACHE)
    store = Store(str(store_dir))
    request = DistillRequest("condi-sr", "resnet10_3d_motion_tiny", TEACHER, name="conf",
                             train=TrainOptions(1, 8, 0.1, seed=2), clips_per_video=1, runtime=RuntimeOptions(threads=2))
    distill(store, request, **QUIET)
    score(store, ScoreRequest("conf", RuntimeOptions(threads=2), clips_per_group=64), ExecutorOptions(workers=0),
          **QUIET)
    return store_dir


def _cache(store_dir: Path, name: str):
    store = Store(str(store_dir))
    folder = clip_outputs.teacher_folder(name)
    return (clip_outputs.read_clips(store, folder).to_pandas(), clip_outputs.read_videos(store, folder).to_pandas(),
            clip_outputs.read_meta(store, folder), clip_outputs.read_array(store, folder, "logits"))


@pytest.mark.slow
def test_sgs_teacher_trains_under_its_own_name_beside_the_plain_one(sgs_store):
    plain = json.loads((sgs_store / "trained_teachers" / TEACHER / "meta.json").read_text())
    meta = json.loads((sgs_store / "trained_teachers" / SGS_TEACHER / "meta.json").read_text())
    assert plain["sgs"] is None and meta["sgs"] == {"stage": "res2", "kernel": "linear"}
    history = pq.read_table(sgs_store / "trained_teachers" / SGS_TEACHER / "history.parquet").to_pylist()
    assert len(history) == 1 and 1 <= history[0]["train_mean_sgs_bins"] <= 8
    weights = torch.load(sgs_store / "trained_teachers" / SGS_TEACHER / "weights.pt", weights_only=True)
    assert any(k.startswith("sgs.embedding") for k in weights)
    # fine-tuned from the plain teacher (lr 0.01 for one short epoch): the trunk stayed close to its start
    start = torch.load(sgs_store / "trained_teachers" / TEACHER / "weights.pt", weights_only=True)
    fresh = build_model(TEACHER, 10).state_dict()
    assert (weights["conv1.weight"] - start["conv1.weight"]).abs().max() < (
        fresh["conv1.weight"] - start["conv1.weight"]).abs().max() / 10


@pytest.mark.slow
def test_sgs_cache_stores_bins_and_measured_flops_per_clip(sgs_store):
    clips, videos, meta, logits = _cache(sgs_store, SGS_TEACHER)
    table = flop_table(ModelRef(TEACHER, 10, sgs_stage="res2").build(device="meta"))
    assert meta["sgs"]["stage"] == "res2" and meta["flops"]["fixed"] == table.fixed
    assert clips["sgs_bins"].between(1, 8).all() and clips["sgs_bins"].nunique() > 1
    np.testing.assert_array_equal(clips["flops"], [table.fixed + table.after_sgs[b] for b in clips["sgs_bins"]])
    plain_clips, *_ = _cache(sgs_store, TEACHER)
    assert "sgs_bins" not in plain_clips and (plain_clips["flops"] == flop_table(
        ModelRef(TEACHER, 10).build(device="meta")).fixed).all()
    # an independent pass, one clip at a time, gives the stored B' and logits
    from condi_pipe.storage.clip_array import open_clip_array

    model = build_model(TEACHER, 10, sgs_stage="res2")
    model.load_state_dict(torch.load(sgs_store / "trained_teachers" / SGS_TEACHER / "weights.pt", weights_only=True))
    model.eval()
    array = open_clip_array(Store(str(sgs_store)))
    with torch.inference_mode():
        for clip_id in (0, len(clips) // 3, len(clips) - 1):
            out = model(model.preprocess(torch.from_numpy(array[clip_id : clip_id + 1])))
            assert int(out.sgs_bins[0]) == clips["sgs_bins"][clip_id]
            np.testing.assert_allclose(logits[clip_id], out.logits[0].numpy(), rtol=1e-3, atol=1e-3)
    assert (videos["seconds"] > 0).all() and meta["latency_curve"]["seconds"][0] > 0


def _digests(folder: Path) -> dict[str, str]:
    names = ["clips.parquet", *(str(p.relative_to(folder)) for p in sorted(folder.glob("*.zarr/c/**/*")) if p.is_file())]
    return {n: hashlib.sha256((folder / n).read_bytes()).hexdigest() for n in names}


@pytest.mark.slow
def test_sgs_cache_is_deterministic(sgs_store, tmp_path):
    store_dir = tmp_path / "store"
    shutil.copytree(sgs_store, store_dir)
    invoke("teacher-cache", "--teacher", TEACHER, "--sgs", "--store", store_dir, *CACHE, "--force")
    before, after = _digests(sgs_store / "teacher" / SGS_TEACHER), _digests(store_dir / "teacher" / SGS_TEACHER)
    assert before == after and "logits.zarr/c/0/0" in before


def _video_accuracy(probs, owner, labels, chosen):
    sums = np.zeros((len(labels), probs.shape[1]))
    np.add.at(sums, owner[chosen], probs[chosen])
    return 100 * float((sums.argmax(1) == labels).mean())


@pytest.mark.slow
def test_report_sgs_rows_are_recomputed_from_the_stored_outputs(sgs_store, tmp_path):
    png = tmp_path / "bins.png"
    result = invoke("report", "--store", sgs_store, "--table", "sgs", "--k", "1,3", "--format", "json",
                    "--plot", png, "--teacher-time", "share")
    rows = {(r["method"], r["k"]): r for r in json.loads(result.stdout)}
    assert {m for m, _ in rows} == {"dense", "condi-sr", "equidistant", "dense+sgs", "condi-sr+sgs", "equidistant+sgs"}
    assert rows[("dense+sgs", None)]["display"] == "Dense (SGS teacher)" and png.stat().st_size > 0

    clips, videos, _, logits = _cache(sgs_store, SGS_TEACHER)
    test = (clips["split"] == "test").to_numpy()
    clips, logits = clips[test].reset_index(drop=True), logits[test]
    videos = videos[videos["split"] == "test"].set_index("video_id")
    vids = clips["video_id"].unique()
    owner = np.searchsorted(vids, clips["video_id"].to_numpy())
    labels = clips.groupby("video_id")["label"].first().loc[vids].to_numpy()
    probs = np.exp(logits - logits.max(1, keepdims=True))
    probs /= probs.sum(1, keepdims=True)

    dense = rows[("dense+sgs", None)]
    assert dense["accuracy"] == pytest.approx(_video_accuracy(probs, owner, labels, np.ones(len(clips), bool)))
    assert dense["time_per_video_s"] == pytest.approx(videos.loc[vids, "seconds"].mean())
    assert dense["gflops_per_teacher_clip"] == pytest.approx(clips["flops"].mean() / 1e9)
    assert dense["mean_sgs_bins"] == pytest.approx(clips["sgs_bins"].mean())

    # ConDi-SR with the SGS teacher, K = 1: the plain teacher's student picks each video's top clip by rank_score
    scores = pq.read_table(sgs_store / "scores" / "conf" / "clips.parquet").to_pandas().set_index("clip_id")
    rank = scores.loc[clips["clip_id"], "rank_score"].to_numpy()
    top = np.zeros(len(clips), bool)
    for v in range(len(vids)):
        members = np.flatnonzero(owner == v)
        top[members[np.argmax(rank[members])]] = True
    condi = rows[("condi-sr+sgs", 1)]
    assert condi["accuracy"] == pytest.approx(_video_accuracy(probs, owner, labels, top))
    assert condi["gflops_per_teacher_clip"] == pytest.approx(clips["flops"][top].mean() / 1e9)
    assert condi["mean_sgs_bins"] == pytest.approx(clips["sgs_bins"][top].mean())
    student = pq.read_table(sgs_store / "scores" / "conf" / "videos.parquet").to_pandas().set_index("video_id")
    share = (videos.loc[vids, "seconds"] / videos.loc[vids, "clips"]).to_numpy()
    expected = student.loc[vids, "seconds"].mean() + share.mean()
    assert condi["time_per_video_s"] == pytest.approx(expected, rel=1e-3, abs=1e-4)  # + a tiny selection time
    # the plain rows are costed with the plain teacher's cache
    plain_clips, *_ = _cache(sgs_store, TEACHER)
    assert rows[("dense", None)]["gflops_per_teacher_clip"] == pytest.approx(plain_clips["flops"].mean() / 1e9)
    assert rows[("condi-sr", 1)]["teacher"] == TEACHER and condi["teacher"] == SGS_TEACHER


@pytest.mark.slow
def test_retrained_teacher_weights_are_a_changed_cache_configuration(sgs_store, tmp_path):
    store_dir = tmp_path / "store"
    shutil.copytree(sgs_store, store_dir)
    before = (store_dir / "teacher" / TEACHER / "clips.parquet").read_bytes()
    invoke("teacher-train", "--teacher", TEACHER, "--store", store_dir, *TRAIN, "--seed", "5", "--force")
    refused = CliRunner().invoke(cli, ["teacher-cache", "--teacher", TEACHER, "--store", str(store_dir), *CACHE])
    assert refused.exit_code == 2 and "teacher.weights_sha256" in refused.stderr and "--force" in refused.stderr
    assert (store_dir / "teacher" / TEACHER / "clips.parquet").read_bytes() == before
    invoke("teacher-cache", "--teacher", TEACHER, "--store", store_dir, *CACHE, "--force")
    logits = clip_outputs.read_array(Store(str(store_dir)), clip_outputs.teacher_folder(TEACHER), "logits")
    assert not np.allclose(logits, _cache(sgs_store, TEACHER)[3])
    # a stage that is up to date with the current weights is still a no-op
    again = invoke("teacher-cache", "--teacher", TEACHER, "--store", store_dir, *CACHE)
    assert "already done" in again.output + again.stderr


# ------------------------------------------------------------------------------------------------ run configuration
def test_demo_sgs_is_the_examples_commented_sgs_section(tmp_path):
    import dataclasses
    import re

    from condi_pipe.app.run_config import load_run_config
    from condi_pipe.recipes.demo import demo_config

    text = (Path(__file__).resolve().parents[2] / "recipes" / "embedded.toml").read_text()
    uncommented = re.sub(r"^# (\[sgs\]|\w+ = .*)$", r"\1", text, flags=re.M)
    assert uncommented != text
    path = tmp_path / "recipes" / "embedded.toml"
    path.parent.mkdir()
    path.write_text(uncommented)
    example = load_run_config(path)
    demo = demo_config(tmp_path / "demo_store", sgs=True)
    assert example.sgs is not None and example.sgs.options.stage == "res2"
    assert dataclasses.replace(example, source_file="") == dataclasses.replace(demo, source_file="")
    assert demo_config(tmp_path / "demo_store").sgs is None  # the default demo stays without SGS
    path.write_text(uncommented.replace('stage = "res2"', 'stage = "res5"'))
    from condi_pipe.app.run_config import ConfigError

    with pytest.raises(ConfigError, match=r"\[sgs\].*res2, res3, res4"):
        load_run_config(path)
