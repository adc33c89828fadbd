"""CIFAR-variant architectures for the paper's main model and its transferability row.

ResNet-50 is the paper's model (3x3 stride-1 stem, no max-pool, 2048-d representation); VGG-16, an
Inception-style net, ResNet-18 and DenseNet-121 are the other four architectures whose test accuracy on
D_det is set against how well ResNet-50's adversarial examples transfer to them. All follow the usual CIFAR
adaptation of the ImageNet designs: a 3x3 stride-1 stem, the grid reduced only inside the network, adaptive
global average pooling, then one linear layer. Pooling adapts to the input, so the same code runs on 32x32
CIFAR, 16x16 and 8x8 images and on one-channel inputs. `width` scales every channel count, so tests and CPU
quick runs can use a tiny copy of the same topology; the default width gives the standard network.

ResNet-18 and ResNet-50 are, operation for operation, the CIFAR ResNets of the paper authors' `robustness`
library and of RobustBench (with stem "imagenet": robustness's ImageNet ones, torchvision's layout); on 32x32
inputs their `avg_pool2d(out, 4)` is our global pooling. `advfeatures.interop` imports their checkpoints, with
`clamp_input=True` for robustness's, whose normaliser clamps inputs to [0, 1] first.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence

import torch
from torch import nn

from ..errors import BadInputError
from .base import ImageClassifier

CIFAR_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR_STD = (0.2023, 0.1994, 0.2010)


def cifar_stats(
    in_channels: int, mean: Sequence[float] | None, std: Sequence[float] | None
) -> tuple[Sequence[float] | None, Sequence[float] | None]:
    """The paper's CIFAR normalisation for 3-channel inputs where mean/std are not given; else leave them be.

    `None` for other channel counts lets the base class pick its generic default.
    """
    if in_channels == 3:
        mean = CIFAR_MEAN if mean is None else mean
        std = CIFAR_STD if std is None else std
    return mean, std


def _check_width(name: str, width: int, minimum: int = 1) -> None:
    if not isinstance(width, int) or isinstance(width, bool) or width < minimum:
        raise BadInputError(f"{name}: width must be an integer >= {minimum}, got {width!r}")


def conv_bn_relu(cin: int, cout: int, kernel: int = 3, stride: int = 1) -> nn.Sequential:
    """Conv (no bias: batch norm supplies it), batch norm, ReLU; 'same' padding for odd kernels."""
    return nn.Sequential(
        nn.Conv2d(cin, cout, kernel, stride, kernel // 2, bias=False), nn.BatchNorm2d(cout), nn.ReLU()
    )


def global_pool() -> nn.Sequential:
    """Adaptive global average pooling to a flat (N, C) representation, whatever the input's spatial size."""
    return nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten())


# --------------------------------------------------------------------------------------------------- ResNet


def _projection(cin: int, cout: int, stride: int) -> nn.Module:
    """Identity shortcut when shapes match, else a strided 1x1 conv + batch norm (He et al.'s option B)."""
    if stride == 1 and cin == cout:
        return nn.Identity()
    return nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))


