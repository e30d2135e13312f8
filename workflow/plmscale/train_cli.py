"""Command line of one training run (what the ``train`` rule launches, optionally under torchrun/srun).

    python -m plmscale.train_cli --job '<TrainJob JSON>' --execution '<ExecutionSettings JSON>' \\
        --time-limit-s 3300 --threads 8

The job (run settings, token shards, output and checkpoint directories) is the JSON of
:class:`plmscale.settings.TrainJob`; the execution is ``plmscale.settings.execution_config`` of the validated
config (the execution keys of ``train`` and its ``by_size`` tiers; the tier of the run's size applies).
Both are written by the workflow; a value may also be ``@path`` to a file holding the JSON.

Exit codes: 0 done; 75 (EX_TEMPFAIL) stopped early by SIGTERM/SIGUSR1 or the time limit after committing
a checkpoint (run the same command again to resume); anything else is an error.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

STARTED = time.monotonic()  # the time limit counts from process start (imports and data loading included)


def _json(value: str) -> dict:
    text = Path(value[1:]).read_text() if value.startswith("@") else value
    try:
        return json.loads(text)
    except json.JSONDecodeError as err:
        raise argparse.ArgumentTypeError(f"not valid JSON ({err}): {text[:200]!r}") from err


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m plmscale.train_cli", description=__doc__.split("\n")[0])
    p.add_argument("--job", type=_json, required=True, help="TrainJob JSON (or @file)")
    p.add_argument(
        "--execution", type=_json, required=True,
        help='{"train": {<execution keys>, "by_size": [...]}} JSON (or @file); the run size\'s tier applies',
    )  # fmt: skip
    p.add_argument("--time-limit-s", type=float, default=None, help="seconds from start; default none")
    p.add_argument("--time-margin-s", type=float, default=0.0, help="extra seconds kept free at the end")
    p.add_argument("--threads", type=int, default=1, help="torch threads per process")
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    from plmscale.settings import TrainJob, execution_settings
    from plmscale.train import TrainingStopped, train_run

    job = TrainJob.from_dict(args.job).with_shards()
    execution = execution_settings(args.execution, job.run.n_params)
    job.model_dir.mkdir(parents=True, exist_ok=True)
    try:
        train_run(
            job,
            execution,
            threads=args.threads,
            log=lambda *a: print(*a, flush=True),
            time_limit_s=args.time_limit_s,
            time_margin_s=args.time_margin_s,
            started_at=STARTED,
        )
    except TrainingStopped as stopped:
        print(f"{stopped} (exit code {stopped.exit_code})", file=sys.stderr, flush=True)
        return stopped.exit_code
    return 0


if __name__ == "__main__":
    sys.exit(main())
