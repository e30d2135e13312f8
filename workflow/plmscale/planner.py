"""Turn a fitted scaling law into a concrete training plan for a compute budget.

Input is the per-objective JSON the fit stage writes (:func:`plmscale.fitting.fit_objective`) or the
paper's (:func:`plmscale.paper.fit_paper_objective`): keys ``"approach1"``, ``"approach2"``,
``"approach3"``, each a ``to_dict()`` of a result in :mod:`plmscale.fits`, and in the paper's also
``"notebook_envelope"`` (the authors' notebook fit, :class:`plmscale.notebook_fit.NotebookFit`), each
``{"method": ..., "skipped_reason": ...}`` when the data could not support it. A method's bootstrap
(``Approach3BootstrapResult.to_dict()`` or ``LawBootstrapResult.to_dict()``) is read from
``fit_result[method]["bootstrap"]`` or, failing that, ``fit_result[f"{method}_bootstrap"]`` (the layout of
:mod:`plmscale.paper`); a skipped bootstrap (``skipped_reason``) counts as absent.

Which file: :func:`choose_fit` (``--fit``, else the own study's fit when it has the method's law, else
the paper's). The compute range a fit was made on is ``[min, max]`` of its top-level ``"budgets"``
(:func:`fitted_budgets`); :func:`orders_outside` says how far a budget lies outside it.

The plan (:func:`plan`):

1. ``N_opt = k_N C^a`` and ``D_opt = k_D C^b`` from the chosen method's ``n_opt``/``d_opt`` power laws.
2. The nearest model shape (:func:`nearest_shape`; rule in :data:`SHAPE_RULE`) and its exact non-embedding
   size ``N`` (:func:`plmscale.flops.n_params_non_embedding`).
3. ``D = C / (6 N)`` tokens for that exact ``N`` (so the run spends the budget), ``steps = ceil(D / tokens
   per step)``.
4. GPU-hours ``= (6 N + 12 L d T) D / (peak FLOP/s * MFU) / 3600`` (attention FLOPs included, PaLM App. B;
   :func:`plmscale.flops.flops_per_token_with_attention`).
5. The predicted loss from Approach 3's ``L(N, D) = E + A/N^alpha + B/D^beta`` when that fit exists
   (whatever ``method`` chose ``N``), at the planned ``(N, D)`` and at ``(N_opt, D_opt)``; its interval is
   described in :func:`loss_interval`.

:func:`plan` refuses (``ValueError`` naming the fix) a law that gives ``N_opt`` below :data:`MIN_N_OPT`
parameters or a run shorter than one optimizer step: far below the fitted range a power law gives
nonsense (e.g. 0.015 parameters for 1e5 FLOPs), and that must not be printed as a model.
"""

from __future__ import annotations

import functools
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from plmscale.fits import interval
from plmscale.flops import ModelShape, flops_per_token_with_attention, n_params_non_embedding
from plmscale.laws import method_laws as read_laws
from plmscale.laws import power_law
from plmscale.powerlaw import compute_optimal_laws, parametric_loss

__all__ = [
    "METHODS",
    "MIN_N_OPT",
    "SHAPE_RULE",
    "Plan",
    "bootstrap_of",
    "candidate_shapes",
    "choose_fit",
    "fitted_budgets",
    "format_plan",
    "loss_interval",
    "method_laws",
    "nearest_shape",
    "orders_outside",
    "plan",
    "range_message",
]

#: Every method whose ``n_opt``/``d_opt`` laws a plan can use; ``notebook_envelope`` (the authors' own
#: notebook fit) is only in the paper's fit JSON.
METHODS: tuple[str, ...] = ("approach1", "approach2", "approach3", "notebook_envelope")
#: The smallest N_opt (non-embedding parameters) a plan accepts: below it the law is extrapolated into
#: nonsense (no transformer is that small: the shape grid starts at 54,561; the embedded study's models
#: have 14k-240k, the paper's smallest 3.5 M).
MIN_N_OPT = 1e3

#: Search space and preference of :func:`nearest_shape`.
MAX_LAYERS = 96
WIDTH_STEP = 64
MAX_WIDTH = 16384
ASPECT_RANGE: tuple[float, float] = (32.0, 256.0)
#: Preferred aspect ratio: the geometric middle of ASPECT_RANGE (ESM-2 3B: 71, GPT-3 175B: 128).
ASPECT_TARGET = math.sqrt(ASPECT_RANGE[0] * ASPECT_RANGE[1])
#: Shapes within this relative size of the closest one count as equally close.
SIZE_TOLERANCE = 0.02

