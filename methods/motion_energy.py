"""Motion energy of clips: the training-free clip ranking of the Motion energy baseline (after MGSampler, Zhi et
al., ICCV 2021, which samples frames by the motion between consecutive frames).

A clip's motion energy is the mean absolute difference between its consecutive frames, over every pixel and RGB
channel of its stored uint8 frames (T, H, W, 3):

    E = sum_{t < T-1} sum_{y, x, c} |x[t+1, y, x, c] - x[t, y, x, c]| / ((T - 1) H W 3),   in [0, 255]

Higher = send to the teacher first (:func:`condi_pipe.methods.samplers.rank_within_videos`: ties, such as static
clips, go to the lower clip index). RGB rather than grey: a grey conversion picks a luma weighting (BT.601 or
BT.709) and hides changes of colour at equal brightness, and the three channels cost one pass over the stored
array either way. The sums are integers, so the value does not depend on the order of the additions.

>>> still = np.full((1, 3, 2, 2, 3), 9, np.uint8)
>>> moving = np.stack([np.zeros((2, 2, 3), np.uint8), np.full((2, 2, 3), 4, np.uint8),
...                    np.zeros((2, 2, 3), np.uint8)])[None]
>>> clip_motion_energy(np.concatenate([still, moving])).tolist()
[0.0, 4.0]
"""

from __future__ import annotations

import numpy as np


def clip_motion_energy(clips: np.ndarray) -> np.ndarray:
    """(B,) float64 motion energy of each uint8 clip of ``clips`` (B, T, H, W, C), T >= 2 frames.

    Frame pair by frame pair, vectorised over the clips, in int16 (a uint8 difference would wrap around): the
    temporaries stay one frame per clip, whatever T is.
    """
    clips = np.asarray(clips)
    if clips.dtype != np.uint8 or clips.ndim != 5:
        raise ValueError(f"clips must be uint8 (B, T, H, W, C), got {clips.dtype} {clips.shape}")
    batch, frames = clips.shape[:2]
    if frames < 2:
        raise ValueError(f"motion energy needs at least 2 frames per clip, got {frames}")
    totals = np.zeros(batch, dtype=np.int64)
    difference = np.empty((batch, *clips.shape[2:]), dtype=np.int16)
    for t in range(frames - 1):
        np.subtract(clips[:, t + 1], clips[:, t], out=difference, dtype=np.int16)
        np.abs(difference, out=difference)
        totals += difference.reshape(batch, -1).sum(axis=1, dtype=np.int64)
    values_per_clip = (frames - 1) * int(np.prod(clips.shape[2:]))
    return totals / float(values_per_clip)
