"""The Motion energy selection of the report: every clip of the split ranked by its motion energy
(:func:`condi_pipe.methods.motion_energy.clip_motion_energy`), computed from the extract stage's stored clips.

Clips are read in report order, :data:`MOTION_BLOCK_CLIPS` at a time (~600 kB of frames per clip). The selection
time is the arithmetic and the ranking, measured here; reading and decompressing the clips is not in it, as
decoding is in no method's time (a deployment decodes every clip for this selector, as it does for a student).
"""

from __future__ import annotations

from functools import partial

import numpy as np

from condi_pipe.methods.motion_energy import clip_motion_energy
from condi_pipe.methods.video_time import timed
from condi_pipe.report.inputs import ReportInputs
from condi_pipe.report.predictions import rank_timed

MOTION_BLOCK_CLIPS = 64  # clips read and scored at once (one clip-array shard by default): ~40 MB of frames


def motion_energy_scores(inputs: ReportInputs) -> tuple[np.ndarray, float]:
    """(M,) motion energy of every clip of the split in report order, and the seconds its arithmetic took
    (raises OutputUnavailable when the store holds no clip array)."""
    energy = np.empty(inputs.num_clips, dtype=np.float64)
    seconds = 0.0
    for start in range(0, inputs.num_clips, MOTION_BLOCK_CLIPS):
        stop = min(start + MOTION_BLOCK_CLIPS, inputs.num_clips)
        frames = inputs.clip_frames(start, stop)
        energy[start:stop], took = timed(partial(clip_motion_energy, frames))
        seconds += took
    return energy, seconds


def motion_energy_ranking(inputs: ReportInputs) -> tuple[np.ndarray, np.ndarray, float]:
    """(ranks, order, seconds) of the clips by motion energy, highest first (memoised on ``inputs``); the seconds
    are the motion-energy arithmetic plus the ranking."""
    def make():
        energy, arithmetic = motion_energy_scores(inputs)
        ranks, order, ranking = rank_timed(inputs, lambda: energy)
        return ranks, order, arithmetic + ranking
    return inputs.cached(("ranks", "motion-energy"), make)
