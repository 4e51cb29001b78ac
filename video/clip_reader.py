"""Reading a video's clips without holding the video: windows of clips with the stream's timestamps, reduced
reads at what a student network looks at, decoding only chosen clips by seeking, and the policy choosing among
them per codec (measured in ``bench/decode_strategies.py``).

Timestamps come from ffmpeg's ``showinfo`` filter, placed right after decoding (after the optional ``fps``
resampling, before any frame is dropped), in the process that decodes: it logs each frame's integer pts and the
stream's time base, so a variable frame rate maps exactly (pts x time base, not the 6-digit ``pts_time``), key
frames come with it, and no second pass or ffprobe (which the wheel lacks) is needed. ``-frame_pts`` only names
image files, and a container output (nut, matroska) would need a demuxer on the Python side. ``checksum=0`` keeps
showinfo from hashing frames; what remains is two log lines a frame, read while ffmpeg decodes (~4 ms of parsing
per 1,500 frames; ffmpeg's own time did not change measurably). Times are seconds from the file's start, the origin
``-ss`` seeks from.
"""

from __future__ import annotations

import math
import os
import re
import subprocess
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace
from typing import NamedTuple

import ffmpeg
import numpy as np

from condi_pipe.video.decode import (
    CLIP_LENGTH,
    DecodeError,
    DecodeOptions,
    StreamInfo,
    _decoder_warnings,
    _failure_from_log,
    _widen_pipe,
    input_stream,
    parse_stream_info,
    raw_rgb_command,
    resize_and_crop,
)

DEFAULT_OPTIONS = DecodeOptions()


