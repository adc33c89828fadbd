"""The report's follow-up section: the Distill discussion's experiments (stages.py), their tables, the responders'
own CIFAR-10 figures beside ours, and each response's claim checked on this data. It reads results only.

Thresholds are the report's usual ones, fixed before any run: "far above chance" is more than 2x chance (as for
D_rand / D_det), "near chance" at most 5 points above it, a gap "far" when it is 20 points or a factor of 2.
"""

from __future__ import annotations

import torch

from ...document import Block, Table, Text
from ..verdicts import above, below, both, test_set_size, verdict_text, with_seed_counts

# the responders' CIFAR-10 figures (Distill 2019), printed beside ours
NAKKIRAN = {"D_det_bugs": {"transfer_rate": 1.7, "accuracy_on_Y": 2.8, "accuracy_on_Y_plus_1": 70.8},
            "D_det": {"transfer_rate": 82.5, "accuracy_on_Y": 33.2, "accuracy_on_Y_plus_1": 27.3}}
GOH = {"leakage_D_rand": 23.5, "leakage_D_det": 6.81}
WALLACE = {"teacher_train_accuracy": 62.5, "student_test_accuracy": 49.7}


def _values(r: dict, *path: str) -> list[float]:
    """The value at `path` under "followups" for every seed (one value for a one-seed result)."""
    seeds = r.get("per_seed") or [r]
    out = []
    for s in seeds:
        v = s.get("followups", {})
        for key in path:
            v = v.get(key, {}) if isinstance(v, dict) else {}
        if isinstance(v, (int, float)) and not isinstance(v, bool):
            out.append(float(v))
    return out


def _pct(r: dict, *path: str) -> str:
    v = _values(r, *path)
    if not v:
        return "-"
    t = torch.tensor(v, dtype=torch.float64)
    spread = f" ± {100 * float(t.std(unbiased=False)):.1f}" if len(v) > 1 else ""
    return f"{100 * float(t.mean()):.1f}{spread}"


def _mean(r: dict, *path: str) -> float | None:
    v = _values(r, *path)
    return sum(v) / len(v) if v else None


DISTILL = ("The follow-ups: experiments from the Distill discussion of the paper (Distill 2019, "
           "https://distill.pub/2019/advex-bugs-discussion/), run on the same data and models.")


def blocks(r: dict, figures=None) -> list[Block]:
    found = tables(r)
    return [Text(DISTILL), *found] if found else []


