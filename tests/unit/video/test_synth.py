"""Tests of the generated benchmark (condi_pipe.video.synth): layout, determinism, decoding, clip kinds, motion."""

from __future__ import annotations

import csv
import dataclasses
import json
import math
import re
import subprocess
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from condi_pipe.video import synth
from condi_pipe.video.ffmpeg_binary import ffmpeg_exe

VIDEOS = 20  # 2 per class: the smallest benchmark with every class in both splits
H, W = synth.FRAME_HEIGHT, synth.FRAME_WIDTH


@pytest.fixture(scope="module")
def bench(tmp_path_factory) -> tuple[Path, synth.SynthSummary]:
    root = tmp_path_factory.mktemp("synth_a")
    calls = []
    summary = synth.generate_benchmark(root, VIDEOS, 0, progress=lambda d, t: calls.append((d, t)))
    assert calls == [(i + 1, VIDEOS) for i in range(VIDEOS)]
    return root, summary


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _read_lines(path: Path) -> list[str]:
    """Lines of a UCF-style list file, accepting CRLF or LF endings."""
    return [line for line in path.read_bytes().decode().replace("\r\n", "\n").split("\n") if line]


def _decode(path: Path) -> np.ndarray:
    out = subprocess.run(
        [ffmpeg_exe(), "-v", "error", "-nostdin", "-i", str(path), "-f", "rawvideo", "-pix_fmt", "rgb24", "pipe:1"],
        capture_output=True,
        check=True,
    ).stdout
    assert len(out) % (H * W * 3) == 0
    return np.frombuffer(out, np.uint8).reshape(-1, H, W, 3)


def _stream_info(path: Path) -> str:
    err = subprocess.run([ffmpeg_exe(), "-hide_banner", "-nostdin", "-i", str(path)], capture_output=True).stderr
    return next(line for line in err.decode().splitlines() if "Video:" in line)


def _clips_csv(root: Path) -> list[dict[str, str]]:
    with open(root / "synth_clips.csv", newline="") as f:
        return list(csv.DictReader(f))


# ------------------------------------------------------------------------------------------------ API and layout


def test_classes_and_config():
    assert len(synth.CLASSES) == 10 and len(set(synth.CLASSES)) == 10
    assert all(re.fullmatch(r"(?:[A-Z][a-z]+)+", c) for c in synth.CLASSES)
    cfg = synth.SynthConfig()
    assert (cfg.videos, cfg.seed, cfg.frame_width, cfg.frame_height, cfg.fps) == (200, 0, 170, 128, 25)
    assert cfg.p_informative + cfg.ambiguous_probability * len(cfg.ambiguous_kinds) == pytest.approx(1.0)
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.videos = 3  # type: ignore[misc]


def test_layout_and_lists(bench):
    root, summary = bench
    raw = (root / "classInd.txt").read_bytes()
    assert raw.endswith(b"\r\n") and raw.count(b"\r\n") == raw.count(b"\n") == 10
    class_ind = [line.split(" ") for line in _read_lines(root / "classInd.txt")]
    assert [(int(i), n) for i, n in class_ind] == [(i + 1, n) for i, n in enumerate(synth.CLASSES)]
    index_of = {n: int(i) for i, n in class_ind}

    for name in ("trainlist01.txt", "testlist01.txt"):
        data = (root / name).read_bytes()
        assert data.count(b"\r\n") == data.count(b"\n") > 0, f"{name} must use CRLF line endings like UCF-101"

    train, test = {}, []
    pattern = re.compile(r"^(?P<cls>[A-Za-z]+)/v_(?P=cls)_g(?P<g>\d{2})_c(?P<c>\d{2})\.mp4$")
    for line in _read_lines(root / "trainlist01.txt"):
        rel, idx = line.split(" ")
        m = pattern.match(rel)
        assert m, rel
        assert int(idx) == index_of[m["cls"]]
        train[rel] = int(idx)
    for rel in _read_lines(root / "testlist01.txt"):
        assert pattern.match(rel) and " " not in rel, rel
        test.append(rel)
    assert not set(train) & set(test)
    on_disk = {str(p.relative_to(root)) for p in root.glob("*/*.mp4")}
    assert on_disk == set(train) | set(test)
    assert len(on_disk) == VIDEOS
    assert not list(root.rglob(".*"))  # no leftover temporary files

    n_train = Counter(r.split("/")[0] for r in train)
    n_test = Counter(r.split("/")[0] for r in test)
    for cls in synth.CLASSES:
        n = n_train[cls] + n_test[cls]
        assert n_train[cls] >= 1 and n_test[cls] >= 1, cls
        assert abs(n_test[cls] - 0.3 * n) <= 0.5 or n_test[cls] == 1, cls
    assert summary.train == {c: n_train[c] for c in synth.CLASSES}
    assert summary.test == {c: n_test[c] for c in synth.CLASSES}
    assert summary.videos == VIDEOS


