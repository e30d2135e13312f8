"""Validate protein FASTA records against the ESM-2 residue alphabet, streaming, in bounded memory.

Nothing is changed or dropped silently. Each change (whitespace removed, uppercasing, stripping a terminal
``*``) and each dropped record is an :class:`Issue` with record ID, header line, 1-based position and
character. :func:`validate_fasta` streams every issue to a gzip TSV and keeps only counts per reason and the
first ``policy.report_examples`` issues per (action, reason) for the JSON report. With
``on_invalid="error"`` the first invalid record raises ``ValueError`` instead.

Rules, in the order they are checked for each record:

1. whitespace inside or at the start of sequence lines (removed by :func:`plmscale.fasta.read_fasta`) ->
   "changed", reason ``whitespace`` (line ends are layout and not reported)
2. lowercase letters -> uppercased ("changed", reason ``lowercase``) if ``policy.uppercase``
3. a single terminal ``*`` -> stripped ("changed", reason ``terminal_stop``) if ``policy.strip_terminal_stop``
4. empty sequence (after step 3) -> invalid ``empty``
5. first character outside ``ESM_RESIDUES`` -> invalid, reason by kind: ``internal_stop`` / ``terminal_stop``
   (``*``), ``gap`` (``-`` ``.``), ``digit``, ``lowercase`` (when not uppercasing), else ``invalid_character``
6. length outside ``[min_length, max_length]`` -> invalid ``too_short`` / ``too_long``
7. a valid record whose ID equals that of an earlier *kept* record -> invalid ``duplicate_id`` (so the first
   valid occurrence of an ID is kept, also when an invalid record with that ID came before it)

``n_changed`` counts kept records that were modified; changes to a record that is then dropped are not
reported separately (the record's drop issue is).

Duplicate IDs in bounded memory (:func:`validate_fasta`): pass 1 (:func:`plmscale.fasta.repeated_id_hashes`)
finds the hashes of the IDs seen twice or more, spilling to bucket files; pass 2 validates and keeps an exact
``ID -> line`` dict only for IDs whose hash is among them. Memory: a block, a chunk of hashes, a bucket and
the duplicated IDs, whatever the number of records. Both passes must run in one process (salted ``hash``).
"""

from __future__ import annotations

import dataclasses
import gzip
import io
import os
import re
import tempfile
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, TextIO

from plmscale.atomic import atomic_path, write_json_atomic
from plmscale.fasta import FastaRecord, format_record, read_fasta, repeated_id_hashes

__all__ = [
    "ESM_RESIDUES",
    "ISSUE_COLUMNS",
    "Issue",
    "ValidationPolicy",
    "ValidationResult",
    "Validator",
    "validate_fasta",
    "validate_records",
]

ESM_RESIDUES = "LAGVSERTIDPKQNFYMHWCXBUZO"
"""Residue letters of the 33-token ESM-2 vocabulary (in vocabulary order)."""

ISSUE_COLUMNS = ("record", "line", "position", "char", "reason", "action", "detail")
"""Columns of the issues TSV (and keys of the report's ``examples``)."""

_ESM_BYTES = ESM_RESIDUES.encode("ascii")
_LOWER_BYTES = b"abcdefghijklmnopqrstuvwxyz"
_INVALID_RE = re.compile(f"[^{ESM_RESIDUES}]")
_LOWER_RE = re.compile("[a-z]")
_ASCII_UPPER = str.maketrans("abcdefghijklmnopqrstuvwxyz", "ABCDEFGHIJKLMNOPQRSTUVWXYZ")
_GAPS = frozenset("-.")
_DROP_HINT = "or set validate.on_invalid: drop to drop such records with a report."

OnInvalid = Literal["drop", "error"]


