"""Validate protein FASTA records against the ESM-2 residue alphabet, with a full report.

Nothing is changed or dropped silently: every normalisation (uppercasing, stripping a terminal ``*``) and
every dropped record appears in the report's ``issues`` list with record ID, header line, 1-based position
and character. With ``on_invalid="error"`` the first invalid record raises ``ValueError`` instead.

Rules, in the order they are checked for each record:

1. duplicate ID (second and later occurrences; the first occurrence is judged on its own) -> invalid
2. lowercase letters -> uppercased ("changed", reason ``lowercase``) if ``policy.uppercase``
3. a single terminal ``*`` -> stripped ("changed", reason ``terminal_stop``) if ``policy.strip_terminal_stop``
4. empty sequence (after step 3) -> invalid ``empty``
5. first character outside ``ESM_RESIDUES`` -> invalid, reason by kind: ``internal_stop`` / ``terminal_stop``
   (``*``), ``gap`` (``-`` ``.``), ``digit``, ``lowercase`` (when not uppercasing), else ``invalid_character``
6. length outside ``[min_length, max_length]`` -> invalid ``too_short`` / ``too_long``

``n_changed`` counts kept records that were modified; changes to a record that is then dropped are not
reported separately (the record's drop issue is).
"""

from __future__ import annotations

import dataclasses
import os
import re
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from plmscale.atomic import write_json_atomic
from plmscale.fasta import FastaRecord, read_fasta, write_fasta

__all__ = [
    "ESM_RESIDUES",
    "Issue",
    "ValidationPolicy",
    "ValidationResult",
    "validate_fasta",
    "validate_records",
]

ESM_RESIDUES = "LAGVSERTIDPKQNFYMHWCXBUZO"
"""Residue letters of the 33-token ESM-2 vocabulary (in vocabulary order)."""

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


@dataclass(frozen=True)
class Issue:
    """One reported change or drop. ``position`` is 1-based in the record's sequence."""

    record: str
    line: int
    reason: str
    action: Literal["changed", "dropped"]
    position: int | None = None
    char: str | None = None
    detail: str = ""

    def as_report(self) -> dict[str, Any]:
        """The issue as it appears in the JSON report."""
        return {
            "record": self.record,
            "line": self.line,
            "position": self.position,
            "char": self.char,
            "reason": self.reason,
            "action": self.action,
        }

    def message(self, path: str) -> str:
        """A user-facing error message ``{path}:{line}: record 'X': ... Fix: ...``."""
        return f"{path}:{self.line}: record {self.record!r}: {self.detail}"


@dataclass
class ValidationResult:
    """Kept records as (id, normalised sequence) pairs, in file order, plus the JSON-ready report."""

    kept: list[tuple[str, str]]
    report: dict[str, Any] = field(default_factory=dict)


def _char_issue(record: FastaRecord, seq: str, index: int) -> Issue:
    """Classify the invalid character ``seq[index]`` into a dropped :class:`Issue` with a fix hint."""
    char, pos = seq[index], index + 1
    where = f"{char!r} at position {pos}"
    if char == "*" and index == len(seq) - 1:
        reason = "terminal_stop"
        detail = (
            f"terminal stop {where}. Fix: remove it, set validate.strip_terminal_stop: true, {_DROP_HINT}"
        )
    elif char == "*":
        reason = "internal_stop"
        detail = (
            f"internal stop codon {where} (not in the ESM-2 alphabet {ESM_RESIDUES}). Fix: remove or "
            f"replace the residue (e.g. with X), {_DROP_HINT}"
        )
    elif char in _GAPS:
        reason = "gap"
        detail = (
            f"gap character {where}; aligned input is not accepted. Fix: remove gaps (unalign the "
            f"sequences), {_DROP_HINT}"
        )
    elif char.isdigit():
        reason = "digit"
        detail = (
            f"digit {where} (not in the ESM-2 alphabet {ESM_RESIDUES}). Fix: remove the numbering, "
            f"{_DROP_HINT}"
        )
    elif "a" <= char <= "z":
        reason = "lowercase"
        detail = (
            f"lowercase residue {where}. Fix: uppercase the sequence, set validate.uppercase: true, "
            f"{_DROP_HINT}"
        )
    else:
        reason = "invalid_character"
        detail = (
            f"invalid character {where} (not in the ESM-2 alphabet {ESM_RESIDUES}). Fix: remove or "
            f"replace the residue, {_DROP_HINT}"
        )
    return Issue(record.id, record.line, reason, "dropped", pos, char, detail)


def _length_issue(record: FastaRecord, length: int, policy: ValidationPolicy) -> Issue | None:
    """Return a dropped issue if ``length`` is outside the policy's bounds."""
    if length < policy.min_length:
        return Issue(
            record.id,
            record.line,
            "too_short",
            "dropped",
            detail=(
                f"length {length} is below validate.min_length {policy.min_length}. Fix: lower "
                f"validate.min_length, {_DROP_HINT}"
            ),
        )
    if policy.max_length is not None and length > policy.max_length:
        return Issue(
            record.id,
            record.line,
            "too_long",
            "dropped",
            detail=(
                f"length {length} exceeds validate.max_length {policy.max_length}. Fix: raise or unset "
                f"validate.max_length, {_DROP_HINT}"
            ),
        )
    return None


