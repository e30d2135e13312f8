"""Measure the data stages at growing input: synthetic FASTA.gz from real proteins, each stage run in a
fresh Python process that reports its wall time and peak resident memory (``ru_maxrss``).

Shared by ``bench/bench_data.py`` (prints MB/s and peak RSS at 1x and 10x next to ``seqkit``) and the
bounded-memory test (``tests/test_data_memory.py``: peak RSS at 10x within a small margin of 1x).

The stages are the package's own functions, called as the workflow's scripts call them: validate
(:func:`plmscale.validate.validate_fasta`), pool (:func:`plmscale.mmseqs.pool_sources`), split
(:func:`plmscale.split.split_stage`, with a membership that clusters the copies of each protein, written
here instead of by MMseqs2 so the measurement is the package's) and tokenize
(:func:`plmscale.tokenize.tokenize_shard`, one shard of the train split).
"""

from __future__ import annotations

import gzip
import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

SOURCE = "bench"
FRACTIONS = {"train": 0.9, "valid": 0.05, "test": 0.05}


def real_proteins() -> list[tuple[str, str]]:
    """The embedded sources' proteins (pyhmmer proteome + pyrodigal metagenome calls), terminal stops kept."""
    import tempfile

    from plmscale.fasta import read_fasta
    from plmscale.sources import EMBEDDED, materialise_embedded

    out = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in EMBEDDED:
            path = Path(tmp) / f"{name}.fasta"
            materialise_embedded(name, path)
            out += [(r.id, r.sequence) for r in read_fasta(path)]
    return out


def synthesize(path: Path, target_bytes: int, proteins: list[tuple[str, str]]) -> dict:
    """Write FASTA.gz of copies of ``proteins`` (IDs ``<id>_r<copy>``; every 50th copy lowercased, so the
    validator has changes to report) until ``target_bytes`` uncompressed; returns sizes and counts."""
    written = records = copy = 0
    with gzip.open(path, "wt", compresslevel=1) as out:
        while written < target_bytes:
            for pid, seq in proteins:
                body = seq.lower() if (records % 50 == 0) else seq
                text = (
                    f">{pid}_r{copy}\n" + "\n".join(body[i : i + 60] for i in range(0, len(body), 60)) + "\n"
                )
                out.write(text)
                written += len(text)
                records += 1
                if written >= target_bytes:
                    break
            copy += 1
    return {"path": str(path), "bytes": written, "records": records, "gz_bytes": path.stat().st_size}


