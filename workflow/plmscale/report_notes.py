"""What each figure of the report shows, said from the results: generated captions and the landing page.

:func:`figure_notes` reads one objective's fit JSON (:mod:`plmscale.fitting`) and says, per figure, what
was fitted, what was excluded and why (e.g. "2 of 3 budgets have their minimum at the edge of the sampled
sizes"). A figure's ``<figure>.json`` facts file, when the plotting code wrote one, adds its ``notes``.
:func:`caption_rst` turns the notes into the RST fragment a caption in ``rules/report/`` includes;
:func:`landing_html` is the report's first page (headline, runs, fits, downstream, figure notes).
"""

from __future__ import annotations

import html
import json
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from plmscale.report_tables import (
    FIT_COLUMNS,
    METHOD_NAMES,
    RUN_COLUMNS,
    fit_rows,
    flops_text,
    headline,
    to_html,
)

FIGURES = ("isoflop", "optimal_allocation", "loss_vs_compute", "learning_curves")
DOWNSTREAM_COLUMNS = (
    "model",
    "objective",
    "dataset",
    "method",
    "n_params",
    "test_accuracy",
    "test_accuracy_ci",
    "majority_accuracy",
    "test_mcc",
    "n_test",
)
HEADLINE_TITLE = "Headline: N_opt ∝ C^a and D_opt ∝ C^b per objective and method (95% bootstrap intervals)"
STYLE = (
    "body{font-family:system-ui,sans-serif;margin:1.5em;color:#222;max-width:1200px}"
    "h1{font-size:1.5em}h2{font-size:1.15em;margin-top:1.4em;border-bottom:1px solid #ccc}"
    "table{border-collapse:collapse;font-size:0.85em;margin:0.5em 0}"
    "td,th{border:1px solid #ccc;padding:2px 6px;text-align:left}th{background:#f0f0f0}"
    "td.num{text-align:right}.headline li{font-size:1.05em;margin:0.2em 0}"
)


def _plural(count: int, one: str, many: str) -> str:
    return f"{count} {one if count == 1 else many}"


def _has(items: Sequence[Any]) -> str:
    return "has its" if len(items) == 1 else "have their"


def isoflop_notes(fit: Mapping[str, Any]) -> list[str]:
    """Approach 2 per budget: minima inside the grid, at its edge, or none; then the N_opt(C) law."""
    a2 = fit.get("approach2") or {}
    budgets = a2.get("budgets") or []
    total = len(budgets)
    notes = [
        f"{_plural(total, 'budget', 'budgets')}: {', '.join(flops_text(b['budget']) for b in budgets)} FLOPs."
    ]
    inner = [b for b in budgets if b.get("n_opt") and not b.get("at_edge")]
    edge = [b for b in budgets if b.get("n_opt") and b.get("at_edge")]
    none = [b for b in budgets if not b.get("n_opt")]
    if inner:
        notes.append(
            f"{len(inner)} of {total} budgets {_has(inner)} minimum inside the sampled sizes (star)."
        )
    if edge:
        excluded = ", excluded from the N_opt(C) law" if a2.get("exclude_edge") else ""
        notes.append(
            f"{len(edge)} of {total} budgets {_has(edge)} minimum at the edge of the sampled sizes "
            f"(a hollow star with an arrow where the vertex lies outside them{excluded}): extend the grid of "
            "sizes there."
        )
    for b in none:
        notes.append(f"Budget {flops_text(b['budget'])}: {b.get('skipped_reason') or 'no fit'}.")
    notes.append(_law_sentence(fit, "approach2"))
    spread = fit.get("seed_spread") or {}
    if spread.get("n_points"):
        notes.append(
            f"Seed spread over {spread['seeds_per_point']} seeds at {spread['n_points']} points: median sd "
            f"{spread['median_sd']:.4f}, largest range {spread['max_range']:.4f} nats/token."
        )
    elif spread.get("reason"):
        notes.append(f"No noise floor: {spread['reason']}.")
    return notes


def _law_sentence(fit: Mapping[str, Any], method: str) -> str:
    rows = fit_rows(fit, (method,))
    if not rows:
        return f"{METHOD_NAMES.get(method, method)}: not in the fit result."
    row = rows[0]
    if row["a"] is None:
        return f"{METHOD_NAMES.get(method, method)} not fitted: {row['status'].removeprefix('not fitted: ')}."
    return headline(row).split(", ", 1)[1]


