"""plmscale.paper_logs against the shared exact copy of the authors' released logs.

The copy lives in ``../shared/paper-logs`` beside the clone; without it the module is skipped.
"""

from __future__ import annotations

import functools
import hashlib
import http.server
import json
import math
import shutil
import threading
from collections.abc import Iterator
from pathlib import Path

import polars as pl
import pytest
from plmscale import paper_logs as P

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED = REPO_ROOT.parent / "shared" / "paper-logs"
MANIFEST = REPO_ROOT / "config" / "paper_logs.sha256.tsv"
LOGS = SHARED / "data" / "training_logs"

pytestmark = pytest.mark.skipif(
    not LOGS.is_dir(), reason=f"shared copy of the paper logs not found at {SHARED} (needs ../shared)"
)

FILE_85M_1E18 = (
    "gpt_valid/approach3_flops/85M_flops/run-gpt_85M_1024l_1e18flops_bsz250k_all0.01ep-tag-lm-loss-"
    "validation_valid_lm loss validation vs gigaflos (without embeddings).csv"
)
COPY_DIR = "ur50_all1ep_valid_loss/ur50_mlm_3b_epoch_shuffle_副本"


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def serve() -> Iterator:
    """Start ``ThreadingHTTPServer`` on 127.0.0.1 serving a given directory; returns its base URL."""
    servers: list[http.server.ThreadingHTTPServer] = []

    def start(root: Path) -> str:
        handler = functools.partial(_QuietHandler, directory=str(root))
        server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        return f"http://127.0.0.1:{server.server_address[1]}"

    yield start
    for server in servers:
        server.shutdown()
        server.server_close()


@pytest.fixture(scope="module")
def points() -> pl.DataFrame:
    return P.approach3_points(SHARED)


# ------------------------------------------------------------------------------------------ manifest


def test_manifest_matches_shared_copy() -> None:
    entries = P.read_manifest(MANIFEST)
    assert len(entries) == 294
    assert [e.path for e in entries] == sorted(e.path for e in entries)
    on_disk = sorted(p.relative_to(SHARED).as_posix() for p in LOGS.rglob("*") if p.is_file())
    assert [e.path for e in entries] == on_disk
    for entry in entries:
        data = (SHARED / entry.path).read_bytes()
        assert len(data) == entry.bytes, entry.path
        assert hashlib.sha256(data).hexdigest() == entry.sha256, entry.path
    assert any("副本" in e.path for e in entries) and any(" " in e.path for e in entries)


def test_read_manifest_rejects_bad_rows(tmp_path: Path) -> None:
    bad = tmp_path / "m.tsv"
    bad.write_text("path\tbytes\tsha256\n../etc/passwd\t1\t" + "0" * 64 + "\n", encoding="utf-8")
    with pytest.raises(ValueError, match="must be relative"):
        P.read_manifest(bad)
    bad.write_text("path\tbytes\tsha256\ndata/training_logs/a.csv\t1\txyz\n", encoding="utf-8")
    with pytest.raises(ValueError, match="sha256"):
        P.read_manifest(bad)


def test_file_url_percent_encodes() -> None:
    url = P.file_url("http://h/base/", f"data/training_logs/{COPY_DIR}/a b(1).csv")
    assert url == (
        "http://h/base/data/training_logs/ur50_all1ep_valid_loss/"
        "ur50_mlm_3b_epoch_shuffle_%E5%89%AF%E6%9C%AC/a%20b%281%29.csv"
    )
    expected = f"https://raw.githubusercontent.com/{P.REPO}/{P.COMMIT}"
    assert expected == P.DEFAULT_BASE_URL


# ------------------------------------------------------------------------------------------ fetch


