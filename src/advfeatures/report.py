"""results.md, figures/*.png and a self-contained report.html, from the results dicts alone.

The report is one list of blocks (document.py) built once: per preset, each experiment's section
(experiments/<name>/section.py) in the order of SECTIONS, then Section 4; it is rendered to Markdown and to HTML.
It reads results (and the run folder's files), never a stage, so it can be rebuilt from a finished run folder:

    from advfeatures.report import write_report
    write_report(out, {name: json.load(open(out / name / "results.json")) for name in presets}, theory)
"""

from __future__ import annotations

from pathlib import Path

from .document import Block, Figures, Heading, Text, render_html, render_markdown
from .experiments.attack_check import section as attack_check
from .experiments.controls import section as controls
from .experiments.figure2 import section as figure2
from .experiments.followups import section as followups
from .experiments.robust_source import section as robust_source
from .experiments.sources import section as sources
from .experiments.theory import section as theory_section
from .experiments.transfer import section as transfer
from .io import write_text_atomic

TITLE = "advfeatures: reproduction report"
SECTIONS = (sources.blocks, figure2.blocks, controls.blocks, attack_check.blocks, transfer.blocks,
            robust_source.blocks, followups.blocks)  # each: (results, Figures) -> blocks
INTRO = ("Accuracies are on each data set's original test set, in percent. Paper numbers: CIFAR-10, ResNet-50, from "
         "Ilyas et al., \"Adversarial Examples Are Not Bugs, They Are Features\" (NeurIPS 2019, "
         "https://arxiv.org/abs/1905.02175); ours are on much smaller data, so compare the pattern, not the values. "
         "What each stage does and how robust accuracy is measured: the repository's README.md; measured runs, "
         "their settings and caveats: benchmarks/RESULTS.md.")


def report_blocks(out: Path, all_results: dict[str, dict], theory: dict | None,
                  pending: list[str] | tuple[str, ...] = (), made: dict[str, tuple[dict, list[Block]]] | None = None
                  ) -> list[Block]:
    """The report's blocks. `made` ({preset: (its results, its blocks)}, filled here) lets a report rewritten while
    a run goes on reuse a finished preset's blocks and figures instead of drawing them again."""
    blocks: list[Block] = [Heading(TITLE, 1), Text(INTRO)]
    if pending:
        blocks.append(Text(f"Partial report: {', '.join(pending)} still running; this file is rewritten when "
                           "each preset finishes."))
    for name, r in all_results.items():
        if made is not None and name in made and made[name][0] is r:
            blocks += made[name][1]
            continue
        section_blocks = preset_blocks(out, name, r)
        if made is not None:
            made[name] = (r, section_blocks)
        blocks += section_blocks
    if theory:
        blocks += theory_section.blocks(theory, out)
    return blocks


def run_summary(r: dict) -> str:
    """A preset's first line: threat model, seeds, the time its stages took, and where it ran. The stages' seconds
    are added up, so with several worker processes (or a resumed run) they are not the wall time: it says so."""
    tm, m = r["threat_model"], r.get("machine") or {}
    where = (f" Ran on {m['device']} ({m['cpu_cores']} CPU cores), torch {m['torch']}, code {m['commit'][:12]}."
             if m else "")
    workers = m.get("worker_processes", 1)
    spent = f"stage time {r['seconds']['total']:.0f}s"
    if workers > 1:
        spent += f", summed over stages run side by side on {workers} worker processes (the wall time is shorter)"
    return (f"Threat model: {tm['norm'].upper()} eps {tm['eps']:g}; seeds: {len(r['seeds'])}; {spent}.{where}"
            + mixed_provenance(r))


def mixed_provenance(r: dict) -> str:
    """A warning when the stages behind these numbers were computed under more than one configuration (a run
    resumed on other code, another machine or another thread count: each can change a seed's numbers)."""
    configs = r.get("computed_under") or []
    if len(configs) < 2:
        return ""
    parts = [f"code {c.get('commit', 'unknown')[:12]}, {c.get('device', 'unknown device')}, torch "
             f"{c.get('torch', '?')}, {c.get('threads', '?')} thread(s): {len(c['stages'])} stage(s) "
             f"({', '.join(c['stages'][:4])}{', ...' if len(c['stages']) > 4 else ''})" for c in configs]
    return (f" Mixed provenance: this run's stages were computed under {len(configs)} configurations (a resumed "
            f"run; each can change a seed's numbers; results.json \"computed_under\" lists them): "
            + "; ".join(parts) + ".")


def preset_blocks(out: Path, name: str, r: dict) -> list[Block]:
    """One preset's part of the report (its figures written under out/figures)."""
    blocks: list[Block] = [Heading(name, 2), Text(run_summary(r))]
    figures = Figures(out, name)
    for section in SECTIONS:
        blocks += section(r, figures)
    return blocks


def write_report(out: Path, all_results: dict[str, dict], theory: dict | None,
                 pending: list[str] | tuple[str, ...] = (), made: dict | None = None) -> None:
    """results.md and report.html from the presets' results; `pending` names presets still running (a partial
    report, written as soon as the first preset finishes); `made` as in report_blocks."""
    blocks = report_blocks(out, all_results, theory, pending, made)
    write_text_atomic(out / "results.md", render_markdown(blocks))
    write_text_atomic(out / "report.html", render_html(blocks, TITLE))