@dataclass(frozen=True)
class ValidationPolicy:
    """How to treat fixable and invalid records (see the module docstring for the rules)."""

    uppercase: bool = True
    strip_terminal_stop: bool = True
    min_length: int = 1
    max_length: int | None = None
    on_invalid: OnInvalid = "drop"
    report_examples: int = 10

    def __post_init__(self) -> None:
        for name in ("uppercase", "strip_terminal_stop"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"validate.{name} must be true or false, got {getattr(self, name)!r}")
        if not _is_int(self.min_length) or self.min_length < 1:
            raise ValueError(f"validate.min_length must be an integer >= 1, got {self.min_length!r}")
        max_ok = self.max_length is None or (_is_int(self.max_length) and self.max_length >= self.min_length)
        if not max_ok:
            raise ValueError(
                f"validate.max_length must be null or an integer >= min_length ({self.min_length}), "
                f"got {self.max_length!r}"
            )
        if self.on_invalid not in ("drop", "error"):
            raise ValueError(f"validate.on_invalid must be 'drop' or 'error', got {self.on_invalid!r}")
        if not _is_int(self.report_examples) or self.report_examples < 0:
            raise ValueError(
                f"validate.report_examples must be an integer >= 0, got {self.report_examples!r}"
            )

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ValidationPolicy:
        """Build a policy from a config mapping; unknown keys are rejected with the allowed keys listed."""
        allowed = [f.name for f in dataclasses.fields(cls)]
        unknown = sorted(set(data) - set(allowed))
        if unknown:
            raise ValueError(f"validate: unknown key(s) {unknown}; allowed keys are {allowed}")
        return cls(**dict(data))

    def to_dict(self) -> dict[str, Any]:
        """Return the policy as a plain dict (as recorded in the report)."""
        return dataclasses.asdict(self)


def _is_int(value: object) -> bool:
    """True for a real ``int`` (``bool`` excluded)."""
    return isinstance(value, int) and not isinstance(value, bool)


def _tsv_field(text: str | None) -> str:
    """A TSV cell: ``None`` is empty; unprintable characters and backslashes become Python escapes."""
    if text is None:
        return ""
    return text if text.isprintable() and "\\" not in text else ascii(text)[1:-1]


@dataclass(slots=True)
class Issue:
    """One reported change or drop. ``position`` is 1-based in the record's sequence (slotted, not frozen:
    cheaper to build, and an input where every record is changed builds one per record)."""

    record: str
    line: int
    reason: str
    action: Literal["changed", "dropped"]
    position: int | None = None
    char: str | None = None
    detail: str = ""

    def as_report(self) -> dict[str, Any]:
        """The issue as it appears in the JSON report's ``examples``."""
        return {name: getattr(self, name) for name in ISSUE_COLUMNS}

    def tsv_row(self) -> str:
        """The issue as one line of the issues TSV (columns :data:`ISSUE_COLUMNS`)."""
        position = "" if self.position is None else str(self.position)
        cells = (_tsv_field(self.record), str(self.line), position, _tsv_field(self.char))
        return "\t".join((*cells, self.reason, self.action, self.detail)) + "\n"

    def message(self, path: str) -> str:
        """A user-facing error message ``{path}:{line}: record 'X': ... Fix: ...``."""
        return f"{path}:{self.line}: record {self.record!r}: {self.detail}"


_CHAR_TEXT = {  # reason -> (what, fix) of an invalid character
    "terminal_stop": ("terminal stop {where}", "remove it, set validate.strip_terminal_stop: true"),
    "internal_stop": ("internal stop codon {where} ({abc})", "remove or replace the residue (e.g. with X)"),
    "gap": ("gap character {where}; aligned input is not accepted", "remove gaps (unalign the sequences)"),
    "digit": ("digit {where} ({abc})", "remove the numbering"),
    "lowercase": ("lowercase residue {where}", "uppercase the sequence, set validate.uppercase: true"),
    "invalid_character": ("invalid character {where} ({abc})", "remove or replace the residue"),
}


