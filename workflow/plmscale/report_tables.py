"""The report's tables, built from a finished study: runs, fitted laws, downstream accuracy, headline.

Pure functions turn parsed JSON/CSV into rows (lists of dicts with named units); :func:`read_runs`,
:func:`read_fits` and :func:`read_downstream` are the I/O edges, and :func:`to_markdown`, :func:`to_csv`
and :func:`to_html` render any table. The laws come from :func:`plmscale.laws.method_laws` (``N_opt = k_N
C^a``, ``D_opt = k_D C^b``, 95% bootstrap intervals ``[p2.5, p97.5]``); the bootstrap median is the
``median`` of the same percentile entry.
"""

from __future__ import annotations

import contextlib
import csv
import html
import io
import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from plmscale.laws import bootstrap_of, method_laws

METHOD_NAMES = {
    "approach1": "Approach 1",
    "approach2": "Approach 2",
    "approach3": "Approach 3",
    "notebook_envelope": "authors' notebook",
}
RUN_COLUMNS = (
    "run_id",
    "objective",
    "budget_flops",
    "n_params",
    "tokens",
    "steps",
    "val_loss",
    "tokens_per_second",
    "mfu",
    "status",
)
FIT_COLUMNS = (
    "objective",
    "method",
    "status",
    "a",
    "a_lo",
    "a_median",
    "a_hi",
    "b",
    "b_lo",
    "b_median",
    "b_hi",
    "budgets",
    "budget_lo_flops",
    "budget_hi_flops",
)
FAILED_MARKERS = ("Traceback (most recent call last)", "Error:", "Killed")


def flops_text(value: float | None) -> str:
    """``3e10``, ``1e11``, ``3.2e20``: a FLOP count with at most two significant digits, no ``+``."""
    if value is None or not math.isfinite(value):
        return "n/a"
    mantissa, exponent = f"{value:.1e}".split("e")
    mantissa = mantissa.rstrip("0").rstrip(".")
    return f"{mantissa}e{int(exponent)}"


def run_status(done: Mapping[str, Any] | None, log_text: str | None) -> str:
    """``done`` when the run wrote ``done.json``; ``failed`` when its log shows an error; else ``missing``."""
    if done is not None:
        return "done"
    if log_text and any(marker in log_text for marker in FAILED_MARKERS):
        return "failed"
    return "missing"


def run_row(
    run_id: str, done: Mapping[str, Any] | None, ev: Mapping[str, Any] | None, log_text: str | None = None
) -> dict[str, Any]:
    """One row of the runs table. ``val_loss`` is the evaluation's (held-out clusters, nats/token), else
    the training's last validation loss; MFU is ``None`` (n/a) where the device had no known peak."""
    d = done or {}
    loss = (ev or {}).get("val_loss", d.get("final_val_loss"))
    objective = d.get("objective") or (ev or {}).get("objective") or run_id.split("/")[0]
    budget = d.get("flops_budget") or (ev or {}).get("flops_budget") or _budget_of(run_id)
    return {
        "run_id": run_id,
        "objective": objective,
        "budget_flops": None if budget is None else float(budget),
        "n_params": d.get("n_params_non_embedding"),
        "tokens": d.get("num_tokens"),
        "steps": d.get("num_steps"),
        "val_loss": None if loss is None else float(loss),
        "tokens_per_second": d.get("tokens_per_second"),
        "mfu": d.get("mfu"),
        "status": run_status(done, log_text),
    }


def _budget_of(run_id: str) -> float | None:
    """The budget in a run id ``<objective>/<budget>/<shape>`` (``clm/3e10/t14k`` -> 3e10), else None."""
    parts = run_id.split("/")
    try:
        return float(parts[1]) if len(parts) == 3 else None
    except ValueError:
        return None


def fit_rows(fit: Mapping[str, Any], methods: Sequence[str] = ("approach1", "approach2", "approach3")):
    """One row per method of a fit JSON: exponents ``a`` (N_opt) and ``b`` (D_opt) with the bootstrap's
    ``lo``/``median``/``hi``; ``status`` is ``fitted``, ``caveat: <why>`` (laws present but not to be
    trusted, e.g. Approach 3 did not converge) or ``not fitted: <why>``."""
    budgets = sorted(float(b) for b in fit.get("budgets") or [])
    rows = []
    for method in methods:
        if method not in fit:
            continue
        laws = method_laws(fit, method)
        pct = (bootstrap_of(fit, method) or {}).get("percentiles") or {}
        row: dict[str, Any] = {"objective": fit.get("objective"), "method": method}
        if laws.n_opt is None or laws.d_opt is None:
            row["status"] = f"not fitted: {laws.problem}"
        else:
            row["status"] = "fitted" if laws.problem is None else f"caveat: {laws.problem}"
        for key, law, ci, name, alt in (
            ("a", laws.n_opt, laws.n_opt_ci, "n_opt_exponent", "a"),
            ("b", laws.d_opt, laws.d_opt_ci, "d_opt_exponent", "b"),
        ):
            median = (pct.get(name) or pct.get(alt) or {}).get("median")
            fitted = law is not None
            row[key] = law.exponent if fitted else None
            row[f"{key}_lo"] = ci[0] if fitted and ci else None
            row[f"{key}_median"] = float(median) if fitted and median is not None else None
            row[f"{key}_hi"] = ci[1] if fitted and ci else None
        row["budgets"] = len(budgets)
        row["budget_lo_flops"] = budgets[0] if budgets else None
        row["budget_hi_flops"] = budgets[-1] if budgets else None
        rows.append(row)
    return rows


