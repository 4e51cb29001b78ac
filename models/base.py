"""What every condi-pipe model shares: its output type, its config, and the base class that ties them together."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, ClassVar, NamedTuple

import torch
from torch import Tensor, nn

from .preprocess import RGB, get_normalization, preprocess_clips

# Name of the student's confidence head; checkpoints from classification-only releases lack it.
CONFIDENCE_HEAD = "confidence_head"


class ClipOutput(NamedTuple):
    """What a model returns for a batch of clips."""

    logits: Tensor
    """(B, C) class logits."""
    confidence: Tensor | None
    """(B,) raw logit of the student's own confidence head (sigmoid gives z~); None for teachers."""
    features: Tensor
    """(B, D) globally pooled features, before dropout and the classifier."""
    sgs_bins: Tensor | None = None
    """(B,) int64 temporal slices B' each clip kept after SGS (``models.sgs``); None for models without SGS."""


@dataclass(frozen=True)
class ModelConfig:
    """How a model was built and what input it expects."""

    name: str
    width: float | None
    num_classes: int
    feature_dim: int
    normalization: str
    mean: RGB
    """Per RGB channel, on the 0..1 scale."""
    std: RGB
    """Per RGB channel, on the 0..1 scale (1/255 means "std 1 on 0..255 values")."""
    clip_length: int = 16
    crop: int = 112

    @property
    def input_range(self) -> tuple[float, float]:
        """Smallest and largest value the network can see after preprocessing of 0..255 pixels."""
        lows = [(0.0 - m) / s for m, s in zip(self.mean, self.std)]
        highs = [(1.0 - m) / s for m, s in zip(self.mean, self.std)]
        return min(lows), max(highs)


def make_config(
    name: str, width: float | None, num_classes: int, feature_dim: int, normalization: str
) -> ModelConfig:
    """A ModelConfig whose mean and std come from the named normalisation (see ``preprocess.NORMALIZATIONS``)."""
    norm = get_normalization(normalization)
    return ModelConfig(name, width, num_classes, feature_dim, norm.name, norm.mean, norm.std)


class ClipModel(nn.Module):
    """Base class: subclasses build a trunk, a classification head and (students) a confidence head.

    A subclass implements ``forward_features`` (clips -> pooled (B, D) features), names its classification
    head module in ``head_name`` and sets ``self.config``; ``forward`` and ``preprocess`` are shared.
    """

    config: ModelConfig
    head_name: ClassVar[str] = "fc"
    # (old, new) substrings applied to checkpoint keys, for releases whose attribute names we do not reuse.
    checkpoint_key_renames: ClassVar[tuple[tuple[str, str], ...]] = ()
    # Submodules a checkpoint may lack (left freshly initialised), e.g. an SGS module inserted into a trained network.
    checkpoint_optional: tuple[str, ...] = ()

    def __init__(self) -> None:
        super().__init__()
        self.confidence_head: nn.Linear | None = None

    def forward_features(self, x: Tensor) -> Tensor:
        raise NotImplementedError

    def add_student_heads(self, feature_dim: int, num_classes: int, dropout: float) -> None:
        """The students' heads, under the module names of Efficient-3DCNNs checkpoints: ``classifier`` (dropout,
        then linear) and a one-logit ``confidence_head`` on the same pooled features."""
        self.classifier = nn.Sequential(nn.Dropout(dropout), nn.Linear(feature_dim, num_classes))
        self.confidence_head = nn.Linear(feature_dim, 1)

    def forward_features_and_bins(self, x: Tensor) -> tuple[Tensor, Tensor | None]:
        """Pooled features and, for a model with SGS, each clip's B' (else None)."""
        return self.forward_features(x), None

    def heads(self, features: Tensor) -> tuple[Tensor, Tensor | None]:
        """(logits, confidence logit or None) from pooled features."""
        logits = self.get_submodule(self.head_name)(features)
        confidence = None if self.confidence_head is None else self.confidence_head(features).squeeze(1)
        return logits, confidence

    def forward(self, x: Tensor) -> ClipOutput:
        features, bins = self.forward_features_and_bins(x)
        logits, confidence = self.heads(features)
        return ClipOutput(logits, confidence, features, bins)

    def network_input_shape(self, input_shape: tuple[int, ...]) -> tuple[int, ...]:
        """The (B, 3, T, H, W) shape ``forward`` receives for clips of ``input_shape`` after ``preprocess`` (the
        same unless a model reads its clips at reduced size; FLOPs are counted at this shape)."""
        return tuple(input_shape)

    def preprocess(self, clips_uint8: Tensor) -> Tensor:
        """uint8 (B, T, H, W, 3) RGB clips -> float (B, 3, T, H, W) normalised as this model's config says."""
        return preprocess_clips(clips_uint8, self.config.mean, self.config.std)

    @property
    def classifier_linear(self) -> nn.Linear:
        """The Linear layer that produces the class logits (the last Linear of the head module)."""
        head = self.get_submodule(self.head_name)
        linears = [m for m in head.modules() if isinstance(m, nn.Linear)]
        return linears[-1]


def count_parameters(model: nn.Module, include_confidence_head: bool = False) -> int:
    """Number of parameter elements. The student's confidence head is left out unless asked for, so the count
    compares with the published classification models."""
    return sum(
        p.numel()
        for name, p in model.named_parameters()
        if include_confidence_head or not name.startswith(CONFIDENCE_HEAD + ".")
    )


def conv_bn(
    in_channels: int,
    out_channels: int,
    kernel_size: int,
    stride: int | tuple[int, int, int] = 1,
    groups: int = 1,
    activation: Callable[..., nn.Module] | None = nn.ReLU,
) -> list[nn.Module]:
    """[Conv3d (no bias, "same" padding), BatchNorm3d, activation] as a list, so callers can splice several
    into one nn.Sequential and keep the flat indices the original releases' state dicts use."""
    layers: list[nn.Module] = [
        nn.Conv3d(in_channels, out_channels, kernel_size, stride, kernel_size // 2, groups=groups, bias=False),
        nn.BatchNorm3d(out_channels),
    ]
    if activation is not None:
        layers.append(activation(inplace=True))
    return layers


def init_weights(model: nn.Module) -> None:
    """He init for convs, identity BatchNorm, small normal Linear: the usual start for training from scratch.

    On the meta device (an architecture built only to count FLOPs) there are no values to set: skipped, since a
    random fill there goes through torch's Python reference ops, whose first use imports torch._dynamo (~1.7 s)."""
    if any(p.is_meta for p in model.parameters()):
        return
    for m in model.modules():
        if isinstance(m, nn.Conv3d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm3d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, 0.0, 0.01)
            nn.init.zeros_(m.bias)


def pool_features(x: Tensor) -> Tensor:
    """Global average over T, H, W: (B, D, T, H, W) -> (B, D)."""
    return torch.flatten(nn.functional.adaptive_avg_pool3d(x, 1), 1)