def _char_issue(record: FastaRecord, seq: str, index: int) -> Issue:
    """Classify the invalid character ``seq[index]`` into a dropped :class:`Issue` with a fix hint."""
    char, pos = seq[index], index + 1
    if char == "*":
        reason = "terminal_stop" if pos == len(seq) else "internal_stop"
    elif char in _GAPS:
        reason = "gap"
    elif char.isdigit():
        reason = "digit"
    elif "a" <= char <= "z":
        reason = "lowercase"
    else:
        reason = "invalid_character"
    what, fix = _CHAR_TEXT[reason]
    what = what.format(where=f"{char!r} at position {pos}", abc=f"not in the ESM-2 alphabet {ESM_RESIDUES}")
    return Issue(record.id, record.line, reason, "dropped", pos, char, f"{what}. Fix: {fix}, {_DROP_HINT}")


def _dropped(record: FastaRecord, reason: str, detail: str) -> Issue:
    return Issue(record.id, record.line, reason, "dropped", detail=f"{detail}, {_DROP_HINT}")


def _length_issue(record: FastaRecord, length: int, policy: ValidationPolicy) -> Issue | None:
    """Return a dropped issue if ``length`` is outside the policy's bounds."""
    if length < policy.min_length:
        what = f"is below validate.min_length {policy.min_length}. Fix: lower validate.min_length"
        return _dropped(record, "too_short", f"length {length} {what}")
    if policy.max_length is not None and length > policy.max_length:
        what = f"exceeds validate.max_length {policy.max_length}. Fix: raise or unset validate.max_length"
        return _dropped(record, "too_long", f"length {length} {what}")
    return None


def _normalise(record: FastaRecord, policy: ValidationPolicy, lower: bool) -> tuple[str, list[Issue]]:
    """Apply the fixable rules (whitespace, uppercase, terminal stop); return the sequence and changes.

    ``lower``: whether the sequence has an ASCII lowercase letter. The sequence object is returned as is
    when nothing was changed in it.
    """
    seq, rid, line = record.sequence, record.id, record.line
    changes: list[Issue] = []
    if record.whitespace:
        detail = (
            f"{record.whitespace} whitespace character(s) inside sequence lines removed (the first before "
            f"residue {record.whitespace_at})"
        )
        changes.append(Issue(rid, line, "whitespace", "changed", record.whitespace_at, None, detail))
    if policy.uppercase and lower:
        match = _LOWER_RE.search(seq)
        if match is not None:
            char, pos = match.group(), match.start() + 1
            detail = f"lowercase residues uppercased (the first {char!r} at position {pos})"
            changes.append(Issue(rid, line, "lowercase", "changed", pos, char, detail))
            seq = seq.translate(_ASCII_UPPER)  # ASCII only: str.upper() could change the length ('ß')
    if policy.strip_terminal_stop and seq.endswith("*"):
        detail = "terminal stop '*' removed"
        changes.append(Issue(rid, line, "terminal_stop", "changed", len(seq), "*", detail))
        seq = seq[:-1]
    return seq, changes


def _not_esm(seq: str) -> bytes:
    """The bytes of ``seq`` outside ``ESM_RESIDUES``, in order (a bytes ``translate``: fast)."""
    return seq.encode("utf-8", "surrogatepass").translate(None, _ESM_BYTES)


def _judge(record: FastaRecord, policy: ValidationPolicy) -> tuple[str, list[Issue], Issue | None]:
    """Rules 1-6 for one record (duplicates aside): (normalised sequence, changes, drop issue or None)."""
    seq = record.sequence
    bad = _not_esm(seq)
    if seq and not bad and not record.whitespace:
        return seq, [], _length_issue(record, len(seq), policy)  # fast path: nothing to change
    seq, changes = _normalise(record, policy, len(bad.translate(None, _LOWER_BYTES)) < len(bad))
    if not seq:
        stripped = " after stripping the terminal stop" if record.sequence else ""
        detail = f"empty sequence{stripped}. Fix: remove the record or add its sequence"
        return seq, changes, _dropped(record, "empty", detail)
    if seq is not record.sequence:
        bad = _not_esm(seq)
    if bad:
        match = _INVALID_RE.search(seq)
        assert match is not None
        return seq, changes, _char_issue(record, seq, match.start())
    return seq, changes, _length_issue(record, len(seq), policy)


