"""``[teacher] from_logits = "FILE"`` in a run config: the teacher-cache request imports the file (a path relative
to the config), nothing trains or times a teacher, and what cannot work without a teacher model or its features is
refused when the file is read, in one line naming the key."""

from __future__ import annotations

import pytest

from condi_pipe.app.run_config import ConfigError, load_run_config
from condi_pipe.app.runner import PipelineRequests, pipeline_steps
from condi_pipe.storage.store import Store

BASE = 'store = "store"\n[extract]\nsource = "ucf101"\nroot = "data"\n[teacher]\nname = "mm-c3d"\n'


def _config(tmp_path, text: str):
    path = tmp_path / "run.toml"
    path.write_text(BASE + text)
    return load_run_config(path)


def _stages(config, tmp_path) -> list[str]:
    steps = pipeline_steps(config, Store(str(tmp_path / "store")), log=lambda message: None)
    return [step.stage for step in steps]


def test_the_file_is_imported_and_no_teacher_is_trained_or_timed(tmp_path):
    config = _config(tmp_path, 'from_logits = "dumps/logits.parquet"\n')
    assert config.teacher.from_logits == str((tmp_path / "dumps" / "logits.parquet").resolve())
    requests = PipelineRequests(config)
    assert requests.teacher_train() is None
    cache = requests.teacher_cache()
    assert cache.from_logits == config.teacher.from_logits and cache.teacher.teacher_name == "mm-c3d"
    assert all(request.teacher == "mm-c3d" for request in requests.distill())  # students learn from the import
    stages = _stages(config, tmp_path)
    assert "teacher-train" not in stages and "time-models" not in stages
    assert stages.count("teacher-cache") == 1 and "distill" in stages and "score" in stages


def test_without_the_key_the_teacher_is_trained_and_timed(tmp_path):
    config = _config(tmp_path, "")
    assert config.teacher.from_logits is None and PipelineRequests(config).teacher_cache().from_logits is None
    stages = _stages(config, tmp_path)
    assert "teacher-train" in stages and "time-models" in stages


FROM_FILE = r"\[teacher\] from_logits imports the teacher's logits from a file"


@pytest.mark.parametrize("text, reason", [
    ('from_logits = "l.csv"\nweights = "t.pt"\n', rf"\[teacher\]\.weights: {FROM_FILE}, so weights does not apply"),
    ('from_logits = "l.csv"\nz_labels = "out-of-fold"\n', rf"\[teacher\]\.z_labels: {FROM_FILE}, so z_labels"),
    ('from_logits = "l.csv"\n[sgs]\n', r"\[sgs\] fine-tunes the teacher with SGS, and \[teacher\] from_logits has no"),
    ('from_logits = "l.csv"\n[distill]\nlosses = ["condi-sr", "fewer-frames"]\n',
     r"\[distill\] losses: fewer-frames needs the teacher's features"),
])
def test_what_needs_a_teacher_model_or_features_is_refused(tmp_path, text, reason):
    with pytest.raises(ConfigError, match=f"^{tmp_path / 'run.toml'}: {reason}"):
        _config(tmp_path, text)