def write_membership(pooled: Path, out: Path) -> int:
    """Membership of the pooled FASTA (FASTA order): the copies of one protein form one cluster whose
    representative is its first copy present.  Streamed (one batch of IDs at a time)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from plmscale.fasta import read_fasta

    first_copy: dict[str, str] = {}  # protein -> representative: one entry per distinct protein
    schema = pa.schema([("member", pa.string()), ("representative", pa.string())])
    members: list[str] = []
    reps: list[str] = []
    n = 0
    with pq.ParquetWriter(out, schema) as writer:
        for record in read_fasta(pooled):
            protein = record.id.rsplit("_r", 1)[0]
            members.append(record.id)
            reps.append(first_copy.setdefault(protein, record.id))
            n += 1
            if len(members) == 65536:
                writer.write_batch(pa.record_batch([members, reps], schema=schema))
                members, reps = [], []
        if members:
            writer.write_batch(pa.record_batch([members, reps], schema=schema))
    return n


def run_stage(stage: str, args: dict) -> dict:
    """Run one stage in this process (the child side of :func:`measure`)."""
    if stage == "validate":
        from plmscale.validate import ValidationPolicy, validate_fasta

        report = validate_fasta(
            args["input"], args["fasta"], args["report"], args["issues"], ValidationPolicy(min_length=30),
            source=SOURCE,
        )  # fmt: skip
        return {"kept": report["n_kept"], "changed": report["n_changed"]}
    if stage == "pool":
        from plmscale.mmseqs import pool_sources

        return pool_sources([args["input"]], [SOURCE], Path(args["output"]))
    if stage == "split":
        from plmscale.split import split_stage

        outs = {(s, SOURCE): f"{args['dir']}/{s}.fasta" for s in FRACTIONS}
        result = split_stage(
            args["input"], args["membership"], outs, f"{args['dir']}/assignments.parquet",
            f"{args['dir']}/summary.json", fractions=FRACTIONS, seed=0,
        )  # fmt: skip
        return {s: node["sequences"] for s, node in result["splits"].items()}
    if stage == "tokenize":
        from plmscale.tokenize import tokenize_shard

        manifest = tokenize_shard(args["input"], args["output"], shard_index=0, num_shards=args["shards"])
        return {"tokens": manifest["num_tokens"]}
    raise ValueError(f"unknown stage {stage!r}")


def peak_rss_bytes() -> int:
    """This process's peak resident memory since its ``exec`` (``VmHWM`` of ``/proc/self/status``).

    Not ``getrusage``: Linux carries the parent's high-water mark across ``fork`` + ``exec`` into
    ``ru_maxrss``, so a child started by a large parent would report the parent's peak.
    """
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("/proc/self/status has no VmHWM line (not Linux?)")


_CHILD = """
import json, sys, time
import numpy, polars, pyarrow.parquet  # the same imports at every size: RSS differences are the stage's
from plmscale.databench import peak_rss_bytes, run_stage
start = time.perf_counter()
result = run_stage(sys.argv[1], json.loads(sys.argv[2]))
seconds = time.perf_counter() - start
print(json.dumps({"seconds": seconds, "result": result, "peak_rss_bytes": peak_rss_bytes()}))
"""

_COMMAND = """
import json, os, sys, time
start = time.perf_counter()
pid = os.posix_spawnp(sys.argv[1], sys.argv[1:], os.environ)
_, status, usage = os.wait4(pid, 0)
print(json.dumps({"seconds": time.perf_counter() - start, "status": status, "maxrss_kb": usage.ru_maxrss}))
"""


def measure_command(name: str, argv: list[str], input_bytes: int) -> StageRun:
    """Wall time and peak RSS of an external command, spawned from a small fresh interpreter (whose own
    ~10 MB is the floor of the reported peak; see :func:`peak_rss_bytes`)."""
    proc = subprocess.run([sys.executable, "-c", _COMMAND, *argv], capture_output=True, text=True, check=True)
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    if out["status"] != 0:
        raise RuntimeError(f"{argv} failed with status {out['status']}")
    return StageRun(name, input_bytes, out["seconds"], out["maxrss_kb"] * 1024, {})


@dataclass(frozen=True)
class StageRun:
    stage: str
    input_bytes: int  # uncompressed FASTA bytes the stage reads
    seconds: float
    peak_rss_bytes: int
    result: dict

    @property
    def mb_per_s(self) -> float:
        return self.input_bytes / 1e6 / self.seconds


def measure(stage: str, args: dict, input_bytes: int) -> StageRun:
    """Run ``stage`` in a fresh interpreter; its wall time (stage only) and peak RSS (whole process)."""
    package = str(Path(__file__).resolve().parents[1])
    env = {**os.environ, "PYTHONPATH": package + os.pathsep + os.environ.get("PYTHONPATH", "")}
    proc = subprocess.run(
        [sys.executable, "-c", _CHILD, stage, json.dumps(args)], capture_output=True, text=True, env=env
    )
    if proc.returncode != 0:
        raise RuntimeError(f"stage {stage} failed:\n{proc.stderr[-3000:]}")
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    return StageRun(stage, input_bytes, out["seconds"], out["peak_rss_bytes"], out["result"])


def pipeline(
    work: Path, target_bytes: int, proteins: list[tuple[str, str]], shards: int = 4
) -> list[StageRun]:
    """Synthesize, then validate, pool, split and tokenize (one train shard of ``shards``) under ``work``."""
    work.mkdir(parents=True, exist_ok=True)
    made = synthesize(work / "input.fasta.gz", target_bytes, proteins)
    runs = [
        measure("validate", {"input": made["path"], "fasta": str(work / "valid.fasta"),
                             "report": str(work / "report.json"), "issues": str(work / "issues.tsv.gz")},
                made["bytes"]),
    ]  # fmt: skip
    pooled = work / "all.fasta"
    runs.append(measure("pool", {"input": str(work / "valid.fasta"), "output": str(pooled)},
                        (work / "valid.fasta").stat().st_size))  # fmt: skip
    write_membership(pooled, work / "membership.parquet")
    (work / "split").mkdir(exist_ok=True)
    runs.append(measure("split", {"input": str(pooled), "membership": str(work / "membership.parquet"),
                                  "dir": str(work / "split")}, pooled.stat().st_size))  # fmt: skip
    train = work / "split" / "train.fasta"
    runs.append(measure("tokenize", {"input": str(train), "output": str(work / "tokens"), "shards": shards},
                        train.stat().st_size // shards))  # fmt: skip
    return runs