def allocation_notes(fit: Mapping[str, Any]) -> list[str]:
    methods = [m for m in ("approach1", "approach2", "approach3", "notebook_envelope") if m in fit]
    return [_law_sentence(fit, m) for m in methods]


def loss_notes(fit: Mapping[str, Any]) -> list[str]:
    a1 = fit.get("approach1") or {}
    loss = a1.get("loss") or {}
    if not a1.get("envelope") or loss.get("exponent") is None:
        reason = a1.get("skipped_reason") or a1.get("law_reason") or "no envelope in the fit result"
        return [f"Approach 1 L(C) not fitted: {reason}."]
    return [
        f"Approach 1: L(C) = {loss['coefficient']:.3g} C^{loss['exponent']:.4f} fitted to "
        f"{a1.get('n_envelope', '?')} envelope points ({a1.get('n_bins', '?')} compute bins, "
        f"{a1.get('n_points', '?')} logged points)."
    ]


def curve_notes(fit: Mapping[str, Any]) -> list[str]:
    return [f"{_plural(int(fit.get('n_runs') or 0), 'run', 'runs')}, one panel per budget."]


NOTE_MAKERS = {
    "isoflop": isoflop_notes,
    "optimal_allocation": allocation_notes,
    "loss_vs_compute": loss_notes,
    "learning_curves": curve_notes,
}


def figure_notes(fit: Mapping[str, Any], facts: Mapping[str, Mapping[str, Any]] | None = None):
    """``{figure: [sentence, ...]}`` for one objective; the plotting code's ``<figure>.json`` facts add the
    budgets whose minimum it drew as extrapolated (``extrapolated``) and its ``notes``."""
    return {
        figure: [*maker(fit), *facts_notes((facts or {}).get(figure) or {})]
        for figure, maker in NOTE_MAKERS.items()
    }


def facts_notes(drawn: Mapping[str, Any]) -> list[str]:
    """What a figure's facts file (``<figure>.json``, :mod:`plmscale.figure_style`) adds to its caption:
    the budgets whose minimum it drew as extrapolated, then its ``notes``."""
    notes = []
    if drawn.get("extrapolated"):
        where = ", ".join(flops_text(float(b)) for b in drawn["extrapolated"])
        notes.append(f"Drawn as extrapolated (outside the sampled sizes): the minimum at {where} FLOPs.")
    return notes + [str(n) for n in drawn.get("notes") or []]


def read_facts(figures_dir: Path, objective: str) -> dict[str, dict[str, Any]]:
    """``results/figures/<objective>_<figure>.json`` where present (written by the plotting code)."""
    out = {}
    for figure in FIGURES:
        path = figures_dir / f"{objective}_{figure}.json"
        if path.is_file():
            try:
                out[figure] = json.loads(path.read_text())
            except json.JSONDecodeError as err:
                raise ValueError(f"{path} is not valid JSON ({err}); rerun the plot rule") from err
    return out


def rst_escape(text: str) -> str:
    """Plain text safe inside reStructuredText: ``*``, backquotes, ``|`` and a word-final ``_`` escaped."""
    text = re.sub(r"([\\*`|])", r"\\\1", text)
    return re.sub(r"(\w)_(?=\W|$)", r"\1\\_", text)


def caption_rst(notes: Sequence[str]) -> str:
    """The generated part of a caption: one bullet per note (an RST fragment for ``.. include::``)."""
    if not notes:
        return "\nNothing was fitted for this figure.\n"
    return "\n**From the results:**\n\n" + "".join(f"- {rst_escape(n)}\n" for n in notes)


def headline_rst(rows: Sequence[Mapping[str, Any]], title: str = HEADLINE_TITLE) -> str:
    """The headline as an RST fragment, for the report's front page (``rules/report/workflow.rst``)."""
    items = "".join(f"- {rst_escape(headline(r))}\n" for r in rows)
    return f"\n**{rst_escape(title)}**\n\n{items}"


def study_sentence(objectives: Sequence[str], budgets: Sequence[float], n_runs: int) -> str:
    names = " and ".join(o.upper() for o in objectives)
    return (
        f"{names} protein language models trained at {len(budgets)} compute budgets "
        f"({', '.join(flops_text(b) for b in budgets)} FLOPs), {n_runs} training runs in all."
    )


