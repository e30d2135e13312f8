"""Numeric core of the scaling-law fits: Chinchilla Approaches 1, 2 and 3.

Pure numpy/scipy, no I/O, deterministic (every random draw goes through ``numpy.random.default_rng(seed)``).

Conventions used throughout (Hoffmann et al. 2022, "Training Compute-Optimal Large Language Models",
arXiv 2203.15556; Cheng et al. 2024 for the protein-LM setting):

* ``N`` -- non-embedding parameters of a model,
* ``D`` -- training tokens,
* ``C`` -- training compute in FLOPs, ``C = 6 N D``,
* ``L`` -- validation loss in nats/token.

The three estimators:

* :func:`approach1` -- Hoffmann Approach 1: minimum-loss envelope of the learning curves over compute, then
  power laws ``N_opt(C)``, ``D_opt(C)``, ``L(C)`` fitted in log space.
* :func:`approach2` -- Hoffmann Approach 2 (IsoFLOP profiles): a parabola of final loss in ``log N`` per
  compute budget; its minimum gives ``N_opt(C)``; then power laws across budgets.
* :func:`approach3` -- Hoffmann Approach 3 (eq. 2 and App. D.2): fit ``L(N, D) = E + A/N^alpha + B/D^beta``
  by minimising the *sum* of Huber losses (delta = 1e-3) between ``log L_hat`` and ``log L``, with
  ``log L_hat = LSE(a - alpha log N, b - beta log D, e)`` and ``A = e^a, B = e^b, E = e^e``, L-BFGS-B from a
  grid of starts. Besiroglu et al. 2024 ("Chinchilla Scaling: A replication attempt", arXiv 2404.10102)
  refitted Hoffmann's data this way; the discrepancy with Hoffmann's numbers was later attributed to averaging
  (not summing) the Huber terms, which makes L-BFGS stop early -- hence the sum here.
  :func:`approach3_bootstrap` gives percentile intervals by resampling points as Besiroglu et al. did.

All results are frozen dataclasses with ``to_dict()`` returning JSON-serialisable plain Python types
(non-finite floats become ``None``).
"""

from __future__ import annotations

import contextlib
import functools
import itertools
import math
import os
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray
from scipy.optimize import minimize, minimize_scalar

try:  # optional: keeps scipy's OpenBLAS single-threaded during the many tiny L-BFGS-B solves
    from threadpoolctl import threadpool_limits
except ImportError:  # pragma: no cover - depends on the environment
    threadpool_limits = None  # type: ignore[assignment]

__all__ = [
    "Approach1Result",
    "Approach2Budget",
    "Approach2Result",
    "Approach3BootstrapResult",
    "Approach3Grid",
    "Approach3Result",
    "DataConstrainedResult",
    "ExtrapolationResult",
    "HeldOutBudget",
    "LawBootstrapResult",
    "PowerLaw",
    "TransferLaw",
    "approach1",
    "approach1_bootstrap",
    "approach2",
    "approach2_bootstrap",
    "approach3",
    "approach3_bootstrap",
    "compute_optimal_laws",
    "effective_params",
    "effective_tokens",
    "extrapolation_check",
    "fit_data_constrained",
    "fit_power_law",
    "fit_transfer_law",
    "huber_log_objective",
    "interval",
    "tokens_to_reach",
]

FloatArray = NDArray[np.float64]

#: Columns :func:`approach1` needs in its ``curves`` table.
CURVE_COLUMNS: tuple[str, ...] = ("run_id", "flops", "n_params", "num_tokens", "loss")

#: Parameter order of the Approach 3 optimisation vector (Hoffmann et al. 2022, App. D.2: min over a, b, e,
#: alpha, beta).
THETA_NAMES: tuple[str, ...] = ("a", "b", "e", "alpha", "beta")


# --------------------------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------------------------


def _plain(x: Any) -> float | None:
    """A float for JSON: ``None`` when missing or non-finite."""
    if x is None:
        return None
    v = float(x)
    return v if math.isfinite(v) else None


def _as_1d(name: str, values: ArrayLike) -> FloatArray:
    arr = np.asarray(values, dtype=np.float64)
    if arr.ndim != 1:
        raise ValueError(f"{name} must be one-dimensional, got shape {arr.shape}; pass a flat array or list")
    return arr


def _check_finite(name: str, arr: FloatArray) -> None:
    bad = ~np.isfinite(arr)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise ValueError(
            f"{name} has {int(bad.sum())} non-finite value(s) (first at index {i}: {arr[i]!r}); "
            "drop those rows (e.g. diverged runs) before fitting"
        )


def _check_positive(name: str, arr: FloatArray) -> None:
    _check_finite(name, arr)
    bad = arr <= 0
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise ValueError(
            f"{name} must be > 0 for a log-space fit; {int(bad.sum())} value(s) are not "
            f"(first at index {i}: {arr[i]!r}); remove or correct those rows"
        )


def _check_same_length(**arrays: FloatArray) -> int:
    lengths = {k: len(v) for k, v in arrays.items()}
    if len(set(lengths.values())) != 1:
        raise ValueError(f"inputs must have equal lengths, got {lengths}")
    return next(iter(lengths.values()))


@functools.cache
def _warn_blas_threads() -> None:
    warnings.warn(
        "threadpoolctl is not installed and OPENBLAS_NUM_THREADS is not 1: scipy's L-BFGS-B calls OpenBLAS "
        "on tiny matrices, which multithreaded OpenBLAS runs 3-10x slower (more on a loaded machine); "
        "`pip install threadpoolctl` or export OPENBLAS_NUM_THREADS=1",
        RuntimeWarning,
        stacklevel=3,
    )


def _blas_single_threaded() -> contextlib.AbstractContextManager[Any]:
    """Limit BLAS to one thread while fitting (the problems are tiny; thread hand-offs dominate)."""
    if threadpool_limits is not None:
        return threadpool_limits(limits=1, user_api="blas")
    if os.environ.get("OPENBLAS_NUM_THREADS") != "1":
        _warn_blas_threads()
    return contextlib.nullcontext()


# --------------------------------------------------------------------------------------------------------
# power laws
# --------------------------------------------------------------------------------------------------------


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
        return {"coefficient": _plain(self.coefficient), "exponent": _plain(self.exponent)}


def fit_power_law(x: ArrayLike, y: ArrayLike) -> PowerLaw:
    """Least-squares fit of ``log y = log k + p log x``; returns ``PowerLaw(k, p)``.

    Raises ``ValueError`` for fewer than 2 points, mismatched lengths, non-finite or non-positive values, or
    when all ``x`` are equal (the slope is then undefined).
    """
    xa, ya = _as_1d("x", x), _as_1d("y", y)
    n = _check_same_length(x=xa, y=ya)
    if n < 2:
        raise ValueError(f"a power-law fit needs at least 2 points, got {n}; supply more (x, y) pairs")
    _check_positive("x", xa)
    _check_positive("y", ya)
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


# --------------------------------------------------------------------------------------------------------
# Approach 1: minimum-loss envelope over compute
# --------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Approach1Result:
    """Envelope points (one per non-empty compute bin, sorted by flops) and the three fitted laws."""

    run_id: tuple[Any, ...]
    flops: tuple[float, ...]
    n_params: tuple[float, ...]
    num_tokens: tuple[float, ...]
    loss: tuple[float, ...]
    bin_index: tuple[int, ...]
    n_bins: int
    n_points: int
    n_opt: PowerLaw
    d_opt: PowerLaw
    loss_law: PowerLaw

    def to_dict(self) -> dict[str, Any]:
        return {
            "method": "approach1",
            "n_bins": self.n_bins,
            "n_points": self.n_points,
            "n_envelope": len(self.flops),
            "envelope": {
                "run_id": [_plain_id(r) for r in self.run_id],
                "flops": [_plain(v) for v in self.flops],
                "n_params": [_plain(v) for v in self.n_params],
                "num_tokens": [_plain(v) for v in self.num_tokens],
                "loss": [_plain(v) for v in self.loss],
                "bin_index": list(self.bin_index),
            },
            "n_opt": self.n_opt.to_dict(),
            "d_opt": self.d_opt.to_dict(),
            "loss": self.loss_law.to_dict(),
        }


def _plain_id(x: Any) -> Any:
    if isinstance(x, np.generic):
        x = x.item()
    if isinstance(x, float):
        return _plain(x)
    if x is None or isinstance(x, str | int | bool):
        return x
    return str(x)


