"""Command line: ``plmscale summary results/summary.json`` prints the study's headline numbers."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def format_summary(summary: dict) -> str:
    lines = []
    for objective, info in summary.items():
        best = info["best_run"]
        lines.append(
            f"{objective.upper()}: {info['n_runs']} runs, {info['training_seconds']:.0f} s of training; best "
            f"val loss {best['val_loss']:.4f} nats/token (N={best['n_params']:,}, D={best['num_tokens']:,})"
        )
        for method, fit in info["exponents"].items():
            if "n_opt_exponent" in fit:
                lines.append(
                    f"  {method}: N_opt ~ C^{fit['n_opt_exponent']:.3f}, "
                    f"D_opt ~ C^{fit['d_opt_exponent']:.3f}"
                    + (
                        f"  [{fit['budgets_at_edge']} of {fit['budgets']} budgets have their minimum at "
                        "the edge of the sampled sizes: extend the grid]"
                        if fit.get("budgets_at_edge")
                        else ""
                    )
                    + (
                        f"  (alpha={fit['alpha']:.3f}, beta={fit['beta']:.3f}, E={fit['E']:.3f})"
                        if "alpha" in fit
                        else ""
                    )
                )
            else:
                lines.append(f"  {method}: not fitted: {fit.get('skipped')}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="plmscale", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    p_summary = sub.add_parser("summary", help="print fitted exponents and best runs of a finished study")
    p_summary.add_argument("path", nargs="?", default="results/summary.json", type=Path)
    args = parser.parse_args(argv)
    if args.command == "summary":
        if not args.path.is_file():
            print(f"no summary at {args.path}: run the workflow first (make run)", file=sys.stderr)
            return 2
        print(format_summary(json.loads(args.path.read_text())))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
