"""The PGD engine must be a real attack: known answers, monotone in effort, inside the ball and the box; and the
APGD evaluation built on it must find the exact worst case where it is known and beat the fixed-step PGD it
replaced."""

import math

import pytest
import torch
from torch import nn

from advfeatures.attacks import (
    ClassificationObjective,
    apgd_checkpoints,
    default_step_size,
    dlr_loss,
    flat_norm,
    invert_representation,
    margin,
    pgd_attack,
    project,
    projected_gradient,
    random_in_ball,
    targeted_dlr_loss,
)
from advfeatures.errors import BadInputError
from advfeatures.evaluation import clean_accuracy, robust_accuracy, worst_case_examples
from advfeatures.models import build_model
from advfeatures.training import TrainConfig, train_model


class Linear(nn.Module):
    """A two-class linear classifier with logits (w.x + b, -(w.x + b)) on 1x4x4 images."""

    def __init__(self, w, b):
        super().__init__()
        self.w, self.b = w, b

    def forward(self, x):
        s = x.flatten(1) @ self.w + self.b
        return torch.stack([s, -s], 1)


@pytest.fixture(scope="module")
def digits_model():
    from advfeatures import load_dataset

    train, test = load_dataset("digits", "train"), load_dataset("digits", "test")
    torch.manual_seed(0)
    model = build_model("small_cnn", in_channels=1, num_classes=10, image_size=8, width=16)
    train_model(model, train.images, train.labels, TrainConfig(epochs=8, lr=0.05, schedule="onecycle"),
                progress=False)
    return model, test.images[:200], test.labels[:200]


def test_l2_attack_reaches_closed_form_distance_on_linear_classifier():
    torch.manual_seed(1)
    w = torch.randn(16) * 0.5
    b = torch.tensor(0.0)
    x = (0.5 + 0.05 * torch.randn(64, 1, 4, 4)).clamp(0, 1)
    s = x.flatten(1) @ w + b
    labels = torch.where(s > 0, 0, 1)
    distance = s.abs() / w.norm()  # minimal L2 distance to the decision boundary (box not active here)
    model = Linear(w, b)
    eps = float(distance.median())
    adv = pgd_attack(model, x, labels, norm="l2", eps=eps * 1.01, steps=40)
    fooled = model(adv).argmax(1) != labels
    # exactly the examples whose boundary lies within eps are fooled
    assert torch.equal(fooled, distance < eps * 1.01)
    below = pgd_attack(model, x, labels, norm="l2", eps=eps * 0.99, steps=40)
    assert torch.equal(model(below).argmax(1) != labels, distance < eps * 0.99)


def test_linf_attack_reaches_closed_form_distance_on_linear_classifier():
    torch.manual_seed(2)
    w = torch.randn(16)
    x = (0.5 + 0.02 * torch.randn(32, 1, 4, 4)).clamp(0, 1)
    s = x.flatten(1) @ w
    labels = torch.where(s > 0, 0, 1)
    distance = s.abs() / w.abs().sum()  # Linf distance to a hyperplane: |s| / ||w||_1
    eps = float(distance.median())
    adv = pgd_attack(Linear(w, 0.0), x, labels, norm="linf", eps=eps * 1.02, steps=20)
    assert torch.equal(Linear(w, 0.0)(adv).argmax(1) != labels, distance < eps * 1.02)


@pytest.mark.parametrize("norm", ["l2", "linf"])
def test_outputs_stay_in_ball_and_box(digits_model, norm):
    model, x, y = digits_model
    eps = 1.0 if norm == "l2" else 0.1
    for random_start in (False, True):
        adv = pgd_attack(model, x, y, norm=norm, eps=eps, steps=10, step_size=eps, random_start=random_start)
        assert adv.min() >= 0 and adv.max() <= 1
        assert (flat_norm(adv - x, norm) <= eps * (1 + 1e-5)).all()
    worst = worst_case_examples(model, x, y, norm=norm, eps=eps, steps=5)
    assert worst.min() >= 0 and worst.max() <= 1
    assert (flat_norm(worst - x, norm) <= eps * (1 + 1e-5)).all()


def test_standard_model_driven_to_zero_at_large_eps(digits_model):
    model, x, y = digits_model
    assert clean_accuracy(model, x, y) > 0.85
    assert robust_accuracy(model, x, y, "l2", 3.0, steps=20, targets=0) <= 0.02
    assert robust_accuracy(model, x, y, "linf", 0.3, steps=20, targets=0) <= 0.02