def _normalise(record: FastaRecord, policy: ValidationPolicy) -> tuple[str, list[Issue]]:
    """Apply the fixable rules (uppercase, terminal stop); return the new sequence and 'changed' issues."""
    seq = record.sequence
    changes: list[Issue] = []
    if policy.uppercase:
        match = _LOWER_RE.search(seq)
        if match is not None:
            changes.append(
                Issue(record.id, record.line, "lowercase", "changed", match.start() + 1, match.group())
            )
            seq = seq.translate(_ASCII_UPPER)  # ASCII only: str.upper() could change the length ('ß')
    if policy.strip_terminal_stop and seq.endswith("*"):
        changes.append(Issue(record.id, record.line, "terminal_stop", "changed", len(seq), "*"))
        seq = seq[:-1]
    return seq, changes


def _check_record(
    record: FastaRecord, policy: ValidationPolicy, first_seen: dict[str, int]
) -> tuple[str, list[Issue], Issue | None]:
    """Validate one record: return (normalised sequence, change issues, drop issue or None)."""
    first_line = first_seen.get(record.id)
    if first_line is None:
        first_seen[record.id] = record.line
    else:
        return (
            record.sequence,
            [],
            Issue(
                record.id,
                record.line,
                "duplicate_id",
                "dropped",
                detail=(
                    f"duplicate ID; first occurrence at line {first_line}. Fix: make record IDs unique, "
                    f"{_DROP_HINT}"
                ),
            ),
        )
    seq, changes = _normalise(record, policy)
    if not seq:
        return (
            seq,
            changes,
            Issue(
                record.id,
                record.line,
                "empty",
                "dropped",
                detail=(
                    f"empty sequence{' after stripping the terminal stop' if record.sequence else ''}. "
                    f"Fix: remove the record or add its sequence, {_DROP_HINT}"
                ),
            ),
        )
    bad = _INVALID_RE.search(seq)
    if bad is not None:
        return seq, changes, _char_issue(record, seq, bad.start())
    return seq, changes, _length_issue(record, len(seq), policy)


def validate_records(
    records: Iterable[FastaRecord], policy: ValidationPolicy, *, source: str, path: str
) -> ValidationResult:
    """Validate ``records`` (from the file ``path`` of dataset ``source``) under ``policy``.

    Returns the kept (id, normalised sequence) pairs in input order and the report. With
    ``policy.on_invalid == "error"`` the first invalid record raises ``ValueError`` naming the file, header
    line, record, character/position where applicable, and the fix.
    """
    kept: list[tuple[str, str]] = []
    issues: list[Issue] = []
    first_seen: dict[str, int] = {}
    changed_by: Counter[str] = Counter()
    dropped_by: Counter[str] = Counter()
    n_records = n_changed = 0
    for record in records:
        n_records += 1
        seq, changes, drop = _check_record(record, policy, first_seen)
        if drop is not None:
            if policy.on_invalid == "error":
                raise ValueError(drop.message(path))
            issues.append(drop)
            dropped_by[drop.reason] += 1
            continue
        if changes:
            n_changed += 1
            issues.extend(changes)
            changed_by.update(issue.reason for issue in changes)
        kept.append((record.id, seq))
    report = {
        "source": source,
        "path": path,
        "policy": policy.to_dict(),
        "n_records": n_records,
        "n_kept": len(kept),
        "n_changed": n_changed,
        "n_dropped": n_records - len(kept),
        "changed_by_reason": dict(sorted(changed_by.items())),
        "dropped_by_reason": dict(sorted(dropped_by.items())),
        "issues": [issue.as_report() for issue in issues],
    }
    assert report["n_dropped"] == sum(dropped_by.values())
    return ValidationResult(kept=kept, report=report)


def validate_fasta(
    in_path: str | os.PathLike[str],
    out_fasta: str | os.PathLike[str],
    out_report_json: str | os.PathLike[str],
    policy: ValidationPolicy,
    *,
    source: str,
) -> dict[str, Any]:
    """Validate ``in_path``; write kept records to ``out_fasta`` and the report to ``out_report_json``.

    Both outputs are written atomically (FASTA first, report last). Raises ``ValueError`` naming the file
    if no record is kept (an empty or entirely invalid source is an error, not an empty dataset).
    """
    in_path = Path(in_path)
    result = validate_records(read_fasta(in_path), policy, source=source, path=str(in_path))
    report = result.report
    if not result.kept:
        reasons = report["dropped_by_reason"] or {}
        raise ValueError(
            f"{in_path}: source {source!r} has no valid records ({report['n_records']} records read, "
            f"dropped by reason: {reasons}). Fix: check that the file is a non-empty protein FASTA and "
            "that the validate policy fits it."
        )
    write_fasta(result.kept, out_fasta)
    write_json_atomic(out_report_json, report)
    return report
