"""The report's tables, headline and generated captions (plmscale.report_tables, report_notes, report_paper)
from hand-made run, evaluation and fit JSONs, with hand-worked cells; the captions rendered the way
Snakemake renders them (Jinja, then docutils with the ``.. include::`` of the generated fragment)."""

import collections
import copy
import html
import json
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import jinja2
import pytest
import yaml
from docutils.core import publish_parts
from plmscale import cli
from plmscale.report_notes import caption_rst, figure_notes, rst_escape, write_landing
from plmscale.report_paper import markdown_table_html, paper_caption_notes, write_paper_landing
from plmscale.report_tables import RUN_COLUMNS, fit_rows, flops_text, headline, read_runs, to_csv, to_markdown

REPO = Path(__file__).resolve().parents[1]
Category = collections.namedtuple("Category", "name")  # what the report's categories expose: their name

DONE = {
    "objective": "clm",
    "flops_budget": 3.0e10,
    "n_params_non_embedding": 13985,
    "num_tokens": 358400,
    "num_steps": 175,
    "final_val_loss": 2.9,
    "tokens_per_second": 120431.4,
    "mfu": 0.188,
}
REASON = "1 usable budget(s) of 3; power laws need >= 2 (edge budgets excluded)"


def _results(tmp_path: Path) -> Path:
    """clm/3e10/t14k done and evaluated; clm/3e10/t27k done on a device without MFU; clm/1e11/t27k failed
    (its log has a traceback); clm/3e11/t27k never started."""
    results = tmp_path / "results"
    for run_id, done, loss in (
        ("clm/3e10/t14k", DONE, 2.8777),
        ("clm/3e10/t27k", {**DONE, "mfu": None}, 2.9),
    ):
        (results / "runs" / run_id).mkdir(parents=True)
        (results / "runs" / run_id / "done.json").write_text(json.dumps(done))
        (results / "eval" / run_id).parent.mkdir(parents=True, exist_ok=True)
        (results / "eval" / f"{run_id}.json").write_text(json.dumps({"val_loss": loss}))
    log = tmp_path / "logs/train/clm/1e11/t27k.log"
    log.parent.mkdir(parents=True)
    log.write_text("step 10\nTraceback (most recent call last):\n  RuntimeError: CUDA out of memory\n")
    return results


def _fit(with_approach2: bool = True) -> dict:
    """A hand-made fit JSON: Approach 1 fitted (a = b = 0.5, interval [0.4, 0.6]); Approach 2 fitted from two
    budgets inside the grid (one at its edge), or not; Approach 3 present but not converged."""
    budgets = [
        {"budget": 3e10, "n_opt": 1e4, "at_edge": False},
        {"budget": 1e11, "n_opt": 2e4, "at_edge": False},
        {"budget": 3e11, "n_opt": 9e4, "at_edge": True},
    ]
    pct = {"n_opt_exponent": {"lo": 0.4, "median": 0.52, "hi": 0.6}}
    pct["d_opt_exponent"] = {"lo": 0.4, "median": 0.48, "hi": 0.6}
    fit = {
        "objective": "clm",
        "budgets": [3e10, 1e11, 3e11],
        "n_runs": 12,
        "approach1": {
            "n_opt": {"coefficient": 0.1, "exponent": 0.5},
            "d_opt": {"coefficient": 1.7, "exponent": 0.5},
        },
        "approach1_bootstrap": {"percentiles": pct},
        "approach2": {
            "budgets": budgets,
            "exclude_edge": True,
            "n_opt": {"coefficient": 0.2, "exponent": 0.66},
            "d_opt": {"coefficient": 0.8, "exponent": 0.34},
        },
        "approach3": {
            "n_opt": {"coefficient": 0.3, "exponent": 0.45},
            "d_opt": {"coefficient": 0.6, "exponent": 0.55},
            "best_converged": False,
            "best_message": "ABNORMAL_TERMINATION",
        },
    }
    if not with_approach2:
        budgets[1].update(n_opt=None, skipped_reason="no minimum (concave)")
        fit["approach2"].update(n_opt=None, d_opt=None, law_reason=REASON)
    return fit


@pytest.mark.parametrize(
    ("flops", "text"), [(3e10, "3e10"), (1e11, "1e11"), (3.16e20, "3.2e20"), (1e9, "1e9")]
)
def test_flops_are_written_as_plain_short_numbers(flops, text):
    assert flops_text(flops) == text


