"""Classification metrics of the downstream tasks: accuracy, Matthews correlation (binary and K-class) and
percentile bootstrap intervals."""

from __future__ import annotations

import math
from typing import Any

import numpy as np


def confusion_matrix(y_true: np.ndarray, y_pred: np.ndarray, n_classes: int) -> np.ndarray:
    """``C[i, j]`` = number of proteins of true class i predicted as j."""
    y_true, y_pred = np.asarray(y_true, dtype=np.int64), np.asarray(y_pred, dtype=np.int64)
    assert y_true.shape == y_pred.shape, "one prediction per protein"
    out = np.zeros((n_classes, n_classes), dtype=np.int64)
    np.add.at(out, (y_true, y_pred), 1)
    return out


def mcc_from_confusion(confusion: np.ndarray) -> float:
    """Matthews correlation of a K x K confusion matrix, Gorodkin's R_K (Comput. Biol. Chem. 28:367, 2004):

        R_K = (c s - sum_k p_k t_k) / sqrt((s^2 - sum_k p_k^2) (s^2 - sum_k t_k^2))

    with s proteins, c correct, t_k true and p_k predicted counts of class k; for K = 2 it is the usual
    (TP TN - FP FN) / sqrt(...).  0 when a marginal is constant (the denominator vanishes), as scikit-learn.
    """
    c = np.asarray(confusion, dtype=np.float64)
    s = c.sum()
    correct = np.trace(c)
    t = c.sum(axis=1)
    p = c.sum(axis=0)
    denom = math.sqrt(max(s * s - float(p @ p), 0.0) * max(s * s - float(t @ t), 0.0))
    return float((correct * s - float(p @ t)) / denom) if denom else 0.0


def accuracy_mcc(y_true: np.ndarray, y_pred: np.ndarray, n_classes: int) -> tuple[float, float]:
    confusion = confusion_matrix(y_true, y_pred, n_classes)
    return float(np.trace(confusion) / max(confusion.sum(), 1)), mcc_from_confusion(confusion)


def bootstrap_intervals(
    y_true: np.ndarray,
    y_pred: np.ndarray,
    n_classes: int,
    *,
    n_bootstrap: int,
    seed: int,
    level: float = 0.95,
) -> dict[str, tuple[float, float]]:
    """Percentile bootstrap intervals of accuracy and MCC: ``n_bootstrap`` resamples of the test proteins
    with replacement (Efron & Tibshirani 1993, ch. 13), seeded."""
    y_true, y_pred = np.asarray(y_true), np.asarray(y_pred)
    rng = np.random.default_rng(seed)
    acc, mcc = np.empty(n_bootstrap), np.empty(n_bootstrap)
    n = len(y_true)
    for b in range(n_bootstrap):
        idx = rng.integers(0, n, size=n)
        acc[b], mcc[b] = accuracy_mcc(y_true[idx], y_pred[idx], n_classes)
    tail = 100 * (1 - level) / 2
    return {
        "accuracy": (float(np.percentile(acc, tail)), float(np.percentile(acc, 100 - tail))),
        "mcc": (float(np.percentile(mcc, tail)), float(np.percentile(mcc, 100 - tail))),
    }


def score(
    train_labels: np.ndarray,
    test_labels: np.ndarray,
    test_pred: np.ndarray,
    n_classes: int,
    *,
    n_bootstrap: int,
    seed: int,
) -> dict[str, Any]:
    """Test accuracy and MCC with bootstrap 95% intervals, and the majority-class baseline."""
    acc, mcc = accuracy_mcc(test_labels, test_pred, n_classes)
    ci = bootstrap_intervals(test_labels, test_pred, n_classes, n_bootstrap=n_bootstrap, seed=seed)
    majority = int(np.bincount(train_labels, minlength=n_classes).argmax())
    return {
        "test_accuracy": acc,
        "test_accuracy_lo": ci["accuracy"][0],
        "test_accuracy_hi": ci["accuracy"][1],
        "test_mcc": mcc,
        "test_mcc_lo": ci["mcc"][0],
        "test_mcc_hi": ci["mcc"][1],
        "majority_accuracy": float(np.mean(test_labels == majority)),
    }
