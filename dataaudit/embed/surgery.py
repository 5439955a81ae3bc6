"""Graph surgery for inference: drop the classifier, fold batch-norm, fuse the input
normalisation, so the embedder runs one lean forward pass on uint8 batches."""

from __future__ import annotations

import copy
from collections.abc import Sequence

import numpy as np
import torch
from torch import nn

from dataaudit.embed.weights import head_name


def strip_head(model: nn.Module) -> nn.Module:
    """Make the model return pooled features before the classifier."""
    if hasattr(model, "reset_classifier") and hasattr(model, "forward_head"):  # timm
        model.reset_classifier(0)
        return model
    head = head_name(model)
    if not head:
        return model
    parent_name, _, attr = head.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, attr, nn.Identity())
    return model


def fold_if_exact(net: nn.Module, size: int) -> nn.Module:
    """Fold batch-norm into convolutions, keeping the result only if it embeds identically."""

    probe = torch.from_numpy(
        np.random.default_rng(0).integers(0, 256, (2, size, size, 3), dtype=np.uint8)
    )
    fused = copy.deepcopy(net)
    if fold_batchnorm(fused) == 0:
        return net
    with torch.inference_mode():
        before, after = net(probe), fused(probe)
    if torch.allclose(before, after, rtol=1e-3, atol=1e-4 * float(before.abs().max())):
        return fused
    return net


def fold_batchnorm(model: nn.Module) -> int:
    """Fold each eval-mode BatchNorm into the convolution registered just before it.

    Inference then skips a full pass over every activation map per layer (a quarter of
    EfficientNet-Lite0's CPU time). A timm BatchNormAct2d keeps its activation. Returns the
    number of folded pairs; the caller checks the outputs did not change.
    """
    folded = 0
    for parent in list(model.modules()):
        children = list(parent.named_children())
        for (_, conv), (bn_name, bn) in zip(children, children[1:], strict=False):
            if not (isinstance(conv, nn.Conv2d) and isinstance(bn, nn.BatchNorm2d)):
                continue
            if bn.running_mean is None or conv.out_channels != bn.num_features:
                continue
            with torch.no_grad():
                std = torch.sqrt(bn.running_var + bn.eps)
                gamma = bn.weight if bn.weight is not None else torch.ones_like(std)
                beta = bn.bias if bn.bias is not None else torch.zeros_like(std)
                factor = gamma / std
                conv.weight.mul_(factor.view(-1, 1, 1, 1))
                bias = conv.bias if conv.bias is not None else torch.zeros_like(std)
                conv.bias = nn.Parameter(beta + (bias - bn.running_mean) * factor)
            after = [
                m for m in (getattr(bn, "drop", None), getattr(bn, "act", None)) if m is not None
            ]
            setattr(parent, bn_name, nn.Sequential(*after) if after else nn.Identity())
            folded += 1
    return folded


class EmbedNet(nn.Module):
    """uint8 NHWC batch -> normalised float NCHW (channels_last) -> pooled features."""

    def __init__(self, features: nn.Module, mean: Sequence[float], std: Sequence[float]):
        super().__init__()
        std_t = torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1)
        mean_t = torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1)
        # (x / 255 - mean) / std folded into one multiply-add.
        self.register_buffer("scale", 1.0 / (255.0 * std_t))
        self.register_buffer("shift", -mean_t / std_t)
        self.features = features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # Permuting an NHWC tensor to NCHW yields channels_last strides with no copy.
        x = x.permute(0, 3, 1, 2).float() * self.scale + self.shift
        x = x.contiguous(memory_format=torch.channels_last)
        out = self.features(x)
        return out.flatten(1) if out.dim() > 2 else out