class _KeptIds:
    """The header line of the first kept record per ID, exactly; only for IDs whose hash is a suspect.

    ``suspects=None`` tracks every ID (exact, memory grows with the records: for in-memory use).
    """

    def __init__(self, suspects: set[int] | None = None) -> None:
        self.suspects = suspects
        self.first: dict[str, int] = {}

    def keep(self, record_id: str, line: int) -> int | None:
        """Register a valid record; return the first kept line of its ID if it is a duplicate, else None."""
        if self.suspects is not None and hash(record_id) not in self.suspects:
            return None
        first = self.first.get(record_id)
        if first is None:
            self.first[record_id] = line
        return first


class Validator:
    """The streaming core: :meth:`judge` one record at a time; counts and examples in bounded memory.

    Every issue goes to ``on_issue`` (if given); the report keeps counts per reason and the first
    ``policy.report_examples`` issues per (action, reason). ``kept_ids`` decides duplicates (default: an
    exact dict of every kept ID, for inputs that fit in memory).
    """

    def __init__(
        self,
        policy: ValidationPolicy,
        *,
        source: str,
        path: str,
        kept_ids: _KeptIds | None = None,
        on_issue: Callable[[Issue], None] | None = None,
    ) -> None:
        self.policy, self.source, self.path = policy, source, path
        self.kept_ids = kept_ids if kept_ids is not None else _KeptIds()
        self.on_issue = on_issue
        self.counts: dict[str, Counter[str]] = {"changed": Counter(), "dropped": Counter()}
        self.examples: list[dict[str, Any]] = []
        self.n_records = self.n_kept = self.n_changed = self.n_residues = self.n_issues = 0

    def _add(self, issue: Issue) -> None:
        counter = self.counts[issue.action]
        counter[issue.reason] += 1
        self.n_issues += 1
        if counter[issue.reason] <= self.policy.report_examples:
            self.examples.append(issue.as_report())
        if self.on_issue is not None:
            self.on_issue(issue)

    def judge(self, record: FastaRecord) -> str | None:
        """Judge ``record``: its normalised sequence if kept, None if dropped (raises in error mode)."""
        self.n_records += 1
        seq, changes, drop = _judge(record, self.policy)
        if drop is None:
            first = self.kept_ids.keep(record.id, record.line)
            if first is not None:
                detail = f"duplicate ID; first kept occurrence at line {first}. Fix: make record IDs unique"
                drop = _dropped(record, "duplicate_id", detail)
        if drop is not None:
            if self.policy.on_invalid == "error":
                raise ValueError(drop.message(self.path))
            self._add(drop)
            return None
        if changes:
            self.n_changed += 1
            for issue in changes:
                self._add(issue)
        self.n_kept += 1
        self.n_residues += len(seq)
        return seq

    def report(self) -> dict[str, Any]:
        """The JSON-ready report: counts per reason and the capped examples."""
        return {
            "source": self.source,
            "path": self.path,
            "policy": self.policy.to_dict(),
            "n_records": self.n_records,
            "n_kept": self.n_kept,
            "n_changed": self.n_changed,
            "n_dropped": self.n_records - self.n_kept,
            "n_residues_kept": self.n_residues,
            "n_issues": self.n_issues,
            "changed_by_reason": dict(sorted(self.counts["changed"].items())),
            "dropped_by_reason": dict(sorted(self.counts["dropped"].items())),
            "examples": list(self.examples),
        }


@dataclass
class ValidationResult:
    """Kept records as (id, normalised sequence) pairs, in file order, plus the JSON-ready report."""

    kept: list[tuple[str, str]]
    report: dict[str, Any] = field(default_factory=dict)


