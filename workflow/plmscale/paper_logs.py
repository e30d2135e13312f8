"""The authors' released training logs (Cheng et al. 2024): verified download and tidy tables.

Source: ``data/training_logs/`` of github.com/cxysteven/ScalingProteinLM at commit ``COMMIT``, listed file by
file (path, bytes, sha256) in ``config/paper_logs.sha256.tsv``.  Every file is a TensorBoard CSV export with
the header ``Wall time,Step,Value``.  What the folders hold (checked against the files, not only the names):

``{gpt,mlm}_valid/approach3_flops/<size>_flops/*.csv`` (124 CLM, 85 MLM files)
    Validation loss (nats/token) against ``Step`` = cumulative training compute in GFLOPs without
    embeddings, C = 6 N D.  The IsoFLOP budget is in the run name (``_1e19flops``; three MLM runs write it
    without the suffix: ``mlm_280M_all0.48ep_1.5e20``, ``..._4e20``, ``..._5e20``); epoch-sweep runs
    (``..._all0.25ep_bf16``) have no budget.  No file there is a perplexity (no ``ppl`` in any name, every
    value lies in 1.5-4.5 nats), but the reader detects and converts one if it appears.

    Size labels.  The folder label (``85M_flops``) and the label in the file name (``gpt_85M_``) disagree in
    several folders: ``13M_flops`` holds ``gpt/mlm_10M_*``, ``34M_flops`` holds ``*_25M_*``, ``65M_flops``
    holds ``*_49M_*``, ``680M_flops`` holds ``*_500M_*``, ``127M_flops`` holds ``*_130M_*``, ``1.2B_flops``
    holds ``*_1b_*``, ``2.8B_flops`` holds ``*_3b_*``, ``6M_flops`` holds ``gpt_10M_1e18``, ``4B_flops``
    holds ``gpt_3.4b``.  We take N from the FOLDER, as the authors' notebook (``model_size_map`` keyed by the
    folder) does, because the logged compute says the folder is right: the first logged point of a run is
    at iteration 300, so ``Step * 1e9 / (6 * 300 * batch_tokens)`` recovers N to <1 %, and for ``34M_flops``
    (``gpt_25M``), ``65M_flops`` (``49M``), ``680M_flops`` (``500M``), ``13M_flops`` (``10M``),
    ``127M_flops`` (``130M``) it gives the folder's N, not the file's.  The file labels are loose nominal
    names (``25M`` is the 33.7M model while ``25.1M`` is the 25.2M one).  The folder is wrong in two
    places, both byte-identical copies of a run that also sits in its right folder:
    ``6M_flops/run-tensorboard_gpt_10M_1e18...`` is ``13M_flops/run-gpt_10M_1e18...`` (N = 13.2M, not 6.3M),
    ``4B_flops/... (1).csv`` is ``3.4B_flops/...``.  ``duplicate_of`` marks such copies (and the
    ``run-tensorboard_*`` copies of ``run-*`` files); drop them before fitting.  The logged compute also
    contradicts both labels for ``gpt_valid/.../127M_flops/run-gpt_127M_bsz0.5M_..._all{0.75,1}ep``
    (N ~ 170M), ``mlm_valid/.../1.7B_flops/run-mlm_1.7b_..._1e21flops`` (N ~ 1.53B),
    ``550M_flops/run-mlm_550M_..._3e19/3e20`` (N ~ 472M) and, less surely (irregular first interval),
    ``10B_flops/run-mlm_10b_...`` (N ~ 7.25B) and ``1.2B_flops/run-mlm_1b_all1ep_...`` (N ~ 1.0B, the
    nominal size of its name); none of them is a byte copy of another file.  :func:`size_mismatches`
    reports all of these.
    Folder labels missing from the size map (``280M``, ``609M``, ``736M``) fall back to the nominal value
    (``n_params_exact`` False).

``mask_ratio_data/{85M,154M}/mask_<ratio>.csv``
    MLM mask-ratio ablation; ``Step`` is the training ITERATION (300 ... 57220 / 102043), not compute.

``transfer_valid/{gpt,mlm}/{ft,scratch,tokens}/``
    ``ft``: the named objective trained from a checkpoint of the other objective, e.g.
    ``gpt1e19_transfer_from_mlm5.5e19_130M`` (CLM at 1e19 FLOPs from an MLM trained with 5.5e19);
    ``scratch``: the same size and budget trained from scratch; both against GFLOPs of the second phase
    only (the first points of ``ft`` and ``scratch`` coincide).  ``tokens``: the same curves against
    TOKENS (``Step`` = tokens seen in this phase); ``mlm/tokens`` files are named
    ``<size>_<budget>[_clm_pretrain_<source budget>].csv`` (validation loss, same point counts as the
    validation logs).  Quirks: ``gpt/ft`` holds no 1.7B transfer run against GFLOPs but the scratch run
    ``gpt_1.7b_1024_noreg_all0.5ep_bf16`` (identical to the approach-3 file; ``pretrained`` False shows it);
    the 1.2B MLM pair (``mlm/ft/...1e21...``, ``mlm/scratch/run-mlm_1b_...``) and the 470M MLM scratch run
    are TRAINING loss (``metric``).

``ur50_all1ep_{training,valid}_loss/<dataset>_<objective>_<size>[_<variant>]/``
    UniRef50-only (``ur50``) vs UniMeta200B (``all1ep``) learning curves (the paper's Figure 1), ``Step`` =
    tokens (one file: samples of 1024 tokens).  Files with ``ppl`` in the name hold perplexity
    (``loss = ln(ppl)``: ``ur50_mlm_3b_epoch_shuffle/..._2 ... ppl`` equals ``ln`` of the loss copy in
    ``..._副本``).  The split is taken from the file name (one validation file sits in the training
    folder) and the dataset from the run name when it names one (``ur50_mlm_3b/`` also holds a copy of
    the ``all1ep`` 3B perplexity log).  ``副本`` is Chinese for "copy".
"""

