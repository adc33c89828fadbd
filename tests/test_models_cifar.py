"""The CIFAR-variant architectures: shapes, representation sizes, gradients, checkpoints, normalisation."""

from __future__ import annotations

import pytest
import torch

from advfeatures.errors import BadInputError
from advfeatures.models import MODELS, build_model, load_model, save_model
from advfeatures.models.cifar import CIFAR_MEAN, CIFAR_STD

# name -> (small width for quick tests, representation size as a function of width, default-width size)
ARCHS = {
    "resnet9": (4, lambda w: 8 * w, 512),
    "resnet18": (4, lambda w: 8 * w, 512),
    "resnet50": (4, lambda w: 32 * w, 2048),
    "vgg16_bn": (8, lambda w: 8 * w, 512),
    "densenet121": (4, lambda w: 32 * w, 1024),
    "inception": (4, lambda w: 8 * w, 512),
}
NAMES = list(ARCHS)


def small(arch: str, in_channels: int = 3, image_size: int = 32, num_classes: int = 10, **kwargs):
    torch.manual_seed(0)
    width = ARCHS[arch][0]
    return build_model(arch, in_channels=in_channels, num_classes=num_classes, image_size=image_size,
                       width=width, **kwargs)


def test_registered():
    for name in NAMES:
        assert name in MODELS


@pytest.mark.parametrize("arch", NAMES)
@pytest.mark.parametrize("in_channels,image_size", [(3, 32), (1, 16), (3, 8)])
def test_shapes_at_small_width(arch, in_channels, image_size):
    model = small(arch, in_channels, image_size, num_classes=7)
    width, dim_of, _ = ARCHS[arch]
    x = torch.rand(2, in_channels, image_size, image_size)
    assert model(x).shape == (2, 7)
    assert model.representation(x).shape == (2, dim_of(width))
    assert model.head.in_features == dim_of(width)


@pytest.mark.parametrize("arch", NAMES)
def test_default_width_representation(arch):
    model = build_model(arch, in_channels=3, num_classes=10, image_size=32).eval()
    expected = ARCHS[arch][2]
    with torch.no_grad():
        rep = model.representation(torch.rand(1, 3, 32, 32))
    assert rep.shape == (1, expected)
    assert model.head.in_features == expected
    assert model.head.out_features == 10


def test_parameter_counts_match_cifar_variants():
    def count(arch):
        model = build_model(arch, in_channels=3, num_classes=10, image_size=32)
        return sum(p.numel() for p in model.parameters())

    assert 11.1e6 < count("resnet18") < 11.3e6
    assert 23.4e6 < count("resnet50") < 23.6e6
    assert 14.6e6 < count("vgg16_bn") < 14.8e6
    assert 6.9e6 < count("densenet121") < 7.1e6
    assert count("inception") < 5e6


@pytest.mark.parametrize("arch", NAMES)
def test_gradients_reach_the_input(arch):
    model = small(arch).train()
    x = torch.rand(2, 3, 32, 32, requires_grad=True)
    model(x).logsumexp(dim=1).sum().backward()
    assert x.grad is not None
    assert torch.isfinite(x.grad).all()
    assert x.grad.abs().sum() > 0
    assert all(p.grad is not None for p in model.parameters())


@pytest.mark.parametrize("arch", NAMES)
def test_checkpoint_round_trip(arch, tmp_path):
    model = small(arch, in_channels=1, image_size=16, num_classes=5, mean=[0.3], std=[0.7])
    with torch.no_grad():  # move the batch-norm running statistics away from their initial values
        model.train()(torch.rand(8, 1, 16, 16))
    model.eval()
    x = torch.rand(3, 1, 16, 16)
    with torch.no_grad():
        expected = model(x)
    path = tmp_path / f"{arch}.safetensors"
    save_model(model, path)
    loaded = load_model(path)
    assert loaded.config == model.config
    assert type(loaded) is type(model)
    with torch.no_grad():
        assert torch.equal(loaded(x), expected)
    assert torch.equal(loaded.mean, model.mean) and torch.equal(loaded.std, model.std)


@pytest.mark.parametrize("arch", NAMES)
def test_normalisation_is_inside_the_model(arch):
    default = small(arch)
    assert torch.allclose(default.mean.flatten(), torch.tensor(CIFAR_MEAN))
    assert torch.allclose(default.std.flatten(), torch.tensor(CIFAR_STD))
    assert "mean" in default.state_dict() and "std" in default.state_dict()

    mean, std = [0.1, 0.2, 0.3], [0.5, 0.6, 0.7]
    model = small(arch, mean=mean, std=std).eval()
    x = torch.rand(2, 3, 32, 32)
    normalised = (x - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1)
    with torch.no_grad():
        logits = model(x)
        assert torch.allclose(logits, model.head(model.body(normalised).flatten(1)), atol=1e-5)
        model.mean.fill_(0.9)  # the buffers are what the forward pass uses
        assert not torch.allclose(model(x), logits)


def test_one_channel_uses_the_base_default_normalisation():
    model = small("resnet18", in_channels=1, image_size=16)
    assert model.mean.flatten().tolist() == [0.5]
    assert model.std.flatten().tolist() == [0.25]


@pytest.mark.parametrize("arch", NAMES)
def test_bad_width_is_a_bad_input(arch):
    with pytest.raises(BadInputError):
        build_model(arch, in_channels=3, num_classes=10, image_size=32, width=0)
