"""Decoding real and synthetic videos into 16-frame 112x112 RGB clips (condi_pipe.video.decode)."""

from __future__ import annotations

import math
import re
import subprocess
from pathlib import Path

import numpy as np
import pytest

from condi_pipe.video.decode import (
    DecodeError,
    DecodeOptions,
    decode_command,
    decode_video,
    frames_to_clips,
)

# file -> (decoded frames from ../shared/media/README.md, codec, display width, display height, fps, rotation)
MEDIA = {
    "flipping_a_pancake.mkv": (310, "h264", 426, 240, 30.0, 0),
    "corrupted.mp4": (49, "h264", 1280, 720, 10.0, 0),
    "rotated_90.mov": (3, "h264", 320, 568, 30.0, 270),
    "h265_video.mp4": (10, "hevc", 128, 128, 10.0, 0),
    "av1_video.mkv": (125, "av1", 640, 360, 25.0, 0),
    "test.avi": (164, "mpeg4", 320, 240, 25.0, 0),
    "test.mp4": (300, "h264", 455, 256, 30.0, 0),  # 340x256 stored, SAR 1024:765 -> 455 wide
}
CLEAN = sorted(set(MEDIA) - {"corrupted.mp4"})


@pytest.fixture(scope="module")
def decoded(media_dir):
    """Decode each shared file at most once per module with the default options."""
    cache = {}

    def get(name: str):
        if name not in cache:
            cache[name] = decode_video(media_dir / name)
        return cache[name]

    return get


def _decode_without_autorotate(path: Path, options: DecodeOptions = DecodeOptions()) -> np.ndarray:
    """The same filter chain as decode_video but with ffmpeg's autorotate switched off."""
    cmd = decode_command(str(path), options)
    i = cmd.index("-i")
    proc = subprocess.run(cmd[:i] + ["-noautorotate"] + cmd[i:], capture_output=True, check=True)
    return np.frombuffer(proc.stdout, np.uint8).reshape(-1, options.crop, options.crop, 3)


def _single_line_error(excinfo, path: Path, kind: str) -> str:
    err = excinfo.value
    message = str(err)
    assert err.kind == kind, message
    assert str(path) in message
    assert "\n" not in message and "\r" not in message and message.strip() == message
    return message


# --- the shared real media ------------------------------------------------------------------------------


def test_table_covers_every_shared_file_and_matches_readme(media_dir):
    videos = {p.name for p in media_dir.iterdir() if p.is_file() and p.name != "README.md"}
    assert videos == set(MEDIA)
    readme = (media_dir / "README.md").read_text()
    counts = {m[1]: int(m[2]) for m in re.finditer(r"^\| (\S+) \|.*\| (\d+) \|$", readme, re.MULTILINE)}
    assert counts == {name: row[0] for name, row in MEDIA.items()}


@pytest.mark.parametrize("name", sorted(MEDIA))
def test_real_file_gives_padded_clips_of_every_frame(decoded, name):
    frames, codec, width, height, fps, rotation = MEDIA[name]
    video = decoded(name)
    n_clips = math.ceil(frames / 16)
    assert video.frames == frames
    assert video.clips.dtype == np.uint8
    assert video.clips.shape == (n_clips, 16, 112, 112, 3)
    assert video.pad_frames == 16 * n_clips - frames
    last_clip = video.clips[-1]
    last_real = 16 - video.pad_frames - 1
    for k in range(last_real + 1, 16):
        np.testing.assert_array_equal(last_clip[k], last_clip[last_real])
    if video.pad_frames:
        # Padding repeats the last real frame, not a zero frame: the frames carry picture content.
        assert last_clip[last_real].std() > 5
    assert video.info == (codec, width, height, fps, rotation)


@pytest.mark.parametrize("name", CLEAN)
def test_clean_files_have_no_warnings(decoded, name):
    assert decoded(name).warnings == []


def test_corrupted_file_keeps_its_frames_with_a_warning_naming_it(decoded, media_dir):
    video = decoded("corrupted.mp4")
    assert video.frames == 49
    assert video.warnings, "a broken NAL unit must be reported"
    for warning in video.warnings:
        assert warning.startswith(f"{media_dir / 'corrupted.mp4'}: ")
        assert "\n" not in warning


def test_decoding_is_deterministic(decoded, media_dir):
    for name in ("test.avi", "corrupted.mp4"):
        again = decode_video(media_dir / name)
        first = decoded(name)
        assert again.clips.tobytes() == first.clips.tobytes()
        assert (again.frames, again.pad_frames, again.info, again.warnings) == (
            first.frames, first.pad_frames, first.info, first.warnings)


# --- rotation ---------------------------------------------------------------------------------------------


