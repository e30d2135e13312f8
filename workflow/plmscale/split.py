"""Leakage-free, cluster-aware train/validation/test split.

Each MMseqs2 cluster goes to one split chosen by a seeded hash of its representative's ID: the value
``u = sha256(f"{seed}:{rep}") / 2**256`` in [0, 1) is compared with the cumulative split fractions.  All
members of a cluster share the representative, hence the split: no cluster spans two splits.  The
assignment of a cluster does not depend on the other clusters, so adding data never moves old clusters.
"""

from __future__ import annotations

import contextlib
import hashlib
from collections.abc import Mapping

SPLITS = ("train", "valid", "test")


def check_fractions(fractions: Mapping[str, float]) -> None:
    unknown = set(fractions) - set(SPLITS)
    if unknown:
        raise ValueError(f"split.fractions has unknown split(s) {sorted(unknown)}; allowed: {SPLITS}")
    if any(v < 0 for v in fractions.values()):
        raise ValueError(f"split.fractions {dict(fractions)} must be non-negative")
    total = sum(fractions.values())
    if abs(total - 1.0) > 1e-9:
        raise ValueError(f"split.fractions {dict(fractions)} sum to {total}, not 1; rescale them")
    for name in ("train", "valid"):
        if fractions.get(name, 0.0) <= 0:
            raise ValueError(f"split.fractions.{name} must be > 0 (training and validation need data)")


def hash_unit(key: str, seed: int) -> float:
    """A uniform number in [0, 1) determined by ``(seed, key)``."""
    digest = hashlib.sha256(f"{seed}:{key}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def split_of(representative: str, fractions: Mapping[str, float], seed: int) -> str:
    """The split of the cluster whose representative is ``representative``."""
    u = hash_unit(representative, seed)
    edge = 0.0
    for name in SPLITS:
        edge += fractions.get(name, 0.0)
        if u < edge:
            return name
    return next(name for name in reversed(SPLITS) if fractions.get(name, 0.0) > 0)


def assign(member_to_rep: Mapping[str, str], fractions: Mapping[str, float], seed: int) -> dict[str, str]:
    """member -> split, with every member of a cluster in its representative's split."""
    check_fractions(fractions)
    cache: dict[str, str] = {}
    out = {}
    for member, rep in member_to_rep.items():
        if rep not in cache:
            cache[rep] = split_of(rep, fractions, seed)
        out[member] = cache[rep]
    return out


def source_of(member: str) -> str:
    """The source of a pooled ID ``<source>:<id>`` (:func:`plmscale.mmseqs.pool_sources`)."""
    source, sep, _ = member.partition(":")
    if not sep:
        raise ValueError(f"pooled ID {member!r} has no '<source>:' prefix; re-run the pool rule")
    return source


def _batches(membership: str, batch_rows: int):
    import pyarrow as pa
    import pyarrow.parquet as pq

    parquet = pq.ParquetFile(membership)
    names = parquet.schema_arrow.names
    if names[:2] != ["member", "representative"]:
        raise ValueError(f"{membership}: columns {names}, expected member, representative; re-run cluster")
    pool = pa.default_memory_pool()
    for batch in parquet.iter_batches(
        batch_size=batch_rows, columns=["member", "representative"], use_threads=False
    ):
        yield batch.column(0).to_pylist(), batch.column(1).to_pylist()
        del batch
        pool.release_unused()  # return freed Arrow buffers, so the peak stays at one batch


def split_stage(
    fasta: str,
    membership: str,
    out_fastas: Mapping[tuple[str, str], str],
    assignments: str,
    summary_json: str,
    *,
    fractions: Mapping[str, float],
    seed: int,
    batch_rows: int = 16384,
) -> dict:
    """Write one indexed FASTA per (split, source), the assignment table (Parquet) and a size summary.

    A streaming merge join: the membership Parquet (from the cluster stage, one row per pooled sequence
    in FASTA order) is read in batches in lockstep with the pooled FASTA; each record's ID must equal its
    row's member (any other order is an error naming both), and goes to its cluster's split and its
    source's file.  Memory: one batch (``batch_rows`` rows) and one record, however large the input.
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    from plmscale.atomic import atomic_path, write_json_atomic
    from plmscale.fasta import read_fasta
    from plmscale.fasta_index import IndexedFastaWriter

    check_fractions(fractions)
    schema = pa.schema([("member", pa.string()), ("representative", pa.string()), ("split", pa.string())])
    counts = {key: {"sequences": 0, "representatives": 0, "residues": 0} for key in out_fastas}
    records = read_fasta(fasta)
    with contextlib.ExitStack() as stack:
        writers = {key: stack.enter_context(IndexedFastaWriter(path)) for key, path in out_fastas.items()}
        table_path = stack.enter_context(atomic_path(assignments))
        table = stack.enter_context(pq.ParquetWriter(table_path, schema))
        for members, reps in _batches(membership, batch_rows):
            split_of_rep = {rep: split_of(rep, fractions, seed) for rep in set(reps)}
            splits = []
            for member, rep in zip(members, reps, strict=True):
                record = next(records, None)
                if record is None or record.id != member:
                    found = "the end of the file" if record is None else f"record {record.id!r}"
                    raise ValueError(
                        f"{fasta}: found {found} where {membership} lists {member!r}; the two come from "
                        "different runs. Fix: re-run the cluster rule (snakemake --forcerun cluster)"
                    )
                key = (split_of_rep[rep], source_of(member))
                if key not in writers:
                    raise ValueError(
                        f"{member!r} belongs to (split, source) {key}, which has no output; configured: "
                        f"{sorted(writers)}. Fix: add the source to the config or re-run pool and cluster"
                    )
                writers[key].write(record.id, record.sequence)
                entry = counts[key]
                entry["sequences"] += 1
                entry["representatives"] += member == rep  # a cluster's representative is its member
                entry["residues"] += len(record.sequence)
                splits.append(key[0])
            table.write_batch(pa.record_batch([members, reps, splits], schema=schema))
        extra = next(records, None)
        if extra is not None:
            raise ValueError(
                f"{fasta}: record {extra.id!r} is not in {membership}. Fix: re-run the cluster rule "
                "(snakemake --forcerun cluster)"
            )
    summary: dict[str, dict] = {}
    for (split, source), entry in sorted(counts.items()):
        node = summary.setdefault(split, {"sequences": 0, "clusters": 0, "residues": 0, "sources": {}})
        node["sources"][source] = entry
        node["sequences"] += entry["sequences"]
        node["clusters"] += entry["representatives"]
        node["residues"] += entry["residues"]
    result = {"seed": seed, "fractions": dict(fractions), "splits": summary}
    write_json_atomic(summary_json, result)
    return result
