"""Provenance helpers: a digest of the package code a stage runs, used as a Snakemake param.

Snakemake reruns a job when its script changes, but not when a package module it imports does.  Each
rule therefore carries ``code=code_digest(<modules>)``: an edit to one of those modules reruns the rule
and only the rules that use it.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parent


def code_digest(*modules: str) -> str:
    """sha256 (first 16 hex digits) over the sources of ``plmscale.<module>`` for each name given."""
    digest = hashlib.sha256()
    for name in sorted(set(modules)):
        path = PACKAGE_DIR / f"{name}.py"
        if not path.is_file():
            raise ValueError(f"code_digest: no module plmscale.{name} at {path}")
        digest.update(name.encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()[:16]