def headline(row: Mapping[str, Any]) -> str:
    """One sentence per objective and method, e.g. ``CLM, Approach 2: N_opt ∝ C^0.66 [0.54, 0.71] over 3
    budgets (3e10–3e11 FLOPs)``; a method without laws says why."""
    name = f"{str(row['objective']).upper()}, {METHOD_NAMES.get(row['method'], row['method'])}"
    if row["a"] is None:
        return f"{name}: {row['status']}."
    ci = f" [{row['a_lo']:.2f}, {row['a_hi']:.2f}]" if row["a_lo"] is not None else " (no interval)"
    span = f"{flops_text(row['budget_lo_flops'])}–{flops_text(row['budget_hi_flops'])} FLOPs"
    text = (
        f"{name}: N_opt ∝ C^{row['a']:.2f}{ci}, D_opt ∝ C^{row['b']:.2f} over {row['budgets']} "
        f"budgets ({span})"
    )
    return text + (f"; {row['status']}." if row["status"] != "fitted" else ".")


def _cell(column: str, value: Any) -> str:
    """Display text of one cell: FLOPs as ``3e10``, losses to 4 decimals, MFU as a percentage."""
    if value is None:
        return "n/a"
    if column.endswith("_flops"):
        return flops_text(float(value))
    if column == "mfu":
        return f"{100 * value:.1f}%"
    if column == "tokens_per_second":
        return f"{value:,.0f}"
    if column in ("n_params", "tokens", "steps") and isinstance(value, int | float):
        return f"{int(value):,}"
    if isinstance(value, float):
        return (
            f"{value:.4f}" if "loss" in column or "accuracy" in column or "mcc" in column else f"{value:.3f}"
        )
    return str(value)


def to_markdown(rows: Sequence[Mapping[str, Any]], columns: Sequence[str]) -> str:
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for row in rows:
        cells = [_cell(c, row.get(c)).replace("|", "\\|") for c in columns]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def to_csv(rows: Sequence[Mapping[str, Any]], columns: Sequence[str]) -> str:
    """Machine-readable: raw numbers (no formatting), empty for n/a."""
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=list(columns), extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({c: "" if row.get(c) is None else row.get(c) for c in columns})
    return out.getvalue()


def to_html(rows: Sequence[Mapping[str, Any]], columns: Sequence[str], caption: str = "") -> str:
    head = "".join(f"<th>{html.escape(c)}</th>" for c in columns)
    body = "".join(
        "<tr>"
        + "".join(
            _td(_cell(c, row.get(c)), row.get(c) is None or isinstance(row.get(c), int | float))
            for c in columns
        )
        + "</tr>"
        for row in rows
    )
    cap = f"<caption>{html.escape(caption)}</caption>" if caption else ""
    return f"<table>{cap}<thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _td(text: str, numeric: bool) -> str:
    return f"<td class='num'>{html.escape(text)}</td>" if numeric else f"<td>{html.escape(text)}</td>"


def run_id_of(done_path: Path, runs_root: Path) -> str:
    return done_path.parent.relative_to(runs_root).as_posix()


def read_runs(results: Path, run_ids: Sequence[str] | None = None, logs: Path | None = None) -> list[dict]:
    """Rows for ``run_ids`` (default: every run directory under ``results/runs`` holding a ``done.json``
    or a ``settings``-level file), with their evaluation (``results/eval/<run_id>.json``) and, for runs
    without ``done.json``, the training log (``logs/train/<run_id>.log``) to tell failed from missing."""
    runs_root = results / "runs"
    logs = logs if logs is not None else results.parent / "logs"
    if run_ids is None:
        found = {run_id_of(p, runs_root) for p in runs_root.glob("**/done.json")}
        found |= {
            p.relative_to(logs / "train").with_suffix("").as_posix() for p in logs.glob("train/**/*.log")
        }
        run_ids = sorted(found)
    rows = []
    for run_id in run_ids:
        done = _read_json(runs_root / run_id / "done.json")
        ev = _read_json(results / "eval" / f"{run_id}.json")
        log = logs / "train" / f"{run_id}.log"
        rows.append(run_row(run_id, done, ev, log.read_text(errors="replace") if log.is_file() else None))
    return sorted(
        rows, key=lambda r: (r["objective"], r["budget_flops"] or 0.0, r["n_params"] or 0, r["run_id"])
    )


def read_fits(paths: Sequence[str | Path]) -> list[dict[str, Any]]:
    """The fit JSONs (``results/fits/<objective>.json``), in the order given."""
    fits = []
    for path in paths:
        fit = _read_json(Path(path))
        if fit is None:
            raise ValueError(
                f"fit result {path} not found: run the workflow's fit rule first (snakemake all)"
            )
        fits.append(fit)
    return fits


def read_downstream(path: Path) -> list[dict[str, Any]]:
    """The downstream table (``results/downstream/results.csv``) as rows, or ``[]`` when absent."""
    if not path.is_file():
        return []
    with path.open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    for row in rows:
        for key, value in row.items():
            with contextlib.suppress(TypeError, ValueError):
                row[key] = float(value) if any(ch in value for ch in ".e") else int(value)
    return rows


def _read_json(path: Path) -> dict[str, Any] | None:
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise ValueError(
            f"{path} is not valid JSON ({err}); delete it and rerun the rule that writes it"
        ) from err