def test_real_rotated_file_is_turned_upright(decoded, media_dir):
    video = decoded("rotated_90.mov")
    assert video.info.rotation in (90, 270)
    assert video.info.width < video.info.height  # 568x320 stored, portrait on display
    raw = _decode_without_autorotate(media_dir / "rotated_90.mov")
    assert len(raw) == video.frames == 3
    upright = video.clips[0, 0].astype(int)
    # ffmpeg's rotation is counter-clockwise, as np.rot90's.
    errors = {k: np.abs(upright - np.rot90(raw[0], k).astype(int)).mean() for k in range(4)}
    assert errors[video.info.rotation // 90] < 3, errors
    assert min(e for k, e in errors.items() if k != video.info.rotation // 90) > 15, errors


@pytest.fixture(scope="module")
def white_left(ffmpeg_video) -> Path:
    """64x32: left half white, right half black."""
    return ffmpeg_video(
        "white_left.mp4", "-f", "lavfi", "-i", "color=white:size=32x32:rate=25[a];color=black:size=32x32:rate=25[b];"
        "[a][b]hstack", "-frames:v", "5", "-c:v", "libx264", "-pix_fmt", "yuv420p")


def _halves(frame: np.ndarray) -> dict[str, float]:
    gray = frame.mean(axis=2)
    return {"top": gray[:48].mean(), "bottom": gray[-48:].mean(), "left": gray[:, :48].mean(),
            "right": gray[:, -48:].mean()}


def test_unrotated_synthetic_video_keeps_white_on_the_left(white_left):
    video = decode_video(white_left)
    assert video.info.rotation == 0 and (video.info.width, video.info.height) == (64, 32)
    h = _halves(video.clips[0, 0])
    assert h["left"] > 240 and h["right"] < 15
    assert abs(h["top"] - h["bottom"]) < 5


@pytest.mark.parametrize("tag, rotation, white", [("90", 90, "bottom"), ("-90", 270, "top")])
def test_rotation_tag_turns_the_frames(ffmpeg_video, white_left, tag, rotation, white):
    rotated = ffmpeg_video(f"white_left_rot{tag}.mp4", "-display_rotation", tag, "-i", str(white_left), "-c", "copy")
    video = decode_video(rotated)
    assert video.info.rotation == rotation
    assert (video.info.width, video.info.height) == (32, 64)
    h = _halves(video.clips[0, 0])
    black = {"top": "bottom", "bottom": "top"}[white]
    assert h[white] > 240 and h[black] < 15
    assert abs(h["left"] - h["right"]) < 5
    # With rotation ignored the same file still shows white on the left.
    raw = _halves(_decode_without_autorotate(rotated)[0])
    assert raw["left"] > 240 and raw["right"] < 15


# --- pixel aspect ratio -----------------------------------------------------------------------------------


def test_non_square_pixels_widen_the_display_size(decoded):
    info = decoded("test.mp4").info
    assert (info.width, info.height) == (round(340 * 1024 / 765), 256) == (455, 256)


def _bright_extent(frame: np.ndarray) -> tuple[int, int]:
    ys, xs = np.nonzero(frame.mean(axis=2) > 128)
    return int(xs.max() - xs.min() + 1), int(ys.max() - ys.min() + 1)


@pytest.mark.parametrize("rotate", [None, "90"])
def test_anamorphic_circle_decodes_round(ffmpeg_video, rotate):
    # Stored 64x96, SAR 2:1 -> display 128x96 (96x128 when rotated); radii 20 x 40 stored = a circle of diameter 80
    # on display, 80 * 128 / 96 = 107 after the short side is scaled to 128. Ignoring the SAR would make it twice as
    # tall as wide; the SAR must also follow the stored width after autorotate has turned the picture.
    ellipse = "if(lte(pow((X-31.5)/20\\,2)+pow((Y-47.5)/40\\,2)\\,1)\\,255\\,0)"
    path = ffmpeg_video(
        "anamorphic_ellipse.mp4", "-f", "lavfi", "-i", f"color=black:size=64x96:rate=25,format=gray,geq=lum='{ellipse}'",
        "-frames:v", "3", "-vf", "setsar=2", "-c:v", "libx264", "-pix_fmt", "yuv420p")
    if rotate:
        path = ffmpeg_video(f"anamorphic_ellipse_rot{rotate}.mp4", "-display_rotation", rotate, "-i", str(path),
                            "-c", "copy")
    video = decode_video(path)
    assert (video.info.width, video.info.height) == ((96, 128) if rotate else (128, 96))
    width, height = _bright_extent(video.clips[0, 0])
    assert abs(width - height) <= 2, (width, height)
    assert abs(width - 107) <= 3, (width, height)


# --- options ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name, fps, expected", [("av1_video.mkv", 10, 50), ("av1_video.mkv", 50, 250),
                                                 ("test.mp4", 15, 150)])
def test_fps_option_resamples(media_dir, name, fps, expected):
    video = decode_video(media_dir / name, DecodeOptions(fps=fps))
    assert abs(video.frames - expected) <= 1, video.frames
    assert video.clips.shape[0] == math.ceil(video.frames / 16)
    assert video.info.fps == fps


