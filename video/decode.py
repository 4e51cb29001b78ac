"""Decode a video file into non-overlapping 16-frame RGB clips with the ffmpeg binary.

Why the ffmpeg binary (through ffmpeg-python) rather than PyAV: resizing, cropping, rotation and pixel-aspect
correction all run inside ffmpeg's own filter graph in C, and the process only hands back 112x112 frames, so
the Python side copies ~37 KB per frame; it also isolates crashes of broken files in a child process. The
measured rate is in ``bench/extract.py``.

The filter chain, in order: ffmpeg's autorotate (honours the display-matrix rotation tag), ``scale=iw*sar:ih``
(square pixels), optional ``fps=N`` resampling, resize so the short side is 128, centre crop 112x112.
"""

from __future__ import annotations

import math
import os
import re
import subprocess
import tempfile
from dataclasses import dataclass
from typing import NamedTuple

import ffmpeg
import numpy as np

from condi_pipe.video.ffmpeg_binary import ffmpeg_exe

CLIP_LENGTH = 16


@dataclass(frozen=True)
class DecodeOptions:
    """How frames are sampled and cropped. Defaults are the paper's: native rate, short side 128, crop 112."""

    short_side: int = 128
    crop: int = 112
    fps: float | None = None  # None keeps the native frame rate
    clip_length: int = CLIP_LENGTH


class DecodeError(Exception):
    """A file that yields no frames. ``kind`` is a short machine-readable category."""

    def __init__(self, kind: str, message: str):
        super().__init__(message)
        self.kind = kind


class StreamInfo(NamedTuple):
    codec: str
    width: int  # display size: after rotation and pixel-aspect correction
    height: int
    fps: float
    rotation: int


class DecodedVideo(NamedTuple):
    clips: np.ndarray  # uint8 (N, 16, crop, crop, 3)
    frames: int  # decoded frames before padding
    pad_frames: int  # repeats of the last frame added to fill the last clip
    info: StreamInfo
    warnings: list[str]  # decoder errors on a file that still gave frames (e.g. a broken NAL unit)


_STREAM_RE = re.compile(r"Stream #\d+:\d+.*?: Video: (?P<codec>\w+).*?, (?P<w>\d{2,5})x(?P<h>\d{2,5})(?P<rest>.*)")
_SAR_RE = re.compile(r"SAR (\d+):(\d+)")
_FPS_RE = re.compile(r"([\d.]+)k? (?:fps|tbr)")
_ROTATION_RE = re.compile(r"rotation of (-?[\d.]+) degrees")
_ERROR_RE = re.compile(r"error|invalid|corrupt|missing|truncat|broken", re.IGNORECASE)


def parse_stream_info(stderr: str) -> StreamInfo | None:
    """Read the input video stream's description from ffmpeg's log (the wheel ships no ffprobe)."""
    input_part = stderr.split("Stream mapping:")[0]
    match = _STREAM_RE.search(input_part)
    if not match:
        return None
    width, height, rest = int(match["w"]), int(match["h"]), match["rest"]
    sar = _SAR_RE.search(rest)
    if sar and int(sar[2]) > 0 and int(sar[1]) > 0:
        width = round(width * int(sar[1]) / int(sar[2]))
    fps_match = _FPS_RE.search(rest)
    rotation_match = _ROTATION_RE.search(input_part[match.end() :])
    rotation = int(round(float(rotation_match[1]))) % 360 if rotation_match else 0
    if rotation in (90, 270):
        width, height = height, width
    return StreamInfo(match["codec"], width, height, float(fps_match[1]) if fps_match else 0.0, rotation)


def _failure_from_log(path: str, stderr: str, returncode: int) -> DecodeError:
    lines = [ln.strip() for ln in stderr.splitlines() if ln.strip()]
    last = lines[-1] if lines else f"ffmpeg exited with status {returncode}"
    if "Decoder (codec" in stderr or "Decoding requested, but no decoder" in stderr or "unknown codec" in stderr.lower():
        codec_line = next((ln for ln in lines if "decoder" in ln.lower()), last)
        return DecodeError("unknown-codec", f"{path}: no decoder for its video codec ({codec_line})")
    if "matches no streams" in stderr or ("Stream #" in stderr and "Video:" not in stderr):
        return DecodeError("no-video-stream", f"{path}: has no video stream")
    if "detected only with low score" in stderr:
        return DecodeError("invalid-data", f"{path}: not a video file (ffmpeg cannot recognise its format)")
    if "moov atom not found" in stderr:
        return DecodeError("truncated", f"{path}: truncated or not a complete MP4/MOV (moov atom not found)")
    if "Invalid data found" in stderr:
        return DecodeError("invalid-data", f"{path}: not a decodable video (ffmpeg: invalid data found)")
    return DecodeError("decode-error", f"{path}: decoding gave no frames ({last})")


