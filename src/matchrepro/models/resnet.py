"""ResNet-34 with torchvision's parameter names (there is no CPU torchvision to import).

Only what Patch2Pix needs: BasicBlock stages [3, 4, 6, 3], no avgpool/fc. ``change_stride``
sets the stride of layer3's first block (conv1 and the downsample conv) to 1, so layer3 runs at
stride 8 with 256 channels (patch2pix.md §1.2). layer4 exists (it is in the checkpoints) but is
never run by :meth:`ResNet34.forward_all`.
"""

from __future__ import annotations

import torch
from torch import nn


class BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, inplanes: int, planes: int, stride: int = 1, downsample: nn.Module | None = None):
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        idt = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + idt)


def _stage(inplanes: int, planes: int, blocks: int, stride: int) -> nn.Sequential:
    down = None
    if stride != 1 or inplanes != planes:
        down = nn.Sequential(nn.Conv2d(inplanes, planes, 1, stride, bias=False), nn.BatchNorm2d(planes))
    layers = [BasicBlock(inplanes, planes, stride, down)] + [BasicBlock(planes, planes) for _ in range(blocks - 1)]
    return nn.Sequential(*layers)


RESNET34_WIDTHS = (64, 64, 128, 256, 512)
RESNET34_BLOCKS = (3, 4, 6, 3)


class ResNet34(nn.Module):
    """Feature pyramid of Patch2Pix (``forward_all``): level 0 the input image (stride 1),
    1 conv1-bn1-relu (64 ch, stride 2), 2 layer1 (64, 4), 3 layer2 (128, 8), 4 layer3 (256, 8
    with ``change_stride``, else 16).

    ``widths`` (conv1, layer1..layer4 channels) and ``blocks`` (blocks per layer) default to
    ResNet-34; smaller values build the demo's narrow backbone with the same names."""

    def __init__(self, change_stride: bool = True, widths=RESNET34_WIDTHS, blocks=RESNET34_BLOCKS):
        super().__init__()
        w, n = list(widths), list(blocks)
        self.widths = w
        self.conv1 = nn.Conv2d(3, w[0], 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(w[0])
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        self.layer1 = _stage(w[0], w[1], n[0], 1)
        self.layer2 = _stage(w[1], w[2], n[1], 2)
        self.layer3 = _stage(w[2], w[3], n[2], 2)
        self.layer4 = _stage(w[3], w[4], n[3], 2)
        if change_stride:
            self.layer3[0].conv1.stride = (1, 1)
            self.layer3[0].downsample[0].stride = (1, 1)
        self.strides = [1, 2, 4, 8, 8 if change_stride else 16]

    def forward_all(self, x: torch.Tensor) -> list[torch.Tensor]:
        """x: (B, 3, H, W) ImageNet-normalised -> [x, conv1, layer1, layer2, layer3]."""
        c1 = self.relu(self.bn1(self.conv1(x)))
        l1 = self.layer1(self.maxpool(c1))
        l2 = self.layer2(l1)
        l3 = self.layer3(l2)
        return [x, c1, l1, l2, l3]