def _columns(curves: Any) -> list[str]:
    if hasattr(curves, "columns"):  # polars / pandas DataFrame
        return [str(c) for c in curves.columns]
    if isinstance(curves, Mapping):
        return [str(k) for k in curves]
    raise ValueError(
        f"curves must be a mapping of column name -> array or a DataFrame, got {type(curves).__name__}; "
        f"pass e.g. dict(run_id=..., flops=..., n_params=..., num_tokens=..., loss=...)"
    )


def approach1(curves: Any, *, n_bins: int = 30) -> Approach1Result:
    """Hoffmann et al. 2022 Approach 1 (Sec. 3.1): minimum over all runs of the loss at each compute.

    ``curves`` holds every logged point of every learning curve: a mapping of equal-length arrays or a
    polars/pandas DataFrame with columns ``run_id, flops, n_params, num_tokens, loss``. Compute is split into
    ``n_bins`` log-spaced bins between the smallest and largest ``flops``; in each bin the single point with
    the lowest loss (across all runs) forms the envelope; empty bins are dropped. Power laws
    ``N_opt(C)``, ``D_opt(C)`` and ``L(C)`` are then fitted by least squares in log space on the envelope
    points (at their own ``flops``). Hoffmann used 1500 bins on smoothed, interpolated curves; here the
    caller smooths if needed and chooses ``n_bins``.
    """
    if not isinstance(n_bins, int | np.integer) or n_bins < 1:
        raise ValueError(f"n_bins must be a positive integer, got {n_bins!r}")
    cols = _columns(curves)
    missing = [c for c in CURVE_COLUMNS if c not in cols]
    if missing:
        raise ValueError(f"curves lacks column(s) {missing} (has {cols}); required: {list(CURVE_COLUMNS)}")
    run_id = np.asarray(curves["run_id"])
    flops = _as_1d("flops", curves["flops"])
    n_params = _as_1d("n_params", curves["n_params"])
    num_tokens = _as_1d("num_tokens", curves["num_tokens"])
    loss = _as_1d("loss", curves["loss"])
    n = _check_same_length(flops=flops, n_params=n_params, num_tokens=num_tokens, loss=loss)
    if run_id.shape != (n,):
        raise ValueError(f"run_id must have shape ({n},) like the other columns, got {run_id.shape}")
    for name, arr in (("flops", flops), ("n_params", n_params), ("num_tokens", num_tokens), ("loss", loss)):
        _check_positive(name, arr)

    lo, hi = float(flops.min()), float(flops.max())
    if lo == hi:
        raise ValueError(f"all flops are equal ({lo!r}); Approach 1 needs points spread over compute")
    edges = np.geomspace(lo, hi, n_bins + 1)
    bins = np.clip(np.searchsorted(edges, flops, side="right") - 1, 0, n_bins - 1)
    order = np.lexsort((loss, bins))  # by bin, then by loss
    first = np.unique(bins[order], return_index=True)[1]
    pick = order[first]  # lowest-loss point of each non-empty bin, bins ascending
    if len(pick) < 2:
        raise ValueError(
            f"only {len(pick)} envelope point(s) from {n} points in {n_bins} bins; need >= 2 -- "
            "log more points per run or use runs spanning more compute"
        )
    return Approach1Result(
        run_id=tuple(run_id[pick].tolist()),
        flops=tuple(flops[pick].tolist()),
        n_params=tuple(n_params[pick].tolist()),
        num_tokens=tuple(num_tokens[pick].tolist()),
        loss=tuple(loss[pick].tolist()),
        bin_index=tuple(int(b) for b in bins[pick]),
        n_bins=int(n_bins),
        n_points=n,
        n_opt=fit_power_law(flops[pick], n_params[pick]),
        d_opt=fit_power_law(flops[pick], num_tokens[pick]),
        loss_law=fit_power_law(flops[pick], loss[pick]),
    )


# --------------------------------------------------------------------------------------------------------
# Approach 2: IsoFLOP parabolas
# --------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Approach2Budget:
    """One IsoFLOP profile. ``coefficients`` are ``(c2, c1, c0)`` of ``loss = c2 u^2 + c1 u + c0`` with
    ``u = ln N``; all fitted fields are ``None`` when ``skipped_reason`` is set."""

    budget: float
    n_runs: int
    n_sizes: int
    n_opt: float | None
    d_opt: float | None
    loss_opt: float | None
    coefficients: tuple[float, float, float] | None
    at_edge: bool
    skipped_reason: str | None

    @property
    def usable(self) -> bool:
        return self.skipped_reason is None

    def to_dict(self) -> dict[str, Any]:
        return {
            "budget": _plain(self.budget),
            "n_runs": self.n_runs,
            "n_sizes": self.n_sizes,
            "n_opt": _plain(self.n_opt),
            "d_opt": _plain(self.d_opt),
            "loss_opt": _plain(self.loss_opt),
            "coefficients": None if self.coefficients is None else [_plain(c) for c in self.coefficients],
            "at_edge": bool(self.at_edge),
            "skipped_reason": self.skipped_reason,
        }


@dataclass(frozen=True)
class Approach2Result:
    """Per-budget parabola minima and the power laws ``N_opt(C)``, ``D_opt(C)`` across usable budgets."""

    budgets: tuple[Approach2Budget, ...]
    n_opt: PowerLaw | None
    d_opt: PowerLaw | None
    law_reason: str | None
    exclude_edge: bool

    def to_dict(self) -> dict[str, Any]:
        return {
            "method": "approach2",
            "budgets": [b.to_dict() for b in self.budgets],
            "n_opt": None if self.n_opt is None else self.n_opt.to_dict(),
            "d_opt": None if self.d_opt is None else self.d_opt.to_dict(),
            "law_reason": self.law_reason,
            "exclude_edge": self.exclude_edge,
        }


def _isoflop_profile(budget: float, n: FloatArray, loss: FloatArray) -> Approach2Budget:
    sizes = np.unique(n)
    if len(sizes) < 3:
        return Approach2Budget(
            budget=budget, n_runs=len(n), n_sizes=len(sizes), n_opt=None, d_opt=None, loss_opt=None,
            coefficients=None, at_edge=False,
            skipped_reason=f"only {len(sizes)} distinct model size(s); a parabola needs >= 3",
        )  # fmt: skip
    u = np.log(n)
    m = float(u.mean())
    c2, c1c, c0c = (float(c) for c in np.polyfit(u - m, loss, 2))  # centred for conditioning
    # back to the uncentred polynomial in u = ln N
    c1 = c1c - 2.0 * c2 * m
    c0 = c2 * m * m - c1c * m + c0c
    if not c2 > 0:
        return Approach2Budget(
            budget=budget, n_runs=len(n), n_sizes=len(sizes), n_opt=None, d_opt=None, loss_opt=None,
            coefficients=(c2, c1, c0), at_edge=False, skipped_reason="no minimum (concave)",
        )  # fmt: skip
    u_opt = m - c1c / (2.0 * c2)
    loss_opt = c0c - c1c * c1c / (4.0 * c2)
    n_opt = math.exp(u_opt)
    raw_best = float(n[int(np.argmin(loss))])
    at_edge = bool(n_opt < sizes[0] or n_opt > sizes[-1] or raw_best in (sizes[0], sizes[-1]))
    return Approach2Budget(
        budget=budget, n_runs=len(n), n_sizes=len(sizes), n_opt=n_opt, d_opt=budget / (6.0 * n_opt),
        loss_opt=loss_opt, coefficients=(c2, c1, c0), at_edge=at_edge, skipped_reason=None,
    )  # fmt: skip