def decode_command(path: str, options: DecodeOptions) -> list[str]:
    # An absolute path: a relative name with a colon would be read as a protocol ("a:b.mp4").
    stream = ffmpeg.input(os.path.abspath(path)).video
    stream = stream.filter("scale", "iw*sar", "ih")
    if options.fps:
        stream = stream.filter("fps", fps=options.fps)
    side = options.short_side
    stream = stream.filter("scale", f"if(lt(iw,ih),{side},-2)", f"if(lt(iw,ih),-2,{side})")
    stream = stream.filter("crop", options.crop, options.crop).filter("setsar", 1)
    out = stream.output("pipe:", format="rawvideo", pix_fmt="rgb24", fps_mode="passthrough")
    return out.global_args("-hide_banner", "-nostats", "-nostdin").compile(cmd=ffmpeg_exe())


def frames_to_clips(frames: np.ndarray, clip_length: int = CLIP_LENGTH) -> tuple[np.ndarray, int]:
    """Cut (T, H, W, 3) frames into ceil(T / L) clips of L frames; pad the last by repeating its last frame.

    >>> clips, pad = frames_to_clips(np.zeros((35, 2, 2, 3), np.uint8))
    >>> clips.shape, pad
    ((3, 16, 2, 2, 3), 13)
    """
    total = len(frames)
    if total == 0:
        raise ValueError("no frames")
    n_clips = math.ceil(total / clip_length)
    pad = n_clips * clip_length - total
    if pad:
        frames = np.concatenate([frames, np.repeat(frames[-1:], pad, axis=0)])
    return frames.reshape(n_clips, clip_length, *frames.shape[1:]), pad


def decode_video(path: str | os.PathLike, options: DecodeOptions = DecodeOptions()) -> DecodedVideo:
    """Decode ``path`` into clips, or raise DecodeError with a one-line reason naming the file."""
    path = os.fspath(path)
    if not os.path.exists(path):
        raise DecodeError("missing-file", f"{path}: file not found")
    if os.path.getsize(path) == 0:
        raise DecodeError("empty-file", f"{path}: file is empty (0 bytes)")
    frame_bytes = options.crop * options.crop * 3
    with tempfile.TemporaryFile() as log:
        # The log goes to a file, not a pipe, so a chatty decoder can never block on a full stderr pipe.
        proc = subprocess.run(decode_command(path, options), stdout=subprocess.PIPE, stderr=log, check=False)
        log.seek(0)
        stderr = log.read().decode("utf-8", "replace")
    raw = proc.stdout
    n_frames = len(raw) // frame_bytes
    if n_frames == 0:
        raise _failure_from_log(path, stderr, proc.returncode)
    info = parse_stream_info(stderr) or StreamInfo("unknown", 0, 0, 0.0, 0)
    if options.fps:
        info = info._replace(fps=float(options.fps))
    # A writable copy: callers hand the clips to torch, which warns on read-only memory.
    frames = np.frombuffer(bytearray(raw[: n_frames * frame_bytes]), np.uint8).reshape(n_frames, options.crop, options.crop, 3)
    clips, pad = frames_to_clips(frames, options.clip_length)
    warnings = _decoder_warnings(stderr, proc.returncode)
    return DecodedVideo(clips, n_frames, pad, info, [f"{path}: {w}" for w in warnings])


def _decoder_warnings(stderr: str, returncode: int) -> list[str]:
    # Only lines from the decoder/demuxer count; the stream description is not a warning.
    found = []
    for line in stderr.splitlines():
        line = line.strip()
        if line.startswith("[") and _ERROR_RE.search(line):
            found.append(line.split("] ", 1)[-1])
    if returncode != 0 and not found:
        found.append(f"ffmpeg exited with status {returncode}")
    if found:
        summary = found[0] if len(found) == 1 else f"{found[0]} (and {len(found) - 1} more decoder errors)"
        return [f"decoded with errors, kept the decodable frames: {summary}"]
    return []
