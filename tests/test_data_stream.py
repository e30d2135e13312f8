"""Rows read in place from several token stores: identical to the old concatenate-then-loop rows, built
vectorised, prefetched in a thread, verified on open and per batch, and memory flat in the store size."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from plmscale.atomic import sha256_file
from plmscale.data import PackedStream, Rows, _mapping, make_documents, store_documents
from plmscale.fasta_index import index_fasta
from plmscale.loader import Prefetcher, step_rows
from plmscale.model import POSITION_OFFSET
from plmscale.tokenize import tokenize_shard
from plmscale.tokens import (
    CLS_ID,
    EOS_ID,
    ESM2_VOCAB,
    FORMAT,
    PAD_ID,
    TokenStore,
    concat_stores,
    open_stores,
    store_identity,
)

# ------------------------------------------------------------------------------- helpers and the reference


def write_store(directory: Path, lengths: np.ndarray, seed: int, *, chunk: int = 1 << 24) -> Path:
    """Write a token shard of random residues with the given sequence lengths (specials included) in the
    ``tokenize_shard`` format, filling ``ids.npy`` through a memory map in chunks (fast for ~10^8 tokens)."""
    directory.mkdir(parents=True)
    offsets = np.zeros(len(lengths) + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    total = int(offsets[-1])
    ids = np.lib.format.open_memmap(directory / "ids.npy", mode="w+", dtype=np.uint8, shape=(total,))
    rng = np.random.default_rng(seed)
    for a in range(0, total, chunk):
        ids[a : a + chunk] = rng.integers(4, 24, size=min(chunk, total - a), dtype=np.uint8)
    ids[offsets[:-1]] = CLS_ID
    ids[offsets[1:] - 1] = EOS_ID
    ids.flush()
    del ids
    np.save(directory / "offsets.npy", offsets)
    manifest = {
        "format": FORMAT,
        "num_sequences": len(lengths),
        "num_tokens": total,
        "num_residues": total - 2 * len(lengths),
        "min_length": int(lengths.min()),
        "max_length": int(lengths.max()),
        "vocab": list(ESM2_VOCAB),
        "shard_index": 0,
        "num_shards": 1,
        "source": "synthetic",
        "record_ids_sha256": "",
        "files": {
            name: {"sha256": sha256_file(directory / name), "bytes": (directory / name).stat().st_size}
            for name in ("ids.npy", "offsets.npy")
        },
    }
    (directory / "manifest.json").write_text(json.dumps(manifest))
    return directory


@dataclass(frozen=True)
class OldDocuments:
    ids: np.ndarray
    starts: np.ndarray
    lengths: np.ndarray


def old_make_documents(ids: np.ndarray, offsets: np.ndarray, context: int) -> OldDocuments:
    """``make_documents`` as it was before stores were read in place (verbatim logic)."""
    seq_lengths = np.diff(offsets)
    n_windows = -(-seq_lengths // context)
    seq_of_window = np.repeat(np.arange(len(seq_lengths)), n_windows)
    first_window = np.cumsum(n_windows) - n_windows
    window_in_seq = np.arange(int(n_windows.sum())) - np.repeat(first_window, n_windows)
    starts = offsets[:-1][seq_of_window] + window_in_seq * context
    ends = np.minimum(starts + context, offsets[1:][seq_of_window])
    return OldDocuments(ids=ids, starts=starts, lengths=ends - starts)


def old_rows(docs: OldDocuments, context: int, seed: int, drop_last: bool, first: int, count: int) -> Rows:
    """``PackedStream.rows`` as it was: a Python loop per row and per document (verbatim logic)."""
    total = int(docs.lengths.sum())
    rows_per_epoch = total // context if drop_last else -(-total // context)
    out = []
    for index in range(first, first + count):
        epoch, local = divmod(index, rows_per_epoch)
        order = np.random.default_rng([seed, epoch]).permutation(len(docs.lengths))
        ends = np.cumsum(docs.lengths[order])
        t = context
        tokens = np.full(t, PAD_ID, dtype=np.int64)
        positions = np.full(t, POSITION_OFFSET, dtype=np.int64)
        segments = np.full(t, -1, dtype=np.int64)
        start = local * t
        k = int(np.searchsorted(ends, start, side="right"))
        filled = segment = 0
        while filled < t and k < len(order):
            doc = order[k]
            doc_len = int(docs.lengths[doc])
            skip = start + filled - (int(ends[k]) - doc_len)
            take = min(doc_len - skip, t - filled)
            src = int(docs.starts[doc]) + skip
            tokens[filled : filled + take] = docs.ids[src : src + take]
            positions[filled : filled + take] = POSITION_OFFSET + skip + np.arange(take)
            segments[filled : filled + take] = segment
            filled, segment, k = filled + take, segment + 1, k + 1
        out.append((tokens, positions, segments))
    return Rows(*(np.stack(x) for x in zip(*out, strict=True)))


def assert_rows_equal(a: Rows, b: Rows) -> None:
    for name in ("tokens", "positions", "segments"):
        x, y = getattr(a, name), getattr(b, name)
        assert x.dtype == y.dtype == np.int64 and x.shape == y.shape, name
        assert np.array_equal(x, y), name


@pytest.fixture(scope="module")
def stores(tmp_path_factory: pytest.TempPathFactory) -> list[TokenStore]:
    """Three shards of different sizes with sequences from 2 to 150 tokens (many longer than context)."""
    base = tmp_path_factory.mktemp("stores")
    rng = np.random.default_rng(7)
    dirs = [
        write_store(base / f"s{i}", rng.integers(2, 150, size=n), seed=i) for i, n in enumerate((40, 7, 90))
    ]
    return open_stores(dirs, checksum=True)


# ------------------------------------------------------------------------------- same rows as before


@pytest.mark.parametrize("context", [2, 7, 16, 64])
def test_store_documents_equal_concatenated_documents(stores: list[TokenStore], context: int) -> None:
    ids, offsets = concat_stores(stores)
    old = old_make_documents(ids, offsets, context)
    new = store_documents(stores, context)
    assert np.array_equal(new.starts, old.starts) and np.array_equal(new.lengths, old.lengths)
    assert new.starts.dtype == new.lengths.dtype == np.int64
    assert new.num_tokens == ids.size
    assert all(isinstance(p, np.memmap) or isinstance(p.base, np.memmap) for p in new.parts)


@pytest.mark.parametrize("drop_last", [True, False])
@pytest.mark.parametrize("context", [7, 16, 64])
def test_rows_equal_old_concat_rows_across_epochs(
    stores: list[TokenStore], context: int, drop_last: bool
) -> None:
    ids, offsets = concat_stores(stores)
    old_docs = old_make_documents(ids, offsets, context)
    stream = PackedStream.from_stores(stores, context, seed=11, drop_last=drop_last)
    per_epoch = stream.rows_per_epoch
    whole = old_rows(old_docs, context, 11, drop_last, 0, 3 * per_epoch)
    assert_rows_equal(stream.rows(0, 3 * per_epoch), whole)  # one call spanning three epochs
    rng = np.random.default_rng(context)
    blocks = [(per_epoch - 1, 2), (2 * per_epoch - 3, 5), (0, 1), (per_epoch, per_epoch)]
    blocks += [(int(rng.integers(0, 2 * per_epoch)), int(rng.integers(0, 9))) for _ in range(20)]
    fresh = PackedStream.from_stores(stores, context, seed=11, drop_last=drop_last)
    for first, count in blocks:
        assert_rows_equal(
            fresh.rows(first, count), Rows(*(a[first : first + count] for a in vars(whole).values()))
        )
    one = fresh.row(per_epoch)
    assert_rows_equal(Rows(*(a[None] for a in one)), fresh.rows(per_epoch, 1))
    if not drop_last and ids.size % context:
        assert (whole.segments[per_epoch - 1] == -1).any()  # the padded last row was exercised


def test_make_documents_on_a_flat_array_still_matches(stores: list[TokenStore]) -> None:
    ids, offsets = concat_stores(stores)
    stream = PackedStream(make_documents(ids, offsets, 16), 16, seed=3, drop_last=False)
    expected = old_rows(old_make_documents(ids, offsets, 16), 16, 3, False, 5, 40)
    assert_rows_equal(stream.rows(5, 40), expected)


def test_release_pages_changes_nothing_but_the_mapping(stores: list[TokenStore]) -> None:
    kept = PackedStream.from_stores(stores, 16, seed=4, release_pages=False)
    released = PackedStream.from_stores(stores, 16, seed=4)
    assert released.release_pages and not kept.release_pages
    n = 2 * kept.rows_per_epoch
    assert_rows_equal(released.rows(0, n), kept.rows(0, n))
    assert all(_mapping(store.ids) is not None for store in stores)  # what gets released is the map


def test_rows_from_tokenized_fasta_equal_old_rows(tmp_path: Path) -> None:
    rng = np.random.default_rng(2)
    letters = list("ACDEFGHIKLMNPQRSTVWYXBUZO")
    fasta = tmp_path / "x.fasta"
    fasta.write_text(
        "".join(f">r{i}\n{''.join(rng.choice(letters, rng.integers(1, 60)))}\n" for i in range(300))
    )
    index_fasta(fasta)
    dirs = [tmp_path / f"shard{k}" for k in range(3)]
    for k, d in enumerate(dirs):
        tokenize_shard(fasta, d, shard_index=k, num_shards=3)
    stores = open_stores(dirs, checksum=True)
    ids, offsets = concat_stores(stores)
    stream = PackedStream.from_stores(stores, 32, seed=0)
    n = 2 * stream.rows_per_epoch + 3
    assert_rows_equal(stream.rows(0, n), old_rows(old_make_documents(ids, offsets, 32), 32, 0, True, 0, n))


# ------------------------------------------------------------------------------- prefetch


@pytest.mark.parametrize("depth", [0, 1, 3])
def test_prefetcher_equals_inline_and_resumes(stores: list[TokenStore], depth: int) -> None:
    stream = PackedStream.from_stores(stores, 16, seed=1)
    inline = step_rows(PackedStream.from_stores(stores, 16, seed=1), 4)
    for start in (0, 5):
        with Prefetcher(step_rows(stream, 4), start, 12, depth=depth) as ahead:
            seen = []
            for step, rows in ahead:
                assert_rows_equal(rows, inline(step))
                seen.append(step)
        assert seen == list(range(start, 12))


def test_prefetcher_is_bounded_and_stops_on_break() -> None:
    built: list[int] = []

    def build(step: int) -> int:
        built.append(step)
        return step * step

    with Prefetcher(build, 3, 10_000, depth=2) as ahead:
        for step, value in ahead:
            assert value == step * step
            if step == 5:
                time.sleep(0.3)  # give the worker time to run ahead as far as it may
                break
        worker = ahead._thread
    assert not worker.is_alive()
    assert max(built) <= 5 + 2 + 1  # depth waiting in the queue + the one being built


@pytest.mark.parametrize("depth", [0, 2])
def test_prefetcher_reraises_worker_error_naming_the_step(depth: int) -> None:
    def build(step: int) -> int:
        if step == 4:
            raise ValueError("bad shard")
        return step

    got = []
    with pytest.raises(ValueError, match="bad shard") as info, Prefetcher(build, 2, 8, depth=depth) as ahead:
        for _, value in ahead:
            got.append(value)
    assert got == [2, 3]
    assert any("step index 4" in note for note in info.value.__notes__)
    assert threading.active_count() == 1 or all(t.name != "prefetch[2:8]" for t in threading.enumerate())


def test_prefetcher_rejects_out_of_order_steps() -> None:
    with Prefetcher(lambda s: s, 0, 3) as ahead, pytest.raises(ValueError, match="the next step is 0"):
        ahead.get(1)


# ------------------------------------------------------------------------------- verification


def test_open_stores_checksum_names_file_and_fix(tmp_path: Path) -> None:
    shard = write_store(tmp_path / "s", np.array([5, 9, 30]), seed=0)
    ids_path = shard / "ids.npy"
    data = bytearray(ids_path.read_bytes())
    data[-3] = 7 if data[-3] != 7 else 8  # still a valid id: only the checksum can tell
    ids_path.write_bytes(bytes(data))
    open_stores([shard], checksum=False)  # sizes match: the cheap open cannot see it
    with pytest.raises(ValueError, match=r"s/ids\.npy: sha256 [0-9a-f]{64} does not match.*forcerun"):
        open_stores([shard], checksum=True)
    ids_path.write_bytes(bytes(data[:-1]))
    with pytest.raises(
        ValueError,
        match=r"ids\.npy: size \d+ bytes.*snakemake --forcerun \S+ \(or snakemake --forcerun tokenize ",
    ):
        open_stores([shard], checksum=False)


def test_store_identity_is_the_manifest_sha256(stores: list[TokenStore]) -> None:
    identity = store_identity(stores)
    assert list(identity) == [str(s.directory) for s in stores]
    for store in stores:
        raw = (store.directory / "manifest.json").read_bytes()
        assert identity[str(store.directory)] == hashlib.sha256(raw).hexdigest()


def _rewrite_ids(shard: Path, position: int, value: int) -> None:
    """Set one token id and update the manifest's sha256, as if the tokenizer had written it."""
    ids = np.load(shard / "ids.npy")
    ids[position] = value
    np.save(shard / "ids.npy", ids)
    manifest = json.loads((shard / "manifest.json").read_text())
    manifest["files"]["ids.npy"]["sha256"] = sha256_file(shard / "ids.npy")
    (shard / "manifest.json").write_text(json.dumps(manifest))


