"""Reference networks and checkpoint layouts of the paper authors' library (MadryLab robustness) and RobustBench.

Written here from their sources (their module names, their forward passes: avg_pool2d(out, 4) / (out, 8), the
WRN's pre-activation shortcut, robustness's clamp-then-normalise), independently of advfeatures' models, so that
tests can write the files those libraries write (with plain pickle: the suite needs neither dill nor their code)
and check what `import-model` makes of them.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

CIFAR_MEAN = torch.tensor([0.4914, 0.4822, 0.4465])
CIFAR_STD = torch.tensor([0.2023, 0.1994, 0.2010])
RIN_MEAN = torch.tensor([0.4717, 0.4499, 0.3837])  # robustness's Restricted ImageNet statistics
RIN_STD = torch.tensor([0.2600, 0.2516, 0.2575])

# --------------------------------------------------------------------------------------------------------
# Reference networks in the authors' / RobustBench's layouts


class RefBlock(nn.Module):
    """robustness cifar_models BasicBlock (bottleneck=False) or Bottleneck: names conv1..3, bn1..3, shortcut."""

    def __init__(self, cin: int, planes: int, stride: int, bottleneck: bool):
        super().__init__()
        self.bottleneck = bottleneck
        cout = planes * (4 if bottleneck else 1)
        if bottleneck:
            self.conv1, self.bn1 = nn.Conv2d(cin, planes, 1, bias=False), nn.BatchNorm2d(planes)
            self.conv2, self.bn2 = nn.Conv2d(planes, planes, 3, stride, 1, bias=False), nn.BatchNorm2d(planes)
            self.conv3, self.bn3 = nn.Conv2d(planes, cout, 1, bias=False), nn.BatchNorm2d(cout)
        else:
            self.conv1, self.bn1 = nn.Conv2d(cin, planes, 3, stride, 1, bias=False), nn.BatchNorm2d(planes)
            self.conv2, self.bn2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False), nn.BatchNorm2d(planes)
        self.shortcut = nn.Sequential()
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        if self.bottleneck:
            out = F.relu(self.bn2(self.conv2(out)))
            out = self.bn3(self.conv3(out))
        else:
            out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class RefResNet(nn.Module):
    """robustness cifar_models.ResNet / RobustBench ResNet: returns (logits, latent) like with_latent=True."""

    def __init__(self, bottleneck: bool, blocks, width: int = 64, num_classes: int = 10):
        super().__init__()
        self.conv1, self.bn1 = nn.Conv2d(3, width, 3, 1, 1, bias=False), nn.BatchNorm2d(width)
        cin = width
        for i, n in enumerate(blocks):
            layers = []
            for j in range(n):
                layers.append(RefBlock(cin, width * 2**i, 2 if i > 0 and j == 0 else 1, bottleneck))
                cin = width * 2**i * (4 if bottleneck else 1)
            setattr(self, f"layer{i + 1}", nn.Sequential(*layers))
        self.linear = nn.Linear(cin, num_classes)

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.layer4(self.layer3(self.layer2(self.layer1(out))))
        latent = F.avg_pool2d(out, 4).view(out.size(0), -1)
        return self.linear(latent), latent


class RefWideBlock(nn.Module):
    """RobustBench wide_resnet BasicBlock: bn1, conv1, bn2, conv2, convShortcut (None at constant width)."""

    def __init__(self, cin: int, cout: int, stride: int):
        super().__init__()
        self.bn1, self.conv1 = nn.BatchNorm2d(cin), nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn2, self.conv2 = nn.BatchNorm2d(cout), nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.equal = cin == cout
        self.convShortcut = None if self.equal else nn.Conv2d(cin, cout, 1, stride, 0, bias=False)

    def forward(self, x):
        if self.equal:
            out = F.relu(self.bn1(x))
        else:
            x = F.relu(self.bn1(x))
        out = F.relu(self.bn2(self.conv1(out if self.equal else x)))
        out = self.conv2(out)
        return torch.add(x if self.equal else self.convShortcut(x), out)


class RefGroup(nn.Module):
    def __init__(self, n: int, cin: int, cout: int, stride: int):
        super().__init__()
        self.layer = nn.Sequential(*[RefWideBlock(cin if i == 0 else cout, cout, stride if i == 0 else 1)
                                     for i in range(n)])


class RefWideResNet(nn.Module):
    """RobustBench WideResNet(depth, widen_factor): RobustBench's `Standard` is depth 28, widen 10."""

    def __init__(self, depth: int = 28, widen: int = 10, num_classes: int = 10):
        super().__init__()
        n, ch = (depth - 4) // 6, [16, 16 * widen, 32 * widen, 64 * widen]
        self.conv1 = nn.Conv2d(3, ch[0], 3, 1, 1, bias=False)
        self.block1, self.block2, self.block3 = (RefGroup(n, ch[i], ch[i + 1], 1 if i == 0 else 2) for i in range(3))
        self.bn1, self.fc, self.channels = nn.BatchNorm2d(ch[3]), nn.Linear(ch[3], num_classes), ch[3]

    def forward(self, x):
        out = self.block3.layer(self.block2.layer(self.block1.layer(self.conv1(x))))
        latent = F.avg_pool2d(F.relu(self.bn1(out)), 8).view(-1, self.channels)
        return self.fc(latent), latent


