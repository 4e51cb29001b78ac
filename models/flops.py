"""FLOPs of one clip through a model, counted once by ``torch.utils.flop_counter.FlopCounterMode``.

The counter counts a multiply-add as 2 FLOPs, for convolutions, linear layers and matmuls only (nothing for
BatchNorm, activations or pooling), so the figure compares models by their arithmetic, not by their measured time.
A model is counted on one clip at its own input: the stored clip's (T, H, W) (default: the model's
``config.clip_length`` x ``config.crop`` x ``config.crop``, 16x112x112 for every shipped model), reduced as the model
reduces it before its first layer (``network_input_shape``: a student that reads every second frame at half size
is counted at 8x56x56). A model with SGS is counted keeping every temporal slice (B' = T'), its most expensive
clip; the clips it actually kept are in its teacher cache (``clips.parquet`` ``flops``).

``condi-pipe time-models`` stores these counts beside the timings (``storage.model_timings``); the report reads them
from there (GFLOPs per video in Table 3), without building a model.

>>> from torch import nn
>>> clip_flops(nn.Conv3d(3, 4, 1, bias=False), (1, 3, 2, 4, 4)).flops  # 2 x (4 x 2 x 4 x 4 outputs x 3 inputs)
768
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import nn

from .registry import build_model, network_input_shape
from .sgs import flop_table

#: How the counts are made, for footers and stored records.
COUNTER = ("torch.utils.flop_counter.FlopCounterMode, one clip in eval mode: a multiply-add = 2 FLOPs (convolutions, "
           "linear layers, matmuls; nothing for BatchNorm, activations, pooling)")


class ClipFlops(NamedTuple):
    """FLOPs of one clip and the (T, H, W) of the network input it was counted at."""

    flops: int
    input_shape: tuple[int, int, int]

    @property
    def gflops(self) -> float:
        return self.flops / 1e9


def model_input_shape(model: nn.Module) -> tuple[int, int, int, int, int]:
    """(1, 3, T, H, W) of one clip as the model's config expects it (16x112x112 without a config)."""
    config = getattr(model, "config", None)
    frames, crop = getattr(config, "clip_length", 16), getattr(config, "crop", 112)
    return 1, 3, int(frames), int(crop), int(crop)


def _as_model(model: nn.Module | str, num_classes: int, width: float | None, build_kwargs: dict) -> nn.Module:
    if not isinstance(model, str):
        return model
    with torch.device("meta"):  # FLOPs depend only on shapes: no weights allocated, nothing computed
        return build_model(model, num_classes=num_classes, width=width, **build_kwargs)


def clip_flops(model: nn.Module | str, clip_shape: tuple[int, ...] | None = None, *, num_classes: int = 101,
               width: float | None = None, **build_kwargs) -> ClipFlops:
    """FLOPs of one clip through ``model`` (a module, or a registered name built on the "meta" device with
    ``num_classes``, ``width`` and ``build_kwargs``) in eval mode. ``clip_shape``: the stored clip as (1, 3, T, H, W)
    (default: the model's own input, :func:`model_input_shape`); the model's input reduction applies to it."""
    model = _as_model(model, num_classes, width, build_kwargs)
    shape = tuple(int(s) for s in (clip_shape or model_input_shape(model)))
    if len(shape) != 5 or shape[0] != 1:
        raise ValueError(f"clip_shape must be (1, 3, T, H, W) for one clip, got {shape}")
    table = flop_table(model, shape)  # measure_flops, or for an SGS model every B'
    if table.after_sgs:
        return ClipFlops(table.fixed + table.after_sgs[max(table.after_sgs)], shape[2:])
    return ClipFlops(table.fixed, tuple(network_input_shape(model, shape)[2:]))


def clip_gflops(model: nn.Module | str, clip_shape: tuple[int, ...] | None = None, **options) -> float:
    """GFLOPs (1e9 FLOPs, a multiply-add = 2) of one clip through ``model``; options as :func:`clip_flops`."""
    return clip_flops(model, clip_shape, **options).gflops