def _with_out_of_vocab_id(tmp_path: Path) -> tuple[Path, int, int]:
    """A shard whose manifest matches its bytes but whose sequence 6 holds id 40 at position 3."""
    shard = write_store(tmp_path / "oov", np.full(12, 10), seed=0)
    _rewrite_ids(shard, 6 * 10 + 3, 40)
    return shard, 6, 3


@pytest.mark.parametrize(("seq", "end"), [(0, "cls"), (3494, "eos"), (3495, "cls"), (4999, "eos")])
def test_verify_streams_and_names_an_unframed_sequence(tmp_path: Path, seq: int, end: str) -> None:
    shard = write_store(tmp_path / "f", np.full(5000, 300), seed=0)  # 1.5 MB: two 1 MiB read chunks
    _rewrite_ids(shard, seq * 300 + (0 if end == "cls" else 299), 5)
    pattern = rf"f/ids\.npy: sequence {seq} does not start with <cls> / end with <eos>.*forcerun"
    with pytest.raises(ValueError, match=pattern):
        TokenStore.open(shard, verify=True)
    with pytest.raises(ValueError, match=pattern):
        open_stores([shard], checksum=True)
    open_stores([shard], checksum=False)


def test_out_of_vocab_id_is_named_at_open_and_per_batch(tmp_path: Path) -> None:
    shard, seq, pos = _with_out_of_vocab_id(tmp_path)
    with pytest.raises(ValueError, match=r"ids\.npy: token id 40 is outside the 33-token vocabulary"):
        open_stores([shard], checksum=True)
    stream = PackedStream.from_stores(open_stores([shard], checksum=False), 8, seed=0)
    pattern = rf"oov/ids\.npy: token id 40 at position {pos} of sequence {seq} is outside .*forcerun"
    with pytest.raises(ValueError, match=pattern):
        stream.rows(0, stream.rows_per_epoch)
    with pytest.raises(ValueError, match=pattern), Prefetcher(step_rows(stream, 3), 0, 100) as ahead:
        for _ in ahead:
            pass


