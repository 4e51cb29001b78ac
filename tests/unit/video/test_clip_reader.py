"""Windowed reading with timestamps, reduced reads for the student, and seek-decoding (condi_pipe.video.clip_reader),
on small files encoded with the bundled ffmpeg as datasets encode them."""

from __future__ import annotations

import tracemalloc

import numpy as np
import pytest
import torch

from condi_pipe.models.registry import build_model
from condi_pipe.video.clip_reader import (
    FULL,
    LOWRES_STUDENT,
    STUDENT_56,
    STUDENT_EXACT,
    ClipReader,
    ReadPlanner,
    Timeline,
    _decode_spans,
    expand_frames,
    plan_reads,
    read_clips_at,
    read_timeline,
    seek_spans,
)
from condi_pipe.video.decode import DecodeError, DecodeOptions, StreamInfo, decode_video

CLIP_BYTES = 16 * 112 * 112 * 3


@pytest.fixture(scope="session")
def encoded(ffmpeg_video, media_dir):
    """name -> path: a real action clip (flipping_a_pancake.mkv) encoded as the datasets are, with frame counts of
    both parities and one of whole clips (the last clip padded, or not), and seeks that land mid-GOP."""
    source = ("-i", str(media_dir / "flipping_a_pancake.mkv"), "-an")
    return {
        # UCF-101-like: MPEG-4 Part 2 in AVI, 320x240, 25 fps; ffmpeg's encoder defaults (GOP 12, no B-frames)
        "ucf_mpeg4": ffmpeg_video("cr_ucf_mpeg4.avi", *source, "-vf", "scale=320:240,fps=25", "-frames:v", "75",
                                  "-c:v", "mpeg4"),
        # UCF-101's own encoder with B-frames (packed in AVI) and a key frame every 30 frames
        "ucf_xvid": ffmpeg_video("cr_ucf_xvid.avi", *source, "-vf", "scale=320:240,fps=25", "-frames:v", "96",
                                 "-c:v", "libxvid", "-g", "30", "-bf", "2"),
        # Kinetics-like: H.264 with B-frames in MP4, 340x256 (non-square source), 30 fps, key frames 0.8 s apart
        "kinetics_h264": ffmpeg_video("cr_kinetics.mp4", *source, "-vf", "scale=340:256,fps=30", "-frames:v", "118",
                                      "-c:v", "libx264", "-x264-params", "keyint=24:min-keyint=24:scenecut=0"),
    }


# The 120 frames kept of a 25 fps source that drops 4 of every 10, timestamps kept: gaps of 0.04 s and 0.2 s.
VFR_KEPT = [n for n in range(200) if not 3 <= n % 10 <= 6][:120]


@pytest.fixture(scope="session")
def vfr_video(ffmpeg_video):
    return ffmpeg_video("cr_vfr.mkv", "-f", "lavfi", "-i", "testsrc2=size=160x120:rate=25", "-frames:v", "120",
                        "-vf", "select='not(between(mod(n\\,10)\\,3\\,6))'", "-fps_mode", "vfr", "-c:v", "libx264",
                        "-g", "12", "-pix_fmt", "yuv420p")


def _windows(path, window, spec=FULL, options=None):
    reader = ClipReader(path, window, spec, options or DecodeOptions())
    windows = list(reader)
    return windows, reader.timeline


def _clips(windows) -> np.ndarray:
    return np.concatenate([w.clips for w in windows])


# --- windows ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["ucf_mpeg4", "ucf_xvid", "kinetics_h264"])
@pytest.mark.parametrize("window", [1, 3, 100])
def test_windows_hold_decode_videos_clips(encoded, name, window):
    full = decode_video(encoded[name])
    windows, timeline = _windows(encoded[name], window)
    assert [w.first for w in windows] == list(range(0, len(full.clips), window))
    assert all(0 < len(w.clips) <= window for w in windows)
    np.testing.assert_array_equal(_clips(windows), full.clips)
    assert (timeline.frames, timeline.clips, timeline.pad_frames) == (full.frames, len(full.clips), full.pad_frames)
    assert timeline.info == full.info and timeline.warnings == full.warnings == []