SHAPE_RULE = (
    f"layers 1..{MAX_LAYERS}, width a multiple of {WIDTH_STEP} up to {MAX_WIDTH}; keep shapes with "
    f"aspect ratio width/layers in [{ASPECT_RANGE[0]:g}, {ASPECT_RANGE[1]:g}] (Kaplan et al. 2020 found "
    "loss flat in this range; common practice), or all shapes if none qualifies; among those whose exact "
    f"N is within {SIZE_TOLERANCE:.0%} (in log space) of the closest to N_opt, take the aspect ratio closest "
    f"to {ASPECT_TARGET:.1f} (log space), then the closest N, then fewer layers; head_dim 128 for width >= "
    "2048 (when 128 divides it), else 64"
)


# --------------------------------------------------------------------------------------------------------
# shapes
# --------------------------------------------------------------------------------------------------------


def _heads_for(width: int) -> int:
    head_dim = 128 if width >= 2048 and width % 128 == 0 else 64
    return width // head_dim


def candidate_shapes() -> list[ModelShape]:
    """All shapes of the default search space (see :data:`SHAPE_RULE`), heads chosen by the head_dim rule."""
    return [
        ModelShape(layers=layers, width=width, heads=_heads_for(width))
        for layers in range(1, MAX_LAYERS + 1)
        for width in range(WIDTH_STEP, MAX_WIDTH + 1, WIDTH_STEP)
    ]


@functools.cache
def _default_table(vocab_size: int) -> tuple[tuple[ModelShape, ...], np.ndarray]:
    shapes = tuple(candidate_shapes())
    sizes = np.array([n_params_non_embedding(s, vocab_size) for s in shapes], dtype=np.float64)
    return shapes, sizes


def nearest_shape(
    n_target: float, *, vocab_size: int = 33, shapes: Sequence[ModelShape] | None = None
) -> tuple[ModelShape, int]:
    """A shape whose exact non-embedding size is closest to ``n_target`` in log space (up to
    :data:`SIZE_TOLERANCE`), preferring aspect ratios ``width/layers`` in :data:`ASPECT_RANGE` and near
    :data:`ASPECT_TARGET` (the dense grid has many shapes within a fraction of a percent of any size; the
    aspect decides among them). Full rule: :data:`SHAPE_RULE`. Returns
    ``(shape, n_params_non_embedding(shape, vocab_size))``. ``shapes`` replaces the default search space
    (the aspect preference still applies)."""
    if not (math.isfinite(n_target) and n_target > 0):
        raise ValueError(f"n_target must be a finite positive parameter count, got {n_target!r}")
    if shapes is None:
        cands, sizes = _default_table(int(vocab_size))
    else:
        cands = tuple(shapes)
        if not cands:
            raise ValueError("shapes is empty; pass None for the default search space or list some shapes")
        sizes = np.array([n_params_non_embedding(s, vocab_size) for s in cands], dtype=np.float64)
    aspect = np.array([s.width / s.layers for s in cands])
    in_range = (aspect >= ASPECT_RANGE[0]) & (aspect <= ASPECT_RANGE[1])
    pool = np.flatnonzero(in_range) if in_range.any() else np.arange(len(cands))
    dist = np.abs(np.log(sizes[pool]) - math.log(n_target))
    near = dist <= dist.min() + math.log1p(SIZE_TOLERANCE)
    pool, dist = pool[near], dist[near]
    aspect_off = np.abs(np.log(aspect[pool] / ASPECT_TARGET))
    layers = np.array([cands[i].layers for i in pool])
    best = int(pool[np.lexsort((layers, dist, aspect_off))[0]])
    return cands[best], int(sizes[best])


# --------------------------------------------------------------------------------------------------------
# reading the fit result
# --------------------------------------------------------------------------------------------------------


