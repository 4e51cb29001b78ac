"""storage.logits_file: the format of an imported teacher's logits (Parquet list column or CSV logit_i columns),
the rows put in the cache's clip order, and the one-line refusals of what is not that format."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from condi_pipe.storage.logits_file import (
    LogitsFileError,
    logits_in_clip_order,
    looks_like_probabilities,
    read_logits_file,
)
from condi_pipe.storage.manifests import VideoSet

# Two videos: id 4 with 2 clips (clip ids 0, 1), id 9 with 3 clips (clip ids 2..4); 3 classes.
VIDEOS = VideoSet(video_id=np.array([4, 9]), label=np.array([0, 2]), first_clip=np.array([0, 2]),
                  clips=np.array([2, 3]))
ROWS = [(9, 2), (4, 1), (9, 0), (4, 0), (9, 1)]  # (video_id, clip_index), not in clip order


def _logit(video: int, clip: int) -> list[float]:
    return [video + clip / 10, -video - clip / 10, 0.5 * clip]


def _write_csv(path, header: str, lines: list[str]):
    path.write_text("\n".join([header, *lines]) + "\n")
    return path


def test_parquet_and_csv_rows_come_back_in_the_caches_clip_order(tmp_path):
    expected = np.array([_logit(v, c) for v, c in [(4, 0), (4, 1), (9, 0), (9, 1), (9, 2)]], np.float32)
    parquet = tmp_path / "l.parquet"
    pq.write_table(pa.table({"video_id": [v for v, _ in ROWS], "clip_index": [c for _, c in ROWS],
                             "logits": [_logit(v, c) for v, c in ROWS]}), parquet)
    csv = _write_csv(tmp_path / "l.csv", "clip_index,logit_1,video_id,logit_0,logit_2",  # any column order
                     [f"{c},{_logit(v, c)[1]!r},{v},{_logit(v, c)[0]!r},{_logit(v, c)[2]!r}" for v, c in ROWS])
    for path in (parquet, csv):
        got = logits_in_clip_order(path, read_logits_file(path), VIDEOS, 3)
        np.testing.assert_array_equal(got, expected)


@pytest.mark.parametrize("name, header, lines, reason", [
    ("a.csv", "video,clip_index,logit_0", ["4,0,1.0"], "no column 'video_id' \\(columns: video, clip_index, logit_0\\)"),
    ("a.csv", "video_id,clip_index,logit_0", ["4,0.5,1.0"], "column 'clip_index' must hold integers, not double"),
    ("a.csv", "video_id,clip_index,logit_0,logit_2", ["4,0,1,2"], "logit columns must be logit_0 .. logit_2 without a gap; logit_1 is missing"),
    ("a.csv", "video_id,clip_index", ["4,0"], "no logits: a list column 'logits' or columns logit_0"),
    ("a.txt", "video_id,clip_index,logit_0", ["4,0,1"], "unknown format"),
])
def test_a_file_not_in_the_format_is_one_line_naming_it(tmp_path, name, header, lines, reason):
    path = _write_csv(tmp_path / name, header, lines)
    with pytest.raises(LogitsFileError, match=f"^{path}: {reason}"):
        read_logits_file(path)


def test_ragged_logit_lists_and_a_missing_file_are_refused(tmp_path):
    path = tmp_path / "ragged.parquet"
    pq.write_table(pa.table({"video_id": [4, 4], "clip_index": [0, 1], "logits": [[1.0, 2.0, 3.0], [1.0, 2.0]]}), path)
    with pytest.raises(LogitsFileError, match=f"^{path}: row 1 has 2 logits, row 0 has 3"):
        read_logits_file(path)
    with pytest.raises(FileNotFoundError, match="nowhere.parquet: no such logits file"):
        read_logits_file(tmp_path / "nowhere.parquet")


def test_probabilities_are_told_from_logits():
    probs = np.array([[0.2, 0.8], [1.0, 0.0]])
    assert looks_like_probabilities(probs)
    assert not looks_like_probabilities(np.log(probs + 1e-3))
    assert not looks_like_probabilities(np.array([[0.2, 0.3]]))  # in [0, 1] but not summing to 1
