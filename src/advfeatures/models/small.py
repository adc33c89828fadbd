"""Small architectures for the offline data (8x8 digits, 16x16 synthetic): CPU-fast, genuinely different."""

from __future__ import annotations

from torch import nn

from .base import ImageClassifier

ACTIVATIONS: dict[str, type[nn.Module]] = {"relu": nn.ReLU, "softplus": nn.Softplus, "silu": nn.SiLU, "gelu": nn.GELU}


class MLP(ImageClassifier):
    """Two hidden ReLU layers on the flattened image; the representation is the second hidden layer."""

    def __init__(self, in_channels, num_classes, image_size, mean=None, std=None, hidden: int = 256):
        super().__init__(in_channels, mean, std)
        d = in_channels * image_size * image_size
        self.body = nn.Sequential(
            nn.Flatten(), nn.Linear(d, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU()
        )
        self.head = nn.Linear(hidden, num_classes)


class SmallCNN(ImageClassifier):
    """Three 3x3 conv layers (two with stride 2), then either flatten + a hidden layer or global average pooling.

    `pool="flatten"` keeps spatial layout in the representation (strong on tiny images); `pool="gap"` averages
    it away, a smaller representation that inversion cannot simply copy pixel by pixel.
    `activation` picks the nonlinearity. Smooth ones (softplus, silu, gelu) are reported to help adversarial
    training on ImageNet (Xie et al. 2020, "Smooth adversarial training"); on digits they did not (RESULTS.md).
    """

    def __init__(
        self, in_channels, num_classes, image_size, mean=None, std=None, width: int = 32, hidden: int = 128,
        pool: str = "flatten", activation: str = "relu",
    ):
        super().__init__(in_channels, mean, std)
        if pool not in ("flatten", "gap"):
            raise ValueError(f"pool must be 'flatten' or 'gap', got {pool!r}")
        if activation not in ACTIVATIONS:
            raise ValueError(f"activation must be one of {', '.join(ACTIVATIONS)}, got {activation!r}")
        act = ACTIVATIONS[activation]
        convs = [
            nn.Conv2d(in_channels, width, 3, padding=1), act(),
            nn.Conv2d(width, 2 * width, 3, stride=2, padding=1), act(),
            nn.Conv2d(2 * width, 4 * width, 3, stride=2, padding=1), act(),
        ]
        side = (image_size + 3) // 4
        if pool == "flatten":
            tail = [nn.Flatten(), nn.Linear(4 * width * side * side, hidden), act()]
            dim = hidden
        else:
            tail = [nn.AdaptiveAvgPool2d(1), nn.Flatten()]
            dim = 4 * width
        self.body = nn.Sequential(*convs, *tail)
        self.head = nn.Linear(dim, num_classes)


class WideCNN(ImageClassifier):
    """A wider, deeper VGG-style net with batch norm: four conv layers, max-pooling, a hidden layer."""

    def __init__(self, in_channels, num_classes, image_size, mean=None, std=None, width: int = 48, hidden: int = 256):
        super().__init__(in_channels, mean, std)

        def block(cin, cout):
            return [nn.Conv2d(cin, cout, 3, padding=1), nn.BatchNorm2d(cout), nn.ReLU()]

        side = image_size // 4
        self.body = nn.Sequential(
            *block(in_channels, width), *block(width, width), nn.MaxPool2d(2),
            *block(width, 2 * width), *block(2 * width, 2 * width), nn.MaxPool2d(2),
            nn.Flatten(), nn.Linear(2 * width * side * side, hidden), nn.ReLU(),
        )
        self.head = nn.Linear(hidden, num_classes)


class _ResidualBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.shortcut = nn.Sequential()
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x):
        out = self.bn1(self.conv1(x)).relu()
        return (self.bn2(self.conv2(out)) + self.shortcut(x)).relu()


class TinyResNet(ImageClassifier):
    """A small residual net (stem + three residual blocks, global average pooling)."""

    def __init__(self, in_channels, num_classes, image_size, mean=None, std=None, width: int = 32):
        super().__init__(in_channels, mean, std)
        self.body = nn.Sequential(
            nn.Conv2d(in_channels, width, 3, padding=1, bias=False), nn.BatchNorm2d(width), nn.ReLU(),
            _ResidualBlock(width, width, 1),
            _ResidualBlock(width, 2 * width, 2),
            _ResidualBlock(2 * width, 4 * width, 2),
            nn.AdaptiveAvgPool2d(1), nn.Flatten(),
        )
        self.head = nn.Linear(4 * width, num_classes)
