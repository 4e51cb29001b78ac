"""models.flops: FLOPs of one clip, counted by torch's FlopCounterMode, against counts made by hand."""

from __future__ import annotations

import doctest

import pytest
import torch
from torch import nn

from condi_pipe.models import flops as flops_module
from condi_pipe.models.flops import clip_flops, clip_gflops


class TinyClipNet(nn.Module):
    """Conv3d 3 -> 4 (3x3x3, padding 1, no bias), global average pool, Linear 4 -> 5; ``reduce`` halves T, H, W
    before the first layer, as a student that reads its clips at reduced size does."""

    def __init__(self, reduce: bool = False):
        super().__init__()
        self.conv = nn.Conv3d(3, 4, 3, padding=1, bias=False)
        self.bn = nn.BatchNorm3d(4)
        self.fc = nn.Linear(4, 5)
        self.reduce = reduce

    def network_input_shape(self, shape):
        b, c, t, h, w = shape
        return (b, c, t // 2, h // 2, w // 2) if self.reduce else tuple(shape)

    def forward(self, x):
        return self.fc(torch.relu(self.bn(self.conv(x))).mean(dim=(2, 3, 4)))


def hand_count(t: int, h: int, w: int) -> int:
    conv_macs = (4 * t * h * w) * (3 * 3 * 3 * 3)  # every output value: 3 input channels x 27 taps
    linear_macs = 4 * 5
    return 2 * (conv_macs + linear_macs)  # a multiply-add = 2 FLOPs; BatchNorm, ReLU and pooling count nothing


def test_a_tiny_conv_model_counts_twice_its_multiply_adds():
    counted = clip_flops(TinyClipNet(), (1, 3, 4, 6, 6))
    assert counted.flops == hand_count(4, 6, 6)
    assert counted.input_shape == (4, 6, 6)
    assert clip_gflops(TinyClipNet(), (1, 3, 4, 6, 6)) == pytest.approx(hand_count(4, 6, 6) / 1e9)


def test_a_model_reading_reduced_clips_is_counted_at_its_reduced_input():
    counted = clip_flops(TinyClipNet(reduce=True), (1, 3, 8, 12, 12))
    assert counted.input_shape == (4, 6, 6)
    assert counted.flops == hand_count(4, 6, 6)


def test_counting_leaves_the_model_in_training_mode_and_rejects_a_batch():
    model = TinyClipNet().train()
    clip_flops(model, (1, 3, 2, 4, 4))
    assert model.training
    with pytest.raises(ValueError, match=r"\(1, 3, T, H, W\) for one clip"):
        clip_flops(model, (2, 3, 2, 4, 4))


def test_a_registered_name_is_counted_at_its_own_input_and_reduction():
    teacher = clip_flops("resnet10_3d_motion", num_classes=10)
    student = clip_flops("resnet10_3d_motion_skim", num_classes=10)
    assert teacher.input_shape == (16, 112, 112)
    assert student.input_shape == (8, 56, 56)  # every second frame, 2x2 pixel blocks
    assert 0 < student.flops < teacher.flops


def test_docstring_example():
    assert doctest.testmod(flops_module).failed == 0