# ------------------------------------------------------------------------------- memory


_MEASURE = """
import json, sys
from plmscale.data import PackedStream, make_documents
from plmscale.loader import Prefetcher, step_rows
from plmscale.tokens import concat_stores, open_stores
mode, shard, context, batch_rows, steps = sys.argv[1], sys.argv[2], *map(int, sys.argv[3:])
stores = open_stores([shard], checksum=True)
if mode == "concat":
    stream = PackedStream(make_documents(*concat_stores(stores), context), context, seed=0)
else:
    stream = PackedStream.from_stores(stores, context, seed=0)
checksum = 0
with Prefetcher(step_rows(stream, batch_rows), 0, steps) as ahead:
    for _, rows in ahead:
        checksum += int(rows.tokens.sum())
with open("/proc/self/status") as status:
    peak_kb = next(int(line.split()[1]) for line in status if line.startswith("VmHWM:"))
print(json.dumps({"peak_mb": peak_kb / 1024, "sum": checksum}))
"""


def _peak_mb(runs: list[tuple[str, Path]]) -> list[tuple[float, int]]:
    """Peak RSS (MB) and a token checksum of one fresh process per (mode, shard) that opens the shard
    (``checksum=True``) and builds 50 batches of 4 rows of 1024 tokens through the prefetcher.

    The processes run concurrently (each measures only itself).  The peak is the process's ``VmHWM``
    (its address space's high-water RSS): ``ru_maxrss`` of a child started from this large pytest
    process would report at least pytest's own RSS, because Linux carries the pre-exec address space's
    high-water mark into the child's ``ru_maxrss`` at ``execve``."""
    argv = [sys.executable, "-c", _MEASURE]
    procs = [subprocess.Popen([*argv, mode, str(shard), "1024", "4", "50"], stdout=subprocess.PIPE, text=True)
             for mode, shard in runs]  # fmt: skip
    results = []
    for proc in procs:
        out, _ = proc.communicate()
        assert proc.returncode == 0
        results.append((json.loads(out)["peak_mb"], json.loads(out)["sum"]))
    return results


