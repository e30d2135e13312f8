"""Benchmark: the data stages at x and 10x input: MB/s and peak RSS per stage, and the RSS ratio.

    python bench/bench_data.py                 # x = 100 MB, 10x = 1 GB of FASTA (uncompressed), ~10 min
    python bench/bench_data.py --x-mb 10       # a quick look

Synthesises FASTA.gz from real proteins (the embedded sources, copied with unique IDs), then runs
validate, pool, split and tokenize through the package, each stage in a fresh process
(:mod:`plmscale.databench`).  Prints, never asserts; the target is an RSS ratio (10x / x) <= 1.3 per
stage.  Where ``seqkit`` is installed (Debian package ``seqkit``) it reads the same files in the same run
(``seqkit stats``) as a reference for what reading FASTA costs.
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "workflow"))

from plmscale.databench import StageRun, measure_command, pipeline, real_proteins


def seqkit_stats(path: Path, input_bytes: int) -> StageRun | None:
    """``seqkit stats`` on ``path``: wall time and peak RSS (None when seqkit is absent)."""
    binary = shutil.which("seqkit")
    if binary is None:
        return None
    return measure_command("seqkit stats", [binary, "stats", "-j", "1", str(path)], input_bytes)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--x-mb", type=float, default=100.0, help="the 1x input, MB of uncompressed FASTA")
    p.add_argument("--scale", type=int, default=10, help="the larger input is this many times x")
    p.add_argument("--workdir", default=None, help="where to write (default: a temporary directory)")
    args = p.parse_args()
    proteins = real_proteins()
    cpu = platform.processor() or platform.machine()
    print(f"# python {platform.python_version()}, {os.cpu_count()} CPUs ({cpu})")
    print(f"# {len(proteins):,} real proteins (pyhmmer proteome + pyrodigal metagenome calls), copied")
    with tempfile.TemporaryDirectory(dir=args.workdir) as tmp:
        results = {}
        for factor in (1, args.scale):
            work = Path(tmp) / f"x{factor}"
            runs = pipeline(work, int(args.x_mb * factor * 1e6), proteins)
            reference = seqkit_stats(work / "input.fasta.gz", runs[0].input_bytes)
            results[factor] = runs + ([reference] if reference else [])
            shutil.rmtree(work / "split", ignore_errors=True)
        header = f"{'stage':<14} {'size':>5} {'input MB':>9} {'s':>7} {'MB/s':>7} {'peak RSS MB':>12}"
        print(header)
        for factor, runs in results.items():
            for run in runs:
                print(f"{run.stage:<14} {factor:>4}x {run.input_bytes / 1e6:>9.1f} {run.seconds:>7.1f} "
                      f"{run.mb_per_s:>7.1f} {run.peak_rss_bytes / 2**20:>12.1f}")  # fmt: skip
        print(f"\nRSS ratio {args.scale}x / 1x per stage (target <= 1.3):")
        small = {run.stage: run for run in results[1]}
        for run in results[args.scale]:
            if run.stage in small:
                ratio = run.peak_rss_bytes / small[run.stage].peak_rss_bytes
                print(f"  {run.stage:<14} {ratio:.2f}")


if __name__ == "__main__":
    main()