def tables(r: dict) -> list[Table]:
    """One table per follow-up present in the results, then the follow-ups' claims checked."""
    f = r.get("followups")
    if not f:
        return []
    sections = []
    n = f.get("nakkiran", {})
    if "D_det_bugs" in n:
        rows = []
        for name, what in (("D_det", "plain targeted PGD (the paper's D_det)"),
                           ("D_det_bugs", f"ensemble attack: f fooled toward y+1 while {n.get('ensemble', 0):g} "
                                          "other models keep y")):
            theirs = NAKKIRAN[name]
            rows.append([name, what, _pct(r, "nakkiran", name, "attack_success"),
                         _pct(r, "nakkiran", name, "transfer_rate"),
                         _pct(r, "nakkiran", name, "accuracy_on_Y"), _pct(r, "nakkiran", name, "accuracy_on_Y_plus_1"),
                         f"{theirs['transfer_rate']} / {theirs['accuracy_on_Y']} / {theirs['accuracy_on_Y_plus_1']}"])
        header = ["set", "built by", "attack success on f", "targeted transfer to a fresh model",
                  "trained model on (X, Y)", "on (X, Y+1)", "his CIFAR-10: transfer / (X, Y) / (X, Y+1)"]
        audits = {"D_det": r.get("audit", {}).get("D_det"), "D_det_bugs": n["D_det_bugs"].get("audit")}
        if all(audits.values()):  # synthetic: which planted features each set's images carry
            header.append("planted features: non-robust of the label / robust of the original")
            for row, name in zip(rows, ("D_det", "D_det_bugs"), strict=True):
                a = audits[name]
                row.append(f"{100 * a.get('nonrobust_agrees_label', 0):.1f} / "
                           f"{100 * a.get('robust_agrees_original', 0):.1f}")
        sections.append(Table(
            f"Follow-up: Nakkiran, adversarial examples that are just bugs (L2 eps {n.get('eps', 0):g})", header, rows))
    sq = n.get("squares", {})
    if sq:
        rows = [["network fit to the noisy labels (small_cnn)", _pct(r, "nakkiran", "squares",
                                                                     "network_train_accuracy_noisy_labels"),
                 _pct(r, "nakkiran", "squares", "network_clean"), _pct(r, "nakkiran", "squares", "network_robust")],
                ["linear rule: mean pixel above 1/2 (exact robust accuracy)", "-",
                 _pct(r, "nakkiran", "squares", "linear_rule_clean"),
                 _pct(r, "nakkiran", "squares", "linear_rule_robust")]]
        sections.append(Table(
            f"Follow-up: Nakkiran's adversarial squares ({sq.get('train_images', 0):g} images, "
            f"{100 * sq.get('label_noise', 0):g}% label noise, L2 eps {sq.get('eps', 0):g})",
            ["classifier", "train accuracy (noisy labels)", "test clean", "test robust"], rows))
    g = f.get("goh", {})
    if g:
        rows = [
            ["robust linear model: test accuracy / predictions certified / certified and correct",
             f"{_pct(r, 'goh', 'robust_linear', 'clean_accuracy')} / {_pct(r, 'goh', 'robust_linear', 'certified')}"
             f" / {_pct(r, 'goh', 'robust_linear', 'certified_accuracy')}", "spec. 2: certified >= 80%"],
            ["linear probe on its robust features, trained on D (real labels)", _pct(r, "goh", "leakage_D",
                                                                                     "test_accuracy"), "-"],
            ["... trained on D_rand: leakage", _pct(r, "goh", "leakage_D_rand", "test_accuracy"),
             f"{GOH['leakage_D_rand']}"],
            ["... trained on D_det: leakage", _pct(r, "goh", "leakage_D_det", "test_accuracy"),
             f"{GOH['leakage_D_det']}"],
            ["for comparison: a network trained on D_rand / D_det / D_det_unleaked",
             f"{_pct(r, 'goh', 'D_rand_accuracy')} / {_pct(r, 'goh', 'D_det_accuracy')} / "
             f"{_pct(r, 'goh', 'D_det_unleaked_accuracy')}", _paper_relabelled(r)],
        ]
        sections.append(Table(f"Follow-up: Goh, robust-feature leakage (robust linear model at "
                         f"{g.get('norm', 'l2').upper()} eps {g.get('eps', 0):g}; test accuracy, %)",
                         ["measure", "ours", "his CIFAR-10"], rows))
    w = f.get("wallace", {})
    if w:
        rows = [["weak teacher (standard training on D, "
                 f"{w.get('teacher_epochs', 0):g} epoch{'s' if w.get('teacher_epochs') != 1 else ''})",
                 f"train {_pct(r, 'wallace', 'teacher_train_accuracy')} / test "
                 f"{_pct(r, 'wallace', 'teacher_test_accuracy')}", f"train {WALLACE['teacher_train_accuracy']}"],
                ["kept: training images the teacher gets wrong, with its wrong labels",
                 f"{_mean(r, 'wallace', 'kept_images') or 0:.0f} of {w.get('train_images', 0):g}", "-"]]
        if "student_test_accuracy" in w:
            rows.append(["student trained only on those: test accuracy / agreement with the teacher",
                         f"{_pct(r, 'wallace', 'student_test_accuracy')} / "
                         f"{_pct(r, 'wallace', 'student_agrees_with_teacher')}",
                         f"{WALLACE['student_test_accuracy']}"])
        else:
            rows.append(["student", w.get("skipped", "skipped"), "-"])
        sections.append(Table("Follow-up: Wallace, learning from incorrectly labelled data (%)",
                         ["step", "ours", "his CIFAR-10"], rows))
    claims = followup_claims(r)
    if claims:
        sections.append(Table("The follow-ups' claims, checked on this data", ["claim", "verdict", "evidence"], claims))
    return sections


