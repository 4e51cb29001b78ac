"""3D ShuffleNetV2 student, as defined in Kopuklu et al. 2019, "Resource Efficient 3D CNNs".

Layout (width 1.0): stem 3x3x3 conv to 24 channels, stride (1,2,2), then max-pool 3 stride 2 in T, H, W; three
stages of [4, 8, 4] ShuffleNetV2 units to 116 / 232 / 464 channels, the first unit of each with stride 2 in
T, H, W; a 1x1x1 conv to 1024; global average pool; dropout 0.2 + linear classifier. Module names follow the
Efficient-3DCNNs release (conv1, features, conv_last, classifier) so its checkpoints load key for key; only
its misspelt unit branches ("banch1/2") are renamed on load.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from .base import ClipModel, conv_bn, init_weights, make_config, pool_features
from .registry import register_model

# Channels of (stem, stage 2, stage 3, stage 4, last conv). These are the hand-picked 2D ShuffleNetV2 widths,
# not a formula. At 2.0x the last conv has 2048 channels: that is what gives the published 6.64M parameters
# (1024 would give 5.02M).
STAGE_CHANNELS: dict[float, tuple[int, int, int, int, int]] = {
    0.25: (24, 32, 64, 128, 1024),
    0.5: (24, 48, 96, 192, 1024),
    1.0: (24, 116, 232, 464, 1024),
    1.5: (24, 176, 352, 704, 1024),
    2.0: (24, 224, 488, 976, 2048),
}
STAGE_REPEATS = (4, 8, 4)


def channel_shuffle(x: Tensor, groups: int) -> Tensor:
    """Interleave the channels of ``groups`` groups, so the next unit's split mixes both branches."""
    batch, channels, *rest = x.shape
    x = x.view(batch, groups, channels // groups, *rest).transpose(1, 2)
    return x.reshape(batch, channels, *rest)


def _transform_branch(in_channels: int, out_channels: int, stride: int) -> nn.Sequential:
    """1x1x1 conv, depthwise 3x3x3 conv (no activation after it, as in ShuffleNetV2), 1x1x1 conv."""
    return nn.Sequential(
        *conv_bn(in_channels, out_channels, 1),
        *conv_bn(out_channels, out_channels, 3, stride, groups=out_channels, activation=None),
        *conv_bn(out_channels, out_channels, 1),
    )


class ShuffleUnit3D(nn.Module):
    """A ShuffleNetV2 unit in 3D.

    Stride 1: split the channels in half, keep one half as is, transform the other, concatenate, shuffle.
    Stride 2: both branches see all channels; ``branch1`` (depthwise strided conv + 1x1x1 conv) is the
    downsampling shortcut, ``branch2`` the transform; each gives half the output channels.
    """

    def __init__(self, in_channels: int, out_channels: int, stride: int) -> None:
        super().__init__()
        self.stride = stride
        branch_channels = out_channels // 2
        if stride == 1:
            if in_channels != out_channels:
                raise ValueError("a stride-1 shuffle unit keeps its channel count")
            self.branch2 = _transform_branch(branch_channels, branch_channels, 1)
        else:
            self.branch1 = nn.Sequential(
                *conv_bn(in_channels, in_channels, 3, stride, groups=in_channels, activation=None),
                *conv_bn(in_channels, branch_channels, 1),
            )
            self.branch2 = _transform_branch(in_channels, branch_channels, stride)

    def forward(self, x: Tensor) -> Tensor:
        if self.stride == 1:
            half = x.shape[1] // 2
            out = torch.cat((x[:, :half], self.branch2(x[:, half:])), dim=1)
        else:
            out = torch.cat((self.branch1(x), self.branch2(x)), dim=1)
        return channel_shuffle(out, groups=2)


class ShuffleNetV2_3D(ClipModel):
    """3D ShuffleNetV2 with a classification head and a one-logit confidence head on the pooled features."""

    head_name = "classifier"
    checkpoint_key_renames = ((".banch1.", ".branch1."), (".banch2.", ".branch2."))

    def __init__(
        self,
        num_classes: int,
        width: float = 1.0,
        *,
        dropout: float = 0.2,
        normalization: str = "3d_resnets",
        name: str = "shufflenetv2_3d",
    ) -> None:
        super().__init__()
        stem, *stage_channels, last = STAGE_CHANNELS[width]
        self.config = make_config(name, width, num_classes, last, normalization)

        self.conv1 = nn.Sequential(*conv_bn(3, stem, 3, stride=(1, 2, 2)))
        self.maxpool = nn.MaxPool3d(kernel_size=3, stride=2, padding=1)
        units: list[nn.Module] = []
        in_channels = stem
        for repeats, out_channels in zip(STAGE_REPEATS, stage_channels):
            for i in range(repeats):
                units.append(ShuffleUnit3D(in_channels, out_channels, stride=2 if i == 0 else 1))
                in_channels = out_channels
        self.features = nn.Sequential(*units)
        self.conv_last = nn.Sequential(*conv_bn(in_channels, last, 1))
        self.add_student_heads(last, num_classes, dropout)
        init_weights(self)

    def forward_features(self, x: Tensor) -> Tensor:
        x = self.maxpool(self.conv1(x))
        x = self.conv_last(self.features(x))
        return pool_features(x)


@register_model("shufflenetv2_3d", widths=tuple(STAGE_CHANNELS), role="student")
def shufflenetv2_3d(num_classes: int, width: float = 1.0, **kw) -> ShuffleNetV2_3D:
    """3D ShuffleNetV2 student (Kopuklu et al. 2019) with a confidence head."""
    return ShuffleNetV2_3D(num_classes, width, **kw)
