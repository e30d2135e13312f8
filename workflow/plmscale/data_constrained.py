"""Data-constrained scaling (Muennighoff et al. 2023, "Scaling Data-Constrained Language Models"): effective
tokens and parameters under repetition, and a fit of ``R_D*`` on top of an Approach 3 law.

Pure numpy/scipy, no I/O.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import ArrayLike
from scipy.optimize import minimize_scalar

from plmscale.fits import Approach3Result
from plmscale.powerlaw import check_positive, parametric_loss, plain, positive_arrays


def _effective(total: ArrayLike, unique: ArrayLike, r_star: float, names: tuple[str, str, str]) -> Any:
    t = np.asarray(total, dtype=np.float64)
    u = np.asarray(unique, dtype=np.float64)
    for name, arr in ((names[0], t), (names[1], u)):
        check_positive(name, np.atleast_1d(arr).ravel())
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
        params = {k: getattr(self, k) for k in ("E", "A", "B", "alpha", "beta")}
        return parametric_loss(params, n, effective_tokens(d, unique, self.r_star_d))

    def to_dict(self) -> dict[str, Any]:
        return {
            "method": "data_constrained",
            "form": "L = E + A/N^alpha + B/D'^beta, D' = U_D + U_D R_D* (1 - exp(-R_D/R_D*))",
            "r_star_d": plain(self.r_star_d),
            "base": {k: plain(getattr(self, k)) for k in ("E", "A", "B", "alpha", "beta")},
            "objective": plain(self.objective),
            "huber_delta": plain(self.huber_delta),
            "n_points": self.n_points,
            "n_repeated": self.n_repeated,
            "at_bound": self.at_bound,
            "r_star_bounds": [plain(v) for v in self.r_star_bounds],
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
    n, d, u, y = positive_arrays(
        n_params=n_params, num_tokens=num_tokens, unique_tokens=unique_tokens, loss=loss
    )
    k = len(n)
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