def test_more_fixed_steps_and_restarts_never_raise_robust_accuracy(digits_model):
    model, x, y = digits_model
    eps, step = 0.6, 0.1  # fixed step size: more steps extend the same trajectory

    def fixed(steps, restarts):
        adv = pgd_attack(model, x, y, norm="l2", eps=eps, steps=steps, step_size=step, restarts=restarts)
        return clean_accuracy(model, adv, y)

    accs = [fixed(s, 1) for s in (1, 3, 10, 30)]
    assert all(a >= b for a, b in zip(accs, accs[1:], strict=False)), accs
    by_restarts = [fixed(5, r) for r in (1, 2, 4)]
    assert all(a >= b for a, b in zip(by_restarts, by_restarts[1:], strict=False)), by_restarts
    assert accs[0] > accs[-1]  # the attack actually does something


def test_more_steps_restarts_or_targets_never_raise_the_evaluation(digits_model):
    model, x, y = digits_model
    eps = 0.6
    by_steps = [robust_accuracy(model, x, y, "l2", eps, steps=s, targets=2) for s in (2, 10, 50)]
    assert all(a >= b for a, b in zip(by_steps, by_steps[1:], strict=False)), by_steps
    assert by_steps[0] > by_steps[-1]
    by_restarts = [robust_accuracy(model, x, y, "l2", eps, steps=10, restarts=r, targets=0) for r in (1, 2, 4)]
    assert all(a >= b for a, b in zip(by_restarts, by_restarts[1:], strict=False)), by_restarts
    by_targets = [robust_accuracy(model, x, y, "l2", eps, steps=10, targets=k) for k in (0, 1, 3, 9)]
    assert all(a >= b for a, b in zip(by_targets, by_targets[1:], strict=False)), by_targets


class MultiLinear(nn.Module):
    """Logits W x + b: the exact minimal distance to class j's region is (z_y - z_j) / ||w_y - w_j||_dual."""

    def __init__(self, w, b):
        super().__init__()
        self.w, self.b = w, b

    def forward(self, x):
        return x.flatten(1) @ self.w.T + self.b


@pytest.mark.parametrize("norm", ["l2", "linf"])
def test_evaluation_finds_the_exact_worst_case_of_a_linear_model(norm):
    torch.manual_seed(3)
    classes, dim = 6, 16
    w = torch.randn(classes, dim)
    model = MultiLinear(w, -w.sum(1) * 0.5 + 0.05 * torch.randn(classes))  # logits near 0 around x = 0.5
    x = 0.5 + 0.02 * torch.randn(300, 1, 4, 4)
    z = model(x)
    y = z.argmax(1)
    dual = {"l2": 2, "linf": 1}[norm]
    gaps = z.gather(1, y[:, None]) - z  # (n, classes), 0 at y
    widths = (model.w[y][:, None, :] - model.w[None]).norm(p=dual, dim=2)
    distance = (gaps / widths).masked_fill(torch.nn.functional.one_hot(y, classes).bool(), math.inf).amin(1)
    for q in (0.25, 0.5, 0.75):
        eps = float(distance.quantile(q))
        assert x.min() - eps > 0 and x.max() + eps < 1  # every coordinate of the ball stays inside the box
        exact = float((distance > eps).float().mean())
        assert robust_accuracy(model, x, y, norm, eps) == pytest.approx(exact, abs=1e-6)


def test_apgd_checkpoints_follow_the_paper():
    # Croce & Hein (2020): p_0 = 0, p_1 = 0.22, p_{j+1} = p_j + max(p_j - p_{j-1} - 0.03, 0.06)
    assert sorted(apgd_checkpoints(100)) == [22, 41, 57, 70, 80, 87, 93, 99]
    assert apgd_checkpoints(0) == set()


def test_adaptive_step_halves_where_a_fixed_step_oscillates():
    """Ascend -||x - c||^2 from far away with a step 10x too large: fixed steps overshoot c forever; APGD halves
    the step at its checkpoints and settles on c."""
    torch.manual_seed(4)
    center = torch.full((8, 1, 4, 4), 0.5)
    c = (center + 0.05 * torch.randn_like(center)).clamp(0, 1)

    def objective(z, index):
        loss = -((z - c[index]) ** 2).flatten(1).sum(1)
        return loss, loss

    runs = {rule: projected_gradient(objective, center, norm="l2", eps=1.0, steps=100, step_size=0.5, step_rule=rule)
            for rule in ("fixed", "apgd")}
    distance = {rule: flat_norm(r.x - c) for rule, r in runs.items()}
    assert (distance["apgd"] < 0.01).all(), distance["apgd"]
    assert (distance["fixed"] > 0.1).all(), distance["fixed"]


