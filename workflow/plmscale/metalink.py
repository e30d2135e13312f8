"""Metalink documents: the per-file size, checksum and release that UniProt publishes next to its downloads.

Every UniProt release directory (``uniref/uniref50/``, ``uniref/uniref90/``, ...) holds a
``RELEASE.metalink`` in the Metalink 3.0 format of metalinker.org::

    <metalink xmlns="http://www.metalinker.org/" version="3.0">
      <publisher><name>UniProt Consortium</name>...</publisher>
      <version>2025_03</version>
      <files>
        <file name="uniref50.fasta.gz">
          <size>...</size>
          <verification><hash type="md5">...</hash></verification>
          <resources><url type="ftp" location="uk" preference="100">...</url></resources>
        </file>
      </files>
    </metalink>

RFC 5854 (Metalink 4, ``urn:ietf:params:xml:ns:metalink``) puts ``<hash>`` and ``<version>`` directly
under ``<file>``; both layouts are read, and element names are matched without their namespace.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field

__all__ = ["Metalink", "MetalinkFile", "parse_metalink"]

# hash type names in Metalink 3 ("sha256") and in RFC 5854 / IANA ("sha-256") map to one spelling
_HASH_NAMES = {"md5": "md5", "sha1": "sha1", "sha-1": "sha1", "sha256": "sha256", "sha-256": "sha256"}


@dataclass(frozen=True)
class MetalinkFile:
    """One ``<file>`` entry: its name, size in bytes, hashes by type (``md5``, ``sha256``) and version."""

    name: str
    size: int | None
    hashes: Mapping[str, str] = field(default_factory=dict)
    version: str | None = None
    urls: tuple[str, ...] = ()


@dataclass(frozen=True)
class Metalink:
    """A parsed metalink: the document's release (``<version>``, Metalink 3) and its file entries."""

    source: str
    version: str | None
    files: tuple[MetalinkFile, ...]

    def file(self, name: str) -> MetalinkFile:
        """The entry called ``name``; a missing one raises ``ValueError`` listing the entries present."""
        for entry in self.files:
            if entry.name == name:
                return entry
        present = ", ".join(e.name for e in self.files) or "none"
        raise ValueError(
            f"metalink {self.source} has no entry for {name!r} (entries: {present}). Fix: point `url` at one "
            "of these files, or `metalink` at the RELEASE.metalink of the directory that holds the file."
        )

    def release_of(self, entry: MetalinkFile) -> str | None:
        """The release an entry belongs to: its own ``<version>`` (Metalink 4), else the document's."""
        return entry.version or self.version

    def pinned(self, name: str, release: str | None) -> MetalinkFile:
        """The entry called ``name``, whose release must equal ``release`` when one is configured."""
        entry = self.file(name)
        found = self.release_of(entry)
        if release is not None and found != release:
            raise ValueError(
                f"metalink {self.source} describes release {found or '(none named)'} of {name}, but the "
                f"config pins release {release!r}. Fix: to keep {release}, point `url` and `metalink` at "
                f"that release's files (UniProt keeps them under previous_releases/release-{release}/); to "
                f'move on, set `release: "{found}"` (everything downstream is recomputed).'
            )
        return entry


def _local(tag: object) -> str:
    """An element's name without its ``{namespace}``."""
    return str(tag).rsplit("}", 1)[-1]


def _children(element: ET.Element, name: str) -> Iterator[ET.Element]:
    return (child for child in element if _local(child.tag) == name)


def _text(element: ET.Element, name: str) -> str | None:
    for child in _children(element, name):
        if child.text and child.text.strip():
            return child.text.strip()
    return None


def _hashes(file_element: ET.Element) -> dict[str, str]:
    """Whole-file hashes: ``<verification><hash>`` (Metalink 3) or ``<hash>`` (RFC 5854), not ``<pieces>``."""
    holders = [file_element, *_children(file_element, "verification")]
    found: dict[str, str] = {}
    for holder in holders:
        for node in _children(holder, "hash"):
            kind = _HASH_NAMES.get(node.get("type", "").strip().lower())
            if kind and node.text and node.text.strip():
                found[kind] = node.text.strip().lower()
    return found


def _parse_file(element: ET.Element, source: str) -> MetalinkFile:
    name = element.get("name", "").strip()
    if not name:
        raise ValueError(f"metalink {source}: a <file> element has no name attribute")
    size_text = _text(element, "size")
    try:
        size = int(size_text) if size_text is not None else None
    except ValueError:
        raise ValueError(f"metalink {source}: <size> of {name!r} is {size_text!r}, not a number") from None
    urls = [u.text.strip() for r in _children(element, "resources") for u in _children(r, "url") if u.text]
    urls += [u.text.strip() for u in _children(element, "url") if u.text]
    return MetalinkFile(name, size, _hashes(element), _text(element, "version"), tuple(urls))


def parse_metalink(data: bytes | str, source: str) -> Metalink:
    """Parse a Metalink 3.0 or RFC 5854 document; ``source`` (its URL) names it in every error.

    A document with a DOCTYPE is refused (metalinks have none; this keeps entity expansion out).
    """
    raw = data.encode() if isinstance(data, str) else data
    if b"<!DOCTYPE" in raw[:4096].upper() or b"<!ENTITY" in raw.upper():
        raise ValueError(f"metalink {source}: refusing a document with a DOCTYPE/ENTITY declaration")
    try:
        root = ET.fromstring(raw)
    except ET.ParseError as err:
        head = raw[:80].decode("utf-8", "replace")
        raise ValueError(
            f"metalink {source} is not XML ({err}); it begins {head!r}. Fix: check the `metalink` URL "
            "(it should end in RELEASE.metalink)."
        ) from err
    if _local(root.tag) != "metalink":
        raise ValueError(f"metalink {source}: root element is <{_local(root.tag)}>, not <metalink>")
    files = [_parse_file(f, source) for holder in [root, *_children(root, "files")] for f in holder
             if _local(f.tag) == "file"]  # fmt: skip
    return Metalink(source=source, version=_text(root, "version"), files=tuple(files))