def test_real_media_and_a_resampled_rate_read_as_decode_video_does(media_dir):
    for name, options in [("test.avi", DecodeOptions()), ("rotated_90.mov", DecodeOptions()),
                          ("corrupted.mp4", DecodeOptions()), ("av1_video.mkv", DecodeOptions(fps=10))]:
        full = decode_video(media_dir / name, options)
        windows, timeline = _windows(media_dir / name, 2, options=options)
        np.testing.assert_array_equal(_clips(windows), full.clips)
        assert (timeline.frames, timeline.pad_frames, timeline.warnings) == (full.frames, full.pad_frames,
                                                                             full.warnings)


# --- timestamps -------------------------------------------------------------------------------------------


def test_constant_rate_clips_are_16_frames_of_1_25_s_each(encoded):
    windows, timeline = _windows(encoded["ucf_mpeg4"], 2)
    starts = np.concatenate([w.start_s for w in windows])
    ends = np.concatenate([w.end_s for w in windows])
    np.testing.assert_allclose(starts, np.arange(5) * 16 / 25, atol=1e-9)
    np.testing.assert_allclose(ends, [16 / 25, 32 / 25, 48 / 25, 64 / 25, 75 / 25], atol=1e-9)
    np.testing.assert_allclose(timeline.frame_s, np.arange(75) / 25, atol=1e-9)
    np.testing.assert_array_equal(timeline.clip_starts(), starts)
    np.testing.assert_array_equal(timeline.clip_ends(), ends)
    np.testing.assert_array_equal(timeline.keyframes, np.arange(0, 75, 12))


def test_variable_frame_rate_maps_each_clip_to_its_own_time(vfr_video):
    windows, timeline = _windows(vfr_video, 1)
    expected = np.array(VFR_KEPT) / 25
    assert timeline.frames == len(VFR_KEPT) == 120
    np.testing.assert_allclose(timeline.frame_s, expected, atol=1e-9)
    starts = np.concatenate([w.start_s for w in windows])
    ends = np.concatenate([w.end_s for w in windows])
    np.testing.assert_allclose(starts, expected[::16], atol=1e-9)
    np.testing.assert_allclose(ends[:-1], expected[16::16], atol=1e-9)
    assert ends[-1] == pytest.approx(expected[-1] + 1 / 25)
    # A constant rate would put clip 4 at 64 / 25 = 2.56 s; it starts at source frame 108's time, 4.32 s.
    assert starts[4] == pytest.approx(4.32) and not np.allclose(starts, np.arange(8) * 16 / 25, atol=0.5)


# --- reading what the student reads -----------------------------------------------------------------------


@pytest.mark.parametrize("name", ["ucf_mpeg4", "ucf_xvid", "kinetics_h264"])
def test_exact_student_read_is_every_second_frame_of_the_padded_clips(encoded, name):
    full = decode_video(encoded[name])  # 75 (odd), 96 (whole clips) and 118 (even) frames
    windows, timeline = _windows(encoded[name], 2, STUDENT_EXACT)
    assert timeline.frames == full.frames
    np.testing.assert_array_equal(_clips(windows), full.clips[:, ::2])


def test_exact_student_read_gives_the_skim_students_input_bit_for_bit(encoded):
    model = build_model("resnet10_3d_motion_skim", num_classes=5).eval()
    full = decode_video(encoded["kinetics_h264"]).clips
    skim = _clips(_windows(encoded["kinetics_h264"], 4, STUDENT_EXACT)[0])
    assert skim.nbytes * 2 == full.nbytes
    with torch.no_grad():
        want = model.preprocess(torch.from_numpy(full))
        got = model.preprocess(torch.from_numpy(expand_frames(skim, 2)))
    assert want.shape == (len(full), 3, 8, 56, 56)
    assert torch.equal(got, want)


# Pixel levels (0..255) between ffmpeg's 56x56 read and the student's 2x2 means of the 112 read, measured on these
# files and the shared media: mean 1.8-3.2 and 99th percentile 10-26 at 56; lowres 1 on MPEG-4: 3.7-5.7 and 18-41.
TOLERANCE = {STUDENT_56: (4.0, 32.0), LOWRES_STUDENT: (7.0, 48.0)}


