"""HTTP GET mechanics for :mod:`plmscale.download`: settings, retries, timeouts, stalls, progress.

* :func:`with_retries` runs an attempt up to ``1 + retries`` times with exponential backoff and "equal
  jitter" (a random wait between half and all of ``min(backoff_max_s, backoff_s * 2**k)``).  HTTP statuses
  that a retry cannot fix (4xx other than 408/425/429) fail at once.
* :func:`stream_body` appends a response body to a file: a socket read timeout (``read_timeout_s``) or a
  stall (fewer than ``stall_min_bytes`` bytes in a ``stall_window_s`` window) fails the attempt, and a body
  that ends before its length is :class:`ShortBodyError`; the bytes already written stay for a resume.
* :func:`reject_html` refuses a login/error page served with 200 instead of the file.
"""

from __future__ import annotations

import http.client
import os
import random
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlparse

__all__ = [
    "DownloadSettings",
    "PermanentHTTPError",
    "RangeNotSatisfiable",
    "ShortBodyError",
    "StalledError",
    "Tally",
    "fetch_small",
    "open_url",
    "read_chunk",
    "reject_html",
    "stream_body",
    "with_retries",
]

CHUNK = 1 << 20
USER_AGENT = "plmscale-download/1 (resumable; python-urllib)"
RETRYABLE_STATUS = frozenset({408, 425, 429})  # and every 5xx
Log = Callable[[str], object]
T = TypeVar("T")


class ShortBodyError(OSError):
    """The body ended before its announced length; the .part is kept and the next attempt resumes."""


class StalledError(OSError):
    """Fewer than ``stall_min_bytes`` arrived within ``stall_window_s``; the .part is kept."""


class PermanentHTTPError(OSError):
    """An HTTP status that no retry fixes (404, 403, 410, ...)."""


class RangeNotSatisfiable(OSError):
    """HTTP 416 to a Range request (RFC 7233 §4.4)."""


@dataclass(frozen=True)
class DownloadSettings:
    """Network behaviour of a download: the ``download:`` config section (defaults in config/schema.yaml;
    the ones here mirror them for direct use)."""

    retries: int = 5
    backoff_s: float = 2.0
    backoff_max_s: float = 120.0
    read_timeout_s: float = 60.0
    stall_window_s: float = 300.0
    stall_min_bytes: int = 65536
    progress_every_s: float = 30.0

    @classmethod
    def from_config(cls, mapping: Mapping[str, Any] | None) -> DownloadSettings:
        """Settings from ``config["download"]``; unknown keys and negative or non-numeric values raise."""
        given = dict(mapping or {})
        known = {f.name: f for f in fields(cls)}
        unknown = sorted(set(given) - set(known))
        if unknown:
            raise ValueError(f"download settings: unknown key(s) {unknown}. Fix: use only {sorted(known)}")
        values: dict[str, Any] = {}
        for name, value in given.items():
            if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
                raise ValueError(f"download.{name} is {value!r}. Fix: set it to a number >= 0")
            values[name] = int(value) if known[name].type == "int" else float(value)
        return cls(**values)


@dataclass
class Tally:
    """What the attempts of one download did (for its manifest)."""

    attempts: int = 0
    transferred: int = 0
    resumed_from: list[int] = field(default_factory=list)
    etag: str | None = None
    last_modified: str | None = None


def with_retries(url: str, settings: DownloadSettings, log: Log, tally: Tally, attempt: Callable[[], T]) -> T:
    """Run ``attempt`` up to ``1 + settings.retries`` times; ``OSError`` retries, ``ValueError`` does not."""
    for k in range(settings.retries + 1):
        tally.attempts += 1
        try:
            return attempt()
        except PermanentHTTPError:
            raise
        except (OSError, http.client.HTTPException) as err:
            if k == settings.retries:
                raise OSError(
                    f"download of {url} failed after {k + 1} attempt(s): {err}. Fix: rerun (a kept .part "
                    "resumes) or raise download.retries / download.read_timeout_s"
                ) from err
            cap = min(settings.backoff_max_s, settings.backoff_s * 2**k)
            delay = random.uniform(cap / 2, cap)
            log(
                f"download {url}: attempt {k + 1}/{settings.retries + 1} failed: {err}; retry in {delay:.1f}s"
            )
            time.sleep(delay)
    raise AssertionError("unreachable")


def open_url(url: str, headers: Mapping[str, str], timeout: float) -> http.client.HTTPResponse:
    """GET ``url`` (redirects followed, headers kept); errors name the status and the URL."""
    all_headers = {"User-Agent": USER_AGENT, "Accept-Encoding": "identity", **headers}
    try:
        return urllib.request.urlopen(urllib.request.Request(url, headers=all_headers), timeout=timeout)
    except urllib.error.HTTPError as err:
        err.close()
        status = f"HTTP {err.code} {err.reason}"
        if err.code == 416:
            raise RangeNotSatisfiable(f"{status} from {url}") from None
        if err.code in RETRYABLE_STATUS or err.code >= 500:
            raise OSError(f"{status} from {url}") from None
        raise PermanentHTTPError(
            f"{status} from {url}. Fix: check `url` in the config (UniProt moves an old release's files "
            "to previous_releases/, so a pinned URL can start answering 404)"
        ) from None
    except TimeoutError as err:
        raise OSError(f"no response within {timeout:g} s from {url}") from err
    except urllib.error.URLError as err:  # DNS, refused connection, TLS, timeout while connecting
        raise OSError(f"cannot reach {url}: {err.reason}") from err


