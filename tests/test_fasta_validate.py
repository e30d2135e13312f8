"""FASTA parsing and validation on small hand-written files with hand-worked expected results."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest
from plmscale.fasta import FastaRecord, read_fasta, write_fasta
from plmscale.validate import ESM_RESIDUES, ValidationPolicy, validate_fasta, validate_records

# --------------------------------------------------------------------------------------------- FASTA reading

LAYOUT_FASTA = (
    ">seq1 first protein\r\n"  # line 1: CRLF
    "MKVL  \r\n"  # trailing spaces
    "LAGV\r\n"
    "\r\n"  # blank line inside the file is ignored
    ">seq2\t tab-separated description  \n"  # line 5
    "AC DE\n"  # whitespace inside a sequence line is joined
    ">empty\n"  # line 7: empty record
    ">seq3\n"  # line 8
    "W\n"
)
LAYOUT_EXPECTED = [
    FastaRecord("seq1", "first protein", "MKVLLAGV", 1),
    FastaRecord("seq2", "tab-separated description", "ACDE", 5),
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
    }
    assert (report["n_records"], report["n_kept"], report["n_changed"], report["n_dropped"]) == (10, 3, 2, 7)
    assert report["changed_by_reason"] == {"lowercase": 1, "terminal_stop": 1}
    assert report["dropped_by_reason"] == {
        "digit": 1,
        "duplicate_id": 1,
        "empty": 2,
        "gap": 1,
        "internal_stop": 1,
        "invalid_character": 1,
    }
    assert report["issues"] == [
        _issue("low", 4, "lowercase", "changed", 1, "m"),
        _issue("stop", 6, "terminal_stop", "changed", 4, "*"),
        _issue("J1", 8, "invalid_character", "dropped", 4, "J"),
        _issue("intstop", 10, "internal_stop", "dropped", 3, "*"),
        _issue("gap", 12, "gap", "dropped", 3, "-"),
        _issue("dig", 14, "digit", "dropped", 3, "1"),
        _issue("empty", 16, "empty", "dropped"),
        _issue("onlystop", 17, "empty", "dropped"),
        _issue("ok1", 19, "duplicate_id", "dropped"),
    ]
    json.dumps(report)  # JSON-serialisable as is


def test_strict_policy_lowercase_and_terminal_stop_become_invalid(tmp_path: Path) -> None:
    kept, report = _validate(tmp_path, RULES_FASTA, uppercase=False, strip_terminal_stop=False)
    assert kept == [("ok1", "MKVLLA")]
    assert report["n_changed"] == 0 and report["changed_by_reason"] == {}
    dropped = {i["record"]: (i["reason"], i["position"], i["char"]) for i in report["issues"]}
    assert dropped["low"] == ("lowercase", 1, "m")
    assert dropped["stop"] == ("terminal_stop", 4, "*")
    assert dropped["onlystop"] == ("terminal_stop", 1, "*")
    assert report["dropped_by_reason"]["terminal_stop"] == 2
    assert report["n_dropped"] == 9


def test_lowercase_then_invalid_letter_reports_the_drop_only(tmp_path: Path) -> None:
    kept, report = _validate(tmp_path, ">a\nmkj\n>b\nMK\n")
    assert kept == [("b", "MK")]
    assert report["issues"] == [_issue("a", 1, "invalid_character", "dropped", 3, "J")]
    assert report["n_changed"] == 0


def test_all_esm_letters_are_kept_unchanged(tmp_path: Path) -> None:
    kept, report = _validate(tmp_path, f">all\n{ESM_RESIDUES}\n>xbuzo\nXBUZO\n")
    assert kept == [("all", ESM_RESIDUES), ("xbuzo", "XBUZO")]
    assert report["issues"] == [] and report["n_changed"] == 0


def test_length_bounds(tmp_path: Path) -> None:
    kept, report = _validate(tmp_path, ">a\nMK\n>b\nMKVL\n>c\nMKVLLA\n", min_length=3, max_length=5)
    assert kept == [("b", "MKVL")]
    assert report["issues"] == [_issue("a", 1, "too_short", "dropped"), _issue("c", 5, "too_long", "dropped")]


def test_length_is_measured_after_stripping_the_stop(tmp_path: Path) -> None:
    kept, _ = _validate(tmp_path, ">a\nMKV*\n", max_length=3)
    assert kept == [("a", "MKV")]


def test_duplicate_message_names_first_line(tmp_path: Path) -> None:
    path = _write(tmp_path / "dup.fa", ">x\nMK\n>y\nMK\n>x other\nMKV\n>x\nA\n")
    result = validate_records(read_fasta(path), ValidationPolicy(), source="s", path=str(path))
    assert result.kept == [("x", "MK"), ("y", "MK")]
    issues = [(i["line"], i["reason"]) for i in result.report["issues"]]
    assert issues == [(5, "duplicate_id"), (7, "duplicate_id")]
    with pytest.raises(ValueError) as err:
        validate_records(read_fasta(path), ValidationPolicy(on_invalid="error"), source="s", path=str(path))
    assert str(err.value).startswith(f"{path}:5: record 'x': duplicate ID; first occurrence at line 1.")


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


# --------------------------------------------------------------------------------------------- validate_fasta


def test_validate_fasta_writes_both_outputs(tmp_path: Path) -> None:
    src = _write(tmp_path / "in.fa", RULES_FASTA)
    out_fa, out_json = tmp_path / "out" / "clean.fa", tmp_path / "out" / "report.json"
    out_fa.parent.mkdir()
    report = validate_fasta(src, out_fa, out_json, ValidationPolicy(), source="toy")
    assert out_fa.read_text() == ">ok1\nMKVLLA\n>low\nMKVA\n>stop\nMKV\n"
    text = out_json.read_text()
    assert text.endswith("}\n")
    assert json.loads(text) == report
    assert report["n_kept"] == 3
    assert sorted(p.name for p in out_fa.parent.iterdir()) == ["clean.fa", "report.json"]  # no temp files


@pytest.mark.parametrize("text", ["", "\n\n", ">a\n>b\n*\n", ">a\nJJJ\n"])
def test_validate_fasta_empty_source_raises_and_writes_nothing(tmp_path: Path, text: str) -> None:
    src = _write(tmp_path / "in.fa", text)
    out_fa, out_json = tmp_path / "clean.fa", tmp_path / "report.json"
    with pytest.raises(ValueError, match=r"in\.fa: source 'toy' has no valid records"):
        validate_fasta(src, out_fa, out_json, ValidationPolicy(), source="toy")
    assert not out_fa.exists() and not out_json.exists()
    assert [p.name for p in tmp_path.iterdir()] == ["in.fa"]


def test_validate_fasta_error_mode_writes_nothing(tmp_path: Path) -> None:
    src = _write(tmp_path / "in.fa", RULES_FASTA)
    with pytest.raises(ValueError, match="record 'J1'"):
        validate_fasta(
            src, tmp_path / "c.fa", tmp_path / "r.json", ValidationPolicy(on_invalid="error"), source="toy"
        )
    assert [p.name for p in tmp_path.iterdir()] == ["in.fa"]


def test_duplicates_detected_for_constructed_records_without_lines() -> None:
    records = [FastaRecord("a", "", "MK", 0), FastaRecord("a", "", "MV", 0)]
    result = validate_records(records, ValidationPolicy(), source="s", path="<memory>")
    assert result.kept == [("a", "MK")]
    assert result.report["dropped_by_reason"] == {"duplicate_id": 1}
