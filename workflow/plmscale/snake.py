"""Small helpers for the thin entry points in ``scripts/`` (run by Snakemake's ``script:`` directive)."""

from __future__ import annotations

import contextlib
import sys
import traceback
from collections.abc import Iterator
from pathlib import Path


@contextlib.contextmanager
def logged(log_path: str | Path) -> Iterator[None]:
    """Send stdout and stderr of the job (Python and its warnings) to the rule's ``log:`` file."""
    Path(log_path).parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "w", buffering=1) as handle:
        old = sys.stdout, sys.stderr
        sys.stdout = sys.stderr = handle
        try:
            yield
        except BaseException:
            traceback.print_exc(file=handle)  # the log shows why the job failed; Snakemake shows it too
            raise
        finally:
            sys.stdout, sys.stderr = old
