"""Throughput of ``plmscale.tokens.encode`` vs Hugging Face ``EsmTokenizer``, measured in the same run.

Input: the real proteome shipped with pyhmmer (2,100 proteins), validated (terminal ``*`` stripped) and
replicated ``--replicate`` times. Rates count residues only (not the added ``<cls>``/``<eos>``). ``encode``
is timed as the best of ``--repeats`` runs over all sequences; ``EsmTokenizer`` once, in batches of
``--batch`` sequences, over the first ``--hf-seqs`` sequences (default: all). The ids of the sequences
both methods tokenized are compared, so a fast-but-wrong result cannot pass unnoticed.

Usage: ``python bench/bench_tokenize.py [--replicate 20] [--hf-seqs N]``
"""

from __future__ import annotations

import argparse
import platform
import tempfile
import time
from importlib import resources
from pathlib import Path

import numpy as np
import transformers
from plmscale.fasta import read_fasta
from plmscale.tokens import encode, esm_tokenizer
from plmscale.validate import ValidationPolicy, validate_records

PROTEOME = ("tests", "data", "seqs", "938293.PRJEB85.HG003687.faa")


def load_proteome() -> list[str]:
    """Validated sequences of the pyhmmer test proteome."""
    path = Path(str(resources.files("pyhmmer").joinpath(*PROTEOME)))
    result = validate_records(read_fasta(path), ValidationPolicy(), source="pyhmmer", path=str(path))
    if result.report["n_dropped"]:
        raise ValueError(f"{path}: {result.report['dropped_by_reason']} records dropped by validation")
    return [seq for _, seq in result.kept]


def time_encode(sequences: list[str], repeats: int) -> tuple[float, np.ndarray, np.ndarray]:
    """Best wall time of ``encode`` over ``repeats`` runs, and its output."""
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        ids, offsets = encode(sequences)
        best = min(best, time.perf_counter() - start)
    return best, ids, offsets


def time_hf(sequences: list[str], batch: int) -> tuple[float, list[list[int]]]:
    """Wall time of ``EsmTokenizer`` (batches of ``batch``) and its input ids."""
    with tempfile.TemporaryDirectory() as tmp:
        tokenizer = esm_tokenizer(tmp)
    tokenizer(sequences[:batch])  # warm-up (trie, caches)
    out: list[list[int]] = []
    start = time.perf_counter()
    for i in range(0, len(sequences), batch):
        out.extend(tokenizer(sequences[i : i + batch])["input_ids"])
    return time.perf_counter() - start, out


def main() -> None:
    """Run the benchmark and print a small table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--replicate", type=int, default=20, help="copies of the proteome (default 20)")
    parser.add_argument("--hf-seqs", type=int, default=None, help="sequences for EsmTokenizer (default all)")
    parser.add_argument("--batch", type=int, default=1000, help="EsmTokenizer batch size (default 1000)")
    parser.add_argument("--repeats", type=int, default=3, help="encode repeats, best is kept (default 3)")
    args = parser.parse_args()

    sequences = load_proteome() * args.replicate
    n_res = sum(map(len, sequences))
    hf_part = sequences[: args.hf_seqs] if args.hf_seqs is not None else sequences
    hf_res = sum(map(len, hf_part))

    t_np, ids, offsets = time_encode(sequences, args.repeats)
    t_hf, hf_ids = time_hf(hf_part, args.batch)
    mismatches = sum(ids[offsets[i] : offsets[i + 1]].tolist() != ref for i, ref in enumerate(hf_ids))
    if mismatches:
        raise SystemExit(f"FAIL: {mismatches} of {len(hf_ids)} sequences differ from EsmTokenizer")

    rate_np, rate_hf = n_res / t_np / 1e6, hf_res / t_hf / 1e6
    versions = f"numpy {np.__version__}, transformers {transformers.__version__}"
    print(f"# python {platform.python_version()}, {versions}, {platform.processor() or platform.machine()}")
    print(f"# input: pyhmmer proteome x{args.replicate} = {len(sequences):,} seqs, {n_res:,} residues")
    print(f"{'method':<38} {'n seqs':>9} {'seconds':>9} {'M res/s':>9} {'k seq/s':>9}")
    print(
        f"{'plmscale encode (numpy LUT), best of ' + str(args.repeats):<38} {len(sequences):>9,} "
        f"{t_np:>9.3f} {rate_np:>9.2f} {len(sequences) / t_np / 1e3:>9.1f}"
    )
    print(
        f"{'HF EsmTokenizer, batch ' + str(args.batch):<38} {len(hf_part):>9,} {t_hf:>9.3f} "
        f"{rate_hf:>9.3f} {len(hf_part) / t_hf / 1e3:>9.2f}"
    )
    print(f"speedup (M res/s ratio): {rate_np / rate_hf:.0f}x; ids identical on {len(hf_ids):,} sequences")


if __name__ == "__main__":
    main()
