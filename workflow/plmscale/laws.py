"""One reader of a fit result's compute-optimal laws, for every consumer (figures, summary, planner).

A fit JSON (:mod:`plmscale.fitting` for the study, :mod:`plmscale.paper` for the published logs) stores each
method's result under its name and its bootstrap under ``"<method>_bootstrap"``. :func:`method_laws` turns one
method's entry into a typed :class:`MethodLaws`: its ``N_opt(C)`` and ``D_opt(C)`` power laws, the 95%
interval of each exponent (the ``lo``/``hi`` of :func:`plmscale.fits.interval`, the one interval scheme), and,
when the laws must not be used, why (skipped, no law, or an Approach 3 fit that did not converge).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from plmscale.powerlaw import PowerLaw


def law_status(fit: Mapping[str, Any], method: str) -> str | None:
    """Why ``method``'s ``N_opt(C)``/``D_opt(C)`` laws in ``fit`` must not be drawn or quoted as fitted:
    the method was skipped, has no laws (``law_reason``), or -- Approach 3 -- its best L-BFGS-B run did not
    converge; ``None`` when the laws are usable."""
    res = fit.get(method) or {}
    if res.get("skipped_reason"):
        return str(res["skipped_reason"])
    if not (res.get("n_opt") and res.get("d_opt")):
        return str(res.get("law_reason") or "no N_opt(C), D_opt(C) laws in the fit result")
    if method == "approach3" and res.get("best_converged") is False:
        return f"did not converge ({res.get('best_message') or 'L-BFGS-B reported no convergence'})"
    return None


def bootstrap_of(fit: Mapping[str, Any], method: str) -> Mapping[str, Any] | None:
    """``fit["<method>_bootstrap"]``, or ``None`` when absent or skipped."""
    boot = fit.get(f"{method}_bootstrap")
    if isinstance(boot, Mapping) and not boot.get("skipped_reason"):
        return boot
    return None


def exponent_interval(boot: Mapping[str, Any] | None, law: str) -> tuple[float, float] | None:
    """95% bootstrap interval ``(p2.5, p97.5)`` of the exponent of ``law`` (``"n_opt"``, ``"d_opt"`` or,
    for Approaches 1 and 2, ``"loss"``): ``n_opt_exponent`` etc. of a
    :class:`~plmscale.fits.LawBootstrapResult`, the implied ``a``/``b`` of an Approach 3 bootstrap."""
    if not boot:
        return None
    pct = boot.get("percentiles") or {}
    entry = pct.get(f"{law}_exponent") or pct.get({"n_opt": "a", "d_opt": "b"}.get(law, ""))
    if not entry:
        return None
    lo, hi = entry.get("lo"), entry.get("hi")
    return None if lo is None or hi is None else (float(lo), float(hi))


def power_law(entry: Any) -> PowerLaw | None:
    """``{coefficient, exponent}`` as a :class:`PowerLaw`; ``None`` when missing, non-finite or k <= 0."""
    if not isinstance(entry, Mapping):
        return None
    k, p = entry.get("coefficient"), entry.get("exponent")
    if k is None or p is None or not (math.isfinite(k) and math.isfinite(p) and k > 0):
        return None
    return PowerLaw(coefficient=float(k), exponent=float(p))


@dataclass(frozen=True)
class MethodLaws:
    """One method's ``N_opt = k_N C^a`` and ``D_opt = k_D C^b`` as read from a fit result.

    ``problem`` is ``None`` when the laws may be drawn, quoted and planned with; otherwise it says why not
    (the laws may still be present, e.g. an Approach 3 fit that did not converge).
    """

    method: str
    n_opt: PowerLaw | None
    d_opt: PowerLaw | None
    problem: str | None
    n_opt_ci: tuple[float, float] | None
    d_opt_ci: tuple[float, float] | None

    @property
    def usable(self) -> bool:
        return self.problem is None and self.n_opt is not None and self.d_opt is not None

    def to_dict(self) -> dict[str, Any]:
        return {
            "method": self.method,
            "n_opt": None if self.n_opt is None else self.n_opt.to_dict(),
            "d_opt": None if self.d_opt is None else self.d_opt.to_dict(),
            "problem": self.problem,
            "n_opt_ci": None if self.n_opt_ci is None else list(self.n_opt_ci),
            "d_opt_ci": None if self.d_opt_ci is None else list(self.d_opt_ci),
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> MethodLaws:
        laws = {k: None if d.get(k) is None else PowerLaw.from_dict(d[k]) for k in ("n_opt", "d_opt")}
        cis = {
            k: None if d.get(k) is None else (float(d[k][0]), float(d[k][1]))
            for k in ("n_opt_ci", "d_opt_ci")
        }
        return cls(method=d["method"], problem=d.get("problem"), **laws, **cis)


def method_laws(fit: Mapping[str, Any], method: str) -> MethodLaws:
    """The typed laws of ``method`` in the fit result ``fit`` (see the module docstring)."""
    entry = fit.get(method)
    entry = entry if isinstance(entry, Mapping) else {}
    problem = law_status(fit, method) if entry else "the method is absent from the fit result"
    boot = bootstrap_of(fit, method)
    return MethodLaws(
        method=method,
        n_opt=power_law(entry.get("n_opt")),
        d_opt=power_law(entry.get("d_opt")),
        problem=problem,
        n_opt_ci=exponent_interval(boot, "n_opt"),
        d_opt_ci=exponent_interval(boot, "d_opt"),
    )
