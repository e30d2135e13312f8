"""Downstream benchmark: what the frozen-backbone cache and unpadded batch-1 inference buy, as ratios
against a baseline measured in the same run.

1. Frozen classifier: features cached once (plmscale's default) vs the backbone run in every step (what
   the blog's Trainer does with requires_grad=False); both must end with the same head.
2. Batch-1 inference: every protein padded to ``--max-length`` (the blog's script) vs at its own length.

    .venv/bin/python bench/bench_downstream.py [--layers 4 --width 128 --proteins 256 --epochs 4]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "workflow"))

from plmscale.backbones import ModelSpec, load_backbone
from plmscale.finetune import FinetuneSettings, Split, train_classifier
from plmscale.flops import ModelShape
from plmscale.hwbench import inference_benchmark
from plmscale.model import build_model

RESIDUES = "ACDEFGHIKLMNPQRSTVWY"


def proteins(n: int, seed: int, min_len: int, max_len: int) -> Split:
    """Two classes that differ in hydrophobic content, lengths uniform in [min_len, max_len]."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 2, n)
    seqs = []
    for label in labels:
        length = int(rng.integers(min_len, max_len + 1))
        pool = "LIVFAM" if label else "KEDRQN"
        own = rng.random(length) < 0.3
        seqs.append(
            "".join(np.where(own, rng.choice(list(pool), length), rng.choice(list(RESIDUES), length)))
        )
    return Split(tuple(seqs), labels.astype(np.int64))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--width", type=int, default=128)
    parser.add_argument("--heads", type=int, default=4)
    parser.add_argument("--proteins", type=int, default=256, help="training proteins (valid/test: a quarter)")
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--max-length", type=int, default=512)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    cpu = torch.device("cpu")
    with tempfile.TemporaryDirectory() as tmp:
        shape = ModelShape(args.layers, args.width, args.heads)
        build_model(shape, "mlm", args.max_length, seed=0).save_pretrained(Path(tmp) / "model")
        spec = ModelSpec("bench", "own", str(Path(tmp) / "model"), objective="mlm")
        quarter = max(8, args.proteins // 4)
        splits = {
            "train": proteins(args.proteins, 1, 100, 400),
            "valid": proteins(quarter, 2, 100, 400),
            "test": proteins(quarter, 3, 100, 400),
        }
        print(
            f"# model {shape} ({args.max_length} positions), {args.proteins} training proteins of 100-400 "
            f"residues, {args.epochs} epochs, {args.threads} threads, torch {torch.__version__}"
        )
        runs = {}
        for cache in (False, True):
            settings = FinetuneSettings(
                lr=1e-3, batch_size=32, max_epochs=args.epochs, patience=args.epochs,
                max_length=args.max_length, n_bootstrap=100, cache_features=cache,
            )  # fmt: skip
            t0 = time.perf_counter()
            out = train_classifier(
                load_backbone(spec), splits, 2, settings, device=cpu, precision="fp32", log=lambda _m: None
            )
            runs[cache] = (time.perf_counter() - t0, out)
        heads = {cache: out.head_state for cache, (_, out) in runs.items()}
        same = all(torch.allclose(v, heads[False][k], atol=1e-4) for k, v in heads[True].items())
        for cache, label in (
            (False, "frozen, backbone every step (baseline)"),
            (True, "frozen, cached (plmscale)"),
        ):
            seconds, out = runs[cache]
            print(f"{label:40s} {seconds:8.2f} s   test accuracy {out.metrics['test_accuracy']:.3f}")
        print(f"ratio: cached is {runs[False][0] / runs[True][0]:.1f}x faster; same head: {same}")
        rows = inference_benchmark(
            load_backbone(spec), splits["test"], 2, head_state=heads[True], device=cpu, precision="fp32",
            max_length=args.max_length, warmup=4,
        )  # fmt: skip
        by = {r["padding"]: r for r in rows}
        for padding, label in (
            ("max_length", f"padded to {args.max_length} (baseline)"),
            ("none", "own length"),
        ):
            rate, acc = by[padding]["seq_per_s"], by[padding]["test_accuracy"]
            print(f"batch-1 inference, {label:28s} {rate:8.1f} seq/s   accuracy {acc:.3f}")
        ratio = by["none"]["seq_per_s"] / by["max_length"]["seq_per_s"]
        print(f"ratio: unpadded is {ratio:.2f}x the padded rate")


if __name__ == "__main__":
    main()
