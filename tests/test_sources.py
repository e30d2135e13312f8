"""Derived sources: an MMseqs2 database archive served over real HTTP and exported with the real mmseqs
binary (all / representatives / members), and one FASTA minus another (UR90/50)."""

import copy
import functools
import hashlib
import http.server
import random
import subprocess
import tarfile
import threading
from pathlib import Path

import pytest
from plmscale import mmseqs_sources
from plmscale.config import check_data_config, read_yaml
from plmscale.download import fetch
from plmscale.fasta import read_fasta, write_fasta
from plmscale.mmseqs import find_mmseqs
from plmscale.mmseqs_sources import (
    check_source_refs,
    extract_databases,
    mmseqs_db_source,
    subtract_fasta,
    write_member_keys,
)

ROOT = Path(__file__).resolve().parents[1]
AMINO = "ACDEFGHIKLMNPQRSTVWY"


def _families(seed: int = 7) -> dict[str, str]:
    """4 unrelated random proteins, each with 3 variants (0, 1, 2 substitutions): 12 proteins."""
    rng = random.Random(seed)
    out = {}
    for fam in range(4):
        base = "".join(rng.choice(AMINO) for _ in range(150))
        for var in range(3):
            seq = list(base)
            for _ in range(var):
                seq[rng.randrange(len(seq))] = rng.choice(AMINO)
            out[f"fam{fam}_v{var}"] = "".join(seq)
    return out


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """A tar.gz of a sequence DB and its linclust clustering, served from a real http.server."""
    binary = find_mmseqs("auto").path
    work = tmp_path_factory.mktemp("mmseqs_db")
    proteins = _families()
    write_fasta(list(proteins.items()), work / "in.fasta")
    build = work / "build"
    build.mkdir()

    def mm(*args):
        subprocess.run([binary, *args, "-v", "1"], check=True, capture_output=True)

    mm("createdb", str(work / "in.fasta"), str(build / "toy_db_seq"))
    mm("linclust", str(build / "toy_db_seq"), str(build / "toy_db"), str(work / "tmp"), "--min-seq-id", "0.9")
    mm("createtsv", str(build / "toy_db_seq"), str(build / "toy_db_seq"), str(build / "toy_db"),
       str(work / "clusters.tsv"))  # fmt: skip
    pairs = [line.split("\t") for line in (work / "clusters.tsv").read_text().splitlines()]
    serve = work / "www"
    serve.mkdir()
    archive = serve / "toy_db.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        for path in sorted(build.iterdir()):
            tar.add(path, arcname=f"toy/{path.name}")  # in a folder, as release archives are
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(serve))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield {
            "url": f"http://127.0.0.1:{server.server_address[1]}/toy_db.tar.gz",
            "sha256": hashlib.sha256(archive.read_bytes()).hexdigest(),
            "proteins": proteins,
            "pairs": [(rep, member) for rep, member in pairs],
            "binary": binary,
        }
    finally:
        server.shutdown()
        thread.join()


@pytest.fixture(scope="module")
def archive(served, tmp_path_factory):
    out = tmp_path_factory.mktemp("dl") / "toy_db.tar.gz"
    manifest = fetch(served["url"], out, sha256=served["sha256"], log=lambda _: None)
    assert manifest.sha256 == served["sha256"]
    return out


def test_clustering_is_the_hand_worked_one(served):
    # each family of near-identical variants is one cluster (linclust at 90% identity): 4 clusters of 3
    clusters = {}
    for rep, member in served["pairs"]:
        clusters.setdefault(rep, set()).add(member)
    assert sorted(len(m) for m in clusters.values()) == [3, 3, 3, 3]
    for rep, members in clusters.items():
        assert {m.split("_")[0] for m in members} == {rep.split("_")[0]}


@pytest.mark.parametrize("subset", ["all", "representatives", "members"])
def test_mmseqs_db_subsets(served, archive, tmp_path, subset):
    reps = {rep for rep, _ in served["pairs"]}
    everything = set(served["proteins"])
    expected = {"all": everything, "representatives": reps, "members": everything - reps}[subset]
    assert len(expected) == {"all": 12, "representatives": 4, "members": 8}[subset]
    out, report = tmp_path / f"{subset}.fasta", tmp_path / f"{subset}.json"
    result = mmseqs_db_source(
        archive, out, report, binary=served["binary"], db="toy_db_seq", subset=subset,
        clusters=None if subset == "all" else "toy_db", scratch=tmp_path, log=lambda _: None,
    )  # fmt: skip
    records = {r.id: r.sequence for r in read_fasta(out)}
    assert records == {name: served["proteins"][name] for name in expected}
    assert result["counts"]["records"] == len(expected)
    assert result["counts"]["db_entries"] == 12
    modules = [cmd[1] for cmd in result["commands"]]
    assert modules == {"all": ["convert2fasta"], "representatives": ["createsubdb", "convert2fasta"],
                       "members": ["createsubdb", "convert2fasta"]}[subset]  # fmt: skip
    if subset == "members":
        assert result["counts"]["member_keys"] == 8
        assert "--id-mode" in result["commands"][0]
    if subset != "all":  # the clustering's data files are not extracted: its index gives the keys
        assert "toy_db.index" in result["extracted"] and "toy_db.0" not in result["extracted"]
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith("mmseqs_")] == []  # scratch removed


def test_extract_names_a_missing_database(archive, tmp_path):
    with pytest.raises(FileNotFoundError, match="nope_db"):
        extract_databases(archive, ["nope_db"], tmp_path / "x", log=lambda _: None)


