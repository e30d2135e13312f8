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
