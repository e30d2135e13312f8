"""ESM-2 tokenization (vectorised numpy) and the on-disk token store.

Token ids equal Hugging Face ``EsmTokenizer``'s for the 33-token ESM-2 vocabulary: ``<cls>`` + one id per
residue + ``<eos>``. :func:`encode` does this with one byte lookup table over the joined sequences, with no
per-character Python (about 300x faster than ``EsmTokenizer``; see ``bench/bench_tokenize.py``).

A shard is a directory holding exactly three files:

* ``ids.npy``      uint8 token ids of all sequences, concatenated (``np.save`` format);
* ``offsets.npy``  int64, length ``num_sequences + 1``, ``offsets[0] == 0``; sequence ``i`` is
  ``ids[offsets[i]:offsets[i + 1]]`` (specials included);
* ``manifest.json`` (format ``plmscale-tokens-v1``) with counts, vocab, provenance and per-file sha256/bytes.

Each file is written atomically and the manifest last (an existing manifest is removed first), so a shard
directory without ``manifest.json`` is incomplete and :meth:`TokenStore.open` refuses it.

Training and evaluation open shards with :func:`open_stores`: sizes, dtypes, shapes and offsets are always
checked against the manifest, and with ``checksum=True`` :func:`verify_store` recomputes the sha256 of
both files and checks ids and ``<cls>``/``<eos>`` framing in one pass of 1 MiB plain reads (no memory
map, so the check does not grow the process's resident memory).  :func:`store_identity` gives the sha256
of each opened manifest, the identity of a run's inputs.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

import numpy as np

from plmscale.atomic import sha256_file, write_text_atomic
from plmscale.validate import ESM_RESIDUES

if TYPE_CHECKING:
    from transformers import EsmTokenizer

__all__ = [
    "CLS_ID",
    "EOS_ID",
    "ESM2_VOCAB",
    "FORMAT",
    "MASK_ID",
    "PAD_ID",
    "UNK_ID",
    "VOCAB_SIZE",
    "InvalidResidueError",
    "TokenStore",
    "concat_stores",
    "encode",
    "esm_tokenizer",
    "open_stores",
    "retokenize_hint",
    "shard_dirs",
    "store_identity",
    "verify_store",
    "write_vocab",
]

ESM2_VOCAB: tuple[str, ...] = (
    "<cls>", "<pad>", "<eos>", "<unk>",
    "L", "A", "G", "V", "S", "E", "R", "T", "I", "D", "P", "K", "Q", "N", "F", "Y", "M", "H", "W", "C",
    "X", "B", "U", "Z", "O", ".", "-", "<null_1>", "<mask>",
)  # fmt: skip
CLS_ID = 0
PAD_ID = 1
EOS_ID = 2
UNK_ID = 3
MASK_ID = 32
VOCAB_SIZE = 33
FORMAT = "plmscale-tokens-v1"

IDS_FILE = "ids.npy"
OFFSETS_FILE = "offsets.npy"
MANIFEST_FILE = "manifest.json"

_INVALID = 255
_CHUNK = 1 << 20
RETOKENIZE = "snakemake --forcerun tokenize"


def _build_lut() -> np.ndarray:
    """256-entry byte -> token id table; bytes that are not ESM-2 residue letters map to ``_INVALID``."""
    lut = np.full(256, _INVALID, dtype=np.uint8)
    for letter in ESM_RESIDUES:
        lut[ord(letter)] = ESM2_VOCAB.index(letter)
    return lut


_LUT = _build_lut()

assert len(ESM2_VOCAB) == VOCAB_SIZE
assert [ESM2_VOCAB[i] for i in (CLS_ID, PAD_ID, EOS_ID, UNK_ID, MASK_ID)] == [
    "<cls>",
    "<pad>",
    "<eos>",
    "<unk>",
    "<mask>",
]


class InvalidResidueError(ValueError):
    """A sequence passed to :func:`encode` contains a character outside ``ESM_RESIDUES``."""

    def __init__(self, index: int, position: int, char: str) -> None:
        self.index, self.position, self.char = index, position, char
        super().__init__(
            f"sequence {index}: character {char!r} at position {position} is not an ESM-2 residue "
            f"({ESM_RESIDUES}). Fix: validate the FASTA first (plmscale.validate) so only valid residues "
            "reach the tokenizer."
        )


def write_vocab(path: str | os.PathLike[str]) -> Path:
    """Write the ESM-2 vocabulary, one token per line, to ``path`` atomically; return the path."""
    path = Path(path)
    write_text_atomic(path, "\n".join(ESM2_VOCAB) + "\n")
    return path


def esm_tokenizer(directory: str | os.PathLike[str]) -> EsmTokenizer:
    """Return a Hugging Face ``EsmTokenizer`` built from ``directory/vocab.txt`` (written here; no hub)."""
    from transformers import EsmTokenizer  # heavy import, only needed for references and tests

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    return EsmTokenizer(vocab_file=str(write_vocab(directory / "vocab.txt")))


def _raise_first_invalid(sequences: Sequence[str], char_offsets: np.ndarray, flat_pos: int) -> NoReturn:
    """Raise :class:`InvalidResidueError` for the character at ``flat_pos`` of the joined sequences."""
    index = int(np.searchsorted(char_offsets, flat_pos, side="right")) - 1
    position = flat_pos - int(char_offsets[index])
    raise InvalidResidueError(index, position + 1, sequences[index][position])


def _residue_ids(sequences: Sequence[str], char_offsets: np.ndarray) -> np.ndarray:
    """Map the joined sequences to residue token ids (uint8) via the byte lookup table."""
    joined = "".join(sequences)
    try:
        raw = np.frombuffer(joined.encode("ascii"), dtype=np.uint8)
    except UnicodeEncodeError as err:
        _raise_first_invalid(sequences, char_offsets, err.start)
    mapped = _LUT[raw]
    bad = np.flatnonzero(mapped == _INVALID)
    if bad.size:
        _raise_first_invalid(sequences, char_offsets, int(bad[0]))
    return mapped


def encode(sequences: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """Tokenize ``sequences`` as ``<cls> residues <eos>`` each; return (uint8 ids, int64 offsets).

    ``offsets`` has length ``len(sequences) + 1``; sequence ``i`` is ``ids[offsets[i]:offsets[i + 1]]``.
    Raises :class:`InvalidResidueError` (a ``ValueError``) naming the sequence index, 1-based position and
    character for anything outside ``ESM_RESIDUES``.
    """
    n = len(sequences)
    lengths = np.fromiter(map(len, sequences), dtype=np.int64, count=n)
    char_offsets = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(lengths, out=char_offsets[1:])
    residues = _residue_ids(sequences, char_offsets)
    offsets = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(lengths + 2, out=offsets[1:])
    ids = np.empty(int(offsets[-1]), dtype=np.uint8)
    is_residue = np.ones(ids.size, dtype=bool)
    is_residue[offsets[:-1]] = False
    is_residue[offsets[1:] - 1] = False
    ids[offsets[:-1]] = CLS_ID
    ids[offsets[1:] - 1] = EOS_ID
    ids[is_residue] = residues
    return ids, offsets


def retokenize_hint(directory: str | os.PathLike[str]) -> str:
    """The fix for a bad shard: the Snakemake command that rebuilds its source's shards (the tokenize job's
    output is the directory above the shard), or every source's."""
    return (
        f"Fix: re-tokenize its source: snakemake --forcerun {Path(directory).parent} "
        f"(or {RETOKENIZE} for every source)."
    )