def approach2(
    budget_flops: ArrayLike, n_params: ArrayLike, loss: ArrayLike, *, exclude_edge: bool = False
) -> Approach2Result:
    """Hoffmann et al. 2022 Approach 2 (Sec. 3.2): IsoFLOP profiles.

    One entry per final run. Runs are grouped by *exact* ``budget_flops`` value (pass the nominal budget, not
    the measured compute). Per budget with >= 3 distinct sizes, fit ``loss = c2 u^2 + c1 u + c0`` with
    ``u = ln N`` (``np.polyfit`` degree 2); with ``c2 > 0`` the minimum is ``N_opt = exp(-c1 / (2 c2))``,
    ``D_opt = C / (6 N_opt)``, ``L_opt = c0 - c1^2 / (4 c2)``. ``at_edge`` flags a budget whose ``N_opt`` lies
    outside the sampled sizes or whose lowest raw loss is at the smallest or largest size (the minimum is
    then extrapolated, not bracketed). ``N_opt(C)`` and ``D_opt(C)`` power laws are fitted over the usable
    budgets (all non-skipped ones; also dropping edge budgets when ``exclude_edge``), needing >= 2.
    """
    c = _as_1d("budget_flops", budget_flops)
    n = _as_1d("n_params", n_params)
    y = _as_1d("loss", loss)
    _check_same_length(budget_flops=c, n_params=n, loss=y)
    if len(c) == 0:
        raise ValueError("approach2 got no runs; pass one entry per final IsoFLOP run")
    _check_positive("budget_flops", c)
    _check_positive("n_params", n)
    _check_finite("loss", y)

    records = []
    for budget in np.unique(c):
        sel = c == budget
        records.append(_isoflop_profile(float(budget), n[sel], y[sel]))

    usable = [r for r in records if r.usable and not (exclude_edge and r.at_edge)]
    n_law = d_law = None
    reason: str | None = None
    if len(usable) < 2:
        reason = f"{len(usable)} usable budget(s) of {len(records)}; power laws need >= 2" + (
            " (edge budgets excluded)" if exclude_edge else ""
        )
    else:
        bc = np.array([r.budget for r in usable])
        n_law = fit_power_law(bc, np.array([r.n_opt for r in usable], dtype=np.float64))
        d_law = fit_power_law(bc, np.array([r.d_opt for r in usable], dtype=np.float64))
    return Approach2Result(
        budgets=tuple(records), n_opt=n_law, d_opt=d_law, law_reason=reason, exclude_edge=exclude_edge
    )


# --------------------------------------------------------------------------------------------------------
# Approach 3: parametric fit of L(N, D)
# --------------------------------------------------------------------------------------------------------


def huber_log_objective(
    theta: FloatArray, log_n: FloatArray, log_d: FloatArray, log_loss: FloatArray, delta: float
) -> tuple[float, FloatArray]:
    """Hoffmann et al. 2022 App. D.2 objective and its analytic gradient.

    ``theta = (a, b, e, alpha, beta)``; with ``t1 = a - alpha ln N``, ``t2 = b - beta ln D``, ``t3 = e`` and
    ``r_i = LSE(t1, t2, t3) - ln L_i``, returns ``f = sum_i Huber_delta(r_i)`` where
    ``Huber_delta(r) = r^2/2`` for ``|r| <= delta`` else ``delta (|r| - delta/2)``, and ``grad f``. With the
    softmax weights ``w_k = exp(t_k - LSE)`` and ``h_i = clip(r_i, -delta, delta)`` (= Huber'):
    ``df/da = sum h w1``, ``df/db = sum h w2``, ``df/de = sum h w3``, ``df/dalpha = -sum h w1 ln N``,
    ``df/dbeta = -sum h w2 ln D``. The LSE subtracts the running maximum, so nothing overflows.
    """
    a, b, e, alpha, beta = theta
    t1 = a - alpha * log_n
    t2 = b - beta * log_d
    m = np.maximum(t1, t2)
    np.maximum(m, e, out=m)
    x1 = np.exp(t1 - m)
    x2 = np.exp(t2 - m)
    x3 = np.exp(e - m)
    s = x1 + x2 + x3
    r = m + np.log(s) - log_loss
    h = np.clip(r, -delta, delta)
    # Huber(r) = h * (r - h/2): r^2/2 inside, delta (|r| - delta/2) outside
    f = float(h @ (r - 0.5 * h))
    g = h / s
    g1 = g * x1
    g2 = g * x2
    grad = np.array([g1.sum(), g2.sum(), g @ x3, -(g1 @ log_n), -(g2 @ log_d)])
    return f, grad


@dataclass(frozen=True)
class Approach3Grid:
    """Grid of L-BFGS-B starting points (Cartesian product of the five tuples).

    The default is Hoffmann et al. 2022 App. D.2 as run by Besiroglu et al. 2024:
    alpha, beta in {0, 0.5, ..., 2}, e in {-1, -0.5, ..., 1}, a, b in {0, 5, ..., 25} -- 5*5*5*6*6 = 4,500.
    """

    alpha: tuple[float, ...] = (0.0, 0.5, 1.0, 1.5, 2.0)
    beta: tuple[float, ...] = (0.0, 0.5, 1.0, 1.5, 2.0)
    e: tuple[float, ...] = (-1.0, -0.5, 0.0, 0.5, 1.0)
    a: tuple[float, ...] = (0.0, 5.0, 10.0, 15.0, 20.0, 25.0)
    b: tuple[float, ...] = (0.0, 5.0, 10.0, 15.0, 20.0, 25.0)

    def __post_init__(self) -> None:
        for name in ("alpha", "beta", "e", "a", "b"):
            vals = getattr(self, name)
            if len(vals) == 0 or not all(math.isfinite(float(v)) for v in vals):
                raise ValueError(
                    f"Approach3Grid.{name} must be a non-empty tuple of finite floats, got {vals!r}"
                )

    @classmethod
    def small(cls) -> Approach3Grid:
        """108 starts (2*2*3*3*3) spanning the default grid's range, for tests and quick looks."""
        return cls(
            alpha=(0.5, 1.5), beta=(0.5, 1.5), e=(-1.0, 0.0, 1.0), a=(0.0, 10.0, 20.0), b=(0.0, 10.0, 20.0)
        )

    def __len__(self) -> int:
        return len(self.alpha) * len(self.beta) * len(self.e) * len(self.a) * len(self.b)

    def starts(self) -> FloatArray:
        """All starts as rows of ``theta = (a, b, e, alpha, beta)``, shape ``(len(self), 5)``."""
        rows = itertools.product(self.a, self.b, self.e, self.alpha, self.beta)
        return np.array(list(rows), dtype=np.float64).reshape(-1, 5)

    def to_dict(self) -> dict[str, list[float]]:
        return {k: [float(v) for v in getattr(self, k)] for k in ("alpha", "beta", "e", "a", "b")}


#: L-BFGS-B options of the polishing stage. scipy stops when the *absolute* decrease of f is below
#: ``ftol * max(|f|, 1)``; the summed Huber objective is ~1e-3 here, so the default ftol (2.2e-9) lets a run
#: stall ~1e-5 above its optimum -- enough to freeze a warm-started bootstrap refit at its start (the same
#: early-termination trap attributed to Hoffmann et al.'s averaged objective).
POLISH_OPTIONS: Mapping[str, float] = {"ftol": 1e-14, "gtol": 1e-12}


@dataclass(frozen=True)
class _MultiStart:
    theta: FloatArray
    objective: float
    converged: bool
    message: str
    n_starts: int
    n_failed: int
    failures: tuple[str, ...]


def _lbfgsb(x0: FloatArray, args: tuple[Any, ...], max_iter: int, tight: bool) -> Any:
    options: dict[str, float] = {"maxiter": max_iter}
    if tight:
        options.update(POLISH_OPTIONS)
    return minimize(huber_log_objective, x0, args=args, jac=True, method="L-BFGS-B", options=options)


def _multistart(
    starts: FloatArray,
    args: tuple[FloatArray, FloatArray, FloatArray, float],
    max_iter: int,
    n_polish: int,
) -> _MultiStart:
    """Run L-BFGS-B (scipy default tolerances) from every row of ``starts``, then re-run the ``n_polish``
    lowest results with :data:`POLISH_OPTIONS`; keep the lowest finite objective.

    A start counts as failed when scipy reports ``success=False`` or the result is non-finite; failures are
    counted and their distinct messages kept (exceptions are not caught: a crash is a bug to see).
    """
    n_failed = 0
    failures: dict[str, int] = {}
    finished: list[tuple[float, FloatArray]] = []
    for x0 in starts:
        res = _lbfgsb(x0, args, max_iter, tight=False)
        finite = bool(np.isfinite(res.fun) and np.all(np.isfinite(res.x)))
        if not (res.success and finite):
            n_failed += 1
            msg = str(res.message) if finite else f"non-finite result ({res.message})"
            failures[msg] = failures.get(msg, 0) + 1
        if finite:
            finished.append((float(res.fun), np.asarray(res.x, dtype=np.float64)))
    if not finished:
        raise RuntimeError(
            f"all {len(starts)} L-BFGS-B starts gave non-finite results ({failures}); "
            "check the inputs for extreme values"
        )
    finished.sort(key=lambda item: item[0])
    best_f, best_x = finished[0]
    best_ok, best_msg = True, "best of the first stage (not polished)"
    for _, x in finished[: max(n_polish, 0)]:
        res = _lbfgsb(x, args, max_iter, tight=True)
        if np.isfinite(res.fun) and np.all(np.isfinite(res.x)) and res.fun <= best_f:
            best_f, best_x = float(res.fun), np.asarray(res.x, dtype=np.float64)
            best_ok, best_msg = bool(res.success), f"polished: {res.message}"
    return _MultiStart(
        theta=best_x,
        objective=best_f,
        converged=best_ok,
        message=best_msg,
        n_starts=len(starts),
        n_failed=n_failed,
        failures=tuple(f"{k} (x{v})" for k, v in sorted(failures.items())),
    )