class BasicBlock(nn.Module):
    """Two 3x3 convs with a residual connection (ResNet-18/34); the first conv carries the stride."""

    expansion = 1

    def __init__(self, cin: int, planes: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.shortcut = _projection(cin, planes, stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return torch.relu(out + self.shortcut(x))


class Bottleneck(nn.Module):
    """1x1 reduce, 3x3 (strided, as in torchvision's 'v1.5'), 1x1 expand by 4, residual (ResNet-50+)."""

    expansion = 4

    def __init__(self, cin: int, planes: int, stride: int = 1):
        super().__init__()
        cout = planes * self.expansion
        self.conv1 = nn.Conv2d(cin, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, cout, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(cout)
        self.shortcut = _projection(cin, cout, stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.relu(self.bn1(self.conv1(x)))
        out = torch.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return torch.relu(out + self.shortcut(x))


class CifarResNet(ImageClassifier):
    """ResNet (He et al. 2016), CIFAR variant: 3x3 stride-1 stem, no max-pool, four stages at strides 1,2,2,2.

    Stage i has `width * 2**i` planes; the representation is `8 * width * block.expansion` wide.
    """

    def __init__(
        self, in_channels: int, num_classes: int, block: type[BasicBlock] | type[Bottleneck],
        layers: Sequence[int], mean: Sequence[float] | None, std: Sequence[float] | None, width: int,
        stem: str = "cifar", clamp_input: bool = False,
    ):
        super().__init__(in_channels, *cifar_stats(in_channels, mean, std), clamp_input=clamp_input)
        _check_width(type(self).__name__, width)
        if stem not in ("cifar", "imagenet"):
            raise BadInputError(f"{type(self).__name__}: stem must be 'cifar' or 'imagenet', got {stem!r}")
        first = conv_bn_relu(in_channels, width)
        if stem == "imagenet":  # 7x7 stride-2 conv + 3x3 stride-2 max-pool, for 224x224 inputs
            first = nn.Sequential(conv_bn_relu(in_channels, width, kernel=7, stride=2), nn.MaxPool2d(3, 2, 1))
        parts: list[tuple[str, nn.Module]] = [("stem", first)]
        cin = width
        for i, n_blocks in enumerate(layers):
            planes = width * 2**i
            blocks = []
            for j in range(n_blocks):
                blocks.append(block(cin, planes, stride=2 if i > 0 and j == 0 else 1))
                cin = planes * block.expansion
            parts.append((f"layer{i + 1}", nn.Sequential(*blocks)))
        parts.append(("pool", global_pool()))
        self.body = nn.Sequential(OrderedDict(parts))
        self.head = nn.Linear(cin, num_classes)


class ResNet18(CifarResNet):
    """ResNet-18, CIFAR variant: BasicBlock [2, 2, 2, 2]; representation 8 * width (512), ~11.2M params."""

    def __init__(
        self, in_channels: int, num_classes: int, image_size: int, mean: Sequence[float] | None = None,
        std: Sequence[float] | None = None, width: int = 64, stem: str = "cifar", clamp_input: bool = False,
    ):
        super().__init__(in_channels, num_classes, BasicBlock, (2, 2, 2, 2), mean, std, width, stem, clamp_input)


class ResNet50(CifarResNet):
    """ResNet-50, CIFAR variant (the paper's model): Bottleneck [3, 4, 6, 3]; representation 32 * width."""

    def __init__(
        self, in_channels: int, num_classes: int, image_size: int, mean: Sequence[float] | None = None,
        std: Sequence[float] | None = None, width: int = 64, stem: str = "cifar", clamp_input: bool = False,
    ):
        super().__init__(in_channels, num_classes, Bottleneck, (3, 4, 6, 3), mean, std, width, stem, clamp_input)


# -------------------------------------------------------------------------------------------------- ResNet-9


class _Residual(nn.Module):
    """x + f(x), f two 3x3 conv-BN-ReLUs at constant width."""

    def __init__(self, channels: int):
        super().__init__()
        self.f = nn.Sequential(conv_bn_relu(channels, channels), conv_bn_relu(channels, channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.f(x)


class ResNet9(ImageClassifier):
    """The 9-layer residual net of Page's DAWNBench CIFAR-10 entry (2018), for CPU budgets.

    Why it exists: it reaches a given CIFAR accuracy in far fewer image-steps than ResNet-18, and most of its
    arithmetic sits in few, wide convolutions at low resolution, which a CPU runs efficiently. Layout: conv
    (`width`) at full size; conv (2 width) + 2x2 max-pool + a residual pair; conv (4 width) + pool; conv (8 width)
    + pool + a residual pair; global average pooling (as the paper's ResNets, so the representation keeps no
    pixel layout) to an 8 * width representation; linear head. Width 64 is the original (6.6M parameters).
    """

    def __init__(
        self, in_channels: int, num_classes: int, image_size: int, mean: Sequence[float] | None = None,
        std: Sequence[float] | None = None, width: int = 64,
    ):
        super().__init__(in_channels, *cifar_stats(in_channels, mean, std))
        _check_width("ResNet9", width)
        w = width
        self.body = nn.Sequential(OrderedDict([
            ("prep", conv_bn_relu(in_channels, w)),
            ("layer1", nn.Sequential(conv_bn_relu(w, 2 * w), nn.MaxPool2d(2, ceil_mode=True), _Residual(2 * w))),
            ("layer2", nn.Sequential(conv_bn_relu(2 * w, 4 * w), nn.MaxPool2d(2, ceil_mode=True))),
            ("layer3", nn.Sequential(conv_bn_relu(4 * w, 8 * w), nn.MaxPool2d(2, ceil_mode=True), _Residual(8 * w))),
            ("pool", global_pool()),
        ]))
        self.head = nn.Linear(8 * w, num_classes)


# ------------------------------------------------------------------------------------------------------ VGG

VGG16_LAYOUT = (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M")


class VGG16BN(ImageClassifier):
    """VGG-16 with batch norm (Simonyan & Zisserman 2015), CIFAR variant: 13 convs, global pool, one linear.

    Channels are the standard ones scaled by width / 64; the representation is 8 * width (512 at width 64).
    A 2x2 max-pool is skipped once the grid is already 1x1 (8x8 and 16x16 inputs), so small images work; on
    32x32 all five pools run and the global pool sees a 1x1 grid, as in the usual CIFAR VGG.
    """

    def __init__(
        self, in_channels: int, num_classes: int, image_size: int, mean: Sequence[float] | None = None,
        std: Sequence[float] | None = None, width: int = 64,
    ):
        super().__init__(in_channels, *cifar_stats(in_channels, mean, std))
        _check_width("VGG16BN", width)
        layers: list[nn.Module] = []
        cin, side = in_channels, image_size
        for item in VGG16_LAYOUT:
            if item == "M":
                if side >= 2:
                    layers.append(nn.MaxPool2d(2))
                    side //= 2
                continue
            cout = item * width // 64
            layers.append(conv_bn_relu(cin, cout))
            cin = cout
        self.body = nn.Sequential(*layers, global_pool())
        self.head = nn.Linear(cin, num_classes)


# ------------------------------------------------------------------------------------------------- DenseNet


class DenseLayer(nn.Module):
    """Pre-activation bottleneck BN-ReLU-1x1(4k)-BN-ReLU-3x3(k); its k new maps are appended to the input."""

    def __init__(self, cin: int, growth: int):
        super().__init__()
        self.bn1 = nn.BatchNorm2d(cin)
        self.conv1 = nn.Conv2d(cin, 4 * growth, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(4 * growth)
        self.conv2 = nn.Conv2d(4 * growth, growth, 3, 1, 1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv1(torch.relu(self.bn1(x)))
        out = self.conv2(torch.relu(self.bn2(out)))
        return torch.cat([x, out], dim=1)


def _transition(cin: int, cout: int, pool: bool) -> nn.Sequential:
    """BN-ReLU-1x1 conv halving the channels, then 2x2 average pooling (skipped on a 1x1 grid)."""
    layers: list[nn.Module] = [nn.BatchNorm2d(cin), nn.ReLU(), nn.Conv2d(cin, cout, 1, bias=False)]
    if pool:
        layers.append(nn.AvgPool2d(2))
    return nn.Sequential(*layers)


class DenseNet121(ImageClassifier):
    """DenseNet-121 (Huang et al. 2017, DenseNet-BC), CIFAR variant: 3x3 stem, blocks [6, 12, 24, 16].

    `width` is the growth rate k (32 by default); the stem has 2k maps, transitions halve the channels
    (compression 0.5), and the representation is 32 * k (1024 at k = 32), after a final BN-ReLU and global
    average pooling.
    """

    def __init__(
        self, in_channels: int, num_classes: int, image_size: int, mean: Sequence[float] | None = None,
        std: Sequence[float] | None = None, width: int = 32,
    ):
        super().__init__(in_channels, *cifar_stats(in_channels, mean, std))
        _check_width("DenseNet121", width)
        growth = width
        block_sizes = (6, 12, 24, 16)
        stem = nn.Conv2d(in_channels, 2 * growth, 3, 1, 1, bias=False)
        parts: list[tuple[str, nn.Module]] = [("stem", stem)]
        channels, side = 2 * growth, image_size
        for i, n_layers in enumerate(block_sizes):
            layers = []
            for _ in range(n_layers):
                layers.append(DenseLayer(channels, growth))
                channels += growth
            parts.append((f"block{i + 1}", nn.Sequential(*layers)))
            if i < len(block_sizes) - 1:
                parts.append((f"transition{i + 1}", _transition(channels, channels // 2, pool=side >= 2)))
                channels //= 2
                side = side // 2 if side >= 2 else side
        parts += [("norm", nn.BatchNorm2d(channels)), ("relu", nn.ReLU()), ("pool", global_pool())]
        self.body = nn.Sequential(OrderedDict(parts))
        self.head = nn.Linear(channels, num_classes)


# ------------------------------------------------------------------------------------------------ Inception


class InceptionModule(nn.Module):
    """Four parallel branches, concatenated: 1x1; 1x1 -> 3x3; 1x1 -> 3x3 -> 3x3 (a 5x5 factorised as in
    Inception-v3); 3x3 average pool -> 1x1. Each gets a quarter of the output channels."""

    def __init__(self, cin: int, cout: int):
        super().__init__()
        b = cout // 4
        self.branch1x1 = conv_bn_relu(cin, b, 1)
        self.branch3x3 = nn.Sequential(conv_bn_relu(cin, b, 1), conv_bn_relu(b, b, 3))
        self.branch5x5 = nn.Sequential(conv_bn_relu(cin, b, 1), conv_bn_relu(b, b, 3), conv_bn_relu(b, b, 3))
        self.branch_pool = nn.Sequential(
            nn.AvgPool2d(3, 1, 1, count_include_pad=False), conv_bn_relu(cin, cout - 3 * b, 1)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        branches = (self.branch1x1, self.branch3x3, self.branch5x5, self.branch_pool)
        return torch.cat([branch(x) for branch in branches], dim=1)


class GridReduction(nn.Module):
    """Halve the grid and widen cin -> cout without a bottleneck (Inception-v3 Sec. 5): a strided 3x3 conv, a
    strided double 3x3, and a strided 3x3 max-pool of the input, concatenated."""

    def __init__(self, cin: int, cout: int):
        super().__init__()
        b = (cout - cin) // 2
        self.branch3x3 = conv_bn_relu(cin, b, 3, stride=2)
        self.branch5x5 = nn.Sequential(
            conv_bn_relu(cin, b, 1), conv_bn_relu(b, b, 3), conv_bn_relu(b, cout - cin - b, 3, stride=2)
        )
        self.branch_pool = nn.MaxPool2d(3, 2, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.branch3x3(x), self.branch5x5(x), self.branch_pool(x)], dim=1)


class InceptionNet(ImageClassifier):
    """A small Inception-v3-style CIFAR net (Szegedy et al. 2016, scaled down; stands in for Inception-v3).

    3x3 stem of `width` maps, then three grids (32, 16, 8 on CIFAR) of two inception modules each with 2, 4
    and 8 times `width` channels, joined by grid reductions; representation 8 * width (512 at width 64), ~2.6M
    parameters.
    """

    def __init__(
        self, in_channels: int, num_classes: int, image_size: int, mean: Sequence[float] | None = None,
        std: Sequence[float] | None = None, width: int = 64,
    ):
        super().__init__(in_channels, *cifar_stats(in_channels, mean, std))
        _check_width("InceptionNet", width, minimum=2)
        w = width
        self.body = nn.Sequential(OrderedDict([
            ("stem", conv_bn_relu(in_channels, w)),
            ("stage1", nn.Sequential(InceptionModule(w, 2 * w), InceptionModule(2 * w, 2 * w))),
            ("reduce1", GridReduction(2 * w, 4 * w)),
            ("stage2", nn.Sequential(InceptionModule(4 * w, 4 * w), InceptionModule(4 * w, 4 * w))),
            ("reduce2", GridReduction(4 * w, 8 * w)),
            ("stage3", nn.Sequential(InceptionModule(8 * w, 8 * w), InceptionModule(8 * w, 8 * w))),
            ("pool", global_pool()),
        ]))
        self.head = nn.Linear(8 * w, num_classes)


CIFAR_MODELS: dict[str, type[ImageClassifier]] = {
    "resnet9": ResNet9,
    "resnet18": ResNet18,
    "resnet50": ResNet50,
    "vgg16_bn": VGG16BN,
    "densenet121": DenseNet121,
    "inception": InceptionNet,
}
