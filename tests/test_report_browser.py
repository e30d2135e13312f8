"""The report in a real browser: bench/report_screenshot.sh renders a landing page with headless Chromium,
and the screenshot must show something (not one flat colour). Skipped where no Chromium is installed."""

import shutil
import subprocess

import pytest
from PIL import Image
from plmscale.report_notes import landing_html
from plmscale.report_tables import fit_rows

from tests.test_report_tables import REPO, _fit

BROWSER = next((b for b in ("chromium", "chromium-browser", "google-chrome") if shutil.which(b)), None)
pytestmark = pytest.mark.skipif(
    BROWSER is None, reason="no chromium on PATH (apt-get install chromium) for the headless screenshot"
)


def test_landing_page_screenshot_is_not_blank(tmp_path):
    fit = _fit()
    assert fit_rows(fit)  # the page has a headline to show
    page = tmp_path / "landing.html"
    run = {"run_id": "clm/3e10/t14k", "objective": "clm", "budget_flops": 3e10, "status": "done"}
    page.write_text(landing_html(study="A test study.", runs=[run], fits=[fit], downstream=[], notes={}))
    png = tmp_path / "shot.png"
    proc = subprocess.run(
        ["bash", str(REPO / "bench/report_screenshot.sh"), str(page), str(png), "800,600"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    image = Image.open(png).convert("RGB")
    assert image.size == (800, 600)
    colours = image.getcolors(maxcolors=1 << 16)
    assert colours is None or len(colours) > 10  # text and table borders, not a single colour
    # the top left holds the page title (dark text on white), not an empty page
    title = image.crop((0, 0, 600, 60)).convert("L")
    assert title.getextrema()[0] < 100 and title.getextrema()[1] > 200


def test_screenshot_script_refuses_a_missing_file(tmp_path):
    proc = subprocess.run(
        [
            "bash",
            str(REPO / "bench/report_screenshot.sh"),
            str(tmp_path / "none.html"),
            str(tmp_path / "x.png"),
        ],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 2 and "no such file" in proc.stderr