from __future__ import annotations

import csv
import hashlib
import math
import re
import urllib.parse
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

import polars as pl

from plmscale.atomic import sha256_file, write_json_atomic
from plmscale.download import download

REPO = "cxysteven/ScalingProteinLM"
COMMIT = "12acfa0b1324b50e832f757e956bd26753aa5619"
DEFAULT_BASE_URL = f"https://raw.githubusercontent.com/{REPO}/{COMMIT}"
LOGS_SUBDIR = "data/training_logs"
MANIFEST_HEADER = ("path", "bytes", "sha256")
CSV_HEADER = ["Wall time", "Step", "Value"]

# Exact parameter counts (N, non-embedding) per size tag: the authors' ``model_size_map``.
SIZE_MAP: dict[str, int] = {
    "3M": 3_538_944, "6M": 6_291_456, "10M": 9_830_400, "13M": 13_192_320, "20M": 19_267_584,
    "25M": 25_165_824, "34M": 33_690_624, "40M": 39_813_120, "47M": 47_775_744, "65M": 65_728_000,
    "85M": 84_934_656, "106M": 106_168_320, "127M": 127_699_968, "154M": 154_448_288,
    "170M": 170_233_344, "200M": 202_309_632, "230M": 231_211_008, "300M": 302_426_080,
    "393M": 393_216_000, "470M": 472_435_184, "550M": 550_502_400, "650M": 650_930_624,
    "680M": 680_205_312, "880M": 886_308_864, "1.2B": 1_208_881_136, "1.5B": 1_528_823_808,
    "1.7B": 1_784_851_968, "2B": 2_044_723_200, "2.4B": 2_359_296_000, "2.8B": 2_834_283_904,
    "3.4B": 3_425_697_792, "4B": 4_076_863_488, "5B": 4_917_322_640, "6B": 6_165_626_880,
    "7B": 7_247_758_312, "10B": 10_682_105_856,
}  # fmt: skip

OBJECTIVES = {"gpt": "clm", "mlm": "mlm", "clm": "clm"}
LN_VOCAB = math.log(128)  # a trained model's loss is far below ln(vocab); a "loss" above it is a perplexity
FIRST_LOG_ITERATION = 300  # the first logged point of every approach-3 run (from the tokens logs)
LOGGED_N_TOLERANCE = 0.02
SAMPLE_TOKENS = 1024  # context length: one "sample" is 1024 tokens

_FOLDER_RE = re.compile(r"^(?P<num>\d+(?:\.\d+)?)(?P<unit>[MmBb])(?:_flops)?$")
_RUN_RE = re.compile(r"^(?:dep-)?run-(?:tensorboard_)?(?P<run>.+?)-tag-(?P<tag>.+)\.csv$")
_FILE_LABEL_RE = re.compile(r"^(?:gpt|mlm)_(?P<num>\d+(?:\.\d+)?)(?P<unit>[MmBb])(?=_|$)")
_BUDGET_RE = re.compile(r"(?:^|_)(?P<c>\d+(?:\.\d+)?e\d+)(?:flops)?(?=_|$)")
_EPOCHS_RE = re.compile(r"(?:^|_)all(?P<ep>\d+(?:\.\d+)?)ep(?=_|$)")
_TRANSFER_RE = re.compile(
    r"^(?P<obj>gpt|mlm)(?P<c>\d+(?:\.\d+)?e\d+)_transfer_from_(?P<src>gpt|mlm)(?P<sc>\d+(?:\.\d+)?e\d+)"
    r"_(?P<size>\d+(?:\.\d+)?[MmBb])(?:_\d+)?(?:\.sh)?$"
)
_TOKENS_NAME_RE = re.compile(
    r"^(?P<size>\d+(?:\.\d+)?[MB])_(?P<c>\d+(?:\.\d+)?e\d+)(?:_clm_pretrain_(?P<sc>\d+(?:\.\d+)?e\d+))?\.csv$"
)
_UR50_DIR_RE = re.compile(
    r"^(?P<ds>ur50|all1ep)_(?P<obj>clm|mlm)_(?P<size>\d+(?:\.\d+)?[MmBb])(?:_(?P<variant>.+))?$"
)
_MASK_RE = re.compile(r"^mask_(?P<ratio>\d+(?:\.\d+)?)\.csv$")


