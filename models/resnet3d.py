"""3D ResNets in the style of Hara et al.'s 3D-ResNets release: the ResNeXt-101 teacher and a small ResNet-10.

One class (``ResNet3D``) builds the network from a swappable block type; the registered builders only choose
the block, depths and widths. Module names (conv1, bn1, layer1..4, fc; conv1/bn1/... and
``downsample`` inside blocks) are the release's, so its checkpoints load key for key.

Every registered ResNet3D takes ``sgs_stage="res2" | "res3" | "res4"`` (and ``sgs_kernel``) to insert an SGS module
(``models.sgs``) after that stage: res1 is the stem (conv1), res2..res5 are layer1..layer4. Its parameters live under
``sgs.``; a checkpoint of the plain network loads into it with only those left fresh.
"""

from __future__ import annotations

from typing import ClassVar

import torch
from torch import Tensor, nn

from .base import ClipModel, init_weights, make_config, pool_features
from .preprocess import preprocess_reduced_clips
from .registry import register_model
from .sgs import SGS, SGS_STAGES, SGSOptions, SGSResult, TemporalValidity, time_masked

Triple = tuple[int, int, int]


class BasicBlock3D(nn.Module):
    """Two 3x3x3 convs with an identity (or projection) shortcut."""

    expansion: ClassVar[int] = 1

    def __init__(self, in_channels: int, planes: int, stride: int = 1, downsample: nn.Module | None = None) -> None:
        super().__init__()
        self.conv1 = nn.Conv3d(in_channels, planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm3d(planes)
        self.conv2 = nn.Conv3d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm3d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x: Tensor) -> Tensor:
        shortcut = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + shortcut)


class ResNeXtBottleneck3D(nn.Module):
    """1x1x1 reduce, grouped 3x3x3 (``cardinality`` groups), 1x1x1 expand to ``planes * 2``.

    As in the 3D-ResNets release the inner width is ``cardinality * (planes // 32)``: with cardinality 32 it
    equals ``planes``, and the block outputs ``2 * planes`` channels.
    """

    expansion: ClassVar[int] = 2

    def __init__(
        self,
        in_channels: int,
        planes: int,
        stride: int = 1,
        downsample: nn.Module | None = None,
        cardinality: int = 32,
    ) -> None:
        super().__init__()
        inner = cardinality * (planes // 32)
        self.conv1 = nn.Conv3d(in_channels, inner, 1, bias=False)
        self.bn1 = nn.BatchNorm3d(inner)
        self.conv2 = nn.Conv3d(inner, inner, 3, stride, 1, groups=cardinality, bias=False)
        self.bn2 = nn.BatchNorm3d(inner)
        self.conv3 = nn.Conv3d(inner, planes * self.expansion, 1, bias=False)
        self.bn3 = nn.BatchNorm3d(planes * self.expansion)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x: Tensor) -> Tensor:
        shortcut = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + shortcut)


Block = type[BasicBlock3D] | type[ResNeXtBottleneck3D]


