"""The plmscale command line (docs/cli.md): summary, runs, plan and grid.

User mistakes (a missing or malformed file, a bad config) print one line, ``plmscale <command>: <what>``,
on stderr and exit with code 2; no traceback.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

DESCRIPTION = "A compute-optimal scaling study of protein language models: inspect, plan and summarise."
EXAMPLES = """examples:
  plmscale grid --configfile my.yaml --device h100   what each run will train on, and how long
  plmscale summary                                   fitted exponents and best runs of a finished study
  plmscale runs                                      the finished runs: loss, tokens/s, MFU, status
  plmscale plan --flops 1e21 --objective mlm         N_opt, D_opt and cost of a budget from the fits

The workflow itself runs with snakemake (see README.md); `plmscale <command> --help` describes each command.
"""


def package_version() -> str:
    """The installed distribution's version, else the package's ``__version__`` (a source checkout)."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("plmscale")
    except PackageNotFoundError:
        from plmscale import __version__

        return __version__


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
                ci = fit.get("n_opt_exponent_ci")
                lines.append(
                    f"  {method}: N_opt ~ C^{fit['n_opt_exponent']:.3f}"
                    + (f" [95% {ci[0]:.3f}, {ci[1]:.3f}]" if ci and None not in ci else "")
                    + f", D_opt ~ C^{fit['d_opt_exponent']:.3f}"
                    + (f"  CAVEAT: {fit['caveat']}" if fit.get("caveat") else "")
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
        extrapolation = info.get("extrapolation") or {}
        if "skipped" in extrapolation:
            extrapolation = {"all methods": {"skipped": extrapolation["skipped"]}}
        for method, ext in extrapolation.items():
            if isinstance(ext, dict):
                lines.append(f"  extrapolation ({method}): not checked: {ext.get('skipped')}")
                continue
            for held in ext:
                ratio, err = held.get("n_opt_ratio"), held.get("loss_relative_error")
                lines.append(
                    f"  extrapolation ({method}) to {held['budget']:.3g} FLOPs: predicted/observed N_opt "
                    + ("n/a" if ratio is None else f"{ratio:.2f}")
                    + ", loss error "
                    + ("n/a" if err is None else f"{100 * err:+.1f}%")
                )
        noise = info.get("seed_spread") or {}
        if noise.get("n_points"):
            lines.append(
                f"  noise floor over {noise['seeds_per_point']} seeds at {noise['n_points']} points: "
                f"median sd {noise['median_sd']:.4f}, largest range {noise['max_range']:.4f} nats/token"
            )
        for run in info.get("throughput", []):
            mfu = "n/a" if run.get("mfu") is None else f"{100 * run['mfu']:.1f}%"
            lines.append(
                f"  run {run['run']}: N={run['n_params']:,}, {run['tokens_per_second']:,.0f} tokens/s, "
                f"MFU {mfu}, {run['wall_seconds']:.1f} s"
            )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    from plmscale import grid_cli
    from plmscale.planner import METHODS

    parser = argparse.ArgumentParser(
        prog="plmscale",
        description=DESCRIPTION,
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"plmscale {package_version()}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="command")
    grid_cli.add_parser(sub)
    p_summary = sub.add_parser("summary", help="print fitted exponents and best runs of a finished study")
    p_summary.add_argument(
        "path", nargs="?", default="results/summary.json", type=Path, help="default: results/summary.json"
    )
    p_runs = sub.add_parser("runs", help="table of runs: N, D, steps, loss, tokens/s, MFU and status")
    p_runs.add_argument("results", nargs="?", default="results", type=Path, help="results folder")
    p_runs.add_argument("--csv", action="store_true", help="print CSV instead of a Markdown table")
    p_plan = sub.add_parser("plan", help="N_opt, D_opt, predicted loss, nearest shape and cost for a budget")
    p_plan.add_argument("--flops", type=float, required=True, help="training compute budget C in FLOPs")
    p_plan.add_argument("--objective", choices=("clm", "mlm"), required=True)
    p_plan.add_argument(
        "--fit",
        type=Path,
        help="fit JSON (default: results/fits/<objective>.json, your own study, when it has the method's "
        "law, else results/paper/fits/<objective>.json, the paper's logs)",
    )
    p_plan.add_argument(
        "--method",
        default="approach2",
        choices=METHODS,
        help="which law gives N_opt and D_opt (default: approach2, the IsoFLOP fits; notebook_envelope is "
        "the authors' notebook fit, in the paper's fit only; the loss always comes from Approach 3's "
        "L(N, D))",
    )
    p_plan.add_argument(
        "--extrapolate",
        action="store_true",
        help="plan a budget outside the fitted compute range (otherwise: a warning and exit code 3)",
    )
    p_plan.add_argument("--tokens-per-step", type=int, default=524_288, help="tokens per optimizer step")
    p_plan.add_argument("--context", type=int, default=1024, help="tokens per sequence (attention FLOPs)")
    p_plan.add_argument(
        "--peak-flops",
        type=float,
        default=None,
        help="device peak FLOP/s (default: the measured run's device, else H100 SXM bf16 dense, 989 TFLOP/s)",
    )
    p_plan.add_argument(
        "--mfu",
        type=float,
        default=None,
        help="model FLOPs utilisation to assume (0-1]; default: measured by the largest run of --runs that "
        "trained on a GPU or Gaudi, else 0.4",
    )
    p_plan.add_argument("--runs", type=Path, default=Path("results/runs"), help="finished runs (for MFU)")
    p_plan.add_argument("--json", action="store_true", help="print the plan as JSON")
    args = parser.parse_args(argv)
    if args.command == "plan":
        return _plan(args)
    if args.command == "runs":
        return _runs(args)
    if args.command == "grid":
        return grid_cli.run(args)
    if args.command == "summary":
        return _summary(args.path)
    return 0


def _summary(path: Path) -> int:
    """Print a summary JSON; exit code 2 (one line on stderr) when it is missing or not a summary."""
    if not path.is_file():
        print(f"plmscale summary: no summary at {path}: run the workflow first (make run)", file=sys.stderr)
        return 2
    try:
        text = format_summary(json.loads(path.read_text()))
    except (ValueError, UnicodeDecodeError, KeyError, TypeError, AttributeError) as err:
        why = f"{type(err).__name__}: {err}".splitlines()[0]
        print(f"plmscale summary: {path} is not a summary JSON ({why})", file=sys.stderr)
        return 2
    print(text)
    return 0


def _runs(args: argparse.Namespace) -> int:
    """The runs table of a results folder (``plmscale.report_tables``); exit code 2 when there is none."""
    from plmscale.report_tables import RUN_COLUMNS, read_runs, to_csv, to_markdown

    if not (args.results / "runs").is_dir():
        where = args.results / "runs"
        print(f"plmscale runs: no runs in {where}: run the workflow first (make run)", file=sys.stderr)
        return 2
    try:
        rows = read_runs(args.results)
    except ValueError as err:
        print(f"plmscale runs: {err}", file=sys.stderr)
        return 2
    print((to_csv if args.csv else to_markdown)(rows, RUN_COLUMNS), end="")
    return 0


def _plan(args: argparse.Namespace) -> int:
    """Exit codes: 0 a plan, 2 a user error (no fit, no law, an absurd plan), 3 the budget lies outside
    the fitted compute range and --extrapolate was not given."""
    from plmscale.planner import (
        choose_fit,
        fitted_budgets,
        format_plan,
        method_laws,
        orders_outside,
        plan,
        range_message,
    )

    try:
        path, why = choose_fit(args.objective, args.method, args.fit)
        fit = json.loads(path.read_text())
        if not isinstance(fit, dict):
            raise ValueError(f"{path} is not a fit JSON (a JSON object with one entry per method)")
        method_laws(fit, args.method)  # no law: say so before anything about its range
        budgets = fitted_budgets(fit)
        fitted_range = None if budgets is None else (budgets[0], budgets[-1])
        off = orders_outside(args.flops, fitted_range)
    except ValueError as err:  # json.JSONDecodeError included
        print(f"plmscale plan: {err}", file=sys.stderr)
        return 2
    if off and not args.extrapolate:
        print(
            f"plmscale plan: warning: {range_message(args.flops, fitted_range, len(budgets or ()))} of "
            f"{path} ({why}); plan a budget inside it, or pass --extrapolate to plan this one anyway",
            file=sys.stderr,
        )
        return 3
    mfu, peak, source = _utilisation(args)
    if not 0 < mfu <= 1:
        print(f"--mfu {mfu} must be in (0, 1]", file=sys.stderr)
        return 2
    try:
        result = plan(
            fit,
            flops=args.flops,
            objective=args.objective,
            method=args.method,
            tokens_per_step=args.tokens_per_step,
            device_peak_flops=peak,
            mfu=mfu,
            context=args.context,
        )
    except ValueError as err:
        print(f"plmscale plan: {err}", file=sys.stderr)
        return 2
    if args.json:
        out = {**result.to_dict(), "mfu_source": source, "fit": str(path), "fit_reason": why}
        print(json.dumps(out, indent=2))
    else:
        print(f"fit: {path} ({why})\nMFU {mfu:.1%} of {peak:.4g} FLOP/s: {source}\n{format_plan(result)}")
    return 0


def _utilisation(args: argparse.Namespace) -> tuple[float, float, str]:
    """MFU and peak FLOP/s of the plan: given, else measured by a finished accelerator run, else assumed."""
    from plmscale.throughput import measured_mfu

    measured = measured_mfu(args.runs) if args.mfu is None else None
    if measured is not None:
        mfu, peak, source = measured
        return mfu, args.peak_flops or peak, source
    mfu = 0.4 if args.mfu is None else args.mfu
    source = f"assumed (no GPU/Gaudi run with MFU in {args.runs})" if args.mfu is None else "given (--mfu)"
    return mfu, args.peak_flops or 989e12, source


if __name__ == "__main__":
    raise SystemExit(main())
