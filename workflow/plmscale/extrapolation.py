"""Extrapolation check: fit a law on the small IsoFLOP budgets, predict the loss-optimal point of each larger
budget, and report the error (how far the law can be trusted beyond the data it saw).

Pure numpy/scipy, no I/O.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import ArrayLike

from plmscale.fits import Approach3Grid, approach2, approach3, isoflop_profile
from plmscale.powerlaw import fit_power_law, plain, positive_arrays, same_length


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
            "budget": plain(self.budget),
            "n_runs": self.n_runs,
            "predicted_n_opt": plain(self.predicted_n_opt),
            "observed_n_opt": plain(self.observed_n_opt),
            "n_opt_ratio": plain(self.n_opt_ratio),
            "observed_at_edge": self.observed_at_edge,
            "observed_skipped_reason": self.observed_skipped_reason,
            "best_n": plain(self.best_n),
            "best_d": plain(self.best_d),
            "observed_min_loss": plain(self.observed_min_loss),
            "observed_parabola_loss": plain(self.observed_parabola_loss),
            "predicted_loss": plain(self.predicted_loss),
            "loss_reference": self.loss_reference,
            "loss_relative_error": plain(self.loss_relative_error),
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
            "cutoff_flops": plain(self.cutoff_flops),
            "n_fit_runs": self.n_fit_runs,
            "fit_budgets": [plain(b) for b in self.fit_budgets],
            "fit": self.fit,
            "held_out": [h.to_dict() for h in self.held_out],
            "max_abs_log_ratio": plain(self.max_abs_log_ratio),
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
    c, n, y = positive_arrays(budget_flops=budget_flops, n_params=n_params, loss=loss)
    d = c / (6.0 * n) if num_tokens is None else positive_arrays(num_tokens=num_tokens)[0]
    same_length(budget_flops=c, num_tokens=d)
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
        profile = isoflop_profile(float(budget), n[m], y[m])
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