def shard_dirs(dirs: Sequence[str | os.PathLike[str]]) -> tuple[str, ...]:
    """The token shard directories of ``dirs``, in order: a source directory (the tokenize job's output,
    whose ``manifest.json`` lists its ``shards``) stands for its shards, a shard directory for itself.

    Jobs name sources, not shards: the paper's 64 shards per source made every training job's settings
    (and its shell command) ~24 kB of shard paths.  Raises ``ValueError`` naming the missing manifest.
    """
    out: list[str] = []
    for directory in dirs:
        path = Path(directory) / MANIFEST_FILE
        try:
            manifest = json.loads(path.read_text())
        except FileNotFoundError:
            raise ValueError(
                f"{path}: missing; {directory} is neither a tokenized source nor a token shard. "
                f"{retokenize_hint(Path(directory) / 'shard0')}"
            ) from None
        except json.JSONDecodeError as err:
            raise ValueError(f"{path}: not valid JSON ({err}). {retokenize_hint(directory)}") from err
        if isinstance(manifest, dict) and "shards" in manifest:
            out.extend(str(Path(directory) / shard["dir"]) for shard in manifest["shards"])
        else:
            out.append(str(directory))
    return tuple(out)


class TokenStore:
    """Read-only, memory-mapped view of one token shard directory.

    ``manifest_sha256`` is the sha256 of the ``manifest.json`` bytes that were parsed (see
    :func:`store_identity`).
    """

    def __init__(
        self,
        directory: Path,
        manifest: dict[str, Any],
        ids: np.ndarray,
        offsets: np.ndarray,
        manifest_sha256: str | None = None,
    ) -> None:
        self.directory = directory
        self.manifest = manifest
        self.ids = ids
        self.offsets = offsets
        self.manifest_sha256 = manifest_sha256

    @classmethod
    def open(cls, directory: str | os.PathLike[str], verify: bool = False) -> TokenStore:
        """Open ``directory``, checking it against its manifest (and its contents when ``verify``).

        Always: manifest keys and vocabulary, file sizes, dtypes and shapes, and the offsets.  With
        ``verify``: :func:`verify_store` (sha256 of both files, specials and vocabulary, in one streamed
        pass).  Raises ``ValueError`` naming the offending file on any mismatch.
        """
        directory = Path(directory)
        manifest, manifest_sha256 = _load_manifest(directory)
        for name in (IDS_FILE, OFFSETS_FILE):
            _check_file(directory / name, manifest["files"][name])
        ids = _load_array(directory / IDS_FILE, np.uint8, (manifest["num_tokens"],))
        offsets = _load_array(directory / OFFSETS_FILE, np.int64, (manifest["num_sequences"] + 1,))
        _check_offsets(directory / OFFSETS_FILE, offsets, manifest)
        store = cls(directory, manifest, ids, offsets, manifest_sha256)
        if verify:
            verify_store(store)
        return store

    def __len__(self) -> int:
        return int(self.offsets.size) - 1

    def __getitem__(self, i: int) -> np.ndarray:
        """Token ids of sequence ``i`` (a view into the memory map, ``<cls>``/``<eos>`` included)."""
        n = len(self)
        if not -n <= i < n:
            raise IndexError(f"{self.directory}: sequence index {i} out of range for {n} sequences")
        i %= n
        return self.ids[self.offsets[i] : self.offsets[i + 1]]

    @property
    def lengths(self) -> np.ndarray:
        """Per-sequence token counts (specials included)."""
        return np.diff(self.offsets)

    @property
    def num_tokens(self) -> int:
        """Total number of tokens in the shard."""
        return int(self.ids.size)


