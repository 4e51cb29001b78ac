"""Encoding one video: the bit-exact ffmpeg/libx264 command and writing a rendered video to its mp4 atomically."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path
from typing import NamedTuple

from condi_pipe.video.ffmpeg_binary import ffmpeg_exe
from condi_pipe.video.synth.config import SynthConfig
from condi_pipe.video.synth.plan import plan_frames, plan_video
from condi_pipe.video.synth.render import _render_clips


def encoder_command(output: Path | str, config: SynthConfig = SynthConfig()) -> list[str]:
    """ffmpeg command reading rgb24 frames on stdin and writing a bit-exact H.264 yuv420p mp4."""
    return [
        ffmpeg_exe(),
        "-hide_banner",
        "-loglevel", "error",
        "-y",
        "-filter_threads", "1",
        "-f", "rawvideo",
        "-pix_fmt", "rgb24",
        "-s", f"{config.frame_width}x{config.frame_height}",
        "-r", str(config.fps),
        "-i", "pipe:0",
        "-an",
        "-c:v", "libx264",
        "-preset", config.x264_preset,
        "-crf", str(config.x264_crf),
        "-g", str(config.gop),
        "-keyint_min", str(config.gop),
        "-sc_threshold", "0",
        "-bf", str(config.b_frames),
        "-threads", "1",
        "-pix_fmt", "yuv420p",
        "-r", str(config.fps),
        "-fflags", "+bitexact",
        "-flags", "+bitexact",
        "-map_metadata", "-1",
        "-movflags", "+faststart",
        "-f", "mp4",
        str(output),
    ]  # fmt: skip


class VideoRecord(NamedTuple):
    index: int
    relpath: str
    label: int
    group: int
    kinds: tuple[str, ...]
    distractor_classes: tuple[int, ...]
    frames: int
    bytes: int


def write_video(root: Path, index: int, config: SynthConfig) -> VideoRecord:
    """Render and encode video ``index`` under ``root`` (atomically: temporary file, then rename)."""
    root = Path(root)
    plan = plan_video(index, config)
    path = root / plan.relpath
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.part")
    proc = subprocess.Popen(
        encoder_command(tmp, config), stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    frames = 0
    try:
        try:
            for clip_frames, _, _, _ in _render_clips(plan, config):
                proc.stdin.write(clip_frames.tobytes())
                frames += clip_frames.shape[0]
        finally:
            try:
                proc.stdin.close()
            except BrokenPipeError:
                pass
    except BrokenPipeError:  # ffmpeg exited early: its exit status and message are reported below
        pass
    except BaseException:
        proc.kill()
        proc.wait()
        proc.stderr.close()
        tmp.unlink(missing_ok=True)
        raise
    err = proc.stderr.read()
    proc.stderr.close()
    if proc.wait() != 0 or frames != plan_frames(plan, config):
        tmp.unlink(missing_ok=True)
        raise RuntimeError(f"ffmpeg failed encoding {path}: {err.decode(errors='replace').strip()}")
    os.replace(tmp, path)
    return VideoRecord(
        index=index,
        relpath=plan.relpath,
        label=plan.label,
        group=plan.group,
        kinds=plan.kinds,
        distractor_classes=tuple(c.distractor_class for c in plan.clips),
        frames=frames,
        bytes=path.stat().st_size,
    )


def _encoder_version() -> str:
    out = subprocess.run([ffmpeg_exe(), "-version"], capture_output=True, text=True, check=False).stdout
    return out.splitlines()[0] if out else "unknown"
