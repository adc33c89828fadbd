"""Wide ResNet (Zagoruyko & Komodakis 2016) as RobustBench has it: its `Standard` CIFAR-10 model is WRN-28-10.

The layout follows RobustBench's `model_zoo/architectures/wide_resnet.py` (itself from TRADES), so that an
imported RobustBench file computes exactly the same function here: a 3x3 conv to 16 maps; three groups of
(depth - 4) / 6 pre-activation basic blocks with 16, 32 and 64 times `width` maps at strides 1, 2, 2; a final
BN-ReLU; global average pooling (their `avg_pool2d(out, 8)` on the 8x8 grid of a 32x32 input); one linear
layer on the 64 * width representation (640 for WRN-28-10). A block whose input and output widths differ
pre-activates its input once and feeds that to both its first conv and its 1x1 projection shortcut; a block of
constant width adds its raw input. Dropout (RobustBench's default 0) is left out.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence

import torch
from torch import nn

from ..errors import BadInputError
from .base import ImageClassifier
from .cifar import _check_width, cifar_stats, global_pool


class WideBlock(nn.Module):
    """BN-ReLU-conv3x3(stride)-BN-ReLU-conv3x3 with a residual; a 1x1 projection when the width changes."""

    def __init__(self, cin: int, cout: int, stride: int):
        super().__init__()
        self.bn1 = nn.BatchNorm2d(cin)
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.shortcut = nn.Conv2d(cin, cout, 1, stride, 0, bias=False) if cin != cout else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pre = torch.relu(self.bn1(x))
        out = self.conv2(torch.relu(self.bn2(self.conv1(pre))))
        return out + (x if self.shortcut is None else self.shortcut(pre))


class WideResNet(ImageClassifier):
    """WRN-depth-width, CIFAR layout; the defaults (depth 28, width 10) give RobustBench's WRN-28-10."""

    def __init__(
        self, in_channels: int, num_classes: int, image_size: int, mean: Sequence[float] | None = None,
        std: Sequence[float] | None = None, width: int = 10, depth: int = 28, clamp_input: bool = False,
    ):
        super().__init__(in_channels, *cifar_stats(in_channels, mean, std), clamp_input=clamp_input)
        _check_width("WideResNet", width)
        if not isinstance(depth, int) or depth < 10 or (depth - 4) % 6:
            raise BadInputError(f"WideResNet: depth must be 6n + 4 with n >= 1 (10, 16, 22, 28, ...), got {depth!r}")
        per_group = (depth - 4) // 6
        channels = (16, 16 * width, 32 * width, 64 * width)
        parts: list[tuple[str, nn.Module]] = [("stem", nn.Conv2d(in_channels, channels[0], 3, 1, 1, bias=False))]
        for g in range(3):
            blocks, cin = [], channels[g]
            for i in range(per_group):
                blocks.append(WideBlock(cin, channels[g + 1], stride=2 if g > 0 and i == 0 else 1))
                cin = channels[g + 1]
            parts.append((f"block{g + 1}", nn.Sequential(*blocks)))
        parts += [("norm", nn.BatchNorm2d(channels[3])), ("relu", nn.ReLU()), ("pool", global_pool())]
        self.body = nn.Sequential(OrderedDict(parts))
        self.head = nn.Linear(channels[3], num_classes)