# --------------------------------------------------------------------------------------------- manifest


@dataclass(frozen=True)
class ManifestEntry:
    """One released file: ``path`` relative to the authors' repository root, its size and sha256."""

    path: str
    bytes: int
    sha256: str


class FetchError(RuntimeError):
    """A released file could not be fetched or failed verification; ``path`` names it."""

    def __init__(self, path: str, message: str) -> None:
        super().__init__(f"{path}: {message}")
        self.path = path


def _check_manifest_path(path: str, where: str) -> None:
    """Refuse paths that would escape the output folder or leave the logs folder."""
    pure = PurePosixPath(path)
    if pure.is_absolute() or ".." in pure.parts or not path.startswith(LOGS_SUBDIR + "/"):
        raise ValueError(f"{where}: path {path!r} must be relative and under {LOGS_SUBDIR}/")


def read_manifest(path: str | Path) -> list[ManifestEntry]:
    """Parse the ``path<TAB>bytes<TAB>sha256`` manifest (header required); raises ValueError on bad rows."""
    path = Path(path)
    with open(path, encoding="utf-8", newline="") as handle:
        lines = handle.read().split("\n")
    if not lines or tuple(lines[0].split("\t")) != MANIFEST_HEADER:
        raise ValueError(f"{path}: first line must be the header {'<TAB>'.join(MANIFEST_HEADER)}")
    entries: list[ManifestEntry] = []
    for number, line in enumerate(lines[1:], start=2):
        if not line:
            continue
        fields = line.split("\t")
        where = f"{path}:{number}"
        if len(fields) != 3:
            raise ValueError(f"{where}: expected 3 tab-separated fields, got {len(fields)}")
        rel, size, digest = fields
        _check_manifest_path(rel, where)
        if not size.isdigit():
            raise ValueError(f"{where}: bytes {size!r} is not a non-negative integer")
        if not re.fullmatch(r"[0-9a-f]{64}", digest):
            raise ValueError(f"{where}: sha256 {digest!r} is not 64 lowercase hex digits")
        entries.append(ManifestEntry(rel, int(size), digest))
    if len({e.path for e in entries}) != len(entries):
        raise ValueError(f"{path}: duplicate paths")
    return entries


def file_url(base_url: str, path: str) -> str:
    """URL of a released file: spaces, parentheses and non-ASCII characters percent-encoded, '/' kept."""
    return base_url.rstrip("/") + "/" + urllib.parse.quote(path)


def _fetch_one(entry: ManifestEntry, out_root: Path, base_url: str) -> bool:
    """Download ``entry`` unless a verified copy exists; returns True when it was downloaded."""
    target = out_root / entry.path
    if target.is_file():
        if target.stat().st_size == entry.bytes and sha256_file(target) == entry.sha256:
            return False
        target.unlink()  # a stale or corrupt copy must not survive a failed re-fetch
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        got = download(file_url(base_url, entry.path), target, sha256=entry.sha256)
    except (ValueError, OSError) as err:
        raise FetchError(entry.path, str(err)) from err
    if got["bytes"] != entry.bytes:  # unreachable unless sha256 collides; kept as a cheap guard
        target.unlink(missing_ok=True)
        raise FetchError(entry.path, f"got {got['bytes']} bytes, manifest says {entry.bytes}")
    return True


