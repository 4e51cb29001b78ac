"""torchvision's 18-layer video ResNets as teachers: r3d_18, r2plus1d_18, mc3_18.

Built with ``weights=None`` (never downloaded); pre-trained weights come from a local file through
``checkpoints.load_weights``. The wrapper adopts torchvision's submodules under their own names (stem,
layer1..4, avgpool, fc), so a plain torchvision state dict loads without renaming.
"""

from __future__ import annotations

from torch import Tensor

from .base import ClipModel, make_config
from .registry import register_model

FEATURE_DIM = 512


class TorchvisionVideoResNet(ClipModel):
    """A torchvision VideoResNet returning ClipOutput (features = the pooled 512-d vector)."""

    head_name = "fc"

    def __init__(self, arch: str, num_classes: int, *, normalization: str = "kinetics_torchvision") -> None:
        super().__init__()
        # Imported here: torchvision takes ~1 s to import, and every CLI process imports the model registry.
        from torchvision.models import video as tv_video

        network = getattr(tv_video, arch)(weights=None, num_classes=num_classes)
        for child_name, child in network.named_children():
            self.add_module(child_name, child)
        self.config = make_config(arch, None, num_classes, FEATURE_DIM, normalization)

    def forward_features(self, x: Tensor) -> Tensor:
        x = self.stem(x)
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.avgpool(x).flatten(1)


@register_model("r3d_18", role="teacher")
def r3d_18(num_classes: int, **kw) -> TorchvisionVideoResNet:
    """torchvision R3D-18 (3D convolutions throughout)."""
    return TorchvisionVideoResNet("r3d_18", num_classes, **kw)


@register_model("r2plus1d_18", role="teacher")
def r2plus1d_18(num_classes: int, **kw) -> TorchvisionVideoResNet:
    """torchvision R(2+1)D-18 (spatial then temporal convolutions)."""
    return TorchvisionVideoResNet("r2plus1d_18", num_classes, **kw)


@register_model("mc3_18", role="teacher")
def mc3_18(num_classes: int, **kw) -> TorchvisionVideoResNet:
    """torchvision MC3-18 (3D convolutions in the stem and first stage, 2D after)."""
    return TorchvisionVideoResNet("mc3_18", num_classes, **kw)
