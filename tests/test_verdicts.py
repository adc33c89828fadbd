"""One seed's verdicts: a claim on test-set accuracies whose number lies within two binomial standard errors of its
threshold is "undecided", not a coin toss called "holds" or "does not hold"; several seeds are decided on the means
(with the seed count) as before."""

from __future__ import annotations

import math

from advfeatures.experiments.figure2.section import claims
from advfeatures.experiments.followups.section import followup_claims
from advfeatures.experiments.verdicts import Undecided, above, below, both

D_NR = "D_NR generalises but is not robust"


def one_seed(clean: float, robust: float = 0.02, n: int | None = 1000) -> dict:
    entry = {"clean": clean, "robust": robust, **({"test_images": n} if n else {})}
    accuracy = {"D_NR": entry}
    return {"num_classes": 10, "accuracy": accuracy, "per_seed": [{"accuracy": accuracy}]}


def verdict(r: dict, claim: str) -> str:
    return next(row[1] for row in claims(r) if row[0] == claim)


def test_one_seed_within_two_binomial_errors_of_the_threshold_is_undecided():
    margin = 2 * math.sqrt(0.475 * 0.525 / 1000)  # 3.16 points
    text = verdict(one_seed(0.475), D_NR)  # cifar10_cpu's D_NR at 47.5%, the threshold 50%
    assert text.startswith("undecided") and f"{100 * margin:.1f} on 1000 test images" in text and "-2.5 points" in text
    assert verdict(one_seed(0.5 - margin - 0.001), D_NR) == "does not hold"
    assert verdict(one_seed(0.5 + 0.04), D_NR) == "holds"
    assert verdict(one_seed(0.475, n=10_000), D_NR) == "does not hold"  # a larger test set decides it
    assert verdict(one_seed(0.475, n=None), D_NR) == "does not hold"  # no size recorded: decided as it stands
    assert verdict(one_seed(0.60, robust=0.30), D_NR) == "does not hold"  # one part fails: no rescue by the other


def test_several_seeds_are_decided_on_the_means_with_their_count():
    seeds = [{"accuracy": {"D_NR": {"clean": c, "robust": 0.02, "test_images": 1000}}} for c in (0.46, 0.47, 0.49)]
    r = {"num_classes": 10, "accuracy": {"D_NR": {"clean": 0.44 + 0.03, "robust": 0.02, "test_images": 1000}},
         "per_seed": seeds}
    assert verdict(r, D_NR) == "does not hold"  # seeds agree: no count, and no undecided band on the means


def test_comparisons_of_two_accuracies_add_both_errors():
    r = one_seed(0.5)
    got = above(r, 0.33, 0.20 + 0.10, 1000, against=0.20)  # D_R robust 33% vs D 20% + 10 points
    assert isinstance(got, Undecided)  # 3 points against a margin of 3.9
    assert math.isclose(got.margin, 2 * math.sqrt((0.33 * 0.67 + 0.2 * 0.8) / 1000))
    assert above(r, 0.45, 0.30, 1000, against=0.20) is True
    assert below(r, 0.02, 0.1, 1000) is True  # far from the threshold
    assert below(r, 0.0, 0.0, 1000) is True  # no error at 0%: decided, not undecided
    assert both(True, got) is got and both(False, got) is False and both(True, True) is True


def test_followup_claims_on_the_test_set_get_the_band_too():
    claim = "Nakkiran: a model trained on D_det_bugs does not learn (X, Y)"

    def nakkiran(on_y: float, n: int | None) -> str:
        seed = {"followups": {"nakkiran": {"D_det_bugs": {"accuracy_on_Y": on_y, "accuracy_on_Y_plus_1": 0.5}}}}
        accuracy = {"D": {"clean": 0.7, "robust": 0.2, **({"test_images": n} if n else {})}}
        r = {"num_classes": 10, "accuracy": accuracy, **seed, "per_seed": [{"accuracy": accuracy, **seed}]}
        return next(row[1] for row in followup_claims(r) if row[0].startswith(claim))

    assert nakkiran(0.22, 1000).startswith("undecided")  # cifar10_cpu's 22.0% against "at most 20%"
    assert nakkiran(0.12, 1000) == "holds"
    assert nakkiran(0.30, 1000) == "does not hold"
    assert nakkiran(0.22, None) == "does not hold"