def method_laws(
    fit_result: Mapping[str, Any], method: str
) -> tuple[tuple[float, float], tuple[float, float]]:
    """``((k_N, a), (k_D, b))`` of ``method``'s ``N_opt = k_N C^a`` and ``D_opt = k_D C^b``, read through
    :func:`plmscale.laws.method_laws`; ``ValueError`` naming a usable method when this one's laws are
    missing or untrusted (skipped, no law, an Approach 3 fit that did not converge)."""
    laws = read_laws(fit_result, method)
    if not laws.usable:
        usable = [m for m in METHODS if m != method and read_laws(fit_result, m).usable]
        fix = f"use --method {usable[0]}" if usable else "no method in this fit has a law; add runs and refit"
        what = "no N_opt law" if laws.n_opt is None or laws.d_opt is None else "no usable N_opt law"
        raise ValueError(f"{method} has {what} in this fit: {laws.problem}; {fix}")
    assert laws.n_opt is not None and laws.d_opt is not None
    return (laws.n_opt.coefficient, laws.n_opt.exponent), (laws.d_opt.coefficient, laws.d_opt.exponent)


def _positive_floats(values: Any) -> list[float]:
    if not isinstance(values, Sequence) or isinstance(values, str):
        return []
    out = []
    for v in values:
        if isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v) and v > 0:
            out.append(float(v))
    return out


def fitted_budgets(fit_result: Mapping[str, Any]) -> tuple[float, ...] | None:
    """The sorted IsoFLOP budgets (FLOPs) a fit was made on: the top-level ``"budgets"`` list, else the
    ``"budget"`` of each entry of Approach 2's ``"budgets"``; ``None`` when the fit records neither."""
    budgets = _positive_floats(fit_result.get("budgets"))
    if not budgets:
        a2 = fit_result.get("approach2")
        entries = a2.get("budgets") if isinstance(a2, Mapping) else None
        if isinstance(entries, Sequence):
            budgets = _positive_floats([e.get("budget") for e in entries if isinstance(e, Mapping)])
    return tuple(sorted(set(budgets))) or None


def orders_outside(flops: float, fitted_range: tuple[float, float] | None) -> float | None:
    """How far ``flops`` lies outside ``fitted_range = (lo, hi)``, in orders of magnitude:
    ``log10(flops / hi) > 0`` above, ``-log10(lo / flops) < 0`` below, ``0.0`` inside; ``None`` when the
    range is unknown. Raises ``ValueError`` unless ``flops`` is a finite positive number."""
    _positive("flops", flops, "pass the training budget in FLOPs, e.g. 1e21")
    if fitted_range is None:
        return None
    lo, hi = fitted_range
    if flops > hi:
        return math.log10(flops / hi)
    if flops < lo:
        return -math.log10(lo / flops)
    return 0.0


def range_message(
    flops: float, fitted_range: tuple[float, float] | None, n_budgets: int | None = None
) -> str:
    """One sentence on where ``flops`` lies relative to ``fitted_range`` (see :func:`orders_outside`)."""
    off = orders_outside(flops, fitted_range)
    if fitted_range is None or off is None:
        return "the fitted compute range is unknown (the fit records no budgets): cannot check extrapolation"
    lo, hi = fitted_range
    of = f" ({n_budgets} IsoFLOP budgets)" if n_budgets else ""
    span = f"the fitted compute range {lo:.3g} .. {hi:.3g} FLOPs{of}"
    if off == 0:
        return f"C = {flops:.3g} FLOPs lies inside {span}"
    side = "above" if off > 0 else "below"
    return f"C = {flops:.3g} FLOPs lies {abs(off):.1f} orders of magnitude {side} {span}"


def _read_fit(path: Path) -> Mapping[str, Any]:
    try:
        fit = json.loads(path.read_text())
    except (OSError, ValueError) as err:
        raise ValueError(f"cannot read the fit JSON {path}: {err}") from err
    if not isinstance(fit, Mapping):
        raise ValueError(f"{path} is not a fit JSON (a JSON object with one entry per method)")
    return fit