def test_member_keys_streamed_merge(tmp_path):
    db, clu, out = tmp_path / "db.index", tmp_path / "clu.index", tmp_path / "keys.txt"
    db.write_text("".join(f"{k}\t0\t1\n" for k in [0, 1, 2, 5, 9, 10, 11]))
    clu.write_text("".join(f"{k}\t0\t1\n" for k in [1, 5, 11]))
    assert write_member_keys(db, clu, out) == 4
    assert out.read_text().split() == ["0", "2", "9", "10"]
    clu.write_text("5\t0\t1\n1\t0\t1\n")
    with pytest.raises(ValueError, match="not sorted"):
        write_member_keys(db, clu, out)


def _fasta(path: Path, records: list[tuple[str, str]]) -> Path:
    path.write_text("".join(f">{h}\n{s}\n" for h, s in records))
    return path


@pytest.mark.parametrize("chunk", [1 << 20, 2])
def test_subtract_hand_worked(tmp_path, monkeypatch, chunk):
    monkeypatch.setattr(mmseqs_sources, "_KEY_CHUNK", chunk)  # 2: several Parquet chunks and batches
    uniref90 = _fasta(tmp_path / "ur90.fasta", [
        ("UniRef90_P1 n=3 first", "MKA"), ("UniRef90_Q2 n=1", "MKB"), ("UniRef90_P3", "MKC"),
        ("UniRef90_A0A4 n=2 x", "MKD"), ("UniRef90_Q5", "MKE"), ("UniRef90_P6", "MKF"),
    ])  # fmt: skip
    uniref50 = _fasta(tmp_path / "ur50.fasta", [
        ("UniRef50_Q2 n=9", "MKB"), ("UniRef50_A0A4", "MKD"), ("UniRef50_Z9", "MKZ"), ("UniRef50_Q2", "MKB"),
    ])  # fmt: skip
    out = tmp_path / "ur90_50.fasta"
    counts = subtract_fasta(uniref90, uniref50, out, scratch=tmp_path, log=lambda _: None)
    got = [(r.id, r.description, r.sequence) for r in read_fasta(out)]
    assert got == [("UniRef90_P1", "n=3 first", "MKA"), ("UniRef90_P3", "", "MKC"),
                   ("UniRef90_Q5", "", "MKE"), ("UniRef90_P6", "", "MKF")]  # fmt: skip
    assert counts == {"from_records": 6, "minus_records": 4, "written": 4, "removed": 2}


def test_subtract_rejects_an_id_without_a_key(tmp_path):
    a = _fasta(tmp_path / "a.fasta", [("UniRef90_P1", "MK"), ("sp|P2|X", "MK")])
    b = _fasta(tmp_path / "b.fasta", [("UniRef50_P1", "MK")])
    with pytest.raises(ValueError, match="key_pattern"):
        subtract_fasta(a, b, tmp_path / "out.fasta", scratch=tmp_path, log=lambda _: None)
    assert not (tmp_path / "out.fasta").exists()


def test_paper_sources_pass_the_schema_and_the_reference_checks():
    config = read_yaml(ROOT / "config" / "paper.yaml")
    check_data_config(config)
    check_source_refs(config)
    sources = config["sources"]
    assert {n: s.get("proportion") for n, s in sources.items()} == {
        "uniref50": 0.085, "uniref90_50": 0.195, "colabfold_c": 0.195, "colabfold_m": 0.525,
    }  # fmt: skip
    assert sources["uniref90_50"]["minus"] == "uniref50"
    assert (sources["colabfold_c"]["subset"], sources["colabfold_m"]["subset"]) == (
        "representatives",
        "members",
    )


def test_source_ref_errors_name_the_key():
    base = {"a": {"kind": "url", "url": "https://x/a.fasta", "md5": "0" * 32}}
    bad = copy.deepcopy(base) | {"d": {"kind": "subtract", "from": {"url": "https://x/b"}, "minus": "zz"}}
    with pytest.raises(ValueError, match=r"sources\.d\.minus: 'zz' is not a source"):
        check_source_refs({"sources": bad})
    bad["d"] |= {"minus": "a", "key_pattern": "^(a)(b)$"}
    with pytest.raises(ValueError, match=r"sources\.d\.key_pattern: .* 2 groups"):
        check_source_refs({"sources": bad})
    loop = {"x": {"kind": "subtract", "from": {"url": "https://x/b"}, "minus": "y"},
            "y": {"kind": "subtract", "from": {"url": "https://x/c"}, "minus": "x"}}  # fmt: skip
    with pytest.raises(ValueError, match="cycle x -> y -> x"):
        check_source_refs({"sources": loop})
    mm = {
        "c": {
            "kind": "mmseqs_db",
            "url": "https://x/db.tar.gz",
            "md5": "0" * 32,
            "db": "s",
            "subset": "members",
        }
    }
    with pytest.raises(ValueError, match=r"sources\.c: subset 'members' needs 'clusters'"):
        check_source_refs({"sources": mm})
    mm["c"]["clusters"] = "k"
    mm["m"] = mm["c"] | {"md5": "1" * 32}
    with pytest.raises(ValueError, match=r"archive 'db\.tar\.gz' is also the archive of sources\.c"):
        check_source_refs({"sources": mm})
    with pytest.raises(ValueError, match=r"sources\.c: unknown key 'clusterz'"):
        check_data_config({"sources": {"c": {"kind": "mmseqs_db", "url": "https://x/y.tar.gz", "db": "s",
                                             "clusterz": "k"}}})  # fmt: skip