@dataclass(frozen=True)
class Approach3Result:
    """Fitted ``L(N, D) = E + A/N^alpha + B/D^beta`` and its implied compute-optimal allocation."""

    E: float
    A: float
    B: float
    alpha: float
    beta: float
    objective: float
    huber_delta: float
    n_points: int
    n_starts: int
    n_failed: int
    failure_messages: tuple[str, ...]
    best_converged: bool
    best_message: str
    n_opt: PowerLaw | None
    d_opt: PowerLaw | None
    law_reason: str | None

    @property
    def theta(self) -> FloatArray:
        """``(a, b, e, alpha, beta)`` = ``(ln A, ln B, ln E, alpha, beta)``."""
        return np.array([math.log(self.A), math.log(self.B), math.log(self.E), self.alpha, self.beta])

    def predict(self, n: ArrayLike, d: ArrayLike) -> Any:
        """``E + A n^-alpha + B d^-beta``; a float for scalar inputs."""
        na = np.asarray(n, dtype=np.float64)
        da = np.asarray(d, dtype=np.float64)
        out = self.E + self.A * np.power(na, -self.alpha) + self.B * np.power(da, -self.beta)
        return float(out) if np.ndim(out) == 0 else out

    def to_dict(self) -> dict[str, Any]:
        return {
            "method": "approach3",
            "E": _plain(self.E),
            "A": _plain(self.A),
            "B": _plain(self.B),
            "alpha": _plain(self.alpha),
            "beta": _plain(self.beta),
            "objective": _plain(self.objective),
            "huber_delta": _plain(self.huber_delta),
            "n_points": self.n_points,
            "n_starts": self.n_starts,
            "n_failed": self.n_failed,
            "failure_messages": list(self.failure_messages),
            "best_converged": self.best_converged,
            "best_message": self.best_message,
            "n_opt": None if self.n_opt is None else self.n_opt.to_dict(),
            "d_opt": None if self.d_opt is None else self.d_opt.to_dict(),
            "law_reason": self.law_reason,
        }


def _approach3_inputs(
    n_params: ArrayLike, num_tokens: ArrayLike, loss: ArrayLike, huber_delta: float, max_iter: int
) -> tuple[FloatArray, FloatArray, FloatArray]:
    n = _as_1d("n_params", n_params)
    d = _as_1d("num_tokens", num_tokens)
    y = _as_1d("loss", loss)
    k = _check_same_length(n_params=n, num_tokens=d, loss=y)
    if k < 5:
        raise ValueError(f"approach3 fits 5 parameters and needs >= 5 points, got {k}; supply more runs")
    _check_positive("n_params", n)
    _check_positive("num_tokens", d)
    _check_positive("loss", y)
    if not (math.isfinite(huber_delta) and huber_delta > 0):
        raise ValueError(f"huber_delta must be a finite positive float, got {huber_delta!r} (Hoffmann: 1e-3)")
    if max_iter < 1:
        raise ValueError(f"max_iter must be >= 1, got {max_iter!r}")
    return np.log(n), np.log(d), np.log(y)


def _result_from(fit: _MultiStart, huber_delta: float, n_points: int) -> Approach3Result:
    a, b, e, alpha, beta = (float(v) for v in fit.theta)
    big_a, big_b = math.exp(a), math.exp(b)
    n_law = d_law = None
    reason = None
    if alpha > 0 and beta > 0:
        n_law, d_law = compute_optimal_laws(big_a, big_b, alpha, beta)
    else:
        reason = f"alpha={alpha:.4g}, beta={beta:.4g}: allocation laws need both > 0"
    return Approach3Result(
        E=math.exp(e), A=big_a, B=big_b, alpha=alpha, beta=beta,
        objective=fit.objective, huber_delta=float(huber_delta), n_points=n_points,
        n_starts=fit.n_starts, n_failed=fit.n_failed, failure_messages=fit.failures,
        best_converged=fit.converged, best_message=fit.message,
        n_opt=n_law, d_opt=d_law, law_reason=reason,
    )  # fmt: skip


def approach3(
    n_params: ArrayLike,
    num_tokens: ArrayLike,
    loss: ArrayLike,
    *,
    huber_delta: float = 1e-3,
    init_grid: Approach3Grid | None = None,
    max_iter: int = 1000,
    n_polish: int = 10,
) -> Approach3Result:
    """Hoffmann et al. 2022 Approach 3 (eq. 2, App. D.2), as replicated by Besiroglu et al. 2024.

    Minimises ``sum_i Huber_delta(LSE(a - alpha ln N_i, b - beta ln D_i, e) - ln L_i)`` with L-BFGS-B and the
    analytic gradient of :func:`huber_log_objective`, from every start of ``init_grid`` (default: the
    4,500-point Hoffmann grid) with scipy's default tolerances (as Hoffmann and Besiroglu et al. ran it), then
    re-runs the ``n_polish`` lowest results with the tight :data:`POLISH_OPTIONS` and keeps the lowest
    objective. Starts with ``success=False`` or non-finite results are counted in ``n_failed`` and summarised
    in ``failure_messages``; whether the winning (polished) run converged is ``best_converged``. The implied
    ``N_opt(C)``, ``D_opt(C)`` come from :func:`compute_optimal_laws`.
    """
    if n_polish < 0:
        raise ValueError(f"n_polish must be >= 0, got {n_polish!r}")
    grid = Approach3Grid() if init_grid is None else init_grid
    log_n, log_d, log_l = _approach3_inputs(n_params, num_tokens, loss, huber_delta, max_iter)
    with _blas_single_threaded():
        fit = _multistart(grid.starts(), (log_n, log_d, log_l, float(huber_delta)), max_iter, n_polish)
    return _result_from(fit, huber_delta, len(log_n))


@dataclass(frozen=True)
class Approach3BootstrapResult:
    """Bootstrap distribution of the Approach 3 parameters.

    ``percentiles[name]`` maps ``"p2.5"``, ``"p50"``, ``"p97.5"`` to values; ``std[name]`` is the bootstrap
    standard error (what Besiroglu et al. 2024 report). Names: E, A, B, alpha, beta and the allocation
    exponents ``a = beta/(alpha+beta)`` (of N_opt) and ``b = alpha/(alpha+beta)`` (of D_opt).
    """

    n_resamples: int
    seed: int
    starts_per_resample: int
    full_fit: Approach3Result
    percentiles: Mapping[str, Mapping[str, float]]
    std: Mapping[str, float]
    samples: Mapping[str, tuple[float, ...]] = field(repr=False)
    n_failed_starts: int
    n_resamples_not_converged: int

    def to_dict(self) -> dict[str, Any]:
        return {
            "method": "approach3_bootstrap",
            "n_resamples": self.n_resamples,
            "seed": self.seed,
            "starts_per_resample": self.starts_per_resample,
            "full_fit": self.full_fit.to_dict(),
            "percentiles": {k: {q: _plain(v) for q, v in p.items()} for k, p in self.percentiles.items()},
            "std": {k: _plain(v) for k, v in self.std.items()},
            "n_failed_starts": self.n_failed_starts,
            "n_resamples_not_converged": self.n_resamples_not_converged,
            # per-draw values, in step across names, so a caller can propagate them (e.g. L(N, D) CIs)
            "samples": {k: [_plain(v) for v in vals] for k, vals in self.samples.items()},
        }


BOOTSTRAP_QUANTILES: tuple[float, ...] = (2.5, 50.0, 97.5)


