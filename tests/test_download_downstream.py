"""Downstream labels and probe vs hand-worked values (the download tests are in tests/test_download.py)."""

import numpy as np
import pytest
from plmscale.downstream import binary_metrics, fit_logistic, max_window_hydropathy


def test_hydropathy_window_hand_worked():
    # I = 4.5, K = -3.9; window 3 over "KIIIK": windows KII (1.7), III (4.5), IIK (1.7)
    assert max_window_hydropathy("KIIIK", 3) == pytest.approx(4.5)
    assert max_window_hydropathy("KI", 19) == pytest.approx((4.5 - 3.9) / 2)
    # a 19-residue leucine stretch (3.8) is a transmembrane segment; a lysine-rich one is not
    assert max_window_hydropathy("K" * 30 + "L" * 19 + "K" * 30, 19) == pytest.approx(3.8)
    assert max_window_hydropathy("K" * 50, 19) < 1.6


def test_binary_metrics_hand_worked():
    y = np.array([1, 1, 0, 0, 0])
    p = np.array([1, 0, 0, 0, 1])
    m = binary_metrics(y, p)
    assert m["accuracy"] == pytest.approx(3 / 5)
    assert m["balanced_accuracy"] == pytest.approx(0.5 * (1 / 2 + 2 / 3))
    # MCC = (tp tn - fp fn) / sqrt((tp+fp)(tp+fn)(tn+fp)(tn+fn)) = (1*2 - 1*1) / sqrt(2*2*3*3) = 1/6
    assert m["mcc"] == pytest.approx(1 / 6)


def test_logistic_probe_separates_separable_data():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(200, 3))
    y = (x[:, 0] - 0.5 * x[:, 1] > 0).astype(int)
    w, b = fit_logistic(x, y, l2=1e-4)
    assert np.mean(((x @ w + b) > 0) == y) > 0.97
    assert w[0] > 0 > w[1] and abs(w[2]) < abs(w[1])