def test_runs_table_cells_and_status(tmp_path):
    results = _results(tmp_path)
    ids = ["clm/3e10/t14k", "clm/3e10/t27k", "clm/1e11/t27k", "clm/3e11/t27k"]
    rows = read_runs(results, ids, logs=tmp_path / "logs")
    lines = to_markdown(rows, RUN_COLUMNS).splitlines()
    # the evaluation's loss (2.8777), not the training's last validation loss (2.9); MFU 0.188 -> 18.8%
    assert (
        lines[2]
        == "| clm/3e10/t14k | clm | 3e10 | 13,985 | 358,400 | 175 | 2.8777 | 120,431 | 18.8% | done |"
    )
    assert lines[3].endswith("| 2.9000 | 120,431 | n/a | done |")
    # no done.json: the budget comes from the run id, the status from the log
    assert lines[4] == "| clm/1e11/t27k | clm | 1e11 | n/a | n/a | n/a | n/a | n/a | n/a | failed |"
    assert lines[5] == "| clm/3e11/t27k | clm | 3e11 | n/a | n/a | n/a | n/a | n/a | n/a | missing |"
    csv_lines = to_csv(rows, RUN_COLUMNS).splitlines()
    assert csv_lines[1] == "clm/3e10/t14k,clm,30000000000.0,13985,358400,175,2.8777,120431.4,0.188,done"
    assert csv_lines[4] == "clm/3e11/t27k,clm,300000000000.0,,,,,,,missing"


def test_runs_without_ids_are_found_from_done_files_and_logs(tmp_path):
    rows = read_runs(_results(tmp_path), logs=tmp_path / "logs")
    assert [(r["run_id"], r["status"]) for r in rows] == [
        ("clm/3e10/t14k", "done"),
        ("clm/3e10/t27k", "done"),
        ("clm/1e11/t27k", "failed"),
    ]


def test_fit_table_and_headline(tmp_path):
    rows = {r["method"]: r for r in fit_rows(_fit())}
    a1 = rows["approach1"]
    assert (a1["status"], a1["a"], a1["a_lo"], a1["a_median"], a1["a_hi"]) == ("fitted", 0.5, 0.4, 0.52, 0.6)
    assert (a1["b_median"], a1["budgets"], a1["budget_lo_flops"], a1["budget_hi_flops"]) == (
        0.48,
        3,
        3e10,
        3e11,
    )
    assert (
        headline(a1)
        == "CLM, Approach 1: N_opt ∝ C^0.50 [0.40, 0.60], D_opt ∝ C^0.50 over 3 budgets (3e10–3e11 FLOPs)."
    )
    # Approach 2 has a law but no bootstrap: no interval is invented
    assert headline(rows["approach2"]).startswith(
        "CLM, Approach 2: N_opt ∝ C^0.66 (no interval), D_opt ∝ C^0.34"
    )
    assert rows["approach3"]["status"] == "caveat: did not converge (ABNORMAL_TERMINATION)"
    assert headline(rows["approach3"]).endswith("; caveat: did not converge (ABNORMAL_TERMINATION).")
    missing = {r["method"]: r for r in fit_rows(_fit(with_approach2=False))}["approach2"]
    assert missing["status"] == f"not fitted: {REASON}" and missing["a"] is None
    assert headline(missing) == f"CLM, Approach 2: not fitted: {REASON}."


def test_captions_change_when_a_fit_is_missing():
    fitted, missing = figure_notes(_fit()), figure_notes(_fit(with_approach2=False))
    assert fitted["isoflop"][:3] == [
        "3 budgets: 3e10, 1e11, 3e11 FLOPs.",
        "2 of 3 budgets have their minimum inside the sampled sizes (star).",
        "1 of 3 budgets has its minimum at the edge of the sampled sizes (a hollow star with an arrow where "
        "the vertex lies outside them, excluded from the N_opt(C) law): extend the grid of sizes there.",
    ]
    assert (
        "Approach 2: N_opt ∝ C^0.66 (no interval), D_opt ∝ C^0.34 over 3 budgets (3e10–3e11 FLOPs)."
        in (fitted["isoflop"])
    )
    assert f"Approach 2 not fitted: {REASON}." in missing["isoflop"]
    assert "Budget 1e11: no minimum (concave)." in missing["isoflop"]
    assert caption_rst(fitted["optimal_allocation"]) != caption_rst(missing["optimal_allocation"])
    assert f"Approach 2 not fitted: {REASON}." in missing["optimal_allocation"]
    facts = {"isoflop": {"extrapolated": [3e11], "notes": ["legend: hollow star = extrapolated"]}}
    assert figure_notes(_fit(), facts)["isoflop"][-2:] == [
        "Drawn as extrapolated (outside the sampled sizes): the minimum at 3e11 FLOPs.",
        "legend: hollow star = extrapolated",
    ]


