"""Model registry: architectures register a builder under a name; the pipeline builds them by name.

    @register_model("shufflenetv2_3d", widths=(0.25, 0.5, 1.0, 1.5, 2.0), role="student")
    def shufflenetv2_3d(num_classes: int, width: float, **kw) -> ShuffleNetV2_3D: ...

    model = build_model("shufflenetv2_3d", num_classes=600, width=0.5)
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Literal

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from condi_pipe.registry import Registry, first_docstring_line

from .base import CONFIDENCE_HEAD, count_parameters

Role = Literal["teacher", "student"]
Builder = Callable[..., nn.Module]


@dataclass(frozen=True)
class ModelSpec:
    """A registered architecture: its builder, its widths (None if it has no width multiplier) and its role."""

    name: str
    builder: Builder
    role: Role
    widths: tuple[float, ...] | None
    default_width: float | None
    summary: str


#: Every architecture, registered by its module; ``condi_pipe.models`` imports them all.
MODELS: Registry[ModelSpec] = Registry("model")


def register_model(
    name: str,
    *,
    role: Role,
    widths: tuple[float, ...] | None = None,
    default_width: float | None = None,
) -> Callable[[Builder], Builder]:
    """Decorator registering ``builder(num_classes, [width,] **kw)`` under ``name``.

    ``default_width`` is used when ``build_model`` gets no width; it defaults to 1.0 if listed, else the first.
    """
    if role not in ("teacher", "student"):
        raise ValueError(f"role must be 'teacher' or 'student', got {role!r}")
    if widths is not None:
        widths = tuple(float(w) for w in widths)
        if default_width is None:
            default_width = 1.0 if 1.0 in widths else widths[0]

    def decorate(builder: Builder) -> Builder:
        MODELS.register(name, ModelSpec(name, builder, role, widths, default_width, first_docstring_line(builder)))
        return builder

    return decorate


def list_models() -> list[ModelSpec]:
    """Every registered architecture, in registration order."""
    return list(MODELS.values())


def model_spec(name: str) -> ModelSpec:
    """The spec registered under ``name``; UnknownName (a ValueError) listing the valid names otherwise."""
    return MODELS.get(name)


def _resolve_width(spec: ModelSpec, width: float | None) -> float | None:
    if spec.widths is None:
        if width is not None:
            raise ValueError(f"model {spec.name!r} has no width multiplier; pass width=None (got {width})")
        return None
    if width is None:
        return spec.default_width
    for valid in spec.widths:
        if math.isclose(float(width), valid, rel_tol=0, abs_tol=1e-9):
            return valid
    choices = ", ".join(f"{w:g}" for w in spec.widths)
    raise ValueError(f"model {spec.name!r} has no width {width}; choose one of: {choices}")


def build_model(name: str, num_classes: int, width: float | None = None, **kw) -> nn.Module:
    """Build the registered model ``name`` with a ``num_classes``-way head; extra keywords go to its builder
    (e.g. ``normalization="simple"``). Weights are freshly initialised; see ``checkpoints.load_weights``."""
    spec = model_spec(name)
    resolved = _resolve_width(spec, width)
    if resolved is None:
        return spec.builder(num_classes=num_classes, **kw)
    return spec.builder(num_classes=num_classes, width=resolved, **kw)


def measure_flops(model: nn.Module, input_shape: tuple[int, ...] = (1, 3, 16, 112, 112)) -> int:
    """FLOPs of one eval-mode forward pass, as torch.utils.flop_counter.FlopCounterMode counts them.

    FlopCounterMode counts 2 * multiply-accumulates of convolutions, linears and matmuls, and nothing for
    BatchNorm, activations or pooling; so it is not the MAC-plus-BN/ReLU/pool count Kopuklu et al. publish.
    The input lives on the model's device, so a model built on the "meta" device is measured without compute. A
    model that reads clips at reduced size (``network_input_shape``) is counted at that size.
    """
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad(), FlopCounterMode(display=False) as counter:
            model(torch.zeros(network_input_shape(model, input_shape), device=device))
    finally:
        model.train(was_training)
    return int(counter.get_total_flops())


def network_input_shape(model: nn.Module, input_shape: tuple[int, ...]) -> tuple[int, ...]:
    """The shape ``model`` computes on for a clip batch of ``input_shape``: its ``network_input_shape`` (a student
    reading clips at reduced size), the shape itself for a module without one."""
    reduce = getattr(model, "network_input_shape", None)
    return tuple(input_shape) if reduce is None else tuple(reduce(input_shape))


def model_table(num_classes: int = 600, names: list[str] | None = None) -> list[dict]:
    """One row per (architecture, width): name, width (None without a width), role, params, flops, and
    confidence_head_params.

    ``params`` excludes the student's confidence head (its D + 1 parameters are in ``confidence_head_params``),
    so it compares with published classification models. ``flops`` come from :func:`measure_flops` on one
    1x3x16x112x112 clip in eval mode: 2 * MACs of convs/linears, as FlopCounterMode counts them. Models are
    built on the "meta" device, so no weights are allocated and nothing is computed.
    """
    specs = list_models() if names is None else [model_spec(n) for n in names]
    rows = []
    for spec in specs:
        for width in spec.widths or (None,):
            with torch.device("meta"):
                model = build_model(spec.name, num_classes, width)
            head = getattr(model, CONFIDENCE_HEAD, None)
            rows.append(
                {
                    "name": spec.name,
                    "width": width,
                    "role": spec.role,
                    "params": count_parameters(model),
                    "flops": measure_flops(model),
                    "confidence_head_params": 0 if head is None else count_parameters(head),
                }
            )
    return rows
