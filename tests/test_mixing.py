"""Source mixing: the interleave against a brute-force merge of exact rational event times, rows equal to
each source's own stream, per-source epochs, the max_epochs guard, and a real two-source training run."""

from __future__ import annotations

import json
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
from plmscale.data import PackedStream
from plmscale.fasta_index import index_fasta
from plmscale.mixing import MixedStream, check_repetition, global_rows, weights_of
from plmscale.settings import TrainJob, TrainSource
from plmscale.tokenize import tokenize_shard
from plmscale.tokens import TokenStore

from tests import trainkit

PAPER = {"ur50": 0.085, "ur90": 0.195, "cfdb_c": 0.195, "cfdb_m": 0.525}  # UniMeta200B (Cheng et al.)


def brute_force(proportions: list[float], n: int) -> list[tuple[int, int]]:
    """(source, row) of the first ``n`` global rows: row k of source i at time (k + 1/2) / p_i, exact."""
    events = []
    for i, p in enumerate(proportions):
        w = round(p * 1_000_000)
        events += [(Fraction(2 * k + 1, 2 * w), i, k) for k in range(int(n * p) + 5)]
    return [(i, k) for _, i, k in sorted(events)[:n]]


def fake_stream(rows_per_epoch: int, context: int = 4):
    """A stand-in with the attributes MixedStream reads for locating rows (no tokens needed)."""

    class Stream:
        pass

    s = Stream()
    s.context, s.rows_per_epoch = context, rows_per_epoch
    return s


@pytest.mark.parametrize("proportions", [list(PAPER.values()), [0.5, 0.5], [0.3, 0.7], [1.0]])
def test_interleave_equals_the_exact_merge_and_is_exact_per_prefix(proportions):
    names = [f"s{i}" for i in range(len(proportions))]
    mixed = MixedStream({n: fake_stream(100) for n in names}, dict(zip(names, proportions, strict=True)))
    expected = brute_force(proportions, 4000)
    source, local = mixed.locate(1234, 2000)  # any window, no state: a resumed run computes the same
    assert list(zip(source.tolist(), local.tolist(), strict=True)) == expected[1234:3234]
    for total in (1, 7, 512, 3999):
        taken = mixed.source_rows(total)
        assert [taken[n] for n in names] == [
            sum(1 for i, _ in expected[:total] if i == s) for s in range(len(names))
        ]
        assert all(abs(taken[n] - total * p) <= 1 for n, p in zip(names, proportions, strict=True))


def test_global_rows_are_strictly_increasing_and_cover_every_row():
    w = weights_of(list(PAPER.values()))
    rows = np.concatenate(
        [global_rows(w, i, np.arange(int(5000 * p) + 10)) for i, p in enumerate(PAPER.values())]
    )
    for i in range(4):
        assert (np.diff(global_rows(w, i, np.arange(3000))) > 0).all()
    covered = np.sort(rows[rows < 5000])
    assert covered.tolist() == list(range(5000))


def test_bad_proportions_are_refused():
    with pytest.raises(ValueError, match=r"must be positive and sum to 1 .* sum to 0.9"):
        weights_of([0.4, 0.5])
    with pytest.raises(ValueError, match=r"proportions .* differ"):
        MixedStream({"a": fake_stream(1)}, {"b": 1.0})


def _store(tmp_path: Path, name: str, n: int, letter: str) -> TokenStore:
    fasta = tmp_path / f"{name}.fasta"
    rng = np.random.default_rng(len(name))
    fasta.write_text("".join(f">{name}{i}\n{letter * int(rng.integers(3, 20))}\n" for i in range(n)))
    index_fasta(fasta)
    tokenize_shard(fasta, tmp_path / name, shard_index=0, num_shards=1)
    return TokenStore.open(tmp_path / name)


def test_rows_come_from_each_sources_own_stream(tmp_path):
    stores = {"a": _store(tmp_path, "a", 50, "A"), "b": _store(tmp_path, "b", 200, "L")}
    streams = {n: PackedStream.from_stores([s], 16, seed=3) for n, s in stores.items()}
    mixed = MixedStream(streams, {"a": 0.25, "b": 0.75})
    rows = mixed.rows(10, 40)
    source, local = mixed.locate(10, 40)
    for name_index, name in enumerate(("a", "b")):
        where = np.flatnonzero(source == name_index)
        own = streams[name].rows(int(local[where[0]]), where.size)
        assert np.array_equal(rows.tokens[where], own.tokens)
        assert np.array_equal(rows.segments[where], own.segments)
    # the residue letter tells the source: A = 5, L = 4 in the ESM-2 vocabulary
    residues = rows.tokens[:, :].copy()
    assert ((residues == 5).any(axis=1) == (source == 0)).all()
    uses = mixed.usage(400, {"a": 2.0, "b": None})
    assert [u.rows for u in uses] == [100, 300]
    assert uses[0].epochs == pytest.approx(100 / streams["a"].rows_per_epoch)
    logs: list[str] = []
    if uses[0].epochs > 2.0:
        with pytest.raises(
            ValueError, match=r"a would be repeated [0-9.]+ epochs > max_epochs 2.*on_over_repeat"
        ):
            check_repetition(uses, "error", logs.append)
        check_repetition(uses, "warn", logs.append)
        assert any(line.startswith("WARNING: a would be repeated") for line in logs)
    else:  # pragma: no cover - the store sizes above make source a repeat
        pytest.fail(f"test data should repeat source a: {uses[0]}")


def test_a_job_with_sources_round_trips_and_refuses_half_given_proportions():
    run = trainkit.settings()
    job = TrainJob("r", run, ("x", "y"), ("v",), "o", None,
                   sources=(TrainSource("a", ("x",), 0.3), TrainSource("b", ("y",), 0.7)))  # fmt: skip
    assert TrainJob.from_dict(json.loads(json.dumps(job.to_dict()))) == job
    with pytest.raises(ValueError, match=r"sources \['b'\] have no proportion"):
        TrainJob("r", run, ("x", "y"), ("v",), "o", None,
                 sources=(TrainSource("a", ("x",), 1.0), TrainSource("b", ("y",), None)))  # fmt: skip


def test_a_two_source_run_reports_tokens_and_epochs_per_source(tmp_path):
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
    train_a, valid = trainkit.make_shards(tmp_path / "a", n_train=300)
    train_b, _ = trainkit.make_shards(tmp_path / "b", n_train=60, seed=2)
    run = trainkit.settings(flops_budget=3e8)
    sources = (TrainSource("a", (str(train_a),), 0.6), TrainSource("b", (str(train_b),), 0.4))
    job = TrainJob("mix", run, (str(train_a), str(train_b)), (str(valid),), str(tmp_path / "out"), None,
                   sources=sources)  # fmt: skip
    (tmp_path / "out").mkdir()
    logs: list[str] = []
    done = trainkit.train_run(job, trainkit.execution(max_epochs=(("b", 100.0),)), log=logs.append)
    total_rows = run.num_steps * run.batch_rows
    uses = {u["name"]: u for u in done["sources"]}
    assert uses["a"]["rows"] + uses["b"]["rows"] == total_rows
    assert abs(uses["a"]["rows"] - 0.6 * total_rows) <= 1 and uses["b"]["max_epochs"] == 100.0
    assert uses["b"]["num_tokens"] == uses["b"]["rows"] * run.context
    assert any(line.startswith("source b: proportion 0.4") for line in logs)
    with pytest.raises(ValueError, match=r"b would be repeated .* > max_epochs 0.01"):
        trainkit.train_run(job, trainkit.execution(max_epochs=(("b", 0.01),)), log=logs.append)