def _load_manifest(directory: Path) -> tuple[dict[str, Any], str]:
    """Read and sanity-check ``manifest.json`` of a shard directory; return it and its bytes' sha256."""
    path = directory / MANIFEST_FILE
    if not path.is_file():
        raise ValueError(
            f"{path}: missing; {directory} is not a complete token shard. {retokenize_hint(directory)}"
        )
    raw = path.read_bytes()
    try:
        manifest = json.loads(raw.decode("utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ValueError(f"{path}: not valid JSON ({err}). {retokenize_hint(directory)}") from err
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        found = manifest.get("format") if isinstance(manifest, dict) else type(manifest).__name__
        raise ValueError(f"{path}: format is {found!r}, expected {FORMAT!r}")
    missing = sorted({"num_sequences", "num_tokens", "num_residues", "vocab", "files"} - set(manifest))
    if missing:
        raise ValueError(f"{path}: missing keys {missing}")
    if manifest["vocab"] != list(ESM2_VOCAB):
        raise ValueError(f"{path}: vocabulary differs from ESM2_VOCAB; the shard was made with another vocab")
    for name in (IDS_FILE, OFFSETS_FILE):
        entry = manifest["files"].get(name)
        if not isinstance(entry, dict) or not {"sha256", "bytes"} <= set(entry):
            raise ValueError(f"{path}: no {{'sha256', 'bytes'}} entry for {name} under 'files'")
    return manifest, hashlib.sha256(raw).hexdigest()


def _check_file(path: Path, entry: dict[str, Any]) -> None:
    """Check existence and size of a shard file against its manifest entry."""
    if not path.is_file():
        raise ValueError(f"{path}: missing (listed in the manifest). {retokenize_hint(path.parent)}")
    size = path.stat().st_size
    if size != entry["bytes"]:
        raise ValueError(
            f"{path}: size {size} bytes, manifest says {entry['bytes']}. {retokenize_hint(path.parent)}"
        )


def _load_array(path: Path, dtype: type[np.generic], shape: tuple[int, ...]) -> np.ndarray:
    """Memory-map a ``.npy`` file and check its dtype and shape."""
    try:
        array = np.load(path, mmap_mode="r", allow_pickle=False)
    except ValueError as err:
        raise ValueError(f"{path}: not a readable .npy file ({err})") from err
    if array.dtype != dtype or array.shape != shape:
        raise ValueError(
            f"{path}: dtype/shape {array.dtype}{array.shape}, manifest implies {np.dtype(dtype)}{shape}"
        )
    return array


def _check_offsets(path: Path, offsets: np.ndarray, manifest: dict[str, Any]) -> None:
    """Check offsets start at 0, end at num_tokens, and every sequence has >= 2 tokens."""
    lengths = np.diff(offsets)
    if offsets[0] != 0 or offsets[-1] != manifest["num_tokens"] or (lengths.size and lengths.min() < 2):
        raise ValueError(f"{path}: offsets are inconsistent with the manifest (start, end or lengths)")
    if lengths.size and [int(lengths.min()), int(lengths.max())] != [
        manifest.get("min_length"),
        manifest.get("max_length"),
    ]:
        raise ValueError(f"{path}: sequence lengths disagree with the manifest's min_length/max_length")
    if manifest["num_residues"] != manifest["num_tokens"] - 2 * lengths.size:
        raise ValueError(f"{path}: manifest num_residues does not equal num_tokens - 2 * num_sequences")


def concat_stores(stores: Sequence[TokenStore]) -> tuple[np.ndarray, np.ndarray]:
    """Concatenate shards into one in-memory (uint8 ids, int64 offsets) pair, in the given order."""
    if not stores:
        return np.empty(0, dtype=np.uint8), np.zeros(1, dtype=np.int64)
    ids = np.concatenate([np.asarray(store.ids) for store in stores])
    pieces = [np.zeros(1, dtype=np.int64)]
    base = 0
    for store in stores:
        pieces.append(np.asarray(store.offsets[1:], dtype=np.int64) + base)
        base += store.num_tokens
    offsets = np.concatenate(pieces)
    assert offsets[-1] == ids.size
    return ids, offsets


def _check_sha256(path: Path, digest: str, entry: dict[str, Any]) -> None:
    """Compare a recomputed sha256 with the manifest entry; ``ValueError`` naming the file and fix."""
    if digest != entry["sha256"]:
        raise ValueError(
            f"{path}: sha256 {digest} does not match the manifest ({entry['sha256']}); the file changed "
            f"after tokenization. {retokenize_hint(path.parent)}"
        )


def _first_bad_special(data: np.ndarray, at: int, where: np.ndarray, want: int) -> int:
    """Index into ``where`` of the first file position in this chunk (``data`` read from file offset
    ``at``) whose byte is not ``want``; -1 if none."""
    lo, hi = np.searchsorted(where, [at, at + data.size])
    wrong = np.flatnonzero(data[where[lo:hi] - at] != want)
    return int(lo + wrong[0]) if wrong.size else -1


def _scan_ids(store: TokenStore) -> tuple[str, int, int]:
    """One sequential pass over ``ids.npy`` in 1 MiB chunks with plain reads (no memory map, so the
    process's resident memory does not grow): return (sha256 of the file, largest id, first sequence
    not framed by ``<cls>``/``<eos>`` or -1)."""
    header = store.manifest["files"][IDS_FILE]["bytes"] - store.num_tokens  # uint8: 1 byte per token
    offsets = np.asarray(store.offsets, dtype=np.int64)
    framing = ((offsets[:-1] + header, CLS_ID), (offsets[1:] - 1 + header, EOS_ID))
    digest, largest, bad_seq, at = hashlib.sha256(), -1, -1, 0
    with open(store.directory / IDS_FILE, "rb") as handle:
        while chunk := handle.read(_CHUNK):
            digest.update(chunk)
            data = np.frombuffer(chunk, dtype=np.uint8)
            if at + data.size > header:
                largest = max(largest, int(data[max(0, header - at) :].max()))
                for where, want in framing:
                    bad = _first_bad_special(data, at, where, want)
                    if bad >= 0 and (bad_seq < 0 or bad < bad_seq):
                        bad_seq = bad
            at += data.size
    return digest.hexdigest(), largest, bad_seq


def verify_store(store: TokenStore) -> None:
    """Verify a shard's contents against its manifest, streamed (cheap enough once per job: one read).

    The sha256 of ``ids.npy`` and ``offsets.npy``, every id inside the vocabulary and every sequence
    ``<cls> ... <eos>``.  Raises ``ValueError`` naming the file (and sequence) and the fix.
    """
    files, ids_path = store.manifest["files"], store.directory / IDS_FILE
    digest, largest, bad_seq = _scan_ids(store)
    _check_sha256(ids_path, digest, files[IDS_FILE])
    offsets_path = store.directory / OFFSETS_FILE
    _check_sha256(offsets_path, sha256_file(offsets_path), files[OFFSETS_FILE])
    if largest >= VOCAB_SIZE:
        raise ValueError(
            f"{ids_path}: token id {largest} is outside the {VOCAB_SIZE}-token vocabulary although the "
            f"checksum matches its manifest; the shard was written by another tokenizer. "
            f"{retokenize_hint(store.directory)}"
        )
    if bad_seq >= 0:
        raise ValueError(
            f"{ids_path}: sequence {bad_seq} does not start with <cls> / end with <eos>. "
            f"{retokenize_hint(store.directory)}"
        )


def open_stores(dirs: Sequence[str | os.PathLike[str]], *, checksum: bool) -> list[TokenStore]:
    """Open the token shards a training or evaluation job reads, in the given order, verified (a source
    directory stands for its shards, :func:`shard_dirs`).

    Always: each manifest is parsed and sizes, dtypes, shapes and offsets are checked against it
    (:meth:`TokenStore.open`; reads the small ``offsets.npy`` only).  With ``checksum``: :func:`verify_store`
    (sha256 of ``ids.npy`` and ``offsets.npy``, ids in the vocabulary, ``<cls>``/``<eos>`` framing; one
    sequential read per shard, about a second per GB; do it once per job).  A bad shard raises
    ``ValueError`` naming the file and the Snakemake command that rebuilds it.
    """
    if not dirs:
        raise ValueError("open_stores: no token shard directories given")
    dirs = shard_dirs(dirs)
    stores = []
    for directory in dirs:
        try:
            store = TokenStore.open(directory)
            if checksum:
                verify_store(store)
        except ValueError as err:
            if RETOKENIZE in str(err):
                raise
            raise ValueError(f"{err} {retokenize_hint(directory)}") from err
        stores.append(store)
    return stores


def store_identity(stores: Sequence[TokenStore]) -> dict[str, str]:
    """Map each shard directory (as opened) to the sha256 of its ``manifest.json`` bytes.

    The manifest lists the sha256 and size of ``ids.npy``/``offsets.npy``, so this identifies the token
    inputs of a run; record it with the run's results.
    """
    identity: dict[str, str] = {}
    for store in stores:
        digest = store.manifest_sha256 or sha256_file(store.directory / MANIFEST_FILE)
        identity[str(store.directory)] = digest
    return identity
