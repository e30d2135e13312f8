"""Numeric core of the scaling-law fits: Chinchilla Approaches 1, 2 and 3, and their bootstraps.

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

Power laws and the shared input checks are in :mod:`plmscale.powerlaw`; the data-constrained variant, the
transfer law and the extrapolation check, which build on these fits, are in :mod:`plmscale.data_constrained`,
:mod:`plmscale.transfer` and :mod:`plmscale.extrapolation`.

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
from numpy.typing import ArrayLike
from scipy.optimize import minimize

from plmscale.powerlaw import (
    FloatArray,
    PowerLaw,
    as_1d,
    check_finite,
    check_positive,
    compute_optimal_laws,
    fit_power_law,
    parametric_loss,
    plain,
    positive_arrays,
    same_length,
)

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
    "LawBootstrapResult",
    "approach1",
    "approach1_bootstrap",
    "approach2",
    "approach2_bootstrap",
    "approach3",
    "approach3_bootstrap",
    "huber_log_objective",
    "interval",
]

#: Columns :func:`approach1` needs in its ``curves`` table.
CURVE_COLUMNS: tuple[str, ...] = ("run_id", "flops", "n_params", "num_tokens", "loss")

#: Parameter order of the Approach 3 optimisation vector (Hoffmann et al. 2022, App. D.2: min over a, b, e,
#: alpha, beta).
THETA_NAMES: tuple[str, ...] = ("a", "b", "e", "alpha", "beta")


# --------------------------------------------------------------------------------------------------------
# BLAS threads
# --------------------------------------------------------------------------------------------------------


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
                "flops": [plain(v) for v in self.flops],
                "n_params": [plain(v) for v in self.n_params],
                "num_tokens": [plain(v) for v in self.num_tokens],
                "loss": [plain(v) for v in self.loss],
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
        return plain(x)
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
    flops, n_params, num_tokens, loss = positive_arrays(**{c: curves[c] for c in CURVE_COLUMNS[1:]})
    n = len(flops)
    if run_id.shape != (n,):
        raise ValueError(f"run_id must have shape ({n},) like the other columns, got {run_id.shape}")

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
            "budget": plain(self.budget),
            "n_runs": self.n_runs,
            "n_sizes": self.n_sizes,
            "n_opt": plain(self.n_opt),
            "d_opt": plain(self.d_opt),
            "loss_opt": plain(self.loss_opt),
            "coefficients": None if self.coefficients is None else [plain(c) for c in self.coefficients],
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


def isoflop_profile(budget: float, n: FloatArray, loss: FloatArray) -> Approach2Budget:
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
    c = as_1d("budget_flops", budget_flops)
    n = as_1d("n_params", n_params)
    y = as_1d("loss", loss)
    same_length(budget_flops=c, n_params=n, loss=y)
    if len(c) == 0:
        raise ValueError("approach2 got no runs; pass one entry per final IsoFLOP run")
    check_positive("budget_flops", c)
    check_positive("n_params", n)
    check_finite("loss", y)

    records = []
    for budget in np.unique(c):
        sel = c == budget
        records.append(isoflop_profile(float(budget), n[sel], y[sel]))

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
        """``E + A n^-alpha + B d^-beta`` (:func:`plmscale.powerlaw.parametric_loss`); a float for scalars."""
        return parametric_loss(self.to_dict(), n, d)

    def to_dict(self) -> dict[str, Any]:
        return {
            "method": "approach3",
            "E": plain(self.E),
            "A": plain(self.A),
            "B": plain(self.B),
            "alpha": plain(self.alpha),
            "beta": plain(self.beta),
            "objective": plain(self.objective),
            "huber_delta": plain(self.huber_delta),
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

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Approach3Result:
        laws = {k: None if d.get(k) is None else PowerLaw.from_dict(d[k]) for k in ("n_opt", "d_opt")}
        return cls(
            E=float(d["E"]), A=float(d["A"]), B=float(d["B"]), alpha=float(d["alpha"]), beta=float(d["beta"]),
            objective=float(d["objective"]), huber_delta=float(d["huber_delta"]), n_points=int(d["n_points"]),
            n_starts=int(d["n_starts"]), n_failed=int(d["n_failed"]),
            failure_messages=tuple(d["failure_messages"]), best_converged=bool(d["best_converged"]),
            best_message=str(d["best_message"]), law_reason=d.get("law_reason"), **laws,
        )  # fmt: skip


def _approach3_inputs(
    n_params: ArrayLike, num_tokens: ArrayLike, loss: ArrayLike, huber_delta: float, max_iter: int
) -> tuple[FloatArray, FloatArray, FloatArray]:
    n, d, y = positive_arrays(n_params=n_params, num_tokens=num_tokens, loss=loss)
    if len(n) < 5:
        raise ValueError(f"approach3 fits 5 parameters and needs >= 5 points, got {len(n)}; supply more runs")
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

    ``percentiles[name]`` is :func:`interval` of the draws (``lo``, ``median``, ``hi``: the 2.5/50/97.5
    percentiles, the one interval scheme of every bootstrap here); ``std[name]`` is the bootstrap
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
            "percentiles": {k: {q: plain(v) for q, v in p.items()} for k, p in self.percentiles.items()},
            "std": {k: plain(v) for k, v in self.std.items()},
            "n_failed_starts": self.n_failed_starts,
            "n_resamples_not_converged": self.n_resamples_not_converged,
            # per-draw values, in step across names, so a caller can propagate them (e.g. L(N, D) CIs)
            "samples": {k: [plain(v) for v in vals] for k, vals in self.samples.items()},
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
        percentiles[name] = interval(arr)
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
    arr = as_1d("values", values)
    if len(arr) == 0:
        raise ValueError("interval needs at least one value; every bootstrap resample failed -- see n_failed")
    check_finite("values", arr)
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
            "percentiles": {k: {q: plain(v) for q, v in p.items()} for k, p in self.percentiles.items()},
        }
        if include_samples:
            out["samples"] = {k: [plain(v) for v in vals] for k, vals in self.samples.items()}
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
    c = as_1d("budget_flops", budget_flops)
    n = as_1d("n_params", n_params)
    y = as_1d("loss", loss)
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
