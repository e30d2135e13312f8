"""Transfer scaling between objectives (Cheng et al. 2024, after Hernandez et al. 2021, "Scaling Laws for
Transfer"): the tokens a pre-training on the other objective is worth, and the law they follow.

Pure numpy, no I/O.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import ArrayLike

from plmscale.powerlaw import as_1d, check_finite, check_positive, plain, same_length


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
            "k": plain(self.k),
            "alpha": plain(self.alpha),
            "beta": plain(self.beta),
            "n_points": self.n_points,
            "rms_log_residual": plain(self.rms_log_residual),
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
    n = as_1d("n_params", n_params)
    df = as_1d("finetune_tokens", finetune_tokens)
    dt = as_1d("transferred_tokens", transferred_tokens)
    k = same_length(n_params=n, finetune_tokens=df, transferred_tokens=dt)
    if k < 3:
        raise ValueError(f"the transfer law has 3 parameters and needs >= 3 points, got {k}; add runs")
    check_positive("n_params", n)
    check_positive("finetune_tokens", df)
    check_finite("transferred_tokens", dt)
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
    t = as_1d("curve_tokens", curve_tokens)
    y = as_1d("curve_loss", curve_loss)
    same_length(curve_tokens=t, curve_loss=y)
    if len(t) == 0:
        raise ValueError("tokens_to_reach got an empty learning curve; pass the logged (tokens, loss) points")
    check_positive("curve_tokens", t)
    check_finite("curve_loss", y)
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


def effectively_transferred_tokens(
    scratch_tokens: ArrayLike,
    scratch_loss: ArrayLike,
    transfer_tokens: ArrayLike,
    transfer_loss: ArrayLike,
    finetune_tokens: ArrayLike,
) -> list[float | None]:
    """``D_t`` at each ``D_F``: the extra tokens a from-scratch run needs to match a transferred run.

    For each fine-tuning budget ``D_F`` the transferred run's loss is its best logged loss up to ``D_F``
    (``L* = min{L(d) : d <= D_F}``, a running minimum that ignores evaluation noise), and
    ``D_t = D_scratch(L*) - D_F`` with ``D_scratch`` from :func:`tokens_to_reach` on the scratch curve
    (Hernandez et al. 2021, "effective data transferred"; Cheng et al. 2024, "effectively transferred
    tokens"). ``None`` where the scratch curve never reaches ``L*`` (the transfer gain outlasts the
    scratch run's log). ``D_t <= 0`` is returned as is: transfer did not help there. Both curves' tokens
    must increase strictly; ``D_F`` must not precede the transferred run's first logged point.
    """
    st, sl = as_1d("scratch_tokens", scratch_tokens), as_1d("scratch_loss", scratch_loss)
    tt, tl = as_1d("transfer_tokens", transfer_tokens), as_1d("transfer_loss", transfer_loss)
    same_length(transfer_tokens=tt, transfer_loss=tl)
    if len(tt) == 0:
        raise ValueError("the transferred run's curve is empty; pass its logged (tokens, loss) points")
    check_positive("transfer_tokens", tt)
    check_finite("transfer_loss", tl)
    if (np.diff(tt) <= 0).any():
        raise ValueError("transfer_tokens must increase strictly; sort by tokens and drop duplicates")
    df = as_1d("finetune_tokens", finetune_tokens)
    check_positive("finetune_tokens", df)
    if (df < tt[0]).any():
        raise ValueError(
            f"finetune_tokens start at {float(df.min())!r}, before the transferred run's first logged point "
            f"({float(tt[0])!r}); choose D_F within the logged range"
        )
    best = np.minimum.accumulate(tl)
    out: list[float | None] = []
    for d in df:
        i = int(np.searchsorted(tt, d, side="right")) - 1
        reached = tokens_to_reach(st, sl, float(best[i]))
        out.append(None if reached is None else reached - float(d))
    return out


def transfer_points(pair: Mapping[str, Any], n_points: int) -> list[dict[str, Any]]:
    """``D_t`` of one (transferred, scratch) pair at ``n_points`` logged ``D_F`` of the transferred run,
    log-spaced from its second point to its last, each with a status: ``ok`` (``D_t > 0``), ``no_gain``
    (``D_t <= 0``) or ``not_reached`` (the scratch curve never reaches the transferred loss).

    ``pair``: ``size`` (a label), ``n_params``, ``scratch`` and ``transfer`` as ``(tokens, loss)`` arrays of
    this training phase, tokens increasing.
    """
    tokens, loss = (np.asarray(a, dtype=np.float64) for a in pair["transfer"])
    if len(tokens) < 2:
        raise ValueError(f"transferred run {pair['size']}: {len(tokens)} logged point(s); need at least 2")
    wanted = np.geomspace(tokens[1], tokens[-1], n_points)
    picks = sorted({int(np.argmin(np.abs(np.log(tokens) - np.log(w)))) for w in wanted})
    finetune = tokens[picks]
    d_t = effectively_transferred_tokens(*pair["scratch"], tokens, loss, finetune)
    rows = []
    for df, dt in zip(finetune, d_t, strict=True):
        status = "not_reached" if dt is None else ("ok" if dt > 0 else "no_gain")
        rows.append({"size": pair["size"], "n_params": float(pair["n_params"]), "finetune_tokens": float(df),
                     "transferred_tokens": dt, "status": status})  # fmt: skip
    return rows


def transfer_entry(
    pairs: Sequence[Mapping[str, Any]], objective: str, n_points: int
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The transfer law of one evaluated objective from its (transferred, scratch) pairs, and its points.

    :func:`transfer_points` gives ``D_t`` per pair; :func:`fit_transfer_law` fits the ``ok`` points. The
    uncertainty is the range of ``alpha`` and ``beta`` over leave-one-size-out refits (points of one run are
    correlated, so a point bootstrap would overstate the precision). Too few sizes or points leave the law
    out with ``skipped_reason``. Used for the published logs and the study's own runs alike.
    """
    points = [dict(p, objective=objective) for pair in pairs for p in transfer_points(pair, n_points)]
    ok = [p for p in points if p["status"] == "ok"]
    entry: dict[str, Any] = {
        "sizes": [p["size"] for p in pairs],
        "source_budgets": {p["size"]: p.get("source_budget_flops") for p in pairs},
        "x_source": {p["size"]: p.get("x_source") for p in pairs},
        "n_points": len(points),
        "n_fitted": len(ok),
        "n_not_reached": sum(p["status"] == "not_reached" for p in points),
        "n_no_gain": sum(p["status"] == "no_gain" for p in points),
    }

    def law(sel: list[dict[str, Any]]) -> TransferLaw:
        cols = ("n_params", "finetune_tokens", "transferred_tokens")
        return fit_transfer_law(*([p[c] for p in sel] for c in cols))

    try:
        entry["law"] = law(ok).to_dict()
        held = [law([p for p in ok if p["size"] != size]) for size in entry["sizes"]]
        entry["leave_one_size_out"] = {
            "alpha": [min(h.alpha for h in held), max(h.alpha for h in held)],
            "beta": [min(h.beta for h in held), max(h.beta for h in held)],
        }
    except ValueError as err:  # too few sizes or points: recorded, not hidden
        entry["skipped_reason"] = str(err)
    return entry, points
