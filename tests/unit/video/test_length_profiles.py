"""Length profiles and the train share of the generated benchmark (condi_pipe.video.synth)."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from condi_pipe.video import synth
from condi_pipe.video.synth.config import LENGTH_PROFILES
from condi_pipe.video.synth.plan import draw_clip_count, written_train_groups
from condi_pipe.video.synth.random_streams import video_rng


def clip_counts(profile: str, videos: int = 20000, seed: int = 0) -> np.ndarray:
    config = synth.SynthConfig.with_profile(profile, videos=videos, seed=seed)
    return np.array([draw_clip_count(video_rng(seed, i), config) for i in range(videos)])


def test_ucf101_profile_matches_the_published_durations():
    counts = clip_counts("ucf101")
    seconds = counts * 16 / 25
    # UCF-101: mean 7.21 s (11.3 clips of 16 frames at 25 fps); the issue asks the demo's mean within 10% of it
    assert seconds.mean() == pytest.approx(7.21, rel=0.03)
    assert abs(counts.mean() - 11.3) <= 0.1 * 11.3
    assert counts.min() == 2 and counts.max() == 47  # the head and the cap (30.08 s) are both reached
    assert np.median(counts) < counts.mean()  # a long right tail, as in UCF-101
    assert (seconds > 20).mean() > 0.01


def test_kinetics_profile_is_about_ten_seconds():
    seconds = clip_counts("kinetics", 5000) * 16 / 25
    assert seconds.mean() == pytest.approx(10.0, rel=0.03)
    assert np.percentile(seconds, 5) > 8.0


def test_legacy_profile_draws_exactly_as_before_profiles():
    """Stores and the shipped teacher's corpus made before profiles existed are reproduced: the same one integer
    draw from the plan stream, so every later draw of the plan is unchanged too."""
    legacy = synth.SynthConfig()
    assert legacy.length_profile == "legacy" and legacy == synth.SynthConfig.with_profile("legacy")
    for i in range(200):
        rng = video_rng(0, i)
        assert draw_clip_count(video_rng(0, i), legacy) == int(rng.integers(2, 13))
    assert synth.plan_video(5, legacy) == synth.plan_video(5, synth.SynthConfig(videos=1))


def test_a_profile_cannot_be_half_set():
    with pytest.raises(ValueError, match="differ from profile 'legacy'"):
        synth.SynthConfig(max_clips=47)
    with pytest.raises(ValueError, match="unknown length profile 'long'; choose one of: legacy"):
        synth.SynthConfig.with_profile("long")
    with pytest.raises(ValueError, match="train_share must be in"):
        synth.SynthConfig(train_share=0.0)


def test_written_train_groups_keep_the_test_split_whole():
    config = synth.SynthConfig.with_profile("ucf101", videos=1000, seed=4, train_share=0.5)
    test = synth.split_test_groups(config)
    train = written_train_groups(config, test)
    for cls in range(10):
        all_train = set(range(1, 101)) - test[cls]
        assert train[cls] <= all_train and not train[cls] & test[cls]
        assert len(train[cls]) == math.ceil(0.5 * len(all_train))
        assert max(train[cls]) < min(all_train - train[cls])  # the lowest group numbers
    whole = written_train_groups(synth.SynthConfig(videos=1000, seed=4), test)
    assert all(whole[cls] == set(range(1, 101)) - test[cls] for cls in range(10))


def test_generated_benchmark_records_its_profile_and_share(tmp_path):
    root = tmp_path / "bench"
    summary = synth.generate_benchmark(root, 40, seed=2, length_profile="ucf101", train_share=0.5)
    meta = json.loads((root / "synth.json").read_text())
    assert meta["config"]["length_profile"] == "ucf101" and meta["config"]["train_share"] == 0.5
    assert meta["config"]["duration_mean_s"] == LENGTH_PROFILES["ucf101"].mean_seconds
    config = synth.read_synth_config(root)
    test_groups = synth.split_test_groups(config)
    train_lines = (root / "trainlist01.txt").read_text().split()
    test_lines = (root / "testlist01.txt").read_text().split()
    assert len(test_lines) == sum(len(g) for g in test_groups.values())  # every test video
    assert summary.videos == len(test_lines) + len(train_lines) // 2 < 40
    assert len(list(root.rglob("*.mp4"))) == summary.videos
    kinds = synth.read_clip_kinds(root)
    for i in range(40):
        plan = synth.plan_video(i, config)
        if plan.relpath in kinds:
            assert len(kinds[plan.relpath]) == len(plan.clips)
    assert synth.benchmark_is_complete(root, 40, 2, "ucf101", 0.5)
    assert not synth.benchmark_is_complete(root, 40, 2, "ucf101", 1.0)
    assert not synth.benchmark_is_complete(root, 40, 2)  # legacy profile
