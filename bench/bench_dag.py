"""Time the tool itself: how long `snakemake` takes to start, parse the workflow, build the DAG and print a
dry run, for the embedded default and the paper grid (`config/paper.yaml`).

    python bench/bench_dag.py [--repeats 7] [--configfile config/paper.yaml ...]

Each command runs ``--repeats`` times in a row (wall time of the whole process, outputs discarded); the
median and the minimum are printed, with the job count and the seconds above the floor (`snakemake
--version`: importing Snakemake and its plugins, measured in the same run).  The issue's target: the paper
dry run under 3 s on the 2-core CI machine.
"""

from __future__ import annotations

import argparse
import re
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def _time(cmd: list[str], repeats: int) -> tuple[float, float, str]:
    times, out = [], ""
    for _ in range(repeats):
        t0 = time.perf_counter()
        proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True)
        times.append(time.perf_counter() - t0)
        if proc.returncode != 0:
            sys.exit(f"{' '.join(cmd)} failed:\n{proc.stderr[-2000:]}")
        out = proc.stdout
    return statistics.median(times), min(times), out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--configfile", action="append", help="default: the embedded one and paper.yaml")
    args = parser.parse_args()
    snakemake = shutil.which("snakemake") or sys.exit("snakemake is not on PATH (activate .venv)")
    floor, floor_min, _ = _time([snakemake, "--version"], args.repeats)
    print(f"{'command':<58} {'jobs':>5} {'median s':>9} {'min s':>7} {'- floor':>8}")
    print(f"{'snakemake --version (the floor)':<58} {'':>5} {floor:9.2f} {floor_min:7.2f} {0:8.2f}")
    for configfile in args.configfile or [None, "config/paper.yaml"]:
        extra = ["--configfile", configfile] if configfile else []
        name = configfile or "embedded default"
        for flags in (["--list-rules"], ["-n", "--quiet"], ["-n"]):
            label = " ".join(flags)
            median, fastest, out = _time([snakemake, *flags, *extra], args.repeats)
            jobs = re.search(r"^total\s+(\d+)", out, re.MULTILINE)
            print(
                f"{'snakemake ' + label + ' (' + name + ')':<58} {jobs.group(1) if jobs else '':>5} "
                f"{median:9.2f} {fastest:7.2f} {median - floor:8.2f}"
            )


if __name__ == "__main__":
    main()
