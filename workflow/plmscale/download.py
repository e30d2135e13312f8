"""Resumable, verified downloads of URL sources (http, https, file) with a manifest.

The body is streamed to ``<output>.part``; the validators of that partial body (ETag, Last-Modified, URL)
sit next to it in ``<output>.part.json``, written atomically before any byte of a new body.  Neither is a
declared Snakemake output, so both survive a failed job and the retry resumes where the last one stopped.

Resuming follows RFC 7233 (HTTP/1.1 Range Requests): the request carries ``Range: bytes=N-`` and
``If-Range: <strong ETag or Last-Modified of the partial body>`` (§3.1, §3.2; MDN "If-Range").

* ``206 Partial Content`` whose ``Content-Range`` starts at byte N (§4.1): the bytes are appended.
* ``200 OK``: the file changed on the server (If-Range failed) or the server ignores Range; the .part is
  truncated and the download restarts from 0, and the log says which.  Two versions are never spliced.
* ``416 Range Not Satisfiable`` (§4.4): the .part is not a prefix of the server's file; restart from 0.

Each job retries on its own (``download.retries`` attempts after the first, exponential backoff with
jitter); a socket read timeout or a stall (fewer than ``stall_min_bytes`` in ``stall_window_s``) fails the
attempt.  The finished body must match its size and its sha256/md5, from the config or from a metalink
(:mod:`plmscale.metalink`): a short body keeps the .part for the next attempt, a full body with a wrong
checksum is deleted.  Only then is the .part renamed onto the output and the manifest written, last.
"""

from __future__ import annotations

import functools
import hashlib
import http.client
import json
import os
import re
import shutil
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, fields, replace
from datetime import UTC, datetime
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import unquote, urlparse

from plmscale.atomic import write_json_atomic
from plmscale.http_get import (
    DownloadSettings,
    PermanentHTTPError,
    RangeNotSatisfiable,
    ShortBodyError,
    StalledError,
    Tally,
    fetch_small,
    open_url,
    read_chunk,
    reject_html,
    stream_body,
    with_retries,
)
from plmscale.metalink import parse_metalink
from plmscale.typed import check_keys

__all__ = [
    "ChecksumMismatch",
    "DownloadManifest",
    "DownloadSettings",
    "PermanentHTTPError",
    "ShortBodyError",
    "StalledError",
    "download",
    "fetch",
]

SCHEMES = ("http", "https", "file")
CHUNK = 1 << 20
Log = Callable[[str], object]


