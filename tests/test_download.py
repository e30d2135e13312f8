"""Resumable, verified downloads against a real HTTP server on 127.0.0.1 (plmscale.download).

The server is http.server.ThreadingHTTPServer with a handler written here: it serves bytes with an ETag and
Last-Modified, honours ``Range: bytes=N-`` with ``If-Range`` as RFC 7233 says (206 + Content-Range when
the validator matches, 200 with the whole body when it does not, 416 past the end), and per test can cut
the connection, change the file between requests, ignore Range, trickle, answer 404, serve HTML or serve a
UniProt metalink.  It records every request's path and headers.  No test touches the network.
"""

from __future__ import annotations

import gzip
import hashlib
import http.server
import json
import random
import re
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field, fields
from pathlib import Path

import pytest
import yaml
from plmscale.download import DownloadManifest, DownloadSettings, download, fetch
from plmscale.metalink import parse_metalink

FAST = DownloadSettings(retries=3, backoff_s=0.01, backoff_max_s=0.02, read_timeout_s=5.0)
LAST_MODIFIED = "Wed, 02 Jul 2025 14:00:00 GMT"
BODY = random.Random(0).randbytes(200_000)
CUT = 70_000


@dataclass
class Scenario:
    """What the server does; ``versions[i]`` is (body, etag) for request i of ``path`` (the last repeats)."""

    versions: list[tuple[bytes, str]] = field(default_factory=lambda: [(BODY, '"v1"')])
    path: str = "/data/p.fasta"
    content_type: str = "application/octet-stream"
    extra: dict[str, tuple[bytes, str]] = field(default_factory=dict)  # path -> (body, content type)
    cut_after: int | None = None  # first request of ``path`` only: send this many body bytes, then close
    ignore_range: bool = False
    trickle: bool = False
    hang_s: float = 0.0  # silence between the headers and the body
    requests: list[tuple[str, dict[str, str]]] = field(default_factory=list)


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: object) -> None:  # keep pytest output clean
        pass

    def do_GET(self) -> None:
        sc: Scenario = self.server.scenario  # type: ignore[attr-defined]
        sc.requests.append((self.path, dict(self.headers)))
        index = sum(path == sc.path for path, _ in sc.requests) - 1  # earlier requests for the file
        if self.path in sc.extra:
            body, ctype = sc.extra[self.path]
            return self._send(200, body, {"Content-Type": ctype, "Content-Length": str(len(body))})
        if self.path != sc.path:
            return self._send(404, b"not found", {"Content-Length": "9", "Content-Type": "text/plain"})
        body, etag = sc.versions[min(index, len(sc.versions) - 1)]
        headers = {"ETag": etag, "Last-Modified": LAST_MODIFIED, "Content-Type": sc.content_type}
        start, status = 0, 200
        wanted = re.fullmatch(r"bytes=(\d+)-", self.headers.get("Range", ""))
        if_range = self.headers.get("If-Range")
        if wanted and not sc.ignore_range and (if_range is None or if_range in (etag, LAST_MODIFIED)):
            start = int(wanted[1])
            if start >= len(body):
                return self._send(416, b"", {"Content-Range": f"bytes */{len(body)}", "Content-Length": "0"})
            status = 206
            headers["Content-Range"] = f"bytes {start}-{len(body) - 1}/{len(body)}"
        headers["Content-Length"] = str(len(body) - start)
        payload = body[start:]
        if sc.cut_after is not None and index == 0:
            payload = payload[: sc.cut_after]
        self._send(status, payload, headers, trickle=sc.trickle, hang_s=sc.hang_s)
        if sc.cut_after is not None and index == 0:
            self.close_connection = True

    def _send(
        self, status: int, payload: bytes, headers: dict[str, str], trickle: bool = False, hang_s: float = 0.0
    ) -> None:
        self.send_response(status)
        for key, value in {"Accept-Ranges": "bytes", **headers}.items():
            self.send_header(key, value)
        self.end_headers()
        try:
            if hang_s:
                self.wfile.flush()
                time.sleep(hang_s)
            if not trickle:
                self.wfile.write(payload)
                return
            deadline = time.monotonic() + 5
            for i in range(0, len(payload), 4):  # 4 bytes every 50 ms: 80 B/s
                if time.monotonic() > deadline:
                    break
                self.wfile.write(payload[i : i + 4])
                self.wfile.flush()
                time.sleep(0.05)
        except (BrokenPipeError, ConnectionResetError):
            pass


