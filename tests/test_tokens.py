"""Tokenization vs hand-worked ids and Hugging Face ``EsmTokenizer``; token-shard round trips; atomics."""

from __future__ import annotations

import hashlib
import json
import os
import re
from importlib import resources
from pathlib import Path

import numpy as np
import pytest
from plmscale.atomic import atomic_path, sha256_file, write_json_atomic, write_text_atomic
from plmscale.fasta import read_fasta, write_fasta
from plmscale.fasta_index import index_fasta, shard_range
from plmscale.tokenize import tokenize_shard, tokenize_source
from plmscale.tokens import (
    CLS_ID,
    EOS_ID,
    ESM2_VOCAB,
    MASK_ID,
    PAD_ID,
    UNK_ID,
    VOCAB_SIZE,
    TokenStore,
    concat_stores,
    encode,
    esm_tokenizer,
    open_stores,
    shard_dirs,
    write_vocab,
)
from plmscale.validate import ESM_RESIDUES, ValidationPolicy, validate_records

PROTEOME = "938293.PRJEB85.HG003687.faa"
# Synthetic sequences exercising the rare letters the real proteome may lack.
SYNTHETIC = ["XBUZO", "MXKBVUZOA", ESM_RESIDUES, ESM_RESIDUES[::-1], "O", "MKV"]


def _proteome_path() -> Path:
    path = resources.files("pyhmmer").joinpath("tests", "data", "seqs", PROTEOME)
    if not path.is_file():
        pytest.skip(f"pyhmmer test proteome {PROTEOME} is not installed with pyhmmer")
    return Path(str(path))


@pytest.fixture(scope="module")
def proteome() -> list[tuple[str, str]]:
    """The real pyhmmer proteome after validation (terminal '*' stripped), plus synthetic records."""
    path = _proteome_path()
    result = validate_records(read_fasta(path), ValidationPolicy(), source="pyhmmer", path=str(path))
    report = result.report
    assert report["n_records"] == 2100
    assert report["n_dropped"] == 0, report["dropped_by_reason"]
    return result.kept + [(f"synthetic{i}", s) for i, s in enumerate(SYNTHETIC)]


