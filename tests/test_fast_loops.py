"""The fast network and the GPU-minded loops, checked on the CPU.

What a GPU needs from the loops (issue: the whole paper on one GPU in minutes) is testable without one:
* no step of training, of an attack or of an inversion reads a device value on the host (each such read makes the
  host wait for the GPU): counted here as the aten ops that do it (`_local_scalar_dense` behind `.item()`,
  `int()`, `bool()`, and `nonzero` behind boolean indexing), which must not grow with the number of steps;
* early exit that compacts the batch only every k steps gives the same examples as compacting every step;
* the batched augmentation equals a per-image reference; batching constructions differently changes nothing;
* the robust-accuracy curve's carry-over equals attacking every radius, on a model whose answer is exact;
* the evaluation's float32 guard switches TF32 off on a CUDA device and restores it.
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch.utils._python_dispatch import TorchDispatchMode

from advfeatures.attacks import ClassificationObjective, default_compact_every, pgd_attack, projected_gradient
from advfeatures.construct import CHUNK, build_relabelled_dataset, build_robust_dataset
from advfeatures.device import exact_float32
from advfeatures.evaluation import predict, robust_accuracy_curve, robust_examples, worst_case_examples
from advfeatures.models import build_model, load_model, save_model
from advfeatures.models.fast import FastNet, PatchWhitening
from advfeatures.training import ModelSpec, TrainConfig, augment, train_model, train_new_model

HOST_READS = ("aten._local_scalar_dense", "aten.is_nonzero", "aten.nonzero", "aten.masked_select")
INDEXING = ("aten.index.", "aten.index_put")  # a host read when an index is a boolean mask (its size is data)


class HostReads(TorchDispatchMode):
    """Counts the ops that copy a device value to the host (a synchronisation on a GPU)."""

    def __init__(self):
        super().__init__()
        self.count = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        name = str(func)
        if name.startswith(HOST_READS):
            self.count += 1
        elif name.startswith(INDEXING) and len(args) > 1:
            masks = [i for i in args[1] if isinstance(i, torch.Tensor) and i.dtype == torch.bool]
            self.count += bool(masks)
        return func(*args, **(kwargs or {}))


def host_reads(fn) -> int:
    with HostReads() as mode:
        fn()
    return mode.count


def tiny_model(classes: int = 10):
    torch.manual_seed(0)
    return build_model("small_cnn", in_channels=1, num_classes=classes, image_size=8, width=4).eval()


# ---------------------------------------------------------------- the network


def test_fastnet_shapes_and_representation():
    model = build_model("fastnet", in_channels=3, num_classes=10, image_size=32, width=8)
    x = torch.rand(4, 3, 32, 32)
    assert model(x).shape == (4, 10)
    assert model.representation(x).shape == (4, 32)  # 4 * width: the pooled input of the last linear layer
    assert torch.allclose(model.head(model.representation(x)), model(x))


def test_whitening_makes_patch_covariance_the_identity():
    torch.manual_seed(0)
    # images with correlated channels and neighbouring pixels: a covariance far from the identity to undo
    images = F.avg_pool2d(torch.randn(400, 3, 10, 10), 2, stride=1) @ torch.eye(9) + torch.randn(400, 1, 9, 9)
    layer = PatchWhitening(3, 2, eps=0.0)
    layer.fit(images)
    filters = layer.weight[:12].view(12, 12)
    own = images.unfold(2, 2, 1).unfold(3, 2, 1).permute(0, 2, 3, 1, 4, 5).reshape(-1, 12)
    assert not torch.allclose(torch.cov(own.T.double()), torch.eye(12, dtype=torch.double), atol=0.1)
    white = (own - own.mean(0)) @ filters.T
    assert torch.allclose(torch.cov(white.T.double()), torch.eye(12, dtype=torch.double), atol=1e-3)
    assert torch.equal(layer.weight[12:], -layer.weight[:12])


def test_whitened_fastnet_is_fit_before_training_and_saved(tmp_path):
    x, y = torch.rand(64, 3, 16, 16), torch.randint(0, 10, (64,))
    model, _ = train_new_model(ModelSpec("fastnet", {"width": 4, "whiten": True}), x, y, 10,
                               TrainConfig(epochs=1, batch_size=32), progress=False)
    stem = model.body[0][0]
    assert isinstance(stem, PatchWhitening)
    assert not torch.equal(stem.weight[:12].view(12, 12), torch.eye(12))  # fitted, not the identity it starts as
    save_model(model, tmp_path / "m.safetensors")
    again = load_model(tmp_path / "m.safetensors")
    assert torch.equal(again.body[0][0].weight, stem.weight)
    assert torch.allclose(again(x[:4]), model(x[:4]), atol=1e-6)


def test_fastnet_rejects_a_bad_width():
    from advfeatures.errors import BadInputError

    with pytest.raises(BadInputError, match="width"):
        FastNet(3, 10, 32, width=0)


# ---------------------------------------------------------------- no host reads inside step loops


def test_the_counter_sees_host_reads():
    t = torch.arange(5.0)
    assert host_reads(lambda: t.sum().item()) == 1
    assert host_reads(lambda: t[t > 2]) >= 1  # boolean indexing: nonzero
    assert host_reads(lambda: bool(t.sum() > 0)) == 1
    assert host_reads(lambda: torch.where(t > 2, t, -t)) == 0


def test_attack_steps_read_nothing_on_the_host():
    model, x, y = tiny_model(), torch.rand(40, 1, 8, 8), torch.randint(0, 10, (40,))

    def attack(steps, **kw):
        return lambda: projected_gradient(ClassificationObjective(model, y), x, norm="l2", eps=1.0, steps=steps,
                                          step_size=0.2, **kw)

    for rule in ("fixed", "apgd"):
        assert host_reads(attack(5, step_rule=rule)) == host_reads(attack(25, step_rule=rule)), rule
    # early exit: host reads only at compactions (every `compact_every` steps), not per step
    few = host_reads(attack(20, step_rule="apgd", stop_score=0.0, compact_every=10))
    many = host_reads(attack(40, step_rule="apgd", stop_score=0.0, compact_every=10))
    assert many - few <= 2


def test_training_steps_read_nothing_on_the_host():
    def train(n):
        torch.manual_seed(0)
        model = build_model("small_cnn", in_channels=1, num_classes=10, image_size=8, width=4)
        x, y = torch.rand(n, 1, 8, 8), torch.randint(0, 10, (n,))
        config = TrainConfig(epochs=1, batch_size=8, crop_padding=1, flip=True)
        return lambda: train_model(model, x, y, config, progress=False)

    assert host_reads(train(16)) == host_reads(train(64))


def test_adversarial_training_steps_read_nothing_on_the_host():
    from advfeatures.training import AdversarialConfig

    def train(n):
        torch.manual_seed(0)
        model = build_model("small_cnn", in_channels=1, num_classes=10, image_size=8, width=4)
        x, y = torch.rand(n, 1, 8, 8), torch.randint(0, 10, (n,))
        config = TrainConfig(epochs=1, batch_size=8, adversarial=AdversarialConfig("l2", 1.0, steps=3))
        return lambda: train_model(model, x, y, config, progress=False)

    assert host_reads(train(16)) == host_reads(train(64))


# ---------------------------------------------------------------- same answers, other batching


def test_compacting_every_k_steps_finds_the_same_examples():
    model, x, y = tiny_model(), torch.rand(60, 1, 8, 8), torch.randint(0, 10, (60,))
    runs = [projected_gradient(ClassificationObjective(model, y), x, norm="l2", eps=1.5, steps=30, step_size=3.0,
                               step_rule="apgd", stop_score=0.0, compact_every=k) for k in (1, 7)]
    assert torch.allclose(runs[0].x, runs[1].x, atol=1e-5)
    assert torch.equal(runs[0].score > 0, runs[1].score > 0)


def test_compaction_defaults_to_every_step_on_a_cpu_only():
    assert default_compact_every(torch.device("cpu")) == 1
    assert default_compact_every(torch.device("cuda")) > 1  # a device object needs no GPU


def test_augmentation_equals_a_per_image_reference():
    torch.manual_seed(0)
    x = torch.rand(16, 3, 8, 8)
    config = TrainConfig(crop_padding=2, flip=True)
    got = augment(x, config, torch.Generator().manual_seed(5))
    # the reference draws the same offsets and flips, then crops and flips one image at a time
    g = torch.Generator().manual_seed(5)
    dy, dx = torch.randint(0, 5, (16,), generator=g), torch.randint(0, 5, (16,), generator=g)
    flip = torch.rand(16, generator=g) < 0.5
    padded = F.pad(x, (2, 2, 2, 2))
    for i in range(16):
        crop = padded[i, :, dy[i] : dy[i] + 8, dx[i] : dx[i] + 8]
        expected = crop.flip(2) if flip[i] else crop
        assert torch.equal(got[i], expected), i


def test_constructions_do_not_depend_on_the_batch_size():
    model = tiny_model()
    n = CHUNK + 100  # two chunks, the second partial
    torch.manual_seed(1)
    x, y = torch.rand(n, 1, 8, 8), torch.randint(0, 10, (n,))
    for build in (
        lambda b: build_robust_dataset(model, x, y, steps=3, step_size=0.1, batch_size=b, progress=False).images,
        lambda b: build_robust_dataset(model, x, y, steps=3, step_size=0.1, start="noise", batch_size=b,
                                       progress=False).images,
        lambda b: build_relabelled_dataset(model, x, y, mode="det", num_classes=10, eps=1.0, steps=3, step_size=0.2,
                                           batch_size=b, progress=False).images,
    ):
        small, large = build(128), build(4 * CHUNK)
        assert torch.allclose(small, large, atol=1e-5)


# ---------------------------------------------------------------- the curve's carry-over


class Linear(torch.nn.Module):
    """A linear classifier on flattened images: its exact L2 robust radius is the smallest margin over ||w_y - w_j||."""

    def __init__(self, d: int, classes: int):
        super().__init__()
        torch.manual_seed(3)
        self.layer = torch.nn.Linear(d, classes)

    def forward(self, x):
        return self.layer(x.flatten(1))

    def exact_radius(self, x, y):
        logits = self(x)
        w = self.layer.weight
        radius = torch.full((x.shape[0],), math.inf)
        for j in range(w.shape[0]):
            gap = logits.gather(1, y[:, None]).squeeze(1) - logits[:, j]
            dist = gap / (w[y] - w[j]).norm(dim=1).clamp_min(1e-12)
            radius = torch.where(y == j, radius, torch.minimum(radius, dist))
        return radius.clamp_min(0)


def test_curve_carry_over_equals_attacking_every_radius_and_the_exact_answer():
    torch.manual_seed(0)
    model = Linear(16, 4).eval()
    x = torch.rand(80, 1, 4, 4) * 0.2 + 0.4  # away from the box, so the L2 ball is the only constraint
    with torch.no_grad():
        y = model(x).argmax(1)
    radius = model.exact_radius(x, y).detach()
    radii = [float(r) for r in radius.quantile(torch.tensor([0.2, 0.5, 0.8]))]
    attack = dict(steps=50, targets=3)
    curve = robust_accuracy_curve(model, x, y, "l2", radii, **attack)
    each = {f"{e:g}": float(robust_examples(model, x, y, "l2", e, **attack).float().mean()) for e in radii}
    exact = {f"{e:g}": float((radius > e).float().mean()) for e in radii}
    assert curve == each
    for key in exact:
        assert abs(curve[key] - exact[key]) <= 1 / 80 + 1e-9, (key, curve[key], exact[key])


def test_curve_uses_known_points_and_never_increases():
    model, x, y = tiny_model(), torch.rand(50, 1, 8, 8), torch.randint(0, 10, (50,))
    known = torch.zeros(50, dtype=torch.bool)  # pretend: every point broken at 0.5
    curve = robust_accuracy_curve(model, x, y, "l2", [0.25, 0.5, 1.0], known={0.5: known}, steps=5, targets=1)
    assert curve["0.5"] == 0.0 and curve["1"] == 0.0  # carried forward, not re-attacked
    assert curve["0.25"] >= curve["0.5"]


# ---------------------------------------------------------------- a CUDA code path without a GPU


def test_evaluation_guard_turns_tf32_off_on_cuda_and_restores_it():
    saved = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    try:
        torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = True
        with exact_float32(torch.device("cuda")):
            assert not torch.backends.cudnn.allow_tf32 and not torch.backends.cuda.matmul.allow_tf32
        assert torch.backends.cudnn.allow_tf32 and torch.backends.cuda.matmul.allow_tf32
        with exact_float32(torch.device("cpu")):  # elsewhere: untouched
            assert torch.backends.cudnn.allow_tf32
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = saved


def test_pgd_in_channels_last_matches_nchw():
    model = tiny_model().to(memory_format=torch.channels_last)
    x, y = torch.rand(20, 1, 8, 8), torch.randint(0, 10, (20,))
    a = pgd_attack(model, x, y, eps=1.0, steps=5)
    b = pgd_attack(model, x.contiguous(memory_format=torch.channels_last), y, eps=1.0, steps=5)
    assert torch.allclose(a, b, atol=1e-5)


def test_cascade_with_fewer_targets_is_a_prefix_of_the_longer_one():
    # the measurement of how many APGD-T targets a preset needs (benchmarks/compare/apgd_targets.py) reads every
    # target count off one cascade: what it sees after run 1 + t must be the t-target cascade's own result
    torch.manual_seed(0)
    model = Linear(16, 4).eval()  # 4 classes: APGD-CE, then at most 3 targets
    x = torch.rand(80, 1, 4, 4) * 0.2 + 0.4
    with torch.no_grad():
        y = model(x).argmax(1)
        eps = float(model.exact_radius(x, y).median())  # half the points can be broken
    seen: list[tuple[int, torch.Tensor]] = []
    attack = dict(norm="l2", eps=eps, steps=3, seed=3)
    worst_case_examples(model, x, y, targets=3, after_run=lambda i, mask: seen.append((i, mask)), **attack)
    assert [i for i, _ in seen] == [0, 1, 2, 3]
    for earlier, later in zip(seen, seen[1:], strict=False):
        assert not (later[1] & ~earlier[1]).any()  # a broken point never comes back
    for t in (1, 2, 3):
        alone = predict(model, worst_case_examples(model, x, y, targets=t, **attack)) == y
        assert torch.equal(alone, seen[t][1]), t
    assert seen[1][1].sum() < seen[0][1].sum()  # the targets broke points APGD-CE left: the check is not vacuous
