"""Derived protein sources: MMseqs2 databases (ColabFoldDB) and one FASTA minus another (UniRef90 - UniRef50).

``mmseqs_db``: a ``.tar.gz`` holding MMseqs2 databases (e.g. ColabFoldDB, ``colabfold_envdb_202108_db*``) is
downloaded verified (:func:`plmscale.download.fetch`), only the files of the named databases are extracted,
and one subset is exported to FASTA with the MMseqs2 modules documented in the MMseqs2 wiki
(github.com/soedinglab/MMseqs2/wiki, "Database formats", "Extracting representative sequences" /
``createsubdb``, ``convert2fasta``):

* ``all``: ``mmseqs convert2fasta <db> out.fasta``
* ``representatives``: ``mmseqs createsubdb <clusters> <db> <sub>`` (the keys of ``<clusters>.index`` are
  the cluster representatives), then ``mmseqs convert2fasta <sub> out.fasta``
* ``members``: the keys of ``<db>.index`` not in ``<clusters>.index``, found by a streamed merge of the two
  index files (MMseqs2 writes them sorted by key; no set of all keys is held) and written one per line,
  then ``mmseqs createsubdb <keys.txt> <db> <sub> --id-mode 0`` (0 = database keys) and ``convert2fasta``.

``createsubdb`` runs with ``--subdb-mode 1`` (soft-link the data, write a new index), so a subset costs an
index, not a copy of the sequences.

``subtract``: the records of a downloaded FASTA (``from``) whose key (``key_pattern``'s group of the record
ID) is not the key of any record of another source (``minus``).  Memory: the keys of both sides are written
to Parquet in a streamed pass (one chunk of IDs in memory at a time); polars' streaming engine anti-joins
them, holding a hash table of the ``minus`` keys (for UniRef50, ~70M keys of ~10 bytes: a few GB), and
writes the surviving record indices sorted; the output is written by streaming ``from`` once more in lockstep
with those indices.  No Python set of IDs is built.
"""

from __future__ import annotations

import json
import re
import subprocess
import tarfile
import tempfile
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import urlparse

from plmscale.atomic import atomic_path, write_json_atomic

Log = Callable[[str], None]
SUBSETS = ("all", "representatives", "members")
DEFAULT_KEY_PATTERN = r"^UniRef\d+_(.+)$"
_DB_SUFFIXES = re.compile(r"^(_h)?(\.(index|dbtype|lookup|source|\d+))?$")
_KEY_CHUNK = 1 << 20  # IDs per Parquet chunk in the subtract stage


# ------------------------------------------------------------------------------------------ config


def archive_name(url: str) -> str:
    """The file name of an archive URL (the ``{archive}`` wildcard of the shared archive download)."""
    name = PurePosixPath(urlparse(url).path).name
    if not name:
        raise ValueError(f"source url {url!r} names no file; point it at the .tar.gz itself")
    return name