def fetch_logs(
    manifest_path: str | Path,
    out_root: str | Path,
    *,
    base_url: str = DEFAULT_BASE_URL,
    log: Callable[[str], Any] = print,
) -> dict:
    """Fetch every manifest file to ``out_root/<path>`` (sha256-verified); write ``manifest.json`` last.

    Files already present with the right sha256 are kept.  A checksum mismatch or an HTTP error raises
    :class:`FetchError` naming the file; no partial file is left for it and ``manifest.json`` (removed at
    the start) is not written.  Returns the summary written to ``manifest.json``.
    """
    entries = read_manifest(manifest_path)
    out_root = Path(out_root)
    out_root.mkdir(parents=True, exist_ok=True)
    done_marker = out_root / "manifest.json"
    done_marker.unlink(missing_ok=True)
    fetched = 0
    for entry in entries:
        fetched += _fetch_one(entry, out_root, base_url)
    summary = {
        "count": len(entries),
        "bytes": sum(e.bytes for e in entries),
        "base_url": base_url,
        "commit": COMMIT,
        "repo": REPO,
        "fetched": fetched,
        "kept": len(entries) - fetched,
    }
    write_json_atomic(done_marker, summary)
    log(f"paper logs: {len(entries)} files verified ({fetched} downloaded, {len(entries) - fetched} kept)")
    return summary


# --------------------------------------------------------------------------------------------- parsing


def parse_size(label: str) -> float:
    """``"85M"`` -> 85e6, ``"3.4b"`` -> 3.4e9 (case-insensitive unit)."""
    match = re.fullmatch(r"(\d+(?:\.\d+)?)([MmBb])", label)
    if not match:
        raise ValueError(f"size label {label!r} is not <number>M or <number>B")
    return float(match.group(1)) * (1e6 if match.group(2).upper() == "M" else 1e9)


def normalize_size(label: str) -> str:
    """Canonical tag: upper-case unit (``"3.4b"`` -> ``"3.4B"``, ``"157m"`` -> ``"157M"``)."""
    return label[:-1] + label[-1].upper()


def size_params(label: str) -> tuple[float, bool]:
    """(N, exact): N from SIZE_MAP when the tag is there, else the nominal value of the label."""
    tag = normalize_size(label)
    if tag in SIZE_MAP:
        return float(SIZE_MAP[tag]), True
    return parse_size(tag), False


def folder_label(folder: str) -> str:
    """``"85M_flops"`` -> ``"85M"`` (``"280M"`` without the suffix is accepted)."""
    match = _FOLDER_RE.match(folder)
    if not match:
        raise ValueError(f"folder {folder!r} is not <size>_flops")
    return normalize_size(match.group("num") + match.group("unit"))


def file_size_label(run: str) -> str | None:
    """Size label in a run name: ``gpt_85M_...`` -> ``"85M"``, ``gpt_3.4b_...`` -> ``"3.4B"``; else None."""
    match = _FILE_LABEL_RE.match(run)
    return normalize_size(match.group("num") + match.group("unit")) if match else None


def run_name(file_name: str) -> str:
    """``run-gpt_85M_1024l_1e19flops_all0.1ep-tag-...csv`` -> ``gpt_85M_1024l_1e19flops_all0.1ep``.

    The TensorBoard-directory prefix ``tensorboard_``, a leading ``dep-`` and a trailing ``.sh`` go.
    """
    match = _RUN_RE.match(file_name)
    if not match:
        raise ValueError(f"file name {file_name!r} is not run-<run>-tag-<tag>.csv")
    run = match.group("run")
    return run.removesuffix(".sh")


def budget_flops(run: str) -> float | None:
    """IsoFLOP budget in a run name (``_1e19flops``, or a bare ``_4e20``); None when the name has none."""
    match = _BUDGET_RE.search(run)
    return float(match.group("c")) if match else None


def epochs(run: str) -> float | None:
    """Epochs of the run over UniMeta (``all0.25ep`` -> 0.25); None when absent."""
    match = _EPOCHS_RE.search(run)
    return float(match.group("ep")) if match else None


def _names_ppl(file_name: str) -> bool:
    """The TensorBoard tag says perplexity (``... validation ppl vs ...``)."""
    return " ppl " in file_name


def read_tb_csv(path: str | Path) -> tuple[list[float], list[float]]:
    """(steps, values) of a TensorBoard CSV export; raises ValueError naming the file if malformed.

    Requires the header ``Wall time,Step,Value``, three finite numbers a row, at least one row and
    strictly increasing steps.
    """
    path = Path(path)
    steps: list[float] = []
    values: list[float] = []
    try:
        with open(path, encoding="utf-8", newline="") as handle:
            rows = list(csv.reader(handle))
    except (UnicodeDecodeError, csv.Error) as err:
        raise ValueError(f"{path}: unreadable CSV: {err}") from err
    if not rows or rows[0] != CSV_HEADER:
        raise ValueError(f"{path}: header must be {','.join(CSV_HEADER)}, got {rows[0] if rows else []}")
    for number, row in enumerate(rows[1:], start=2):
        if len(row) != 3:
            raise ValueError(f"{path}:{number}: expected 3 fields, got {len(row)}")
        try:
            _, step, value = (float(x) for x in row)
        except ValueError as err:
            raise ValueError(f"{path}:{number}: non-numeric field in {row}") from err
        if not (math.isfinite(step) and math.isfinite(value)):
            raise ValueError(f"{path}:{number}: non-finite value in {row}")
        if steps and step <= steps[-1]:
            raise ValueError(f"{path}:{number}: Step {step} does not increase (previous {steps[-1]})")
        steps.append(step)
        values.append(value)
    if not steps:
        raise ValueError(f"{path}: no data rows")
    return steps, values


