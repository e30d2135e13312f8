"""Time the tool itself: how long `snakemake` takes to start, parse the workflow, build the DAG and print a
dry run, for the embedded default and the paper grid (`config/paper.yaml`).

    python bench/bench_dag.py [--repeats 12] [--configfile config/paper.yaml ...]

The commands run interleaved, ``--repeats`` rounds of each in turn, so that a slow spell of a shared
machine touches them alike; each time is the wall time of the whole process (outputs discarded).  Printed:
the median, the range, the job count, and the median above the floor (`snakemake --version`: importing
Snakemake and its plugins, measured in the same rounds).  The issue's target: the paper dry run under 3 s
on the 2-core CI machine.
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


def _run(cmd: list[str]) -> tuple[float, str]:
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True)
    seconds = time.perf_counter() - t0
    if proc.returncode != 0:
        sys.exit(f"{' '.join(cmd)} failed:\n{proc.stderr[-2000:]}")
    return seconds, proc.stdout


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=12)
    parser.add_argument("--configfile", action="append", help="default: the embedded one and paper.yaml")
    args = parser.parse_args()
    snakemake = shutil.which("snakemake") or sys.exit("snakemake is not on PATH (activate .venv)")
    commands = {"snakemake --version (the floor)": [snakemake, "--version"]}
    for configfile in args.configfile or [None, "config/paper.yaml"]:
        extra = ["--configfile", configfile] if configfile else []
        for flags in (["--list-rules"], ["-n", "--quiet"], ["-n"]):
            commands[f"snakemake {' '.join(flags)} ({configfile or 'embedded default'})"] = [
                snakemake, *flags, *extra
            ]  # fmt: skip
    times: dict[str, list[float]] = {name: [] for name in commands}
    jobs: dict[str, str] = {}
    for _ in range(args.repeats):
        for name, cmd in commands.items():
            seconds, out = _run(cmd)
            times[name].append(seconds)
            if found := re.search(r"^total\s+(\d+)", out, re.MULTILINE):
                jobs[name] = found.group(1)
    floor = statistics.median(times["snakemake --version (the floor)"])
    print(f"{'command':<58} {'jobs':>5} {'median s':>9} {'range s':>11} {'- floor':>8}")
    for name, values in times.items():
        median = statistics.median(values)
        spread = f"{min(values):.2f}-{max(values):.2f}"
        print(f"{name:<58} {jobs.get(name, ''):>5} {median:9.2f} {spread:>11} {median - floor:8.2f}")


if __name__ == "__main__":
    main()