def test_split_fractions_for_bigger_benchmarks():
    for videos in (200, 137, 1000):
        cfg = synth.SynthConfig(videos=videos, seed=3)
        groups = synth.split_test_groups(cfg)
        for cls, test_groups in groups.items():
            n = len(range(cls, videos, 10))
            assert abs(len(test_groups) - 0.3 * n) <= 0.5
            assert test_groups <= set(range(1, n + 1))
    a = synth.split_test_groups(synth.SynthConfig(videos=200, seed=0))
    b = synth.split_test_groups(synth.SynthConfig(videos=200, seed=1))
    assert a != b  # the split depends on the seed


def test_sidecars(bench):
    root, summary = bench
    meta = json.loads((root / "synth.json").read_text())
    assert meta["complete"] is True
    assert meta["config"]["videos"] == VIDEOS and meta["config"]["seed"] == 0
    assert meta["classes"] == list(synth.CLASSES)
    rows = _clips_csv(root)
    assert Counter(r["kind"] for r in rows) == Counter({k: v for k, v in summary.clip_kinds.items() if v})
    assert len(rows) == summary.clips and summary.frames == 16 * summary.clips
    for r in rows:
        assert int(r["start_frame"]) == 16 * int(r["clip"])
        assert r["label"] == r["video"].split("/")[0]
        if r["kind"] == "distractor":
            assert r["distractor_class"] in synth.CLASSES and r["distractor_class"] != r["label"]
        else:
            assert r["distractor_class"] == ""
    kinds = synth.read_clip_kinds(root)
    assert len(kinds) == VIDEOS
    assert all("informative" in k for k in kinds.values())
    assert all(synth.MIN_CLIPS <= len(k) <= synth.MAX_CLIPS for k in kinds.values())


def test_refuses_foreign_directory(tmp_path):
    (tmp_path / "something.txt").write_text("not a benchmark")
    with pytest.raises(FileExistsError):
        synth.generate_benchmark(tmp_path, 2, 0)


# ------------------------------------------------------------------------------------------------ decoding


def test_every_video_decodes_to_the_generated_frames(bench):
    root, _ = bench
    kinds = synth.read_clip_kinds(root)
    for rel, clip_kinds in kinds.items():
        path = root / rel
        info = _stream_info(path)
        assert "h264" in info and "yuv420p" in info and "170x128" in info and "25 fps" in info, info
        frames = _decode(path)
        assert frames.shape == (16 * len(clip_kinds), H, W, 3), rel
    # the decoded pixels are the rendered ones (up to compression): informative clips of two videos against their
    # in-memory rendering (heavy-noise clips cannot survive compression, so they are left out)
    for index in (0, 7):
        rv = synth.render_video(index)
        decoded = _decode(root / rv.plan.relpath)
        sel = np.repeat(np.array(rv.plan.kinds) == "informative", 16)
        mse = np.mean((rv.frames[sel].astype(np.float64) - decoded[sel]) ** 2)
        assert 10 * math.log10(255**2 / mse) > 27.0


# ------------------------------------------------------------------------------------------------ determinism


def test_deterministic_parallel_prefix_and_seed(bench, tmp_path):
    root, _ = bench
    reference = _files(root)

    again = tmp_path / "again"
    synth.generate_benchmark(again, VIDEOS, 0, workers=2)  # parallel, different order: same bytes
    assert _files(again) == reference

    prefix = tmp_path / "prefix"  # video i does not depend on how many videos are generated
    synth.generate_benchmark(prefix, 3, 0)
    files = _files(prefix)
    mp4s = [k for k in files if k.endswith(".mp4")]
    assert len(mp4s) == 3 and all(files[k] == reference[k] for k in mp4s)

    other = tmp_path / "other"
    synth.generate_benchmark(other, 3, 1)
    other_files = _files(other)
    assert [k for k in other_files if k.endswith(".mp4")] == mp4s
    assert all(other_files[k] != reference[k] for k in mp4s)