def landing_html(
    *,
    study: str,
    runs: Sequence[Mapping[str, Any]],
    fits: Sequence[Mapping[str, Any]],
    downstream: Sequence[Mapping[str, Any]],
    notes: Mapping[str, Mapping[str, Sequence[str]]],
) -> str:
    """The landing page: the question's answer first (headline), then runs, fits, downstream, notes."""
    rows = [r for fit in fits for r in fit_rows(fit)]
    done = sum(r["status"] == "done" for r in runs)
    parts = [
        f"<h1>Compute-optimal scaling of protein language models</h1><p>{html.escape(study)}</p>",
        "<h2>Headline: how N_opt and D_opt grow with compute C</h2><ul class='headline'>",
        *(f"<li>{html.escape(headline(r))}</li>" for r in rows),
        "</ul><p>Intervals are 95% bootstrap intervals over runs. A law marked 'not fitted' or 'caveat' must "
        "not be quoted; the reason is given.</p>",
        f"<h2>Runs ({done} of {len(runs)} done)</h2>",
        to_html(runs, RUN_COLUMNS, "final validation loss on held-out clusters (nats/token)"),
        "<h2>Fitted laws</h2>",
        to_html(rows, FIT_COLUMNS, "N_opt ∝ C^a, D_opt ∝ C^b; lo/median/hi: bootstrap 2.5/50/97.5%"),
    ]
    if downstream:
        parts += ["<h2>Downstream accuracy</h2>", to_html(downstream_rows(downstream), DOWNSTREAM_COLUMNS)]
    parts.append("<h2>Figure notes</h2>")
    for objective, figures in notes.items():
        for figure, lines in figures.items():
            items = "".join(f"<li>{html.escape(n)}</li>" for n in lines)
            parts.append(f"<h3>{html.escape(objective.upper())} {html.escape(figure)}</h3><ul>{items}</ul>")
    body = "\n".join(parts)
    return (
        f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>plmscale report</title>"
        f"<style>{STYLE}</style></head><body>\n{body}\n</body></html>\n"
    )


def downstream_rows(rows: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Downstream rows with the accuracy interval as one text cell (``[lo, hi]``, 95%)."""
    out = []
    for row in rows:
        lo, hi = row.get("test_accuracy_lo"), row.get("test_accuracy_hi")
        ci = f"[{lo:.3f}, {hi:.3f}]" if isinstance(lo, float) and isinstance(hi, float) else None
        out.append({**row, "test_accuracy_ci": ci})
    return out


def write_landing(
    *,
    fits: Sequence[str],
    run_ids: Sequence[str],
    budgets: Sequence[float],
    downstream: str | None,
    outputs: Mapping[str, Any],
    results: Path = Path("results"),
) -> None:
    """I/O edge of the ``report_landing`` rule: ``outputs`` holds ``html``, ``headline`` (RST), ``runs_csv``,
    ``runs_md``, ``fits_csv`` and ``fits_md``; the caption fragments go to
    ``<dir of html>/captions/<objective>_<figure>.rst``."""
    from plmscale.atomic import write_text_atomic
    from plmscale.report_tables import read_downstream, read_fits, read_runs, to_csv, to_markdown

    fit_results = read_fits(fits)
    runs = read_runs(results, run_ids)
    rows = [r for fit in fit_results for r in fit_rows(fit)]
    notes = {}
    for fit in fit_results:
        objective = str(fit["objective"])
        notes[objective] = figure_notes(fit, read_facts(results / "figures", objective))
        captions = Path(outputs["html"]).parent / "captions"
        captions.mkdir(parents=True, exist_ok=True)
        for figure, lines in notes[objective].items():
            write_text_atomic(captions / f"{objective}_{figure}.rst", caption_rst(lines))
    study = study_sentence([str(f["objective"]) for f in fit_results], sorted(budgets), len(run_ids))
    write_text_atomic(outputs["headline"], headline_rst(rows))
    write_text_atomic(outputs["runs_csv"], to_csv(runs, RUN_COLUMNS))
    write_text_atomic(outputs["runs_md"], to_markdown(runs, RUN_COLUMNS))
    write_text_atomic(outputs["fits_csv"], to_csv(rows, FIT_COLUMNS))
    write_text_atomic(outputs["fits_md"], to_markdown(rows, FIT_COLUMNS))
    down = read_downstream(Path(downstream)) if downstream else []
    page = landing_html(study=study, runs=runs, fits=fit_results, downstream=down, notes=notes)
    write_text_atomic(outputs["html"], page)
    for row in rows:
        print(headline(row))
