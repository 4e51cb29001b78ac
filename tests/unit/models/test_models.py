"""Model layer: published sizes, ClipOutput shapes, preprocessing, the registry and its table."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from condi_pipe.models import (
    ClipOutput,
    build_model,
    count_parameters,
    list_models,
    measure_flops,
    model_spec,
    model_table,
)
from condi_pipe.models.preprocess import KINETICS_TORCHVISION, RESNETS_3D, SIMPLE

# Kopuklu et al. 2019 (students) and method.md (ResNeXt-101): params in millions with a 600-class head.
PUBLISHED_PARAMS_M = [
    ("shufflenetv2_3d", 0.25, 0.83),
    ("shufflenetv2_3d", 1.0, 1.91),
    ("shufflenetv2_3d", 1.5, 3.16),
    ("shufflenetv2_3d", 2.0, 6.64),
    ("mobilenetv2_3d", 0.2, 0.96),
    ("mobilenetv2_3d", 0.45, 1.40),
    ("mobilenetv2_3d", 0.7, 2.05),
    ("mobilenetv2_3d", 1.0, 3.12),
    ("resnext101_3d", None, 48.75),
]

ALL_VARIANTS = [(spec.name, width) for spec in list_models() for width in (spec.widths or (None,))]


def _variant_id(variant) -> str:
    name, width = variant
    return name if width is None else f"{name}-{width:g}"


@pytest.mark.parametrize("name,width,published", PUBLISHED_PARAMS_M)
def test_params_match_published_table(name, width, published):
    model = build_model(name, num_classes=600, width=width)
    assert round(count_parameters(model) / 1e6, 2) == published
    head = model.confidence_head
    if head is None:
        assert count_parameters(model, include_confidence_head=True) == count_parameters(model)
    else:  # the confidence head is reported separately: one Linear D -> 1
        extra = count_parameters(model, include_confidence_head=True) - count_parameters(model)
        assert extra == model.config.feature_dim + 1


def test_small_teacher_is_small():
    params = count_parameters(build_model("resnet10_3d_small", num_classes=600))
    assert 0.8e6 < params < 1.1e6


@pytest.mark.parametrize("variant", ALL_VARIANTS, ids=_variant_id)
def test_forward_returns_clip_output(variant):
    name, width = variant
    model = build_model(name, num_classes=7, width=width).eval()
    # Small spatial size: this test is about shapes, not cost.
    with torch.no_grad():
        out = model(torch.randn(2, 3, 8, 32, 32))
    assert isinstance(out, ClipOutput)
    assert out.logits.shape == (2, 7)
    assert out.features.shape == (2, model.config.feature_dim)
    if model_spec(name).role == "student":
        assert out.confidence is not None and out.confidence.shape == (2,)
    else:
        assert out.confidence is None


def test_student_confidence_is_head_of_pooled_features():
    model = build_model("shufflenetv2_3d", num_classes=5, width=0.25).eval()
    with torch.no_grad():
        out = model(torch.randn(3, 3, 16, 32, 32))
        expected = model.confidence_head(out.features).squeeze(1)
    assert out.confidence.shape == (3,)
    torch.testing.assert_close(out.confidence, expected)


@pytest.mark.parametrize(
    "name,width,normalization",
    [
        ("r2plus1d_18", None, KINETICS_TORCHVISION),
        ("resnext101_3d", None, RESNETS_3D),
        ("shufflenetv2_3d", 0.5, RESNETS_3D),
        ("mobilenetv2_3d", 0.2, RESNETS_3D),
        ("resnet10_3d_small", None, SIMPLE),
    ],
)
def test_model_config(name, width, normalization):
    config = build_model(name, num_classes=11, width=width).config
    assert (config.name, config.width, config.num_classes) == (name, width, 11)
    assert config.normalization == normalization.name
    assert (config.mean, config.std) == (normalization.mean, normalization.std)
    assert (config.clip_length, config.crop) == (16, 112)
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.num_classes = 3


def test_preprocess_layout_and_one_pixel_by_hand():
    model = build_model("r3d_18", num_classes=3)
    clips = torch.randint(0, 256, (2, 4, 5, 6, 3), dtype=torch.uint8)
    clips[1, 2, 3, 4] = torch.tensor([200, 100, 0], dtype=torch.uint8)
    x = model.preprocess(clips)
    assert x.dtype == torch.float32 and x.shape == (2, 3, 4, 5, 6)
    by_hand = [(200 / 255 - 0.43216) / 0.22803, (100 / 255 - 0.394666) / 0.22145, (0 / 255 - 0.37645) / 0.216989]
    torch.testing.assert_close(x[1, :, 2, 3, 4], torch.tensor(by_hand), rtol=1e-5, atol=1e-5)


def test_preprocess_3d_resnets_is_pixels_minus_mean():
    model = build_model("shufflenetv2_3d", num_classes=3, width=0.25)
    clips = torch.full((1, 2, 3, 3, 3), 128, dtype=torch.uint8)
    x = model.preprocess(clips)
    expected = torch.tensor([128 - 114.7748, 128 - 107.7354, 128 - 99.4750])
    torch.testing.assert_close(x[0, :, 1, 2, 2], expected, rtol=1e-5, atol=1e-4)
    low, high = model.config.input_range
    assert low == pytest.approx(-114.7748) and high == pytest.approx(255 - 99.4750)


def test_preprocess_rejects_float_and_wrong_layout():
    model = build_model("resnet10_3d_small", num_classes=3)
    with pytest.raises(TypeError, match="uint8"):
        model.preprocess(torch.zeros(1, 2, 3, 3, 3))
    with pytest.raises(ValueError, match="B, T, H, W, 3"):
        model.preprocess(torch.zeros(1, 3, 2, 4, 4, dtype=torch.uint8))  # channels first


def test_normalization_can_be_overridden():
    config = build_model("shufflenetv2_3d", num_classes=3, width=0.25, normalization="simple").config
    assert config.mean == SIMPLE.mean and config.normalization == "simple"
    with pytest.raises(ValueError, match="choose one of"):
        build_model("shufflenetv2_3d", num_classes=3, width=0.25, normalization="imagenet")


def test_model_table_lists_every_variant_with_sensible_flops():
    rows = model_table(num_classes=600)
    assert [(r["name"], r["width"]) for r in rows] == ALL_VARIANTS
    assert {"name", "width", "role", "params", "flops"} <= set(rows[0])
    by_variant = {(r["name"], r["width"]): r for r in rows}
    assert all(r["flops"] > 0 and r["params"] > 0 for r in rows)
    assert all(r["role"] == model_spec(r["name"]).role for r in rows)

    def flops(name, width=None):
        return by_variant[(name, width)]["flops"]

    shufflenet = [flops("shufflenetv2_3d", w) for w in (0.25, 0.5, 1.0, 1.5, 2.0)]
    mobilenet = [flops("mobilenetv2_3d", w) for w in (0.2, 0.45, 0.7, 1.0)]
    assert shufflenet == sorted(shufflenet) and mobilenet == sorted(mobilenet)
    assert flops("resnext101_3d") > 10 * flops("shufflenetv2_3d", 2.0)
    assert flops("resnet10_3d_small") < flops("r3d_18")
    assert by_variant[("shufflenetv2_3d", 1.0)]["params"] == 1_914_180
    assert by_variant[("shufflenetv2_3d", 1.0)]["confidence_head_params"] == 1025


def test_model_table_flops_match_a_real_forward():
    # The table measures on the meta device; a real CPU forward must count the same.
    model = build_model("shufflenetv2_3d", num_classes=600, width=0.25)
    assert measure_flops(model) == model_table(names=["shufflenetv2_3d"])[0]["flops"]


def test_unknown_names_and_widths_raise_listing_choices():
    with pytest.raises(ValueError, match="unknown model 'resnet9000'.*shufflenetv2_3d") as err:
        build_model("resnet9000", num_classes=10)
    assert "\n" not in str(err.value)
    with pytest.raises(ValueError, match="0.25, 0.5, 1, 1.5, 2"):
        build_model("shufflenetv2_3d", num_classes=10, width=0.75)
    with pytest.raises(ValueError, match="no width"):
        build_model("r3d_18", num_classes=10, width=1.0)
    with pytest.raises(ValueError, match="unknown model"):
        model_table(names=["nope"])


def test_default_width_is_1():
    assert build_model("mobilenetv2_3d", num_classes=10).config.width == 1.0


def test_motion_teacher_sees_only_what_moves():
    """resnet10_3d_motion works on frame differences: any still clip looks like an empty one, motion does not."""
    import torch

    from condi_pipe.models.resnet3d import temporal_differences

    torch.manual_seed(0)
    model = build_model("resnet10_3d_motion", num_classes=4).eval()
    still = torch.rand(1, 3, 1, 32, 32).expand(1, 3, 16, 32, 32).contiguous()
    moving = torch.rand(1, 3, 16, 32, 32)
    with torch.no_grad():
        empty = model(torch.zeros_like(still)).logits
        assert torch.allclose(model(still).logits, empty)
        assert not torch.allclose(model(moving).logits, empty)
    ramp = torch.arange(16.0).view(1, 1, 16, 1, 1).expand(1, 3, 16, 2, 2)
    assert torch.equal(temporal_differences(ramp), torch.ones_like(ramp))
