"""FASTA parsing and validation on small hand-written files with hand-worked expected results."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import numpy as np
import pytest
from plmscale import fasta as fasta_module
from plmscale.config import check_data_config, read_yaml, validate_config
from plmscale.fasta import FastaRecord, read_fasta, read_fasta_ids, repeated_id_hashes, write_fasta
from plmscale.validate import ESM_RESIDUES, ISSUE_COLUMNS, ValidationPolicy, validate_fasta, validate_records

REPO = Path(__file__).resolve().parents[1]

# --------------------------------------------------------------------------------------------- FASTA reading

LAYOUT_FASTA = (
    ">seq1 first protein\r\n"  # line 1: CRLF
    "MKVL  \r\n"  # trailing spaces
    "LAGV\r\n"
    "\r\n"  # blank line inside the file is ignored
    ">seq2\t tab-separated description  \n"  # line 5
    "AC DE\n"  # whitespace inside a sequence line is joined (and counted: 1, before residue 3)
    ">empty\n"  # line 7: empty record
    ">seq3\n"  # line 8
    "W\n"
)
LAYOUT_EXPECTED = [
    FastaRecord("seq1", "first protein", "MKVLLAGV", 1),
    FastaRecord("seq2", "tab-separated description", "ACDE", 5, whitespace=1, whitespace_at=3),
    FastaRecord("empty", "", "", 7),
    FastaRecord("seq3", "", "W", 8),
]


def _write(path: Path, text: str) -> Path:
    path.write_bytes(text.encode("utf-8"))
    return path


def test_read_fasta_layout_crlf_wrapped_and_empty_record(tmp_path: Path) -> None:
    path = _write(tmp_path / "in.fa", LAYOUT_FASTA)
    assert list(read_fasta(path)) == LAYOUT_EXPECTED


def test_read_fasta_gzip_detected_by_magic_not_name(tmp_path: Path) -> None:
    gz = tmp_path / "in.fa"  # no .gz suffix on purpose
    gz.write_bytes(gzip.compress(LAYOUT_FASTA.encode("utf-8")))
    assert list(read_fasta(gz)) == LAYOUT_EXPECTED
    named = tmp_path / "in.fa.gz"
    named.write_bytes(gzip.compress(LAYOUT_FASTA.encode("utf-8")))
    assert list(read_fasta(named)) == LAYOUT_EXPECTED


def test_read_fasta_is_lazy(tmp_path: Path) -> None:
    path = _write(tmp_path / "in.fa", ">a\nMK\n>b\nVL\n")
    records = read_fasta(path)
    assert next(records) == FastaRecord("a", "", "MK", 1)


def test_read_fasta_data_before_header(tmp_path: Path) -> None:
    path = _write(tmp_path / "bad.fa", "\nMKV\n>a\nMKV\n")
    with pytest.raises(ValueError, match=r"bad\.fa:2: sequence data before the first header") as err:
        list(read_fasta(path))
    assert "Fix:" in str(err.value)


def test_read_fasta_empty_header_id(tmp_path: Path) -> None:
    path = _write(tmp_path / "bad.fa", ">a\nMKV\n>   \nMKV\n")
    with pytest.raises(ValueError, match=r"bad\.fa:3: header '>' has an empty record ID"):
        list(read_fasta(path))


def test_read_fasta_truncated_gzip(tmp_path: Path) -> None:
    blob = gzip.compress((">a\n" + "MKV" * 20000 + "\n").encode())
    path = tmp_path / "cut.fa.gz"
    path.write_bytes(blob[: len(blob) // 2])
    with pytest.raises(ValueError, match=r"cut\.fa\.gz: gzip stream is truncated or corrupt"):
        list(read_fasta(path))


def test_read_fasta_non_utf8(tmp_path: Path) -> None:
    path = tmp_path / "bin.fa"
    path.write_bytes(b">a\nMK\xffV\n")
    with pytest.raises(ValueError, match=r"bin\.fa:2: byte 0xff at column 3 is not valid UTF-8"):
        list(read_fasta(path))


def test_empty_file_yields_nothing(tmp_path: Path) -> None:
    assert list(read_fasta(_write(tmp_path / "e.fa", ""))) == []


# --------------------------------------------------------------------------------------------- FASTA writing


def test_write_fasta_wraps_and_round_trips(tmp_path: Path) -> None:
    out = tmp_path / "out.fa"
    n = write_fasta([("a", "ABCDEFG"), ("b", ""), ("c", "XYZ")], out, width=3)
    assert n == 3
    assert out.read_text() == ">a\nABC\nDEF\nG\n>b\n>c\nXYZ\n"
    assert [(r.id, r.sequence) for r in read_fasta(out)] == [("a", "ABCDEFG"), ("b", ""), ("c", "XYZ")]


def test_write_fasta_keeps_description_of_records(tmp_path: Path) -> None:
    out = tmp_path / "out.fa"
    write_fasta(LAYOUT_EXPECTED, out)
    assert out.read_text().splitlines()[0] == ">seq1 first protein"
    assert [(r.id, r.description, r.sequence) for r in read_fasta(out)] == [
        (r.id, r.description, r.sequence) for r in LAYOUT_EXPECTED
    ]


def test_write_fasta_rejects_bad_id_and_leaves_no_file(tmp_path: Path) -> None:
    out = tmp_path / "out.fa"
    with pytest.raises(ValueError, match="contains whitespace"):
        write_fasta([("ok", "MKV"), ("bad id", "MKV")], out)
    assert list(tmp_path.iterdir()) == []


def test_read_fasta_whitespace_inside_lines_is_counted_line_ends_are_not(tmp_path: Path) -> None:
    # a: ' ' inside line 2 and '\t' opening line 3 -> 2 characters, the first before residue 3 ('V')
    # b: trailing spaces and CRLF are layout, not counted
    path = _write(tmp_path / "ws.fa", ">a desc\nMK V\n\tLL\n>b\r\nMKV  \r\nLL\r\n")
    assert list(read_fasta(path)) == [
        FastaRecord("a", "desc", "MKVLL", 1, whitespace=2, whitespace_at=3),
        FastaRecord("b", "", "MKVLL", 4),
    ]


VARIED_FASTA = (
    "\n\n"  # blank lines before the first header
    ">a one\nMKVL\nLAGV\n\n"  # line 3
    ">b\r\nMK V\r\n\r\nLL\r\n"  # line 7: CRLF, inner space
    ">c\n"  # line 11: empty
    ">d x y\n" + "ACDEFGHIKL" * 30 + "\n"  # line 12: one long line
    ">e\nW"  # line 14: no final newline
)


@pytest.mark.parametrize("block", [1, 2, 3, 5, 8, 13, 64, 1 << 22])
def test_read_fasta_does_not_depend_on_the_block_size(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, block: int
) -> None:
    path = _write(tmp_path / "v.fa", VARIED_FASTA)
    monkeypatch.setattr(fasta_module, "_BLOCK", block)
    assert list(read_fasta(path)) == [
        FastaRecord("a", "one", "MKVLLAGV", 3),
        FastaRecord("b", "", "MKVLL", 7, whitespace=1, whitespace_at=3),
        FastaRecord("c", "", "", 11),
        FastaRecord("d", "x y", "ACDEFGHIKL" * 30, 12),
        FastaRecord("e", "", "W", 14),
    ]
    assert list(read_fasta_ids(path)) == ["a", "b", "c", "d", "e"]


@pytest.mark.parametrize("block", [1, 3, 1 << 22])
def test_read_fasta_errors_name_the_line_for_any_block_size(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, block: int
) -> None:
    monkeypatch.setattr(fasta_module, "_BLOCK", block)
    path = _write(tmp_path / "bad.fa", ">a\nMK\n\n>b x\nMK\n>\nMK\n")
    with pytest.raises(ValueError, match=r"bad\.fa:6: header '>' has an empty record ID"):
        list(read_fasta(path))
    with pytest.raises(ValueError, match=r"bad\.fa:6: header '>' has an empty record ID"):
        list(read_fasta_ids(path))
    path.write_bytes(b">a\nMK\n>b\nMV\nM\xffK\n")
    with pytest.raises(ValueError, match=r"bad\.fa:5: byte 0xff at column 2 is not valid UTF-8"):
        list(read_fasta(path))


def test_repeated_id_hashes_in_memory_and_through_bucket_files(tmp_path: Path) -> None:
    ids = ["a", "b", "a", "c", "d", "b", "e", "a"]
    path = _write(tmp_path / "ids.fa", "".join(f">{i} text\nMK\n" for i in ids))
    expected = {hash("a"), hash("b")}
    assert repeated_id_hashes(path, tmp_path) == expected  # one chunk: no files
    assert not list(tmp_path.glob("*.i8"))
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    assert repeated_id_hashes(path, scratch, chunk=3, buckets=4) == expected
    spilled = np.concatenate([np.fromfile(f, dtype=np.int64) for f in scratch.glob("*.i8")])
    assert sorted(spilled.tolist()) == sorted(hash(i) for i in ids)  # every ID once, in its bucket


# --------------------------------------------------------------------------------------------- validation

# One record per rule. Line numbers (of headers) are what the report must name.
RULES_FASTA = """\
>ok1 first
MKV
LLA
>low
mkVA
>stop
MKV*
>J1 has J
MKVJA
>intstop
MK*VA
>gap
MK-VA
>dig
MK1VA
>empty
>onlystop
*
>ok1 duplicate
MKV
"""
ABC = f"not in the ESM-2 alphabet {ESM_RESIDUES}"
HINT = "or set validate.on_invalid: drop to drop such records with a report."
# every issue of RULES_FASTA under the default policy, as the issues TSV must list them (hand-worked)
RULES_ISSUES = [
    ("low", 4, 1, "m", "lowercase", "changed", "lowercase residues uppercased (the first 'm' at position 1)"),
    ("stop", 6, 4, "*", "terminal_stop", "changed", "terminal stop '*' removed"),
    ("J1", 8, 4, "J", "invalid_character", "dropped",
     f"invalid character 'J' at position 4 ({ABC}). Fix: remove or replace the residue, {HINT}"),
    ("intstop", 10, 3, "*", "internal_stop", "dropped",
     f"internal stop codon '*' at position 3 ({ABC}). Fix: remove or replace the residue (e.g. with X), "
     f"{HINT}"),
    ("gap", 12, 3, "-", "gap", "dropped",
     f"gap character '-' at position 3; aligned input is not accepted. Fix: remove gaps (unalign the "
     f"sequences), {HINT}"),
    ("dig", 14, 3, "1", "digit", "dropped",
     f"digit '1' at position 3 ({ABC}). Fix: remove the numbering, {HINT}"),
    ("empty", 16, None, None, "empty", "dropped",
     f"empty sequence. Fix: remove the record or add its sequence, {HINT}"),
    ("onlystop", 17, None, None, "empty", "dropped",
     f"empty sequence after stripping the terminal stop. Fix: remove the record or add its sequence, {HINT}"),
    ("ok1", 19, None, None, "duplicate_id", "dropped",
     f"duplicate ID; first kept occurrence at line 1. Fix: make record IDs unique, {HINT}"),
]  # fmt: skip


def _issue(
    record: str, line: int, reason: str, action: str, position: int | None = None, char: str | None = None
) -> dict[str, object]:
    return {
        "record": record,
        "line": line,
        "position": position,
        "char": char,
        "reason": reason,
        "action": action,
    }


def _brief(examples: list[dict]) -> list[dict]:
    """Examples without their detail text."""
    return [{k: v for k, v in e.items() if k != "detail"} for e in examples]


def _validate(tmp_path: Path, text: str, **policy: object) -> tuple[list[tuple[str, str]], dict]:
    path = _write(tmp_path / "in.fa", text)
    result = validate_records(read_fasta(path), ValidationPolicy(**policy), source="toy", path=str(path))
    return result.kept, result.report


def test_default_policy_hand_worked_report(tmp_path: Path) -> None:
    kept, report = _validate(tmp_path, RULES_FASTA)
    assert kept == [("ok1", "MKVLLA"), ("low", "MKVA"), ("stop", "MKV")]
    assert report["source"] == "toy"
    assert report["path"] == str(tmp_path / "in.fa")
    assert report["policy"] == {
        "uppercase": True,
        "strip_terminal_stop": True,
        "min_length": 1,
        "max_length": None,
        "on_invalid": "drop",
        "report_examples": 10,
    }
    assert (report["n_records"], report["n_kept"], report["n_changed"], report["n_dropped"]) == (10, 3, 2, 7)
    assert (report["n_residues_kept"], report["n_issues"]) == (6 + 4 + 3, 9)
    assert report["changed_by_reason"] == {"lowercase": 1, "terminal_stop": 1}
    assert report["dropped_by_reason"] == {
        "digit": 1,
        "duplicate_id": 1,
        "empty": 2,
        "gap": 1,
        "internal_stop": 1,
        "invalid_character": 1,
    }
    assert report["examples"] == [dict(zip(ISSUE_COLUMNS, row, strict=True)) for row in RULES_ISSUES]
    json.dumps(report)  # JSON-serialisable as is


def test_strict_policy_lowercase_and_terminal_stop_become_invalid(tmp_path: Path) -> None:
    kept, report = _validate(tmp_path, RULES_FASTA, uppercase=False, strip_terminal_stop=False)
    assert kept == [("ok1", "MKVLLA")]
    assert report["n_changed"] == 0 and report["changed_by_reason"] == {}
    dropped = {i["record"]: (i["reason"], i["position"], i["char"]) for i in report["examples"]}
    assert dropped["low"] == ("lowercase", 1, "m")
    assert dropped["stop"] == ("terminal_stop", 4, "*")
    assert dropped["onlystop"] == ("terminal_stop", 1, "*")
    assert report["dropped_by_reason"]["terminal_stop"] == 2
    assert report["n_dropped"] == 9


def test_lowercase_then_invalid_letter_reports_the_drop_only(tmp_path: Path) -> None:
    kept, report = _validate(tmp_path, ">a\nmkj\n>b\nMK\n")
    assert kept == [("b", "MK")]
    assert _brief(report["examples"]) == [_issue("a", 1, "invalid_character", "dropped", 3, "J")]
    assert report["n_changed"] == 0


def test_all_esm_letters_are_kept_unchanged(tmp_path: Path) -> None:
    kept, report = _validate(tmp_path, f">all\n{ESM_RESIDUES}\n>xbuzo\nXBUZO\n")
    assert kept == [("all", ESM_RESIDUES), ("xbuzo", "XBUZO")]
    assert report["examples"] == [] and report["n_changed"] == 0


def test_length_bounds(tmp_path: Path) -> None:
    kept, report = _validate(tmp_path, ">a\nMK\n>b\nMKVL\n>c\nMKVLLA\n", min_length=3, max_length=5)
    assert kept == [("b", "MKVL")]
    assert _brief(report["examples"]) == [
        _issue("a", 1, "too_short", "dropped"),
        _issue("c", 5, "too_long", "dropped"),
    ]


def test_length_is_measured_after_stripping_the_stop(tmp_path: Path) -> None:
    kept, _ = _validate(tmp_path, ">a\nMKV*\n", max_length=3)
    assert kept == [("a", "MKV")]


def test_whitespace_inside_lines_is_reported_as_a_change(tmp_path: Path) -> None:
    kept, report = _validate(tmp_path, ">a\nMK V\n\tLL\n>b\nMKV  \r\nLL\r\n>c\nM K*\n")
    assert kept == [("a", "MKVLL"), ("b", "MKVLL"), ("c", "MK")]
    assert report["changed_by_reason"] == {"terminal_stop": 1, "whitespace": 2}
    assert report["n_changed"] == 2
    assert report["examples"][0] == {
        "record": "a",
        "line": 1,
        "position": 3,
        "char": None,
        "reason": "whitespace",
        "action": "changed",
        "detail": "2 whitespace character(s) inside sequence lines removed (the first before residue 3)",
    }
    assert _brief(report["examples"][1:]) == [
        _issue("c", 7, "whitespace", "changed", 2),
        _issue("c", 7, "terminal_stop", "changed", 3, "*"),
    ]


def test_duplicate_message_names_first_kept_line(tmp_path: Path) -> None:
    path = _write(tmp_path / "dup.fa", ">x\nMK\n>y\nMK\n>x other\nMKV\n>x\nA\n")
    result = validate_records(read_fasta(path), ValidationPolicy(), source="s", path=str(path))
    assert result.kept == [("x", "MK"), ("y", "MK")]
    issues = [(i["line"], i["reason"]) for i in result.report["examples"]]
    assert issues == [(5, "duplicate_id"), (7, "duplicate_id")]
    with pytest.raises(ValueError) as err:
        validate_records(read_fasta(path), ValidationPolicy(on_invalid="error"), source="s", path=str(path))
    assert str(err.value).startswith(f"{path}:5: record 'x': duplicate ID; first kept occurrence at line 1.")
    assert "Fix: make record IDs unique" in str(err.value)


# x at line 1 is invalid, so x at line 3 is the first kept x and x at line 7 its duplicate
DUP_AFTER_INVALID = ">x\nMK*VA\n>x\nMKV\n>y\nMK\n>x\nMKL\n"


def test_valid_record_after_an_invalid_one_with_its_id_is_kept(tmp_path: Path) -> None:
    kept, report = _validate(tmp_path, DUP_AFTER_INVALID)
    assert kept == [("x", "MKV"), ("y", "MK")]
    assert _brief(report["examples"]) == [
        _issue("x", 1, "internal_stop", "dropped", 3, "*"),
        _issue("x", 7, "duplicate_id", "dropped"),
    ]
    assert "first kept occurrence at line 3." in report["examples"][1]["detail"]


def test_on_invalid_error_names_file_line_record_and_char(tmp_path: Path) -> None:
    path = _write(tmp_path / "in.fa", RULES_FASTA)
    policy = ValidationPolicy(on_invalid="error")
    with pytest.raises(ValueError) as err:
        validate_records(read_fasta(path), policy, source="toy", path=str(path))
    assert str(err.value) == (
        f"{path}:8: record 'J1': invalid character 'J' at position 4 (not in the ESM-2 alphabet "
        f"{ESM_RESIDUES}). Fix: remove or replace the residue, or set validate.on_invalid: drop to drop such "
        "records with a report."
    )


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (">a\nMK*VA\n", "in.fa:1: record 'a': internal stop codon '*' at position 3"),
        (">a\n\n>b\nM\n", "in.fa:1: record 'a': empty sequence. Fix:"),
        (">a\nMK-V\n", "in.fa:1: record 'a': gap character '-' at position 3"),
        (">a\nM\n>b\nMK9\n", "in.fa:3: record 'b': digit '9' at position 3"),
        (">a\nMKV\n>b\nMKVLLA\n", "in.fa:3: record 'b': length 6 exceeds validate.max_length 5"),
    ],
)
def test_on_invalid_error_per_rule(tmp_path: Path, text: str, expected: str) -> None:
    path = _write(tmp_path / "in.fa", text)
    with pytest.raises(ValueError, match="Fix:") as err:
        validate_records(
            read_fasta(path), ValidationPolicy(on_invalid="error", max_length=5), source="s", path=str(path)
        )
    assert expected in str(err.value)


def test_policy_from_dict() -> None:
    assert ValidationPolicy.from_dict({"min_length": 3, "on_invalid": "error"}) == ValidationPolicy(
        min_length=3, on_invalid="error"
    )
    with pytest.raises(ValueError, match=r"unknown key\(s\) \['max_len'\]; allowed keys are \['uppercase'"):
        ValidationPolicy.from_dict({"max_len": 10})
    with pytest.raises(ValueError, match="on_invalid must be 'drop' or 'error'"):
        ValidationPolicy.from_dict({"on_invalid": "warn"})
    with pytest.raises(ValueError, match="min_length must be an integer >= 1"):
        ValidationPolicy.from_dict({"min_length": 0})
    with pytest.raises(ValueError, match="max_length must be null or an integer >= min_length"):
        ValidationPolicy.from_dict({"min_length": 5, "max_length": 4})
    with pytest.raises(ValueError, match="uppercase must be true or false"):
        ValidationPolicy.from_dict({"uppercase": "yes"})
    with pytest.raises(ValueError, match="report_examples must be an integer >= 0"):
        ValidationPolicy.from_dict({"report_examples": -1})


def test_duplicates_detected_for_constructed_records_without_lines() -> None:
    records = [FastaRecord("a", "", "MK", 0), FastaRecord("a", "", "MV", 0)]
    result = validate_records(records, ValidationPolicy(), source="s", path="<memory>")
    assert result.kept == [("a", "MK")]
    assert result.report["dropped_by_reason"] == {"duplicate_id": 1}


# --------------------------------------------------------------------------------------------- validate_fasta


def _outputs(folder: Path) -> tuple[Path, Path, Path]:
    return folder / "clean.fa", folder / "report.json", folder / "issues.tsv.gz"


def _tsv_rows(path: Path) -> list[list[str]]:
    return [line.split("\t") for line in gzip.decompress(path.read_bytes()).decode().splitlines()]


def _cells(row: tuple) -> list[str]:
    return ["" if v is None else str(v) for v in row]


def test_validate_fasta_writes_fasta_report_and_every_issue(tmp_path: Path) -> None:
    src = _write(tmp_path / "in.fa", RULES_FASTA)
    (tmp_path / "out").mkdir()
    out_fa, out_json, out_tsv = _outputs(tmp_path / "out")
    report = validate_fasta(src, out_fa, out_json, out_tsv, ValidationPolicy(report_examples=1), source="toy")
    assert out_fa.read_text() == ">ok1\nMKVLLA\n>low\nMKVA\n>stop\nMKV\n"
    text = out_json.read_text()
    assert text.endswith("}\n")
    assert json.loads(text) == report
    assert report["issues_tsv"] == str(out_tsv)
    assert (report["n_kept"], report["n_issues"], report["dropped_by_reason"]["empty"]) == (3, 9, 2)
    assert [e["record"] for e in report["examples"]] == [
        "low",
        "stop",
        "J1",
        "intstop",
        "gap",
        "dig",
        "empty",
        "ok1",
    ]
    assert _tsv_rows(out_tsv) == [list(ISSUE_COLUMNS)] + [_cells(row) for row in RULES_ISSUES]
    assert sorted(p.name for p in out_fa.parent.iterdir()) == ["clean.fa", "issues.tsv.gz", "report.json"]


def test_examples_are_capped_per_reason_and_counts_stay_exact(tmp_path: Path) -> None:
    # l = lowercase (changed, kept), g = gap (dropped), interleaved: l1 g1 l2 l3 g2 g3 l4 g4 l5
    order = ["l1", "g1", "l2", "l3", "g2", "g3", "l4", "g4", "l5"]
    src = _write(tmp_path / "in.fa", "".join(f">{r}\n{'mKV' if r[0] == 'l' else 'M-KV'}\n" for r in order))
    out_fa, out_json, out_tsv = _outputs(tmp_path)
    report = validate_fasta(src, out_fa, out_json, out_tsv, ValidationPolicy(report_examples=2), source="t")
    assert report["changed_by_reason"] == {"lowercase": 5} and report["dropped_by_reason"] == {"gap": 4}
    assert (report["n_records"], report["n_kept"], report["n_changed"], report["n_dropped"]) == (9, 5, 5, 4)
    assert [e["record"] for e in report["examples"]] == ["l1", "g1", "l2", "g2"]
    assert [row[0] for row in _tsv_rows(out_tsv)[1:]] == order
    report = validate_fasta(src, out_fa, out_json, out_tsv, ValidationPolicy(report_examples=0), source="t")
    assert report["examples"] == [] and report["n_issues"] == 9


def test_validate_fasta_duplicates_through_bucket_files(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(fasta_module, "_ID_CHUNK", 2)
    monkeypatch.setattr(fasta_module, "_BUCKETS", 3)
    text = DUP_AFTER_INVALID + ">z\nMA\n>y\nMC\n>w\nMD\n>z\nME\n"
    src = _write(tmp_path / "in.fa", text)
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    out_fa, out_json, out_tsv = _outputs(tmp_path)
    report = validate_fasta(src, out_fa, out_json, out_tsv, ValidationPolicy(), source="t", scratch=scratch)
    assert out_fa.read_text() == ">x\nMKV\n>y\nMK\n>z\nMA\n>w\nMD\n"
    assert report["dropped_by_reason"] == {"duplicate_id": 3, "internal_stop": 1}
    dups = [
        (row[0], row[1], row[6].split(". ")[0]) for row in _tsv_rows(out_tsv)[1:] if row[4] == "duplicate_id"
    ]
    assert dups == [
        ("x", "7", "duplicate ID; first kept occurrence at line 3"),
        ("y", "11", "duplicate ID; first kept occurrence at line 5"),
        ("z", "15", "duplicate ID; first kept occurrence at line 9"),
    ]
    assert list(scratch.iterdir()) == []  # the bucket files are removed


def test_validate_fasta_reads_gzip_and_writes_a_deterministic_tsv(tmp_path: Path) -> None:
    src = tmp_path / "in.fa.gz"
    src.write_bytes(gzip.compress(RULES_FASTA.encode()))
    blobs = []
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
        out_fa, out_json, out_tsv = _outputs(tmp_path / name)
        validate_fasta(src, out_fa, out_json, out_tsv, ValidationPolicy(), source="toy")
        assert out_fa.read_text() == ">ok1\nMKVLLA\n>low\nMKVA\n>stop\nMKV\n"
        blobs.append(out_tsv.read_bytes())
    assert blobs[0] == blobs[1]


def test_tsv_escapes_unprintable_characters(tmp_path: Path) -> None:
    src = _write(tmp_path / "in.fa", ">a\nMK\x01V\n>b\nMK\\V\n>c\nMKV\n")
    out_fa, out_json, out_tsv = _outputs(tmp_path)
    validate_fasta(src, out_fa, out_json, out_tsv, ValidationPolicy(), source="t")
    assert [(row[0], row[3]) for row in _tsv_rows(out_tsv)[1:]] == [("a", "\\x01"), ("b", "\\\\")]


@pytest.mark.parametrize("text", ["", "\n\n", ">a\n>b\n*\n", ">a\nJJJ\n"])
def test_validate_fasta_empty_source_raises_and_writes_nothing(tmp_path: Path, text: str) -> None:
    src = _write(tmp_path / "in.fa", text)
    with pytest.raises(ValueError, match=r"in\.fa: source 'toy' has no valid records"):
        validate_fasta(src, *_outputs(tmp_path), ValidationPolicy(), source="toy")
    assert [p.name for p in tmp_path.iterdir()] == ["in.fa"]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (RULES_FASTA, "in.fa:8: record 'J1': invalid character 'J' at position 4"),
        (DUP_AFTER_INVALID, "in.fa:1: record 'x': internal stop codon '*' at position 3"),
        (">x\nMKV\n>y\nMK\n>x\nMKL\n", "in.fa:5: record 'x': duplicate ID; first kept occurrence at line 1."),
    ],
)
def test_validate_fasta_error_mode_writes_nothing(tmp_path: Path, text: str, message: str) -> None:
    src = _write(tmp_path / "in.fa", text)
    with pytest.raises(ValueError, match="Fix:") as err:
        validate_fasta(src, *_outputs(tmp_path), ValidationPolicy(on_invalid="error"), source="toy")
    assert message in str(err.value)
    assert [p.name for p in tmp_path.iterdir()] == ["in.fa"]  # no FASTA, report, TSV, temporary or scratch


# --------------------------------------------------------------------------------------------- config checks


def _config() -> dict:
    return read_yaml(REPO / "config" / "config.yaml")


def test_min_length_above_max_length_is_a_config_error() -> None:
    config = _config()
    config["validate"].update(min_length=50, max_length=40)
    with pytest.raises(
        ValueError, match=r"validate\.min_length \(50\) is greater than validate\.max_length \(40\)"
    ):
        check_data_config(config)
    config["validate"]["max_length"] = None
    check_data_config(config)


def test_source_with_an_unknown_key_names_the_key_and_the_allowed_ones() -> None:
    config = _config()
    config["sources"]["uniref"] = {"kind": "url", "url": "https://example.org/u.fa.gz", "sha265": "ab"}
    schema = read_yaml(REPO / "config" / "schema.yaml")
    allowed = list(
        next(b for b in schema["$defs"]["source"]["oneOf"] if b["properties"]["kind"]["const"] == "url")[
            "properties"
        ]
    )
    expected = f"sources.uniref: unknown key 'sha265' for kind 'url'; allowed: {allowed}"
    with pytest.raises(ValueError) as err:
        check_data_config(config)
    assert expected in str(err.value)
    with pytest.raises(ValueError) as err:  # what the workflow shows: validate_config runs first
        validate_config(config, REPO / "config" / "schema.yaml")
    assert expected in str(err.value) and "is not valid under any of the given schemas" not in str(err.value)


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        (
            {"kind": "ftp", "url": "x"},
            "sources.extra: kind 'ftp' is not a source; set kind to one of ['embedded', ",
        ),
        ({"kind": "url"}, "sources.extra: missing key 'url' for kind 'url' (required: ['kind', 'url'])"),
        (
            {"kind": "url", "url": "ftp://x"},
            "sources.extra.url: 'ftp://x' does not match '^(https?|file)://'",
        ),
        (
            {"kind": "embedded", "name": "pyhmmer_proteome", "url": "https://x"},
            "unknown key 'url' for kind 'embedded'",
        ),
    ],
)
def test_source_errors_are_readable(spec: dict, message: str) -> None:
    config = _config()
    config["sources"]["extra"] = spec
    with pytest.raises(ValueError) as err:
        validate_config(config, REPO / "config" / "schema.yaml")
    assert message in str(err.value)
    assert "is not valid under any of the given schemas" not in str(err.value)