def test_crop_short_side_and_clip_length_options(media_dir):
    video = decode_video(media_dir / "h265_video.mp4", DecodeOptions(short_side=72, crop=64, clip_length=4))
    assert video.frames == 10
    assert video.clips.shape == (3, 4, 64, 64, 3)
    assert video.pad_frames == 2


# --- failures ---------------------------------------------------------------------------------------------


def test_missing_file(tmp_path):
    path = tmp_path / "nope.mp4"
    with pytest.raises(DecodeError) as excinfo:
        decode_video(path)
    _single_line_error(excinfo, path, "missing-file")


def test_empty_file(tmp_path):
    path = tmp_path / "empty.mp4"
    path.write_bytes(b"")
    with pytest.raises(DecodeError) as excinfo:
        decode_video(path)
    _single_line_error(excinfo, path, "empty-file")


@pytest.mark.parametrize("name", ["notes.mp4", "notes.avi", "notes.mkv"])
def test_text_file_named_like_a_video(tmp_path, name):
    path = tmp_path / name
    path.write_text("this is a text file, not a video\n" * 20)
    with pytest.raises(DecodeError) as excinfo:
        decode_video(path)
    # Not "truncated": for a .mp4 ffmpeg's MP4 demuxer would also say "moov atom not found".
    _single_line_error(excinfo, path, "invalid-data")


def test_truncated_mp4_with_moov_at_the_end(tmp_path, media_dir):
    data = (media_dir / "test.mp4").read_bytes()
    assert data.find(b"moov") > data.find(b"mdat") > 0  # the index is written after the media data
    path = tmp_path / "truncated.mp4"
    path.write_bytes(data[: int(len(data) * 0.3)])
    with pytest.raises(DecodeError) as excinfo:
        decode_video(path)
    _single_line_error(excinfo, path, "truncated")


def test_truncated_mp4_with_moov_at_the_start_decodes_partially(tmp_path, media_dir, ffmpeg_video):
    faststart = ffmpeg_video("test_faststart.mp4", "-i", str(media_dir / "test.mp4"), "-c", "copy",
                             "-movflags", "+faststart")
    data = faststart.read_bytes()
    assert 0 < data.find(b"moov") < data.find(b"mdat")
    path = tmp_path / "truncated_faststart.mp4"
    path.write_bytes(data[: int(len(data) * 0.3)])
    video = decode_video(path)
    assert 0 < video.frames < 300
    assert video.clips.shape[0] == math.ceil(video.frames / 16)
    assert video.warnings and all(w.startswith(f"{path}: ") for w in video.warnings)


def test_unknown_codec(tmp_path, media_dir):
    data = bytearray((media_dir / "test.mp4").read_bytes())
    stsd = data.find(b"stsd")
    fourcc = data.find(b"avc1", stsd)
    assert stsd > 0 and 0 < fourcc - stsd < 32  # the sample entry right inside the stsd box
    data[fourcc : fourcc + 4] = b"zzzz"
    path = tmp_path / "zzzz.mp4"
    path.write_bytes(bytes(data))
    with pytest.raises(DecodeError) as excinfo:
        decode_video(path)
    _single_line_error(excinfo, path, "unknown-codec")


def test_audio_only_file(tmp_path, ffmpeg_video):
    audio = ffmpeg_video("sine.m4a", "-f", "lavfi", "-i", "sine=duration=0.5", "-c:a", "aac")
    with pytest.raises(DecodeError) as excinfo:
        decode_video(audio)
    _single_line_error(excinfo, audio, "no-video-stream")


# --- frames_to_clips --------------------------------------------------------------------------------------


def _numbered_frames(n: int) -> np.ndarray:
    """Frame i is filled with the value i, so the clip order is visible."""
    return np.broadcast_to(np.arange(n, dtype=np.uint8)[:, None, None, None], (n, 2, 3, 3)).copy()


@pytest.mark.parametrize("n, clips, pad", [(32, 2, 0), (16, 1, 0), (1, 1, 15), (17, 2, 15), (35, 3, 13)])
def test_frames_to_clips(n, clips, pad):
    frames = _numbered_frames(n)
    out, got_pad = frames_to_clips(frames)
    assert out.shape == (clips, 16, 2, 3, 3) and out.dtype == np.uint8
    assert got_pad == pad
    order = out[:, :, 0, 0, 0].reshape(-1)
    np.testing.assert_array_equal(order, list(range(n)) + [n - 1] * pad)


def test_frames_to_clips_other_length_and_no_frames():
    out, pad = frames_to_clips(_numbered_frames(10), clip_length=4)
    assert out.shape == (3, 4, 2, 3, 3) and pad == 2
    np.testing.assert_array_equal(out[:, :, 0, 0, 0].reshape(-1), list(range(10)) + [9, 9])
    with pytest.raises(ValueError):
        frames_to_clips(np.zeros((0, 2, 2, 3), np.uint8))
