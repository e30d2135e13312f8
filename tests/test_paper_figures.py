"""`snakemake paper_figures` end to end: the published logs served by a real HTTP server on 127.0.0.1,
downloaded by the workflow, parsed, fitted with bootstrap CIs and plotted."""

import functools
import http.server
import json
import threading

import polars as pl
import pytest
import yaml

from tests.test_workflow import REPO, TEST_CONFIG, snakemake

SHARED_LOGS = REPO.parent / "shared" / "paper-logs"
pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(
        not (SHARED_LOGS / "data").is_dir(), reason=f"published logs not found at {SHARED_LOGS}"
    ),
]


class QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format, *args):  # keep the test output readable
        pass


@pytest.fixture(scope="module")
def paper_study(tmp_path_factory):
    handler = functools.partial(QuietHandler, directory=str(SHARED_LOGS))
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    try:
        workdir = tmp_path_factory.mktemp("paper")
        config = yaml.safe_load(TEST_CONFIG.read_text())
        config["paper"] = {
            "base_url": f"http://127.0.0.1:{httpd.server_address[1]}",
            "n_bootstrap": 20,
            "approach3_grid": "small",
        }
        path = workdir / "config.yaml"
        path.write_text(yaml.safe_dump(config))
        # paper_report: every paper figure, and the report's summary page with the generated captions
        snakemake(workdir, "--cores", "2", "paper_report", config=path, timeout=1200)
        yield workdir
    finally:
        httpd.shutdown()


def test_logs_arrive_byte_identical(paper_study):
    manifest = json.loads((paper_study / "resources/paper_logs/manifest.json").read_text())
    assert manifest["count"] == 294
    odd = next((SHARED_LOGS / "data/training_logs/ur50_all1ep_valid_loss").glob("*副本"))
    for src in odd.iterdir():
        dst = paper_study / "resources/paper_logs" / src.relative_to(SHARED_LOGS)
        assert dst.read_bytes() == src.read_bytes()


def test_every_figure_and_the_coefficient_table(paper_study):
    figures = paper_study / "results/paper/figures"
    for objective in ("clm", "mlm"):
        for fig in ("isoflop", "optimal_allocation", "loss_vs_compute", "extrapolation"):
            assert (figures / f"{objective}_{fig}.png").stat().st_size > 10_000
            assert (figures / f"{objective}_{fig}.svg").is_file()
            facts = json.loads((figures / f"{objective}_{fig}.json").read_text())
            assert facts["figure"] == fig and facts["objective"] == objective
    for fig in ("ur50_vs_unimeta", "mask_ratio", "transfer", "transfer_law"):
        assert (figures / f"{fig}.png").stat().st_size > 10_000
        assert json.loads((figures / f"{fig}.json").read_text())["figure"] == fig
    captions = paper_study / "results/paper/report/captions"
    isoflop = (captions / "paper_isoflop.rst").read_text()
    assert "**From the results:**" in isoflop and "- CLM: " in isoflop and "- MLM: " in isoflop
    assert "Approach 2" in isoflop  # the law sentence of each objective's fit
    table = pl.read_csv(paper_study / "results/paper/coefficients.csv")
    for objective in ("clm", "mlm"):
        methods = set(table.filter(pl.col("objective") == objective)["method"].to_list())
        assert {"notebook_envelope", "approach1", "approach2", "approach3"} <= methods
        assert any(m.startswith("published") for m in methods)
        assert "authors' notebook, printed output" in methods
    extrapolation = pl.read_csv(paper_study / "results/paper/extrapolation.csv")
    assert set(extrapolation["method"].to_list()) == {"approach2", "approach3"}
    assert (extrapolation["held_out_budget"] > 1e20).all()
    assert extrapolation["observed_loss"].dtype == pl.Float64  # numbers; what they are: loss_reference
    assert set(extrapolation["loss_reference"]) == {"observed_parabola_loss", "observed_min_loss"}
    md = (paper_study / "results/paper/coefficients.md").read_text()
    assert "0.578" in md and "0.776" in md and "secondary sources" in md


def test_fits_carry_bootstrap_intervals_and_the_method(paper_study):
    for objective in ("clm", "mlm"):
        fit = json.loads((paper_study / f"results/paper/fits/{objective}.json").read_text())
        assert fit["n_isoflop_runs"] > 50
        for method in ("approach1", "approach2", "approach3"):
            assert fit[method]["method"] == method
            assert fit[f"{method}_bootstrap"].get("n_resamples") == 20
        exponent = fit["approach2"]["n_opt"]["exponent"]
        assert 0.3 < exponent < 1.2  # loose sanity range; the closing note records the values
        assert fit["budgets"][0] == 1e18 and fit["budgets"][-1] == 1e21


def test_the_authors_notebook_laws_come_out_of_the_workflow(paper_study):
    """The downloaded logs, read as the authors' notebook reads them, give its printed exponents."""
    printed = {"clm": (0.5574533, 0.42614584, -0.02492932), "mlm": (0.759801868, 0.256133566, -0.02872987)}
    for objective, (a, b, loss) in printed.items():
        fit = json.loads((paper_study / f"results/paper/fits/{objective}.json").read_text())
        nb = fit["notebook_envelope"]
        assert nb["n_opt"]["exponent"] == pytest.approx(a, abs=2e-6)
        assert nb["d_opt"]["exponent"] == pytest.approx(b, abs=2e-6)
        assert nb["loss"]["exponent"] == pytest.approx(loss, abs=2e-6)
        ci = fit["notebook_envelope_bootstrap"]["percentiles"]["n_opt_exponent"]
        assert ci["lo"] < a < ci["hi"]


def test_transfer_law_on_the_published_transfer_logs(paper_study):
    """Every released transfer pair is used (CLM from MLM: 130M..1.7B, the 130M pair from its GFLOPs logs;
    MLM from CLM: 25M..1.2B), every measured point is accounted for, and the CLM->MLM benefit grows with
    model size (beta > 0, in every leave-one-size-out refit), as the paper reports."""
    law = json.loads((paper_study / "results/paper/transfer_law.json").read_text())
    points = pl.read_csv(paper_study / "results/paper/transfer_points.csv")
    assert law["clm"]["sizes"] == ["130M", "230M", "470M", "880M", "1.7B"]
    assert law["clm"]["x_source"]["130M"] == "GFLOPs log / 6N"
    assert law["clm"]["x_source"]["230M"] == "tokens log"
    assert law["mlm"]["sizes"] == ["25M", "85M", "200M", "470M", "1.2B"]
    for objective in ("clm", "mlm"):
        entry, sub = law[objective], points.filter(pl.col("objective") == objective)
        assert entry["n_points"] == sub.height
        assert entry["n_fitted"] == sub.filter(pl.col("status") == "ok").height == entry["law"]["n_points"]
        assert entry["n_fitted"] + entry["n_not_reached"] + entry["n_no_gain"] == entry["n_points"]
        assert entry["n_fitted"] >= 3 * len(entry["sizes"])
    assert law["mlm"]["law"]["beta"] > 0 and law["mlm"]["leave_one_size_out"]["beta"][0] > 0


def test_size_disagreements_are_reported(paper_study):
    table = pl.read_csv(paper_study / "results/paper/size_mismatches.tsv", separator="\t")
    text = " ".join(str(v) for v in table.rows())
    for folder, label in (("34M", "25M"), ("65M", "49M"), ("680M", "500M")):
        assert folder in text and label in text