@dataclass
class Server:
    base: str
    scenario: Scenario

    def url(self, path: str | None = None) -> str:
        return self.base + (path or self.scenario.path)

    def ranges(self) -> list[str | None]:
        return [headers.get("Range") for _, headers in self.scenario.requests]


@pytest.fixture
def server() -> Iterator[Server]:
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    httpd.daemon_threads = True
    httpd.scenario = Scenario()  # type: ignore[attr-defined]
    threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    yield Server(f"http://127.0.0.1:{httpd.server_address[1]}", httpd.scenario)  # type: ignore[attr-defined]
    httpd.shutdown()
    httpd.server_close()


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def leftovers(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir())


# ------------------------------------------------------------------------------------------ plain


def test_download_verifies_writes_manifest_last_and_logs_progress(server: Server, tmp_path: Path) -> None:
    out, manifest = tmp_path / "p.fasta", tmp_path / "p.manifest.json"
    lines: list[str] = []
    settings = DownloadSettings(progress_every_s=0.0)
    got = fetch(server.url(), out, sha256=sha(BODY), manifest=manifest, settings=settings, log=lines.append)
    assert out.read_bytes() == BODY
    assert leftovers(tmp_path) == ["p.fasta", "p.manifest.json"]  # no .part, no .part.json
    written = json.loads(manifest.read_text())
    assert DownloadManifest.from_dict(written) == got
    assert (got.bytes, got.md5, got.sha256) == (len(BODY), hashlib.md5(BODY).hexdigest(), sha(BODY))
    assert (got.attempts, got.resumed_from_bytes, got.bytes_transferred) == (1, (), len(BODY))
    assert (got.etag, got.last_modified, got.checksum_origin) == ('"v1"', LAST_MODIFIED, "config")
    assert got.date.endswith("+00:00")
    assert any(re.search(r"MB \(\d+\.\d%\), [\d.]+ MB/s, ETA", line) for line in lines), lines
    # the compatibility wrapper (plmscale.paper_logs) returns the manifest as a dict
    info = download(server.url(), tmp_path / "q.fasta", md5=hashlib.md5(BODY).hexdigest(), log=lines.append)
    assert info["bytes"] == len(BODY) and info["sha256"] == sha(BODY)


def test_cut_connection_resumes_with_range_and_if_range(server: Server, tmp_path: Path) -> None:
    server.scenario.cut_after = CUT
    lines: list[str] = []
    got = fetch(server.url(), tmp_path / "p.fasta", sha256=sha(BODY), settings=FAST, log=lines.append)
    assert (tmp_path / "p.fasta").read_bytes() == BODY
    _, second = server.scenario.requests[1]
    assert second["Range"] == f"bytes={CUT}-" and second["If-Range"] == '"v1"'
    assert got.attempts == 2 and got.resumed_from_bytes == (CUT,)
    assert got.bytes_transferred < 1.1 * len(BODY)
    assert any(f"SHORT body from {server.url()}: got {CUT} of {len(BODY)} bytes" in line for line in lines)


def test_changed_file_restarts_from_zero_and_never_splices(server: Server, tmp_path: Path) -> None:
    new = random.Random(1).randbytes(len(BODY))
    server.scenario.versions = [(BODY, '"v1"'), (new, '"v2"')]  # the file changes after the cut
    server.scenario.cut_after = CUT
    lines: list[str] = []
    got = fetch(server.url(), tmp_path / "p.fasta", sha256=sha(new), settings=FAST, log=lines.append)
    assert (tmp_path / "p.fasta").read_bytes() == new  # not BODY[:CUT] + new[CUT:]
    assert server.scenario.requests[1][1]["If-Range"] == '"v1"'
    assert got.resumed_from_bytes == () and got.etag == '"v2"' and got.bytes_transferred == CUT + len(new)
    assert any("the file changed on the server" in line for line in lines), lines


def test_server_without_range_support_restarts_from_zero(server: Server, tmp_path: Path) -> None:
    server.scenario.ignore_range, server.scenario.cut_after = True, CUT
    lines: list[str] = []
    got = fetch(server.url(), tmp_path / "p.fasta", sha256=sha(BODY), settings=FAST, log=lines.append)
    assert (tmp_path / "p.fasta").read_bytes() == BODY
    assert server.ranges() == [None, f"bytes={CUT}-"]
    assert got.resumed_from_bytes == () and got.bytes_transferred == CUT + len(BODY)
    assert any("ignored the Range request" in line for line in lines), lines