def choose_fit(
    objective: str,
    method: str,
    explicit: Path | str | None = None,
    study_dir: Path | str = "results/fits",
    paper_dir: Path | str = "results/paper/fits",
) -> tuple[Path, str]:
    """Which fit JSON to plan from, and why: ``explicit`` (``--fit``) when given; else the own study's
    ``study_dir/<objective>.json`` when it exists and has ``method``'s N_opt/D_opt laws; else the paper's
    ``paper_dir/<objective>.json`` (from the authors' released logs); else the study's fit even without the
    law (:func:`plan` then names the methods it has). Raises ``ValueError`` when there is no fit at all,
    naming both paths and the Snakemake targets that write them."""
    if explicit is not None:
        path = Path(explicit)
        if not path.is_file():
            raise ValueError(f"--fit {path}: no such file")
        return path, "given with --fit"
    study = Path(study_dir) / f"{objective}.json"
    paper = Path(paper_dir) / f"{objective}.json"
    if study.is_file():
        fit = _read_fit(study)
        laws = read_laws(fit, method)
        if laws.usable:
            return study, "your own study's fit"
        why = f"{study} has no {method} law: {laws.problem}"
        if paper.is_file():
            return paper, f"the paper's logs; {why}"
        return study, f"your own study's fit; {why} and there is no paper fit at {paper}"
    if paper.is_file():
        return paper, f"the paper's logs; no own study fit at {study}"
    raise ValueError(
        f"no fit result for {objective}: neither {study} (your study: `snakemake --cores all {study}` or "
        f"`make run`) nor {paper} (the paper's logs: `snakemake --cores all paper_figures`) exists; or pass "
        "--fit PATH"
    )


_LOSS_PARAMS: tuple[str, ...] = ("E", "A", "B", "alpha", "beta")


def _approach3_params(fit_result: Mapping[str, Any]) -> dict[str, float] | None:
    fit = fit_result.get("approach3")
    if not isinstance(fit, Mapping):
        return None
    vals = {k: fit.get(k) for k in _LOSS_PARAMS}
    if any(v is None or not math.isfinite(float(v)) for v in vals.values()):
        return None
    return {k: float(v) for k, v in vals.items()}  # type: ignore[arg-type]


def _loss(p: Mapping[str, float] | Mapping[str, np.ndarray], n: float, d: float) -> Any:
    return parametric_loss(p, n, d)


def _bounds(entry: Any) -> tuple[float, float] | None:
    """``(lo, hi)`` of a percentile entry ``{"lo", "median", "hi"}`` (:func:`plmscale.fits.interval`)."""
    if not isinstance(entry, Mapping):
        return None
    lo, hi = entry.get("lo"), entry.get("hi")
    return None if lo is None or hi is None else (float(lo), float(hi))


def _samples(boot: Mapping[str, Any], names: Sequence[str]) -> dict[str, np.ndarray] | None:
    samples = boot.get("samples")
    if not isinstance(samples, Mapping) or not all(isinstance(samples.get(k), Sequence) for k in names):
        return None
    arrays = {k: np.array([np.nan if v is None else v for v in samples[k]], dtype=np.float64) for k in names}
    if len({len(a) for a in arrays.values()}) != 1 or len(arrays[names[0]]) < 2:
        return None
    return arrays


def bootstrap_of(fit_result: Mapping[str, Any], method: str) -> Mapping[str, Any] | None:
    """The bootstrap dict of ``method``: ``fit_result[method]["bootstrap"]``, else
    ``fit_result[f"{method}_bootstrap"]``; ``None`` when absent or skipped (has ``skipped_reason``)."""
    fit = fit_result.get(method)
    for boot in (
        fit.get("bootstrap") if isinstance(fit, Mapping) else None,
        fit_result.get(f"{method}_bootstrap"),
    ):
        if isinstance(boot, Mapping) and not boot.get("skipped_reason"):
            return boot
    return None