def test_fetch_logs_from_local_server(tmp_path: Path, serve) -> None:
    base = serve(SHARED)
    out = tmp_path / "out"
    messages: list[str] = []
    summary = P.fetch_logs(MANIFEST, out, base_url=base, log=messages.append)
    for entry in P.read_manifest(MANIFEST):
        assert (out / entry.path).read_bytes() == (SHARED / entry.path).read_bytes(), entry.path
    assert len([p for p in (out / "data").rglob("*") if p.is_file()]) == 294
    written = json.loads((out / "manifest.json").read_text(encoding="utf-8"))
    assert written == summary
    assert written["count"] == 294 and written["commit"] == P.COMMIT and written["base_url"] == base
    assert written["bytes"] == sum(e.bytes for e in P.read_manifest(MANIFEST))
    assert messages and "294" in messages[-1]
    assert not list(out.rglob("*.part"))
    # a second run keeps verified files and downloads nothing
    again = P.fetch_logs(MANIFEST, out, base_url=base, log=messages.append)
    assert again["fetched"] == 0 and again["kept"] == 294


def test_fetch_logs_corrupt_file_raises_naming_it(tmp_path: Path, serve) -> None:
    root = tmp_path / "server"
    shutil.copytree(SHARED / "data", root / "data")
    victim = next(e.path for e in P.read_manifest(MANIFEST) if "副本" in e.path)
    data = bytearray((root / victim).read_bytes())
    data[len(data) // 2] ^= 0x01
    (root / victim).write_bytes(bytes(data))
    out = tmp_path / "out"
    with pytest.raises(P.FetchError) as info:
        P.fetch_logs(MANIFEST, out, base_url=serve(root), log=lambda _: None)
    assert info.value.path == victim and victim in str(info.value)
    assert not (out / victim).exists()
    assert not (out / victim).with_name((out / victim).name + ".part").exists()
    assert not (out / "manifest.json").exists()


def test_fetch_logs_http_error_names_file(tmp_path: Path, serve) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    first = P.read_manifest(MANIFEST)[0].path
    with pytest.raises(P.FetchError, match="gpt_valid"):
        P.fetch_logs(MANIFEST, tmp_path / "out", base_url=serve(empty), log=lambda _: None)
    assert not (tmp_path / "out" / first).exists()
    assert not (tmp_path / "out" / "manifest.json").exists()


# ------------------------------------------------------------------------------------------ approach 3


def test_approach3_file_counts(points: pl.DataFrame) -> None:
    files = points.group_by("objective").agg(pl.col("file").n_unique()).sort("objective")
    assert files.rows() == [("clm", 124), ("mlm", 85)]
    csv_rows = sum(
        len(p.read_text(encoding="utf-8").splitlines()) - 1
        for p in LOGS.glob("*_valid/approach3_flops/*/*.csv")
    )
    assert points.height == csv_rows
    assert not points["is_ppl"].any()
    assert points["loss"].is_between(1.5, 4.5).all()


def test_hand_checked_first_point(points: pl.DataFrame) -> None:
    row = points.filter((pl.col("file") == FILE_85M_1E18) & (pl.col("point") == 0)).row(0, named=True)
    assert row["objective"] == "clm"
    assert row["run"] == "gpt_85M_1024l_1e18flops_bsz250k_all0.01ep"
    assert row["step"] == 40140254
    assert row["loss"] == 2.885530471801758
    assert row["n_params"] == 84_934_656
    assert row["budget_flops"] == 1e18 and row["epochs"] == 0.01
    assert row["flops"] == pytest.approx(40140254e9)
    assert row["num_tokens"] == pytest.approx(40140254e9 / (6 * 84934656), rel=1e-12)
    assert not row["size_mismatch"] and row["file_label"] == "85M"


@pytest.mark.parametrize(
    ("fragment", "budget", "eps"),
    [
        ("run-gpt_85M_1024l_1e19flops_all0.1ep-", 1e19, 0.1),
        ("run-mlm_280M_all0.48ep_1.5e20-", 1.5e20, 0.48),
        ("run-gpt_880M_lr3.5_1024l_all0.94ep_1e21flops-", 1e21, 0.94),
        ("run-mlm_230M_1024l_2e20flops_all0.75ep-", 2e20, 0.75),
        ("run-gpt_85M_bsz0.5M_lr5.5_1024_noreg_all0.25ep_bf16-", None, 0.25),
    ],
)
def test_budgets_and_epochs(points: pl.DataFrame, fragment: str, budget: float | None, eps: float) -> None:
    rows = points.filter(pl.col("file").str.contains(fragment, literal=True) & (pl.col("point") == 0))
    assert rows.height == 1
    assert rows["budget_flops"][0] == budget
    assert rows["epochs"][0] == eps


def test_size_labels_and_fallback() -> None:
    assert P.folder_label("85M_flops") == "85M" and P.folder_label("1.2B_flops") == "1.2B"
    assert P.file_size_label("gpt_3.4b_1024l") == "3.4B" and P.file_size_label("mlm_154M_1024l") == "154M"
    assert P.file_size_label("gpt_1b_1024") == "1B" and P.file_size_label("gpt1e19_transfer") is None
    assert P.size_params("49M") == (49e6, False)
    assert P.size_params("500M") == (500e6, False)
    assert P.size_params("680M") == (680_205_312.0, True)


def test_known_size_mismatches(points: pl.DataFrame) -> None:
    report = P.size_mismatches(points)
    pairs = set(zip(report["folder_label"], report["file_label"], strict=True))
    for pair in [("34M", "25M"), ("65M", "49M"), ("680M", "500M"), ("6M", "10M"), ("4B", "3.4B")]:
        assert pair in pairs, pair
    in_folder = pl.col("file").str.starts_with
    row = report.filter(in_folder("gpt_valid/approach3_flops/65M_flops/")).row(0, named=True)
    assert row["n_params"] == 65_728_000 and row["n_params_file"] == 49e6 and row["trusted"] == "folder"
    assert row["verdict"] == "folder"  # the logged compute gives 65.6M, the folder's N
    six = report.filter(in_folder("gpt_valid/approach3_flops/6M_flops/")).row(0, named=True)
    assert six["logged_tag"] == "13M"
    assert six["duplicate_of"].startswith("gpt_valid/approach3_flops/13M_flops/")
    assert not report.filter(pl.col("folder_label") == pl.col("file_label"))["size_mismatch"].any()


def test_duplicates_are_marked(points: pl.DataFrame) -> None:
    dups = points.filter(pl.col("duplicate_of").is_not_null())["file"].unique().to_list()
    assert len(dups) == 7
    for dup in dups:
        original = points.filter(pl.col("file") == dup)["duplicate_of"][0]
        assert (LOGS / dup).read_bytes() == (LOGS / original).read_bytes()


def test_final_losses(points: pl.DataFrame) -> None:
    final = P.final_losses(points, last_k=5)
    assert final.height == 209
    row = final.filter(pl.col("file") == FILE_85M_1E18).row(0, named=True)
    lines = (LOGS / FILE_85M_1E18).read_text(encoding="utf-8").splitlines()[1:]
    values = [float(line.split(",")[2]) for line in lines]
    assert row["loss"] == pytest.approx(sum(values[-5:]) / 5, rel=1e-12)
    assert row["n_points"] == len(values)
    assert row["flops"] == pytest.approx(float(lines[-1].split(",")[1]) * 1e9)


def test_malformed_csv_raises_naming_file(tmp_path: Path) -> None:
    folder = tmp_path / "gpt_valid" / "approach3_flops" / "85M_flops"
    folder.mkdir(parents=True)
    bad = folder / "run-gpt_85M_1024l_1e19flops_all0.1ep-tag-x.csv"
    bad.write_text("Wall time,Step,Value\n1,10,2.5\n2,abc,2.4\n", encoding="utf-8")
    (tmp_path / "mlm_valid" / "approach3_flops").mkdir(parents=True)
    with pytest.raises(ValueError, match=r"run-gpt_85M_1024l_1e19flops_all0\.1ep-tag-x\.csv"):
        P.approach3_points(tmp_path)
    bad.write_text("Step,Value\n10,2.5\n", encoding="utf-8")
    with pytest.raises(ValueError, match="header"):
        P.approach3_points(tmp_path)


def test_perplexity_is_detected_and_converted(tmp_path: Path) -> None:
    folder = tmp_path / "gpt_valid" / "approach3_flops" / "85M_flops"
    folder.mkdir(parents=True)
    (tmp_path / "mlm_valid" / "approach3_flops").mkdir(parents=True)
    (folder / "run-gpt_85M_1024l_1e19flops_all0.1ep-tag-x.csv").write_text(
        "Wall time,Step,Value\n1,10,14.0\n2,20,12.0\n", encoding="utf-8"
    )
    pts = P.approach3_points(tmp_path)
    assert pts["is_ppl"].all()
    assert pts["loss"].to_list() == pytest.approx([math.log(14.0), math.log(12.0)])


# ------------------------------------------------------------------------------------------ other logs


def test_mask_ratio_curves() -> None:
    curves = P.mask_ratio_curves(SHARED)
    assert sorted(curves["size"].unique().to_list()) == ["154M", "85M"]
    assert sorted(curves["mask_ratio"].unique().to_list()) == [0.05, 0.1, 0.15, 0.2, 0.25, 0.3, 0.4, 0.6]
    last = curves.filter((pl.col("size") == "154M") & (pl.col("mask_ratio") == 0.15)).sort("point").tail(1)
    assert last["iteration"][0] == 102043
    assert last["loss"][0] == pytest.approx(2.182, abs=5e-4)  # science.md 1.4


def test_transfer_curves() -> None:
    curves = P.transfer_curves(SHARED)
    assert curves["file"].n_unique() == 37
    ft = curves.filter(pl.col("run") == "gpt1e19_transfer_from_mlm5.5e19_130M").filter(pl.col("kind") == "ft")
    assert ft["objective"][0] == "clm" and ft["source_objective"][0] == "mlm"
    assert ft["budget_flops"][0] == 1e19 and ft["source_budget_flops"][0] == 5.5e19
    tok = curves.filter(pl.col("run") == "85M_3e19_clm_pretrain_5.2e18")
    assert tok["kind"][0] == "tokens" and tok["x_unit"][0] == "tokens" and tok["pretrained"][0]
    assert tok["source_budget_flops"][0] == 5.2e18 and tok["size"][0] == "85M"
    assert tok["step"][0] == 300 * 524_288
    training = curves.filter(pl.col("metric") == "train_loss")["file"].unique()
    assert training.len() == 3
    # the scratch run misplaced under gpt/ft is visible as not pretrained
    odd = curves.filter((pl.col("kind") == "ft") & ~pl.col("pretrained"))
    assert odd["run"].unique().to_list() == ["gpt_1.7b_1024_noreg_all0.5ep_bf16"]


def test_ur50_curves_ppl_matches_loss_copy() -> None:
    curves = P.ur50_curves(SHARED)
    assert curves["file"].n_unique() == 32  # 13 training + 19 validation files
    variants = set(curves["variant"].drop_nulls().unique())
    assert variants == {"epoch_shuffle", "full_shuffle", "epoch_shuffle_copy"}
    run = pl.col("run") == "mlm_3b_overfit_bsz1m_2"
    ppl = curves.filter(run & (pl.col("variant") == "epoch_shuffle")).sort("point")
    loss = curves.filter(run & (pl.col("variant") == "epoch_shuffle_copy")).sort("point")
    assert ppl["is_ppl"].all() and not loss["is_ppl"].any()
    assert ppl["step"].to_list() == loss["step"].to_list()
    assert ppl["loss"].to_list() == pytest.approx(loss["value"].to_list(), abs=1e-5)
    samples = curves.filter(pl.col("x_unit") == "samples")
    assert samples["tokens"].to_list() == [s * 1024 for s in samples["step"].to_list()]
    assert set(curves["dataset"].unique()) == {"ur50", "unimeta"}
    in_ur50_dir = curves.filter((pl.col("dir") == "ur50_mlm_3b") & pl.col("run").str.contains("all1ep"))
    assert (in_ur50_dir["dataset"] == "unimeta").all()
