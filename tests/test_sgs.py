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
from condi_pipe.models import build_model, flop_table, load_weights
from condi_pipe.models.sgs import SGS, KERNEL_FLOOR
from condi_pipe.pipeline.clip_inference import ModelRef
from condi_pipe.pipeline.executor import ExecutorOptions
from condi_pipe.pipeline.stage import StageError
from condi_pipe.stages.teacher_cache import TeacherCacheRequest, teacher_cache
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