class ResNet3D(ClipModel):
    """Stem conv + max-pool, four residual stages (strides 1, 2, 2, 2 in T, H, W), global pool, linear head.

    Shortcuts are type B: identity where shapes match, else a 1x1x1 conv + BatchNorm projection.
    """

    head_name = "fc"

    def __init__(
        self,
        block: Block,
        layers: tuple[int, int, int, int],
        planes: tuple[int, int, int, int],
        num_classes: int,
        *,
        name: str,
        normalization: str,
        stem_channels: int = 64,
        stem_kernel: Triple = (7, 7, 7),
        block_kwargs: dict | None = None,
        frame_differences: bool = False,
        confidence_head: bool = False,
        stem_stride: Triple = (1, 2, 2),
        sgs_stage: str | None = None,
        sgs_kernel: str = "linear",
        input_reduction: Triple = (1, 1, 1),
    ) -> None:
        super().__init__()
        self.frame_differences = frame_differences
        self.input_reduction = tuple(int(r) for r in input_reduction)
        feature_dim = planes[-1] * block.expansion
        self.config = make_config(name, None, num_classes, feature_dim, normalization)
        self._block_kwargs = block_kwargs or {}

        padding = tuple(k // 2 for k in stem_kernel)
        self.conv1 = nn.Conv3d(3, stem_channels, stem_kernel, stride=stem_stride, padding=padding, bias=False)
        self.bn1 = nn.BatchNorm3d(stem_channels)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool3d(kernel_size=3, stride=2, padding=1)
        self._in_channels = stem_channels
        self.layer1 = self._make_layer(block, planes[0], layers[0], stride=1)
        self.layer2 = self._make_layer(block, planes[1], layers[1], stride=2)
        self.layer3 = self._make_layer(block, planes[2], layers[2], stride=2)
        self.layer4 = self._make_layer(block, planes[3], layers[3], stride=2)
        self.fc = nn.Linear(feature_dim, num_classes)
        if confidence_head:
            self.confidence_head = nn.Linear(feature_dim, 1)
        self.sgs: SGS | None = None
        self.sgs_stage = sgs_stage
        self._sgs_after = -1  # index into self.stages of the stage SGS follows
        if sgs_stage is not None:
            SGSOptions(sgs_stage, sgs_kernel)  # checks both names
            self._sgs_after = list(SGS_STAGES).index(sgs_stage)
            self.sgs = SGS(planes[self._sgs_after] * block.expansion, kernel=sgs_kernel)
            self._validity = TemporalValidity()
            for layer in self.stages[self._sgs_after + 1 :]:
                time_masked(layer, self._validity)
            self.checkpoint_optional = ("sgs",)
        init_weights(self)

    def _make_layer(self, block: Block, planes: int, blocks: int, stride: int) -> nn.Sequential:
        out_channels = planes * block.expansion
        downsample = None
        if stride != 1 or self._in_channels != out_channels:
            downsample = nn.Sequential(
                nn.Conv3d(self._in_channels, out_channels, 1, stride=stride, bias=False),
                nn.BatchNorm3d(out_channels),
            )
        layers = [block(self._in_channels, planes, stride, downsample, **self._block_kwargs)]
        self._in_channels = out_channels
        layers += [block(out_channels, planes, **self._block_kwargs) for _ in range(1, blocks)]
        return nn.Sequential(*layers)

    def preprocess(self, clips_uint8: Tensor) -> Tensor:
        """Stored uint8 clips -> network input; with an ``input_reduction`` (t, s, s) the network reads every t-th
        frame, averaged over s x s pixel blocks (``preprocess_reduced_clips``: reduced before the float conversion,
        so the network pays only for the pixels it reads; score and every timed forward pass include this step)."""
        t, h, w = self.input_reduction
        if (t, h, w) == (1, 1, 1):
            return super().preprocess(clips_uint8)
        if h != w:
            raise ValueError(f"{self.config.name}: the input reduction needs square pixel blocks, got {h}x{w}")
        return preprocess_reduced_clips(clips_uint8, self.config.mean, self.config.std, t, h)

    def network_input_shape(self, input_shape: tuple[int, ...]) -> tuple[int, ...]:
        b, c, t, h, w = input_shape
        rt, rh, rw = self.input_reduction
        return (b, c, -(-t // rt), h // rh, w // rw)

    @property
    def stages(self) -> list[nn.Sequential]:
        return [self.layer1, self.layer2, self.layer3, self.layer4]

    def forward_features(self, x: Tensor) -> Tensor:
        return self.forward_features_and_bins(x)[0]

    def forward_features_and_bins(self, x: Tensor) -> tuple[Tensor, Tensor | None]:
        if self.sgs is None:
            x = self._stem(x)
            for layer in self.stages:
                x = layer(x)
            return pool_features(x), None
        result = self.sgs(self.features_before_sgs(x))
        if self.training:
            return self.features_after_sgs_padded(result), result.bins
        return self.features_after_sgs_grouped(result), result.bins

    def _stem(self, x: Tensor) -> Tensor:
        if self.frame_differences:
            x = temporal_differences(x)
        return self.maxpool(self.relu(self.bn1(self.conv1(x))))

    # -- with SGS -------------------------------------------------------------------------------------------------
    def features_before_sgs(self, x: Tensor) -> Tensor:
        """The input of SGS: stem and stages up to ``sgs_stage``."""
        x = self._stem(x)
        for layer in self.stages[: self._sgs_after + 1]:
            x = layer(x)
        return x

    def features_after_sgs(self, x: Tensor) -> Tensor:
        """Pooled features from SGS output whose slices are all real (no padding): (N, C, B', H, W) -> (N, D)."""
        for layer in self.stages[self._sgs_after + 1 :]:
            x = layer(x)
        return pool_features(x)

    def features_after_sgs_grouped(self, result: SGSResult) -> Tensor:
        """Clips grouped by B', each group without padding: the inference path, where fewer slices really cost
        less (what teacher-cache times and counts). Same numbers as running every clip alone."""
        bins = result.bins.tolist()
        if len(set(bins)) == 1:
            return self.features_after_sgs(result.output[:, :, : bins[0]])
        features = None
        for b in sorted(set(bins)):
            rows = torch.nonzero(result.bins == b).squeeze(1)
            part = self.features_after_sgs(result.output[rows, :, :b])
            if features is None:
                features = part.new_empty(len(bins), part.shape[1])
            features[rows] = part
        return features

    def features_after_sgs_padded(self, result: SGSResult) -> Tensor:
        """The whole batch padded to its largest B' (the training path): convolutions see the padded slices as
        zeros, BatchNorm's batch statistics skip them, and the global pool averages only real slices, so each clip
        gets the features it would get alone."""
        self._validity.set(result.bins, result.output.shape[2])
        try:
            x = result.output
            for layer in self.stages[self._sgs_after + 1 :]:
                x = layer(x)
            lengths = self._validity.lengths_at(x.shape[2]).to(x.device)
        finally:
            self._validity.clear()
        valid = (torch.arange(x.shape[2], device=x.device)[None, :] < lengths[:, None]).to(x.dtype)
        per_slice = x.mean(dim=(3, 4))  # (N, C, T)
        return (per_slice * valid[:, None, :]).sum(dim=2) / lengths[:, None].to(x.dtype)


def temporal_differences(x: Tensor) -> Tensor:
    """x[t+1] - x[t] along T, the last difference repeated so T is kept: (B, C, T, H, W) -> same shape.

    Static appearance (background texture, object colour) cancels; what moves remains (the RGB-difference
    input of TSN, as a layer rather than a data transform, so every stage feeds it the same clips).
    """
    diff = x[:, :, 1:] - x[:, :, :-1]
    return torch.cat([diff, diff[:, :, -1:]], dim=2)


@register_model("resnext101_3d", role="teacher")
def resnext101_3d(num_classes: int, *, normalization: str = "3d_resnets", **kw) -> ResNet3D:
    """3D ResNeXt-101 (Hara et al. 3D-ResNets): cardinality 32, shortcut B, 64-channel 7x7x7 stem."""
    return ResNet3D(
        ResNeXtBottleneck3D, (3, 4, 23, 3), (128, 256, 512, 1024), num_classes,
        name="resnext101_3d", normalization=normalization, block_kwargs={"cardinality": 32}, **kw,
    )  # fmt: skip


@register_model("resnet10_3d_small", role="teacher")
def resnet10_3d_small(num_classes: int, *, normalization: str = "simple", **kw) -> ResNet3D:
    """Narrow 3D ResNet-10 (basic blocks [1,1,1,1], widths 16-128): a teacher that trains on a CPU."""
    # A 3x7x7 stem (as in torchvision's R3D) rather than 7x7x7: the stem dominates the FLOPs of a network this
    # narrow, and 3x7x7 costs less than half (1.0 instead of 1.9 GFLOPs per clip in total).
    return ResNet3D(
        BasicBlock3D, (1, 1, 1, 1), (16, 32, 64, 128), num_classes,
        name="resnet10_3d_small", normalization=normalization, stem_channels=16, stem_kernel=(3, 7, 7), **kw,
    )  # fmt: skip


@register_model("resnet10_3d_motion", role="teacher")
def resnet10_3d_motion(num_classes: int, *, normalization: str = "simple", **kw) -> ResNet3D:
    """resnet10_3d_small on frame differences: the embedded benchmark's teacher (its classes are motions over
    random appearance, which a CPU-sized RGB network memorises instead of learning the motion)."""
    return ResNet3D(
        BasicBlock3D, (1, 1, 1, 1), (16, 32, 64, 128), num_classes, name="resnet10_3d_motion",
        normalization=normalization, stem_channels=16, stem_kernel=(3, 7, 7), frame_differences=True, **kw,
    )  # fmt: skip


@register_model("resnet10_3d_motion_tiny", role="student")
def resnet10_3d_motion_tiny(num_classes: int, *, normalization: str = "simple", **kw) -> ResNet3D:
    """resnet10_3d_motion at half its widths (8-64) and a stride-2 stem in T, with a confidence head: the embedded
    benchmark's student, cheaper per clip than its teacher on a CPU (where the depthwise convolutions of
    ShuffleNetV2 / MobileNetV2 cost as much as the small teacher's dense ones)."""
    return ResNet3D(
        BasicBlock3D, (1, 1, 1, 1), (8, 16, 32, 64), num_classes, name="resnet10_3d_motion_tiny",
        normalization=normalization, stem_channels=8, stem_kernel=(3, 7, 7), stem_stride=(2, 2, 2),
        frame_differences=True, confidence_head=True, **kw,
    )  # fmt: skip


@register_model("resnet10_3d_motion_skim", role="student")
def resnet10_3d_motion_skim(num_classes: int, *, normalization: str = "simple", **kw) -> ResNet3D:
    """resnet10_3d_motion_tiny reading each clip at 8x56x56 (every second frame, 2x2 pixel means): the embedded
    benchmark's student. ConDi pays only when skimming every clip costs a small share of the teacher (the paper:
    ShuffleNetV2 is ~50-80x cheaper than ResNeXt-101 in FLOPs); at full resolution the tiny network costs a
    fifth of resnet10_3d_motion, at 8x56x56 a thirtieth. The stem keeps T
    (stride 1) since T is already halved, and is 3x5x5 (80% of the FLOPs sit in the stem; 5x5 at half size sees what
    7x7 sees at full size)."""
    return ResNet3D(
        BasicBlock3D, (1, 1, 1, 1), (8, 16, 32, 64), num_classes, name="resnet10_3d_motion_skim",
        normalization=normalization, stem_channels=8, stem_kernel=(3, 5, 5), stem_stride=(1, 2, 2),
        frame_differences=True, confidence_head=True, input_reduction=(2, 2, 2), **kw,
    )  # fmt: skip

