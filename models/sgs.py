"""Similarity Guided Sampling (SGS, from ATFR: Fayyaz et al., CVPR 2021): fewer temporal slices for similar frames.

Inserted after a stage of a 3D CNN, SGS maps the stage's T temporal slices to B' <= T slices, so the layers after
it compute on less time and FLOPs fall with how static a clip is. Per clip (docs/method.md, "SGS / ATFR"):

1. pool each slice over H, W and embed it with two 1x1 1D convolutions to L = 8 dimensions: Z_t;
2. its magnitude Delta_t = ||Z_t||;
3. B = T bins of half-width gamma = max(Delta) / 2B, centres beta_b = (2b - 1) gamma;
4. each bin's slice is a weighted combination of the frames, with weights from a kernel:
   ``linear``: w_tb = max(0, 1 - |Delta_t - beta_b| / gamma + 1e-7) (the 1e-7 keeps the largest frame, which sits
   on the outer edge of the last bin); ``kronecker``: each frame wholly in the bin that contains its Delta;
5. empty bins (no weight) are dropped: B' = the number of kept bins.

**Decision:** a bin's output is the *weighted mean* of its frames (the method's weighted sum divided by the bin's
total weight). With the Kronecker kernel that is the mean of the bin's frames; with the linear kernel it keeps a
bin's scale independent of how many frames fall into it (a sum would scale a static clip's one bin by ~T, and an
isolated largest frame by 1e-7), so the layers after SGS see features on the scale they were trained on, which is
also what lets an existing teacher be fine-tuned with SGS inserted. Gradients reach the embedding through the linear
kernel's weights (the Kronecker kernel's assignment is piecewise constant: its embedding does not learn).

A batch keeps its clips' bins in magnitude order, padded to the batch's largest B' (``SGSResult.mask``). The weights
are computed in float64: the largest frame's kernel value is 1e-7 above zero, below float32's resolution at 1.

Layers after SGS (``time_masked``) can run a padded batch exactly as if every clip ran alone with its own B': every
3D convolution zeroes the padded slices of its input (they then act as the convolution's own zero padding) and
BatchNorm in training takes its statistics over the valid slices only.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal, NamedTuple

import numpy as np
import torch
from torch import Tensor, nn
from torch.utils.flop_counter import FlopCounterMode

Kernel = Literal["linear", "kronecker"]
KERNELS: tuple[str, ...] = ("linear", "kronecker")
EMBED_DIM = 8
KERNEL_FLOOR = 1e-7  # added inside the linear kernel's max(0, .): the largest frame keeps a nonzero weight

# ResNet stage names as in the papers (res1 = the stem) -> ResNet3D attribute names.
SGS_STAGES = {"res2": "layer1", "res3": "layer2", "res4": "layer3"}


@dataclass(frozen=True)
class SGSOptions:
    """Where SGS goes in a registered 3D ResNet and with which kernel."""

    stage: str = "res2"
    kernel: str = "linear"

    def __post_init__(self) -> None:
        if self.stage not in SGS_STAGES:
            raise ValueError(f"SGS stage must be one of {', '.join(SGS_STAGES)} (res2 = layer1 ... res4 = layer3), "
                             f"got {self.stage!r}")
        if self.kernel not in KERNELS:
            raise ValueError(f"SGS kernel must be one of {', '.join(KERNELS)}, got {self.kernel!r}")

    def model_kwargs(self) -> dict:
        """Builder keywords of every registered ResNet3D: ``build_model(name, C, **options.model_kwargs())``."""
        return {"sgs_stage": self.stage, "sgs_kernel": self.kernel}

    @property
    def suffix(self) -> str:
        """``+sgs`` for the defaults, else e.g. ``+sgs-res3-kronecker``: part of the teacher's default name."""
        parts = [p for p, default in ((self.stage, "res2"), (self.kernel, "linear")) if p != default]
        return "+sgs" + "".join(f"-{p}" for p in parts)