@dataclass(frozen=True)
class DownloadManifest:
    """What was downloaded and how: written as ``<source>.manifest.json`` after the verified rename."""

    url: str
    release: str | None
    bytes: int
    md5: str
    sha256: str
    checksum_origin: str  # "config", "metalink <url>", or the caller's ``checksum_origin`` (see fetch)
    etag: str | None
    last_modified: str | None
    attempts: int
    resumed_from_bytes: tuple[int, ...]
    bytes_transferred: int
    date: str  # UTC, ISO 8601

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (``resumed_from_bytes`` as a list)."""
        data = asdict(self)
        data["resumed_from_bytes"] = list(self.resumed_from_bytes)
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> DownloadManifest:
        """The inverse of :meth:`to_dict`; missing or unknown keys raise ``ValueError``."""
        check_keys(cls, data, "download manifest")
        values = {f.name: data[f.name] for f in fields(cls)}
        values["resumed_from_bytes"] = tuple(int(n) for n in data["resumed_from_bytes"])
        return cls(**values)


class ChecksumMismatch(ValueError):
    """A complete body whose size or checksum differs from the expected one (the .part was deleted).

    ``expected`` and ``actual`` map ``"sha256"``/``"md5"``/``"size"`` to the values compared (only those
    that were expected), so that a caller can explain the mismatch in its own terms.
    """

    def __init__(self, message: str, expected: dict[str, Any], actual: dict[str, Any]) -> None:
        super().__init__(message)
        self.expected, self.actual = expected, actual


@dataclass(frozen=True)
class _Expected:
    sha256: str | None
    md5: str | None
    size: int | None
    release: str | None
    origin: str


# ---------------------------------------------------------------------------------------------- public


def fetch(
    url: str,
    output: str | os.PathLike[str],
    *,
    sha256: str | None = None,
    md5: str | None = None,
    size: int | None = None,
    metalink: str | None = None,
    release: str | None = None,
    manifest: str | os.PathLike[str] | None = None,
    settings: DownloadSettings | None = None,
    log: Log = print,
    unverified_ok: bool = False,
    checksum_origin: str | None = None,
) -> DownloadManifest:
    """Download ``url`` to ``output``, verified; write ``manifest`` (if given) last and return it.

    At least one of ``sha256``, ``md5`` or ``metalink`` (a RELEASE.metalink naming the file's size and md5)
    is required, unless ``unverified_ok`` is true: then a file without any checksum is downloaded as is
    (still refused if it is an HTML page), and its observed sha256/md5 are returned for the caller to record
    (:mod:`plmscale.locdata` writes them into a lock file).  ``checksum_origin`` replaces "config" as the
    name of where ``sha256``/``md5`` came from, in the manifest and in error messages (e.g. "lock <path>";
    for an unverified download, e.g. "none: first download, recorded in lock <path>").
    ``release`` pins the metalink's release; ``size`` is the expected length in bytes.
    Raises ``OSError`` for network failures after the retries (the .part is kept: rerun to resume) and
    ``ValueError`` for wrong content (HTML page, release mismatch; :class:`ChecksumMismatch` for a checksum
    or size mismatch).
    """
    settings = settings or DownloadSettings()
    _check_scheme(url)
    if unverified_ok and not (sha256 or md5 or metalink):
        expected = _Expected(None, None, size, release, checksum_origin or "none: unverified download")
    else:
        expected = _expected(url, sha256, md5, size, metalink, release, settings, log)
        if checksum_origin and expected.origin == "config":
            expected = replace(expected, origin=checksum_origin)
    output = Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    part = output.with_name(output.name + ".part")
    sidecar = part.with_name(part.name + ".json")
    tally = Tally()
    if urlparse(url).scheme == "file":
        _copy_file(url, part, tally)
    else:
        attempt = functools.partial(_http_attempt, url, part, sidecar, expected, settings, log, tally)
        with_retries(url, settings, log, tally, attempt)
    nbytes, md5_got, sha256_got = _verify(url, part, sidecar, expected)
    os.replace(part, output)
    sidecar.unlink(missing_ok=True)
    _fsync_dir(output.parent)
    result = DownloadManifest(
        url=url, release=expected.release, bytes=nbytes, md5=md5_got, sha256=sha256_got,
        checksum_origin=expected.origin, etag=tally.etag, last_modified=tally.last_modified,
        attempts=tally.attempts, resumed_from_bytes=tuple(tally.resumed_from),
        bytes_transferred=tally.transferred, date=datetime.now(UTC).isoformat(timespec="seconds"),
    )  # fmt: skip
    checked = "NOT verified (no checksum)" if not (expected.sha256 or expected.md5) else "verified against"
    log(
        f"download {url}: {nbytes} bytes {checked} {expected.origin} (md5 {md5_got}); "
        f"{tally.attempts} attempt(s), resumed at {tally.resumed_from or 'none'}, "
        f"{tally.transferred} bytes transferred"
    )
    if manifest is not None:
        write_json_atomic(manifest, result.to_dict())
    return result


def download(
    url: str,
    output: str | os.PathLike[str],
    *,
    sha256: str | None = None,
    md5: str | None = None,
    timeout: float | None = None,
    settings: DownloadSettings | None = None,
    log: Log = print,
) -> dict[str, Any]:
    """:func:`fetch` with config checksums only; returns the manifest as a dict (``bytes``, ``md5``, ...).

    ``timeout`` overrides ``settings.read_timeout_s``.
    """
    settings = settings or DownloadSettings()
    if timeout is not None:
        settings = replace(settings, read_timeout_s=float(timeout))
    return fetch(url, output, sha256=sha256, md5=md5, settings=settings, log=log).to_dict()


# ------------------------------------------------------------------------------------ expected values


def _check_scheme(url: str) -> None:
    scheme = urlparse(url).scheme
    if scheme not in SCHEMES:
        raise ValueError(f"source url {url!r} has scheme {scheme!r}; supported: {SCHEMES}")


def _expected(
    url: str, sha256: str | None, md5: str | None, size: int | None, metalink: str | None,
    release: str | None, settings: DownloadSettings, log: Log,
) -> _Expected:  # fmt: skip
    """The size and checksums the body must have: from the config, else from the metalink entry."""
    if not (sha256 or md5 or metalink):
        raise ValueError(
            f"source url {url!r} has no sha256, md5 or metalink in the config. Fix: add one so the file is "
            "verified (UniProt: `metalink: <the file's directory>/RELEASE.metalink`)"
        )
    if metalink is None:
        return _Expected(sha256, md5, size, release, "config")
    _check_scheme(metalink)
    document = parse_metalink(fetch_small(metalink, settings, log), metalink)
    name = unquote(PurePosixPath(urlparse(url).path).name)
    entry = document.pinned(name, release)
    found = document.release_of(entry)
    theirs = {"md5": entry.hashes.get("md5"), "sha256": entry.hashes.get("sha256"), "size": entry.size}
    for key, mine in (("md5", md5), ("sha256", sha256), ("size", size)):
        if mine is not None and theirs[key] is not None and str(mine).lower() != str(theirs[key]).lower():
            raise ValueError(
                f"{key} of {name}: the config says {mine}, but {metalink} (release {found}) says "
                f"{theirs[key]}. Fix: the file changed since the config was written; drop `{key}` from the "
                "config to follow the metalink, or pin `release` to the release the config describes"
            )
    origin = "config" if md5 or sha256 else f"metalink {metalink}"
    md5, sha256 = md5 or theirs["md5"], sha256 or theirs["sha256"]
    if not (md5 or sha256):
        raise ValueError(
            f"metalink {metalink}: entry {name} has no md5 or sha256. Fix: add one to the config"
        )
    log(f"download {url}: release {found}, {entry.size} bytes, md5 {md5} (from {metalink})")
    return _Expected(sha256, md5, size or entry.size, found, origin)


# ------------------------------------------------------------------------------------------- transfer


def _http_attempt(
    url: str, part: Path, sidecar: Path, expected: _Expected, settings: DownloadSettings, log: Log,
    tally: Tally,
) -> None:  # fmt: skip
    """One request: resume the .part if its validators allow it, else start from byte 0."""
    have = _resume_point(url, part, sidecar, expected, log)
    stored = _read_sidecar(sidecar) if have else {}
    tally.etag, tally.last_modified = stored.get("etag"), stored.get("last_modified")
    if have and have == expected.size:
        log(f"download {url}: the .part already holds all {have} bytes; verifying")
        tally.resumed_from.append(have)
        return
    headers = {"Range": f"bytes={have}-", "If-Range": _validator(stored) or ""} if have else {}
    try:
        response = open_url(url, headers, settings.read_timeout_s)
    except RangeNotSatisfiable as err:
        log(f"download {url}: {err} for bytes={have}-: the .part is not a prefix of the file; restart at 0")
        _discard(part, sidecar)
        have, response = 0, open_url(url, {}, settings.read_timeout_s)
    with response:
        offset, total = _negotiate(url, response, have, stored, part, sidecar, log)
        total = total if total is not None else expected.size
        first = read_chunk(url, response, settings.read_timeout_s, offset)
        if offset == 0:
            reject_html(url, response, first)
        if expected.size is not None and total != expected.size:
            raise ValueError(
                f"{url} has {total} bytes on the server, but {expected.origin} says {expected.size}: the "
                "file changed upstream (a new release?). Fix: pin the release the checksum belongs to, or "
                "update `size`/`release`"
            )
        if offset == 0:
            _start_over(url, response, part, sidecar)
        else:
            tally.resumed_from.append(offset)
        tally.etag = response.headers.get("ETag") or tally.etag
        tally.last_modified = response.headers.get("Last-Modified") or tally.last_modified
        stream_body(url, response, first, part, offset, total, settings, log, tally)


def _resume_point(url: str, part: Path, sidecar: Path, expected: _Expected, log: Log) -> int:
    """Bytes of the .part that may be resumed; a .part that cannot be proven a prefix is discarded."""
    have = part.stat().st_size if part.exists() else 0
    if not have:
        return 0
    stored = _read_sidecar(sidecar)
    why = None
    if not stored:
        why = "its validators (.part.json) are missing"
    elif stored.get("url") != url:
        why = f"it came from another URL ({stored.get('url')})"
    elif not _validator(stored):
        why = "the server sent no strong ETag or Last-Modified, so a resume could splice two versions"
    elif expected.size is not None and have > expected.size:
        why = f"it is longer than the expected {expected.size} bytes"
    if why:
        log(f"download {url}: discarding the {have}-byte .part: {why}; starting from byte 0")
        _discard(part, sidecar)
        return 0
    log(f"download {url}: resuming the .part at byte {have}")
    return have


def _validator(stored: Mapping[str, Any]) -> str | None:
    """The If-Range value: a strong ETag (RFC 7233 §3.2 forbids weak ones), else Last-Modified."""
    etag = stored.get("etag")
    if etag and not str(etag).startswith("W/"):
        return str(etag)
    return stored.get("last_modified") or None


def _negotiate(
    url: str, response: http.client.HTTPResponse, have: int, stored: Mapping[str, Any], part: Path,
    sidecar: Path, log: Log,
) -> tuple[int, int | None]:  # fmt: skip
    """(offset at which this body starts, total file size or None) from the status and headers."""
    headers = response.headers
    if response.status == 206:
        content_range = headers.get("Content-Range", "")
        match = re.fullmatch(r"bytes (\d+)-(\d+)/(\d+|\*)", content_range.strip())
        changed = [k for k, h in (("etag", "ETag"), ("last_modified", "Last-Modified"))
                   if stored.get(k) and headers.get(h) and headers.get(h) != stored.get(k)]  # fmt: skip
        if match is None or int(match[1]) != have or changed:
            _discard(part, sidecar)
            raise OSError(
                f"206 from {url} does not continue the .part at byte {have} (Content-Range "
                f"{content_range!r}, changed {changed or 'nothing'}); the .part was discarded and the next "
                "attempt starts at 0"
            )
        return have, None if match[3] == "*" else int(match[3])
    if response.status != 200:
        raise PermanentHTTPError(f"HTTP {response.status} from {url}; expected 200 or 206")
    if have:
        same = _validator(stored) in (headers.get("ETag"), headers.get("Last-Modified"))
        reason = ("the server ignored the Range request (no byte-range support)" if same
                  else "the file changed on the server (If-Range validator no longer matches)")  # fmt: skip
        log(f"download {url}: 200 instead of 206 for bytes={have}-: {reason}; truncating, restart at byte 0")
    length = headers.get("Content-Length")
    return 0, int(length) if length and length.isdigit() else None


def _start_over(url: str, response: http.client.HTTPResponse, part: Path, sidecar: Path) -> None:
    """Truncate the .part and record the new body's validators before its first byte is written."""
    sidecar.unlink(missing_ok=True)  # first: a crash in between must not pair old validators with new bytes
    with open(part, "wb"):
        pass
    headers = response.headers
    state = {"url": url, "etag": headers.get("ETag"), "last_modified": headers.get("Last-Modified")}
    write_json_atomic(sidecar, state)


# ------------------------------------------------------------------------------------ file, verify


def _copy_file(url: str, part: Path, tally: Tally) -> None:
    """file:// sources: a plain copy to the .part (verified like a download)."""
    source = Path(urllib.request.url2pathname(urlparse(url).path))
    if not source.is_file():
        raise OSError(f"{url}: no such file {source}. Fix: correct the file:// URL in the config")
    with open(source, "rb") as src, open(part, "wb") as out:
        shutil.copyfileobj(src, out, CHUNK)
        out.flush()
        os.fsync(out.fileno())
    tally.attempts, tally.transferred = 1, part.stat().st_size


def _verify(url: str, part: Path, sidecar: Path, expected: _Expected) -> tuple[int, str, str]:
    """(bytes, md5, sha256) of a complete .part; a wrong size or checksum raises (see the module doc)."""
    nbytes = part.stat().st_size
    if expected.size is not None and nbytes < expected.size:
        raise ShortBodyError(
            f"SHORT body from {url}: got {nbytes} of {expected.size} bytes ({expected.origin}); the .part "
            "is kept: rerun to resume"
        )
    digests = {"md5": hashlib.md5(), "sha256": hashlib.sha256()}
    with open(part, "rb") as handle:
        while chunk := handle.read(CHUNK):
            for digest in digests.values():
                digest.update(chunk)
    got = {name: d.hexdigest() for name, d in digests.items()}
    problems = (
        [f"size is {nbytes} bytes, expected {expected.size}"] if expected.size not in (None, nbytes) else []
    )
    problems += [f"{name} is {got[name]}, expected {want.lower()}"
                 for name, want in (("sha256", expected.sha256), ("md5", expected.md5))
                 if want and got[name] != want.lower()]  # fmt: skip
    if problems:
        _discard(part, sidecar)
        wanted = {"sha256": expected.sha256, "md5": expected.md5, "size": expected.size}
        raise ChecksumMismatch(
            f"checksum mismatch for {url}: {'; '.join(problems)} ({expected.origin}). The whole body arrived "
            "but is not the file the checksum describes (changed upstream, a new release, or corrupted in "
            "transit); the .part was deleted. Fix: rerun once; if it fails again, pin the release whose "
            "checksum you have, or update the checksum from the source's release files",
            expected={k: v.lower() if isinstance(v, str) else v for k, v in wanted.items() if v is not None},
            actual={"sha256": got["sha256"], "md5": got["md5"], "size": nbytes},
        )
    return nbytes, got["md5"], got["sha256"]


def _discard(part: Path, sidecar: Path) -> None:
    sidecar.unlink(missing_ok=True)
    part.unlink(missing_ok=True)


def _read_sidecar(sidecar: Path) -> dict[str, Any]:
    try:
        data = json.loads(sidecar.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _fsync_dir(directory: Path) -> None:
    """Persist the rename (filesystems without directory fsync are tolerated)."""
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