def approach3_bootstrap(
    n_params: ArrayLike,
    num_tokens: ArrayLike,
    loss: ArrayLike,
    *,
    n_resamples: int,
    seed: int,
    grid: Approach3Grid | None = None,
    n_grid_starts: int = 4,
    huber_delta: float = 1e-3,
    max_iter: int = 1000,
    n_polish: int = 2,
    full_fit: Approach3Result | None = None,
) -> Approach3BootstrapResult:
    """Nonparametric bootstrap of :func:`approach3` (as Besiroglu et al. 2024: resample points with
    replacement and refit).

    Each resample (``numpy.random.default_rng(seed)``) is fitted from the full-data optimum plus
    ``n_grid_starts`` starts drawn without replacement from ``grid`` (default: the Hoffmann grid),
    polishing the ``n_polish`` best with tight tolerances and keeping the lowest objective. The polish
    matters: with scipy's default ``ftol`` a refit started at the full-data optimum stalls next to it and
    the bootstrap spread collapses (Chinchilla: SE of alpha 0.009 instead of 0.015). ``full_fit`` skips
    refitting the full data when already available (it must come from the same inputs). Percentiles are
    2.5/50/97.5; ``std`` is the bootstrap standard error.
    """
    if n_polish < 1:
        raise ValueError(f"n_polish must be >= 1 for bootstrap refits (see docstring), got {n_polish!r}")
    if n_resamples < 2:
        raise ValueError(f"n_resamples must be >= 2 for percentiles, got {n_resamples!r}")
    g = Approach3Grid() if grid is None else grid
    if not 0 <= n_grid_starts <= len(g):
        raise ValueError(f"n_grid_starts must be in [0, {len(g)}] (grid size), got {n_grid_starts!r}")
    log_n, log_d, log_l = _approach3_inputs(n_params, num_tokens, loss, huber_delta, max_iter)
    k = len(log_n)
    if full_fit is None:
        full_fit = approach3(
            n_params, num_tokens, loss, huber_delta=huber_delta, init_grid=g, max_iter=max_iter
        )
    elif full_fit.n_points != k:
        raise ValueError(f"full_fit was fitted on {full_fit.n_points} points but {k} were given; refit it")
    rng = np.random.default_rng(seed)
    grid_starts = g.starts()
    names = ("E", "A", "B", "alpha", "beta", "a", "b")
    draws: dict[str, list[float]] = {name: [] for name in names}
    n_failed = 0
    not_converged = 0
    with _blas_single_threaded():
        for _ in range(n_resamples):
            idx = rng.integers(0, k, size=k)
            extra = grid_starts[rng.choice(len(grid_starts), size=n_grid_starts, replace=False)]
            starts = np.vstack([full_fit.theta[None, :], extra])
            fit = _multistart(
                starts, (log_n[idx], log_d[idx], log_l[idx], float(huber_delta)), max_iter, n_polish
            )
            n_failed += fit.n_failed
            not_converged += not fit.converged
            a, b, e, alpha, beta = (float(v) for v in fit.theta)
            s = alpha + beta
            for name, v in zip(
                names,
                (math.exp(e), math.exp(a), math.exp(b), alpha, beta, beta / s if s else math.nan,
                 alpha / s if s else math.nan),
                strict=True,
            ):  # fmt: skip
                draws[name].append(v)
    percentiles: dict[str, dict[str, float]] = {}
    std: dict[str, float] = {}
    for name in names:
        arr = np.asarray(draws[name])
        qs = np.percentile(arr, BOOTSTRAP_QUANTILES)
        percentiles[name] = {f"p{q:g}": float(v) for q, v in zip(BOOTSTRAP_QUANTILES, qs, strict=True)}
        std[name] = float(np.std(arr, ddof=1))
    return Approach3BootstrapResult(
        n_resamples=int(n_resamples),
        seed=int(seed),
        starts_per_resample=1 + n_grid_starts,
        full_fit=full_fit,
        percentiles=percentiles,
        std=std,
        samples={name: tuple(v) for name, v in draws.items()},
        n_failed_starts=n_failed,
        n_resamples_not_converged=not_converged,
    )


# --------------------------------------------------------------------------------------------------------
# bootstrap intervals of the Approach 1 and 2 laws
# --------------------------------------------------------------------------------------------------------


def interval(values: ArrayLike) -> dict[str, float]:
    """Percentile interval ``{"lo": p2.5, "median": p50, "hi": p97.5}`` of bootstrap draws
    (:data:`BOOTSTRAP_QUANTILES`, ``numpy.percentile`` with linear interpolation)."""
    arr = _as_1d("values", values)
    if len(arr) == 0:
        raise ValueError("interval needs at least one value; every bootstrap resample failed -- see n_failed")
    _check_finite("values", arr)
    lo, med, hi = (float(v) for v in np.percentile(arr, BOOTSTRAP_QUANTILES))
    return {"lo": lo, "median": med, "hi": hi}


@dataclass(frozen=True)
class LawBootstrapResult:
    """Bootstrap distribution of the power laws of Approach 1 or 2.

    ``percentiles[name]`` is :func:`interval` of ``samples[name]``; names are ``n_opt_exponent``,
    ``n_opt_coefficient``, ``d_opt_exponent``, ``d_opt_coefficient`` and, for Approach 1, ``loss_exponent``,
    ``loss_coefficient`` (the envelope law ``L(C)``). ``samples[name][i]`` of one ``i`` come from one
    resample, so functions of several parameters (e.g. ``N_opt`` at a new budget) can be propagated per draw.
    Failed resamples (too few envelope points, fewer than two usable budgets) are counted in ``n_failed``
    with their distinct reasons in ``failure_messages`` and contribute no draw.
    """

    method: str
    n_resamples: int
    seed: int
    resample_unit: str
    n_failed: int
    failure_messages: tuple[str, ...]
    full_fit: Approach1Result | Approach2Result
    percentiles: Mapping[str, Mapping[str, float]]
    samples: Mapping[str, tuple[float, ...]] = field(repr=False)

    @property
    def n_succeeded(self) -> int:
        return self.n_resamples - self.n_failed

    def to_dict(self, *, include_samples: bool = True) -> dict[str, Any]:
        out: dict[str, Any] = {
            "method": self.method,
            "n_resamples": self.n_resamples,
            "n_succeeded": self.n_succeeded,
            "n_failed": self.n_failed,
            "failure_messages": list(self.failure_messages),
            "seed": self.seed,
            "resample_unit": self.resample_unit,
            "quantiles": list(BOOTSTRAP_QUANTILES),
            "full_fit": self.full_fit.to_dict(),
            "percentiles": {k: {q: _plain(v) for q, v in p.items()} for k, p in self.percentiles.items()},
        }
        if include_samples:
            out["samples"] = {k: [_plain(v) for v in vals] for k, vals in self.samples.items()}
        return out


def _law_draws(laws: Mapping[str, PowerLaw], draws: dict[str, list[float]]) -> None:
    for prefix, law in laws.items():
        draws[f"{prefix}_exponent"].append(law.exponent)
        draws[f"{prefix}_coefficient"].append(law.coefficient)


def _finish_bootstrap(
    method: str, unit: str, n_resamples: int, seed: int, full_fit: Approach1Result | Approach2Result,
    draws: dict[str, list[float]], failures: dict[str, int],
) -> LawBootstrapResult:  # fmt: skip
    n_ok = len(next(iter(draws.values())))
    if n_ok < 2:
        raise ValueError(
            f"{method}: only {n_ok} of {n_resamples} resamples could be fitted ({failures}); percentiles "
            "need >= 2 -- add runs (or budgets) or raise n_resamples"
        )
    return LawBootstrapResult(
        method=method, n_resamples=int(n_resamples), seed=int(seed), resample_unit=unit,
        n_failed=int(n_resamples) - n_ok,
        failure_messages=tuple(f"{k} (x{v})" for k, v in sorted(failures.items())),
        full_fit=full_fit,
        percentiles={k: interval(v) for k, v in draws.items()},
        samples={k: tuple(v) for k, v in draws.items()},
    )  # fmt: skip


def _check_resamples(n_resamples: int) -> None:
    if not isinstance(n_resamples, int | np.integer) or n_resamples < 2:
        raise ValueError(f"n_resamples must be an integer >= 2 for percentiles, got {n_resamples!r}")


def approach1_bootstrap(curves: Any, *, n_bins: int, n_resamples: int, seed: int) -> LawBootstrapResult:
    """Nonparametric bootstrap of :func:`approach1` over *runs*.

    Each resample (``numpy.random.default_rng(seed)``) draws as many runs as there are distinct ``run_id``
    values, with replacement, keeps every logged point of each drawn run (whole learning curves: the points
    of one run are not independent), and refits Approach 1 with the same ``n_bins``. A resample whose
    envelope has fewer than two points raises ``ValueError`` in :func:`approach1`; it is counted as failed
    (``n_failed``, reason in ``failure_messages``). Percentiles are 2.5/50/97.5 (:func:`interval`) of the
    exponents and coefficients of ``N_opt(C)``, ``D_opt(C)`` and ``L(C)``.
    """
    _check_resamples(n_resamples)
    full_fit = approach1(curves, n_bins=n_bins)  # validates the columns and values
    columns = {name: np.asarray(curves[name]) for name in CURVE_COLUMNS}
    run_rows: dict[Any, list[int]] = {}
    for i, rid in enumerate(columns["run_id"].tolist()):
        run_rows.setdefault(rid, []).append(i)
    groups = [np.asarray(rows, dtype=np.intp) for rows in run_rows.values()]
    rng = np.random.default_rng(seed)
    names = [f"{p}_{q}" for p in ("n_opt", "d_opt", "loss") for q in ("exponent", "coefficient")]
    draws: dict[str, list[float]] = {name: [] for name in names}
    failures: dict[str, int] = {}
    for _ in range(n_resamples):
        pick = rng.integers(0, len(groups), size=len(groups))
        idx = np.concatenate([groups[j] for j in pick])
        try:
            fit = approach1({k: v[idx] for k, v in columns.items()}, n_bins=n_bins)
        except ValueError as err:  # too few envelope points in this resample
            failures[str(err)] = failures.get(str(err), 0) + 1
            continue
        _law_draws({"n_opt": fit.n_opt, "d_opt": fit.d_opt, "loss": fit.loss_law}, draws)
    return _finish_bootstrap("approach1_bootstrap", "run", n_resamples, seed, full_fit, draws, failures)