def loss_interval(fit_result: Mapping[str, Any], n: float, d: float) -> tuple[dict[str, float] | None, str]:
    """95% interval of Approach 3's ``L(n, d)`` from the Approach 3 bootstrap (see :func:`bootstrap_of`).

    * With per-resample ``samples`` of ``E, A, B, alpha, beta`` (one draw = one refit): ``L`` is evaluated
      per draw and :func:`plmscale.fits.interval` taken -- a proper percentile interval.
    * With only marginal percentiles (``"percentiles"``, entries lo/hi): ``L`` grows
      with ``E, A, B`` and, for ``n, d > 1``, falls with ``alpha, beta``, so
      ``[L(E_lo, A_lo, B_lo, alpha_hi, beta_hi), L(E_hi, A_hi, B_hi, alpha_lo, beta_lo)]`` bounds ``L`` over
      the box of marginal intervals. It ignores the strong A-alpha, B-beta correlations and is therefore very
      conservative; it is labelled as such.

    Returns ``(interval or None, kind)`` where ``kind`` says which (or why none).
    """
    boot = bootstrap_of(fit_result, "approach3")
    if boot is None:
        return None, "none (no approach3 bootstrap in the fit result)"
    draws = _samples(boot, _LOSS_PARAMS)
    if draws is not None:
        values = _loss(draws, n, d)
        values = values[np.isfinite(values)]
        if len(values) >= 2:
            return interval(values), f"bootstrap percentiles over {len(values)} resampled refits"
    table = boot.get("percentiles")
    if isinstance(table, Mapping):
        b = {k: _bounds(table.get(k)) for k in _LOSS_PARAMS}
        if all(v is not None for v in b.values()):
            lo_p = {k: b[k][0] for k in ("E", "A", "B")} | {k: b[k][1] for k in ("alpha", "beta")}  # type: ignore[index]
            hi_p = {k: b[k][1] for k in ("E", "A", "B")} | {k: b[k][0] for k in ("alpha", "beta")}  # type: ignore[index]
            lo, hi = float(_loss(lo_p, n, d)), float(_loss(hi_p, n, d))
            return (
                {"lo": lo, "median": float("nan"), "hi": hi},
                "conservative bounds over the box of marginal 2.5-97.5% parameter intervals "
                "(no samples stored)",
            )
    return None, "none (approach3 bootstrap has neither samples nor parameter percentiles)"


def _n_opt_interval(
    fit_result: Mapping[str, Any], method: str, flops: float
) -> tuple[dict[str, float] | None, str]:
    """95% interval of ``N_opt(C)`` from per-resample draws of the chosen method's bootstrap, if stored."""
    boot = bootstrap_of(fit_result, method)
    if boot is None:
        return None, f"none (no {method} bootstrap in the fit result)"
    law_draws = _samples(boot, ("n_opt_coefficient", "n_opt_exponent"))
    if law_draws is not None:
        values = law_draws["n_opt_coefficient"] * np.power(flops, law_draws["n_opt_exponent"])
    else:
        p_draws = _samples(boot, ("A", "B", "alpha", "beta"))
        if p_draws is None:
            return (
                None,
                "none (bootstrap stores no per-resample samples; marginal intervals are not combined)",
            )
        rows = zip(p_draws["A"], p_draws["B"], p_draws["alpha"], p_draws["beta"], strict=True)
        values = np.array(
            [compute_optimal_laws(a, b, al, be)[0](flops) for a, b, al, be in rows if min(a, b, al, be) > 0]
        )
    values = values[np.isfinite(values)]
    if len(values) < 2:
        return None, "none (fewer than 2 usable bootstrap draws)"
    return interval(values), f"bootstrap percentiles over {len(values)} resampled refits"


# --------------------------------------------------------------------------------------------------------
# the plan
# --------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Plan:
    """A training plan for one compute budget; see the module docstring for every formula."""

    objective: str
    method: str
    flops: float
    n_opt: float
    d_opt: float
    n_opt_interval: Mapping[str, float] | None
    n_opt_interval_kind: str
    shape: ModelShape
    n_params: int
    num_tokens: float
    steps: int
    tokens_per_step: int
    context: int
    vocab_size: int
    flops_per_token: float
    flops_with_attention: float
    device_peak_flops: float
    mfu: float
    gpu_hours: float
    predicted_loss: float | None
    predicted_loss_at_optimum: float | None
    loss_interval: Mapping[str, float] | None
    loss_interval_kind: str
    shape_rule: str = SHAPE_RULE
    notes: tuple[str, ...] = field(default=())
    fitted_range: tuple[float, float] | None = None
    """``(min, max)`` of the IsoFLOP budgets the fit was made on (:func:`fitted_budgets`), if recorded."""
    orders_outside: float | None = None
    """:func:`orders_outside` of ``flops``: > 0 above the fitted range, < 0 below, 0 inside, None unknown."""

    @property
    def tokens_per_param(self) -> float:
        return self.num_tokens / self.n_params

    @property
    def n_ratio(self) -> float:
        """``N_exact / N_opt`` of the chosen shape."""
        return self.n_params / self.n_opt

    def to_dict(self) -> dict[str, Any]:
        def plain(x: Any) -> Any:
            if x is None:
                return None
            v = float(x)
            return v if math.isfinite(v) else None

        def plain_map(m: Mapping[str, float] | None) -> dict[str, Any] | None:
            return None if m is None else {k: plain(v) for k, v in m.items()}

        return {
            "method": self.method,
            "objective": self.objective,
            "flops": plain(self.flops),
            "n_opt": plain(self.n_opt),
            "d_opt": plain(self.d_opt),
            "n_opt_interval": plain_map(self.n_opt_interval),
            "n_opt_interval_kind": self.n_opt_interval_kind,
            "shape": {
                "layers": self.shape.layers,
                "width": self.shape.width,
                "heads": self.shape.heads,
                "head_dim": self.shape.head_dim,
            },
            "n_params": self.n_params,
            "n_ratio": plain(self.n_ratio),
            "num_tokens": plain(self.num_tokens),
            "tokens_per_param": plain(self.tokens_per_param),
            "steps": self.steps,
            "tokens_per_step": self.tokens_per_step,
            "context": self.context,
            "vocab_size": self.vocab_size,
            "flops_per_token": plain(self.flops_per_token),
            "flops_with_attention": plain(self.flops_with_attention),
            "device_peak_flops": plain(self.device_peak_flops),
            "mfu": plain(self.mfu),
            "gpu_hours": plain(self.gpu_hours),
            "predicted_loss": plain(self.predicted_loss),
            "predicted_loss_at_optimum": plain(self.predicted_loss_at_optimum),
            "loss_interval": plain_map(self.loss_interval),
            "loss_interval_kind": self.loss_interval_kind,
            "shape_rule": self.shape_rule,
            "fitted_range": None if self.fitted_range is None else [plain(x) for x in self.fitted_range],
            "orders_outside": plain(self.orders_outside),
            "notes": list(self.notes),
        }