def check_source_refs(config: Mapping[str, Any]) -> None:
    """Parse-time checks of the derived sources; raise ``ValueError`` naming the key and the fix.

    * ``subtract``: ``minus`` names another existing source, and the chain of ``minus`` references has no
      cycle; ``key_pattern`` compiles and has exactly one group.
    * ``mmseqs_db``: ``representatives``/``members`` need ``clusters``; sources that share an archive URL
      give the same checksums (the archive is downloaded once, by the first of them in sorted order).
    """
    sources = config.get("sources") or {}
    problems: list[str] = []
    archives: dict[str, tuple[str, Any, Any]] = {}
    for name in sorted(sources):
        spec = sources[name]
        kind = spec.get("kind")
        where = f"sources.{name}"
        if kind == "subtract":
            minus = spec.get("minus")
            if minus == name:
                problems.append(f"{where}.minus: names the source itself; name another source")
            elif minus not in sources:
                problems.append(f"{where}.minus: {minus!r} is not a source; one of {sorted(sources)}")
            pattern = spec.get("key_pattern", DEFAULT_KEY_PATTERN)
            try:
                groups = re.compile(pattern).groups
            except re.error as err:
                problems.append(f"{where}.key_pattern: {pattern!r} is not a regex ({err}); fix it")
            else:
                if groups != 1:
                    problems.append(f"{where}.key_pattern: {pattern!r} has {groups} groups; give exactly one")
        elif kind == "mmseqs_db":
            if spec.get("subset", "all") != "all" and not spec.get("clusters"):
                problems.append(
                    f"{where}: subset {spec['subset']!r} needs 'clusters' (the clustering database in the "
                    "archive whose index keys are the representatives); add it or use subset: all"
                )
            key = archive_name(spec["url"])
            sums = (spec["url"], spec.get("sha256"), spec.get("md5"))
            first = archives.setdefault(key, (name, *sums[1:]))
            if first[1:] != sums[1:] or sources[first[0]]["url"] != spec["url"]:
                problems.append(
                    f"{where}: archive {key!r} is also the archive of sources.{first[0]} with another url or "
                    "checksum; give both the same url, sha256 and md5"
                )
    for name in sorted(sources):  # cycles among subtract sources
        seen, current = [name], sources[name]
        while current.get("kind") == "subtract" and current.get("minus") in sources:
            nxt = current["minus"]
            if nxt in seen:
                if nxt == name and len(seen) > 1:
                    problems.append(f"sources.{name}.minus: cycle {' -> '.join([*seen, nxt])}; break it")
                break
            seen.append(nxt)
            current = sources[nxt]
    if problems:
        raise ValueError("invalid configuration:\n  " + "\n  ".join(problems))


def archive_source(sources: Mapping[str, Mapping[str, Any]], archive: str) -> Mapping[str, Any]:
    """The spec (url and checksums) of the first ``mmseqs_db`` source, in sorted order, of ``archive``."""
    for name in sorted(sources):
        spec = sources[name]
        if spec.get("kind") == "mmseqs_db" and archive_name(spec["url"]) == archive:
            return spec
    raise KeyError(f"no mmseqs_db source has the archive {archive!r}")


# ----------------------------------------------------------------------------------------- mmseqs_db


def _wanted(base: str, names: list[str], index_only: list[str]) -> bool:
    for n in names:
        if base.startswith(n) and _DB_SUFFIXES.match(base[len(n) :]):
            return True
    return base in {f"{n}.{ext}" for n in index_only for ext in ("index", "dbtype")}


def extract_databases(
    archive: str | Path,
    names: list[str],
    dest: str | Path,
    *,
    index_only: list[str] | None = None,
    log: Log = print,
) -> list[str]:
    """Extract from ``archive`` only the files of the MMseqs2 databases ``names`` into ``dest`` (flat).

    A database ``X`` is the files ``X``, ``X.index``, ``X.dbtype``, ``X.lookup``, ``X.source``, ``X.<n>``
    (split data) and the same for its header database ``X_h`` (MMseqs2 wiki, "MMseqs2 database format").
    Of the databases ``index_only`` (a clustering, whose keys are all that is read) only ``.index`` and
    ``.dbtype`` are extracted.  Members are found by base name in any folder of the archive; only regular
    files are written (tarfile's ``data`` filter).  Raises ``FileNotFoundError`` naming the databases
    missing from the archive.
    """
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    index_only = list(index_only or [])
    found: list[str] = []
    with tarfile.open(archive, "r:*") as tar:
        for member in tar:  # streamed: one pass over the (possibly huge) archive
            base = PurePosixPath(member.name).name
            if not member.isfile() or not _wanted(base, names, index_only):
                continue
            member.name = base
            tar.extract(member, dest, filter="data")
            found.append(base)
    missing = [n for n in [*names, *index_only] if f"{n}.index" not in found]
    if missing:
        raise FileNotFoundError(
            f"{archive}: no MMseqs2 database {missing} (no <name>.index); the archive holds other names. "
            "Fix: set db/clusters to the database names inside the archive (list it with tar tzf)"
        )
    log(f"extracted {len(found)} files of {names} from {archive}")
    return sorted(found)


def _index_keys(path: Path) -> Iterator[int]:
    """The keys of an MMseqs2 ``.index`` file (``key\\toffset\\tlength`` lines), in file order."""
    with open(path, "rb") as handle:
        for line in handle:
            if line.strip():
                yield int(line.split(b"\t", 1)[0])


