"""The paper reproduction's report page: headline laws from the published logs, the coefficient and
method-step tables (Markdown from :mod:`plmscale.paper`, rendered as HTML) and what each figure fitted;
and the generated part of each paper figure's caption."""

from __future__ import annotations

import html
import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from plmscale.report_notes import (
    NOTE_MAKERS,
    STYLE,
    allocation_notes,
    caption_rst,
    facts_notes,
    headline_rst,
    isoflop_notes,
)
from plmscale.report_tables import fit_rows, headline

PAPER_METHODS = ("notebook_envelope", "approach1", "approach2", "approach3")


def markdown_table_html(text: str) -> str:
    """A pipe table (``| a | b |`` rows, a ``|---|`` separator after the header) as an HTML table; other
    lines become paragraphs. Cells are escaped, not interpreted."""
    out: list[str] = []
    rows: list[list[str]] = []

    def flush() -> None:
        if rows:
            head = "".join(f"<th>{html.escape(c)}</th>" for c in rows[0])
            body = "".join(
                "<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in r) + "</tr>" for r in rows[1:]
            )
            out.append(f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>")
            rows.clear()

    for line in text.splitlines():
        stripped = line.strip()
        if stripped.startswith("|"):
            cells = [c.strip() for c in stripped.strip("|").split("|")]
            if not all(set(c) <= set("-: ") for c in cells):
                rows.append(cells)
            continue
        flush()
        if stripped:
            out.append(f"<p>{html.escape(stripped)}</p>")
    flush()
    return "\n".join(out)


def paper_landing_html(fits: Sequence[Mapping[str, Any]], coefficients_md: str, method_steps_md: str) -> str:
    rows = [r for fit in fits for r in fit_rows(fit, PAPER_METHODS)]
    parts = [
        "<h1>Paper reproduction: scaling laws from the authors' released logs</h1>",
        "<h2>Headline: N_opt ∝ C^a per objective and method (95% bootstrap intervals)</h2>",
        "<ul class='headline'>",
        *(f"<li>{html.escape(headline(r))}</li>" for r in rows),
        "</ul><h2>Coefficients, next to the published exponents</h2>",
        markdown_table_html(coefficients_md),
        "<h2>From the authors' notebook fit to our Approach 1, one step at a time</h2>",
        markdown_table_html(method_steps_md),
        "<h2>Figure notes</h2>",
    ]
    for fit in fits:
        objective = str(fit.get("objective", "?")).upper()
        for figure, notes in (("isoflop", isoflop_notes(fit)), ("optimal_allocation", allocation_notes(fit))):
            items = "".join(f"<li>{html.escape(n)}</li>" for n in notes)
            parts.append(f"<h3>{html.escape(objective)} {figure}</h3><ul>{items}</ul>")
    body = "\n".join(parts)
    return (
        "<!DOCTYPE html><html><head><meta charset='utf-8'><title>plmscale paper reproduction</title>"
        f"<style>{STYLE}</style></head><body>\n{body}\n</body></html>\n"
    )


def paper_caption_notes(
    figure: str, fits: Sequence[Mapping[str, Any]], facts: Mapping[str, Mapping[str, Any]]
) -> list[str]:
    """The notes of one paper figure's caption.  A figure drawn per objective (``facts`` keyed
    ``<objective>_<figure>``): per objective, what its fit says about the figure (the study's captions'
    sentences, where there are any) and what the figure drew, prefixed ``CLM:`` / ``MLM:``.  A figure of
    both objectives (``facts`` keyed ``<figure>``): what it drew."""
    if figure in facts:
        return facts_notes(facts[figure])
    notes = []
    for fit in fits:
        objective = str(fit.get("objective", "?"))
        maker = NOTE_MAKERS.get(figure)
        own = [*(maker(fit) if maker else []), *facts_notes(facts.get(f"{objective}_{figure}") or {})]
        notes += [f"{objective.upper()}: {n}" for n in own]
    return notes


def write_paper_landing(
    fits: Sequence[str],
    coefficients: str,
    method_steps: str,
    out: str,
    facts: Mapping[str, str] | None = None,
    captions: Mapping[str, str] | None = None,
) -> None:
    """I/O edge of the ``paper_report_landing`` rule: the page, its headline and, for each figure in
    ``captions`` (figure -> .rst path), the generated caption from the fits and the figures' facts files
    (``facts``: ``<objective>_<figure>`` or ``<figure>`` -> .json path)."""
    from plmscale.atomic import write_text_atomic

    fit_results = [json.loads(Path(p).read_text()) for p in fits]
    page = paper_landing_html(fit_results, Path(coefficients).read_text(), Path(method_steps).read_text())
    write_text_atomic(out, page)
    rows = [r for fit in fit_results for r in fit_rows(fit, PAPER_METHODS)]
    write_text_atomic(
        Path(out).with_name("headline.rst"),
        headline_rst(rows, "Headline from the authors' released logs (95% bootstrap intervals)"),
    )
    drawn = {}
    for key, path in (facts or {}).items():
        try:
            drawn[key] = json.loads(Path(path).read_text())
        except json.JSONDecodeError as err:
            raise ValueError(f"{path} is not valid JSON ({err}); rerun the paper_plots rule") from err
    for figure, path in (captions or {}).items():
        notes = paper_caption_notes(figure, fit_results, drawn)
        write_text_atomic(path, caption_rst(notes) if notes else "\n")
