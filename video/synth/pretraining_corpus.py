"""The synthetic corpus the shipped teacher was pretrained on, and whether a benchmark repeats any of it.

A benchmark whose videos share random streams with this corpus holds clips the shipped teacher saw in training, so
its confidence labels would not be honest; ``teacher-cache`` refuses such stores and ``demo`` such seeds.
"""

from __future__ import annotations

from condi_pipe.video.synth.random_streams import VIDEO_STREAMS, shared_video_stream

PRETRAIN_SEED = 7_000_001
PRETRAIN_VIDEOS = 3000


def pretraining_corpus_overlap(seed: int, videos: int) -> str | None:
    """How the benchmark ``condi-pipe synth --seed SEED --videos VIDEOS`` repeats the pretraining corpus, in words
    ("shares random streams with ..."); None when none of its videos' random streams is one of the corpus's (only
    then did the shipped teacher never see its clips). With fewer than 2**32 videos, the seeds that share streams are
    ``PRETRAIN_SEED + k * 2**32`` for ``k < PRETRAIN_VIDEOS`` (see ``shared_video_stream``)."""
    shared = shared_video_stream(seed, videos, PRETRAIN_SEED, PRETRAIN_VIDEOS)
    if shared is None:
        return None
    video, stream, corpus_video, corpus_stream = shared
    return (f"shares random streams with the pretrained teacher's training corpus (seed {PRETRAIN_SEED}, "
            f"{PRETRAIN_VIDEOS} videos): its video {video}'s {VIDEO_STREAMS[stream]} stream is corpus video "
            f"{corpus_video}'s {VIDEO_STREAMS[corpus_stream]} stream")