def test_range_not_satisfiable_restarts_from_zero(server: Server, tmp_path: Path) -> None:
    out = tmp_path / "p.fasta"
    (tmp_path / "p.fasta.part").write_bytes(BODY + b"junk")  # longer than the file: not a prefix of it
    sidecar = {"url": server.url(), "etag": '"v1"', "last_modified": LAST_MODIFIED}
    (tmp_path / "p.fasta.part.json").write_text(json.dumps(sidecar))
    lines: list[str] = []
    fetch(server.url(), out, sha256=sha(BODY), settings=FAST, log=lines.append)
    assert out.read_bytes() == BODY
    assert server.ranges() == [f"bytes={len(BODY) + 4}-", None]
    assert any("416" in line for line in lines), lines


def test_job_level_retry_resumes_from_the_kept_part(server: Server, tmp_path: Path) -> None:
    """Snakemake deletes the outputs of a failed job, not the .part: the retried job resumes from it."""
    out = tmp_path / "p.fasta"
    server.scenario.cut_after = CUT
    once = DownloadSettings(retries=0, read_timeout_s=5.0)
    with pytest.raises(OSError, match=rf"SHORT body .*got {CUT} of {len(BODY)} bytes") as info:
        fetch(server.url(), out, sha256=sha(BODY), settings=once, log=lambda _: None)
    assert "checksum" not in str(info.value) and server.url() in str(info.value)
    assert (tmp_path / "p.fasta.part").stat().st_size == CUT and not out.exists()
    got = fetch(server.url(), out, sha256=sha(BODY), settings=once, log=lambda _: None)
    assert out.read_bytes() == BODY and server.ranges() == [None, f"bytes={CUT}-"]
    assert got.resumed_from_bytes == (CUT,) and got.bytes_transferred == len(BODY) - CUT
    assert leftovers(tmp_path) == ["p.fasta"]


# ------------------------------------------------------------------------------------------ failures


def test_wrong_checksum_deletes_part_and_names_expected_and_actual(server: Server, tmp_path: Path) -> None:
    with pytest.raises(
        ValueError, match=r"checksum mismatch .* sha256 is [0-9a-f]{64}, expected 0{64}"
    ) as info:
        fetch(server.url(), tmp_path / "p.fasta", sha256="0" * 64, settings=FAST, log=lambda _: None)
    assert server.url() in str(info.value) and "Fix:" in str(info.value)
    assert leftovers(tmp_path) == []
    assert len(server.scenario.requests) == 1  # a full body with a wrong checksum is not retried


def test_404_names_status_and_url_and_is_not_retried(server: Server, tmp_path: Path) -> None:
    url = server.url("/data/missing.fasta")
    with pytest.raises(OSError, match=rf"HTTP 404 .* from {re.escape(url)}"):
        fetch(url, tmp_path / "p.fasta", md5="0" * 32, settings=FAST, log=lambda _: None)
    assert leftovers(tmp_path) == [] and len(server.scenario.requests) == 1


@pytest.mark.parametrize("content_type", ["text/html; charset=utf-8", "application/octet-stream"])
def test_html_page_is_refused(server: Server, tmp_path: Path, content_type: str) -> None:
    page = b"<!DOCTYPE html>\n<html><body>Please log in</body></html>\n"
    server.scenario.versions, server.scenario.content_type = [(page, '"h"')], content_type
    with pytest.raises(ValueError, match=rf"{re.escape(server.url())} returned an HTML page"):
        fetch(server.url(), tmp_path / "p.fasta", md5="0" * 32, settings=FAST, log=lambda _: None)
    assert leftovers(tmp_path) == []


def test_trickling_server_hits_the_stall_deadline(server: Server, tmp_path: Path) -> None:
    server.scenario.trickle = True
    stall = DownloadSettings(retries=0, read_timeout_s=5.0, stall_window_s=0.5, stall_min_bytes=1000)
    start = time.monotonic()
    with pytest.raises(OSError, match=rf"stalled: \d+ bytes in 0.5 s from {re.escape(server.url())}"):
        fetch(server.url(), tmp_path / "p.fasta", sha256=sha(BODY), settings=stall, log=lambda _: None)
    assert time.monotonic() - start < 3
    assert not (tmp_path / "p.fasta").exists() and (tmp_path / "p.fasta.part").exists()  # kept for a resume


def test_silent_server_hits_the_read_timeout(server: Server, tmp_path: Path) -> None:
    server.scenario.hang_s = 1.5
    quick = DownloadSettings(retries=0, read_timeout_s=0.3)
    with pytest.raises(
        OSError, match=rf"read timed out after 0.3 s from {re.escape(server.url())} at byte 0"
    ):
        fetch(server.url(), tmp_path / "p.fasta", sha256=sha(BODY), settings=quick, log=lambda _: None)
    assert not (tmp_path / "p.fasta").exists()


