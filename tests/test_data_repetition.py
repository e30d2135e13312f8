"""Repetition runs (data-constrained scaling): the training data capped to ``unique_tokens`` and repeated."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from plmscale.data import (
    SUBSET_TAG,
    Documents,
    PackedStream,
    make_documents,
    store_documents,
    subset_documents,
)
from plmscale.distributed import DistInfo
from plmscale.flops import ModelShape
from plmscale.mixing import MixedStream, check_repetition
from plmscale.settings import TrainJob, TrainSettings, TrainSource
from plmscale.tokens import CLS_ID, EOS_ID, open_stores
from plmscale.train_data import open_streams

from tests.test_data_stream import assert_rows_equal, write_store

CONTEXT = 16
SEED = 11


def tagged_documents(lengths: list[int]) -> Documents:
    """One document per sequence (all lengths <= CONTEXT); the residues of document ``i`` are id ``4 + i``,
    so every residue in a packed row names the document it came from."""
    assert len(lengths) <= 20 and max(lengths) <= CONTEXT and min(lengths) >= 3
    ids = np.concatenate([[CLS_ID, *([4 + i] * (n - 2)), EOS_ID] for i, n in enumerate(lengths)])
    offsets = np.concatenate(([0], np.cumsum(lengths)))
    return make_documents(ids.astype(np.uint8), offsets, CONTEXT)


def docs_in(tokens: np.ndarray) -> Counter:
    """Residues per document (id - 4) among ``tokens`` (specials and padding ignored)."""
    residues = tokens[(tokens >= 4) & (tokens < 24)]
    return Counter((residues - 4).tolist())


# ----------------------------------------------------------------------------------- subset_documents


def test_subset_is_the_shortest_prefix_of_the_seeded_order_hand_worked():
    docs = tagged_documents([3, 5, 4, 7, 6])  # 25 tokens
    order = np.random.default_rng([SEED, SUBSET_TAG]).permutation(5)
    assert order.tolist() == [3, 4, 0, 1, 2]  # cumulative tokens in this order: 7, 13, 16, 21, 25
    expected = {1: [3], 7: [3], 8: [3, 4], 10: [3, 4], 13: [3, 4], 14: [0, 3, 4], 17: [0, 1, 3, 4]}
    for cap, keep in expected.items():
        sub = subset_documents(docs, cap, SEED)
        assert sub.starts.tolist() == docs.starts[keep].tolist(), cap  # original index order
        assert sub.lengths.tolist() == docs.lengths[keep].tolist(), cap
        assert sub.parts is docs.parts and sub.offsets is docs.offsets and sub.names == docs.names
        assert sub.bases is docs.bases
    assert subset_documents(docs, 10, SEED).num_tokens == 13  # overshoots by less than one document


def test_subset_prefix_rule_for_every_cap_is_minimal_and_nested():
    rng = np.random.default_rng(0)
    docs = tagged_documents(rng.integers(3, CONTEXT + 1, size=20).tolist())
    order = np.random.default_rng([SEED, SUBSET_TAG]).permutation(20)
    previous: set[int] = set()
    for cap in range(1, docs.num_tokens):
        sub = subset_documents(docs, cap, SEED)
        kept = set(np.flatnonzero(np.isin(docs.starts, sub.starts)).tolist())
        k = len(kept)
        assert kept == set(order[:k].tolist())  # a prefix of the seeded order
        assert sub.num_tokens >= cap > sub.num_tokens - int(docs.lengths[order[k - 1]])  # shortest one
        assert np.all(np.diff(sub.starts) > 0)
        assert previous <= kept  # a larger cap keeps a superset
        previous = kept
    other = subset_documents(docs, docs.num_tokens // 2, SEED + 1)
    assert not np.array_equal(other.starts, subset_documents(docs, docs.num_tokens // 2, SEED).starts)


@pytest.mark.parametrize("cap", [25, 26, 10**9])
def test_a_cap_not_below_the_data_names_the_numbers_and_the_fix(cap):
    docs = tagged_documents([3, 5, 4, 7, 6])
    with pytest.raises(
        ValueError, match=rf"unique_tokens={cap:,} is not below the 25 tokens .*grid\.repetition"
    ):
        subset_documents(docs, cap, SEED)


@pytest.mark.parametrize("cap", [0, -3])
def test_a_cap_below_one_is_refused(cap):
    with pytest.raises(ValueError, match=rf"unique_tokens={cap} must be at least 1"):
        subset_documents(tagged_documents([3, 5]), cap, SEED)


# ------------------------------------------------------------------------------- the capped stream


def test_a_capped_stream_cycles_over_only_the_subset_across_epochs():
    rng = np.random.default_rng(3)
    lengths = rng.integers(3, CONTEXT + 1, size=20).tolist()
    docs = tagged_documents(lengths)
    sub = subset_documents(docs, 60, SEED)
    kept = set(np.flatnonzero(np.isin(docs.starts, sub.starts)).tolist())
    assert 60 <= sub.num_tokens < 60 + CONTEXT and len(kept) < 20
    residues = Counter({i: lengths[i] - 2 for i in kept})
    exact = PackedStream(sub, CONTEXT, SEED, drop_last=False)  # every token of every epoch
    trained = PackedStream(sub, CONTEXT, SEED, drop_last=True)  # what a run trains on
    seen: set[int] = set()
    for epoch in range(3):
        rows = exact.rows(epoch * exact.rows_per_epoch, exact.rows_per_epoch)
        assert docs_in(rows.tokens[rows.segments >= 0]) == residues, epoch
        rows = trained.rows(epoch * trained.rows_per_epoch, trained.rows_per_epoch)
        found = set(docs_in(rows.tokens).keys())
        assert found <= kept, epoch
        seen |= found
    assert seen == kept
    assert trained.rows_per_epoch == sub.num_tokens // CONTEXT
    first, second = (trained.rows(e * trained.rows_per_epoch, trained.rows_per_epoch) for e in (0, 1))
    assert not np.array_equal(first.tokens, second.tokens)  # reshuffled per epoch, not replayed


# ----------------------------------------------------------------------------- open_streams (jobs)


def settings(unique_tokens: int | None) -> TrainSettings:
    return TrainSettings(
        objective="mlm", shape=ModelShape(1, 32, 2), flops_budget=5e8, context=CONTEXT, batch_rows=8,
        peak_lr=5e-3, warmup_fraction=0.1, min_lr_ratio=0.1, weight_decay=0.1, beta1=0.9, beta2=0.95,
        grad_clip=1.0, mask_ratio=0.15, seed=SEED, eval_points=4, eval_max_tokens=512, eval_seed=3,
        precision="fp32", unique_tokens=unique_tokens,
    )  # fmt: skip


@pytest.fixture(scope="module")
def shards(tmp_path_factory: pytest.TempPathFactory) -> tuple[list[Path], Path]:
    """Two train shards (sequences of 3..40 tokens, some longer than CONTEXT) and one valid shard."""
    base = tmp_path_factory.mktemp("repetition")
    rng = np.random.default_rng(5)
    train = [write_store(base / f"t{i}", rng.integers(3, 41, size=n), seed=i) for i, n in enumerate((60, 30))]
    return train, write_store(base / "v", rng.integers(3, 41, size=10), seed=9)


def job(shards, unique_tokens: int | None, sources: tuple[TrainSource, ...] = ()) -> TrainJob:
    train, valid = shards
    dirs = tuple(str(d) for d in train)
    return TrainJob("rep", settings(unique_tokens), dirs, (str(valid),), "out", None, sources=sources)


def test_an_uncapped_job_is_unchanged(shards):
    train, _ = shards
    streams = open_streams(job(shards, None), DistInfo(0, 1, 0), log=lambda *_: None)
    streams.check_verified()
    stores = open_stores(train, checksum=False)
    direct = PackedStream.from_stores(stores, CONTEXT, SEED, drop_last=True)
    n = 3 * direct.rows_per_epoch + 5
    assert_rows_equal(streams.train.rows(0, n), direct.rows(0, n))
    assert streams.train_tokens == sum(s.num_tokens for s in stores) == direct.total
    assert streams.source_tokens == {"all": direct.total} and streams.unique_tokens is None


def test_a_capped_job_trains_on_the_subset_and_reports_capped_tokens(shards):
    train, _ = shards
    stores = open_stores(train, checksum=False)
    total = sum(s.num_tokens for s in stores)
    cap = total // 4
    logs: list[str] = []
    streams = open_streams(job(shards, cap), DistInfo(0, 1, 0), log=logs.append)
    streams.check_verified()
    sub = subset_documents(store_documents(stores, CONTEXT), cap, SEED)
    direct = PackedStream(sub, CONTEXT, SEED, drop_last=True)
    n = 3 * direct.rows_per_epoch + 5
    assert_rows_equal(streams.train.rows(0, n), direct.rows(0, n))
    assert cap <= sub.num_tokens < cap + CONTEXT
    assert streams.train_tokens == streams.unique_tokens == sub.num_tokens
    assert streams.source_tokens == {"all": sub.num_tokens}
    assert streams.train.rows_per_epoch == sub.num_tokens // CONTEXT
    assert any(line.startswith(f"repetition: training on {sub.num_tokens:,} unique tokens") for line in logs)
    # the validation stream is never capped
    assert streams.valid.total == open_stores([shards[1]], checksum=False)[0].num_tokens
    # epochs (done.json: num_tokens / train_tokens) and the usage guard count passes over the capped data
    rows = 4 * streams.train.rows_per_epoch
    (use,) = streams.usage(rows, {"all": 3.0})
    assert use.epochs == 4.0 and use.rows == rows
    with pytest.raises(ValueError, match=r"all would be repeated 4 epochs > max_epochs 3"):
        check_repetition([use], "error", log=lambda *_: None)
    check_repetition([use], "warn", log=lambda *_: None)
    with pytest.raises(ValueError, match=rf"run rep, training data: unique_tokens={total:,} is not below"):
        open_streams(job(shards, total), DistInfo(0, 1, 1))


def test_concatenated_sources_report_the_capped_tokens_of_each(shards):
    train, _ = shards
    sources = (TrainSource("a", (str(train[0]),)), TrainSource("b", (str(train[1]),)))
    stores = open_stores(train, checksum=False)
    cap = sum(s.num_tokens for s in stores) // 3
    streams = open_streams(job(shards, cap, sources), DistInfo(0, 1, 1), log=lambda *_: None)
    sub = subset_documents(store_documents(stores, CONTEXT), cap, SEED)
    in_a = sub.starts < stores[0].num_tokens  # store a comes first in the virtual concatenation
    expected = {"a": int(sub.lengths[in_a].sum()), "b": int(sub.lengths[~in_a].sum())}
    assert expected["a"] > 0 and expected["b"] > 0
    assert streams.source_tokens == expected and streams.unique_tokens == sub.num_tokens
    rows = 2 * streams.train.rows_per_epoch
    uses = {u.name: u for u in streams.usage(rows, {})}
    assert uses["a"].epochs == uses["b"].epochs == 2.0
    assert abs(uses["a"].proportion - expected["a"] / sub.num_tokens) < 1e-12


def test_mixed_sources_are_each_capped_to_their_share(shards):
    train, _ = shards
    sources = (TrainSource("a", (str(train[0]),), 0.75), TrainSource("b", (str(train[1]),), 0.25))
    stores = open_stores(train, checksum=False)
    cap = 400
    streams = open_streams(job(shards, cap, sources), DistInfo(0, 1, 1), log=lambda *_: None)
    assert isinstance(streams.train, MixedStream)
    subs = {
        name: subset_documents(store_documents([store], CONTEXT), share, SEED)
        for name, store, share in (("a", stores[0], 300), ("b", stores[1], 100))
    }
    assert streams.source_tokens == {name: sub.num_tokens for name, sub in subs.items()}
    assert streams.train_tokens == streams.unique_tokens == sum(sub.num_tokens for sub in subs.values())
    for name, stream in zip(streams.train.names, streams.train.streams, strict=True):
        direct = PackedStream(subs[name], CONTEXT, SEED)
        assert_rows_equal(
            stream.rows(0, 2 * direct.rows_per_epoch), direct.rows(0, 2 * direct.rows_per_epoch)
        )
    uses = {u.name: u for u in streams.usage(1000, {"b": 1.0})}
    taken = streams.train.source_rows(1000)
    assert uses["b"].epochs == taken["b"] / (subs["b"].num_tokens // CONTEXT) > 1.0
    with pytest.raises(ValueError, match=r"b would be repeated"):
        check_repetition(list(uses.values()), "error", log=lambda *_: None)
    too_much = stores[1].num_tokens * 4  # b's share (1/4) is its whole data: nothing to repeat
    b_first = (sources[1], sources[0])
    with pytest.raises(
        ValueError,
        match=rf"training source 'b' \(proportion 0.25 of unique_tokens={too_much:,}\): "
        rf"unique_tokens={stores[1].num_tokens:,} is not below the {stores[1].num_tokens:,} tokens",
    ):
        open_streams(job(shards, too_much, b_first), DistInfo(0, 1, 1))