@dataclass(frozen=True)
class ReadSpec:
    """What a pass hands back per clip: frames ``size`` x ``size`` (the region of the full crop, resized), every
    ``frame_stride``-th frame of each clip (positions 0, s, 2s, ... as ``clip[::s]``), decoded with the codec's
    reduced-resolution ``lowres`` (0: off; MPEG-4 Part 2 has 1-3, H.264 none)."""

    size: int = 112
    frame_stride: int = 1
    lowres: int = 0

    def frames_per_clip(self, clip_length: int = CLIP_LENGTH) -> int:
        return -(-clip_length // self.frame_stride)


#: Every frame at the full crop: Dense's and the teacher's input.
FULL = ReadSpec()
#: Every second frame at the full crop: a 2x2-averaging student's ``preprocess`` of these clips with
#: ``frame_stride=1`` (or of ``expand_frames``) is bit-identical to its ``preprocess`` of the full clips.
STUDENT_EXACT = ReadSpec(112, 2)
#: Every second frame resized to 56 by ffmpeg: the student's pixel count, not its exact pixels (see the tests).
STUDENT_56 = ReadSpec(56, 2)
#: The same from the MPEG-4 Part 2 decoder's half-size decoding (further from the student's pixels).
LOWRES_STUDENT = ReadSpec(56, 2, lowres=1)


class ClipWindow(NamedTuple):
    first: int  # index in the video of clips[0]
    clips: np.ndarray  # uint8 (n, frames per clip, size, size, 3), n <= the window
    start_s: np.ndarray  # float64 (n,): each clip's first frame's timestamp
    end_s: np.ndarray  # float64 (n,): the next clip's start; for the video's last clip, its last frame's end


class Timeline(NamedTuple):
    """A pass's account of the video once every window was handed over."""

    frames: int  # decoded frames (after fps resampling), before padding
    clips: int
    pad_frames: int  # repeats of the last frame that fill the last clip
    frame_s: np.ndarray  # float64 (frames,): each frame's timestamp
    end_s: float  # when the last frame ends
    keyframes: np.ndarray  # int64 indices of the decoded key frames
    info: StreamInfo
    warnings: list[str]
    clip_length: int = CLIP_LENGTH

    def clip_starts(self) -> np.ndarray:
        return self.frame_s[:: self.clip_length][: self.clips].copy()

    def clip_ends(self) -> np.ndarray:
        return np.append(self.frame_s[self.clip_length :: self.clip_length], self.end_s)[: self.clips]

    def keyframe_interval_s(self) -> float:
        """Mean seconds between key frames; a file with one key frame gives its whole duration."""
        span = self.end_s - float(self.frame_s[0]) if self.frames else 0.0
        return span / max(len(self.keyframes), 1)


def _spec_options(options: DecodeOptions, size: int) -> DecodeOptions:
    if size == options.crop:
        return options
    if (options.short_side * size) % options.crop:
        raise ValueError(f"size {size} does not scale the {options.short_side}/{options.crop} crop exactly")
    return replace(options, short_side=options.short_side * size // options.crop, crop=size)


def pass_command(path: str, spec: ReadSpec = FULL, options: DecodeOptions = DEFAULT_OPTIONS) -> list[str]:
    """One pass over ``path``: showinfo logs every frame; then the spec's frame selection and size."""
    stream = input_stream(path, **({"lowres": spec.lowres} if spec.lowres else {}))
    if options.fps:
        stream = stream.filter("fps", fps=options.fps)
    stream = stream.filter("showinfo", checksum=0)
    if spec.frame_stride > 1:
        stride = spec.frame_stride
        # stride - 1 clones of the last frame: exactly one lands on a kept position when the last frame itself is
        # not kept, so the padding of the last clip (which repeats the last frame) is there to read.
        stream = stream.filter("tpad", stop=stride - 1, stop_mode="clone")
        stream = stream.filter("select", f"not(mod(n,{stride}))")
    return raw_rgb_command(resize_and_crop(stream, _spec_options(options, spec.size)))


_FRAME_RE = re.compile(
    r"showinfo.*\] n:\s*(\d+) pts:\s*(-?\d+|NOPTS)\s(?:.*?duration:\s*(-?\d+|NOPTS)\s)?.*?iskey:(\d)")
_TIME_BASE_RE = re.compile(r"showinfo.*\] config in time_base: (\d+)/(\d+)")
_MAX_LOG_LINES = 2000  # of the non-frame log kept for warnings: a broken file can log an error per packet


class _LogFollower:
    """Reads ffmpeg's log file while ffmpeg writes it (``pread``: the shared file offset stays ffmpeg's)."""

    def __init__(self, fd: int):
        self.fd, self.offset, self.rest = fd, 0, b""
        self.pts: list[int | None] = []
        self.durations: list[int] = []
        self.keyframes: list[int] = []
        self.time_base: tuple[int, int] | None = None  # numerator, denominator
        self.lines: list[str] = []

    def poll(self) -> None:
        while chunk := os.pread(self.fd, 1 << 16, self.offset):
            self.offset += len(chunk)
            *lines, self.rest = (self.rest + chunk).split(b"\n")
            for line in lines:
                self._line(line.decode("utf-8", "replace"))

    def finish(self) -> None:
        self.poll()
        if self.rest:
            self._line(self.rest.decode("utf-8", "replace"))
            self.rest = b""

    def _line(self, line: str) -> None:
        if "showinfo" not in line:
            if len(self.lines) < _MAX_LOG_LINES:
                self.lines.append(line)
            return
        frame = _FRAME_RE.search(line) if "] n:" in line else None
        if frame:
            if frame[4] == "1":
                self.keyframes.append(len(self.pts))
            self.pts.append(None if frame[2] == "NOPTS" else int(frame[2]))
            self.durations.append(int(frame[3]) if frame[3] and frame[3] != "NOPTS" else 0)
        elif self.time_base is None and (tb := _TIME_BASE_RE.search(line)) and int(tb[2]):
            self.time_base = int(tb[1]), int(tb[2])

    def seconds(self, index: int, fallback_rate: float) -> float:
        if index >= len(self.pts):  # a frame ffmpeg wrote without its log line: one frame interval after the last
            return (self.seconds(len(self.pts) - 1, fallback_rate) if self.pts else 0.0) + (
                index - len(self.pts) + 1) / (fallback_rate or 25.0)
        pts = self.pts[index]
        if pts is None or self.time_base is None:
            return index / (fallback_rate or 25.0)
        return pts * self.time_base[0] / self.time_base[1]  # one correctly rounded division of exact integers

    def text(self) -> str:
        return "\n".join(self.lines)


class ClipReader:
    """Iterate ``path``'s clips in windows of at most ``window`` clips (``ClipWindow``), cut and padded as
    ``decode.frames_to_clips`` does; ``timeline`` is there once the last window was handed over.

    Memory: one window's clips plus one read-ahead frame, whatever the video's length (the read-ahead frame makes
    the next clip's start time known before a window is handed over). Each window is a new array that the caller
    may keep. Stopping early kills ffmpeg. Raises DecodeError (one line naming the file) if no frame decodes.
    """

    def __init__(self, path: str | os.PathLike, window: int = 32, spec: ReadSpec = FULL,
                 options: DecodeOptions = DEFAULT_OPTIONS):
        if window < 1:
            raise ValueError(f"window must be at least one clip, got {window}")
        if options.clip_length % spec.frame_stride:
            raise ValueError(f"frame stride {spec.frame_stride} does not divide the clip length {options.clip_length}")
        self.path, self.window, self.spec, self.options = os.fspath(path), window, spec, options
        self._timeline: Timeline | None = None

    @property
    def timeline(self) -> Timeline:
        if self._timeline is None:
            raise RuntimeError(f"{self.path}: the timeline is known once every window was read")
        return self._timeline

    def __iter__(self) -> Iterator[ClipWindow]:
        _check_file(self.path)
        per_clip = self.spec.frames_per_clip(self.options.clip_length)
        frame_shape = (self.spec.size, self.spec.size, 3)
        with tempfile.TemporaryFile() as log_file:
            # The log goes to a file, not a pipe, so a chatty decoder can never block on a full stderr pipe.
            proc = subprocess.Popen(pass_command(self.path, self.spec, self.options),
                                    stdout=subprocess.PIPE, stderr=log_file)
            log = _LogFollower(log_file.fileno())
            try:
                _widen_pipe(proc.stdout)
                first, carry = 0, None
                while True:
                    buffer = np.empty((self.window * per_clip, *frame_shape), np.uint8)
                    filled = 0
                    if carry is not None:
                        buffer[0], filled = carry, 1
                    filled += _read_frames(proc.stdout, buffer[filled:])
                    carry = None
                    if filled == len(buffer):
                        look_ahead = np.empty(frame_shape, np.uint8)
                        carry = look_ahead if _read_frames(proc.stdout, look_ahead[None]) else None
                    if carry is None:
                        break
                    log.poll()
                    yield self._window(first, buffer.reshape(self.window, per_clip, *frame_shape), log, None)
                    first += self.window
            except BaseException:
                proc.kill()
                raise
            finally:
                proc.stdout.close()
                returncode = proc.wait()
            log.finish()
        out_frames = first * per_clip + filled
        # All frames are written, so their count is the truth; with a stride the log counts the frames.
        total = out_frames if self.spec.frame_stride == 1 else len(log.pts)
        if out_frames == 0 or total == 0:
            raise _failure_from_log(self.path, log.text(), returncode)
        clips = min(math.ceil(total / self.options.clip_length), math.ceil(out_frames / per_clip))
        left = clips - first
        if left > 0:
            usable = min(filled, left * per_clip)
            buffer = buffer[: left * per_clip]
            buffer[usable:] = buffer[usable - 1]
            yield self._window(first, buffer.reshape(left, per_clip, *frame_shape), log, total)
        self._timeline = _timeline(self.path, log, total, clips, self.options, returncode)

    def _window(self, first: int, clips: np.ndarray, log: _LogFollower, total: int | None) -> ClipWindow:
        length, rate = self.options.clip_length, self.options.fps or 25.0
        starts = np.array([log.seconds((first + i) * length, rate) for i in range(len(clips))])
        next_start = (first + len(clips)) * length
        if next_start < len(log.pts) and (total is None or next_start < total):
            after = log.seconds(next_start, rate)
        else:  # the video's last clip ends with its last frame
            after = _end_of(log, len(log.pts) if total is None else total, rate)
        return ClipWindow(first, clips, starts, np.append(starts[1:], after))


def _check_file(path: str) -> None:
    if not os.path.exists(path):
        raise DecodeError("missing-file", f"{path}: file not found")
    if os.path.getsize(path) == 0:
        raise DecodeError("empty-file", f"{path}: file is empty (0 bytes)")


def _read_frames(pipe, frames: np.ndarray) -> int:
    """Fill ``frames`` from ``pipe``; the number of whole frames read (fewer at the end of the stream)."""
    view = memoryview(frames.reshape(-1)).cast("B")
    filled = 0
    while filled < len(view):
        got = pipe.readinto(view[filled:])
        if not got:
            break
        filled += got
    return filled // (frames[0].size if len(frames) else 1)


def _end_of(log: _LogFollower, total: int, rate: float) -> float:
    last = log.seconds(total - 1, rate)
    if log.time_base is not None and total <= len(log.durations) and log.durations[total - 1] > 0:
        return last + log.durations[total - 1] * log.time_base[0] / log.time_base[1]
    if total > 1:
        return last + (last - log.seconds(0, rate)) / (total - 1)
    return last + 1 / rate


def _timeline(path: str, log: _LogFollower, total: int, clips: int, options: DecodeOptions,
              returncode: int) -> Timeline:
    text = log.text()
    info = parse_stream_info(text) or StreamInfo("unknown", 0, 0, 0.0, 0)
    if options.fps:
        info = info._replace(fps=float(options.fps))
    rate = options.fps or info.fps
    frame_s = np.array([log.seconds(i, rate) for i in range(total)], np.float64)
    warnings = [f"{path}: {w}" for w in _decoder_warnings(text, returncode)]
    return Timeline(total, clips, clips * options.clip_length - total, frame_s, _end_of(log, total, rate),
                    np.array(log.keyframes, np.int64), info, warnings, options.clip_length)


def read_timeline(path: str | os.PathLike, spec: ReadSpec = STUDENT_56, options: DecodeOptions = DEFAULT_OPTIONS,
                  window: int = 64) -> Timeline:
    """Only the timeline (timestamps, key frames) of ``path``, from a pass at ``spec``'s (small) size."""
    reader = ClipReader(path, window, spec, options)
    for _ in reader:
        pass
    return reader.timeline


def expand_frames(clips: np.ndarray, frame_stride: int) -> np.ndarray:
    """(n, T/s, H, W, 3) clips of every s-th frame -> (n, T, H, W, 3), each frame repeated s times, so that a
    model's own ``preprocess`` (which reads ``clip[::s]``) sees exactly the frames it would read in the full clip."""
    return np.repeat(clips, frame_stride, axis=1)


# --- decoding only chosen clips ------------------------------------------------------------------------------

#: What opening one more seek costs, in decoded frames (an input's probing and its first key frame's decode):
#: two chosen clips closer than this after the previous one's key frame are decoded in one run instead.
SEEK_COST_FRAMES = 8


class Span(NamedTuple):
    """One run of decoding: from the key frame at or before ``start`` to ``end`` (frame indices, end exclusive),
    handing back the ``wanted`` (first, end) frame ranges."""

    keyframe: int
    start: int
    end: int
    wanted: tuple[tuple[int, int], ...]


def seek_spans(indices: Sequence[int], timeline: Timeline, seek_cost_frames: int = SEEK_COST_FRAMES) -> list[Span]:
    """The runs that decode clips ``indices``: each clip starts a new seek unless the key frame before it is
    no further than ``seek_cost_frames`` past the run so far, where decoding on is cheaper than seeking."""
    length, keys = timeline.clip_length, timeline.keyframes
    spans: list[Span] = []
    for clip in sorted({int(i) for i in indices}):
        if not 0 <= clip < timeline.clips:
            raise IndexError(f"clip {clip} is outside the video's {timeline.clips} clips")
        first, end = clip * length, min((clip + 1) * length, timeline.frames)
        before = keys[keys <= first]
        key = int(before[-1]) if len(before) else 0
        if spans and key <= spans[-1].end + seek_cost_frames:
            last = spans[-1]
            spans[-1] = last._replace(end=end, wanted=last.wanted + ((first, end),))
        else:
            spans.append(Span(key, first, end, ((first, end),)))
    return spans


def decoded_frames(spans: Sequence[Span]) -> int:
    """Frames the decoder works through for ``spans`` (from each span's key frame on)."""
    return sum(span.end - span.keyframe for span in spans)


def seek_command(path: str, spans: Sequence[Span], timeline: Timeline,
                 options: DecodeOptions = DEFAULT_OPTIONS) -> list[str]:
    """One ffmpeg that decodes every span (an input each, concatenated) and writes only the wanted frames."""
    streams = []
    for span in spans:
        seek = {}
        origin = 0
        if span.keyframe > 0:
            # ``-ss`` before ``-i`` jumps to the key frame at or before the time, then drops frames before it
            # (accurate seek); half-way between two frames' timestamps no rounding can pick a neighbour.
            origin = span.start
            seek = {"ss": f"{(timeline.frame_s[origin - 1] + timeline.frame_s[origin]) / 2:.6f}"}
        stream = input_stream(path, **seek).filter("trim", end_frame=span.end - origin)
        keep = "+".join(f"between(n,{a - origin},{b - origin - 1})" for a, b in span.wanted)
        streams.append(resize_and_crop(stream.filter("select", keep), options))
    joined = streams[0] if len(streams) == 1 else ffmpeg.concat(*streams, v=1, a=0)
    return raw_rgb_command(joined)


def _decode_spans(path: str, spans: Sequence[Span], timeline: Timeline, options: DecodeOptions) -> np.ndarray:
    """uint8 (frames, crop, crop, 3): the wanted frames of ``spans``, in order; DecodeError "seek-mismatch" if
    ffmpeg hands back another number of frames than the timeline expects."""
    frame_shape = (options.crop, options.crop, 3)
    expected = sum(b - a for span in spans for a, b in span.wanted)
    with tempfile.TemporaryFile() as log_file:
        proc = subprocess.run(seek_command(path, spans, timeline, options), stdout=subprocess.PIPE,
                              stderr=log_file, check=False)
        log_file.seek(0)
        stderr = log_file.read().decode("utf-8", "replace")
    got = len(proc.stdout) // math.prod(frame_shape)
    if got == 0:
        raise _failure_from_log(path, stderr, proc.returncode)
    if got != expected:
        raise DecodeError("seek-mismatch", f"{path}: seeking gave {got} frames, expected {expected}")
    return np.frombuffer(proc.stdout, np.uint8).reshape(got, *frame_shape)


def read_clips_at(path: str | os.PathLike, indices: Sequence[int], timeline: Timeline,
                  options: DecodeOptions = DEFAULT_OPTIONS, seek_cost_frames: int = SEEK_COST_FRAMES) -> np.ndarray:
    """uint8 (len(indices), L, crop, crop, 3): clips ``indices`` of ``path`` (in that order), decoded by seeking
    to the key frame before each with ``timeline`` from an earlier pass; the last clip padded as
    ``frames_to_clips`` pads it. The same pixels as decoding everything (tests/unit/video/test_clip_reader.py).

    Where seeking hands back another number of frames than the timeline expects (a container without an index,
    such as MPEG-TS), the clips are decoded from the start in one run instead. Raises DecodeError (one line
    naming the file) if no frame decodes."""
    path = os.fspath(path)
    if options.fps:
        raise ValueError(f"{path}: seeking needs the native frame rate; read resampled videos in one pass")
    _check_file(path)
    if not len(indices):
        return np.empty((0, options.clip_length, options.crop, options.crop, 3), np.uint8)
    spans = seek_spans(indices, timeline, seek_cost_frames)
    wanted = [r for span in spans for r in span.wanted]
    try:
        frames = _decode_spans(path, spans, timeline, options)
    except DecodeError as error:
        if error.kind != "seek-mismatch":
            raise
        # A container whose seeking misses (MPEG-TS has no index): decode from the start instead, in one run.
        frames = _decode_spans(path, [Span(0, wanted[0][0], wanted[-1][1], tuple(wanted))], timeline, options)
    frame_shape = frames.shape[1:]
    by_clip, offset = {}, 0
    for a, b in wanted:
        clip = np.empty((options.clip_length, *frame_shape), np.uint8)
        clip[: b - a] = frames[offset : offset + b - a]
        clip[b - a :] = clip[b - a - 1]
        by_clip[a // options.clip_length], offset = clip, offset + b - a
    return np.stack([by_clip[int(i)] for i in indices])


# --- which reads to make ------------------------------------------------------------------------------------

#: Costs in frames of a full pass (one frame decoded, resized to 112 and piped = 1), fitted to the CPU-seconds of
#: bench/decode_strategies.py on its 60 s files (2-core Xeon; bench/results/intel-xeon-2c/decode_strategies.json):
#: starting an ffmpeg (~25-40 ms of CPU), a student pass per frame, and a frame decoded but not handed back when
#: seeking (its decoding share of a full pass). MPEG-4 Part 2 decodes cheaply, so resizing weighs more there.
START_COST_FRAMES = 100
STUDENT_PASS_COST = {
    "mpeg4": {STUDENT_EXACT: 0.70, STUDENT_56: 0.48, LOWRES_STUDENT: 0.44},
    "other": {STUDENT_EXACT: 0.86, STUDENT_56: 0.70},
}
DECODE_SHARE = 0.55
#: Two passes must promise at least this against one: the estimates were off by up to 0.1 on the bench's files.
SWITCH_BELOW = 0.9


class ReadPlan(NamedTuple):
    student: ReadSpec | None  # a separate student pass at this spec; None: one FULL pass feeds every model
    seek_teacher: bool  # the teacher's clips by ``read_clips_at`` after the student pass
    estimated_cost: float  # of this plan against one full pass (1.0)
    reason: str


def plan_reads(codec: str, *, student: bool, k: int, frames: int | None = None,
               keyframe_interval_frames: float | None = None, resampled: bool = False, indexed: bool = True,
               approximate_student: bool = False) -> ReadPlan:
    """How to read a video of ``codec`` with ``frames`` frames and key frames that far apart (None: not known)
    for a method with a student (which then picks ``k`` clips for the teacher) or without one.

    Two passes (a student pass, then seeking to the teacher's clips) pay only when the video is long against
    ``k`` clips and key frames are close: each pass decodes the video or most of it, and each ffmpeg costs ~100
    frames to start. Otherwise one full pass at 112 feeds both: the student's ``preprocess`` reduces its clips
    exactly, and the caller keeps the clips the teacher may read (an ffmpeg ``split`` into a 112 and a 56 output
    would hand back the same 112 frames and resize twice; the student's own 2x2 reduction costs ~0.3 ms a clip). ``approximate_student`` also weighs student
    reads resized by ffmpeg (and ``lowres`` decoding for MPEG-4 Part 2), whose pixels differ from the student's
    own reduction (tolerances in tests/unit/video/test_clip_reader.py). A container without a seek index
    (``indexed=False``: MPEG-TS, MPEG-PS) is read in one pass."""
    one_pass = ReadPlan(None, False, 1.0, "")
    if not student:
        return one_pass._replace(reason="no student: every clip at 112 in one pass")
    if resampled:
        return one_pass._replace(reason="resampled frame rate: seeking needs native timestamps, so one pass")
    if not indexed:
        return one_pass._replace(reason="no seek index in the container: one pass")
    if frames is None or keyframe_interval_frames is None:
        return one_pass._replace(reason="length or key frames not known yet: one pass")
    seek_frames = min(frames, k * (CLIP_LENGTH + keyframe_interval_frames / 2))
    full = START_COST_FRAMES + frames
    pass_cost = STUDENT_PASS_COST.get(codec, STUDENT_PASS_COST["other"])
    specs = list(pass_cost) if approximate_student else [STUDENT_EXACT]
    costs = {spec: (2 * START_COST_FRAMES + pass_cost[spec] * frames + DECODE_SHARE * seek_frames
                    + (1 - DECODE_SHARE) * CLIP_LENGTH * k) / full for spec in specs}
    best = min(costs, key=costs.get)
    facts = f"{codec}, {frames} frames, key frames {keyframe_interval_frames:.0f} frames apart, K={k}"
    if costs[best] >= SWITCH_BELOW:
        return one_pass._replace(reason=f"{facts}: one pass (two would cost {costs[best]:.2f}x)")
    return ReadPlan(best, True, costs[best], f"{facts}: student pass {best}, then seek (~{costs[best]:.2f}x)")


#: Containers whose index ``-ss`` seeks by (others are scanned, and seeking may miss; read_clips_at then decodes
#: from the start).
INDEXED_CONTAINERS = {".mp4", ".m4v", ".mov", ".avi", ".mkv", ".webm"}


class ReadPlanner:
    """Plans each video of a collection from the videos read before it, per file extension (a collection's files
    share their encoding): their bytes per frame predict a file's frames from its size, their key frames the
    seeks' cost. The first video of each extension is read in one pass."""

    def __init__(self, *, student: bool, k: int, resampled: bool = False, approximate_student: bool = False):
        self.student, self.k, self.resampled, self.approximate = student, k, resampled, approximate_student
        self._seen: dict[str, list[tuple[str, float, float]]] = {}

    @staticmethod
    def _key(path: str | os.PathLike) -> str:
        return os.path.splitext(os.fspath(path))[1].lower()

    def observe(self, path: str | os.PathLike, size_bytes: int, timeline: Timeline) -> None:
        seen = self._seen.setdefault(self._key(path), [])
        if timeline.frames:
            interval = timeline.frames / max(len(timeline.keyframes), 1)
            seen.append((timeline.info.codec, size_bytes / timeline.frames, interval))
            del seen[:-50]  # the recent videos: a collection's encoding may drift

    def plan(self, path: str | os.PathLike, size_bytes: int) -> ReadPlan:
        seen = self._seen.get(self._key(path))
        if not seen:
            return plan_reads("unknown", student=self.student, k=self.k, resampled=self.resampled)
        codec = max({c for c, _, _ in seen}, key=[c for c, _, _ in seen].count)
        frames = round(size_bytes / float(np.median([b for _, b, _ in seen])))
        interval = float(np.median([i for _, _, i in seen]))
        return plan_reads(codec, student=self.student, k=self.k, frames=frames, keyframe_interval_frames=interval,
                          resampled=self.resampled, indexed=self._key(path) in INDEXED_CONTAINERS,
                          approximate_student=self.approximate)