def to_loss(path: Path, values: list[float]) -> tuple[list[float], bool]:
    """(losses, is_ppl): perplexity (named ``ppl``, or every value above ln 128) becomes ln(ppl)."""
    is_ppl = _names_ppl(path.name) or min(values) > LN_VOCAB
    if not is_ppl:
        return values, False
    if min(values) < 1.0:
        raise ValueError(f"{path}: perplexity below 1 ({min(values)})")
    return [math.log(v) for v in values], True


def _csv_files(root: Path) -> list[Path]:
    """All CSV files under ``root``, sorted by their POSIX path (so the listing is reproducible)."""
    if not root.is_dir():
        raise FileNotFoundError(f"{root}: not a directory (fetch the paper logs first)")
    return sorted((p for p in root.rglob("*.csv") if p.is_file()), key=lambda p: p.as_posix())


def _logs_dir(logs_root: str | Path) -> Path:
    """Accept the fetch root, the authors' repository root or ``data/training_logs`` itself."""
    root = Path(logs_root)
    for candidate in (root / LOGS_SUBDIR, root / "training_logs", root):
        if (candidate / "gpt_valid").is_dir() or (candidate / "mask_ratio_data").is_dir():
            return candidate
    raise FileNotFoundError(f"{root}: no {LOGS_SUBDIR}/ (fetch the paper logs first)")


def _content_keys(files: Iterable[Path]) -> dict[Path, str]:
    """sha256 of each file's bytes (to find byte-identical copies)."""
    return {p: hashlib.sha256(p.read_bytes()).hexdigest() for p in files}


def _duplicates(files: list[Path], rel: Callable[[Path], str]) -> dict[Path, str | None]:
    """For each file, the relative path of the first (sorted) byte-identical file before it, else None."""
    first: dict[str, str] = {}
    out: dict[Path, str | None] = {}
    for path, key in _content_keys(files).items():
        out[path] = first.get(key)
        first.setdefault(key, rel(path))
    return out


# --------------------------------------------------------------------------------------------- approach 3

_POINT_SCHEMA = {
    "objective": pl.String, "file": pl.String, "run": pl.String, "folder_label": pl.String,
    "file_label": pl.String, "n_params": pl.Float64, "n_params_exact": pl.Boolean,
    "n_params_file": pl.Float64, "n_params_file_exact": pl.Boolean, "size_mismatch": pl.Boolean,
    "duplicate_of": pl.String, "budget_flops": pl.Float64, "epochs": pl.Float64, "step": pl.Float64,
    "flops": pl.Float64, "num_tokens": pl.Float64, "value": pl.Float64, "is_ppl": pl.Boolean,
    "loss": pl.Float64, "point": pl.Int64,
}  # fmt: skip


def _approach3_file(path: Path, logs: Path, objective: str, duplicate_of: str | None) -> pl.DataFrame:
    """All points of one approach-3 CSV as a table (see :func:`approach3_points`)."""
    rel = path.relative_to(logs).as_posix()
    run = run_name(path.name)
    folder = folder_label(path.parent.name)
    n_params, exact = size_params(folder)
    label = file_size_label(run)
    n_file, file_exact = size_params(label) if label else (None, None)
    steps, values = read_tb_csv(path)
    losses, is_ppl = to_loss(path, values)
    n = len(steps)
    flops = [s * 1e9 for s in steps]
    columns = {
        "objective": [objective] * n, "file": [rel] * n, "run": [run] * n, "folder_label": [folder] * n,
        "file_label": [label] * n, "n_params": [n_params] * n, "n_params_exact": [exact] * n,
        "n_params_file": [n_file] * n, "n_params_file_exact": [file_exact] * n,
        "size_mismatch": [label is not None and label != folder] * n, "duplicate_of": [duplicate_of] * n,
        "budget_flops": [budget_flops(run)] * n, "epochs": [epochs(run)] * n, "step": steps,
        "flops": flops, "num_tokens": [f / (6.0 * n_params) for f in flops], "value": values,
        "is_ppl": [is_ppl] * n, "loss": losses, "point": list(range(n)),
    }  # fmt: skip
    return pl.DataFrame(columns, schema=_POINT_SCHEMA)


