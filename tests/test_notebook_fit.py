"""The authors' notebook fit (plmscale.notebook_fit): hand-worked envelopes, and the printed laws reproduced
from the shared copy of the published logs."""

from pathlib import Path

import numpy as np
import pytest
from plmscale import notebook_fit as nf
from scipy.optimize import minimize

SHARED_LOGS = Path(__file__).resolve().parents[2] / "shared" / "paper-logs" / "data" / "training_logs"
needs_logs = pytest.mark.skipif(
    not SHARED_LOGS.is_dir(),
    reason=f"shared copy of the paper logs not found at {SHARED_LOGS} (needs ../shared)",
)
SMALL = 300 * 512 * 1024  # tokens between evaluations below 1B parameters
LARGE = 300 * 1024 * 1024  # ... for folders labelled in B


def write_log(path: Path, gflops: list[float], loss: list[float]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = ["Wall time,Step,Value"] + [
        f"{1.7e9 + i},{g:.0f},{v}" for i, (g, v) in enumerate(zip(gflops, loss, strict=True))
    ]
    path.write_text("\n".join(lines) + "\n")


@pytest.fixture
def three_runs(tmp_path: Path) -> Path:
    """Two mapped folders and one the notebook cannot map (its run still sets a target).

    a (10M): logged GFLOPs 1e10, 2e10, ..., 13e10; the first row (1e10) is skipped, so its last 10 points are
      4e10..13e10 and its target is 4e10. Loss 3.00, 2.99, ... (row r of the kept rows: 2.99 - 0.01 r).
    b (1.2B): GFLOPs shifted by +5e8 (within the 1e9-GFLOP window of a's points); target 4.05e10. Loss 0.001
      below a's at the same row, so b wins wherever both match the same row.
    c (999M, unmapped): GFLOPs 1e10 .. 13e10 + 3e8, target 4.03e10: a target, never an envelope point.
    """
    g = [1e10 * (i + 1) for i in range(13)]
    loss_a = [3.0 - 0.01 * i for i in range(13)]
    write_log(tmp_path / "10M_flops" / "run-a.csv", g, loss_a)
    write_log(tmp_path / "1.2B_flops" / "run-b.csv", [x + 5e8 for x in g], [v - 0.001 for v in loss_a])
    write_log(tmp_path / "999M_flops" / "run-c.csv", [x + 3e8 for x in g], [2.0] * 13)
    (tmp_path / "10M_flops" / "notes.csv").write_text("not a run\n")  # not run*: ignored
    return tmp_path


def test_reading_skips_the_header_and_the_first_point(three_runs: Path) -> None:
    f = nf.read_log_file(three_runs / "10M_flops" / "run-a.csv")
    assert f.gflops[0] == 2e10 and len(f.gflops) == 12
    assert f.loss[0] == pytest.approx(2.99)


def test_targets_and_envelope_by_hand(three_runs: Path) -> None:
    files = nf.read_log_dir(three_runs)
    assert [f.folder for f in files] == ["10M_flops", "1.2B_flops", "999M_flops"]  # by size, unmapped last
    assert nf.targets_gflops(files) == [4e10, 4.03e10, 4.05e10]
    points = {p.flops: p for p in nf.envelope(files)}
    assert sorted(points) == [4e19, 4.03e19, 4.05e19]
    # every target is closest to kept row 2 (GFLOPs 4e10 for a, 4.05e10 for b): loss 2.97 vs 2.969, b wins
    for p in points.values():
        assert p.loss == pytest.approx(2.969)
        assert p.n_params == 1208881136  # the 1.2B folder's N from the notebook's table
        assert p.num_tokens == 3 * LARGE  # (row 2 + 1) evaluations x 300 steps x 1M tokens
        assert p.folder == "1.2B_flops"


def test_a_file_outside_the_window_is_passed_over(tmp_path: Path) -> None:
    g = [1e10 * (i + 1) for i in range(13)]
    write_log(tmp_path / "10M_flops" / "run-a.csv", g, [3.0] * 13)
    # b's points sit 2e9 GFLOPs off a's target (more than the 1e9 window): b never counts at 4e10
    write_log(tmp_path / "85M_flops" / "run-b.csv", [x + 2e9 for x in g], [1.0] * 13)
    points = {p.flops: p for p in nf.envelope(nf.read_log_dir(tmp_path))}
    assert points[4e19].n_params == 9830400 and points[4e19].loss == 3.0
    assert points[4.2e19].n_params == 84934656 and points[4.2e19].num_tokens == 3 * SMALL


def test_ties_go_to_the_smaller_folder(tmp_path: Path) -> None:
    """The same run filed under two folders ties with itself; the notebook kept the first folder read."""
    g = [1e10 * (i + 1) for i in range(13)]
    for folder in ("13M_flops", "6M_flops", "85M_flops"):
        write_log(tmp_path / folder / "run-x.csv", g, [3.0 - 0.01 * i for i in range(13)])
    points = nf.envelope(nf.read_log_dir(tmp_path))
    assert {p.n_params for p in points} == {6291456}


def test_linear_space_fit_matches_an_independent_least_squares() -> None:
    x = np.array([1e18, 3e18, 1e19, 3e19, 1e20, 1e21])
    assert nf.fit_linear_power(x, 3e-3 * x**0.55).exponent == pytest.approx(0.55, rel=1e-6)
    rng = np.random.default_rng(0)
    y = 3e-3 * x**0.55 * np.exp(rng.normal(0, 0.3, len(x)))
    law = nf.fit_linear_power(x, y)

    def sse(p: np.ndarray) -> float:  # the same objective, in linear space, minimised another way
        return float(np.sum((y - np.exp(p[0]) * x ** p[1]) ** 2) / np.sum(y**2))

    ref = minimize(
        sse, x0=[np.log(3e-3), 0.55], method="Nelder-Mead", options={"xatol": 1e-10, "fatol": 1e-14}
    )
    assert law.exponent == pytest.approx(ref.x[1], abs=1e-4)
    log_slope = np.polyfit(np.log(x), np.log(y), 1)[0]
    assert abs(law.exponent - log_slope) > 1e-3  # the fit space matters: not the log-space slope


def test_round_trip_and_clear_failures(three_runs: Path, tmp_path: Path) -> None:
    g = [1e10 * (i + 1) for i in range(13)]
    for folder, scale, first_loss in (
        ("10M_flops", 1, 3.0),
        ("85M_flops", 10, 2.8),
        ("1.2B_flops", 100, 2.6),
    ):
        write_log(
            tmp_path / "spread" / folder / "run.csv",
            [x * scale for x in g],
            [first_loss - 0.01 * i for i in range(13)],
        )
    fit = nf.notebook_fit(nf.read_log_dir(tmp_path / "spread"), "clm")
    assert [p.n_params for p in fit.envelope] == [9830400, 84934656, 1208881136]
    assert nf.NotebookFit.from_dict(fit.to_dict()) == fit
    with pytest.raises(ValueError, match="did not converge on 3 envelope points"):  # one N at every target
        nf.notebook_fit(nf.read_log_dir(three_runs), "clm")
    only_a = [f for f in nf.read_log_dir(three_runs) if f.folder == "10M_flops"]
    with pytest.raises(ValueError, match="1 envelope points"):
        nf.notebook_fit(only_a, "clm")
    with pytest.raises(ValueError, match="not a folder"):
        nf.read_log_dir(three_runs / "missing")


@needs_logs
@pytest.mark.parametrize(("objective", "folder"), [("clm", "gpt_valid"), ("mlm", "mlm_valid")])
def test_the_notebooks_printed_laws_are_reproduced(objective: str, folder: str) -> None:
    fit = nf.notebook_fit(nf.read_log_dir(SHARED_LOGS / folder / "approach3_flops"), objective)
    for name in ("loss", "n_opt", "d_opt"):
        coefficient, exponent = nf.PUBLISHED_NOTEBOOK[objective][name]
        law = getattr(fit, name)
        assert law.exponent == pytest.approx(exponent, abs=2e-6), name
        assert law.coefficient == pytest.approx(coefficient, rel=5e-5), name


@needs_logs
def test_the_published_clm_law_needs_the_6m_folder_first() -> None:
    files = nf.read_log_dir(SHARED_LOGS / "gpt_valid" / "approach3_flops")
    by_name = sorted(files, key=lambda f: f.folder)  # 13M_flops before 6M_flops
    assert nf.notebook_fit(by_name, "clm").n_opt.exponent == pytest.approx(0.557354, abs=2e-6)


@needs_logs
def test_bootstrap_interval_contains_the_fit_and_is_reproducible() -> None:
    files = nf.read_log_dir(SHARED_LOGS / "mlm_valid" / "approach3_flops")
    boot = nf.notebook_bootstrap(files, "mlm", n_resamples=30, seed=1)
    again = nf.notebook_bootstrap(files, "mlm", n_resamples=30, seed=1)
    assert boot.percentiles == again.percentiles
    n_opt = boot.percentiles["n_opt_exponent"]
    assert n_opt["lo"] < 0.7598 < n_opt["hi"] and n_opt["hi"] - n_opt["lo"] > 0.02
    assert boot.to_dict()["full_fit"]["method"] == "notebook_envelope"
