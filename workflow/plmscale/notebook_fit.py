"""The authors' own fit, exactly as their notebook computes it ("notebook envelope").

Cheng et al. release ``plot_examples/scaling_law_fit_example.ipynb`` (github.com/cxysteven/
ScalingProteinLM, commit 12acfa0) whose printed laws are the paper's. Its code is labelled "Approach1",
but it is neither Hoffmann et al.'s Approach 1 nor our :func:`plmscale.fits.approach1`. Step by step
(each one mirrored below, in the same order):

1. Every CSV is read with ``skiprows=2``: the header *and the first logged point* are skipped.
2. Targets: for every ``run*`` file of every folder (also folders whose size the notebook cannot map),
   the smallest of its last 10 ``Step`` values (GFLOPs; the 10th-from-last for an increasing column).
3. N is taken from the **folder** name through a fixed table (folders it does not know are skipped),
   never from the file name.
4. For each target and each file of a mapped folder: if no logged point lies within 1e9 GFLOPs of the
   target the file is passed over; otherwise the closest point gives the loss, and the envelope keeps,
   per target, the lowest loss with that folder's N and ``D = (row + 1) x interval``, where ``row`` is
   the 0-based index after the skipped rows and ``interval`` the tokens between evaluations
   (300 steps x 1,048,576 tokens for ``...B`` folders, x 524,288 otherwise). D is not C / 6N.
5. Each of L(C), N(C), D(C) is fitted with ``scipy.optimize.curve_fit`` of ``y = a x^b`` in linear
   space (Levenberg-Marquardt from ``a = b = 1``), C in FLOPs; for L only, C is divided by a PF-day
   (8.64e19 FLOPs), so the loss law reads ``L = a (C / 8.64e19)^b``.

The targets are end-of-run compute values, so the "envelope" is a set of per-run end points where the
smallest loss at (nearly) the same compute wins: close to an IsoFLOP minimum per run end, with all
the noise of a single logged point.
"""

from __future__ import annotations

import dataclasses
import math
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from scipy.optimize import curve_fit

from plmscale.powerlaw import PowerLaw

PF_DAY_FLOPS = 8.64e19
"""One petaFLOP/s-day in FLOPs; the notebook's ``pfs``."""
MATCH_WINDOW_GFLOPS = 1e9
"""A file contributes to a target only if one of its points lies this close (in GFLOPs, the log unit)."""
TARGET_FROM_END = 10
"""Targets are the minimum over each file's last this-many ``Step`` values."""
EVAL_INTERVAL_STEPS = 300
TOKENS_PER_STEP_LARGE = 1024 * 1024
TOKENS_PER_STEP_SMALL = 512 * 1024

# The notebook's folder-label -> parameter-count table (its ``model_size_map``), in full.
FOLDER_SIZES: dict[str, int] = {
    "3M": 3538944, "6M": 6291456, "10M": 9830400, "13M": 13192320, "20M": 19267584, "25M": 25165824,
    "34M": 33690624, "40M": 39813120, "47M": 47775744, "65M": 65728000, "85M": 84934656,
    "106M": 106168320, "127M": 127699968, "154M": 154448288, "170M": 170233344, "200M": 202309632,
    "230M": 231211008, "300M": 302426080, "393M": 393216000, "470M": 472435184, "550M": 550502400,
    "650M": 650930624, "680M": 680205312, "880M": 886308864, "1.2B": 1208881136, "1.5B": 1528823808,
    "1.7B": 1784851968, "2B": 2044723200, "2.4B": 2359296000, "2.8B": 2834283904, "3.4B": 3425697792,
    "4B": 4076863488, "5B": 4917322640, "6B": 6165626880, "7B": 7247758312, "10B": 10682105856,
}  # fmt: skip

# The laws the notebook prints (its saved outputs), as (coefficient, exponent) of y = a x^b.
PUBLISHED_NOTEBOOK: dict[str, dict[str, tuple[float, float]]] = {
    "clm": {
        "loss": (2.36060057, -0.02492932),
        "n_opt": (0.0030879, 0.5574533),
        "d_opt": (130.19597934, 0.42614584),
    },
    "mlm": {
        "loss": (2.12612386, -0.02872987),
        "n_opt": (1.36463562e-07, 7.59801868e-01),
        "d_opt": (6.14903758e05, 2.56133566e-01),
    },
}


@dataclass(frozen=True)
class LogFile:
    """One ``run*`` CSV as the notebook sees it: the points after its two skipped rows."""

    folder: str
    name: str
    gflops: tuple[float, ...]
    loss: tuple[float, ...]


