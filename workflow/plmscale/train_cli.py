"""Command line of one training run (what the ``train`` rule launches, optionally under torchrun/srun).

    python -m plmscale.train_cli --objective mlm --layers 2 --width 32 --heads 2 --flops 1e9 --lr 0.005 \\
        --context 32 --batch-rows 8 --train-dirs results/tokens/train/shard0 ... \\
        --valid-dirs results/tokens/valid/shard0 ... --model-dir results/runs/mlm/1e9/c/model \\
        --metrics results/runs/mlm/1e9/c/metrics.parquet --done results/runs/mlm/1e9/c/done.json \\
        --checkpoint-dir results/checkpoints/mlm/1e9/c --checkpoint-every 500 --time-limit-s 3300

Exit codes: 0 done; 75 (EX_TEMPFAIL) stopped early by SIGTERM/SIGUSR1 or the time limit after committing
a checkpoint (run the same command again to resume); anything else is an error.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

STARTED = time.monotonic()  # the time limit counts from process start (imports and data loading included)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m plmscale.train_cli", description=__doc__.split("\n")[0])
    run = p.add_argument_group("run (one scaling point)")
    run.add_argument("--objective", required=True, choices=["clm", "mlm"])
    run.add_argument("--layers", type=int, required=True)
    run.add_argument("--width", type=int, required=True)
    run.add_argument("--heads", type=int, required=True)
    run.add_argument("--flops", type=float, required=True, help="compute budget C of the run")
    run.add_argument("--lr", type=float, required=True, help="peak learning rate")
    run.add_argument("--context", type=int, required=True)
    run.add_argument("--batch-rows", type=int, required=True, help="global batch (all processes)")
    run.add_argument("--warmup-fraction", type=float, default=0.05)
    run.add_argument("--min-lr-ratio", type=float, default=0.1)
    run.add_argument("--weight-decay", type=float, default=0.1)
    run.add_argument("--beta1", type=float, default=0.9)
    run.add_argument("--beta2", type=float, default=0.95)
    run.add_argument("--grad-clip", type=float, default=1.0)
    run.add_argument("--mask-ratio", type=float, default=0.15, help="MLM only (pass 0 for CLM)")
    run.add_argument("--seed", type=int, default=0)
    run.add_argument("--eval-points", type=int, default=6)
    run.add_argument("--eval-max-tokens", type=int, default=8192)
    run.add_argument("--eval-seed", type=int, default=1234)
    io = p.add_argument_group("inputs and outputs")
    io.add_argument("--train-dirs", nargs="+", required=True, type=Path, help="token-store shard dirs")
    io.add_argument("--valid-dirs", nargs="+", required=True, type=Path)
    io.add_argument("--model-dir", required=True, type=Path)
    io.add_argument("--metrics", required=True, type=Path)
    io.add_argument("--done", required=True, type=Path)
    rel = p.add_argument_group("surviving the cluster")
    rel.add_argument("--checkpoint-dir", type=Path, default=None, help="outside the declared outputs")
    rel.add_argument("--checkpoint-every", type=int, default=0, help="steps; 0 = only when stopping")
    rel.add_argument("--time-limit-s", type=float, default=None, help="seconds from start; default none")
    rel.add_argument("--time-margin-s", type=float, default=0.0, help="extra seconds kept free at the end")
    rel.add_argument("--keep-checkpoints", action="store_true", help="keep them after a finished run")
    rel.add_argument("--threads", type=int, default=1, help="torch threads per process")
    rel.add_argument("--device", default="auto", help="auto (CUDA if available), cpu, cuda")
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    from plmscale.flops import ModelShape
    from plmscale.train import TrainingStopped, TrainSettings, train_run

    settings = TrainSettings(
        objective=args.objective,
        shape=ModelShape(layers=args.layers, width=args.width, heads=args.heads),
        flops_budget=args.flops,
        context=args.context,
        batch_rows=args.batch_rows,
        peak_lr=args.lr,
        warmup_fraction=args.warmup_fraction,
        min_lr_ratio=args.min_lr_ratio,
        weight_decay=args.weight_decay,
        beta1=args.beta1,
        beta2=args.beta2,
        grad_clip=args.grad_clip,
        mask_ratio=args.mask_ratio,
        seed=args.seed,
        eval_points=args.eval_points,
        eval_max_tokens=args.eval_max_tokens,
        eval_seed=args.eval_seed,
    )
    for path in (args.model_dir, args.metrics.parent, args.done.parent):
        path.mkdir(parents=True, exist_ok=True)
    try:
        train_run(
            settings,
            args.train_dirs,
            args.valid_dirs,
            model_dir=args.model_dir,
            metrics_path=args.metrics,
            done_path=args.done,
            threads=args.threads,
            log=lambda *a: print(*a, flush=True),
            checkpoint_dir=args.checkpoint_dir,
            checkpoint_every=args.checkpoint_every,
            time_limit_s=args.time_limit_s,
            time_margin_s=args.time_margin_s,
            started_at=STARTED,
            keep_checkpoints=args.keep_checkpoints,
            device=args.device,
        )
    except TrainingStopped as stopped:
        print(f"{stopped} (exit code {stopped.exit_code})", file=sys.stderr, flush=True)
        return stopped.exit_code
    return 0


if __name__ == "__main__":
    sys.exit(main())
