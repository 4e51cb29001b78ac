"""Turning stored clips into network input: the one place pixels are normalised.

Clips are stored as uint8 tensors (B, T, H, W, 3), RGB. Networks take float (B, 3, T, H, W). Each model's
``ModelConfig`` names the normalisation its weights expect; every model's ``preprocess`` calls
:func:`preprocess_clips` with that config, so the rule lives here only.

Mean and std are always written per RGB channel on the 0..1 scale, and the network sees
``(pixel / 255 - mean) / std``. A convention that works on 0..255 values with std 1 (3D-ResNets) is the same
formula with std = 1/255.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

RGB = tuple[float, float, float]


@dataclass(frozen=True)
class Normalization:
    """Per-channel mean and std on the 0..1 scale; ``name`` is how configs and run records refer to it."""

    name: str
    mean: RGB
    std: RGB
    note: str = ""


# torchvision's video models (r3d_18, r2plus1d_18, mc3_18) were trained with these Kinetics-400 statistics.
KINETICS_TORCHVISION = Normalization(
    "kinetics_torchvision",
    mean=(0.43216, 0.394666, 0.37645),
    std=(0.22803, 0.22145, 0.216989),
    note="torchvision video models: (x/255 - mean) / std",
)

# Hara et al.'s 3D-ResNets (and Kopuklu et al.'s Efficient-3DCNNs, which reuses its data code) subtract the
# ActivityNet mean from 0..255 pixels and do not divide by a std: std 1 on 0..255 is 1/255 on 0..1.
RESNETS_3D = Normalization(
    "3d_resnets",
    mean=(114.7748 / 255, 107.7354 / 255, 99.4750 / 255),
    std=(1 / 255, 1 / 255, 1 / 255),
    note="3D-ResNets / Efficient-3DCNNs: 0..255 pixels minus (114.7748, 107.7354, 99.4750), std 1",
)

# For networks trained from scratch here: a plain, roughly unit-variance input.
SIMPLE = Normalization(
    "simple",
    mean=(0.45, 0.45, 0.45),
    std=(0.225, 0.225, 0.225),
    note="trained from scratch here: (x/255 - 0.45) / 0.225",
)

NORMALIZATIONS: dict[str, Normalization] = {n.name: n for n in (KINETICS_TORCHVISION, RESNETS_3D, SIMPLE)}


def get_normalization(name: str) -> Normalization:
    """The normalisation called ``name``; ValueError listing the known ones otherwise."""
    try:
        return NORMALIZATIONS[name]
    except KeyError:
        raise ValueError(f"unknown normalization {name!r}; choose one of: {', '.join(NORMALIZATIONS)}") from None


def preprocess_clips(clips: Tensor, mean: RGB, std: RGB) -> Tensor:
    """uint8 clips (B, T, H, W, 3) RGB -> float32 (B, 3, T, H, W), ``(pixel / 255 - mean) / std``.

    No resizing or cropping: clips are expected at the model's ``config.crop`` already (the data layer's job).
    """
    if clips.dtype != torch.uint8:
        raise TypeError(f"clips must be uint8 (B, T, H, W, 3) as stored, got dtype {clips.dtype}")
    if clips.ndim != 5 or clips.shape[-1] != 3:
        raise ValueError(f"clips must have shape (B, T, H, W, 3), got {tuple(clips.shape)}")
    return _normalised(clips, mean, std, pixels_per_value=1)


def _normalised(values: Tensor, mean: RGB, std: RGB, pixels_per_value: int) -> Tensor:
    """(B, T, H, W, 3) sums of ``pixels_per_value`` 0..255 pixels -> float32 (B, 3, T, H, W) normalised means.

    The stored (B, T, H, W, 3) layout is exactly channels-last 3D, so the permuted view converts to float without a
    transposing copy; one multiply and one subtract then normalise in place."""
    channels_first = values.permute(0, 4, 1, 2, 3).to(torch.float32, memory_format=torch.preserve_format)
    mean_t = torch.tensor(mean, dtype=torch.float64)
    std_t = torch.tensor(std, dtype=torch.float64)
    scale = (1.0 / (255.0 * pixels_per_value * std_t)).to(torch.float32).to(values.device).view(1, 3, 1, 1, 1)
    shift = (mean_t / std_t).to(torch.float32).to(values.device).view(1, 3, 1, 1, 1)
    return channels_first.mul_(scale).sub_(shift)


def preprocess_reduced_clips(clips: Tensor, mean: RGB, std: RGB, frame_stride: int, block: int) -> Tensor:
    """uint8 clips (B, T, H, W, 3) -> float32 (B, 3, ceil(T / frame_stride), H // block, W // block): every
    ``frame_stride``-th frame, each ``block`` x ``block`` pixel square averaged, normalised like
    :func:`preprocess_clips` (the same numbers as normalising first and averaging after).

    The squares are summed in int16 on strided views of the uint8 clip before anything becomes float, so a network
    that reads clips at reduced size pays for the pixels it reads, not for converting the whole clip (measured on a
    2-core CPU: 0.3 instead of 0.6-1.1 ms per 16x112x112 clip).
    """
    if clips.dtype != torch.uint8 or clips.ndim != 5 or clips.shape[-1] != 3:
        raise ValueError(f"clips must be uint8 (B, T, H, W, 3), got {clips.dtype} {tuple(clips.shape)}")
    if block * block * 255 > torch.iinfo(torch.int16).max:
        raise ValueError(f"a {block}x{block} block would overflow the int16 pixel sums")
    frames = clips[:, ::frame_stride]
    h, w = frames.shape[2] // block * block, frames.shape[3] // block * block
    sums = frames[:, :, 0:h:block, 0:w:block].to(torch.int16)
    for i in range(block):
        for j in range(block):
            if i or j:
                sums += frames[:, :, i:h:block, j:w:block]
    return _normalised(sums, mean, std, pixels_per_value=block * block)
