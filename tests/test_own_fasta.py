"""Your own FASTA in a few lines of config (docs/own-data.md): the `fasta` source kind (plmscale.sources), and
the real workflow from a gzipped FASTA this test writes to the report, merged over the embedded defaults."""

import gzip
import hashlib
import json
import random
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "workflow"))

from plmscale.cli import main  # noqa: E402
from plmscale.fasta import read_fasta  # noqa: E402
from plmscale.sources import check_local_sources, copy_local_fasta  # noqa: E402

AMINO_ACIDS = "ACDEFGHIKLMNPQRSTVWY"
# The user's whole config: their data, plus a grid small enough for a test (everything else: the defaults).
USER_CONFIG = """\
sources: {mine: {kind: fasta, path: mine.fasta.gz}}
grid:
  objectives: [clm]
  shapes: {a: {layers: 1, width: 16, heads: 2}, b: {layers: 1, width: 32, heads: 2},
           c: {layers: 2, width: 32, heads: 2}}
  budgets: [{flops: 3.0e+8, shapes: [a, b, c]}, {flops: 1.0e+9, shapes: [a, b, c]}]
train: {context: 32, batch_rows: 8, min_steps: 5, eval_points: 3, eval_max_tokens: 1024}
evaluate: {max_tokens: 2048}
fit: {n_bootstrap: 20}
downstream: {enabled: false}
"""


def random_proteins(n: int, seed: int) -> list[tuple[str, str]]:
    """``n`` random proteins, about half of them shorter than validate.min_length (30) would keep."""
    rng = random.Random(seed)
    out = []
    for i in range(n):
        length = rng.choice([rng.randint(10, 60), rng.randint(60, 400)])
        out.append((f"mine_{i:03d}", "".join(rng.choice(AMINO_ACIDS) for _ in range(length))))
    return out


def fasta_text(records: list[tuple[str, str]]) -> str:
    return "".join(f">{name} random protein\n{seq}\n" for name, seq in records)


# --- the fasta kind --------------------------------------------------------------------------------------


@pytest.mark.parametrize("gzipped", [True, False])
def test_local_fasta_is_copied_verbatim_with_its_sha256_recorded(tmp_path, gzipped):
    records = random_proteins(20, seed=1)
    body = gzip.compress(fasta_text(records).encode()) if gzipped else fasta_text(records).encode()
    src = tmp_path / "in.fa"  # the name says nothing: gzip is told by its magic bytes
    src.write_bytes(body)
    info = copy_local_fasta(src, tmp_path / "out.fasta", tmp_path / "out.json", key="sources.mine")
    assert (tmp_path / "out.fasta").read_bytes() == body
    expected = {
        "source": "sources.mine",
        "path": str(src.resolve()),
        "bytes": len(body),
        "sha256": hashlib.sha256(body).hexdigest(),
        "sha256_checked": False,
        "gzip": gzipped,
    }
    assert info == expected and json.loads((tmp_path / "out.json").read_text()) == expected
    assert [(r.id, r.sequence) for r in read_fasta(tmp_path / "out.fasta")] == records
    given = copy_local_fasta(
        src, tmp_path / "b.fasta", tmp_path / "b.json", key="k", sha256=expected["sha256"]
    )
    assert given["sha256_checked"] is True


def test_a_wrong_checksum_fails_and_leaves_no_output(tmp_path):
    src = tmp_path / "in.fasta"
    src.write_text(">a\nMKV\n")
    with pytest.raises(
        ValueError, match=r"sources.mine: checksum mismatch for .*in.fasta: sha256 [0-9a-f]{64}"
    ):
        copy_local_fasta(
            src, tmp_path / "out.fasta", tmp_path / "out.json", key="sources.mine", sha256="0" * 64
        )
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.fasta"]


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"id\tsequence\nA\tMKV\n", r"sources.x: .*t.fa is not FASTA: its content starts with b'i'"),
        (gzip.compress(b"\n\nMKV\n"), r"is not FASTA: its content starts with b'M'"),
        (b"\x1f\x8bnot really gzip", r"starts like gzip but does not decompress"),
    ],
)
def test_a_file_that_is_not_fasta_is_refused(tmp_path, body, message):
    (tmp_path / "t.fa").write_bytes(body)
    with pytest.raises(ValueError, match=message):
        copy_local_fasta(tmp_path / "t.fa", tmp_path / "o.fasta", tmp_path / "o.json", key="sources.x")
    assert not (tmp_path / "o.fasta").exists()


