"""The report as a document: blocks built once from the numbers, rendered to Markdown and to HTML.

Each experiment's report section (experiments/<name>/section.py) turns a preset's results into a list of blocks;
report.py puts them together and writes results.md and report.html from the same list, so the two never
disagree. A block is a heading, a paragraph, a titled table, or a figure (a PNG written under the run folder).
"""

from __future__ import annotations

import base64
import html
import math
import re
from dataclasses import dataclass, field
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from .io import atomic_path  # noqa: E402


@dataclass(frozen=True)
class Heading:
    text: str
    level: int = 2


@dataclass(frozen=True)
class Text:
    text: str


@dataclass(frozen=True)
class Table:
    """A titled table; `note` (optional) says what to look for in it."""

    title: str
    header: list[str]
    rows: list[list[str]]
    note: str = ""


@dataclass(frozen=True)
class Figure:
    path: Path  # the PNG on disk (embedded in report.html)
    link: str  # its path relative to the run folder (linked from results.md)


Block = Heading | Text | Table | Figure


@dataclass
class Figures:
    """Where a section writes its figures: `out`/figures/<preset>_<name>.png, linked relative to `out`."""

    out: Path
    preset: str
    made: list[Figure] = field(default_factory=list)

    def path(self, name: str) -> Path:
        folder = self.out / "figures"
        folder.mkdir(parents=True, exist_ok=True)
        return folder / f"{self.preset}_{name}.png"

    def save(self, fig, name: str) -> Figure:
        """Write a matplotlib figure atomically and close it; returns its block."""
        path = self.path(name)
        with atomic_path(path) as tmp:
            fig.savefig(tmp, format="png", dpi=110, bbox_inches="tight")
        plt.close(fig)
        return Figure(path, f"figures/{path.name}")


def pct(v) -> str:
    """A fraction as a percentage with one decimal; "-" for a missing number."""
    return "-" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{100 * v:.1f}"


# ---------------------------------------------------------------- Markdown


def markdown_table(header: list[str], rows: list[list[str]]) -> str:
    if not rows:
        return "_none_\n"
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def render_markdown(blocks: list[Block]) -> str:
    out = []
    for b in blocks:
        if isinstance(b, Heading):
            out.append(f"{'#' * b.level} {b.text}\n")
        elif isinstance(b, Text):
            out.append(b.text + "\n")
        elif isinstance(b, Table):
            out += [f"### {b.title}\n"] + ([b.note + "\n"] if b.note else []) + [markdown_table(b.header, b.rows)]
        elif isinstance(b, Figure):
            out.append(f"![{b.path.stem}]({b.link})\n")
    return "\n".join(out)


# ---------------------------------------------------------------- HTML

STYLE = ("body{font-family:sans-serif;max-width:1100px;margin:auto;padding:1em}table{border-collapse:collapse;"
         "margin:.5em 0}td,th{border:1px solid #ccc;padding:3px 8px;font-size:13px}img{max-width:100%;"
         "display:block;margin:1em 0}")
URL = re.compile(r"https?://[^\s)<>\"']+[^\s)<>\"'.,;:]")


def _text(text: str) -> str:
    """Escaped text whose web addresses are links."""
    escaped = html.escape(text)
    return URL.sub(lambda m: f"<a href='{m.group(0)}'>{m.group(0)}</a>", escaped)


def html_table(header: list[str], rows: list[list[str]]) -> str:
    if not rows:
        return "<p><em>none</em></p>"
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _img(path: Path) -> str:
    data = base64.b64encode(path.read_bytes()).decode()
    return f"<img alt='{html.escape(path.stem)}' src='data:image/png;base64,{data}'>"


def render_html(blocks: list[Block], title: str) -> str:
    """A self-contained page: figures embedded, so the file can be mailed or archived alone."""
    body = []
    for b in blocks:
        if isinstance(b, Heading):
            body.append(f"<h{b.level}>{_text(b.text)}</h{b.level}>")
        elif isinstance(b, Text):
            body.append(f"<p>{_text(b.text)}</p>")
        elif isinstance(b, Table):
            note = f"<p>{_text(b.note)}</p>" if b.note else ""
            body.append(f"<h3>{_text(b.title)}</h3>{note}{html_table(b.header, b.rows)}")
        elif isinstance(b, Figure):
            body.append(_img(b.path))
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
            f"<style>{STYLE}</style></head><body>" + "".join(body) + "</body></html>")