def test_missing_checksum_bad_scheme_and_file_urls(tmp_path: Path) -> None:
    source = tmp_path / "src.fasta"
    source.write_bytes(b">a\nMKV\n")
    got = fetch(f"file://{source}", tmp_path / "y.fasta", md5=hashlib.md5(b">a\nMKV\n").hexdigest())
    assert (tmp_path / "y.fasta").read_bytes() == b">a\nMKV\n" and got.attempts == 1
    with pytest.raises(ValueError, match=r"has no sha256, md5 or metalink .* Fix:"):
        fetch(f"file://{source}", tmp_path / "z.fasta")
    with pytest.raises(ValueError, match="scheme 'ftp'"):
        fetch("ftp://example.org/x", tmp_path / "z.fasta", md5="0" * 32)
    with pytest.raises(ValueError, match="checksum mismatch"):
        fetch(f"file://{source}", tmp_path / "z.fasta", md5="0" * 32)
    assert not (tmp_path / "z.fasta").exists() and not (tmp_path / "z.fasta.part").exists()


# ------------------------------------------------------------------------------------------ metalink

# Format-exact copy of a UniProt RELEASE.metalink (Metalink 3.0, metalinker.org namespace; the layout of
# e.g. current_release/knowledgebase/embeddings/RELEASE.metalink of release 2024_01, which has no XML
# declaration), for uniref/uniref50/ with the served file's size and md5 filled in.
UNIPROT_METALINK = """<metalink xmlns="http://www.metalinker.org/" version="3.0">
  <publisher>
    <name>UniProt Consortium</name>
    <url>http://www.uniprot.org/</url>
  </publisher>
  <license>
    <name>Creative Commons Attribution 4.0 International (CC BY 4.0)</name>
    <url>http://creativecommons.org/licenses/by/4.0/</url>
  </license>
  <description>UniProt</description>
  <version>2025_03</version>
  <files>
    <file name="README">
      <size>4512</size>
      <verification>
        <hash type="md5">5845a44e788cd260b04a558f77b14f4c</hash>
      </verification>
      <resources>
        <url type="ftp" location="ch" preference="100">ftp://ftp.expasy.org/databases/uniprot/current_release/uniref/uniref50/README</url>
        <url type="ftp" location="uk" preference="100">ftp://ftp.ebi.ac.uk/pub/databases/uniprot/current_release/uniref/uniref50/README</url>
        <url type="ftp" location="us" preference="100">ftp://ftp.uniprot.org/pub/databases/uniprot/current_release/uniref/uniref50/README</url>
      </resources>
    </file>
    <file name="uniref50.fasta.gz">
      <size>{size}</size>
      <verification>
        <hash type="md5">{md5}</hash>
      </verification>
      <resources>
        <url type="ftp" location="ch" preference="100">ftp://ftp.expasy.org/databases/uniprot/current_release/uniref/uniref50/uniref50.fasta.gz</url>
        <url type="ftp" location="uk" preference="100">ftp://ftp.ebi.ac.uk/pub/databases/uniprot/current_release/uniref/uniref50/uniref50.fasta.gz</url>
        <url type="ftp" location="us" preference="100">ftp://ftp.uniprot.org/pub/databases/uniprot/current_release/uniref/uniref50/uniref50.fasta.gz</url>
      </resources>
    </file>
  </files>
</metalink>"""

_RNG = random.Random(2)
FASTA_GZ = gzip.compress(
    b"".join(
        b">UniRef50_%d\n%s\n" % (i, bytes(_RNG.choices(b"ACDEFGHIKLMNPQRSTVWY", k=300))) for i in range(800)
    ),
    mtime=0,
)
METALINK_PATH = "/pub/databases/uniprot/uniref/uniref50/RELEASE.metalink"
FASTA_PATH = "/pub/databases/uniprot/uniref/uniref50/uniref50.fasta.gz"


@pytest.fixture
def uniprot(server: Server) -> Server:
    text = UNIPROT_METALINK.replace("{size}", str(len(FASTA_GZ)))
    text = text.replace("{md5}", hashlib.md5(FASTA_GZ).hexdigest())
    server.scenario.path, server.scenario.versions = FASTA_PATH, [(FASTA_GZ, '"r2025_03"')]
    server.scenario.extra[METALINK_PATH] = (text.encode(), "application/metalink+xml")
    return server


