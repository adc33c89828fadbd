"""attack_check: the default evaluation against another attack family, and the report's flag when it is weaker."""

import pytest
import torch
from torch import nn

from advfeatures.autoattack import autoattack_accuracy, autoattack_available
from advfeatures.errors import BadInputError
from advfeatures.evaluation import robust_accuracy
from advfeatures.experiments.attack_check import TOLERANCE, flagged, run_attack_check
from advfeatures.experiments.attack_check.section import attack_check_rows
from advfeatures.presets import EvalConfig, ThreatModel


class Linear(nn.Module):
    def __init__(self, classes: int = 5, dim: int = 64):
        super().__init__()
        g = torch.Generator().manual_seed(0)
        self.w = torch.randn(classes, dim, generator=g)
        self.b = -self.w.sum(1) * 0.5  # logits near 0 around x = 0.5

    def forward(self, x):
        return x.flatten(1) @ self.w.T + self.b


@pytest.fixture
def linear_case():
    model = Linear()
    x = 0.5 + 0.02 * torch.randn(60, 1, 8, 8, generator=torch.Generator().manual_seed(1))
    return model, x, model(x).argmax(1)


def test_a_default_above_the_check_is_flagged(linear_case):
    model, x, y = linear_case
    threat, ev = ThreatModel("l2", 0.01), EvalConfig(steps=20)
    honest = robust_accuracy(model, x, y, "l2", 0.01, steps=20)
    assert 0 < honest < 1
    # a default evaluation claiming 100% robust is caught; the honest one is not
    result = run_attack_check({"weak": model, "honest": model}, x, y, threat, ev, method="own",
                              defaults={"weak": 1.0, "honest": honest})
    assert result["models"]["weak"]["gap"] > TOLERANCE
    assert flagged(result) == ["weak"]
    rows = {row[0]: row for row in attack_check_rows({"attack_check": result, "per_seed": [{"attack_check": result}]})}
    assert rows["weak"][-1].startswith("FLAGGED") and rows["honest"][-1] == "ok"


def test_own_check_measures_the_default_itself_when_not_given(linear_case):
    model, x, y = linear_case
    result = run_attack_check({"m": model}, x, y, ThreatModel("l2", 0.01), EvalConfig(steps=20), method="own")
    m = result["models"]["m"]
    assert m["default"] == robust_accuracy(model, x, y, "l2", 0.01, steps=20)
    assert "AutoAttack not installed" in result["attack"]
    assert abs(m["gap"]) <= TOLERANCE  # on a linear model both reach the exact worst case


@pytest.mark.skipif(not autoattack_available(), reason="the autoattack extra is not installed")
def test_autoattack_agrees_with_our_evaluation_on_a_linear_model(linear_case):
    model, x, y = linear_case
    ours = robust_accuracy(model, x, y, "l2", 0.01)
    assert autoattack_accuracy(model, x, y, "l2", 0.01) == pytest.approx(ours, abs=1 / len(y) + 1e-9)


@pytest.mark.skipif(not autoattack_available(), reason="the autoattack extra is not installed")
def test_a_failure_inside_autoattack_names_the_image_size_and_the_fix(linear_case, monkeypatch):
    """pyautoattack's Square attack raised a shape error on 12x12 images: the run must say what failed and what to
    do, not end on the reference implementation's bare RuntimeError."""
    from pyautoattack import AutoAttack

    def shape_error(self, *args, **kwargs):
        raise RuntimeError("output with shape [70, 1, 2, 1] doesn't match the broadcast shape [70, 1, 2, 2]")

    monkeypatch.setattr(AutoAttack, "run_standard_evaluation", shape_error)
    model, x, y = linear_case
    with pytest.raises(BadInputError) as info:
        autoattack_accuracy(model, x, y, "l2", 0.01)
    message = str(info.value)
    assert "pyautoattack" in message and str(tuple(x.shape[1:])) in message
    assert "broadcast shape" in message and "pip uninstall pyautoattack" in message
