"""Benchmark: Approach 3 on the Chinchilla points (Epoch AI extraction) vs a naive curve_fit baseline.

Usage: python bench/bench_fit.py [--csv PATH] [--bootstraps 100] [--seed 0] [--blas-threads 1]

Prints wall times of
  * the full Approach 3 fit (Hoffmann 4,500-start grid, Huber on log loss, L-BFGS-B + analytic gradient),
  * a naive baseline in the same process: scipy.optimize.curve_fit of L = E + A/N^alpha + B/D^beta on the raw
    loss from one start (least squares, no grid, no Huber),
  * their ratio, and, with --bootstraps K, K bootstrap refits extrapolated to 1,000.
The data is that of the tests: 245 points minus the five highest-loss ones (Besiroglu et al. 2024).

--blas-threads sets OPENBLAS_NUM_THREADS before numpy/scipy load (unless already set; 0 leaves it alone):
scipy's L-BFGS-B calls OpenBLAS on tiny matrices, and multithreaded OpenBLAS makes each solve 3-10x slower.
plmscale.fits limits threads itself when threadpoolctl is installed.
"""

from __future__ import annotations

import argparse
import csv
import os
import platform
import time
from pathlib import Path

DEFAULT_CSV = Path(__file__).resolve().parents[1].parent / "shared" / "chinchilla" / "svg_extracted_data.csv"


def load(path: Path):
    import numpy as np

    with path.open(newline="") as fh:
        rows = list(csv.DictReader(fh))
    n = np.array([float(r["Model Size"]) for r in rows])
    c = np.array([float(r["Training FLOP"]) for r in rows])
    loss = np.array([float(r["loss"]) for r in rows])
    keep = np.argsort(loss, kind="stable")[:-5]
    return n[keep], c[keep] / (6.0 * n[keep]), loss[keep]


def naive_law(x, e, a, b, alpha, beta):
    n, d = x
    return e + a * n**-alpha + b * d**-beta


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--csv", type=Path, default=DEFAULT_CSV)
    ap.add_argument("--bootstraps", type=int, default=1000, help="bootstrap resamples to time (0: skip)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--blas-threads", type=int, default=1, help="OPENBLAS_NUM_THREADS if unset (0: leave)")
    args = ap.parse_args()
    if not args.csv.is_file():
        raise SystemExit(f"Chinchilla data not found at {args.csv}; pass --csv PATH/svg_extracted_data.csv")
    if args.blas_threads > 0:
        os.environ.setdefault("OPENBLAS_NUM_THREADS", str(args.blas_threads))

    # imported after the environment is set: OpenBLAS reads it when loaded
    import numpy as np
    from plmscale import fits
    from scipy.optimize import curve_fit

    n, d, loss = load(args.csv)
    env = f"python {platform.python_version()}, numpy {np.__version__}, {os.cpu_count()} CPUs"
    blas = os.environ.get("OPENBLAS_NUM_THREADS", "unset")
    tpc = "yes" if fits.threadpool_limits is not None else "no"
    print(f"{env}; {len(n)} points; OPENBLAS_NUM_THREADS={blas}, threadpoolctl: {tpc}")

    # naive baseline: one start (Hoffmann's published values as the guess), plain least squares on raw loss
    p0 = (1.69, 406.4, 410.7, 0.34, 0.28)
    t0 = time.perf_counter()
    popt, _ = curve_fit(naive_law, np.vstack([n, d]), loss, p0=p0, maxfev=100_000)
    t_naive = time.perf_counter() - t0
    print(
        f"naive curve_fit (1 start)   {t_naive:9.3f} s   E={popt[0]:.4f} A={popt[1]:.1f} B={popt[2]:.1f} "
        f"alpha={popt[3]:.4f} beta={popt[4]:.4f}"
    )

    t0 = time.perf_counter()
    fit = fits.approach3(n, d, loss)
    t_full = time.perf_counter() - t0
    print(
        f"approach3 ({fit.n_starts} starts)   {t_full:9.3f} s   E={fit.E:.4f} A={fit.A:.1f} B={fit.B:.1f} "
        f"alpha={fit.alpha:.4f} beta={fit.beta:.4f}  failed starts={fit.n_failed}"
    )
    print(
        f"ratio approach3 / naive      {t_full / t_naive:9.1f} x   "
        f"({1e3 * t_full / fit.n_starts:.2f} ms per start)"
    )

    if args.bootstraps > 0:
        t0 = time.perf_counter()
        bs = fits.approach3_bootstrap(n, d, loss, n_resamples=args.bootstraps, seed=args.seed, full_fit=fit)
        t_bs = time.perf_counter() - t0
        t_1000 = t_bs * 1000 / args.bootstraps
        print(
            f"{args.bootstraps} bootstraps ({bs.starts_per_resample} starts each) {t_bs:7.3f} s -> "
            f"1,000 extrapolated {t_1000:.1f} s; full fit + 1,000 bootstraps ~ {t_full + t_1000:.1f} s"
        )
        se = "  ".join(f"{k}={v:.4g}" for k, v in bs.std.items())
        print(f"bootstrap SE: {se}")
        print("Besiroglu et al. 2024 SE: E=0.026  A=124.5  B=1293  alpha=0.015  beta=0.021  a=0.020")


if __name__ == "__main__":
    main()