def approach2_bootstrap(
    budget_flops: ArrayLike,
    n_params: ArrayLike,
    loss: ArrayLike,
    *,
    n_resamples: int,
    seed: int,
    exclude_edge: bool = False,
) -> LawBootstrapResult:
    """Stratified nonparametric bootstrap of :func:`approach2`.

    Each resample (``numpy.random.default_rng(seed)``) redraws, *within each budget*, as many runs as that
    budget has, with replacement, and refits Approach 2 (same ``exclude_edge``). A budget whose redraw has
    fewer than 3 distinct sizes (or a concave parabola) is skipped by :func:`approach2` as usual; a resample
    left with fewer than two usable budgets has no ``N_opt(C)`` law and is counted as failed (``n_failed``,
    reason in ``failure_messages``). Percentiles are 2.5/50/97.5 (:func:`interval`) of the exponents and
    coefficients of ``N_opt(C)`` and ``D_opt(C)``.
    """
    _check_resamples(n_resamples)
    full_fit = approach2(budget_flops, n_params, loss, exclude_edge=exclude_edge)  # validates the inputs
    c = _as_1d("budget_flops", budget_flops)
    n = _as_1d("n_params", n_params)
    y = _as_1d("loss", loss)
    groups = [np.flatnonzero(c == b) for b in np.unique(c)]
    rng = np.random.default_rng(seed)
    names = [f"{p}_{q}" for p in ("n_opt", "d_opt") for q in ("exponent", "coefficient")]
    draws: dict[str, list[float]] = {name: [] for name in names}
    failures: dict[str, int] = {}
    for _ in range(n_resamples):
        idx = np.concatenate([g[rng.integers(0, len(g), size=len(g))] for g in groups])
        fit = approach2(c[idx], n[idx], y[idx], exclude_edge=exclude_edge)
        if fit.n_opt is None or fit.d_opt is None:
            reason = fit.law_reason or "no N_opt law"
            failures[reason] = failures.get(reason, 0) + 1
            continue
        _law_draws({"n_opt": fit.n_opt, "d_opt": fit.d_opt}, draws)
    return _finish_bootstrap("approach2_bootstrap", "run within budget", n_resamples, seed, full_fit, draws,
                             failures)  # fmt: skip


# --------------------------------------------------------------------------------------------------------
# data-constrained scaling (Muennighoff et al. 2023)
# --------------------------------------------------------------------------------------------------------


def _effective(total: ArrayLike, unique: ArrayLike, r_star: float, names: tuple[str, str, str]) -> Any:
    t = np.asarray(total, dtype=np.float64)
    u = np.asarray(unique, dtype=np.float64)
    for name, arr in ((names[0], t), (names[1], u)):
        _check_positive(name, np.atleast_1d(arr).ravel())
    if not (math.isfinite(r_star) and r_star > 0):
        raise ValueError(
            f"{names[2]} must be a finite positive number of repetitions, got {r_star!r} "
            "(Muennighoff et al. 2023 fit R_D* = 15.4, R_N* = 5.3)"
        )
    u_used = np.minimum(t, u)  # fewer than one epoch: every token is unique, R = 0
    reps = t / u_used - 1.0
    out = u_used + u_used * r_star * (-np.expm1(-reps / r_star))
    return float(out) if out.ndim == 0 else out


def effective_tokens(num_tokens: ArrayLike, unique_tokens: ArrayLike, r_star: float) -> Any:
    """Effective data of Muennighoff et al. 2023 ("Scaling Data-Constrained Language Models", eq. 5).

    ``D' = U_D + U_D R_D* (1 - exp(-R_D / R_D*))`` with ``U_D = min(D, unique_tokens)`` unique tokens seen
    and ``R_D = D / U_D - 1`` repetitions. ``R_D = 0`` (at most one epoch) gives ``D' = D``; for
    ``R_D >> R_D*`` the value saturates at ``U_D (1 + R_D*)``; for ``R_D << R_D*`` repeated tokens are worth
    almost as much as new ones. Broadcasts; a float for scalar inputs.
    """
    return _effective(num_tokens, unique_tokens, r_star, ("num_tokens", "unique_tokens", "r_star"))


def effective_params(n_params: ArrayLike, unique_params: ArrayLike, r_star: float) -> Any:
    """The parameter analogue of :func:`effective_tokens` (Muennighoff et al. 2023, eq. 5):
    ``N' = U_N + U_N R_N* (1 - exp(-R_N / R_N*))``, ``U_N = min(N, unique_params)``, ``R_N = N / U_N - 1``.
    Muennighoff et al. take ``unique_params = N_opt(U_D)``, the compute-optimal size for the unique data;
    :func:`fit_data_constrained` does not use it (it keeps ``N' = N``)."""
    return _effective(n_params, unique_params, r_star, ("n_params", "unique_params", "r_star"))


@dataclass(frozen=True)
class DataConstrainedResult:
    """``L = E + A/N^alpha + B/D'^beta`` with ``D' = effective_tokens(D, U_D, r_star_d)``; ``E, A, B, alpha,
    beta`` are held at a base Approach 3 fit and only ``r_star_d`` is fitted."""

    r_star_d: float
    E: float
    A: float
    B: float
    alpha: float
    beta: float
    objective: float
    huber_delta: float
    n_points: int
    n_repeated: int
    at_bound: bool
    r_star_bounds: tuple[float, float]
    converged: bool
    message: str

    def predict(self, n: ArrayLike, d: ArrayLike, unique: ArrayLike) -> Any:
        """``E + A n^-alpha + B D'^-beta``; a float for scalar inputs."""
        d_eff = np.asarray(effective_tokens(d, unique, self.r_star_d), dtype=np.float64)
        out = self.E + self.A * np.power(np.asarray(n, dtype=np.float64), -self.alpha)
        out = out + self.B * np.power(d_eff, -self.beta)
        return float(out) if np.ndim(out) == 0 else out

    def to_dict(self) -> dict[str, Any]:
        return {
            "method": "data_constrained",
            "form": "L = E + A/N^alpha + B/D'^beta, D' = U_D + U_D R_D* (1 - exp(-R_D/R_D*))",
            "r_star_d": _plain(self.r_star_d),
            "base": {k: _plain(getattr(self, k)) for k in ("E", "A", "B", "alpha", "beta")},
            "objective": _plain(self.objective),
            "huber_delta": _plain(self.huber_delta),
            "n_points": self.n_points,
            "n_repeated": self.n_repeated,
            "at_bound": self.at_bound,
            "r_star_bounds": [_plain(v) for v in self.r_star_bounds],
            "converged": self.converged,
            "message": self.message,
        }


