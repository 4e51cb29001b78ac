"""3D MobileNetV2 student, as defined in Kopuklu et al. 2019, "Resource Efficient 3D CNNs".

Layout: stem 3x3x3 conv to 32*w channels, stride (1,2,2); inverted-residual stages (t, c, n, s) below, the first
block of a stage carrying its stride in T, H and W; a 1x1x1 conv to 1280 channels (1280*w only for w > 1);
global average pool; dropout 0.2 + linear classifier. ReLU6 throughout. Module names follow the
Efficient-3DCNNs release (features, classifier, and ``conv`` inside each block) so its checkpoints load directly.
"""

from __future__ import annotations

from torch import Tensor, nn

from .base import ClipModel, conv_bn, init_weights, make_config, pool_features
from .registry import register_model

# (expansion t, output channels c, blocks n, stride s of the first block)
INVERTED_RESIDUAL_SETTINGS = (
    (1, 16, 1, 1),
    (6, 24, 2, 2),
    (6, 32, 3, 2),
    (6, 64, 4, 2),
    (6, 96, 3, 1),
    (6, 160, 3, 2),
    (6, 320, 1, 1),
)
STEM_CHANNELS = 32
LAST_CHANNELS = 1280
WIDTHS = (0.2, 0.45, 0.7, 1.0)


def scaled_channels(channels: int, width: float) -> int:
    """Channel count at a width multiplier. The release truncates (int), with no make_divisible rounding:
    truncation reproduces the published sizes (0.96M at 0.2x), rounding to multiples of 8 would not (0.99M)."""
    return int(channels * width)


def last_channels(width: float) -> int:
    """The final 1x1x1 conv keeps 1280 channels when thinning the network and widens only for w > 1."""
    return scaled_channels(LAST_CHANNELS, width) if width > 1.0 else LAST_CHANNELS


class InvertedResidual3D(nn.Module):
    """MobileNetV2 block in 3D: 1x1x1 expand (skipped when t == 1), depthwise 3x3x3, linear 1x1x1 project;
    identity shortcut when stride is 1 and the channel count is kept."""

    def __init__(self, in_channels: int, out_channels: int, stride: int, expansion: int) -> None:
        super().__init__()
        hidden = round(in_channels * expansion)
        self.use_residual = stride == 1 and in_channels == out_channels
        expand = conv_bn(in_channels, hidden, 1, activation=nn.ReLU6) if expansion != 1 else []
        self.conv = nn.Sequential(
            *expand,
            *conv_bn(hidden, hidden, 3, stride, groups=hidden, activation=nn.ReLU6),
            *conv_bn(hidden, out_channels, 1, activation=None),
        )

    def forward(self, x: Tensor) -> Tensor:
        out = self.conv(x)
        return x + out if self.use_residual else out


class MobileNetV2_3D(ClipModel):
    """3D MobileNetV2 with a classification head and a one-logit confidence head on the pooled features."""

    head_name = "classifier"

    def __init__(
        self,
        num_classes: int,
        width: float = 1.0,
        *,
        dropout: float = 0.2,
        normalization: str = "3d_resnets",
        name: str = "mobilenetv2_3d",
    ) -> None:
        super().__init__()
        last = last_channels(width)
        self.config = make_config(name, width, num_classes, last, normalization)

        in_channels = scaled_channels(STEM_CHANNELS, width)
        layers: list[nn.Module] = [nn.Sequential(*conv_bn(3, in_channels, 3, (1, 2, 2), activation=nn.ReLU6))]
        for expansion, channels, blocks, stride in INVERTED_RESIDUAL_SETTINGS:
            out_channels = scaled_channels(channels, width)
            for i in range(blocks):
                layers.append(InvertedResidual3D(in_channels, out_channels, stride if i == 0 else 1, expansion))
                in_channels = out_channels
        layers.append(nn.Sequential(*conv_bn(in_channels, last, 1, activation=nn.ReLU6)))
        self.features = nn.Sequential(*layers)
        self.add_student_heads(last, num_classes, dropout)
        init_weights(self)

    def forward_features(self, x: Tensor) -> Tensor:
        return pool_features(self.features(x))


@register_model("mobilenetv2_3d", widths=WIDTHS, role="student")
def mobilenetv2_3d(num_classes: int, width: float = 1.0, **kw) -> MobileNetV2_3D:
    """3D MobileNetV2 student (Kopuklu et al. 2019) with a confidence head."""
    return MobileNetV2_3D(num_classes, width, **kw)
