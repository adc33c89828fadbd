"""The controls' builders: fixed class patterns (Keller Jordan's leakage-only D_rand / D_det) and D_rand without
its correctly labelled share, checked against answers known by construction."""

from __future__ import annotations

import pytest
import torch

from advfeatures.construct import build_shortcut_dataset, class_patterns, relabel_targets
from advfeatures.errors import BadInputError


@pytest.mark.parametrize("family", ["tile", "gaussian"])
def test_class_patterns_have_norm_eps_and_are_fixed_by_the_seed(family):
    p = class_patterns(10, (3, 8, 8), 0.5, family, seed=4)
    assert p.shape == (10, 3, 8, 8)
    assert torch.allclose(p.flatten(1).norm(dim=1), torch.full((10,), 0.5), atol=1e-6)
    assert torch.equal(p, class_patterns(10, (3, 8, 8), 0.5, family, seed=4))
    assert not torch.equal(p, class_patterns(10, (3, 8, 8), 0.5, family, seed=5))
    assert not torch.allclose(p[0], p[1])  # one pattern per class


def test_tile_patterns_repeat_every_two_pixels():
    p = class_patterns(4, (1, 7, 6), 1.0, "tile")
    assert torch.equal(p[..., :-2, :], p[..., 2:, :])
    assert torch.equal(p[..., :, :-2], p[..., :, 2:])


def test_unknown_family_is_refused():
    with pytest.raises(BadInputError, match="pattern family"):
        class_patterns(10, (1, 8, 8), 1.0, "stripes")


def data(n=400, classes=10, seed=0):
    g = torch.Generator().manual_seed(seed)
    images = torch.rand(n, 1, 8, 8, generator=g) * 0.6 + 0.2  # inside the box: no clipping for small eps
    return images, torch.randint(0, classes, (n,), generator=g)


def test_rand_shortcut_uses_d_rands_targets_and_leaves_true_targets_clean():
    x, y = data()
    ds = build_shortcut_dataset(x, y, mode="rand", num_classes=10, eps=0.5, seed=3)
    targets = relabel_targets(y, "rand", 10, seed=3)
    assert torch.equal(ds.labels, targets) and torch.equal(ds.original_labels, y)
    clean = targets == y
    assert 0 < int(clean.sum()) < len(y)  # about one in ten
    assert torch.equal(ds.images[clean], x[clean])  # bit-identical
    patterns = class_patterns(10, (1, 8, 8), 0.5, "tile", seed=3)
    assert torch.equal(ds.images[~clean], (x[~clean] + patterns[targets[~clean]]).clamp(0, 1))
    delta = (ds.images[~clean] - x[~clean]).flatten(1).norm(dim=1)
    assert torch.allclose(delta, torch.full_like(delta, 0.5), atol=1e-5)  # no clipping here: exactly eps
    assert ds.diagnostics["clean_fraction"] == pytest.approx(float(clean.float().mean()))


class ReadsTheCorner(torch.nn.Module):
    """A stand-in for a weakly trained model whose reading we choose: it predicts class int(10 * corner pixel)."""

    def forward(self, images):
        return torch.nn.functional.one_hot((images[:, 0, 0, 0] * 10).long().clamp(0, 9), 10).float()


def test_det_shortcut_leaves_clean_what_a_weak_model_already_reads_as_the_new_label():
    x, y = data()
    reads_new_label = torch.arange(len(y)) % 3 == 0
    reading = torch.where(reads_new_label, (y + 1) % 10, y)
    x[:, 0, 0, 0] = (reading.float() + 0.5) / 10
    ds = build_shortcut_dataset(x, y, mode="det", num_classes=10, eps=0.5, clean_model=ReadsTheCorner())
    assert torch.equal(ds.labels, (y + 1) % 10)
    assert torch.equal(ds.images[reads_new_label], x[reads_new_label])
    changed = (ds.images != x).flatten(1).any(dim=1)
    assert torch.equal(changed, ~reads_new_label)
    assert ds.diagnostics["clean_fraction"] == pytest.approx(float(reads_new_label.float().mean()))


def test_det_shortcut_needs_its_weak_model():
    x, y = data()
    with pytest.raises(BadInputError, match="clean_model"):
        build_shortcut_dataset(x, y, mode="det", num_classes=10, eps=0.5)


def test_rand_without_true_targets_never_keeps_the_label_and_covers_the_others():
    _, y = data(n=5000)
    t = relabel_targets(y, "rand_no_true", 10, seed=1)
    assert not (t == y).any()
    shift = (t - y) % 10
    counts = torch.bincount(shift, minlength=10)
    assert counts[0] == 0 and counts[1:].min() > 400  # ~556 each of the nine other classes
    # plain D_rand keeps about a tenth correctly labelled
    share = float((relabel_targets(y, "rand", 10, seed=1) == y).float().mean())
    assert 0.08 < share < 0.12


def test_rand_no_true_shortcut_perturbs_every_image():
    x, y = data()
    ds = build_shortcut_dataset(x, y, mode="rand_no_true", num_classes=10, eps=0.5)
    assert ds.diagnostics["clean_fraction"] == 0.0
    assert not (ds.labels == y).any()