@dataclass(frozen=True)
class EnvelopePoint:
    flops: float
    loss: float
    n_params: float
    num_tokens: float
    folder: str
    file: str


@dataclass(frozen=True)
class NotebookFit:
    """The notebook's three laws on one objective's logs, and the envelope they were fitted to."""

    objective: str
    loss: PowerLaw
    """L = coefficient * (C / 8.64e19) ** exponent."""
    n_opt: PowerLaw
    d_opt: PowerLaw
    envelope: tuple[EnvelopePoint, ...]
    n_files: int
    n_targets: int
    method: str = "notebook_envelope"

    def to_dict(self) -> dict[str, Any]:
        return {
            "method": self.method,
            "objective": self.objective,
            "loss": self.loss.to_dict(),
            "loss_flops_unit": PF_DAY_FLOPS,
            "n_opt": self.n_opt.to_dict(),
            "d_opt": self.d_opt.to_dict(),
            "envelope": [dataclasses.asdict(p) for p in self.envelope],
            "n_files": self.n_files,
            "n_targets": self.n_targets,
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> NotebookFit:
        return cls(
            objective=d["objective"],
            loss=PowerLaw.from_dict(d["loss"]),
            n_opt=PowerLaw.from_dict(d["n_opt"]),
            d_opt=PowerLaw.from_dict(d["d_opt"]),
            envelope=tuple(EnvelopePoint(**p) for p in d["envelope"]),
            n_files=int(d["n_files"]),
            n_targets=int(d["n_targets"]),
            method=d.get("method", "notebook_envelope"),
        )


def read_log_file(path: Path) -> LogFile:
    """The CSV exactly as ``pd.read_csv(path, skiprows=2, header=None, encoding='latin1')`` reads it."""
    data = pd.read_csv(
        path, skiprows=2, header=None, names=["wall_time", "gflops", "loss"], encoding="latin1"
    )
    if data.empty:
        raise ValueError(
            f"{path}: no logged point after the header and first row; the notebook cannot use it"
        )
    return LogFile(
        folder=path.parent.name,
        name=path.name,
        gflops=tuple(data["gflops"].astype(float)),
        loss=tuple(data["loss"].astype(float)),
    )


def read_log_dir(objective_dir: str | Path) -> list[LogFile]:
    """Every ``run*`` file one level below ``objective_dir`` (e.g. ``gpt_valid/approach3_flops``).

    Folders are taken by increasing model size (unmapped ones last), files by name. The notebook uses
    ``os.listdir``, whose order decides exact ties only: the CLM 1e18 run filed under both ``6M_flops/``
    and ``13M_flops/`` ties with itself at 6 targets, and the published CLM law (N_opt ~ C^0.557453)
    comes out only when the 6M folder is read first; with name order it is C^0.557354.
    """
    root = Path(objective_dir)
    if not root.is_dir():
        raise ValueError(f"{root}: not a folder of per-size log folders (e.g. gpt_valid/approach3_flops)")
    files = []
    folders = [f for f in sorted(os.listdir(root)) if (root / f).is_dir()]
    for folder in sorted(folders, key=lambda f: folder_n_params(f) or math.inf):
        for name in sorted(os.listdir(root / folder)):
            if name.startswith("run"):
                files.append(read_log_file(root / folder / name))
    if not files:
        raise ValueError(f"{root}: no run*.csv file in any sub-folder")
    return files


def targets_gflops(files: Iterable[LogFile]) -> list[float]:
    """Step 2: the smallest of each file's last 10 Step values, sorted (duplicates kept)."""
    return sorted(min(f.gflops[-TARGET_FROM_END:]) for f in files)


def folder_n_params(folder: str) -> int | None:
    """Step 3: N from the folder label before the first ``_`` (``None``: the notebook skips the folder)."""
    return FOLDER_SIZES.get(folder.split("_")[0])


def tokens_per_eval(folder: str) -> int:
    label = folder.split("_")[0]
    per_step = TOKENS_PER_STEP_LARGE if label.endswith("B") else TOKENS_PER_STEP_SMALL
    return EVAL_INTERVAL_STEPS * per_step


def envelope(files: list[LogFile]) -> list[EnvelopePoint]:
    """Step 4: per target compute, the lowest loss over all files of mapped folders (first wins ties)."""
    targets = targets_gflops(files)
    best: dict[float, EnvelopePoint] = {}
    for f in files:
        n_params = folder_n_params(f.folder)
        if n_params is None:
            continue
        gflops, loss = np.asarray(f.gflops), np.asarray(f.loss)
        for target in targets:
            diff = np.abs(gflops - target)
            if diff.min() > MATCH_WINDOW_GFLOPS:
                continue
            row = int(np.argmin(diff))
            flops = target * 1e9
            current = best.get(flops)
            if current is None or current.loss > loss[row]:
                best[flops] = EnvelopePoint(
                    flops=flops,
                    loss=float(loss[row]),
                    n_params=float(n_params),
                    num_tokens=float((row + 1) * tokens_per_eval(f.folder)),
                    folder=f.folder,
                    file=f.name,
                )
    return list(best.values())


def _power(x: np.ndarray, a: float, b: float) -> np.ndarray:
    return a * np.power(x, b)


def fit_linear_power(x: np.ndarray, y: np.ndarray) -> PowerLaw:
    """Step 5: ``curve_fit(a x^b)`` in linear space from (1, 1), as the notebook (``maxfev=10000``)."""
    try:
        (a, b), _ = curve_fit(_power, np.asarray(x, float), np.asarray(y, float), maxfev=10000)
    except RuntimeError as err:  # maxfev reached: the notebook would have stopped here too
        raise ValueError(
            f"curve_fit of y = a x^b from (1, 1) did not converge on {len(x)} envelope points ({err}); "
            "the notebook method needs envelope points that vary with compute -- add runs or budgets"
        ) from err
    return PowerLaw(coefficient=float(a), exponent=float(b))


def notebook_fit(files: list[LogFile], objective: str) -> NotebookFit:
    points = envelope(files)
    if len(points) < 3:
        raise ValueError(f"{objective}: {len(points)} envelope points; the notebook fit needs at least 3")
    c = np.array([p.flops for p in points])
    return NotebookFit(
        objective=objective,
        loss=fit_linear_power(c / PF_DAY_FLOPS, np.array([p.loss for p in points])),
        n_opt=fit_linear_power(c, np.array([p.n_params for p in points])),
        d_opt=fit_linear_power(c, np.array([p.num_tokens for p in points])),
        envelope=tuple(points),
        n_files=len(files),
        n_targets=len(set(targets_gflops(files))),
    )


@dataclass(frozen=True)
class _MatchTable:
    """Per (file, distinct target): loss and tokens of the closest point (inf loss: file not counted)."""

    targets_gflops: np.ndarray  # distinct targets, sorted
    file_targets: list[np.ndarray]  # per file: indices into targets_gflops of the targets it contributes
    loss: np.ndarray  # (files, targets)
    tokens: np.ndarray  # (files, targets)
    n_params: np.ndarray  # (files,)


def _match_table(files: list[LogFile]) -> _MatchTable:
    own_targets = [min(f.gflops[-TARGET_FROM_END:]) for f in files]
    targets = np.unique(own_targets)
    loss = np.full((len(files), len(targets)), np.inf)
    tokens = np.zeros_like(loss)
    n_params = np.zeros(len(files))
    for i, f in enumerate(files):
        n = folder_n_params(f.folder)
        if n is None:
            continue
        n_params[i] = n
        diff = np.abs(np.asarray(f.gflops)[None, :] - targets[:, None])
        rows = np.argmin(diff, axis=1)
        ok = diff[np.arange(len(targets)), rows] <= MATCH_WINDOW_GFLOPS
        loss[i, ok] = np.asarray(f.loss)[rows[ok]]
        tokens[i, ok] = (rows[ok] + 1) * tokens_per_eval(f.folder)
    file_targets = [np.searchsorted(targets, [t]) for t in own_targets]
    return _MatchTable(targets, file_targets, loss, tokens, n_params)


def _laws_from(table: _MatchTable, pick: np.ndarray) -> dict[str, PowerLaw]:
    """The three laws on the envelope of the files ``pick`` (a resample, duplicates allowed, in order)."""
    cols = np.unique(np.concatenate([table.file_targets[i] for i in pick]))
    sub = table.loss[np.ix_(pick, cols)]
    best = np.argmin(sub, axis=0)  # first of equal losses wins, as in the notebook
    found = np.isfinite(sub[best, np.arange(len(cols))])
    if found.sum() < 3:
        raise ValueError(f"{int(found.sum())} envelope points; the notebook fit needs at least 3")
    rows, cols = pick[best[found]], cols[found]
    c = table.targets_gflops[cols] * 1e9
    return {
        "loss": fit_linear_power(c / PF_DAY_FLOPS, table.loss[rows, cols]),
        "n_opt": fit_linear_power(c, table.n_params[rows]),
        "d_opt": fit_linear_power(c, table.tokens[rows, cols]),
    }


def notebook_bootstrap(files: list[LogFile], objective: str, *, n_resamples: int, seed: int) -> Any:
    """Nonparametric bootstrap of :func:`notebook_fit` over *runs* (log files).

    Each resample (``numpy.random.default_rng(seed)``) draws as many files as there are, with replacement,
    and repeats steps 2-5 on them: the targets are those of the drawn files, the envelope the lowest loss
    over the drawn files. A resample whose ``curve_fit`` does not converge (``RuntimeError``) or that has
    fewer than 3 envelope points is counted as failed with its reason. Returns a
    :class:`plmscale.fits.LawBootstrapResult` (2.5/50/97.5 percentiles of exponents and coefficients).
    """
    from plmscale import fits  # local: fits is heavy and only the bootstrap needs it

    if not isinstance(n_resamples, int) or n_resamples < 2:
        raise ValueError(f"n_resamples must be an integer >= 2 for percentiles, got {n_resamples!r}")
    full = notebook_fit(files, objective)
    table = _match_table(files)
    rng = np.random.default_rng(seed)
    draws: dict[str, list[float]] = {
        f"{p}_{q}": [] for p in ("n_opt", "d_opt", "loss") for q in ("exponent", "coefficient")
    }
    failures: dict[str, int] = {}
    for _ in range(n_resamples):
        pick = rng.integers(0, len(files), size=len(files))
        try:
            laws = _laws_from(table, pick)
        except ValueError as err:  # too few envelope points, or curve_fit hit maxfev
            key = str(err).split(" (")[0]
            failures[key] = failures.get(key, 0) + 1
            continue
        for name, law in laws.items():
            draws[f"{name}_exponent"].append(law.exponent)
            draws[f"{name}_coefficient"].append(law.coefficient)
    n_ok = len(draws["n_opt_exponent"])
    if n_ok < 2:
        raise ValueError(
            f"notebook bootstrap: only {n_ok} of {n_resamples} resamples could be fitted ({failures})"
        )
    return fits.LawBootstrapResult(
        method="notebook_envelope_bootstrap",
        n_resamples=n_resamples,
        seed=seed,
        resample_unit="run (log file)",
        n_failed=n_resamples - n_ok,
        failure_messages=tuple(f"{k} (x{v})" for k, v in sorted(failures.items())),
        full_fit=full,  # type: ignore[arg-type]
        percentiles={k: fits.interval(v) for k, v in draws.items()},
        samples={k: tuple(v) for k, v in draws.items()},
    )


def method_steps(notebook: Mapping[str, Any], approach1: Mapping[str, Any]) -> list[dict[str, Any]]:
    """From the notebook's fit to our Approach 1, one difference at a time (N_opt and D_opt exponents).

    Rows: the notebook as is; its envelope fitted in log space (fit space); its envelope with
    D = C / (6 N) instead of D from the row index (D from rows); our Approach 1 envelope fitted in
    linear space as the notebook does (envelope); our Approach 1 (log-space least squares). ``notebook`` and
    ``approach1`` are the ``to_dict()`` of :class:`NotebookFit` and :class:`plmscale.fits.Approach1Result`.
    """
    from plmscale.powerlaw import fit_power_law

    env = notebook["envelope"]
    c = np.array([p["flops"] for p in env])
    n = np.array([p["n_params"] for p in env])
    d = np.array([p["num_tokens"] for p in env])
    rows = [
        ("authors' notebook (envelope of run ends, linear-space fit, D from rows)", fit_linear_power(c, n),
         fit_linear_power(c, d)),
        ("same envelope, log-space fit", fit_power_law(c, n), fit_power_law(c, d)),
        ("same envelope, D = C / 6N", fit_linear_power(c, n), fit_linear_power(c, c / (6 * n))),
    ]  # fmt: skip
    a1 = approach1.get("envelope")
    if a1:
        c1, n1, d1 = (np.asarray(a1[k], float) for k in ("flops", "n_params", "num_tokens"))
        rows.append(
            ("Approach 1 envelope (all points, log bins), linear-space fit", fit_linear_power(c1, n1),
             fit_linear_power(c1, d1))
        )  # fmt: skip
        rows.append(("Approach 1 (log-space fit)", fit_power_law(c1, n1), fit_power_law(c1, d1)))
    return [
        {"step": step, "n_opt_exponent": n_law.exponent, "d_opt_exponent": d_law.exponent, "n_points": len(c)}
        | ({"n_points": len(a1["flops"])} if step.startswith("Approach 1") and a1 else {})
        for step, n_law, d_law in rows
    ]