def _render_caption(name: str, workdir: Path, **wildcards) -> str:
    """A rules/report caption rendered as Snakemake renders it: Jinja, then docutils (cwd = the workdir)."""
    env = jinja2.Environment(trim_blocks=True, lstrip_blocks=True)
    text = env.from_string((REPO / "rules/report" / name).read_text()).render(
        snakemake=SimpleNamespace(wildcards=SimpleNamespace(**wildcards))
    )
    old = os.getcwd()
    os.chdir(workdir)
    try:
        return publish_parts(text, writer="html")["body"]
    finally:
        os.chdir(old)


def test_landing_page_tables_and_rendered_captions(tmp_path):
    results = _results(tmp_path)
    fits = []
    for objective, fit in (("clm", _fit()), ("mlm", _fit(with_approach2=False))):
        fit = copy.deepcopy(fit) | {"objective": objective}
        (results / "fits").mkdir(exist_ok=True)
        fits.append(results / "fits" / f"{objective}.json")
        fits[-1].write_text(json.dumps(fit))
    (results / "downstream").mkdir()
    (results / "downstream/results.csv").write_text(
        "model,objective,dataset,method,n_params,test_accuracy,test_accuracy_lo,test_accuracy_hi,majority_accuracy,"
        "test_mcc,n_test\nmlm_3e10_t14k,mlm,proxy,frozen,13985,0.7188,0.6725,0.7722,0.6157,0.3908,281\n"
    )
    out = results / "report"
    names = ("html", "headline", "runs_csv", "runs_md", "fits_csv", "fits_md")
    outputs = {k: str(out / f"{k}.txt") for k in names}
    out.mkdir()
    write_landing(
        fits=[str(f) for f in fits],
        run_ids=["clm/3e10/t14k"],
        budgets=[1e11, 3e10, 3e11],
        downstream=str(results / "downstream/results.csv"),
        outputs=outputs,
        results=results,
    )
    page = Path(outputs["html"]).read_text()
    assert "CLM and MLM protein language models trained at 3 compute budgets (3e10, 1e11, 3e11 FLOPs)" in page
    assert (
        "<td>mlm_3e10_t14k</td>" in page
        and "<td class='num'>0.7188</td>" in page
        and "<td>[0.672, 0.772]</td>" in page
    )
    assert html.escape(f"MLM, Approach 2: not fitted: {REASON}.") in page
    assert (
        Path(outputs["fits_csv"])
        .read_text()
        .splitlines()[1]
        .startswith("clm,approach1,fitted,0.5,0.4,0.52,0.6,")
    )
    assert "CLM, Approach 1: N_opt ∝ C^0.50 [0.40, 0.60]" in Path(outputs["headline"]).read_text()
    # the captions Snakemake will render, from the fragments written next to the landing page
    clm = _render_caption("optimal_allocation.rst", tmp_path, objective="clm")
    mlm = _render_caption("optimal_allocation.rst", tmp_path, objective="mlm")
    assert "Approach 2: N_opt ∝ C^0.66" in clm and "not fitted" not in clm
    assert html.escape(f"Approach 2 not fitted: {REASON}.", quote=False) in mlm
    isoflop = _render_caption("isoflop.rst", tmp_path, objective="mlm")
    assert "Budget 1e11: no minimum (concave)." in isoflop


