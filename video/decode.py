"""Decode a video file into non-overlapping 16-frame RGB clips with the ffmpeg binary.

Why the ffmpeg binary (through ffmpeg-python) rather than PyAV: resizing, cropping, rotation and pixel-aspect
correction all run inside ffmpeg's own filter graph in C, and the process only hands back 112x112 frames, so
the Python side copies ~37 KB per frame; it also isolates crashes of broken files in a child process. The
measured rate is in ``bench/extract.py``.

The filter chain, in order: ffmpeg's autorotate (honours the display-matrix rotation tag), optional ``fps=N``
resampling, ``scale=iw*sar:ih`` (square pixels), resize so the short side is 128, centre crop 112x112.
``clip_reader`` builds on the same pieces (windows with timestamps, reduced reads, seeking to chosen clips).
"""

from __future__ import annotations

import math
import os
import re
import subprocess
import tempfile
from dataclasses import dataclass
from typing import Callable, NamedTuple

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


#: Decoder and filter threads per ffmpeg. One: with more, the frames a decoder conceals in a broken file depend on
#: the thread count (corrupted.mp4 in ../shared/media does), so a store's bytes would depend on the machine's
#: cores. Parallelism comes from decoding one video per core instead (one decoder thread is also the cheapest
#: in CPU-seconds per frame).
DECODER_THREADS = 1


def decode_command(path: str, options: DecodeOptions) -> list[str]:
    """The ffmpeg command that writes ``path``'s frames, through the filter chain, as raw rgb24 to stdout."""
    stream = input_stream(path)
    if options.fps:
        stream = stream.filter("fps", fps=options.fps)
    return raw_rgb_command(resize_and_crop(stream, options))


def input_stream(path: str, **input_options):
    """``path``'s video stream as an ffmpeg-python node, decoded with DECODER_THREADS; ``input_options`` go before
    ``-i`` (e.g. ``ss``, ``lowres``)."""
    # An absolute path: a relative name with a colon would be read as a protocol ("a:b.mp4").
    return ffmpeg.input(os.path.abspath(path), threads=DECODER_THREADS, **input_options).video


def resize_and_crop(stream, options: DecodeOptions):
    """The per-frame part of the filter chain: square pixels, short side ``options.short_side``, centre crop.
    Frame selection (``fps``, ``select``) commutes with it, so callers put theirs before it."""
    stream = stream.filter("scale", "iw*sar", "ih")
    side = options.short_side
    stream = stream.filter("scale", f"if(lt(iw,ih),{side},-2)", f"if(lt(iw,ih),-2,{side})")
    return stream.filter("crop", options.crop, options.crop).filter("setsar", 1)


def raw_rgb_command(stream) -> list[str]:
    """The ffmpeg command writing ``stream``'s frames as raw rgb24 to stdout, one frame per decoded frame."""
    out = stream.output("pipe:", format="rawvideo", pix_fmt="rgb24", fps_mode="passthrough")
    threads = str(DECODER_THREADS)
    return out.global_args("-hide_banner", "-nostats", "-nostdin", "-filter_complex_threads", threads
                           ).compile(cmd=ffmpeg_exe())


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


class DecodedStream(NamedTuple):
    """What :func:`stream_clips` decoded, once every clip was handed over."""

    clips: int
    frames: int  # decoded frames before padding
    pad_frames: int  # repeats of the last frame added to fill the last clip
    info: StreamInfo
    warnings: list[str]


# A pipe of 1 MiB (Linux's default ceiling for unprivileged processes) lets ffmpeg decode more than a clip ahead
# while the caller compresses the previous one; the default 64 KiB holds under two 112x112 frames.
_PIPE_BYTES = 1 << 20
_F_SETPIPE_SZ = 1031


def _widen_pipe(pipe) -> None:
    try:
        import fcntl

        fcntl.fcntl(pipe.fileno(), _F_SETPIPE_SZ, _PIPE_BYTES)
    except (ImportError, OSError):  # not Linux, or a lower ceiling: the default pipe still works, only slower
        pass


def stream_clips(path: str | os.PathLike, options: DecodeOptions,
                 on_clip: Callable[[np.ndarray], None]) -> DecodedStream:
    """Decode ``path`` and call ``on_clip(clip)`` for each uint8 (L, crop, crop, 3) clip in order, the last one
    padded by repeating its last frame; raise DecodeError (one line naming the file) if no frame decodes.

    ffmpeg's frames are read straight into one clip buffer that is reused for every clip (no other copy), so
    ``on_clip`` must consume or copy the clip before returning. ffmpeg keeps decoding while ``on_clip`` runs.
    """
    path = os.fspath(path)
    if not os.path.exists(path):
        raise DecodeError("missing-file", f"{path}: file not found")
    if os.path.getsize(path) == 0:
        raise DecodeError("empty-file", f"{path}: file is empty (0 bytes)")
    frame_bytes = options.crop * options.crop * 3
    clip = np.empty((options.clip_length, options.crop, options.crop, 3), np.uint8)
    view = memoryview(clip).cast("B")
    clips = frames = filled = 0
    with tempfile.TemporaryFile() as log:
        # The log goes to a file, not a pipe, so a chatty decoder can never block on a full stderr pipe.
        proc = subprocess.Popen(decode_command(path, options), stdout=subprocess.PIPE, stderr=log)
        try:
            _widen_pipe(proc.stdout)
            while True:
                got = proc.stdout.readinto(view[filled:])
                if not got:
                    break
                filled += got
                if filled == len(view):
                    on_clip(clip)
                    clips, frames, filled = clips + 1, frames + options.clip_length, 0
        except BaseException:
            proc.kill()
            raise
        finally:
            proc.stdout.close()
            returncode = proc.wait()
        log.seek(0)
        stderr = log.read().decode("utf-8", "replace")
    tail = filled // frame_bytes  # a truncated last frame is dropped
    if frames + tail == 0:
        raise _failure_from_log(path, stderr, returncode)
    pad = 0
    if tail:
        pad = options.clip_length - tail
        clip[tail:] = clip[tail - 1]
        on_clip(clip)
        clips, frames = clips + 1, frames + tail
    info = parse_stream_info(stderr) or StreamInfo("unknown", 0, 0, 0.0, 0)
    if options.fps:
        info = info._replace(fps=float(options.fps))
    warnings = _decoder_warnings(stderr, returncode)
    return DecodedStream(clips, frames, pad, info, [f"{path}: {w}" for w in warnings])


def decode_video(path: str | os.PathLike, options: DecodeOptions = DecodeOptions()) -> DecodedVideo:
    """Decode ``path`` into clips, or raise DecodeError with a one-line reason naming the file."""
    clips: list[np.ndarray] = []
    result = stream_clips(path, options, lambda clip: clips.append(clip.copy()))
    # Writable memory: callers hand the clips to torch, which warns on read-only arrays.
    return DecodedVideo(np.stack(clips), result.frames, result.pad_frames, result.info, result.warnings)


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