def _positive(name: str, value: float, fix: str) -> None:
    if not (isinstance(value, int | float | np.integer | np.floating) and math.isfinite(value) and value > 0):
        raise ValueError(f"{name} must be a finite positive number, got {value!r}; {fix}")


def plan(
    fit_result: Mapping[str, Any],
    *,
    flops: float,
    objective: str,
    method: str = "approach3",
    tokens_per_step: int,
    device_peak_flops: float,
    mfu: float,
    context: int,
    vocab_size: int = 33,
    shapes: list[ModelShape] | None = None,
    min_n_opt: float = MIN_N_OPT,
) -> Plan:
    """Plan a compute-optimal run of ``flops`` training FLOPs (``C = 6 N D``) with ``method``'s laws.

    ``device_peak_flops`` is the accelerator's peak FLOP/s in the training precision (e.g. 9.89e14 for an
    H100 SXM in dense bf16), ``mfu`` the model-FLOP utilisation expected (0 < mfu <= 1). Raises
    ``ValueError`` naming the fix when the method has no law in ``fit_result``, an argument is invalid, or
    the law gives an absurd plan (``N_opt`` below ``min_n_opt``, default :data:`MIN_N_OPT`, or not finite;
    fewer tokens than one optimizer step). A budget outside the fitted compute range is planned, with
    :attr:`Plan.orders_outside` and a note saying by how much (the CLI refuses it without
    ``--extrapolate``).
    """
    if not isinstance(fit_result, Mapping):
        raise ValueError(f"fit_result must be the fit JSON as a dict, got {type(fit_result).__name__}")
    if method not in METHODS:
        raise ValueError(f"method must be one of {list(METHODS)}, got {method!r}")
    recorded = fit_result.get("objective")
    if recorded is not None and recorded != objective:
        raise ValueError(
            f"fit_result is for objective {recorded!r} but objective={objective!r} was asked; pass that "
            f"objective's fit JSON"
        )
    _positive("flops", flops, "pass the training budget in FLOPs, e.g. 1e21")
    _positive("device_peak_flops", device_peak_flops, "pass the accelerator's peak FLOP/s, e.g. 9.89e14")
    _positive("mfu", mfu, "pass the expected model-FLOP utilisation as a fraction, e.g. 0.4")
    if mfu > 1:
        raise ValueError(f"mfu must be a fraction in (0, 1], got {mfu!r}; e.g. 40% is 0.4")
    for name, value in (
        ("tokens_per_step", tokens_per_step),
        ("context", context),
        ("vocab_size", vocab_size),
    ):
        if not isinstance(value, int | np.integer) or isinstance(value, bool) or value < 1:
            raise ValueError(f"{name} must be a positive integer, got {value!r}")

    (kn, an), (kd, ad) = method_laws(fit_result, method)
    budgets = fitted_budgets(fit_result)
    fitted_range = None if budgets is None else (budgets[0], budgets[-1])
    off = orders_outside(flops, fitted_range)
    where = range_message(flops, fitted_range, None if budgets is None else len(budgets))
    n_opt, d_opt = _power_law(kn, an, flops), _power_law(kd, ad, flops)
    if not (math.isfinite(n_opt) and n_opt >= min_n_opt and math.isfinite(d_opt) and d_opt > 0):
        raise ValueError(
            f"{method}'s law gives N_opt = {n_opt:.3g} parameters and D_opt = {d_opt:.3g} tokens at "
            f"C = {flops:.3g} FLOPs, not a model to train (N_opt must be at least {min_n_opt:.3g}); {where}; "
            f"{_absurd_fix(kn, an, min_n_opt, fitted_range)}"
        )
    shape, n_exact = nearest_shape(n_opt, vocab_size=vocab_size, shapes=shapes)
    num_tokens = flops / (6.0 * n_exact)
    if num_tokens < tokens_per_step:
        raise ValueError(
            f"C = {flops:.3g} FLOPs trains the {n_exact:,}-parameter model on {num_tokens:.3g} tokens, "
            f"less than one optimizer step of {tokens_per_step:,} tokens; raise the budget or lower the "
            "tokens per step"
        )
    steps = math.ceil(num_tokens / tokens_per_step)
    fpt = flops_per_token_with_attention(shape, n_exact, context)
    total = fpt * num_tokens
    gpu_hours = total / (device_peak_flops * mfu) / 3600.0

    notes: list[str] = []
    if off is None:
        notes.append(where)
    elif off != 0:
        notes.append(f"{where}: extrapolated, the laws are used beyond the budgets they were fitted on")
    params = _approach3_params(fit_result)
    if params is None:
        pred = pred_opt = None
        l_int, l_kind = None, "none (no Approach 3 fit in the fit result)"
        notes.append("no predicted loss: Approach 3 is missing or skipped in this fit")
    else:
        pred, pred_opt = float(_loss(params, n_exact, num_tokens)), float(_loss(params, n_opt, d_opt))
        l_int, l_kind = loss_interval(fit_result, n_exact, num_tokens)
        if method != "approach3":
            notes.append(f"loss predicted by Approach 3's L(N, D) at the {method} allocation")
    notebook_loss = _notebook_loss(fit_result, method, flops)
    if notebook_loss is not None:
        notes.append(notebook_loss)
    n_int, n_kind = _n_opt_interval(fit_result, method, flops)
    if abs(math.log(n_exact / n_opt)) > math.log1p(0.1):
        notes.append(
            f"the nearest shape has {n_exact / n_opt:.3g} x N_opt parameters: N_opt lies outside the shape "
            "search space (or its grid is too coarse there); pass shapes= to search others"
        )
    if abs(6.0 * n_opt * d_opt / flops - 1.0) > 0.05:
        notes.append(
            f"6 N_opt D_opt / C = {6.0 * n_opt * d_opt / flops:.3f}: the N_opt and D_opt laws were fitted "
            "separately; the plan trains D = C / (6 N) so the run spends exactly the budget"
        )
    return Plan(
        objective=objective, method=method, flops=float(flops), n_opt=n_opt, d_opt=d_opt,
        n_opt_interval=n_int, n_opt_interval_kind=n_kind, shape=shape, n_params=n_exact,
        num_tokens=num_tokens, steps=steps, tokens_per_step=int(tokens_per_step), context=int(context),
        vocab_size=int(vocab_size), flops_per_token=fpt, flops_with_attention=total,
        device_peak_flops=float(device_peak_flops), mfu=float(mfu), gpu_hours=gpu_hours,
        predicted_loss=pred, predicted_loss_at_optimum=pred_opt, loss_interval=l_int,
        loss_interval_kind=l_kind, notes=tuple(notes), fitted_range=fitted_range, orders_outside=off,
    )  # fmt: skip


