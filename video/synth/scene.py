"""Scene: object looks and backgrounds (sampled), the periodic texture tile, and drawing objects into frames."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from condi_pipe.video.synth.config import SynthConfig
from condi_pipe.video.synth.random_streams import _rgb, _uniform


@dataclass(frozen=True)
class Look:
    """Appearance of one object."""

    shape: str
    radius: float  # circumradius in pixels
    colour: tuple[float, float, float]
    marker_colour: tuple[float, float, float]


@dataclass(frozen=True)
class Background:
    texture: str
    scale: float  # blob scale / stripe period / checker cell, pixels
    angle: float  # radians (stripes, checker)
    sharpness: float
    phase: float
    colour1: tuple[float, float, float]
    colour2: tuple[float, float, float]
    offset: tuple[float, float]  # initial camera offset in the tile (x, y)


def _segment_distance(p: np.ndarray, a: np.ndarray, b: np.ndarray) -> float:
    ab = b - a
    denom = float(ab @ ab)
    t = 0.0 if denom == 0.0 else min(1.0, max(0.0, float((p - a) @ ab) / denom))
    return float(np.linalg.norm(p - (a + t * ab)))


def _sample_look(rng: np.random.Generator, config: SynthConfig, background: Background, radius: float) -> Look:
    shape = config.shapes[int(rng.integers(len(config.shapes)))]
    a, b = np.array(background.colour1), np.array(background.colour2)
    best, best_dist = None, -1.0
    for _ in range(64):  # rejection sampling for contrast; keeps the most distant draw if none qualifies
        c = np.array(_rgb(rng))
        d = _segment_distance(c, a, b)
        if d > best_dist:
            best, best_dist = c, d
        if d >= config.min_object_contrast:
            break
    colour = tuple(float(v) for v in best)
    luminance = 0.299 * colour[0] + 0.587 * colour[1] + 0.114 * colour[2]
    marker = (20.0, 20.0, 20.0) if luminance > 127.5 else (235.0, 235.0, 235.0)
    return Look(shape=shape, radius=radius, colour=colour, marker_colour=marker)


def _sample_background(rng: np.random.Generator, config: SynthConfig) -> Background:
    texture = config.textures[int(rng.integers(len(config.textures)))]
    scale = _uniform(
        rng,
        {"noise": config.noise_blob_scale, "stripes": config.stripe_period, "checker": config.checker_cell}[texture],
    )
    angle = _uniform(rng, (0.0, math.pi))
    sharpness = _uniform(rng, config.texture_sharpness)
    phase = _uniform(rng, (0.0, 2 * math.pi))
    c1 = np.array(_rgb(rng))
    c2 = np.clip(c1 + rng.normal(0.0, config.background_colour_spread, size=3), 0.0, 255.0)
    tile = config.texture_tile
    offset = (_uniform(rng, (0.0, tile)), _uniform(rng, (0.0, tile)))
    return Background(
        texture=texture,
        scale=scale,
        angle=angle,
        sharpness=sharpness,
        phase=phase,
        colour1=tuple(float(v) for v in c1),
        colour2=tuple(float(v) for v in c2),
        offset=offset,
    )


def texture_tile(background: Background, config: SynthConfig, rng: np.random.Generator) -> np.ndarray:
    """Periodic RGB texture tile (T, T, 3) float32, 0..255."""
    t = config.texture_tile
    if background.texture == "noise":
        white = rng.standard_normal((t, t))
        f = np.fft.fftfreq(t)
        sigma = background.scale
        lowpass = np.exp(-2.0 * (math.pi * sigma) ** 2 * (f[:, None] ** 2 + f[None, :] ** 2))
        field = np.real(np.fft.ifft2(np.fft.fft2(white) * lowpass))
        field = (field - field.mean()) / (field.std() + 1e-12)
        value = np.clip(0.5 + 0.25 * field, 0.0, 1.0)
    else:
        coords = np.arange(t, dtype=np.float64)
        xx, yy = coords[None, :], coords[:, None]
        if background.texture == "stripes":
            cycles = t / background.scale
        else:  # checker: a cell is half a period of each of the two orthogonal waves
            cycles = t / (2.0 * background.scale)
        # integer wave numbers keep the tile periodic
        a = int(round(cycles * math.cos(background.angle)))
        b = int(round(cycles * math.sin(background.angle)))
        if a == 0 and b == 0:
            a = 1
        w1 = np.sin(2 * math.pi * (a * xx + b * yy) / t + background.phase)
        if background.texture == "stripes":
            raw = w1
        else:
            raw = w1 * np.sin(2 * math.pi * (-b * xx + a * yy) / t)
        s = background.sharpness
        value = 0.5 + 0.5 * np.tanh(s * raw) / math.tanh(s)
    c1 = np.asarray(background.colour1)
    c2 = np.asarray(background.colour2)
    return (c1 + (c2 - c1) * value[..., None]).astype(np.float32)


def _sample_background_view(tile: np.ndarray, ox: float, oy: float, h: int, w: int) -> np.ndarray:
    """Frame-sized view of the periodic tile at camera offset (ox, oy), bilinear, (H, W, 3)."""
    t = tile.shape[0]
    ix, iy = math.floor(ox), math.floor(oy)
    fx, fy = np.float32(ox - ix), np.float32(oy - iy)
    xs0 = (np.arange(w) + ix) % t
    ys0 = (np.arange(h) + iy) % t
    rows0 = tile[ys0]
    if fy == 0 and fx == 0:
        return rows0[:, xs0].copy()
    xs1 = (xs0 + 1) % t
    rows1 = tile[(ys0 + 1) % t]
    top = rows0[:, xs0] * (1 - fx) + rows0[:, xs1] * fx
    bottom = rows1[:, xs0] * (1 - fx) + rows1[:, xs1] * fx
    return top * (1 - fy) + bottom * fy


def _shape_sdf(shape: str, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Approximate signed distance (object units, circumradius 1) of a shape pointing along +u."""
    if shape == "disc":
        return np.sqrt(u * u + v * v) - 1.0
    if shape == "ellipse":
        b = 0.55
        return (np.sqrt(u * u + (v / b) ** 2) - 1.0) * b
    if shape == "square":
        return np.maximum(np.abs(u), np.abs(v)) - math.sqrt(0.5)
    if shape == "triangle":  # vertices at angles 0, 120, 240 degrees; inradius 0.5
        c = 0.5
        s = math.sqrt(3.0) / 2.0
        return np.maximum(np.maximum(-u, c * u + s * v), c * u - s * v) - 0.5
    if shape == "cross":
        au, av = np.abs(u), np.abs(v)
        arm, half = 0.95, 0.3
        return np.minimum(np.maximum(au - arm, av - half), np.maximum(au - half, av - arm))
    raise ValueError(f"unknown shape {shape!r}")


