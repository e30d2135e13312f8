"""The key check of the typed results' ``from_dict``: a dict must hold exactly a dataclass's fields."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import fields
from typing import Any


def check_keys(
    cls: type, data: Mapping[str, Any], what: str, *, partial: bool = False, hint: str = ""
) -> None:
    """Raise ``ValueError`` naming ``what`` when ``data`` has keys that are not fields of ``cls``, or (unless
    ``partial``: fields with defaults may be left out) lacks some; ``hint`` is appended (the fix)."""
    expected = {f.name for f in fields(cls)}
    missing = [] if partial else sorted(expected - set(data))
    unknown = sorted(set(data) - expected)
    if missing or unknown:
        raise ValueError(
            f"{what}: missing keys {missing}, unknown keys {unknown}{'; ' + hint if hint else ''}"
        )