def sgs_teacher_name(architecture: str, sgs: SGSOptions | None, name: str | None = None) -> str:
    """The name a teacher's outputs go under (``trained_teachers/<name>/``, ``teacher/<name>/``): ``name`` if given, else the
    architecture plus the SGS suffix, so a plain and an SGS teacher of one architecture coexist in a store."""
    if name:
        return name
    return architecture + (sgs.suffix if sgs is not None else "")


class SGSResult(NamedTuple):
    """SGS output for a batch of N clips."""

    output: Tensor
    """(N, C, B'max, H, W): each clip's kept bins in order of magnitude, zero slices after its B'."""
    mask: Tensor
    """(N, B'max) bool: True for a clip's kept bins."""
    bins: Tensor
    """(N,) int64: B' of each clip."""


class SGS(nn.Module):
    """Similarity Guided Sampling over the temporal axis of (N, C, T, H, W) features; see the module docstring."""

    def __init__(self, channels: int, *, embed_dim: int = EMBED_DIM, num_bins: int | None = None,
                 kernel: str = "linear", hidden: int | None = None) -> None:
        super().__init__()
        if kernel not in KERNELS:
            raise ValueError(f"SGS kernel must be one of {', '.join(KERNELS)}, got {kernel!r}")
        hidden = hidden or max(embed_dim, channels // 2)
        self.kernel = kernel
        self.num_bins = num_bins  # None: B = T of the input
        self.embedding = nn.Sequential(nn.Conv1d(channels, hidden, 1), nn.ReLU(), nn.Conv1d(hidden, embed_dim, 1))

    def magnitudes(self, x: Tensor) -> Tensor:
        """Delta: (N, C, T, H, W) -> (N, T) norms of the embedded, spatially pooled slices (float32 or wider)."""
        z = self.embedding(x.mean(dim=(3, 4)))
        return torch.linalg.vector_norm(z.float() if z.dtype in (torch.float16, torch.bfloat16) else z, dim=1)

    def bin_weights(self, delta: Tensor) -> tuple[Tensor, Tensor]:
        """(weights (N, T, B'max) float64, B' (N,)): column j of a clip's weights makes its j-th kept bin (each
        column sums to 1: a weighted mean of the frames); columns after its B' are zero."""
        n, frames = delta.shape
        bins = self.num_bins or frames
        delta = delta.double()
        # gamma > 0 even when every magnitude is 0 (all frames then share the first bin)
        gamma = (delta.amax(dim=1, keepdim=True) / (2 * bins)).clamp_min(torch.finfo(torch.float64).tiny)
        centres = (2 * torch.arange(1, bins + 1, device=delta.device, dtype=torch.float64) - 1) * gamma  # (N, B)
        if self.kernel == "linear":
            distance = (delta[:, :, None] - centres[:, None, :]).abs() / gamma[:, :, None]
            weights = (1 - distance + KERNEL_FLOOR).clamp_min(0)  # (N, T, B)
        else:
            index = torch.floor(delta / (2 * gamma)).long().clamp(0, bins - 1)
            weights = nn.functional.one_hot(index, bins).double()
        totals = weights.sum(dim=1)  # (N, B)
        kept = totals > 0
        counts = kept.sum(dim=1)
        width = int(counts.max()) if n else 0
        # kept bin b of a clip becomes column (number of kept bins before it): a one-hot compaction matrix
        target = torch.where(kept, kept.long().cumsum(dim=1) - 1, torch.full_like(counts[:, None], width))
        compact = nn.functional.one_hot(target, width + 1)[:, :, :width].double()  # (N, B, B'max)
        normalised = weights / totals.clamp_min(torch.finfo(torch.float64).tiny)[:, None, :]
        return normalised @ compact, counts

    @staticmethod
    def resample(x: Tensor, weights: Tensor) -> Tensor:
        """(N, C, T, H, W) features and (N, T, B') weights -> (N, C, B', H, W), in the input's memory layout (the
        later convolutions run much faster channels-last on a CPU, and einsum returns a plain contiguous tensor)."""
        out = torch.einsum("ncthw,ntb->ncbhw", x, weights.to(x.dtype))
        if x.dim() == 5 and not x.is_contiguous() and x.is_contiguous(memory_format=torch.channels_last_3d):
            out = out.contiguous(memory_format=torch.channels_last_3d)
        return out

    def forward(self, x: Tensor) -> SGSResult:
        weights, counts = self.bin_weights(self.magnitudes(x))
        mask = torch.arange(weights.shape[2], device=x.device)[None, :] < counts[:, None]
        return SGSResult(self.resample(x, weights), mask, counts)


# ------------------------------------------------------------------------------------ padded batches after SGS
class TemporalValidity:
    """How many time slices of each clip are real while a padded SGS batch runs through the later layers.

    ``lengths`` holds B' per clip at the SGS output (``frames`` slices, padded). A later layer sees fewer slices
    after temporal stride-2 convolutions (3x3x3 with padding 1, or 1x1x1: both keep ceil(L / 2) of L valid slices),
    so the valid length at any resolution follows by halving. None: nothing is padded.
    """

    def __init__(self) -> None:
        self.lengths: Tensor | None = None
        self.frames = 0

    def set(self, lengths: Tensor, frames: int) -> None:
        self.lengths, self.frames = lengths, int(frames)

    def clear(self) -> None:
        self.lengths, self.frames = None, 0

    def lengths_at(self, frames: int) -> Tensor | None:
        if self.lengths is None:
            return None
        at, lengths = self.frames, self.lengths
        while at > frames:
            at, lengths = (at + 1) // 2, (lengths + 1) // 2
        if at != frames:
            raise RuntimeError(f"SGS padding: cannot map {self.frames} slices to a layer seeing {frames}")
        return lengths

    def mask_at(self, like: Tensor) -> Tensor | None:
        """(N, 1, T, 1, 1) 0/1 mask in ``like``'s dtype for a (N, C, T, H, W) input, or None if nothing is padded."""
        lengths = self.lengths_at(like.shape[2])
        if lengths is None or bool((lengths >= like.shape[2]).all()):
            return None
        valid = torch.arange(like.shape[2], device=like.device)[None, :] < lengths[:, None].to(like.device)
        return valid[:, None, :, None, None].to(like.dtype)


class TimeMaskedConv3d(nn.Conv3d):
    """A Conv3d that zeroes padded time slices of its input first (they then equal the convolution's own padding)."""

    validity: TemporalValidity

    def forward(self, x: Tensor) -> Tensor:
        mask = self.validity.mask_at(x)
        return super().forward(x if mask is None else x * mask)


class TimeMaskedBatchNorm3d(nn.BatchNorm3d):
    """BatchNorm3d whose training statistics cover only the valid time slices of a padded batch."""

    validity: TemporalValidity

    def forward(self, x: Tensor) -> Tensor:
        mask = self.validity.mask_at(x) if self.training else None
        if mask is None:
            return super().forward(x)
        count = mask.sum() * x.shape[3] * x.shape[4]
        dims = (0, 2, 3, 4)
        mean = (x * mask).sum(dims) / count
        centred = x - mean[None, :, None, None, None]
        var = (centred.square() * mask).sum(dims) / count
        if self.track_running_stats and self.running_mean is not None:
            with torch.no_grad():
                momentum = 0.1 if self.momentum is None else self.momentum
                self.running_mean.lerp_(mean.detach().to(self.running_mean.dtype), momentum)
                unbiased = var.detach() * (count / (count - 1).clamp_min(1))
                self.running_var.lerp_(unbiased.to(self.running_var.dtype), momentum)
                self.num_batches_tracked += 1
        out = centred * torch.rsqrt(var + self.eps)[None, :, None, None, None]
        if self.affine:
            out = out * self.weight[None, :, None, None, None] + self.bias[None, :, None, None, None]
        return out


def time_masked(module: nn.Module, validity: TemporalValidity) -> nn.Module:
    """Replace every Conv3d / BatchNorm3d inside ``module`` by its time-masked subclass (same parameters and state
    dict keys, so checkpoints of the plain network load unchanged); returns ``module``."""
    for parent in list(module.modules()):
        for name, child in list(parent.named_children()):
            if type(child) is nn.Conv3d:
                new = TimeMaskedConv3d(child.in_channels, child.out_channels, child.kernel_size, child.stride,
                                       child.padding, child.dilation, child.groups, child.bias is not None,
                                       child.padding_mode, device=child.weight.device, dtype=child.weight.dtype)
            elif type(child) is nn.BatchNorm3d:
                new = TimeMaskedBatchNorm3d(child.num_features, child.eps, child.momentum, child.affine,
                                            child.track_running_stats, device=child.weight.device,
                                            dtype=child.weight.dtype)
            else:
                continue
            if child.weight.device.type != "meta":
                new.load_state_dict(child.state_dict())
            new.validity = validity
            setattr(parent, name, new)
    return module


# ------------------------------------------------------------------------------------------------------ FLOPs
@dataclass(frozen=True)
class FlopTable:
    """FLOPs of one clip: a part that does not depend on B' (``fixed``: everything before SGS, its embedding, and
    the heads) and the part after SGS for each B' (``after_sgs``; empty for a model without SGS)."""

    fixed: int
    after_sgs: dict[int, int] = field(default_factory=dict)

    def per_clip(self, clips: int, bins: np.ndarray | None = None) -> np.ndarray:
        """FLOPs of each of ``clips`` clips (int64), from its B' (``bins``) for an SGS model."""
        if not self.after_sgs:
            return np.full(clips, self.fixed, dtype=np.int64)
        if bins is None:
            raise ValueError("an SGS model's FLOPs per clip need each clip's B'")
        lookup = np.zeros(max(self.after_sgs) + 1, dtype=np.int64)
        for b, flops in self.after_sgs.items():
            lookup[b] = flops
        return self.fixed + lookup[np.asarray(bins, dtype=np.int64)]

    def to_json(self) -> dict:
        return {"fixed": self.fixed, "after_sgs": {str(b): f for b, f in sorted(self.after_sgs.items())}}

    @classmethod
    def from_json(cls, data: dict) -> "FlopTable":
        return cls(int(data["fixed"]), {int(b): int(f) for b, f in data.get("after_sgs", {}).items()})


def _count(fn) -> int:
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        fn()
    return int(counter.get_total_flops())


def flop_table(model: nn.Module, input_shape: tuple[int, ...] = (1, 3, 16, 112, 112)) -> FlopTable:
    """Measure a model's FLOPs per clip with ``torch.utils.flop_counter`` (2 x multiply-accumulates of convolutions,
    linears and matmuls), as :func:`condi_pipe.models.measure_flops` does. For a model with SGS, the part after SGS
    is measured once for every B' = 1..T (SGS's resampling matmul included). Build the model on the "meta" device:
    FLOPs depend only on shapes, so nothing is computed."""
    from .registry import measure_flops

    sgs = getattr(model, "sgs", None)
    if sgs is None:
        return FlopTable(measure_flops(model, input_shape))
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    try:
        x = torch.zeros(input_shape, device=device)
        holder = {}

        def before():
            holder["features"] = model.features_before_sgs(x)
            sgs.magnitudes(holder["features"])

        fixed = _count(before)
        features = holder["features"]
        pooled = torch.zeros(input_shape[0], model.config.feature_dim, device=device)
        fixed += _count(lambda: model.heads(pooled))
        frames = features.shape[2]
        after = {}
        bins = sgs.num_bins or frames
        for b in range(1, frames + 1):
            weights = torch.zeros(input_shape[0], frames, b, device=device)
            # the compaction of the bin weights to B' columns (bin_weights), the resampling, the later layers
            compaction = (torch.zeros(input_shape[0], frames, bins, device=device),
                          torch.zeros(input_shape[0], bins, b, device=device))
            after[b] = (_count(lambda: compaction[0] @ compaction[1])
                        + _count(lambda: model.features_after_sgs(sgs.resample(features, weights))))
    finally:
        model.train(was_training)
    return FlopTable(fixed, after)
