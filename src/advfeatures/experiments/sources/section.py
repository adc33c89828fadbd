"""The report's sentence on where D and D_adv came from (results.json's "sources"): trained here, or given."""

from __future__ import annotations

from ...document import Block, Text


def blocks(r: dict, figures=None) -> list[Block]:
    sentence = describe_sources(r.get("sources", {}))
    return [Text(sentence)] if sentence else []


def given_names(r: dict) -> set[str]:
    """The sources that were given (--standard-model / --robust-model), not trained here."""
    return {n for n, s in r.get("sources", {}).items() if s.get("origin") == "given"}


def describe_sources(sources: dict) -> str | None:
    """One sentence for the report, or None when both sources were trained here."""
    given = {n: s for n, s in sources.items() if s.get("origin") == "given"}
    if not given:
        return None
    parts = [f"{n} given ({s['flag']} {s['path']}, sha256 {s['sha256_short']}, {s['arch']}{_origin(s)}), "
             "not trained here" for n, s in given.items()]
    parts += [f"{n} trained here" for n, s in sources.items() if n not in given]
    seeds = max(s.get("seeds", 1) for s in given.values())
    note = (f" The given models are the same for all {seeds} seeds: their spread is the attack's randomness only."
            if seeds > 1 else "")
    return "Sources: " + "; ".join(parts) + "." + note


def _origin(source: dict) -> str:
    imported = source.get("imported")
    if not imported:
        return ""
    epoch = f", epoch {imported['epoch']}" if imported.get("epoch") is not None else ""
    return (f"; imported from the {imported.get('library')} checkpoint {imported.get('file')} "
            f"(sha256 {str(imported.get('sha256'))[:12]}{epoch})")
