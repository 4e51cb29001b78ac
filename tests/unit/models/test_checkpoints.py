"""Loading weight files in the formats condi-pipe meets: torchvision, 3D-ResNets, Efficient-3DCNNs."""

from __future__ import annotations

import pytest
import torch
import torchvision

from condi_pipe.models import CheckpointError, build_model, load_weights


class NotATensor:
    """Any custom class: unpickling it would run arbitrary code paths, so weights_only refuses it."""

    def __init__(self) -> None:
        self.payload = 42


def _clone_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in model.state_dict().items()}


def _assert_states_equal(actual: dict, expected: dict, keys) -> None:
    for key in keys:
        torch.testing.assert_close(actual[key], expected[key], rtol=0, atol=0, msg=key)


def _release_checkpoint(model, arch: str, *, student_keys: bool = False) -> dict:
    """The {'arch', 'state_dict', ...} layout 3D-ResNets / Efficient-3DCNNs save, with DataParallel prefixes."""
    state = {}
    for key, value in model.state_dict().items():
        if key.startswith("confidence_head.") or key.endswith("num_batches_tracked"):
            continue  # the releases have no confidence head; their old PyTorch saved no num_batches_tracked
        if student_keys:
            key = key.replace(".branch1.", ".banch1.").replace(".branch2.", ".banch2.")
        state["module." + key] = value.clone()
    return {
        "epoch": 60,
        "arch": arch,
        "state_dict": state,
        "best_prec1": torch.tensor(61.2),
        "optimizer": {"state": {}, "param_groups": [{"lr": 0.1, "momentum": 0.9, "params": [0, 1]}]},
    }


def test_plain_torchvision_state_dict(tmp_path):
    source = torchvision.models.video.mc3_18(weights=None, num_classes=5)
    torch.nn.init.normal_(source.fc.weight)  # not the wrapper's init, so a no-op load cannot pass
    path = tmp_path / "mc3_18.pth"
    torch.save(source.state_dict(), path)

    model = load_weights(build_model("mc3_18", num_classes=5), path)
    _assert_states_equal(model.state_dict(), source.state_dict(), source.state_dict())


def test_3d_resnets_checkpoint_with_module_prefix(tmp_path):
    source = build_model("resnext101_3d", num_classes=600)
    path = tmp_path / "resnext-101-kinetics.pth"
    torch.save(_release_checkpoint(source, "resnext-101"), path)

    model = build_model("resnext101_3d", num_classes=600)
    assert not torch.equal(model.layer3[5].conv2.weight, source.layer3[5].conv2.weight)
    load_weights(model, path)
    expected = source.state_dict()
    _assert_states_equal(model.state_dict(), expected, [k for k in expected if "num_batches" not in k])


@pytest.mark.parametrize(
    "name,width,arch", [("shufflenetv2_3d", 0.25, "shufflenetv2"), ("mobilenetv2_3d", 0.2, "mobilenetv2")]
)
def test_efficient_3dcnns_student_checkpoint(tmp_path, name, width, arch):
    source = build_model(name, num_classes=600, width=width)
    for p in source.parameters():  # move every weight away from any init the target could share
        torch.nn.init.uniform_(p)
    path = tmp_path / f"kinetics_{arch}_{width}x_RGB_16_best.pth"
    torch.save(_release_checkpoint(source, arch, student_keys=True), path)

    model = build_model(name, num_classes=600, width=width)
    fresh_confidence = _clone_state(model.confidence_head)
    load_weights(model, path)
    loaded = model.state_dict()
    trunk_and_head = [k for k in loaded if not k.startswith("confidence_head.") and "num_batches" not in k]
    _assert_states_equal(loaded, source.state_dict(), trunk_and_head)
    # The release has no confidence head: it stays as freshly initialised.
    _assert_states_equal(model.confidence_head.state_dict(), fresh_confidence, fresh_confidence)


def test_needs_pickle_is_refused(tmp_path):
    path = tmp_path / "evil.pth"
    source = build_model("resnet10_3d_small", num_classes=4)
    torch.save({"state_dict": source.state_dict(), "extra": NotATensor()}, path)
    with pytest.raises(CheckpointError, match="pickle execution") as err:
        load_weights(build_model("resnet10_3d_small", num_classes=4), path)
    message = str(err.value)
    assert str(path) in message and "refused" in message and "\n" not in message


def test_not_a_checkpoint(tmp_path):
    path = tmp_path / "noise.pth"
    path.write_bytes(b"definitely not a checkpoint")
    with pytest.raises(CheckpointError, match="noise.pth"):
        load_weights(build_model("resnet10_3d_small", num_classes=4), path)
    torch.save({"weights": [1, 2, 3]}, path)
    with pytest.raises(CheckpointError, match="neither a state dict"):
        load_weights(build_model("resnet10_3d_small", num_classes=4), path)


@pytest.fixture
def kinetics_student(tmp_path):
    """A 600-class ShuffleNetV2 0.25x saved in the Efficient-3DCNNs layout: (model, path)."""
    source = build_model("shufflenetv2_3d", num_classes=600, width=0.25)
    path = tmp_path / "kinetics_shufflenetv2_0.25x.pth"
    torch.save(_release_checkpoint(source, "shufflenetv2", student_keys=True), path)
    return source, path


def test_class_count_mismatch_names_file_and_counts(kinetics_student):
    _, path = kinetics_student
    with pytest.raises(CheckpointError) as err:
        load_weights(build_model("shufflenetv2_3d", num_classes=101, width=0.25), path)
    message = str(err.value)
    assert str(path) in message and "600 classes" in message and "101" in message and "reset_head" in message


@pytest.mark.parametrize("num_classes", [101, 600])
def test_reset_head_loads_all_but_the_head(kinetics_student, num_classes):
    source, path = kinetics_student
    model = build_model("shufflenetv2_3d", num_classes=num_classes, width=0.25)
    fresh_head = _clone_state(model.classifier)
    load_weights(model, path, reset_head=True)
    trunk = [k for k in model.state_dict() if k.split(".")[0] in ("conv1", "features", "conv_last")]
    _assert_states_equal(model.state_dict(), source.state_dict(), trunk)
    _assert_states_equal(model.classifier.state_dict(), fresh_head, fresh_head)
    assert model.eval()(torch.randn(1, 3, 16, 32, 32)).logits.shape == (1, num_classes)


def test_missing_and_unexpected_keys_are_listed(kinetics_student, tmp_path):
    _, path = kinetics_student
    with pytest.raises(CheckpointError, match=r"missing keys features\.0\.0\.weight.*unexpected keys conv1\.0\.weight"):
        load_weights(build_model("mobilenetv2_3d", num_classes=600, width=0.2), path)

    checkpoint = torch.load(path, weights_only=True)
    del checkpoint["state_dict"]["module.conv_last.0.weight"]
    checkpoint["state_dict"]["module.extra.weight"] = torch.zeros(1)
    broken = tmp_path / "broken.pth"
    torch.save(checkpoint, broken)
    with pytest.raises(CheckpointError, match=r"missing keys conv_last\.0\.weight; unexpected keys extra\.weight"):
        load_weights(build_model("shufflenetv2_3d", num_classes=600, width=0.25), broken)


def test_trunk_shape_mismatch_is_an_error(kinetics_student):
    _, path = kinetics_student
    with pytest.raises(CheckpointError, match="shape mismatch"):
        load_weights(build_model("shufflenetv2_3d", num_classes=600, width=0.5), path, reset_head=True)