def _paper_relabelled(r: dict) -> str:
    """The paper's D_rand / D_det accuracies as the preset records them (settings.paper)."""
    paper = r.get("settings", {}).get("paper", {})
    values = [paper.get(n, {}).get("clean") for n in ("D_rand", "D_det")]
    if None in values:
        return "-"
    return " / ".join(f"{100 * v:.1f}" for v in values) + " (the paper's D_rand / D_det)"


def followup_claims(r: dict) -> list[list[str]]:
    """Each follow-up's claim checked on the seeds' means, with the seed count where seeds disagree (verdicts.py)."""
    return with_seed_counts(_claims, r)


def _claims(r: dict) -> list[list[str]]:
    chance = 1.0 / r.get("num_classes", 10)
    n = test_set_size(r)  # the accuracies below on the real test set: "undecided" within its error on one seed
    out = []

    def check(claim: str, ok, evidence: str) -> None:
        out.append([claim, verdict_text(ok), evidence])

    def pct(v: float) -> str:
        return f"{100 * v:.1f}%"

    bugs_hit, bugs_transfer = _mean(r, "nakkiran", "D_det_bugs", "attack_success"), _mean(
        r, "nakkiran", "D_det_bugs", "transfer_rate")
    det_transfer = _mean(r, "nakkiran", "D_det", "transfer_rate")
    if None not in (bugs_hit, bugs_transfer, det_transfer):
        check("Nakkiran: adversarial examples that do not transfer exist (D_det_bugs fools f, transfers at most half "
              "as often as D_det)", bugs_hit >= 0.5 and bugs_transfer <= det_transfer / 2,
              f"attack success {pct(bugs_hit)}; targeted transfer {pct(bugs_transfer)} vs D_det {pct(det_transfer)}")
    on_y, on_y1 = _mean(r, "nakkiran", "D_det_bugs", "accuracy_on_Y"), _mean(
        r, "nakkiran", "D_det_bugs", "accuracy_on_Y_plus_1")
    if None not in (on_y, on_y1):
        check("Nakkiran: a model trained on D_det_bugs does not learn (X, Y) (not above 2x chance) and predicts Y+1 "
              "instead", both(below(r, on_y, 2 * chance, n), on_y1 > on_y),
              f"(X, Y) {pct(on_y)}, (X, Y+1) {pct(on_y1)}; chance {pct(chance)}")
    net, rule = _mean(r, "nakkiran", "squares", "network_robust"), _mean(r, "nakkiran", "squares",
                                                                         "linear_rule_robust")
    if None not in (net, rule):
        check("Nakkiran's squares: a network that fits noisy labels is non-robust though a robust linear rule exists "
              "(20 points below it)", net <= rule - 0.2, f"network robust {pct(net)} vs linear rule {pct(rule)}")
    leak_rand, leak_det = _mean(r, "goh", "leakage_D_rand", "test_accuracy"), _mean(
        r, "goh", "leakage_D_det", "test_accuracy")
    if leak_rand is not None:
        check("Goh: robust features leak into D_rand (linear probe more than 5 points above chance)",
              above(r, leak_rand, chance + 0.05, n), f"{pct(leak_rand)} (chance {pct(chance)}; his 23.5%)")
    if leak_det is not None:
        check("Goh: little robust-feature leakage in D_det (linear probe at most 5 points above chance)",
              below(r, leak_det, chance + 0.05, n), f"{pct(leak_det)} (chance {pct(chance)}; his 6.81%)")
    certified = _mean(r, "goh", "robust_linear", "certified")
    if certified is not None:
        check("Goh: the robust linear features meet his specification 2 (>= 80% of test predictions certified)",
              above(r, certified, 0.8, n), f"{pct(certified)} certified at eps {r['followups']['goh'].get('eps', 0):g}")
    student = _mean(r, "wallace", "student_test_accuracy")
    if student is not None:
        check("Wallace: a model trained only on a weak teacher's wrong labels generalises (far above chance)",
              above(r, student, 2 * chance, n),
              f"{pct(student)} on the real test set (chance {pct(chance)}; his 49.7%)")
    return out
