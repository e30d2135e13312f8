"""Training throughput: the same model trained as a Hugging Face user would, and by plmscale's fastest
path on this device, measured in one process, interleaved step by step (prints, never asserts).

(a) "HF user": ``EsmTokenizer`` ids truncated to the context, ``DataCollatorForLanguageModeling`` (dynamic
    padding to the longest sequence of each batch, 15% masking), the model's own loss, SDPA attention
    with a 2D padding mask, fp32, ``torch.optim.AdamW`` (default foreach).
(b) plmscale: the real trainer's step (``plmscale.steps.train_step`` on a ``plmscale.train._Trainer``):
    proteins packed into full rows (no padding), per-protein attention (``--attention``, default
    ``varlen``), bf16 autocast where the device supports it (``--precision``), fused AdamW, batches
    built ahead in a background thread.

Both train ``RobertaPreLayerNormForMaskedLM`` of the same shape on real proteins (the pyhmmer proteome,
2,100 proteins, replicated) at the same context, ``--rows`` sequences/rows per step.  Reported per
configuration: the median over ``--rounds`` interleaved steps (after ``--warmup`` steps) of real (non-pad)
tokens/s, and MFU = real tokens/s x (6N + 12 L d T) / peak (PaLM App. B; T = context), with the peak
measured on this device (``plmscale.peaks.measure_cpu_peak``, fp32 for (a), the run's precision for (b))
or given (``--peak-flops``).  The ratio of real tokens/s is the number to read.

Usage: ``python bench/bench_train.py [--context 1024] [--rows 8] [--shapes 4x128x4,4x256x8] [--device cpu]``
"""

from __future__ import annotations

import argparse
import platform
import statistics
import tempfile
import time
from importlib import resources
from pathlib import Path

import numpy as np
import torch
import transformers
from plmscale import devices, peaks
from plmscale.distributed import DistInfo
from plmscale.fasta import read_fasta
from plmscale.fasta_index import index_fasta
from plmscale.flops import ModelShape, flops_per_token_with_attention
from plmscale.model import build_model, count_parameters
from plmscale.settings import ExecutionSettings, TrainJob, TrainSettings
from plmscale.steps import StepBatches, train_step
from plmscale.tokenize import tokenize_shard
from plmscale.tokens import esm_tokenizer
from plmscale.train import _Trainer
from plmscale.validate import ValidationPolicy, validate_records
from transformers import DataCollatorForLanguageModeling

PROTEOME = ("tests", "data", "seqs", "938293.PRJEB85.HG003687.faa")


def load_proteome(replicate: int) -> list[str]:
    path = Path(str(resources.files("pyhmmer").joinpath(*PROTEOME)))
    result = validate_records(read_fasta(path), ValidationPolicy(), source="pyhmmer", path=str(path))
    return [seq for _, seq in result.kept] * replicate


class HFUser:
    """Path (a): what a Hugging Face user writes."""

    def __init__(self, shape: ModelShape, context: int, rows: int, sequences: list[str], device, seed: int):
        with tempfile.TemporaryDirectory() as tmp:
            self.tokenizer = esm_tokenizer(tmp)
        encoded = self.tokenizer(sequences, truncation=True, max_length=context)["input_ids"]
        self.examples = [{"input_ids": ids} for ids in encoded]
        self.collator = DataCollatorForLanguageModeling(
            self.tokenizer, mlm_probability=0.15, return_tensors="pt"
        )
        self.model = build_model(shape, "mlm", context, seed).to(device)
        self.model.train()
        self.optimizer = torch.optim.AdamW(self.model.parameters(), lr=1e-4, betas=(0.9, 0.95))
        self.rows, self.device = rows, device
        self.rng = np.random.default_rng(seed)

    def step(self) -> int:
        """One step; returns the real (non-pad) tokens it trained on."""
        picks = self.rng.integers(0, len(self.examples), size=self.rows)
        batch = self.collator([self.examples[i] for i in picks])
        batch = {k: v.to(self.device) for k, v in batch.items()}
        out = self.model(**batch)
        out.loss.backward()
        torch.nn.utils.clip_grad_norm_(self.model.parameters(), 1.0)
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        devices.synchronize(self.device)
        return int(batch["attention_mask"].sum())