@pytest.mark.skipif(not Path("/proc/self/status").is_file(), reason="needs Linux /proc/self/status")
def test_peak_memory_does_not_grow_with_the_store(tmp_path: Path) -> None:
    """Peak RSS over a 30 M-token store vs a 300 M-token one (1 byte per token; sequences of 800-1024
    tokens, so one document each at context 1024).

    In place, the 10x store adds only its per-document index and epoch layout (330k documents x a few
    int64 arrays: starts, lengths, order, ends and their temporaries, about 25 MB at the peak; measured
    +24 MB).  The tokens read stay small: 200 rows touch about 250 documents, and although a kernel that
    caches files in 2 MiB folios maps 2 MiB per touched document, the stream unmaps them after each block
    (``release_pages``), so at most one block's worth (4 rows: < 20 MB) is mapped at a time, for either
    store.  48 MB bounds the index plus that.  Concatenating copies the ids, so its peak must grow by at
    least the 270 MB difference (checked, so this test can fail)."""
    rng = np.random.default_rng(0)
    small = write_store(tmp_path / "small", rng.integers(800, 1025, size=33_000), seed=1)
    large = write_store(tmp_path / "large", rng.integers(800, 1025, size=330_000), seed=2)
    extra_mb = ((large / "ids.npy").stat().st_size - (small / "ids.npy").stat().st_size) / 2**20
    assert extra_mb > 250
    runs = [("inplace", small), ("inplace", large), ("concat", small), ("concat", large)]
    (small_peak, small_sum), (large_peak, large_sum), (concat_small, concat_sum), (concat_large, _) = (
        _peak_mb(runs)
    )
    print(
        f"in place {small_peak:.0f} -> {large_peak:.0f} MB, concat {concat_small:.0f} -> {concat_large:.0f}"
    )
    assert concat_sum == small_sum > 0 and large_sum > 0  # the same rows either way
    assert large_peak - small_peak < 48
    assert concat_large - concat_small > 0.9 * extra_mb