def test_dlr_losses_are_scale_and_shift_invariant_and_signed():
    torch.manual_seed(5)
    logits, y = torch.randn(50, 10), torch.randint(0, 10, (50,))
    t = (y + 1) % 10
    for f in (lambda z: dlr_loss(z, y), lambda z: targeted_dlr_loss(z, y, t)):
        assert torch.allclose(f(logits), f(3.0 * logits + 7.0), atol=1e-5)
    assert torch.equal(dlr_loss(logits, y) > 0, margin(logits, y) > 0)
    beats = logits.gather(1, t[:, None]).squeeze(1) > logits.gather(1, y[:, None]).squeeze(1)
    assert torch.equal(targeted_dlr_loss(logits, y, t) > 0, beats)
    with pytest.raises(BadInputError, match="guide"):
        ClassificationObjective(nn.Identity(), y, loss="dlr_targeted")


def test_evaluation_is_at_least_as_strong_as_the_fixed_step_pgd_it_replaced(digits_model):
    """The former default: 100 fixed steps of 2.5 eps / 100, 5 runs alternating CE and margin, worst case kept."""
    model, x, y = digits_model
    eps = 0.5
    best_x, best = x.clone(), torch.full((len(y),), -math.inf)
    generator = torch.Generator().manual_seed(0)
    for run in range(5):
        objective = ClassificationObjective(model, y, loss="margin" if run % 2 else "ce")
        r = projected_gradient(objective, x, norm="l2", eps=eps, steps=100, step_size=default_step_size(eps, 100),
                               random_start=run > 0, generator=generator)
        better = r.score > best
        best_x[better], best[better] = r.x[better], r.score[better]
    old = clean_accuracy(model, best_x, y)
    new = robust_accuracy(model, x, y, "l2", eps)
    assert 0.05 < old < clean_accuracy(model, x, y)  # eps where the old attack neither fails nor saturates
    assert new <= old, (new, old)


def test_targeted_attack_hits_its_target(digits_model):
    model, x, y = digits_model
    targets = (y + 1) % 10
    adv = pgd_attack(model, x, targets, norm="l2", eps=3.0, steps=50, step_size=0.2, targeted=True)
    assert (model(adv).argmax(1) == targets).float().mean() > 0.95
    early = pgd_attack(model, x, targets, norm="l2", eps=3.0, steps=50, step_size=0.2, targeted=True, early_stop=True)
    hit = model(early).argmax(1) == targets
    assert hit.float().mean() > 0.95
    # early exit stops as soon as the target is reached, so it moves no further than the full attack
    assert flat_norm(early - x)[hit].mean() <= flat_norm(adv - x)[hit].mean() + 1e-6


def test_margin_is_positive_exactly_when_misclassified():
    logits = torch.tensor([[2.0, 1.0, 0.0], [0.0, 3.0, 1.0]])
    m = margin(logits, torch.tensor([0, 0]))
    assert m[0] == -1.0 and m[1] == 3.0


def test_projection_and_random_start():
    d = torch.randn(100, 1, 8, 8) * 3
    p = project(d, "l2", 1.0)  # every row of d is far outside the unit ball: projection lands on its surface
    assert torch.allclose(flat_norm(p), torch.ones(100), atol=1e-5)
    assert torch.allclose(p / flat_norm(p).view(-1, 1, 1, 1), d / flat_norm(d).view(-1, 1, 1, 1), atol=1e-5)
    inside = d / flat_norm(d).view(-1, 1, 1, 1) * 0.5
    assert torch.equal(project(inside, "l2", 1.0), inside)
    assert project(d, "linf", 0.1).abs().max() <= 0.1
    assert project(d, "l2", math.inf) is d
    r = random_in_ball(d, "l2", 0.5, torch.Generator().manual_seed(0))
    assert (flat_norm(r) <= 0.5 + 1e-6).all() and flat_norm(r).mean() > 0.4  # uniform in the ball: mostly near surface
    with pytest.raises(BadInputError):
        pgd_attack(nn.Identity(), d.clamp(0, 1), torch.zeros(100, dtype=torch.long), norm="l3", eps=1.0)


def test_inversion_matches_representation(digits_model):
    model, x, _ = digits_model
    start = x.roll(1, 0)
    target = model.representation(x).detach()
    before = (model.representation(start) - target).norm(dim=1) / target.norm(dim=1)
    z = invert_representation(model, x, start, steps=100, step_size=0.05)
    after = (model.representation(z) - target).norm(dim=1) / target.norm(dim=1)
    assert z.min() >= 0 and z.max() <= 1
    assert after.mean() < 0.5 * before.mean()