def validate_records(
    records: Iterable[FastaRecord],
    policy: ValidationPolicy,
    *,
    source: str,
    path: str,
    on_issue: Callable[[Issue], None] | None = None,
) -> ValidationResult:
    """Validate ``records`` (from the file ``path`` of dataset ``source``) in memory under ``policy``.

    For inputs that fit in memory (tests, the embedded sources): returns the kept (id, normalised sequence)
    pairs in input order and the report; every issue also goes to ``on_issue`` if given. With
    ``policy.on_invalid == "error"`` the first invalid record raises ``ValueError`` naming the file, header
    line, record, character/position where applicable, and the fix. :func:`validate_fasta` is the
    bounded-memory version for files.
    """
    validator = Validator(policy, source=source, path=path, on_issue=on_issue)
    kept = [(r.id, seq) for r in records if (seq := validator.judge(r)) is not None]
    return ValidationResult(kept=kept, report=validator.report())


@contextmanager
def _issues_writer(path: Path) -> Iterator[TextIO]:
    """A gzip TSV (deterministic: no name or time in the gzip header) with the header row written."""
    with (
        open(path, "wb") as raw,
        gzip.GzipFile(filename="", mode="wb", compresslevel=3, fileobj=raw, mtime=0) as packed,
        io.TextIOWrapper(packed, encoding="utf-8", newline="\n") as text,
    ):
        text.write("\t".join(ISSUE_COLUMNS) + "\n")
        yield text


def _no_valid_records(in_path: Path, source: str, report: Mapping[str, Any]) -> ValueError:
    return ValueError(
        f"{in_path}: source {source!r} has no valid records ({report['n_records']} records read, "
        f"dropped by reason: {report['dropped_by_reason'] or {}}). Fix: check that the file is a non-empty "
        "protein FASTA and that the validate policy fits it."
    )


def validate_fasta(
    in_path: str | os.PathLike[str],
    out_fasta: str | os.PathLike[str],
    out_report_json: str | os.PathLike[str],
    out_issues_tsv: str | os.PathLike[str],
    policy: ValidationPolicy,
    *,
    source: str,
    scratch: str | os.PathLike[str] | None = None,
) -> dict[str, Any]:
    """Validate ``in_path`` in bounded memory; write the kept records, the report and every issue.

    ``out_fasta`` gets the kept records (ID and normalised sequence, 60 residues a line), ``out_issues_tsv``
    every change and drop (gzip TSV, columns :data:`ISSUE_COLUMNS`), ``out_report_json`` the counts and
    examples (it names the TSV). All three are atomic: on any error none of them exists afterwards (unless
    it did before). ``scratch`` holds the duplicate-ID buckets (default: a hidden temporary directory
    beside ``out_fasta``). Raises ``ValueError`` naming the file if no record is kept.
    """
    in_path, out_fasta = Path(in_path), Path(out_fasta)
    with tempfile.TemporaryDirectory(prefix=".validate-", dir=scratch or out_fasta.parent) as tmp:
        suspects = repeated_id_hashes(in_path, tmp)
    with (
        atomic_path(out_report_json) as tmp_report,
        atomic_path(out_fasta) as tmp_fasta,
        atomic_path(out_issues_tsv) as tmp_issues,
        open(tmp_fasta, "w", encoding="utf-8", newline="\n") as fasta,
        _issues_writer(tmp_issues) as issues,
    ):  # committed on leaving: issues, FASTA, then the report
        validator = Validator(
            policy,
            source=source,
            path=str(in_path),
            kept_ids=_KeptIds(suspects),
            on_issue=lambda issue: issues.write(issue.tsv_row()),
        )
        for record in read_fasta(in_path):
            seq = validator.judge(record)
            if seq is not None:
                fasta.write(format_record(record.id, seq))
        report = validator.report()
        if not report["n_kept"]:
            raise _no_valid_records(in_path, source, report)
        report["issues_tsv"] = str(out_issues_tsv)
        write_json_atomic(tmp_report, report)
    return report