def read_chunk(url: str, response: http.client.HTTPResponse, timeout: float, done: int) -> bytes:
    """The bytes one socket read gives (``read1``: a trickle is seen); errors name the URL and byte."""
    try:
        return response.read1(CHUNK)
    except TimeoutError as err:
        raise OSError(f"read timed out after {timeout:g} s from {url} at byte {done}") from err
    except http.client.HTTPException as err:
        raise OSError(f"connection to {url} broke at byte {done}: {err!r}") from err


def reject_html(url: str, response: http.client.HTTPResponse, first: bytes) -> None:
    """A login, error or 'moved' page served with 200 instead of the file raises ``ValueError``."""
    if urlparse(url).path.lower().endswith((".html", ".htm")):
        return
    content_type = response.headers.get("Content-Type", "")
    head = first[:512].lstrip().lower()
    if "text/html" in content_type.lower() or head.startswith((b"<!doctype html", b"<html")):
        raise ValueError(
            f"{url} returned an HTML page (Content-Type {content_type or 'none'}, begins "
            f"{first[:40]!r}), not the file: a login, error or 'moved' page. Fix: open the URL in a browser "
            "and correct `url` (or the mirror) in the config"
        )


def fetch_small(url: str, settings: DownloadSettings, log: Log, limit: int = 1 << 24) -> bytes:
    """A small file (a metalink) in memory, with the same retries, timeouts and HTML check."""
    if urlparse(url).scheme == "file":
        return Path(urllib.request.url2pathname(urlparse(url).path)).read_bytes()

    def attempt() -> bytes:
        with open_url(url, {}, settings.read_timeout_s) as response:
            chunks, got = [], 0
            while got <= limit and (chunk := read_chunk(url, response, settings.read_timeout_s, got)):
                chunks.append(chunk)
                got += len(chunk)
            data = b"".join(chunks)
            length = response.headers.get("Content-Length")
            if length and length.isdigit() and len(data) < int(length):
                raise ShortBodyError(f"SHORT body from {url}: got {len(data)} of {length} bytes")
            reject_html(url, response, data)
            return data

    return with_retries(url, settings, log, Tally(), attempt)


def stream_body(
    url: str, response: http.client.HTTPResponse, first: bytes, part: Path, offset: int, total: int | None,
    settings: DownloadSettings, log: Log, tally: Tally,
) -> None:  # fmt: skip
    """Append ``first`` and the rest of the body to ``part`` (which holds ``offset`` bytes), fsynced."""
    progress = _Progress(url, offset, total, settings.progress_every_s, log)
    window_start, window_bytes, done = time.monotonic(), 0, offset
    with open(part, "ab") as out:
        try:
            chunk = first
            while chunk:
                out.write(chunk)
                done += len(chunk)
                tally.transferred += len(chunk)
                window_bytes += len(chunk)
                progress.update(done)
                now = time.monotonic()
                if now - window_start >= settings.stall_window_s:
                    if window_bytes < settings.stall_min_bytes:
                        raise StalledError(
                            f"stalled: {window_bytes} bytes in {settings.stall_window_s:g} s from {url} (at "
                            f"byte {done}); the .part is kept and the next attempt resumes"
                        )
                    window_start, window_bytes = now, 0
                chunk = read_chunk(url, response, settings.read_timeout_s, done)
        finally:
            out.flush()
            os.fsync(out.fileno())
            progress.finish()
    if total is not None and done < total:
        raise ShortBodyError(
            f"SHORT body from {url}: got {done} of {total} bytes (the connection ended early); the .part is "
            f"kept and the next attempt resumes at byte {done}"
        )


def _duration(seconds: float) -> str:
    seconds = int(seconds)
    if seconds >= 3600:
        return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
    return f"{seconds // 60}m{seconds % 60:02d}s" if seconds >= 60 else f"{seconds}s"


class _Progress:
    """A log line every ``every_s`` (done / total, %, MB/s, ETA) and, on a terminal, a ``\\r`` bar."""

    def __init__(self, url: str, start: int, total: int | None, every_s: float, log: Log) -> None:
        self.name, self.start, self.total, self.every_s, self.log = Path(url).name, start, total, every_s, log
        self.t0 = self.last_line = self.last_bar = time.monotonic()
        self.bar = sys.stderr.isatty()

    def status(self, done: int, now: float) -> str:
        rate = (done - self.start) / max(now - self.t0, 1e-9)
        if not self.total:
            return f"{done / 1e6:.1f} MB, {rate / 1e6:.2f} MB/s"
        eta = _duration((self.total - done) / rate) if rate > 0 else "?"
        return (f"{done / 1e6:.1f} / {self.total / 1e6:.1f} MB ({100 * done / self.total:.1f}%), "
                f"{rate / 1e6:.2f} MB/s, ETA {eta}")  # fmt: skip

    def update(self, done: int) -> None:
        now = time.monotonic()
        if now - self.last_line >= self.every_s:
            self.last_line = now
            self.log(f"download {self.name}: {self.status(done, now)}")
        if self.bar and now - self.last_bar >= 0.5:
            self.last_bar = now
            filled = int(30 * done / self.total) if self.total else 0
            bar = "#" * filled + "." * (30 - filled)
            sys.stderr.write(f"\r{self.name} [{bar}] {self.status(done, now)}  ")
            sys.stderr.flush()

    def finish(self) -> None:
        if self.bar:
            sys.stderr.write("\n")
            sys.stderr.flush()