def _sorted_keys(path: Path) -> Iterator[int]:
    """:func:`_index_keys`, raising ``ValueError`` at the first key smaller than the one before it."""
    last = -1
    for key in _index_keys(path):
        if key < last:
            raise ValueError(
                f"{path} is not sorted by key ({key} after {last}); sort it with `sort -n -k1,1`"
            )
        last = key
        yield key


def write_member_keys(db_index: str | Path, clusters_index: str | Path, out: str | Path) -> int:
    """Write the keys of ``db_index`` that are not in ``clusters_index``, one per line; return the count.

    A streamed merge of the two index files, which MMseqs2 keeps sorted by key (an unsorted file raises
    ``ValueError``); memory is constant.
    """
    count = 0
    clusters = _sorted_keys(Path(clusters_index))
    current = next(clusters, None)
    with open(out, "w") as handle:
        for key in _sorted_keys(Path(db_index)):
            while current is not None and current < key:
                current = next(clusters, None)
            if current != key:
                handle.write(f"{key}\n")
                count += 1
    return count


def _run(cmd: list[str], log: Log) -> None:
    log("running: " + " ".join(cmd))
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(
            f"mmseqs {cmd[1]} failed with exit code {proc.returncode}:\n"
            f"{proc.stderr[-4000:]}{proc.stdout[-2000:]}"
        )


def _count_fasta(path: Path) -> int:
    with open(path, "rb") as handle:
        return sum(1 for line in handle if line.startswith(b">"))


def convert_mmseqs_db(
    binary: str,
    dbdir: str | Path,
    db: str,
    output: str | Path,
    *,
    subset: str = "all",
    clusters: str | None = None,
    work: str | Path | None = None,
    log: Log = print,
) -> dict[str, Any]:
    """Export ``subset`` of the MMseqs2 database ``dbdir/db`` to the FASTA ``output`` (atomically).

    See the module docstring for the commands of each subset.  Returns a report: the commands run, the
    number of entries of ``db`` and of ``clusters`` and the number of records written.
    """
    if subset not in SUBSETS:
        raise ValueError(f"subset {subset!r}: use one of {SUBSETS}")
    if subset != "all" and not clusters:
        raise ValueError(f"subset {subset!r} needs clusters (the clustering database name)")
    dbdir = Path(dbdir)
    commands: list[list[str]] = []

    def run(cmd: list[str]) -> None:
        commands.append(cmd)
        _run(cmd, log)

    with tempfile.TemporaryDirectory(prefix="mmseqs_subset_", dir=work) as tmp:
        source = str(dbdir / db)
        counts: dict[str, int] = {"db_entries": sum(1 for _ in _index_keys(dbdir / f"{db}.index"))}
        if clusters:
            counts["cluster_entries"] = sum(1 for _ in _index_keys(dbdir / f"{clusters}.index"))
        if subset == "representatives":
            source = str(Path(tmp) / "sub")
            run(
                [
                    binary,
                    "createsubdb",
                    str(dbdir / str(clusters)),
                    str(dbdir / db),
                    source,
                    "--subdb-mode",
                    "1",
                ]
            )
        elif subset == "members":
            keys = Path(tmp) / "member_keys.txt"
            counts["member_keys"] = write_member_keys(
                dbdir / f"{db}.index", dbdir / f"{clusters}.index", keys
            )
            source = str(Path(tmp) / "sub")
            run(
                [
                    binary,
                    "createsubdb",
                    str(keys),
                    str(dbdir / db),
                    source,
                    "--id-mode",
                    "0",
                    "--subdb-mode",
                    "1",
                ]
            )
        with atomic_path(output) as part:
            run([binary, "convert2fasta", source, str(part)])
            counts["records"] = _count_fasta(part)
    return {"subset": subset, "db": db, "clusters": clusters, "commands": commands, "counts": counts}