def fit_data_constrained(
    n_params: ArrayLike,
    num_tokens: ArrayLike,
    unique_tokens: ArrayLike,
    loss: ArrayLike,
    *,
    base: Approach3Result,
    huber_delta: float = 1e-3,
    r_star_bounds: tuple[float, float] = (1e-2, 1e4),
    n_grid: int = 81,
) -> DataConstrainedResult:
    """Fit ``R_D*`` of the data-constrained law (Muennighoff et al. 2023, eq. 5-6) with the rest held fixed.

    The model is ``L_hat = E + A/N^alpha + B/D'^beta`` with ``D' = effective_tokens(D, U_D, R_D*)`` and
    ``E, A, B, alpha, beta`` from ``base`` (fit it with :func:`approach3` on single-epoch runs, as Muennighoff
    et al. did). The objective is ``sum_i Huber_delta(ln L_hat_i - ln L_i)`` (as Approach 3); it is scanned on
    ``n_grid`` log-spaced values of ``R_D*`` in ``r_star_bounds`` and refined by scipy's bounded scalar
    minimiser over ``ln R_D*`` in the bracket around the best grid value. ``at_bound`` flags a minimum at
    either end of the bounds (``R_D*`` not identified: too few repeated epochs, or repetition costs nothing).
    Only runs with ``D > U_D`` inform ``R_D*``; without any, ``ValueError``.
    """
    n = _as_1d("n_params", n_params)
    d = _as_1d("num_tokens", num_tokens)
    u = _as_1d("unique_tokens", unique_tokens)
    y = _as_1d("loss", loss)
    k = _check_same_length(n_params=n, num_tokens=d, unique_tokens=u, loss=y)
    for name, arr in (("n_params", n), ("num_tokens", d), ("unique_tokens", u), ("loss", y)):
        _check_positive(name, arr)
    params = (base.E, base.A, base.B, base.alpha, base.beta)
    if not all(math.isfinite(v) and v > 0 for v in params):
        raise ValueError(f"base fit needs finite positive E, A, B, alpha, beta, got {params}; refit it")
    lo, hi = (float(v) for v in r_star_bounds)
    if not (0 < lo < hi and math.isfinite(hi)):
        raise ValueError(f"r_star_bounds must satisfy 0 < lo < hi < inf, got {r_star_bounds!r}")
    if not (math.isfinite(huber_delta) and huber_delta > 0):
        raise ValueError(f"huber_delta must be a finite positive float, got {huber_delta!r} (Hoffmann: 1e-3)")
    if n_grid < 3:
        raise ValueError(f"n_grid must be >= 3, got {n_grid!r}")
    n_repeated = int(np.count_nonzero(d > u))
    if n_repeated == 0:
        raise ValueError(
            f"none of the {k} runs repeats its data (num_tokens <= unique_tokens everywhere), so R_D* is not "
            "identifiable; include runs trained for more than one epoch"
        )
    big_e, big_a, big_b, alpha, beta = params
    fixed = big_e + big_a * np.power(n, -alpha)
    log_y = np.log(y)

    def objective(log_r: float) -> float:
        d_eff = effective_tokens(d, u, math.exp(log_r))
        r = np.log(fixed + big_b * np.power(d_eff, -beta)) - log_y
        h = np.clip(r, -huber_delta, huber_delta)
        return float(h @ (r - 0.5 * h))

    grid = np.linspace(math.log(lo), math.log(hi), int(n_grid))
    values = np.array([objective(float(g)) for g in grid])
    i = int(np.argmin(values))
    left, right = float(grid[max(i - 1, 0)]), float(grid[min(i + 1, len(grid) - 1)])
    res = minimize_scalar(objective, bounds=(left, right), method="bounded", options={"xatol": 1e-10})
    best_x, best_f = (float(res.x), float(res.fun)) if res.fun <= values[i] else (float(grid[i]), values[i])
    span = grid[-1] - grid[0]
    at_bound = bool(min(best_x - grid[0], grid[-1] - best_x) < 1e-6 * span)
    return DataConstrainedResult(
        r_star_d=math.exp(best_x), E=big_e, A=big_a, B=big_b, alpha=alpha, beta=beta,
        objective=float(best_f), huber_delta=float(huber_delta), n_points=k, n_repeated=n_repeated,
        at_bound=at_bound, r_star_bounds=(lo, hi), converged=bool(res.success), message=str(res.message),
    )  # fmt: skip


# --------------------------------------------------------------------------------------------------------
# transfer scaling (Cheng et al. 2024, after Hernandez et al. 2021)
# --------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TransferLaw:
    """``D_t = k (1/D_F)^alpha N^beta``: tokens effectively transferred by pre-training on the other
    objective, for ``D_F`` fine-tuning tokens and ``N`` parameters (Cheng et al. 2024, transfer scaling;
    Hernandez et al. 2021, "Scaling Laws for Transfer")."""

    k: float
    alpha: float
    beta: float
    n_points: int
    rms_log_residual: float

    def __call__(self, n_params: ArrayLike, finetune_tokens: ArrayLike) -> Any:
        """``k D_F^-alpha N^beta``; a float for scalar inputs."""
        n = np.asarray(n_params, dtype=np.float64)
        df = np.asarray(finetune_tokens, dtype=np.float64)
        out = self.k * np.power(df, -self.alpha) * np.power(n, self.beta)
        return float(out) if np.ndim(out) == 0 else out

    def to_dict(self) -> dict[str, Any]:
        return {
            "method": "transfer_law",
            "form": "D_t = k * (1/D_F)^alpha * N^beta",
            "k": _plain(self.k),
            "alpha": _plain(self.alpha),
            "beta": _plain(self.beta),
            "n_points": self.n_points,
            "rms_log_residual": _plain(self.rms_log_residual),
        }


def fit_transfer_law(
    n_params: ArrayLike, finetune_tokens: ArrayLike, transferred_tokens: ArrayLike
) -> TransferLaw:
    """Least squares in log space: ``ln D_t = ln k - alpha ln D_F + beta ln N`` (``numpy.linalg.lstsq``).

    ``transferred_tokens`` are ``D_t = D_scratch(L) - D_F``: the extra tokens a from-scratch run needs to
    reach the loss ``L`` the transferred run reaches after ``D_F`` fine-tuning tokens (see
    :func:`tokens_to_reach`). Needs >= 3 points with ``D_F`` and ``N`` varying independently; ``D_t <= 0``
    (transfer did not help) cannot be represented in log space and raises ``ValueError``.
    """
    n = _as_1d("n_params", n_params)
    df = _as_1d("finetune_tokens", finetune_tokens)
    dt = _as_1d("transferred_tokens", transferred_tokens)
    k = _check_same_length(n_params=n, finetune_tokens=df, transferred_tokens=dt)
    if k < 3:
        raise ValueError(f"the transfer law has 3 parameters and needs >= 3 points, got {k}; add runs")
    _check_positive("n_params", n)
    _check_positive("finetune_tokens", df)
    _check_finite("transferred_tokens", dt)
    if (dt <= 0).any():
        i = int(np.flatnonzero(dt <= 0)[0])
        raise ValueError(
            f"transferred_tokens must be > 0 for a log-space fit; {int((dt <= 0).sum())} are not (first at "
            f"index {i}: {float(dt[i])!r}): transfer did not help there -- drop those points, report apart"
        )
    x = np.column_stack([np.ones(k), -np.log(df), np.log(n)])
    if np.linalg.matrix_rank(x) < 3:
        raise ValueError(
            "ln D_F and ln N are collinear (or constant) across the points, so alpha and beta are not "
            "identifiable; vary the fine-tuning tokens and the model size independently"
        )
    coef, *_ = np.linalg.lstsq(x, np.log(dt), rcond=None)
    resid = np.log(dt) - x @ coef
    return TransferLaw(
        k=math.exp(float(coef[0])), alpha=float(coef[1]), beta=float(coef[2]), n_points=k,
        rms_log_residual=float(np.sqrt(np.mean(resid**2))),
    )  # fmt: skip


def tokens_to_reach(curve_tokens: ArrayLike, curve_loss: ArrayLike, target_loss: float) -> float | None:
    """Tokens at which a learning curve first reaches ``target_loss``, or ``None`` if it never does.

    ``curve_tokens`` must increase strictly. The first logged point with ``loss <= target_loss`` is found;
    between it and the previous point the loss is taken linear in ``ln tokens`` (log-linear interpolation):
    ``ln t = ln t0 + (target - L0) / (L1 - L0) * (ln t1 - ln t0)``. A curve already at or below the target at
    its first point returns that point's tokens (the true crossing is no later). Noise after the first
    crossing is ignored, so the curve need not be exactly monotone.
    """
    t = _as_1d("curve_tokens", curve_tokens)
    y = _as_1d("curve_loss", curve_loss)
    _check_same_length(curve_tokens=t, curve_loss=y)
    if len(t) == 0:
        raise ValueError("tokens_to_reach got an empty learning curve; pass the logged (tokens, loss) points")
    _check_positive("curve_tokens", t)
    _check_finite("curve_loss", y)
    if not math.isfinite(target_loss):
        raise ValueError(f"target_loss must be finite, got {target_loss!r}")
    if (np.diff(t) <= 0).any():
        raise ValueError("curve_tokens must increase strictly; sort the curve by tokens and drop duplicates")
    hit = np.flatnonzero(y <= target_loss)
    if len(hit) == 0:
        return None
    i = int(hit[0])
    if i == 0:
        return float(t[0])
    l0, l1 = float(y[i - 1]), float(y[i])
    frac = (target_loss - l0) / (l1 - l0)  # l0 > target >= l1, so 0 < frac <= 1
    return math.exp(math.log(t[i - 1]) + frac * (math.log(t[i]) - math.log(t[i - 1])))