@pytest.mark.parametrize("spec", list(TOLERANCE), ids=["56", "lowres1"])
@pytest.mark.parametrize("name", ["ucf_mpeg4", "ucf_xvid"])
def test_reduced_student_read_is_within_its_stated_tolerance(encoded, name, spec):
    exact = _clips(_windows(encoded[name], 8, STUDENT_EXACT)[0]).astype(np.float32)
    n, t, h, w, c = exact.shape
    means = exact.reshape(n, t, h // 2, 2, w // 2, 2, c).mean(axis=(3, 5))
    reduced = _clips(_windows(encoded[name], 8, spec)[0])
    assert reduced.shape == means.shape
    diff = np.abs(reduced.astype(np.float32) - means)
    mean_limit, p99_limit = TOLERANCE[spec]
    assert 0 < diff.mean() <= mean_limit and np.percentile(diff, 99) <= p99_limit


# --- seeking ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["ucf_mpeg4", "ucf_xvid", "kinetics_h264", "vfr"])
def test_seeking_gives_the_full_decodes_pixels(encoded, vfr_video, name):
    path = vfr_video if name == "vfr" else encoded[name]
    full = decode_video(path).clips
    timeline = read_timeline(path)
    last = len(full) - 1
    for indices in ([last], [last, 0, 2], [1, 3, 1], list(range(len(full)))):
        np.testing.assert_array_equal(read_clips_at(path, indices, timeline), full[indices])
    # the test has teeth: every file but xvid's first GOP is reached by seeking past a key frame
    assert any(span.keyframe > 0 for span in seek_spans([last], timeline))


def test_seeking_in_a_container_without_an_index_decodes_from_the_start(ffmpeg_video, encoded):
    path = ffmpeg_video("cr_kinetics.ts", "-i", str(encoded["kinetics_h264"]), "-c", "copy", "-f", "mpegts")
    full = decode_video(path).clips
    timeline = read_timeline(path)
    indices = [7, 1, 4]
    spans = seek_spans(indices, timeline, seek_cost_frames=0)
    assert len(spans) == 3
    with pytest.raises(DecodeError, match="cr_kinetics.ts: seeking gave 32 frames, expected 38"):
        _decode_spans(str(path), spans, timeline, DecodeOptions())  # MPEG-TS seeking misses a GOP here
    np.testing.assert_array_equal(read_clips_at(path, indices, timeline, seek_cost_frames=0), full[indices])


def _timeline(frames: int, keyframes: list[int]) -> Timeline:
    return Timeline(frames, -(-frames // 16), 0, np.arange(frames) / 25, frames / 25, np.array(keyframes),
                    StreamInfo("h264", 320, 240, 25.0, 0), [])


def test_seek_spans_decode_on_rather_than_seek_when_the_next_key_frame_is_not_ahead():
    timeline = _timeline(320, [0, 100, 200])
    spans = seek_spans([15, 1, 3, 14, 7], timeline)
    assert [(s.keyframe, s.start, s.end) for s in spans] == [(0, 16, 64), (100, 112, 128), (200, 224, 256)]
    assert spans[0].wanted == ((16, 32), (48, 64)) and spans[2].wanted == ((224, 240), (240, 256))
    with pytest.raises(IndexError, match="clip 20 is outside the video's 20 clips"):
        seek_spans([20], timeline)


def test_seeking_a_resampled_video_is_refused(encoded):
    timeline = read_timeline(encoded["ucf_mpeg4"])
    with pytest.raises(ValueError, match="cr_ucf_mpeg4.avi: seeking needs the native frame rate"):
        read_clips_at(encoded["ucf_mpeg4"], [0], timeline, DecodeOptions(fps=10))


# --- broken files -----------------------------------------------------------------------------------------


def test_a_broken_file_raises_decode_error_naming_it(tmp_path, encoded):
    garbage = tmp_path / "garbage.mp4"
    garbage.write_bytes(np.random.default_rng(0).integers(0, 256, 50_000, dtype=np.uint8).tobytes())
    truncated = tmp_path / "truncated.mp4"
    truncated.write_bytes(encoded["kinetics_h264"].read_bytes()[:4000])
    for path in (garbage, truncated, tmp_path / "missing.avi"):
        with pytest.raises(DecodeError, match="^" + str(path).replace(".", r"\.") + ": ") as raised:
            list(ClipReader(path, 4))
        assert "\n" not in str(raised.value)
    timeline = read_timeline(encoded["kinetics_h264"])
    with pytest.raises(DecodeError, match="garbage.mp4: "):
        read_clips_at(garbage, [3], timeline)


# --- memory -----------------------------------------------------------------------------------------------


def test_a_long_video_never_holds_more_than_a_window(ffmpeg_video):
    path = ffmpeg_video("cr_long.avi", "-f", "lavfi", "-i", "testsrc2=size=128x96:rate=25", "-frames:v", "1000",
                        "-c:v", "mpeg4")
    window = 4
    tracemalloc.start()  # numpy reports its array buffers to tracemalloc
    try:
        tracemalloc.reset_peak()
        sizes = [len(w.clips) for w in ClipReader(path, window)]
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert sum(sizes) == 63 and max(sizes) == window
    # the window being filled plus the one the caller holds, never the 63 clips (38 MB)
    assert peak < 2 * window * CLIP_BYTES + (1 << 20) < 63 * CLIP_BYTES / 5


def test_stopping_early_leaves_a_reader_that_reads_again(encoded):
    reader = ClipReader(encoded["kinetics_h264"], 2)
    first = next(iter(reader))
    with pytest.raises(RuntimeError, match="the timeline is known once every window was read"):
        _ = reader.timeline
    again = next(iter(reader))
    np.testing.assert_array_equal(first.clips, again.clips)


# --- the plan -----------------------------------------------------------------------------------------------


def test_plan_reads_seeks_only_for_a_student_on_long_videos_with_close_key_frames():
    assert plan_reads("mpeg4", student=False, k=5, frames=90_000, keyframe_interval_frames=12).student is None
    for short_or_unknown in ({"frames": 175, "keyframe_interval_frames": 12}, {"frames": None},
                             {"frames": 1500, "keyframe_interval_frames": 1500}):
        assert plan_reads("mpeg4", student=True, k=5, **short_or_unknown).seek_teacher is False
    assert plan_reads("mpeg4", student=True, k=5, frames=90_000, keyframe_interval_frames=12,
                      resampled=True).seek_teacher is False
    long_video = plan_reads("mpeg4", student=True, k=5, frames=1500, keyframe_interval_frames=12)
    assert long_video.seek_teacher and long_video.student == STUDENT_EXACT and long_video.estimated_cost < 1
    approximate = plan_reads("mpeg4", student=True, k=5, frames=1500, keyframe_interval_frames=12,
                             approximate_student=True)
    assert approximate.student == LOWRES_STUDENT and approximate.estimated_cost < long_video.estimated_cost
    assert plan_reads("h264", student=True, k=5, frames=1500, keyframe_interval_frames=12,
                      approximate_student=True).student == STUDENT_56


def test_read_planner_learns_a_collections_frames_per_byte_and_key_frames(encoded, ffmpeg_video, tmp_path):
    planner = ReadPlanner(student=True, k=2)
    short = encoded["ucf_mpeg4"]
    assert planner.plan(short, short.stat().st_size).seek_teacher is False  # nothing seen yet
    planner.observe(short, short.stat().st_size, read_timeline(short))
    assert planner.plan(short, short.stat().st_size).seek_teacher is False  # 75 frames: two passes cost more
    plan = planner.plan(tmp_path / "long.AVI", 40 * short.stat().st_size)  # ~3000 frames, key frames 12 apart
    assert plan.seek_teacher and plan.student == STUDENT_EXACT
    assert planner.plan(tmp_path / "long.mp4", 40 * short.stat().st_size).seek_teacher is False  # another encoding
    planner.observe(tmp_path / "a.ts", short.stat().st_size, read_timeline(short))
    assert planner.plan(tmp_path / "long.ts", 40 * short.stat().st_size).seek_teacher is False  # no seek index
