"""The paper reproduction's report page: headline laws from the published logs, the coefficient and
method-step tables (Markdown from :mod:`plmscale.paper`, rendered as HTML) and what each figure fitted."""

from __future__ import annotations

import html
import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from plmscale.report_notes import STYLE, allocation_notes, headline_rst, isoflop_notes
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


def write_paper_landing(fits: Sequence[str], coefficients: str, method_steps: str, out: str) -> None:
    """I/O edge of the ``paper_report_landing`` rule."""
    from plmscale.atomic import write_text_atomic

    fit_results = [json.loads(Path(p).read_text()) for p in fits]
    page = paper_landing_html(fit_results, Path(coefficients).read_text(), Path(method_steps).read_text())
    write_text_atomic(out, page)
    rows = [r for fit in fit_results for r in fit_rows(fit, PAPER_METHODS)]
    write_text_atomic(
        Path(out).with_name("headline.rst"),
        headline_rst(rows, "Headline from the authors' released logs (95% bootstrap intervals)"),
    )