def test_a_missing_file_is_named_with_its_config_key_and_the_working_directory(tmp_path):
    (tmp_path / "here.fa").write_text(">a\nMKV\n")
    sources = {
        "ok": {"kind": "fasta", "path": "here.fa"},
        "gone": {"kind": "fasta", "path": "data/gone.fa.gz"},
        "abs": {"kind": "fasta", "path": str(tmp_path / "nope.fa")},
        "sample": {"kind": "embedded", "name": "pyhmmer_proteome"},
    }
    with pytest.raises(ValueError) as err:
        check_local_sources(sources, tmp_path)
    assert str(err.value).splitlines()[1:] == [
        "  sources.gone.path: 'data/gone.fa.gz' does not exist (a relative path resolves against the "
        f"working directory {tmp_path.resolve()}); give the FASTA file's path",
        f"  sources.abs.path: '{tmp_path / 'nope.fa'}' does not exist; give the FASTA file's path",
    ]


# --- the real workflow on it -----------------------------------------------------------------------------


def snakemake(workdir: Path, *args: str, timeout: int = 600) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), "-d", str(workdir),
           "--configfile", str(workdir / "mine.yaml"), *args]  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, (
        f"snakemake {' '.join(args)} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}"
    )
    return proc


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("own")
    records = random_proteins(300, seed=11)
    (workdir / "mine.fasta.gz").write_bytes(gzip.compress(fasta_text(records).encode(), mtime=0))
    (workdir / "mine.yaml").write_text(USER_CONFIG)
    snakemake(workdir, "--cores", "2")
    snakemake(workdir, "--report", "report.html")
    return workdir, records


@pytest.mark.e2e
def test_the_study_trained_on_the_users_sequences_only(study):
    workdir, records = study
    kept = {name for name, seq in records if len(seq) >= 30}  # validate.min_length of the defaults
    assert 100 < len(kept) < 300
    assert sorted(p.name for p in (workdir / "results/validate").glob("*.fasta")) == ["mine.fasta"]
    assert {r.id for r in read_fasta(workdir / "results/validate/mine.fasta")} == kept
    split_ids = [
        r.id
        for split in ("train", "valid", "test")
        for r in read_fasta(workdir / f"results/split/{split}/mine.fasta")
    ]
    assert sorted(split_ids) == sorted(f"mine:{name}" for name in kept)  # each kept protein in one split
    manifest = json.loads((workdir / "resources/fasta/mine.manifest.json").read_text())
    body = (workdir / "mine.fasta.gz").read_bytes()
    assert (manifest["sha256"], manifest["gzip"], manifest["sha256_checked"]) == (
        hashlib.sha256(body).hexdigest(),
        True,
        False,
    )
    assert manifest["sha256"] in (workdir / "logs/sources/fasta_mine.log").read_text()
    done = [json.loads(p.read_text()) for p in sorted((workdir / "results/runs").glob("*/*/*/done.json"))]
    assert len(done) == 6 and {run["objective"] for run in done} == {"clm"}
    assert all([s["name"] for s in run["sources"]] == ["mine"] for run in done)
    assert (workdir / "results/fits/clm.json").is_file() and not (workdir / "results/fits/mlm.json").exists()
    report = (workdir / "report.html").read_text(errors="replace")
    assert len(report) > 10_000 and "clm_isoflop" in report


@pytest.mark.e2e
def test_grid_epochs_match_what_the_runs_trained(study, capsys):
    workdir, _ = study
    assert main(["grid", "--configfile", str(workdir / "mine.yaml"), "-d", str(workdir), "--json"]) == 0
    grid = json.loads(capsys.readouterr().out)
    assert grid["sources"]["mine"]["how"] == "token manifests"
    for row in grid["rows"]:
        done = json.loads((workdir / "results/runs" / row["run_id"] / "done.json").read_text())
        assert row["trained_tokens"] == done["num_tokens"] and row["num_steps"] == done["num_steps"]
        assert row["epochs"]["mine"] == pytest.approx(done["sources"][0]["epochs"], rel=1e-2)


@pytest.mark.e2e
def test_editing_the_users_file_reruns_its_copy_and_everything_after(study):
    workdir, records = study
    (workdir / "mine.fasta.gz").write_bytes(gzip.compress(fasta_text(records[:-1]).encode(), mtime=0))
    proc = snakemake(workdir, "-n", "--quiet", "rules")
    planned = proc.stdout
    assert "fasta_source" in planned and "validate" in planned and "train" in planned