def _absurd_fix(k: float, a: float, min_n_opt: float, fitted_range: tuple[float, float] | None) -> str:
    """The fix for an N_opt below ``min_n_opt``: the budget where ``k C^a`` reaches it, if any."""
    other = "use another --method or a fit made on larger budgets (--fit)"
    at_least = _power_law(1.0, 1.0 / a, min_n_opt / k) if a > 0 else math.nan
    if not math.isfinite(at_least):
        return other
    if fitted_range is not None and at_least > fitted_range[1]:
        return (
            f"this law reaches {min_n_opt:.3g} parameters only at {at_least:.3g} FLOPs, "
            f"{math.log10(at_least / fitted_range[1]):.1f} orders of magnitude above its fitted range; "
            f"{other}"
        )
    return f"plan at least {at_least:.3g} FLOPs (where this law reaches {min_n_opt:.3g} parameters)"


def _power_law(k: float, a: float, x: float) -> float:
    try:
        return k * x**a
    except OverflowError:
        return math.inf


def _notebook_loss(fit_result: Mapping[str, Any], method: str, flops: float) -> str | None:
    """The notebook's own ``L = a (C / unit)^b`` at ``flops`` (unit: a PF-day), as a note."""
    fit = fit_result.get(method)
    if method != "notebook_envelope" or not isinstance(fit, Mapping):
        return None
    loss_law = power_law(fit.get("loss"))
    unit = fit.get("loss_flops_unit", 8.64e19)
    if loss_law is None or not isinstance(unit, int | float) or not unit > 0:
        return None
    value = loss_law(flops / unit)
    return (
        f"the authors' notebook L(C) = {loss_law.coefficient:.4g} (C / {unit:.3g})^{loss_law.exponent:.4g} "
        f"gives {value:.4f} at this budget"
    )


