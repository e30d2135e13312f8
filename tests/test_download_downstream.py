"""The proxy task's hydropathy labels vs hand-worked values (classifier tests: tests/test_finetune.py)."""

import pytest
from plmscale.downstream import max_window_hydropathy


def test_hydropathy_window_hand_worked():
    # I = 4.5, K = -3.9; window 3 over "KIIIK": windows KII (1.7), III (4.5), IIK (1.7)
    assert max_window_hydropathy("KIIIK", 3) == pytest.approx(4.5)
    assert max_window_hydropathy("KI", 19) == pytest.approx((4.5 - 3.9) / 2)
    # a 19-residue leucine stretch (3.8) is a transmembrane segment; a lysine-rich one is not
    assert max_window_hydropathy("K" * 30 + "L" * 19 + "K" * 30, 19) == pytest.approx(3.8)
    assert max_window_hydropathy("K" * 50, 19) < 1.6


def test_proxy_dataset_labels_and_splits(tmp_path):
    import json

    import polars as pl
    from plmscale.downstream import proxy_dataset

    membrane = "K" * 20 + "L" * 19 + "K" * 20  # a 19-residue window of mean hydropathy 3.8 > 1.6
    soluble = "KDEKRDEKQNDEKRKDEGS" * 3
    valid = [membrane, soluble] * 5  # task train: the first 4, task valid: the next max(2, 4 // 2) = 2
    test = [soluble, membrane, soluble, membrane, soluble]
    for name, seqs in (("valid", valid), ("test", test)):
        (tmp_path / f"{name}.fasta").write_text("".join(f">{name}{i}\n{s}\n" for i, s in enumerate(seqs)))
    out, report = tmp_path / "proxy.parquet", tmp_path / "proxy.report.json"
    proxy_dataset(
        [str(tmp_path / "valid.fasta")],
        [str(tmp_path / "test.fasta")],
        str(out),
        str(report),
        window=19,
        threshold=1.6,
        max_proteins=4,
    )
    table = pl.read_parquet(out)
    by_split = {s: table.filter(pl.col("split") == s) for s in ("train", "valid", "test")}
    assert by_split["train"]["id"].to_list() == ["valid0", "valid1", "valid2", "valid3"]
    assert by_split["valid"]["id"].to_list() == ["valid4", "valid5"]
    assert by_split["test"]["label"].to_list() == ["soluble", "membrane", "soluble", "membrane"]
    assert by_split["train"]["label_id"].to_list() == [1, 0, 1, 0]
    assert json.loads(report.read_text())["splits"]["test"]["class_counts"] == {"soluble": 2, "membrane": 2}
    with pytest.raises(ValueError, match="both"):
        proxy_dataset(
            [str(tmp_path / "valid.fasta")],
            [str(tmp_path / "test.fasta")],
            str(out),
            str(report),
            window=19,
            threshold=9.0,
            max_proteins=4,
        )
