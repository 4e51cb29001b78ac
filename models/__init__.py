"""Teachers and students: every model takes float clips (B, 3, T, H, W) and returns a ``ClipOutput``.

Build by name with ``build_model``; each model's ``config`` and ``preprocess`` say how to turn stored uint8
clips into its input; ``checkpoints.load_weights`` loads local weight files.
"""

from .base import ClipModel, ClipOutput, ModelConfig, count_parameters
from .preprocess import NORMALIZATIONS, Normalization, preprocess_clips
from .registry import (
    MODELS,
    ModelSpec,
    build_model,
    list_models,
    measure_flops,
    model_spec,
    model_table,
    register_model,
)

# Importing the architecture modules registers them (teachers first, then students).
from . import torchvision_teachers, resnet3d, shufflenetv2_3d, mobilenetv2_3d  # noqa: E402,F401  isort: skip
from .checkpoints import CheckpointError, file_sha256, load_state, load_weights  # noqa: E402
from .sgs import SGS, FlopTable, SGSOptions, SGSResult, flop_table, sgs_teacher_name  # noqa: E402

__all__ = [
    "CheckpointError",
    "MODELS",
    "FlopTable",
    "SGS",
    "SGSOptions",
    "SGSResult",
    "ClipModel",
    "ClipOutput",
    "ModelConfig",
    "ModelSpec",
    "NORMALIZATIONS",
    "Normalization",
    "build_model",
    "count_parameters",
    "file_sha256",
    "flop_table",
    "load_state",
    "sgs_teacher_name",
    "list_models",
    "load_weights",
    "measure_flops",
    "model_spec",
    "model_table",
    "preprocess_clips",
    "register_model",
]
