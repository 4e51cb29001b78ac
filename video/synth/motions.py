"""The per-class motion patterns: sampling a class's motion and size, and the object's state per frame."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from condi_pipe.video.synth.config import CLASSES, SynthConfig
from condi_pipe.video.synth.random_streams import _uniform
from condi_pipe.video.synth.scene import Look


@dataclass(frozen=True)
class Motion:
    """Parameters of one class motion (fields a motion does not use are 0)."""

    cls: int
    x0: float  # centre (for translations: start position; the along-axis coordinate is wrapped when `wrap`)
    y0: float
    angle0: float  # orientation in radians; marker at (cos, sin) in screen coordinates (y down)
    speed: float  # signed: px/frame (translate, + = right/down) or rad/frame (rotate, + = clockwise on screen)
    amplitude: float = 0.0
    period: float = 0.0
    phase: float = 0.0
    scale_ratio: float = 1.0
    wrap: bool = False


def _sample_size(rng: np.random.Generator, cls: int, config: SynthConfig) -> tuple[float, float]:
    """(radius, scale ratio) of an object of class ``cls``.

    Grow/Shrink objects have radius ``r`` at mid-clip and sweep ``r * ratio ** (f - 0.5)``, f in [0, 1], over each
    clip. Every other object keeps one radius drawn from that same distribution (``f`` uniform), so the size seen
    in any frame carries no information about the class.
    """
    base = _uniform(rng, config.object_radius)
    ratio = _uniform(rng, config.scale_ratio)
    f = _uniform(rng, (0.0, 1.0))
    if CLASSES[cls] in ("Grow", "Shrink"):
        return base, ratio
    return base * ratio ** (f - 0.5), 1.0


def motion_extent(look: Look, motion: Motion) -> float:
    """Largest distance in pixels from the object centre to its outline over the motion."""
    return look.radius * math.sqrt(motion.scale_ratio)


def _sample_motion(
    rng: np.random.Generator, cls: int, look: Look, ratio: float, config: SynthConfig, *, in_clip: bool
) -> Motion:
    """Motion of class ``cls``. ``in_clip``: a distractor that must stay fully in frame for one clip (no wrap)."""
    name = CLASSES[cls]
    w, h = config.frame_width, config.frame_height
    r = look.radius
    angle0 = _uniform(rng, (0.0, 2 * math.pi))
    if name.startswith("Translate"):
        speed = _uniform(rng, config.translate_speed)
        horizontal = name in ("TranslateLeft", "TranslateRight")
        sign = -1.0 if name in ("TranslateLeft", "TranslateUp") else 1.0
        along, across = (w, h) if horizontal else (h, w)
        if in_clip:
            travel = speed * (config.clip_frames - 1)
            lo = r + (travel if sign < 0 else 0.0)
            hi = along - r - (travel if sign > 0 else 0.0)
            p = _uniform(rng, (lo, max(lo, hi)))
        else:
            p = _uniform(rng, (-r, along + r))
        q = _uniform(rng, (r, across - r))
        x0, y0 = (p, q) if horizontal else (q, p)
        return Motion(cls, x0, y0, angle0, sign * speed, wrap=not in_clip)
    if name.startswith("Rotate"):
        speed = math.radians(_uniform(rng, config.rotate_speed_deg))
        sign = 1.0 if name == "RotateClockwise" else -1.0
        x0, y0 = _uniform(rng, (r, w - r)), _uniform(rng, (r, h - r))
        return Motion(cls, x0, y0, angle0, sign * speed)
    if name in ("Grow", "Shrink"):
        ext = r * math.sqrt(ratio)
        x0, y0 = _uniform(rng, (ext, w - ext)), _uniform(rng, (ext, h - ext))
        return Motion(cls, x0, y0, angle0, 0.0, scale_ratio=ratio)
    if name.startswith("Oscillate"):
        amplitude = _uniform(rng, config.oscillate_amplitude)
        period = _uniform(rng, config.oscillate_period)
        phase = _uniform(rng, (0.0, 2 * math.pi))
        horizontal = name == "OscillateHorizontal"
        along, across = (w, h) if horizontal else (h, w)
        amplitude = min(amplitude, along / 2.0 - r)  # a big object oscillating vertically stays in frame
        p = _uniform(rng, (r + amplitude, along - r - amplitude))
        q = _uniform(rng, (r, across - r))
        x0, y0 = (p, q) if horizontal else (q, p)
        return Motion(cls, x0, y0, angle0, 0.0, amplitude=amplitude, period=period, phase=phase)
    raise AssertionError(name)


def motion_states(motion: Motion, look: Look, tau: np.ndarray, k: np.ndarray, config: SynthConfig) -> np.ndarray:
    """Object state per frame: array (n, 4) of x, y, angle (radians), scale (radius multiplier).

    ``tau``: motion clock per frame; ``k``: frame index within the clip (Grow/Shrink), ``(clip_frames-1)/2`` for a
    held object (scale 1).
    """
    tau = np.asarray(tau, dtype=np.float64)
    k = np.asarray(k, dtype=np.float64)
    n = tau.shape[0]
    x = np.full(n, motion.x0)
    y = np.full(n, motion.y0)
    angle = np.full(n, motion.angle0)
    scale = np.ones(n)
    name = CLASSES[motion.cls]
    if name.startswith("Translate"):
        horizontal = name in ("TranslateLeft", "TranslateRight")
        start = motion.x0 if horizontal else motion.y0
        p = start + motion.speed * tau
        if motion.wrap:
            r = motion_extent(look, motion)
            span = (config.frame_width if horizontal else config.frame_height) + 2 * r
            p = np.mod(p + r, span) - r
        if horizontal:
            x = p
        else:
            y = p
    elif name.startswith("Rotate"):
        angle = motion.angle0 + motion.speed * tau
    elif name in ("Grow", "Shrink"):
        sign = 1.0 if name == "Grow" else -1.0
        frac = k / (config.clip_frames - 1) - 0.5
        scale = np.exp(sign * math.log(motion.scale_ratio) * frac)
    elif name.startswith("Oscillate"):
        d = motion.amplitude * np.sin(2 * math.pi * tau / motion.period + motion.phase)
        if name == "OscillateHorizontal":
            x = motion.x0 + d
        else:
            y = motion.y0 + d
    return np.stack([x, y, angle, scale], axis=1)