def mmseqs_db_source(
    archive: str | Path,
    output: str | Path,
    report: str | Path,
    *,
    binary: str,
    db: str,
    subset: str = "all",
    clusters: str | None = None,
    scratch: str | Path | None = None,
    log: Log = print,
) -> dict[str, Any]:
    """Extract the databases from a verified ``archive`` into a scratch folder and export ``subset``."""
    index_only = [] if subset == "all" or not clusters else [clusters]
    with tempfile.TemporaryDirectory(prefix="mmseqs_db_", dir=scratch) as tmp:
        files = extract_databases(archive, [db], Path(tmp) / "db", index_only=index_only, log=log)
        result = convert_mmseqs_db(binary, Path(tmp) / "db", db, output, subset=subset, clusters=clusters,
                                   work=tmp, log=log)  # fmt: skip
    result |= {"archive": str(archive), "extracted": files, "mmseqs": binary}
    write_json_atomic(report, result)
    log(json.dumps(result["counts"]))
    return result


# ------------------------------------------------------------------------------------------ subtract


def _keys_to_parquet(fasta: str | Path, pattern: re.Pattern[str], out_dir: Path, with_index: bool) -> int:
    """Write ``key`` (and ``index``, the record number) of each record of ``fasta`` to Parquet chunks."""
    import polars as pl

    from plmscale.fasta import read_fasta_ids

    out_dir.mkdir(parents=True, exist_ok=True)
    keys: list[str] = []
    n = chunk = 0

    def flush() -> None:
        nonlocal chunk
        frame = {"key": keys}
        if with_index:
            frame["index"] = range(n - len(keys), n)  # type: ignore[assignment]
        pl.DataFrame(
            frame, schema={"key": pl.String, "index": pl.UInt64} if with_index else None
        ).write_parquet(out_dir / f"{chunk:06d}.parquet")
        chunk += 1
        keys.clear()

    for record_id in read_fasta_ids(fasta):
        match = pattern.search(record_id)
        if match is None:
            raise ValueError(
                f"{fasta}: record ID {record_id!r} (record {n}) does not match key_pattern "
                f"{pattern.pattern!r}; "
                "fix key_pattern so that every ID of both sources matches"
            )
        keys.append(match.group(1))
        n += 1
        if len(keys) >= _KEY_CHUNK:
            flush()
    if keys or chunk == 0:
        flush()
    return n


def _surviving(path: Path) -> Iterator[int]:
    import pyarrow.parquet as pq

    for batch in pq.ParquetFile(path).iter_batches(batch_size=_KEY_CHUNK, columns=["index"]):
        yield from batch.column(0).to_pylist()


def subtract_fasta(
    from_fasta: str | Path,
    minus_fasta: str | Path,
    output: str | Path,
    *,
    key_pattern: str = DEFAULT_KEY_PATTERN,
    scratch: str | Path | None = None,
    log: Log = print,
) -> dict[str, int]:
    """Write the records of ``from_fasta`` whose key is not the key of a record of ``minus_fasta``.

    The key of a record is group 1 of ``key_pattern`` searched in its ID (default: the accession after
    ``UniRef<NN>_``).  Records keep their order and headers.  Returns the counts (see module docstring for
    the memory).
    """
    import polars as pl

    from plmscale.fasta import read_fasta, write_fasta

    pattern = re.compile(key_pattern)
    with tempfile.TemporaryDirectory(prefix="subtract_", dir=scratch) as tmp:
        work = Path(tmp)
        n_from = _keys_to_parquet(from_fasta, pattern, work / "from", with_index=True)
        n_minus = _keys_to_parquet(minus_fasta, pattern, work / "minus", with_index=False)
        keep = work / "keep.parquet"
        minus = pl.scan_parquet(work / "minus" / "*.parquet").unique()
        (
            pl.scan_parquet(work / "from" / "*.parquet")
            .join(minus, on="key", how="anti")
            .select("index")
            .sort("index")
            .sink_parquet(keep, engine="streaming")
        )
        wanted = _surviving(keep)
        target = next(wanted, None)

        def kept() -> Iterator[Any]:
            nonlocal target
            for i, record in enumerate(read_fasta(from_fasta)):
                if i == target:
                    yield record
                    target = next(wanted, None)

        written = write_fasta(kept(), output)
    counts = {
        "from_records": n_from,
        "minus_records": n_minus,
        "written": written,
        "removed": n_from - written,
    }
    log(json.dumps(counts))
    return counts