def test_paper_captions_are_generated_from_the_fits_and_the_figures_facts(tmp_path):
    """paper_report_landing writes the generated part of each paper figure's caption: per objective for a
    figure drawn per objective (prefixed CLM:/MLM:), the figure's own facts for one drawn for both; the
    rules/report/paper_<figure>.rst caption includes it."""
    clm, mlm = _fit(), {**_fit(with_approach2=False), "objective": "mlm"}
    facts = {
        "clm_isoflop": {"extrapolated": [3e11], "notes": []},
        "mlm_isoflop": {"notes": ["Budget 1e11: no parabola drawn"]},
        "transfer": {"notes": ["2 transfer pairs drawn"]},
    }
    notes = paper_caption_notes("isoflop", [clm, mlm], facts)
    assert notes[0] == "CLM: 3 budgets: 3e10, 1e11, 3e11 FLOPs."
    assert "CLM: Drawn as extrapolated (outside the sampled sizes): the minimum at 3e11 FLOPs." in notes
    assert (
        f"MLM: Approach 2 not fitted: {REASON}." in notes
        and notes[-1] == "MLM: Budget 1e11: no parabola drawn"
    )
    assert paper_caption_notes("transfer", [clm, mlm], facts) == ["2 transfer pairs drawn"]
    assert paper_caption_notes("mask_ratio", [clm, mlm], facts) == []  # no facts, no fit sentences
    # the I/O edge, then the caption as Snakemake renders it (Jinja, then docutils, in the workdir)
    paths = {"fits": [], "facts": {}}
    for fit in (clm, mlm):
        path = tmp_path / f"{fit['objective']}.json"
        path.write_text(json.dumps(fit))
        paths["fits"].append(str(path))
    for key, value in facts.items():
        (tmp_path / f"{key}.json").write_text(json.dumps(value))
        paths["facts"][key] = str(tmp_path / f"{key}.json")
    (tmp_path / "c.md").write_text("| a |\n|---|\n| 1 |\n")
    captions = {
        fig: str(tmp_path / f"results/paper/report/captions/paper_{fig}.rst")
        for fig in ("isoflop", "mask_ratio")
    }
    (tmp_path / "results/paper/report/captions").mkdir(parents=True)  # Snakemake makes the output folders
    md = str(tmp_path / "c.md")
    write_paper_landing(
        paths["fits"], md, md, str(tmp_path / "l.html"), facts=paths["facts"], captions=captions
    )
    rendered = _render_caption("paper_isoflop.rst", tmp_path)
    assert (
        "IsoFLOP profiles of the authors" in rendered
        and "CLM: 3 budgets: 3e10, 1e11, 3e11 FLOPs." in rendered
    )
    assert "MLM: Budget 1e11: no parabola drawn" in rendered
    assert "From the results" not in _render_caption("paper_mask_ratio.rst", tmp_path)


def test_rst_escape_keeps_text_literal():
    html = publish_parts(
        caption_rst(["N_opt ∝ C^0.5 *not* a `role`, a | bar, trailing_ word"]), writer="html"
    )
    assert "N_opt ∝ C^0.5 *not* a `role`, a | bar, trailing_ word" in html["body"]
    assert rst_escape("a_b") == "a_b"


def test_front_page_says_what_the_study_is_in_plain_words():
    config = yaml.safe_load((REPO / "config/config.yaml").read_text())
    env = jinja2.Environment(trim_blocks=True, lstrip_blocks=True)
    text = env.from_string((REPO / "rules/report/workflow.rst").read_text()).render(
        snakemake=SimpleNamespace(config=config), categories={Category("Scaling laws"): {}}
    )
    assert "This study trained CLM and MLM models" in text
    assert "3 compute budgets (3e10, 1e11, 3e11 FLOPs" in text and "24\nIsoFLOP runs" in text
    assert "['clm'" not in text and ".. include::" not in text  # no landing page: no headline to include
    paper = env.from_string((REPO / "rules/report/workflow.rst").read_text()).render(
        snakemake=SimpleNamespace(config=config),
        categories={Category(n): {} for n in ("Paper reproduction", "0. Paper summary")},
    )
    assert "released logs" in paper and ".. include:: results/paper/report/headline.rst" in paper


def test_cli_runs_prints_the_table(tmp_path, capsys, monkeypatch):
    results = _results(tmp_path)
    monkeypatch.chdir(tmp_path)  # the logs are found next to the results folder
    assert cli.main(["runs", str(results.relative_to(tmp_path))]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("| run_id | objective | budget_flops |") and out[-1].endswith("| failed |")
    assert cli.main(["runs", str(tmp_path / "nowhere")]) == 2
    assert "no runs in" in capsys.readouterr().err


def test_markdown_tables_become_html():
    md = "| objective | a |\n|---|---|\n| clm | 0.578 <x> |\nsecondary sources\n"
    assert markdown_table_html(md) == (
        "<table><thead><tr><th>objective</th><th>a</th></tr></thead>"
        "<tbody><tr><td>clm</td><td>0.578 &lt;x&gt;</td></tr></tbody></table>\n<p>secondary sources</p>"
    )


def test_paper_report_target_plans_the_landing_page_and_every_figure(tmp_path):
    """A dry run: needs neither the published logs nor a network."""
    config = str(REPO / "tests/config/config.yaml")
    cmd = [sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), "-d", str(tmp_path)]
    cmd += ["paper_report", "--configfile", config, "-n", "--quiet", "rules"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    for rule in ("paper_logs", "paper_plots", "paper_coefficients", "paper_report_landing", "paper_report"):
        assert rule in proc.stdout
