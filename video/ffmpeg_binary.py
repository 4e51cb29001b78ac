"""Which ffmpeg binary to run: the system one if present, else the static build in the imageio-ffmpeg wheel.

A fresh machine has no ffmpeg on PATH, so the wheel's binary makes ``pip install`` enough to decode video.
"""

from __future__ import annotations

import functools
import os
import shutil


@functools.lru_cache(maxsize=None)
def ffmpeg_exe() -> str:
    """Path of the ffmpeg executable; ``CONDI_PIPE_FFMPEG`` overrides the search."""
    override = os.environ.get("CONDI_PIPE_FFMPEG")
    if override:
        return override
    system = shutil.which("ffmpeg")
    if system:
        return system
    import imageio_ffmpeg

    return imageio_ffmpeg.get_ffmpeg_exe()