def _si(x: float) -> str:
    for scale, suffix in ((1e12, "T"), (1e9, "B"), (1e6, "M"), (1e3, "k")):
        if abs(x) >= scale:
            return f"{x / scale:.3g}{suffix}"
    return f"{x:.3g}"


def format_plan(p: Plan) -> str:
    """A human-readable summary of a :class:`Plan` (units in every line, method named)."""
    lines = [
        f"Plan for {p.objective.upper()} at C = {p.flops:.3g} FLOPs (method: {p.method})",
        f"  compute-optimal N_opt   {p.n_opt:.4g} params ({_si(p.n_opt)}); D_opt {p.d_opt:.4g} tokens "
        f"({_si(p.d_opt)})",
    ]
    if p.n_opt_interval is not None:
        lines.append(
            f"  N_opt 95% interval      {p.n_opt_interval['lo']:.3g} .. {p.n_opt_interval['hi']:.3g} params "
            f"[{p.n_opt_interval_kind}]"
        )
    s = p.shape
    lines += [
        f"  model shape             {s.layers} layers x width {s.width}, {s.heads} heads of dim {s.head_dim} "
        f"(width/layers = {s.width / s.layers:.3g})",
        f"  exact N (non-embedding) {p.n_params:,} params ({_si(p.n_params)}; {p.n_ratio:.4f} x N_opt)",
        f"  training tokens D       {p.num_tokens:.4g} tokens ({_si(p.num_tokens)}; {p.tokens_per_param:.3g} "
        "tokens/param) = C / (6 N)",
        f"  optimizer steps         {p.steps:,} at {p.tokens_per_step:,} tokens/step (context {p.context})",
        f"  FLOPs with attention    {p.flops_with_attention:.4g} FLOPs ({p.flops_per_token:.4g} FLOPs/token)",
        f"  estimated time          {p.gpu_hours:.4g} GPU-hours at {p.mfu:.0%} MFU of "
        f"{p.device_peak_flops:.3g} FLOP/s peak",
    ]
    if p.fitted_range is not None and p.orders_outside is not None:
        off = p.orders_outside
        where = (
            "inside" if off == 0 else f"{abs(off):.1f} orders of magnitude {'above' if off > 0 else 'below'}"
        )
        lines.append(
            f"  fitted compute range    {p.fitted_range[0]:.3g} .. {p.fitted_range[1]:.3g} FLOPs (C {where})"
        )
    if p.predicted_loss is None:
        lines.append("  predicted loss          n/a (no Approach 3 fit)")
    else:
        line = f"  predicted loss          {p.predicted_loss:.4f} nats/token (Approach 3 L(N, D))"
        if p.loss_interval is not None:
            line += (
                f", 95% {p.loss_interval['lo']:.4f} .. {p.loss_interval['hi']:.4f} [{p.loss_interval_kind}]"
            )
        lines.append(line)
    lines += [f"  note: {n}" for n in p.notes]
    return "\n".join(lines)
