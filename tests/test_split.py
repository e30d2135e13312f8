"""Cluster-aware split: no cluster spans two splits, deterministic, sizes follow the fractions."""

import pytest
from plmscale.split import assign, check_fractions, hash_unit, split_of

FRACTIONS = {"train": 0.8, "valid": 0.1, "test": 0.1}


def _clusters(n_clusters: int, size: int) -> dict[str, str]:
    return {f"c{c}_m{m}": f"c{c}_m0" for c in range(n_clusters) for m in range(size)}


def test_no_cluster_spans_two_splits():
    member_to_rep = _clusters(2000, 3)
    split = assign(member_to_rep, FRACTIONS, seed=1)
    by_rep: dict[str, set[str]] = {}
    for member, rep in member_to_rep.items():
        by_rep.setdefault(rep, set()).add(split[member])
    assert all(len(s) == 1 for s in by_rep.values())


def test_sizes_follow_fractions_and_seed_matters():
    member_to_rep = _clusters(5000, 1)
    split = assign(member_to_rep, FRACTIONS, seed=1)
    counts = {name: sum(1 for v in split.values() if v == name) for name in FRACTIONS}
    # binomial sd for 5000 draws at p=0.1 is ~21; allow 5 sd
    assert abs(counts["valid"] - 500) < 110 and abs(counts["test"] - 500) < 110
    assert assign(member_to_rep, FRACTIONS, seed=1) == split
    assert assign(member_to_rep, FRACTIONS, seed=2) != split


def test_hash_is_the_documented_function():
    import hashlib

    digest = hashlib.sha256(b"7:repA").digest()
    assert hash_unit("repA", 7) == int.from_bytes(digest[:8], "big") / 2**64
    u = hash_unit("repA", 7)
    expected = "train" if u < 0.8 else "valid" if u < 0.9 else "test"
    assert split_of("repA", FRACTIONS, 7) == expected


def test_a_cluster_keeps_its_split_when_data_is_added():
    small = assign(_clusters(100, 2), FRACTIONS, seed=3)
    large = assign(_clusters(300, 2), FRACTIONS, seed=3)
    assert all(large[m] == s for m, s in small.items())


@pytest.mark.parametrize(
    ("fractions", "message"),
    [
        ({"train": 0.9, "valid": 0.2}, "sum to"),
        ({"train": 1.0, "valid": 0.0}, "valid must be > 0"),
        ({"train": 0.9, "dev": 0.1}, "unknown split"),
    ],
)
def test_bad_fractions(fractions, message):
    with pytest.raises(ValueError, match=message):
        check_fractions(fractions)
