"""The baselines' networks, simplest first."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn


class TinyConvNet(nn.Module):
    """Three 3x3 conv layers and a linear head: small enough that it cannot hide a bug."""

    def __init__(self, num_classes: int, width: int = 16) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, width, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(width, 2 * width, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(2 * width, 4 * width, 3, padding=1), nn.ReLU(),
            nn.AdaptiveAvgPool2d(1), nn.Flatten(),
        )  # fmt: skip
        self.head = nn.Linear(4 * width, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))

    def first_layer(self) -> torch.Tensor:
        return self.features[0].weight


def resnet18(num_classes: int) -> tuple[nn.Module, str]:
    """torchvision's ResNet-18: ImageNet weights only when a local copy exists (no download);
    otherwise trained from scratch. Returns the model and which of the two it is."""
    from torchvision.models import resnet18 as build

    model = build(weights=None)
    note = "from scratch (no offline ImageNet weights)"
    ckpt_dir = Path(torch.hub.get_dir()) / "checkpoints"
    found = sorted(ckpt_dir.glob("resnet18-*.pth")) if ckpt_dir.is_dir() else []
    if found:
        model.load_state_dict(torch.load(found[0], map_location="cpu", weights_only=True))
        note = f"ImageNet weights from {found[0].name}"
    model.fc = nn.Linear(model.fc.in_features, num_classes)
    return model, note