@pytest.fixture(scope="module")
def hf_tokenizer(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    return esm_tokenizer(tmp_path_factory.mktemp("vocab"))


# --------------------------------------------------------------------------------------------- vocabulary


def test_vocab_layout() -> None:
    assert len(ESM2_VOCAB) == VOCAB_SIZE == 33
    assert (CLS_ID, PAD_ID, EOS_ID, UNK_ID, MASK_ID) == (0, 1, 2, 3, 32)
    assert "".join(ESM2_VOCAB[4:29]) == ESM_RESIDUES
    assert ESM2_VOCAB[29:] == (".", "-", "<null_1>", "<mask>")


def test_write_vocab_one_token_per_line(tmp_path: Path) -> None:
    path = write_vocab(tmp_path / "vocab.txt")
    assert path.read_text().splitlines() == list(ESM2_VOCAB)


# --------------------------------------------------------------------------------------------- encode


def test_encode_hand_worked() -> None:
    # vocab order: <cls>=0 ... L=4 A=5 G=6 V=7 ... K=15 ... M=20; <eos>=2
    ids, offsets = encode(["MKV"])
    assert ids.dtype == np.uint8 and offsets.dtype == np.int64
    assert ids.tolist() == [0, 20, 15, 7, 2]
    assert offsets.tolist() == [0, 5]


def test_encode_several_with_empty() -> None:
    ids, offsets = encode(["LA", "", "O"])
    assert ids.tolist() == [0, 4, 5, 2, 0, 2, 0, 28, 2]
    assert offsets.tolist() == [0, 4, 6, 9]


def test_encode_nothing() -> None:
    ids, offsets = encode([])
    assert ids.size == 0 and offsets.tolist() == [0]


@pytest.mark.parametrize(
    ("bad", "index", "char", "pos"),
    [
        (["MKV", "MKJ"], 1, "J", 3),
        (["mkv"], 0, "m", 1),
        (["MK", "AAé"], 1, "é", 3),
        (["M*"], 0, "*", 2),
        (["M-"], 0, "-", 2),
    ],
)
def test_encode_rejects_non_residues(bad: list[str], index: int, char: str, pos: int) -> None:
    expected = f"sequence {index}: character '{char}' at position {pos} is not an ESM-2 residue"
    with pytest.raises(ValueError, match=re.escape(expected)):
        encode(bad)


def test_hf_reference_hand_worked(hf_tokenizer) -> None:  # type: ignore[no-untyped-def]
    assert hf_tokenizer("MKV")["input_ids"] == [0, 20, 15, 7, 2]


def test_encode_equals_esm_tokenizer_on_real_proteome(proteome, hf_tokenizer) -> None:  # type: ignore[no-untyped-def]
    sequences = [seq for _, seq in proteome]
    ids, offsets = encode(sequences)
    reference = hf_tokenizer(sequences)["input_ids"]
    assert len(reference) == len(sequences) == 2100 + len(SYNTHETIC)
    mismatched = [i for i, ref in enumerate(reference) if ids[offsets[i] : offsets[i + 1]].tolist() != ref]
    assert mismatched == []
    # token-length invariant: residues + 2 specials, no <unk> anywhere (catches HF's collapsed-<unk> mode)
    assert np.diff(offsets).tolist() == [len(s) + 2 for s in sequences]
    assert not (ids == UNK_ID).any()
    assert {ESM2_VOCAB[t] for t in ids.tolist()} >= set("XBUZO")


# --------------------------------------------------------------------------------------------- token shards


@pytest.fixture(scope="module")
def clean_fasta(proteome, tmp_path_factory: pytest.TempPathFactory) -> Path:  # type: ignore[no-untyped-def]
    path = tmp_path_factory.mktemp("clean") / "clean.fa"
    write_fasta(proteome, path)
    index_fasta(path)
    return path


def _file_entry(path: Path) -> dict[str, object]:
    return {"sha256": hashlib.sha256(path.read_bytes()).hexdigest(), "bytes": len(path.read_bytes())}


def test_shard_round_trip(proteome, clean_fasta: Path, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    num_shards = 3
    stores = []
    for k in range(num_shards):
        out = tmp_path / f"shard{k}"
        manifest = tokenize_shard(clean_fasta, out, shard_index=k, num_shards=num_shards)
        assert sorted(p.name for p in out.iterdir()) == ["ids.npy", "manifest.json", "offsets.npy"]
        assert json.loads((out / "manifest.json").read_text()) == manifest
        first, stop = shard_range(len(proteome), k, num_shards)
        members = proteome[first:stop]  # contiguous record ranges
        lengths = [len(s) + 2 for _, s in members]
        assert manifest["format"] == "plmscale-tokens-v1"
        assert (manifest["shard_index"], manifest["num_shards"]) == (k, num_shards)
        assert manifest["source"] == str(clean_fasta)
        assert manifest["num_sequences"] == len(members)
        assert manifest["num_tokens"] == sum(lengths)
        assert manifest["num_residues"] == sum(lengths) - 2 * len(members)
        assert (manifest["min_length"], manifest["max_length"]) == (min(lengths), max(lengths))
        assert manifest["vocab"] == list(ESM2_VOCAB)
        ids_text = "\n".join(rid for rid, _ in members)
        assert manifest["record_ids_sha256"] == hashlib.sha256(ids_text.encode()).hexdigest()
        assert manifest["files"] == {name: _file_entry(out / name) for name in ("ids.npy", "offsets.npy")}

        store = TokenStore.open(out, verify=True)
        assert len(store) == len(members) and store.num_tokens == manifest["num_tokens"]
        assert store.lengths.tolist() == lengths
        assert isinstance(store.ids, np.memmap) or isinstance(store.ids.base, np.memmap)
        for j, (_, seq) in enumerate(members):
            assert store[j].tolist() == [CLS_ID, *(ESM2_VOCAB.index(c) for c in seq), EOS_ID]
        assert store[-1].tolist() == store[len(store) - 1].tolist()
        with pytest.raises(IndexError):
            store[len(store)]
        stores.append(store)

    # the shards in order are every record in file order: concat_stores equals encoding the whole file
    cat_ids, cat_offsets = concat_stores(stores)
    ref_ids, ref_offsets = encode([s for _, s in proteome])
    assert cat_offsets.dtype == np.int64
    assert np.array_equal(cat_ids, ref_ids) and np.array_equal(cat_offsets, ref_offsets)


def test_verify_detects_corrupted_byte(clean_fasta: Path, tmp_path: Path) -> None:
    out = tmp_path / "shard"
    tokenize_shard(clean_fasta, out, shard_index=0, num_shards=1)
    ids_path = out / "ids.npy"
    data = bytearray(ids_path.read_bytes())
    data[-10] = 7 if data[-10] != 7 else 8  # still a valid token id; only the checksum can tell
    ids_path.write_bytes(bytes(data))
    TokenStore.open(out)  # sizes still match: the cheap open cannot see it
    with pytest.raises(ValueError, match=r"ids\.npy: sha256 [0-9a-f]{64} does not match the manifest"):
        TokenStore.open(out, verify=True)


def test_open_detects_truncation_and_missing_manifest(clean_fasta: Path, tmp_path: Path) -> None:
    out = tmp_path / "shard"
    tokenize_shard(clean_fasta, out, shard_index=1, num_shards=2)
    offsets_path = out / "offsets.npy"
    offsets_path.write_bytes(offsets_path.read_bytes()[:-8])
    with pytest.raises(ValueError, match=r"offsets\.npy: size \d+ bytes, manifest says \d+"):
        TokenStore.open(out)
    (out / "manifest.json").unlink()
    with pytest.raises(ValueError, match=r"manifest\.json: missing; .* is not a complete token shard"):
        TokenStore.open(out)


def test_tokenize_shard_argument_errors(clean_fasta: Path, tmp_path: Path) -> None:
    for k, n in [(-1, 2), (2, 2), (0, 0)]:
        with pytest.raises(ValueError, match=r"shard_index must be in \[0, num_shards\)"):
            tokenize_shard(clean_fasta, tmp_path / "s", shard_index=k, num_shards=n)
    assert not (tmp_path / "s").exists()


def test_a_shard_of_no_records_is_an_empty_store(tmp_path: Path) -> None:
    small = tmp_path / "small.fa"
    write_fasta([("a", "MKV"), ("b", "LL")], small)
    index_fasta(small)
    assert [shard_range(2, k, 3) for k in range(3)] == [(0, 0), (0, 1), (1, 2)]
    manifest = tokenize_shard(small, tmp_path / "s", shard_index=0, num_shards=3)
    assert (manifest["num_sequences"], manifest["num_tokens"], manifest["records"]) == (0, 0, [0, 0])
    store = TokenStore.open(tmp_path / "s", verify=True)
    assert len(store) == 0 and store.num_tokens == 0


def test_tokenize_shard_invalid_residue_names_record_and_writes_nothing(tmp_path: Path) -> None:
    raw = tmp_path / "raw.fa"
    write_fasta([("a", "MKV"), ("b", "MKJ")], raw)
    index_fasta(raw)
    out = tmp_path / "s"
    with pytest.raises(ValueError, match=r"raw\.fa: record 'b': 'J' at position 3 is not an ESM-2 residue"):
        tokenize_shard(raw, out, shard_index=0, num_shards=1)
    assert not out.exists()


def test_tokenize_shard_rejects_empty_record(tmp_path: Path) -> None:
    raw = tmp_path / "raw.fa"
    write_fasta([("a", "MKV"), ("b", "")], raw)
    index_fasta(raw)
    with pytest.raises(ValueError, match=r"raw\.fa: record 'b' is empty"):
        tokenize_shard(raw, tmp_path / "s", shard_index=0, num_shards=1)
    assert not (tmp_path / "s").exists()


def test_rerun_replaces_stale_shard(clean_fasta: Path, tmp_path: Path) -> None:
    out = tmp_path / "s"
    small = tmp_path / "small.fa"
    write_fasta([("a", "MKV")], small)
    index_fasta(small)
    tokenize_shard(small, out, shard_index=0, num_shards=1)
    manifest = tokenize_shard(clean_fasta, out, shard_index=0, num_shards=1)
    store = TokenStore.open(out, verify=True)
    assert len(store) == manifest["num_sequences"] > 1


@pytest.mark.parametrize("workers", [1, 2])
def test_tokenize_source_writes_the_shards_a_job_per_shard_would(
    clean_fasta: Path, tmp_path: Path, workers
) -> None:
    """One job per (split, source): its shards are byte for byte those of tokenize_shard, whatever the
    number of worker processes, and the source manifest (written last) sums them."""
    source = tmp_path / "src"
    manifest = tokenize_source(clean_fasta, source, num_shards=3, workers=workers)
    assert json.loads((source / "manifest.json").read_text()) == manifest
    assert sorted(p.name for p in source.iterdir()) == ["manifest.json", "shard0", "shard1", "shard2"]
    single = [
        tokenize_shard(clean_fasta, tmp_path / f"one{k}", shard_index=k, num_shards=3) for k in range(3)
    ]
    for k, one in enumerate(single):
        for name in ("ids.npy", "offsets.npy"):
            assert (source / f"shard{k}" / name).read_bytes() == (tmp_path / f"one{k}" / name).read_bytes()
        assert manifest["shards"][k] == {
            "dir": f"shard{k}",
            **{key: one[key] for key in ("num_sequences", "num_tokens", "records", "files")},
        }
    assert manifest["num_sequences"] == sum(m["num_sequences"] for m in single)
    assert manifest["num_tokens"] == sum(m["num_tokens"] for m in single)
    # a source directory stands for its shards; a shard directory for itself
    assert shard_dirs([source, tmp_path / "one0"]) == (
        str(source / "shard0"), str(source / "shard1"), str(source / "shard2"), str(tmp_path / "one0")
    )  # fmt: skip
    stores = open_stores([source], checksum=True)
    assert [len(s) for s in stores] == [m["num_sequences"] for m in single]


def test_a_train_job_naming_sources_opens_their_shards(clean_fasta: Path, tmp_path: Path) -> None:
    """The rule's TrainJob names each source's token directory (a short command line); the trainer
    expands them to the shards their manifests list, in order, source by source."""
    from plmscale.settings import TrainJob, TrainSource

    from tests.trainkit import settings

    a, b, valid = tmp_path / "train/a", tmp_path / "train/b", tmp_path / "valid/a"
    tokenize_source(clean_fasta, a, num_shards=2)
    tokenize_source(clean_fasta, b, num_shards=3)
    tokenize_source(clean_fasta, valid, num_shards=1)
    run = settings()
    job = TrainJob(
        run_id="r", run=run, train_dirs=(str(a), str(b)), valid_dirs=(str(valid),), out_dir="o",
        checkpoint_dir=None, sources=(TrainSource("a", (str(a),), 0.5), TrainSource("b", (str(b),), 0.5)),
    )  # fmt: skip
    shards = job.with_shards()
    assert shards.train_dirs == (f"{a}/shard0", f"{a}/shard1", f"{b}/shard0", f"{b}/shard1", f"{b}/shard2")
    assert shards.valid_dirs == (f"{valid}/shard0",)
    assert [s.dirs for s in shards.sources] == [shards.train_dirs[:2], shards.train_dirs[2:]]
    assert shards.run == job.run and shards.sources[0].proportion == 0.5


def test_tokenize_source_fails_on_a_bad_record_in_any_worker(tmp_path: Path) -> None:
    raw = tmp_path / "raw.fa"
    write_fasta([("a", "MKV"), ("b", "MKV"), ("c", "MKV"), ("d", "MKJ")], raw)
    index_fasta(raw)
    with pytest.raises(ValueError, match=r"raw\.fa: record 'd': 'J' at position 3 is not an ESM-2 residue"):
        tokenize_source(raw, tmp_path / "src", num_shards=2, workers=2)
    assert not (tmp_path / "src" / "manifest.json").exists()  # no manifest: not a tokenized source
    with pytest.raises(ValueError, match=r"src/manifest\.json: missing; .* is neither a tokenized source"):
        shard_dirs([tmp_path / "src"])
    with pytest.raises(ValueError, match="tokenize workers must be >= 1, got 0"):
        tokenize_source(raw, tmp_path / "other", num_shards=2, workers=0)


# --------------------------------------------------------------------------------------------- atomic writes


def test_atomic_path_leaves_nothing_on_exception(tmp_path: Path) -> None:
    final = tmp_path / "out.txt"
    with pytest.raises(RuntimeError, match="boom"), atomic_path(final) as tmp:
        assert tmp.parent == tmp_path and tmp.name.startswith(".out.txt.tmp-")
        tmp.write_text("partial")
        raise RuntimeError("boom")
    assert list(tmp_path.iterdir()) == []


def test_atomic_path_keeps_old_content_on_exception(tmp_path: Path) -> None:
    final = tmp_path / "out.txt"
    final.write_text("old")
    with pytest.raises(RuntimeError), atomic_path(final) as tmp:
        tmp.write_text("new")
        raise RuntimeError("boom")
    assert final.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["out.txt"]


def test_atomic_path_requires_the_file(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="without creating"), atomic_path(tmp_path / "x"):
        pass
    assert list(tmp_path.iterdir()) == []


def test_write_json_and_text_atomic(tmp_path: Path) -> None:
    write_json_atomic(tmp_path / "a.json", {"b": 1, "a": [1, 2]})
    assert (tmp_path / "a.json").read_text() == '{\n  "a": [\n    1,\n    2\n  ],\n  "b": 1\n}\n'
    write_text_atomic(tmp_path / "t.txt", "x\ny")
    assert (tmp_path / "t.txt").read_text() == "x\ny"
    with pytest.raises(TypeError):
        write_json_atomic(tmp_path / "bad.json", {"x": object()})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.json", "t.txt"]


def test_sha256_file_matches_hashlib(tmp_path: Path) -> None:
    path = tmp_path / "blob"
    blob = os.urandom(3 * (1 << 20) + 17)  # spans several read chunks
    path.write_bytes(blob)
    assert sha256_file(path) == hashlib.sha256(blob).hexdigest()


def test_smaller_splits_get_shards_of_the_train_split_size():
    from plmscale.tokenize import split_shards

    paper = {"train": 0.995, "valid": 0.004, "test": 0.001}
    assert [split_shards(64, paper, s) for s in ("train", "valid", "test")] == [64, 1, 1]
    # 64 * 0.3 / 0.5 = 38.4 -> 39 shards; 64 * 0.2 / 0.5 = 25.6 -> 26
    even = {"train": 0.5, "valid": 0.3, "test": 0.2}
    assert [split_shards(64, even, s) for s in ("train", "valid", "test")] == [64, 39, 26]
    assert split_shards(2, {"train": 0.9, "valid": 0.05, "test": 0.05}, "valid") == 1