def approach3_points(logs_root: str | Path) -> pl.DataFrame:
    """Every logged point of every approach-3 CSV (``gpt_valid`` -> clm, ``mlm_valid`` -> mlm).

    Columns: objective, file (relative to ``data/training_logs``), run, folder_label, file_label (None if
    the name has none), n_params (from the FOLDER via SIZE_MAP; nominal if the tag is not there, then
    n_params_exact is False), n_params_file (from the file label, same fallback), size_mismatch (labels
    differ), duplicate_of (first byte-identical file, else None), budget_flops, epochs, step (GFLOPs as
    logged), flops (= step * 1e9), num_tokens (= flops / (6 n_params)), value (as logged), is_ppl, loss
    (nats/token; ln(value) when is_ppl), point (0-based index within the file).
    """
    logs = _logs_dir(logs_root)
    frames: list[pl.DataFrame] = []
    for prefix, objective in (("gpt_valid", "clm"), ("mlm_valid", "mlm")):
        files = _csv_files(logs / prefix / "approach3_flops")
        dups = _duplicates(files, lambda p: p.relative_to(logs).as_posix())
        frames.extend(_approach3_file(p, logs, objective, dups[p]) for p in files)
    return pl.concat(frames, how="vertical")


def final_losses(points: pl.DataFrame, last_k: int = 5) -> pl.DataFrame:
    """One row per FILE (run names repeat across copies): loss = mean of the last ``last_k`` losses.

    flops and num_tokens are those of the last logged point; n_points counts the file's points.  Filter
    on ``duplicate_of.is_null()`` to keep each run once.
    """
    if last_k < 1:
        raise ValueError(f"last_k must be >= 1, got {last_k}")
    keys = ["objective", "file", "run", "folder_label", "file_label", "n_params", "n_params_file",
            "size_mismatch", "duplicate_of", "budget_flops", "epochs"]  # fmt: skip
    return (
        points.sort("objective", "file", "point")
        .group_by(keys, maintain_order=True)
        .agg(
            pl.col("flops").last(),
            pl.col("num_tokens").last(),
            pl.col("loss").tail(last_k).mean(),
            pl.len().alias("n_points"),
        )
        .with_columns(pl.col("n_points").cast(pl.Int64))
    )


def nearest_tag(n_params: float, tolerance: float = LOGGED_N_TOLERANCE) -> str | None:
    """The SIZE_MAP tag within ``tolerance`` (relative) of ``n_params``, else None."""
    tag, n = min(SIZE_MAP.items(), key=lambda kv: abs(math.log(kv[1] / n_params)))
    return tag if abs(n / n_params - 1.0) <= tolerance else None


def _batch_tokens(run: str, n_params: float) -> int:
    """Tokens per iteration: 256k for ``bsz250k``/``bsz256`` runs, 1M from 1B parameters, else 512k."""
    if re.search(r"bsz250k|bsz256(?!\d)", run):
        return 262_144
    return 1_048_576 if n_params >= 1e9 else 524_288


def size_mismatches(points: pl.DataFrame) -> pl.DataFrame:
    """Files whose size labels disagree, or whose logged compute contradicts the folder; one row each.

    n_params_logged = first Step * 1e9 / (6 * 300 * batch tokens) (the first point is at iteration 300;
    batch from the name and size, see :func:`_batch_tokens`), logged_tag the SIZE_MAP tag within 2 % of it
    (None if none).  folder_confirmed / file_confirmed: n_params / n_params_file within 2 % of
    n_params_logged.  verdict: "folder", "file" or "neither" (which label the logged compute supports,
    folder first).  ``trusted`` is what the tables use: always "folder", as in the authors' notebook (see
    the module docstring for the evidence and the exceptions).
    """
    firsts = (
        points.sort("objective", "file", "point")
        .group_by("objective", "file", maintain_order=True)
        .agg(pl.all().first())
    )
    logged = [
        step * 1e9 / (6.0 * FIRST_LOG_ITERATION * _batch_tokens(run, n))
        for step, run, n in zip(firsts["step"], firsts["run"], firsts["n_params"], strict=True)
    ]
    near = pl.lit(LOGGED_N_TOLERANCE)
    table = (
        firsts.with_columns(
            pl.Series("n_params_logged", logged, dtype=pl.Float64),
            pl.Series("logged_tag", [nearest_tag(x) for x in logged], dtype=pl.String),
        )
        .with_columns(
            ((pl.col("n_params") / pl.col("n_params_logged") - 1).abs() <= near).alias("folder_confirmed"),
            ((pl.col("n_params_file") / pl.col("n_params_logged") - 1).abs() <= near)
            .fill_null(False)
            .alias("file_confirmed"),
        )
        .with_columns(
            pl.when(pl.col("folder_confirmed"))
            .then(pl.lit("folder"))
            .when(pl.col("file_confirmed"))
            .then(pl.lit("file"))
            .otherwise(pl.lit("neither"))
            .alias("verdict"),
            pl.lit("folder").alias("trusted"),
        )
    )
    return table.filter(pl.col("size_mismatch") | ~pl.col("folder_confirmed")).select(
        "objective", "file", "run", "folder_label", "file_label", "n_params", "n_params_file",
        "n_params_logged", "logged_tag", "size_mismatch", "folder_confirmed", "file_confirmed", "verdict",
        "duplicate_of", "budget_flops", "trusted",
    )  # fmt: skip