def test_metalink_gives_md5_size_and_release(uniprot: Server, tmp_path: Path) -> None:
    out, manifest = tmp_path / "uniref50.fasta", tmp_path / "uniref50.manifest.json"
    meta = uniprot.url(METALINK_PATH)
    got = fetch(uniprot.url(), out, metalink=meta, release="2025_03", manifest=manifest, settings=FAST)
    assert out.read_bytes() == FASTA_GZ  # the body as served (the FASTA reader detects gzip)
    assert (got.release, got.checksum_origin, got.bytes) == ("2025_03", f"metalink {meta}", len(FASTA_GZ))
    assert json.loads(manifest.read_text())["md5"] == hashlib.md5(FASTA_GZ).hexdigest()
    # a short body is judged against the metalink size: SHORT, .part kept, no checksum advice
    uniprot.scenario.cut_after, uniprot.scenario.requests[:] = CUT, []
    once = DownloadSettings(retries=0)
    assert len(FASTA_GZ) > CUT
    with pytest.raises(OSError, match=rf"SHORT body .*got {CUT} of {len(FASTA_GZ)} bytes") as info:
        fetch(uniprot.url(), tmp_path / "again.fasta", metalink=meta, settings=once, log=lambda _: None)
    assert "checksum" not in str(info.value) and (tmp_path / "again.fasta.part").exists()


def test_metalink_release_mismatch_and_missing_entry(uniprot: Server, tmp_path: Path) -> None:
    meta = uniprot.url(METALINK_PATH)
    with pytest.raises(ValueError, match=r"release 2025_03 .* pins release '2024_06'.*previous_releases"):
        fetch(uniprot.url(), tmp_path / "x.fasta", metalink=meta, release="2024_06", settings=FAST)
    with pytest.raises(ValueError, match=r"no entry for 'uniref90.fasta.gz' \(entries: README, uniref50"):
        fetch(uniprot.url("/uniref90.fasta.gz"), tmp_path / "x.fasta", metalink=meta, settings=FAST)
    with pytest.raises(ValueError, match=r"md5 of uniref50.fasta.gz: the config says 0{32}, but"):
        fetch(uniprot.url(), tmp_path / "x.fasta", md5="0" * 32, metalink=meta, settings=FAST)
    assert [path for path, _ in uniprot.scenario.requests] == [METALINK_PATH] * 3  # no body was fetched
    assert leftovers(tmp_path) == []


def test_parse_metalink_4_rfc5854() -> None:
    doc = parse_metalink(
        """<?xml version="1.0" encoding="UTF-8"?>
<metalink xmlns="urn:ietf:params:xml:ns:metalink">
  <file name="x.fasta.gz">
    <size>14471447</size>
    <version>2025_03</version>
    <hash type="sha-256">F0AD929CD259957E160EA442EB80986B5F01</hash>
    <pieces length="262144" type="sha-1"><hash>0000</hash></pieces>
    <url location="de" priority="1">ftp://ftp.example.com/x.fasta.gz</url>
  </file>
</metalink>""",
        "https://example.org/x.meta4",
    )
    entry = doc.pinned("x.fasta.gz", "2025_03")
    assert (entry.size, dict(entry.hashes), entry.urls) == (
        14471447,
        {"sha256": "f0ad929cd259957e160ea442eb80986b5f01"},
        ("ftp://ftp.example.com/x.fasta.gz",),
    )
    with pytest.raises(ValueError, match="not XML"):
        parse_metalink(b"<html>oops", "u")


# ------------------------------------------------------------------------------------------ settings


def test_settings_mirror_the_schema_defaults_and_manifest_round_trips() -> None:
    schema = yaml.safe_load((Path(__file__).parents[1] / "config" / "schema.yaml").read_text())
    section = schema["properties"]["download"]["properties"]
    assert {name: spec["default"] for name, spec in section.items()} == {
        f.name: getattr(DownloadSettings(), f.name) for f in fields(DownloadSettings)
    }
    assert DownloadSettings.from_config({"retries": 1, "stall_window_s": 10}).retries == 1
    with pytest.raises(ValueError, match="unknown key"):
        DownloadSettings.from_config({"retry": 1})
    with pytest.raises(ValueError, match=r"download.backoff_s is -1"):
        DownloadSettings.from_config({"backoff_s": -1})
    manifest = DownloadManifest("u", None, 1, "m", "s", "config", None, None, 1, (0, 5), 1, "d")
    assert DownloadManifest.from_dict(json.loads(json.dumps(manifest.to_dict()))) == manifest