# --------------------------------------------------------------------------------------------------------
# extrapolation check: fit on small budgets, predict the larger ones
# --------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class HeldOutBudget:
    """Prediction vs observation at one budget larger than the cutoff.

    ``observed_n_opt`` is the held-out budget's own Approach 2 parabola minimum (``None`` when its profile is
    skipped); ``n_opt_ratio = predicted / observed``. ``best_n``, ``best_d``, ``observed_min_loss`` are the
    run with the lowest final loss. ``predicted_loss`` is compared with ``loss_reference``:

    * approach3: ``L_hat(best_n, best_d)`` vs ``observed_min_loss`` (the same run);
    * approach2: a power law ``L_opt(C)`` fitted to the fitting budgets' parabola minima, vs the held-out
      parabola minimum ``observed_parabola_loss`` (both profile minima; a pure power law only when E = 0).

    ``loss_relative_error = predicted_loss / reference - 1``.
    """

    budget: float
    n_runs: int
    predicted_n_opt: float
    observed_n_opt: float | None
    n_opt_ratio: float | None
    observed_at_edge: bool
    observed_skipped_reason: str | None
    best_n: float
    best_d: float
    observed_min_loss: float
    observed_parabola_loss: float | None
    predicted_loss: float | None
    loss_reference: str
    loss_relative_error: float | None

    def to_dict(self) -> dict[str, Any]:
        return {
            "budget": _plain(self.budget),
            "n_runs": self.n_runs,
            "predicted_n_opt": _plain(self.predicted_n_opt),
            "observed_n_opt": _plain(self.observed_n_opt),
            "n_opt_ratio": _plain(self.n_opt_ratio),
            "observed_at_edge": self.observed_at_edge,
            "observed_skipped_reason": self.observed_skipped_reason,
            "best_n": _plain(self.best_n),
            "best_d": _plain(self.best_d),
            "observed_min_loss": _plain(self.observed_min_loss),
            "observed_parabola_loss": _plain(self.observed_parabola_loss),
            "predicted_loss": _plain(self.predicted_loss),
            "loss_reference": self.loss_reference,
            "loss_relative_error": _plain(self.loss_relative_error),
        }


@dataclass(frozen=True)
class ExtrapolationResult:
    """A law fitted on budgets ``<= cutoff_flops`` and its predictions at every larger budget."""

    method: str
    cutoff_flops: float
    n_fit_runs: int
    fit_budgets: tuple[float, ...]
    fit: dict[str, Any]
    held_out: tuple[HeldOutBudget, ...]

    @property
    def max_abs_log_ratio(self) -> float | None:
        """``max |ln(predicted N_opt / observed N_opt)|`` over held-out budgets with an observed optimum."""
        logs = [abs(math.log(h.n_opt_ratio)) for h in self.held_out if h.n_opt_ratio is not None]
        return max(logs) if logs else None

    def to_dict(self) -> dict[str, Any]:
        return {
            "method": f"extrapolation_check/{self.method}",
            "cutoff_flops": _plain(self.cutoff_flops),
            "n_fit_runs": self.n_fit_runs,
            "fit_budgets": [_plain(b) for b in self.fit_budgets],
            "fit": self.fit,
            "held_out": [h.to_dict() for h in self.held_out],
            "max_abs_log_ratio": _plain(self.max_abs_log_ratio),
        }


def extrapolation_check(
    budget_flops: ArrayLike,
    n_params: ArrayLike,
    loss: ArrayLike,
    *,
    cutoff_flops: float,
    method: str = "approach2",
    num_tokens: ArrayLike | None = None,
    exclude_edge: bool = False,
    init_grid: Approach3Grid | None = None,
    huber_delta: float = 1e-3,
) -> ExtrapolationResult:
    """Fit on the IsoFLOP runs with ``budget <= cutoff_flops``, predict each larger budget, compare.

    ``method="approach2"``: :func:`approach2` (with ``exclude_edge``) gives ``N_opt(C)``; the predicted loss
    is a power law fitted (:func:`fit_power_law`) to the fitting budgets' parabola minima ``L_opt``.
    ``method="approach3"``: :func:`approach3` (``init_grid``, ``huber_delta``) on the fitting runs gives
    ``N_opt(C)`` by :func:`compute_optimal_laws` and ``L_hat(N, D)``. ``num_tokens`` defaults to
    ``C / (6 N)``. Each held-out budget is compared with its own Approach 2 parabola (see
    :class:`HeldOutBudget`). Raises ``ValueError`` when no budget lies on either side of the cutoff or the
    fitting budgets cannot support the law.
    """
    if method not in ("approach2", "approach3"):
        raise ValueError(f"method must be 'approach2' or 'approach3', got {method!r}")
    c = _as_1d("budget_flops", budget_flops)
    n = _as_1d("n_params", n_params)
    y = _as_1d("loss", loss)
    d = c / (6.0 * n) if num_tokens is None else _as_1d("num_tokens", num_tokens)
    _check_same_length(budget_flops=c, n_params=n, loss=y, num_tokens=d)
    for name, arr in (("budget_flops", c), ("n_params", n), ("loss", y), ("num_tokens", d)):
        _check_positive(name, arr)
    if not (math.isfinite(cutoff_flops) and cutoff_flops > 0):
        raise ValueError(f"cutoff_flops must be a finite positive FLOP count, got {cutoff_flops!r}")
    budgets = np.unique(c)
    fit_b, held_b = budgets[budgets <= cutoff_flops], budgets[budgets > cutoff_flops]
    if len(fit_b) == 0 or len(held_b) == 0:
        raise ValueError(
            f"cutoff_flops={cutoff_flops:.4g} leaves {len(fit_b)} budget(s) to fit and {len(held_b)} to "
            f"predict (budgets {budgets[0]:.4g} .. {budgets[-1]:.4g}); choose a cutoff between two budgets"
        )
    sel = c <= cutoff_flops
    fit_dict: dict[str, Any]
    if method == "approach2":
        a2 = approach2(c[sel], n[sel], y[sel], exclude_edge=exclude_edge)
        if a2.n_opt is None:
            raise ValueError(
                f"approach2 on the budgets <= cutoff has no N_opt law: {a2.law_reason}; raise the cutoff "
                "or use method='approach3'"
            )
        used = [b for b in a2.budgets if b.usable and not (exclude_edge and b.at_edge)]
        loss_law = fit_power_law([b.budget for b in used], [b.loss_opt for b in used])
        n_law = a2.n_opt
        fit_dict = {**a2.to_dict(), "loss_opt_law": loss_law.to_dict()}
    else:
        a3 = approach3(n[sel], d[sel], y[sel], huber_delta=huber_delta, init_grid=init_grid)
        if a3.n_opt is None:
            raise ValueError(
                f"approach3 on the budgets <= cutoff has no N_opt law: {a3.law_reason}; raise the cutoff "
                "or use method='approach2'"
            )
        n_law = a3.n_opt
        fit_dict = a3.to_dict()

    held: list[HeldOutBudget] = []
    for budget in held_b:
        m = c == budget
        profile = _isoflop_profile(float(budget), n[m], y[m])
        j = int(np.argmin(y[m]))
        best_n, best_d, best_l = float(n[m][j]), float(d[m][j]), float(y[m][j])
        pred_n = float(n_law(float(budget)))
        if method == "approach2":
            pred_l: float | None = float(loss_law(float(budget)))
            ref_kind, ref = "observed_parabola_loss", profile.loss_opt
        else:
            pred_l = float(a3.predict(best_n, best_d))
            ref_kind, ref = "observed_min_loss", best_l
        held.append(HeldOutBudget(
            budget=float(budget), n_runs=int(m.sum()), predicted_n_opt=pred_n, observed_n_opt=profile.n_opt,
            n_opt_ratio=None if profile.n_opt is None else pred_n / profile.n_opt,
            observed_at_edge=profile.at_edge, observed_skipped_reason=profile.skipped_reason,
            best_n=best_n, best_d=best_d, observed_min_loss=best_l, observed_parabola_loss=profile.loss_opt,
            predicted_loss=pred_l, loss_reference=ref_kind,
            loss_relative_error=None if ref is None or pred_l is None else pred_l / ref - 1.0,
        ))  # fmt: skip
    return ExtrapolationResult(
        method=method, cutoff_flops=float(cutoff_flops), n_fit_runs=int(sel.sum()),
        fit_budgets=tuple(float(b) for b in fit_b), fit=fit_dict, held_out=tuple(held),
    )  # fmt: skip
