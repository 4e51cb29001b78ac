"""Motion energy: the mean absolute difference between consecutive frames of a clip, checked on hand-made frames,
and the ranking the Motion energy selection makes from it."""

from __future__ import annotations

import numpy as np
import pytest

from condi_pipe.methods.motion_energy import clip_motion_energy
from condi_pipe.methods.samplers import rank_within_videos


def frames_of(values, height=2, width=2) -> np.ndarray:
    """One clip whose frame t is the constant ``values[t]`` (a tuple: one value per RGB channel)."""
    values = [v if isinstance(v, tuple) else (v, v, v) for v in values]
    return np.stack([np.broadcast_to(np.array(v, np.uint8), (height, width, 3)) for v in values])


def test_energy_is_the_mean_absolute_difference_of_consecutive_frames():
    clips = np.stack([
        frames_of([7, 7, 7, 7]),  # static: 0
        frames_of([0, 10, 0, 10]),  # |10| three times: 10
        frames_of([250, 0, 0, 0]),  # one jump down of 250 over three frame pairs (no uint8 wrap-around): 250 / 3
        frames_of([(0, 0, 0), (0, 0, 30), (0, 0, 30), (0, 0, 30)]),  # only blue moves once: 30 / (3 pairs x 3 channels)
    ])
    np.testing.assert_allclose(clip_motion_energy(clips), [0.0, 10.0, 250 / 3, 30 / 9], rtol=1e-15)


def test_energy_counts_every_pixel_of_every_frame_pair():
    rng = np.random.default_rng(0)
    clips = rng.integers(0, 256, (3, 16, 12, 10, 3), dtype=np.uint8)  # T = 16 as stored, a small picture
    by_hand = [np.mean([abs(int(clip[t + 1, y, x, c]) - int(clip[t, y, x, c]))
                        for t in range(15) for y in range(12) for x in range(10) for c in range(3)])
               for clip in clips]
    np.testing.assert_allclose(clip_motion_energy(clips), by_hand, rtol=1e-12)


def test_a_clip_with_more_motion_ranks_first_and_static_clips_tie_to_the_lower_index():
    # video 0: a static clip, a moving one, another static one, a slightly moving one; video 1: two static clips
    clips = np.stack([frames_of([5, 5, 5]), frames_of([0, 40, 0]), frames_of([9, 9, 9]), frames_of([0, 1, 2]),
                      frames_of([3, 3, 3]), frames_of([200, 200, 200])])
    energy = clip_motion_energy(clips)
    ranks = rank_within_videos(energy, np.array([0, 4, 6]))
    assert ranks.tolist() == [2, 0, 3, 1, 0, 1]


@pytest.mark.parametrize("clips, message", [
    (np.zeros((2, 4, 2, 2, 3), np.int16), "must be uint8"),
    (np.zeros((4, 2, 2, 3), np.uint8), "must be uint8 \\(B, T, H, W, C\\)"),
    (np.zeros((2, 1, 2, 2, 3), np.uint8), "at least 2 frames"),
])
def test_bad_clip_arrays_are_refused(clips, message):
    with pytest.raises(ValueError, match=message):
        clip_motion_energy(clips)