def test_rerun_with_fewer_videos_removes_stale_files(tmp_path):
    synth.generate_benchmark(tmp_path, 4, 0)
    synth.generate_benchmark(tmp_path, 2, 0)
    assert sorted(str(p.relative_to(tmp_path)) for p in tmp_path.glob("*/*.mp4")) == [
        "TranslateLeft/v_TranslateLeft_g01_c01.mp4",
        "TranslateRight/v_TranslateRight_g01_c01.mp4",
    ]


def test_render_is_deterministic():
    a, b = synth.render_video(7), synth.render_video(7)
    assert np.array_equal(a.frames, b.frames)
    assert not np.array_equal(a.frames[:32], synth.render_video(7, synth.SynthConfig(seed=5)).frames[:32])


# ------------------------------------------------------------------------------------------------ clip kinds


def test_clip_kind_and_length_frequencies():
    cfg = synth.SynthConfig()
    n_videos = 4000
    lengths, kinds = Counter(), Counter()
    for i in range(n_videos):
        plan = synth.plan_video(i, cfg)
        assert plan.label == i % 10 and plan.group == i // 10 + 1
        assert "informative" in plan.kinds
        lengths[len(plan.kinds)] += 1
        kinds.update(plan.kinds)
    assert set(lengths) == set(range(2, 13))
    assert all(abs(c - n_videos / 11) < 0.25 * n_videos / 11 for c in lengths.values())
    # informative share, given the redraw of kind sequences without an informative clip
    p = cfg.p_informative
    expected_inf = sum(p * n / (1 - (1 - p) ** n) for n in range(2, 13)) / sum(range(2, 13))
    total = sum(kinds.values())
    assert kinds["informative"] / total == pytest.approx(expected_inf, abs=0.015)
    ambiguous = total - kinds["informative"]
    for kind in synth.AMBIGUOUS_KINDS:
        assert kinds[kind] / ambiguous == pytest.approx(0.25, abs=0.02), kind


def test_sample_clip_kinds_unconditional_rate():
    rng = np.random.default_rng(0)
    draws = Counter(k for _ in range(2000) for k in synth.sample_clip_kinds(rng, 12))
    total = sum(draws.values())
    assert draws["informative"] / total == pytest.approx(0.6, abs=0.015)
    for kind in synth.AMBIGUOUS_KINDS:
        assert draws[kind] / total == pytest.approx(0.1, abs=0.01)


def test_appearance_is_independent_of_class():
    per_class: dict[int, list[float]] = {c: [] for c in range(10)}
    shapes: dict[int, Counter] = {c: Counter() for c in range(10)}
    for i in range(3000):
        plan = synth.plan_video(i)
        scale = np.exp(np.log(plan.motion.scale_ratio) * np.linspace(-0.5, 0.5, 16))
        per_class[plan.label].extend(plan.look.radius * scale)  # radius in each frame of a moving clip
        shapes[plan.label][plan.look.shape] += 1
    means = [np.mean(v) for v in per_class.values()]
    assert max(means) - min(means) < 1.0  # pixels; radii span ~11..37
    for c in range(10):
        assert all(abs(shapes[c][s] / 300 - 0.2) < 0.08 for s in synth.SHAPES)


# ------------------------------------------------------------------------------------------------ motion


def _find(cls_name: str, kind: str, texture: str | None = None, start: int = 0) -> tuple[int, list[int]]:
    label = synth.CLASSES.index(cls_name)
    for i in range(start + label, 5000, 10):
        plan = synth.plan_video(i)
        clips = [c for c, k in enumerate(plan.kinds) if k == kind]
        if clips and (texture is None or plan.background.texture == texture):
            return i, clips
    raise AssertionError("no such video")


def _interior(alpha: np.ndarray) -> bool:
    return alpha.sum() > 0 and not (alpha[0].any() or alpha[-1].any() or alpha[:, 0].any() or alpha[:, -1].any())


def _centroid(weights: np.ndarray) -> tuple[float, float]:
    ys, xs = np.mgrid[0 : weights.shape[0], 0 : weights.shape[1]]
    total = weights.sum()
    return float((xs * weights).sum() / total), float((ys * weights).sum() / total)


