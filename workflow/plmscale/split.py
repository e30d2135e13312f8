"""Leakage-free, cluster-aware train/validation/test split.

Each MMseqs2 cluster goes to one split chosen by a seeded hash of its representative's ID: the value
``u = sha256(f"{seed}:{rep}") / 2**256`` in [0, 1) is compared with the cumulative split fractions.  All
members of a cluster share the representative, hence the split: no cluster spans two splits.  The
assignment of a cluster does not depend on the other clusters, so adding data never moves old clusters.
"""

from __future__ import annotations

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


def split_stage(
    fasta: str,
    clusters_tsv: str,
    out_fastas: dict[str, str],
    assignments_tsv: str,
    summary_json: str,
    *,
    fractions: Mapping[str, float],
    seed: int,
) -> dict:
    """Write one FASTA per split, the member -> cluster -> split table and a size summary."""
    from plmscale.atomic import atomic_path, write_json_atomic
    from plmscale.fasta import read_fasta, write_fasta

    member_to_rep: dict[str, str] = {}
    with open(clusters_tsv) as handle:
        header = handle.readline().rstrip("\n").split("\t")
        if header != ["member", "representative"]:
            raise ValueError(f"{clusters_tsv}: unexpected header {header}; re-run the cluster rule")
        for line in handle:
            member, rep = line.rstrip("\n").split("\t")
            member_to_rep[member] = rep
    split_of_member = assign(member_to_rep, fractions, seed)
    records = list(read_fasta(fasta))
    summary: dict[str, dict[str, int]] = {}
    for name, path in out_fastas.items():
        chosen = [(r.id, r.sequence) for r in records if split_of_member[r.id] == name]
        write_fasta(chosen, path)
        reps = {member_to_rep[i] for i, _ in chosen}
        summary[name] = {
            "sequences": len(chosen),
            "clusters": len(reps),
            "residues": sum(len(s) for _, s in chosen),
        }
    unexpected = {s for s in split_of_member.values()} - set(out_fastas)
    assert not unexpected, f"members assigned to splits without output: {unexpected}"
    with atomic_path(assignments_tsv) as tmp, open(tmp, "w") as out:
        out.write("member\trepresentative\tsplit\n")
        for r in records:
            out.write(f"{r.id}\t{member_to_rep[r.id]}\t{split_of_member[r.id]}\n")
    result = {"seed": seed, "fractions": dict(fractions), "splits": summary}
    write_json_atomic(summary_json, result)
    return result
