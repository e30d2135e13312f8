"""Download of URL sources (http, https, file) with checksum verification and an atomic rename.

The body is streamed to ``<output>.part`` while its sha256/md5 is computed; only when the checksum
configured for the source matches is the file renamed to its final name.  A mismatch, an HTTP error or
a truncated body (fewer bytes than Content-Length) raises and leaves no output behind.
"""

from __future__ import annotations

import hashlib
import os
import urllib.request
from pathlib import Path
from urllib.parse import urlparse

SCHEMES = ("http", "https", "file")
CHUNK = 1 << 20


def download(
    url: str, output: Path, *, sha256: str | None = None, md5: str | None = None, timeout: float = 60.0
) -> dict:
    """Fetch ``url`` to ``output``; returns {url, bytes, sha256, md5}.  At least one checksum is required."""
    scheme = urlparse(url).scheme
    if scheme not in SCHEMES:
        raise ValueError(f"source url {url!r} has scheme {scheme!r}; supported: {SCHEMES}")
    if not sha256 and not md5:
        raise ValueError(
            f"source url {url!r} has no sha256 or md5 in the config; add one so the file is verified"
        )
    output = Path(output)
    part = output.with_name(output.name + ".part")
    hashes = {"sha256": hashlib.sha256(), "md5": hashlib.md5()}
    size = 0
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response, open(part, "wb") as out:
            expected = response.headers.get("Content-Length") if scheme != "file" else None
            while chunk := response.read(CHUNK):
                out.write(chunk)
                size += len(chunk)
                for h in hashes.values():
                    h.update(chunk)
            out.flush()
            os.fsync(out.fileno())
        if expected is not None and int(expected) != size:
            raise OSError(f"download of {url} truncated: got {size} of {expected} bytes; retry")
        got = {name: h.hexdigest() for name, h in hashes.items()}
        for name, want in (("sha256", sha256), ("md5", md5)):
            if want and got[name] != want.lower():
                raise ValueError(
                    f"checksum mismatch for {url}: {name} is {got[name]}, config says {want}; the file "
                    "changed upstream or was corrupted: check the source and update the checksum"
                )
        os.replace(part, output)
    finally:
        if part.exists():
            part.unlink()
    return {"url": url, "bytes": size, **got}