@pytest.mark.parametrize(
    "cls_name, axis, sign",
    [("TranslateRight", 0, 1), ("TranslateLeft", 0, -1), ("TranslateUp", 1, -1), ("TranslateDown", 1, 1)],
)
def test_translation_moves_the_object(cls_name, axis, sign):
    checked = 0
    for start in (0, 10, 20):
        index, clips = _find(cls_name, "informative", start=start * 10)
        rv = synth.render_video(index, with_alpha=True)
        speed = abs(rv.plan.motion.speed)
        colour = np.clip(np.array(rv.plan.look.colour) * rv.plan.gain, 0, 255)
        for c in clips:
            steps_alpha, steps_pixels = [], []
            for f in range(16 * c, 16 * c + 15):
                a0, a1 = rv.object_alpha[f], rv.object_alpha[f + 1]
                if not (_interior(a0) and _interior(a1)):
                    continue
                steps_alpha.append(_centroid(a1)[axis] - _centroid(a0)[axis])
                # from the pixels themselves: where the frame has the object's colour
                m0 = np.linalg.norm(rv.frames[f] - colour, axis=-1) < 40
                m1 = np.linalg.norm(rv.frames[f + 1] - colour, axis=-1) < 40
                steps_pixels.append(_centroid(m1)[axis] - _centroid(m0)[axis])
            if len(steps_alpha) >= 5:
                assert np.allclose(steps_alpha, sign * speed, atol=0.05)
                assert abs(np.median(steps_pixels) - sign * speed) < 0.5
                checked += 1
    assert checked >= 2


def test_translation_wraps_and_keeps_direction():
    index, _ = _find("TranslateRight", "informative")
    plan = synth.plan_video(index)
    tau = np.arange(2000.0)
    states = synth.motion_states(plan.motion, plan.look, tau, np.zeros_like(tau), synth.SynthConfig())
    steps = np.diff(states[:, 0])
    r = plan.look.radius
    assert np.all((np.abs(steps - plan.motion.speed) < 1e-9) | (steps < -W))  # forward, or a wrap
    assert states[:, 0].min() >= -r - 1e-9 and states[:, 0].max() < W + r


@pytest.mark.parametrize("cls_name, sign", [("RotateClockwise", 1), ("RotateAnticlockwise", -1)])
def test_rotation_turns_the_marker(cls_name, sign):
    index, clips = _find(cls_name, "informative")
    rv = synth.render_video(index, with_alpha=True)
    marker = np.clip(np.array(rv.plan.look.marker_colour) * rv.plan.gain, 0, 255)
    c = clips[0]
    angles = []
    for f in range(16 * c, 16 * c + 16):
        inside = rv.object_alpha[f] > 0.99
        near = (np.linalg.norm(rv.frames[f] - marker, axis=-1) < 40) & inside
        mx, my = _centroid(near)
        x, y = rv.states[f, 0], rv.states[f, 1]
        angles.append(math.atan2(my - y, mx - x))  # screen coordinates, y down: clockwise = increasing
    steps = np.angle(np.exp(1j * np.diff(angles)))
    assert np.all(sign * steps > 0)
    assert np.median(np.abs(steps)) == pytest.approx(abs(rv.plan.motion.speed), rel=0.3)


@pytest.mark.parametrize("cls_name, sign", [("Grow", 1), ("Shrink", -1)])
def test_scale_changes_within_each_clip(cls_name, sign):
    index, clips = _find(cls_name, "informative")
    rv = synth.render_video(index, with_alpha=True)
    for c in clips:
        area = rv.object_alpha[16 * c : 16 * c + 16].sum(axis=(1, 2))
        assert np.all(sign * np.diff(area) > 0)
        assert (area.max() / area.min()) == pytest.approx(rv.plan.motion.scale_ratio**2, rel=0.15)


@pytest.mark.parametrize("cls_name, axis", [("OscillateHorizontal", 0), ("OscillateVertical", 1)])
def test_oscillation_reverses_within_every_clip(cls_name, axis):
    index, clips = _find(cls_name, "informative")
    rv = synth.render_video(index, with_alpha=True)
    for c in clips:
        pos = np.array([_centroid(rv.object_alpha[f]) for f in range(16 * c, 16 * c + 16)])
        steps = np.diff(pos[:, axis])
        assert (steps > 0).any() and (steps < 0).any()
        assert np.ptp(pos[:, 1 - axis]) < 0.05  # antialiasing jitter only