def _draw_object(
    frames: np.ndarray, look: Look, states: np.ndarray, config: SynthConfig, marker: tuple[float, float]
) -> np.ndarray:
    """Alpha-composite the object over ``frames`` (n, H, W, 3) in place; returns its coverage (n, H, W).

    Work is restricted to the bounding box of the object over all frames.
    """
    n, h, w = frames.shape[0], frames.shape[1], frames.shape[2]
    alpha_full = np.zeros((n, h, w), dtype=np.float32)
    ext = look.radius * states[:, 3]
    x0 = int(max(0, math.floor(float(np.min(states[:, 0] - ext))) - 1))
    x1 = int(min(w, math.ceil(float(np.max(states[:, 0] + ext))) + 2))
    y0 = int(max(0, math.floor(float(np.min(states[:, 1] - ext))) - 1))
    y1 = int(min(h, math.ceil(float(np.max(states[:, 1] + ext))) + 2))
    if x0 >= x1 or y0 >= y1:
        return alpha_full
    xs = np.arange(x0, x1, dtype=np.float32)[None, None, :]
    ys = np.arange(y0, y1, dtype=np.float32)[None, :, None]
    cx = states[:, 0].astype(np.float32)[:, None, None]
    cy = states[:, 1].astype(np.float32)[:, None, None]
    cos = np.cos(states[:, 2]).astype(np.float32)[:, None, None]
    sin = np.sin(states[:, 2]).astype(np.float32)[:, None, None]
    rad = (look.radius * states[:, 3]).astype(np.float32)[:, None, None]
    dx = xs - cx
    dy = ys - cy
    u = (dx * cos + dy * sin) / rad
    v = (dy * cos - dx * sin) / rad
    alpha = np.clip(0.5 - _shape_sdf(look.shape, u, v) * rad, 0.0, 1.0)
    offset, mradius = marker
    mu = np.sqrt((u - offset) ** 2 + v * v) - mradius
    malpha = np.clip(0.5 - mu * rad, 0.0, 1.0) * alpha
    region = frames[:, y0:y1, x0:x1, :]
    colour = np.asarray(look.colour, dtype=np.float32)
    mcolour = np.asarray(look.marker_colour, dtype=np.float32)
    region += alpha[..., None] * (colour - region) + malpha[..., None] * (mcolour - colour)
    alpha_full[:, y0:y1, x0:x1] = alpha
    return alpha_full
