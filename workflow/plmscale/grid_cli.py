"""``plmscale grid``: the study's scaling points before anything trains (plmscale.grid_table)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from plmscale.grid_table import (
    DEVICES,
    Throughput,
    available_tokens,
    device_throughput,
    format_grid,
    grid_rows,
)


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "grid",
        help="per scaling point: N, D, steps, tokens/step, epochs per source and time on a device",
        description="Print every scaling point of a study (IsoFLOP, support, transfer and repetition runs): "
        "N, D, steps, tokens per step, epochs per source and the estimated time on one device, and warn "
        "when a source repeats. The config is the same as the workflow's: --configfile files merged over "
        "config/config.yaml.",
    )
    p.add_argument(
        "--configfile",
        action="append",
        type=Path,
        default=[],
        help="a user config merged over the embedded defaults (repeatable, like snakemake's)",
    )
    p.add_argument(
        "--device",
        action="append",
        choices=DEVICES,
        default=[],
        help="estimate the time on this device (repeatable); default: train.plan_peak_flops x "
        "train.expected_mfu of the config; cpu measures this machine with a 1 s matmul",
    )
    p.add_argument(
        "--precision", choices=("fp32", "bf16"), help="peak of this format (default: train.precision)"
    )
    p.add_argument("--mfu", type=float, help="model FLOPs utilisation (0-1]; default: train.expected_mfu")
    p.add_argument("--peak-flops", type=float, help="peak FLOP/s of the device (overrides the table)")
    p.add_argument(
        "-d",
        "--directory",
        type=Path,
        default=Path("."),
        help="the workflow's working directory: token manifests and relative FASTA paths are read there",
    )
    p.add_argument("--json", action="store_true", help="print the rows as JSON")


def run(args: argparse.Namespace) -> int:
    """Exit codes: 0 the table, 2 a config or device error (one line on stderr)."""
    from plmscale.config import SCHEMA_PATH, load_study, validate_config
    from plmscale.config_merge import read_user_config, study_config

    try:
        config = study_config(read_user_config(args.configfile))
        validate_config(config, SCHEMA_PATH)
        study = load_study(config)
        train = config["train"]
        mfu = float(train["expected_mfu"]) if args.mfu is None else args.mfu
        if args.device:
            precision = args.precision or train["precision"]
            throughputs = [device_throughput(d, precision, mfu, args.peak_flops) for d in args.device]
        else:
            peak = args.peak_flops or float(train["plan_peak_flops"])
            where = "--peak-flops" if args.peak_flops else "train.plan_peak_flops"
            throughputs = [Throughput("device", peak, mfu, where)]
            if not 0 < mfu <= 1:
                raise ValueError(f"MFU {mfu} must be in (0, 1]")
    except ValueError as err:
        print(f"plmscale grid: {err}", file=sys.stderr)
        return 2
    available = available_tokens(config, args.directory)
    rows = grid_rows(config, study, available)
    if args.json:
        out = {
            "rows": [r.to_dict() for r in rows],
            "sources": {name: vars(s) for name, s in available.items()},
            "devices": [vars(t) for t in throughputs],
            "seconds": {t.name: [t.seconds(r.flops) for r in rows] for t in throughputs},
        }
        print(json.dumps(out, indent=2))
    else:
        print(format_grid(rows, config, available, throughputs))
    return 0