# --------------------------------------------------------------------------------------------- other logs


def mask_ratio_curves(logs_root: str | Path) -> pl.DataFrame:
    """MLM mask-ratio ablation: size ("85M"/"154M"), mask_ratio, iteration (= the logged Step), loss, file."""
    logs = _logs_dir(logs_root)
    frames = []
    for path in _csv_files(logs / "mask_ratio_data"):
        match = _MASK_RE.match(path.name)
        if not match:
            raise ValueError(f"{path}: mask-ratio file name is not mask_<ratio>.csv")
        steps, values = read_tb_csv(path)
        n = len(steps)
        frames.append(
            pl.DataFrame(
                {
                    "size": [normalize_size(path.parent.name)] * n,
                    "mask_ratio": [float(match.group("ratio"))] * n,
                    "iteration": [int(s) for s in steps],
                    "loss": values,
                    "file": [path.relative_to(logs).as_posix()] * n,
                    "point": list(range(n)),
                }
            )
        )
    return pl.concat(frames, how="vertical")


def _metric(file_name: str) -> str:
    """``valid_loss`` or ``train_loss`` from the TensorBoard tag in a file name."""
    if "training_lm loss" in file_name:
        return "train_loss"
    if "validation" in file_name:
        return "valid_loss"
    raise ValueError(f"{file_name}: cannot tell training from validation loss")


def _x_unit(file_name: str) -> str:
    """What ``Step`` counts, from the tag (``... vs tokens``, ``vs samples``, ``vs gigaflos``)."""
    for marker, unit in ((" vs tokens", "tokens"), (" vs samples", "samples"), (" vs gigaflos", "gigaflops")):
        if marker in file_name:
            return unit
    raise ValueError(f"{file_name}: cannot tell what Step counts")


def _transfer_meta(path: Path, evaluated: str, kind: str) -> dict[str, Any]:
    """Size, budgets and source of one transfer_valid file (see :func:`transfer_curves`)."""
    name = path.name
    tokens_match = _TOKENS_NAME_RE.match(name)
    if tokens_match:  # mlm/tokens/<size>_<budget>[_clm_pretrain_<source>].csv: validation vs tokens
        sc = tokens_match.group("sc")
        return {
            "run": name.removesuffix(".csv"), "size": tokens_match.group("size"),
            "budget_flops": float(tokens_match.group("c")), "pretrained": sc is not None,
            "source_objective": "clm" if sc else None, "source_budget_flops": float(sc) if sc else None,
            "metric": "valid_loss", "x_unit": "tokens",
        }  # fmt: skip
    run = run_name(name)
    meta = {"run": run, "metric": _metric(name), "x_unit": _x_unit(name)}
    transfer = _TRANSFER_RE.match(run)
    if transfer:
        if OBJECTIVES[transfer.group("obj")] != evaluated:
            raise ValueError(f"{path}: run objective disagrees with its folder")
        return meta | {
            "size": normalize_size(transfer.group("size")),
            "budget_flops": float(transfer.group("c")), "pretrained": True,
            "source_objective": OBJECTIVES[transfer.group("src")],
            "source_budget_flops": float(transfer.group("sc")),
        }  # fmt: skip
    label = file_size_label(run)
    if label is None:
        raise ValueError(f"{path}: no size label in run {run!r}")
    return meta | {
        "size": label, "budget_flops": budget_flops(run), "pretrained": False,
        "source_objective": None, "source_budget_flops": None,
    }  # fmt: skip


_TRANSFER_SCHEMA = {
    "objective": pl.String, "kind": pl.String, "file": pl.String, "run": pl.String, "size": pl.String,
    "budget_flops": pl.Float64, "pretrained": pl.Boolean, "source_objective": pl.String,
    "source_budget_flops": pl.Float64, "metric": pl.String, "x_unit": pl.String, "step": pl.Float64,
    "value": pl.Float64, "point": pl.Int64,
}  # fmt: skip