class Plmscale:
    """Path (b): plmscale's trainer step on packed rows."""

    def __init__(self, shape: ModelShape, context: int, rows: int, shard: Path, args) -> None:
        run = TrainSettings(
            objective="mlm", shape=shape, flops_budget=1e30, context=context, batch_rows=rows, peak_lr=1e-4,
            warmup_fraction=0.01, min_lr_ratio=0.1, weight_decay=0.1, beta1=0.9, beta2=0.95, grad_clip=1.0,
            mask_ratio=0.15, seed=0, eval_points=1, eval_max_tokens=context, eval_seed=0,
            precision=args.precision,
        )  # fmt: skip
        self.execution = ExecutionSettings(
            device=args.device, attention=args.attention, micro_batch_rows=rows, parallel="ddp",
            activation_checkpointing=False, compile=args.compile, fused_adamw=True, log_every=10**9,
            checkpoint_every=0, keep_checkpoints=False, on_input_change="refuse", peak_flops=1.0,
            prefetch_steps=2,
        )  # fmt: skip
        job = TrainJob(run_id="bench", run=run, train_dirs=(str(shard),), valid_dirs=(str(shard),),
                       out_dir=str(shard.parent / "out"), checkpoint_dir=None)  # fmt: skip
        device = devices.resolve_device(args.device, log=None)
        self.trainer = _Trainer(job, self.execution, DistInfo(0, 1, 0), device, lambda *a: None)
        self.trainer.model.train()
        self.batches = StepBatches(
            self.trainer.streams.train, run, DistInfo(0, 1, 0), rows, device, 2, 0, args.attention
        )
        self.batches.__enter__()
        self.step_index, self.tokens_per_step = 0, run.tokens_per_step

    def step(self) -> int:
        train_step(self.trainer, self.batches.get(self.step_index), 1e-4, stop_vote=False)
        devices.synchronize(self.trainer.device)
        self.step_index += 1
        return self.tokens_per_step  # packed rows: every token is real

    def close(self) -> None:
        self.batches.__exit__(None, None, None)


def timed_steps(paths: dict, rounds: int, warmup: int) -> dict[str, list[float]]:
    """Real tokens/s of each path per step, interleaved so host noise hits all alike."""
    for path in paths.values():
        for _ in range(warmup):
            path.step()
    rates: dict[str, list[float]] = {name: [] for name in paths}
    for _ in range(rounds):
        for name, path in paths.items():
            t0 = time.perf_counter()
            tokens = path.step()
            rates[name].append(tokens / (time.perf_counter() - t0))
    return rates


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--context", type=int, default=1024)
    p.add_argument("--rows", type=int, default=8, help="sequences (a) / packed rows (b) per step")
    p.add_argument("--shapes", default="4x128x4,4x256x8", help="layers x width x heads, comma-separated")
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda", "hpu"])
    p.add_argument("--precision", default=None, help="plmscale's precision (default: bf16 where supported)")
    p.add_argument("--attention", default="varlen", choices=["sdpa", "flex", "varlen"])
    p.add_argument("--compile", action="store_true", help="torch.compile plmscale's model")
    p.add_argument("--rounds", type=int, default=10)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--replicate", type=int, default=4)
    p.add_argument("--peak-flops", type=float, default=None, help="peak FLOP/s (default: measured / table)")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    device = devices.resolve_device(args.device, log=None)
    if args.precision is None:
        args.precision = "bf16" if _bf16_ok(device) else "fp32"
    sequences = load_proteome(args.replicate)
    peaks = {prec: _peak(device, prec, args.peak_flops) for prec in {"fp32", args.precision}}
    versions = f"torch {torch.__version__}, transformers {transformers.__version__}"
    print(f"# python {platform.python_version()}, {versions}")
    print(f"# {devices.describe_device(device)}; {len(sequences):,} proteins (pyhmmer x{args.replicate})")
    print("# peaks: " + ", ".join(f"{k} {v / 1e9:.1f} GFLOP/s ({s})" for k, (v, s) in peaks.items()))
    print(
        f"# (b) = plmscale packed + {args.attention} + {args.precision} + fused AdamW"
        + (" + compile" if args.compile else "")
    )
    with tempfile.TemporaryDirectory() as tmp:
        fasta = Path(tmp) / "train.fasta"
        fasta.write_text("".join(f">p{i}\n{s}\n" for i, s in enumerate(sequences)))
        index_fasta(fasta)
        tokenize_shard(fasta, Path(tmp) / "shard", shard_index=0, num_shards=1)
        header = f"{'shape':<12} {'N':>9} {'path':<10} {'real tok/s':>11} {'MFU':>7} {'ratio':>6}"
        print(header)
        for spec in args.shapes.split(","):
            layers, width, heads = (int(x) for x in spec.split("x"))
            shape = ModelShape(layers, width, heads)
            paths = {
                "(a) HF": HFUser(shape, args.context, args.rows, sequences, device, seed=0),
                "(b) plm": Plmscale(shape, args.context, args.rows, Path(tmp) / "shard", args),
            }
            n, _ = count_parameters(paths["(a) HF"].model)
            per_token = flops_per_token_with_attention(shape, n, args.context)
            rates = timed_steps(paths, args.rounds, args.warmup)
            paths["(b) plm"].close()
            medians = {name: statistics.median(r) for name, r in rates.items()}
            for name, rate in medians.items():
                peak = peaks["fp32" if name.startswith("(a)") else args.precision][0]
                mfu = f"{100 * rate * per_token / peak:6.1f}%" if peak else "    n/a"
                ratio = rate / medians["(a) HF"]
                print(f"{spec:<12} {n:>9,} {name:<10} {rate:>11,.0f} {mfu:>7} {ratio:>5.2f}x")


def _bf16_ok(device: torch.device) -> bool:
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    if device.type == "hpu":
        return True
    return bool(getattr(torch.backends, "mkldnn", None)) and torch.ops.mkldnn._is_mkldnn_bf16_supported()


def _peak(device: torch.device, precision: str, override: float | None) -> tuple[float | None, str]:
    return peaks.peak_flops(device, precision, override, measure_cpu=True)


if __name__ == "__main__":
    main()
