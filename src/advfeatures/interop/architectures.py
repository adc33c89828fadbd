"""Other libraries' architectures, key for key onto ours: which of ours computes the same function, and how
each of our parameter names is spelled in their state dicts.

- robustness `cifar_models.ResNet18/50` and RobustBench `ResNet` (conv1 3x3, bn1, layerK.M.{conv,bn}N,
  layerK.M.shortcut.0/1, linear) -> our `resnet18` / `resnet50` (stem "cifar", width = conv1's channels);
- robustness `imagenet_models.resnet18/50`, torchvision's layout (conv1 7x7, bn1, max-pool, layerK.M.downsample.0/1,
  fc; Restricted ImageNet) -> our `resnet18` / `resnet50` with stem "imagenet";
- RobustBench `WideResNet` (conv1, blockG.layer.M.{bn1,conv1,bn2,conv2,convShortcut}, bn1, fc; its `Standard`
  is WRN-28-10) -> our `wide_resnet` (depth, width).

Their CIFAR ResNets end in `avg_pool2d(out, 4)` and the WRN in `avg_pool2d(out, 8)`: on 32x32 inputs that is the
whole final grid, which is what our global average pooling takes. Everything else (block order, strides on the
3x3 convs, which blocks get a projection shortcut, where the ReLUs sit) is the same operation for operation;
benchmarks/compare/vs_authors_import.py checks it against the authors' own code.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import torch

# (our name pattern, their spelling); the first pattern that matches an our-side key applies.
RESNET_CIFAR = (
    (r"^body\.stem\.0\.", "conv1."),
    (r"^body\.stem\.1\.", "bn1."),
    (r"^body\.(layer\d)\.", r"\1."),
    (r"^head\.", "linear."),
)
RESNET_IMAGENET = (
    (r"^body\.stem\.0\.0\.", "conv1."),
    (r"^body\.stem\.0\.1\.", "bn1."),
    (r"^body\.(layer\d\.\d+)\.shortcut\.", r"\1.downsample."),
    (r"^body\.(layer\d)\.", r"\1."),
    (r"^head\.", "fc."),
)
WIDE_RESNET = (
    (r"^body\.stem\.", "conv1."),
    (r"^body\.(block\d)\.(\d+)\.shortcut\.", r"\1.layer.\2.convShortcut."),
    (r"^body\.(block\d)\.", r"\1.layer."),
    (r"^body\.norm\.", "bn1."),
    (r"^head\.", "fc."),
)
NORMALISATION = ("mean", "std")  # our buffers; each library stores them its own way (or not at all)
SUPPORTED = ("resnet18", "resnet50", "wide_resnet")


@dataclass(frozen=True)
class Architecture:
    """One of our registered architectures with the options that match a file, and their spelling of its keys."""

    arch: str
    options: dict = field(default_factory=dict)
    spelling: tuple[tuple[str, str], ...] = RESNET_CIFAR
    description: str = ""

    def their_key(self, ours: str) -> str | None:
        for pattern, replacement in self.spelling:
            if re.match(pattern, ours):
                return re.sub(pattern, replacement, ours, count=1)
        return None


def _count(keys: set[str], pattern: str) -> int:
    """How many distinct indices fill the `(\\d+)` group of `pattern` among keys."""
    regex = re.compile(pattern)
    return len({m.group(1) for k in keys if (m := regex.match(k))})


def _shape(weights: dict[str, torch.Tensor], key: str) -> tuple[int, ...] | None:
    value = weights.get(key)
    return tuple(value.shape) if isinstance(value, torch.Tensor) else None


def _resnet(weights: dict[str, torch.Tensor], arch: str | None) -> Architecture | None:
    keys = set(weights)
    stem = _shape(weights, "conv1.weight")
    head = "linear" if "linear.weight" in keys else "fc" if "fc.weight" in keys else None
    if stem is None or len(stem) != 4 or head is None:
        return None
    bottleneck = any(re.match(r"^layer\d\.\d+\.conv3\.", k) for k in keys)
    blocks = tuple(_count(keys, rf"^layer{i}\.(\d+)\.") for i in range(1, 5))
    known = {(False, (2, 2, 2, 2)): "resnet18", (True, (3, 4, 6, 3)): "resnet50"}
    detected = known.get((bottleneck, blocks))
    family = f"{'Bottleneck' if bottleneck else 'BasicBlock'} ResNet with blocks {list(blocks)}"
    if detected is None and arch is None:
        raise ValueError(f"a {family}; supported: ResNet-18 (BasicBlock [2, 2, 2, 2]) and ResNet-50 "
                         "(Bottleneck [3, 4, 6, 3])")
    imagenet = stem[-1] == 7 and head == "fc"
    options = {"width": stem[0]}
    if imagenet:
        options["stem"] = "imagenet"
    kind = "ImageNet (torchvision) layout: 7x7 stem, max-pool, downsample, fc" if imagenet else \
        "CIFAR layout: 3x3 stem, shortcut, linear"
    return Architecture(detected or arch, options, RESNET_IMAGENET if imagenet else RESNET_CIFAR,
                        f"{family}, {kind}, width {stem[0]}")


def _wide_resnet(weights: dict[str, torch.Tensor]) -> Architecture | None:
    keys = set(weights)
    first = _shape(weights, "block1.layer.0.conv1.weight")
    if first is None or "conv1.weight" not in keys:
        return None
    if any(k.startswith("sub_block1.") for k in keys):
        raise ValueError("a WideResNet with `sub_block1` (the TRADES variant); only the plain WideResNet is supported")
    per_group = _count(keys, r"^block1\.layer\.(\d+)\.")
    depth, width = 6 * per_group + 4, first[0] // 16
    return Architecture("wide_resnet", {"depth": depth, "width": width}, WIDE_RESNET,
                        f"WideResNet WRN-{depth}-{width} (RobustBench layout)")


def detect_architecture(weights: dict[str, torch.Tensor], arch: str | None = None) -> Architecture:
    """Which of our architectures a state dict (prefixes removed, their spelling) holds, and its options.

    Raises ValueError (with what was found) when the keys fit none of the supported layouts, or another one than
    `arch` asks for.
    """
    if arch is not None and arch not in SUPPORTED:
        raise ValueError(f"--arch {arch} cannot be imported; importable architectures: {', '.join(SUPPORTED)}")
    found = _wide_resnet(weights) or _resnet(weights, arch)
    if found is None:
        sample = ", ".join(sorted(weights)[:4])
        raise ValueError(f"its keys ({sample}, ...) are not those of a ResNet-18, ResNet-50 or WideResNet in the "
                         "robustness / RobustBench layouts")
    if arch is not None and found.arch != arch:
        raise ValueError(f"--arch {arch} given, but its keys are those of a {found.description} "
                         f"(ours: {found.arch}); leave out --arch")
    return found


def match_weights(
    architecture: Architecture, expected: dict[str, torch.Tensor], weights: dict[str, torch.Tensor]
) -> dict[str, torch.Tensor]:
    """Our state dict filled from theirs, key for key; raises ValueError naming what is missing, extra or misshapen.

    `expected` is our freshly built model's state dict. BatchNorm's `num_batches_tracked` may be absent (files
    from torch < 0.4.1): it only matters for training with momentum None, so it is set to 0 as torch does.
    """
    state, missing, misshapen, used = {}, [], [], set()
    for ours, tensor in expected.items():
        if ours in NORMALISATION:
            continue
        theirs = architecture.their_key(ours)
        if theirs is None or theirs not in weights:
            if ours.endswith("num_batches_tracked"):
                state[ours] = torch.zeros((), dtype=torch.long)
                continue
            missing.append(theirs or ours)
            continue
        used.add(theirs)
        value = weights[theirs]
        if tuple(value.shape) != tuple(tensor.shape):
            misshapen.append(f"{theirs} {tuple(value.shape)} (expected {tuple(tensor.shape)})")
            continue
        state[ours] = value.to(tensor.dtype)
    unexpected = sorted(set(weights) - used)
    problems = [
        f"{len(items)} {what} ({', '.join(items[:3])}{', ...' if len(items) > 3 else ''})"
        for what, items in (("missing", missing), ("unexpected", unexpected), ("of the wrong shape", misshapen))
        if items
    ]
    if problems:
        raise ValueError(f"does not match {architecture.description} key for key: {'; '.join(problems)}")
    return state
