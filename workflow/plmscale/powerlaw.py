"""Power laws ``y = k x^p`` and the input checks every fit in plmscale shares.

Pure numpy, no I/O. :func:`fit_power_law` is the log-space least-squares fit used by Approaches 1
and 2; :func:`compute_optimal_laws` turns a parametric loss ``L(N, D)`` into ``N_opt(C)``, ``D_opt(C)``
(Hoffmann et al. 2022, eq. 4). The checks raise ``ValueError`` naming the input, the first bad index
and the fix.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

FloatArray = NDArray[np.float64]


def plain(x: Any) -> float | None:
    """A float for JSON: ``None`` when missing or non-finite."""
    if x is None:
        return None
    v = float(x)
    return v if math.isfinite(v) else None


def as_1d(name: str, values: ArrayLike) -> FloatArray:
    arr = np.asarray(values, dtype=np.float64)
    if arr.ndim != 1:
        raise ValueError(f"{name} must be one-dimensional, got shape {arr.shape}; pass a flat array or list")
    return arr


def check_finite(name: str, arr: FloatArray) -> None:
    bad = ~np.isfinite(arr)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise ValueError(
            f"{name} has {int(bad.sum())} non-finite value(s) (first at index {i}: {arr[i]!r}); "
            "drop those rows (e.g. diverged runs) before fitting"
        )


def check_positive(name: str, arr: FloatArray) -> None:
    check_finite(name, arr)
    bad = arr <= 0
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise ValueError(
            f"{name} must be > 0 for a log-space fit; {int(bad.sum())} value(s) are not "
            f"(first at index {i}: {arr[i]!r}); remove or correct those rows"
        )


def same_length(**arrays: FloatArray) -> int:
    lengths = {k: len(v) for k, v in arrays.items()}
    if len(set(lengths.values())) != 1:
        raise ValueError(f"inputs must have equal lengths, got {lengths}")
    return next(iter(lengths.values()))


def positive_arrays(**values: ArrayLike) -> list[FloatArray]:
    """Each input as a flat float array, all of one length, all finite and > 0 (for log-space fits)."""
    arrays = {name: as_1d(name, v) for name, v in values.items()}
    same_length(**arrays)
    for name, arr in arrays.items():
        check_positive(name, arr)
    return list(arrays.values())


@dataclass(frozen=True)
class PowerLaw:
    """``y = coefficient * x ** exponent``."""

    coefficient: float
    exponent: float

    def __call__(self, x: ArrayLike) -> Any:
        """Evaluate the law; a float for scalar ``x``, else an array."""
        arr = np.asarray(x, dtype=np.float64)
        y = self.coefficient * np.power(arr, self.exponent)
        return float(y) if y.ndim == 0 else y

    def to_dict(self) -> dict[str, float | None]:
        return {"coefficient": plain(self.coefficient), "exponent": plain(self.exponent)}

    @classmethod
    def from_dict(cls, d: Any) -> PowerLaw:
        return cls(coefficient=float(d["coefficient"]), exponent=float(d["exponent"]))


def fit_power_law(x: ArrayLike, y: ArrayLike) -> PowerLaw:
    """Least-squares fit of ``log y = log k + p log x``; returns ``PowerLaw(k, p)``.

    Raises ``ValueError`` for fewer than 2 points, mismatched lengths, non-finite or non-positive values, or
    when all ``x`` are equal (the slope is then undefined).
    """
    xa, ya = as_1d("x", x), as_1d("y", y)
    n = same_length(x=xa, y=ya)
    if n < 2:
        raise ValueError(f"a power-law fit needs at least 2 points, got {n}; supply more (x, y) pairs")
    check_positive("x", xa)
    check_positive("y", ya)
    lx, ly = np.log(xa), np.log(ya)
    dx = lx - lx.mean()
    sxx = float(dx @ dx)
    if sxx <= 0.0 or np.ptp(lx) == 0.0:
        raise ValueError(
            f"all x values are equal ({xa[0]!r}); the exponent is undefined -- supply points spanning a range"
        )
    slope = float(dx @ (ly - ly.mean())) / sxx
    intercept = float(ly.mean() - slope * lx.mean())
    return PowerLaw(coefficient=math.exp(intercept), exponent=slope)


def parametric_loss(params: Any, n_params: ArrayLike, num_tokens: ArrayLike) -> Any:
    """``L(N, D) = E + A / N^alpha + B / D^beta`` (Hoffmann et al. 2022, eq. 2), the one definition every
    module uses (fits, the data-constrained law with ``D`` replaced by ``D'``, the planner).

    ``params`` maps ``E, A, B, alpha, beta`` to scalars or to arrays of equal length (bootstrap draws, which
    then broadcast against scalar ``N`` and ``D``). A float when everything is scalar.
    """
    out = (
        np.asarray(params["E"], dtype=np.float64)
        + np.asarray(params["A"], dtype=np.float64)
        * np.power(np.asarray(n_params, dtype=np.float64), -np.asarray(params["alpha"], dtype=np.float64))
        + np.asarray(params["B"], dtype=np.float64)
        * np.power(np.asarray(num_tokens, dtype=np.float64), -np.asarray(params["beta"], dtype=np.float64))
    )
    return float(out) if out.ndim == 0 else out


def compute_optimal_laws(big_a: float, big_b: float, alpha: float, beta: float) -> tuple[PowerLaw, PowerLaw]:
    """Compute-optimal allocation implied by ``L = E + A/N^alpha + B/D^beta`` under ``C = 6 N D``.

    Hoffmann et al. 2022, eq. (4): with ``G = (alpha A / (beta B))^(1/(alpha+beta))``,
    ``N_opt(C) = G (C/6)^(beta/(alpha+beta))`` and ``D_opt(C) = G^-1 (C/6)^(alpha/(alpha+beta))``.
    The returned coefficients absorb the 1/6: ``N_opt = G 6^-a C^a``.
    """
    if not (alpha > 0 and beta > 0 and big_a > 0 and big_b > 0):
        raise ValueError(
            f"the compute-optimal allocation needs A, B, alpha, beta > 0, got A={big_a!r}, B={big_b!r}, "
            f"alpha={alpha!r}, beta={beta!r}; the fit is degenerate -- check the data or the start grid"
        )
    s = alpha + beta
    a_exp, b_exp = beta / s, alpha / s
    log_g = (math.log(alpha) + math.log(big_a) - math.log(beta) - math.log(big_b)) / s
    log6 = math.log(6.0)
    n_law = PowerLaw(coefficient=math.exp(log_g - a_exp * log6), exponent=a_exp)
    d_law = PowerLaw(coefficient=math.exp(-log_g - b_exp * log6), exponent=b_exp)
    return n_law, d_law
