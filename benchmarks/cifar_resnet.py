"""CIFAR ResNet-20/32/44/56 of He et al. (2016), "option A" shortcuts, as the shared checkpoints expect.

The checkpoints in ``../shared/weights/`` (akamaster/pytorch_resnet_cifar10) load strictly into these modules
once the ``module.`` prefix is stripped (:func:`load_checkpoint`). The architecture is deliberately not
timm's: a 3x3 stride-1 stem, three stages of 16/32/64 channels and parameter-free shortcuts, which makes
it a real cross-architecture *source* for ``hmt --src benchmarks.cifar_resnet:resnet56``.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["CifarResNet", "resnet20", "resnet32", "resnet44", "resnet56", "load_checkpoint"]

# ImageNet statistics: what the checkpoints were trained with (not the CIFAR ones).
MEAN = (0.485, 0.456, 0.406)
STD = (0.229, 0.224, 0.225)


class _PadShortcut(nn.Module):
    """Option A: subsample spatially and zero-pad channels; no parameters, so nothing in the state dict."""

    def __init__(self, pad: int) -> None:
        super().__init__()
        self.pad = pad

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.pad(x[:, :, ::2, ::2], (0, 0, 0, 0, self.pad, self.pad))


class BasicBlock(nn.Module):
    def __init__(self, in_planes: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        changes_shape = stride != 1 or in_planes != planes
        self.shortcut: nn.Module = _PadShortcut(planes // 4) if changes_shape else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class CifarResNet(nn.Module):
    """Depth 6n+2: stem, three stages of ``n`` BasicBlocks (16, 32, 64 channels), GAP, linear head."""

    def __init__(self, n: int, num_classes: int = 10) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 16, 3, stride=1, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(16)
        self.layer1 = self._stage(16, 16, n, stride=1)
        self.layer2 = self._stage(16, 32, n, stride=2)
        self.layer3 = self._stage(32, 64, n, stride=2)
        self.linear = nn.Linear(64, num_classes)
        self.num_classes = num_classes
        for m in self.modules():
            if isinstance(m, nn.Conv2d | nn.Linear):
                nn.init.kaiming_normal_(m.weight)

    @staticmethod
    def _stage(in_planes: int, planes: int, n: int, stride: int) -> nn.Sequential:
        blocks = [BasicBlock(in_planes, planes, stride)]
        blocks += [BasicBlock(planes, planes, 1) for _ in range(n - 1)]
        return nn.Sequential(*blocks)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.bn1(self.conv1(x)))
        x = self.layer3(self.layer2(self.layer1(x)))
        x = F.adaptive_avg_pool2d(x, 1).flatten(1)
        return self.linear(x)


def resnet20(num_classes: int = 10) -> CifarResNet:
    return CifarResNet(3, num_classes)


def resnet32(num_classes: int = 10) -> CifarResNet:
    return CifarResNet(5, num_classes)


def resnet44(num_classes: int = 10) -> CifarResNet:
    return CifarResNet(7, num_classes)


def resnet56(num_classes: int = 10) -> CifarResNet:
    return CifarResNet(9, num_classes)


def _strip_module_prefix(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    # Saved from nn.DataParallel: every key starts with "module.".
    return {k.removeprefix("module."): v for k, v in state.items()}


def load_checkpoint(model: nn.Module, path: Path) -> nn.Module:
    """Load an akamaster ``.th`` checkpoint strictly (``weights_only``: no pickled code runs)."""
    blob = torch.load(path, map_location="cpu", weights_only=True)
    state = blob["state_dict"] if isinstance(blob, Mapping) and "state_dict" in blob else blob
    model.load_state_dict(_strip_module_prefix(state), strict=True)
    return model