def randomise(model: nn.Module, seed: int = 0) -> nn.Module:
    """Random weights and non-trivial BatchNorm statistics, so every tensor of the file matters."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.weight.copy_(1 + 0.2 * torch.randn(m.weight.shape, generator=g))
                m.bias.copy_(0.2 * torch.randn(m.bias.shape, generator=g))
                m.running_mean.copy_(0.2 * torch.randn(m.running_mean.shape, generator=g))
                m.running_var.copy_(0.5 + torch.rand(m.running_var.shape, generator=g))
                m.num_batches_tracked.fill_(1000)
            elif isinstance(m, nn.Linear) and m.bias is not None:
                m.bias.copy_(0.1 * torch.randn(m.bias.shape, generator=g))
    return model.eval()


def robustness_forward(model: nn.Module, x, mean=CIFAR_MEAN, std=CIFAR_STD):
    """robustness AttackerModel(x, with_latent=True): clamp to [0, 1], normalise, classifier."""
    with torch.no_grad():
        return model((x.clamp(0, 1) - mean.view(1, 3, 1, 1)) / std.view(1, 3, 1, 1))


def robustness_state(model: nn.Module, mean=CIFAR_MEAN, std=CIFAR_STD) -> dict:
    """The state dict of DataParallel(AttackerModel(model)): module.model.*, module.attacker.model.*, normalizer."""
    state = {}
    for prefix in ("module.model.", "module.attacker.model."):
        state.update({prefix + k: v.clone() for k, v in model.state_dict().items()})
    for prefix in ("module.normalizer.", "module.attacker.normalize."):
        state[prefix + "new_mean"] = mean.view(3, 1, 1).clone()
        state[prefix + "new_std"] = std.view(3, 1, 1).clone()
    return state


def robustness_checkpoint(model: nn.Module, key: str = "model", **kwargs) -> dict:
    """What robustness/train.py saves: model (or, in old files, state_dict), optimizer, schedule, epoch, ..."""
    params = list(range(len(list(model.parameters()))))
    return {key: robustness_state(model, **kwargs),
            "optimizer": {"state": {}, "param_groups": [{"lr": 0.1, "momentum": 0.9, "weight_decay": 5e-4,
                                                         "nesterov": False, "params": params}]},
            "schedule": {"step_size": 50, "gamma": 0.1, "base_lrs": [0.1], "last_epoch": 150, "_step_count": 151},
            "epoch": 150, "amp": None, "adv_prec1": torch.tensor(69.5)}


def resnet(bottleneck=True, width=4, seed=0, **kwargs) -> RefResNet:
    torch.manual_seed(seed)
    return randomise(RefResNet(bottleneck, (3, 4, 6, 3) if bottleneck else (2, 2, 2, 2), width, **kwargs), seed)