def transfer_curves(logs_root: str | Path) -> pl.DataFrame:
    """CLM<->MLM transfer runs and their scratch baselines, tidy.

    Columns: objective (of the evaluated model: gpt -> clm, mlm -> mlm), kind (``ft`` = trained from a
    checkpoint of the other objective, ``scratch`` = baseline, ``tokens`` = ft and scratch curves again
    against tokens), file, run, size (label as in the name), budget_flops (of this phase), pretrained
    (the name says it started from a checkpoint), source_objective and source_budget_flops
    (``1e19 <- 5.5e19``), metric (valid_loss / train_loss), x_unit (gigaflops / tokens: what step counts),
    step, value, point.
    """
    logs = _logs_dir(logs_root)
    frames = []
    for evaluated_dir, evaluated in (("gpt", "clm"), ("mlm", "mlm")):
        for kind in ("ft", "scratch", "tokens"):
            for path in _csv_files(logs / "transfer_valid" / evaluated_dir / kind):
                meta = _transfer_meta(path, evaluated, kind)
                steps, values = read_tb_csv(path)
                n = len(steps)
                row = {"objective": evaluated, "kind": kind, "file": path.relative_to(logs).as_posix()}
                columns = {k: [v] * n for k, v in (row | meta).items()}
                columns |= {"step": steps, "value": values, "point": list(range(n))}
                frames.append(pl.DataFrame(columns, schema=_TRANSFER_SCHEMA))
    return pl.concat(frames, how="vertical")


def _ur50_dataset(run: str, dir_dataset: str) -> str:
    """``ur50`` or ``unimeta``: from the run name when it names one, else from the folder."""
    if re.search(r"(?:^|_)ur50(?:_|$)", run):
        return "ur50"
    if re.search(r"(?:^|_)all1ep(?:_|$)", run):
        return "unimeta"
    return "ur50" if dir_dataset == "ur50" else "unimeta"


_UR50_SCHEMA = {
    "dataset": pl.String, "dir": pl.String, "variant": pl.String, "objective": pl.String,
    "size": pl.String, "split": pl.String, "file": pl.String, "run": pl.String,
    "x_unit": pl.String, "step": pl.Float64, "tokens": pl.Float64, "value": pl.Float64,
    "is_ppl": pl.Boolean, "loss": pl.Float64, "point": pl.Int64,
}  # fmt: skip


def _ur50_file(path: Path, logs: Path) -> pl.DataFrame:
    """One UR50-vs-UniMeta CSV as a table (see :func:`ur50_curves`)."""
    match = _UR50_DIR_RE.match(path.parent.name)
    if not match:
        raise ValueError(f"{path}: folder is not <ur50|all1ep>_<clm|mlm>_<size>[_<variant>]")
    run = run_name(path.name)
    unit = _x_unit(path.name)
    steps, values = read_tb_csv(path)
    losses, is_ppl = to_loss(path, values)
    per_token = SAMPLE_TOKENS if unit == "samples" else 1
    n = len(steps)
    variant = (match.group("variant") or "").replace("副本", "copy") or None
    constant = {
        "dataset": _ur50_dataset(run, match.group("ds")), "dir": path.parent.name, "variant": variant,
        "objective": match.group("obj"), "size": normalize_size(match.group("size")),
        "split": "training" if _metric(path.name) == "train_loss" else "valid",
        "file": path.relative_to(logs).as_posix(), "run": run, "x_unit": unit, "is_ppl": is_ppl,
    }  # fmt: skip
    columns = {k: [v] * n for k, v in constant.items()}
    columns |= {"step": steps, "tokens": [s * per_token for s in steps], "value": values, "loss": losses,
                "point": list(range(n))}  # fmt: skip
    return pl.DataFrame(columns, schema=_UR50_SCHEMA)


def ur50_curves(logs_root: str | Path) -> pl.DataFrame:
    """UniRef50-only vs UniMeta learning curves (Figure 1), tidy.

    Columns: dataset (``ur50`` / ``unimeta``), dir (folder name as published), variant (folder suffix:
    ``epoch_shuffle``, ``full_shuffle``, ``epoch_shuffle_copy`` for ``_副本``; None for the plain
    folder), objective (clm / mlm), size (folder size label: 150M, 1B, 3B), split (valid / training, from
    the file's tag), file, run, x_unit (tokens / samples), step (as logged), tokens (samples x 1024 for
    the one ``vs samples`` file), value (as logged), is_ppl, loss (ln(value) when is_ppl), point.
    """
    logs = _logs_dir(logs_root)
    frames = [
        _ur50_file(path, logs)
        for top in ("ur50_all1ep_training_loss", "ur50_all1ep_valid_loss")
        for path in _csv_files(logs / top)
    ]
    return pl.concat(frames, how="vertical")