def test_state_is_continuous_across_clips():
    cfg = synth.SynthConfig()
    for cls_name in ("TranslateDown", "RotateAnticlockwise", "OscillateVertical"):
        for index in range(synth.CLASSES.index(cls_name), 300, 10):
            plan = synth.plan_video(index)
            if len(plan.kinds) >= 6:
                break
        rv = synth.render_video(index)
        expected_tau, tau = [], 0.0
        for kind in plan.kinds:
            if kind in synth.MOVING_KINDS:
                expected_tau.extend(tau + np.arange(16))
                tau += 16
            else:
                expected_tau.extend([tau] * 16)
        ref = synth.motion_states(plan.motion, plan.look, np.array(expected_tau), np.zeros(len(expected_tau)), cfg)
        assert np.allclose(rv.states[:, :3], ref[:, :3])


def test_pan_moves_background_not_object():
    index, clips = _find("RotateClockwise", "pan", texture="noise")
    rv = synth.render_video(index, with_alpha=True)
    c = clips[0]
    frames = rv.frames[16 * c : 16 * c + 16].astype(np.float64)
    alpha = rv.object_alpha[16 * c : 16 * c + 16]
    velocity = np.array(rv.plan.clips[c].pan_velocity)
    assert np.abs(velocity).max() > 0
    assert all(np.array_equal(alpha[0], a) for a in alpha)  # the object is still in the frame
    obj = alpha[0] > 0.99
    assert obj.sum() > 50
    for f in range(16):  # object pixels only carry sensor noise
        assert np.abs(frames[f][obj] - frames[0][obj]).mean() < 3 * rv.plan.sensor_noise + 2
    # background: frame k shows frame 0 shifted by k * velocity (the scene slides opposite to the camera)
    k = 8
    ys, xs = np.nonzero(alpha[0] > 0)
    keep = np.ones((H, W), bool)  # compare background pixels only: the object's bounding box is left out
    keep[max(0, ys.min() - 3) : ys.max() + 4, max(0, xs.min() - 3) : xs.max() + 4] = False
    m = 32
    errors = {}
    for sx in range(-m, m + 1):
        for sy in (range(-m, m + 1) if sx == 0 else (0,)):
            a = frames[k][m : H - m, m : W - m]
            b = frames[0][m + sy : H - m + sy, m + sx : W - m + sx]
            valid = keep[m : H - m, m : W - m] & keep[m + sy : H - m + sy, m + sx : W - m + sx]
            errors[(sx, sy)] = float(((a - b) ** 2)[valid].mean())
    best = min(errors, key=errors.get)
    expected = tuple(int(round(v)) for v in k * velocity)
    assert abs(best[0] - expected[0]) <= 1 and abs(best[1] - expected[1]) <= 1
    assert errors[best] < 0.5 * errors[(0, 0)]


def test_distractor_hides_object_and_moves_another_way():
    index, clips = _find("TranslateRight", "distractor")
    rv = synth.render_video(index, with_alpha=True)
    c = clips[0]
    clip = rv.plan.clips[c]
    assert clip.distractor_class != rv.plan.label
    block = np.clip(np.array(clip.block_colour) * rv.plan.gain, 0, 255)
    frames = rv.frames[16 * c : 16 * c + 16].astype(np.float64)
    alpha = rv.object_alpha[16 * c : 16 * c + 16]
    assert all(np.array_equal(alpha[0], a) for a in alpha)  # held still behind the block
    hidden = alpha[0] > 0
    # wherever the labelled object would be, the frame shows the block (or the distractor in front of it)
    dist = np.linalg.norm(frames[:, hidden] - block, axis=-1)
    assert np.mean(dist < 25) > 0.7


def test_heavy_kinds_degrade_the_clip():
    index, clips = _find("Grow", "noise")
    rv = synth.render_video(index)
    c = clips[0]
    noisy = rv.frames[16 * c : 16 * c + 16].astype(np.float64)
    assert np.std(np.diff(noisy, axis=0)) > 40  # heavy temporal noise
    index, clips = _find("Grow", "occlusion")
    rv = synth.render_video(index, with_alpha=True)
    clip = rv.plan.clips[clips[0]]
    frame = rv.frames[16 * clips[0]].astype(np.float64)
    fence = np.clip(np.array(clip.fence_colour) * rv.plan.gain, 0, 255)
    covered = np.linalg.norm(frame - fence, axis=-1) < 25
    assert covered.mean() > 0.7
