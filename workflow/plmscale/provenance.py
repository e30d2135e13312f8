"""Provenance helpers: a digest of the package code a stage runs, used as a Snakemake param.

Snakemake reruns a job when its script changes, but not when a package module it imports does.  Each
rule therefore carries ``code=script_code(<script>)`` (or ``code_digest(<entry module>)`` for a shell
rule): a digest over every ``plmscale`` module the entry point imports, directly or through other
``plmscale`` modules.  An edit to one of those modules reruns the rule, and only the rules that use it.
The import graph is read from the sources (``ast``), so a new import is tracked without editing a list.
"""

from __future__ import annotations

import ast
import functools
import hashlib
import re
import textwrap
from pathlib import Path

PACKAGE = "plmscale"
PACKAGE_DIR = Path(__file__).resolve().parent
SCRIPTS_DIR = PACKAGE_DIR.parents[1] / "scripts"
_IMPORT_LINE = re.compile(
    rf"^[ \t]*(?:from[ \t]+{PACKAGE}\b[\w.]*[ \t]+import[ \t]+(?:\([^)]*\)|[^\n]*)"
    rf"|import[ \t]+[^\n]*\b{PACKAGE}\b[^\n]*)",
    re.MULTILINE,
)


def direct_imports(source: str, package_dir: Path = PACKAGE_DIR) -> set[str]:
    """Names of the package modules a source file imports (``from plmscale.x import``, ``import plmscale.x``,
    ``from plmscale import x`` where ``x`` is a module), read with ``ast`` without importing anything."""
    found: set[str] = set()
    # only the import statements are parsed (a DAG build reads ~70 modules): each one that names the
    # package, with its parenthesised continuation, dedented (imports inside functions count too)
    # (a statement the pattern cuts short, e.g. by a ")" in a comment, falls back to parsing the whole file)
    try:
        tree = ast.parse("\n".join(textwrap.dedent(m.group(0)) for m in _IMPORT_LINE.finditer(source)))
    except SyntaxError:
        tree = ast.parse(source)
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            head, _, rest = node.module.partition(".")
            if head != PACKAGE:
                continue
            if rest:
                found.add(rest.split(".")[0])
            else:  # from plmscale import x, y: only the names that are modules
                found.update(a.name for a in node.names if (package_dir / f"{a.name}.py").is_file())
        elif isinstance(node, ast.Import):
            for alias in node.names:
                head, _, rest = alias.name.partition(".")
                if head == PACKAGE and rest:
                    found.add(rest.split(".")[0])
    return found


def module_closure(modules: tuple[str, ...] | list[str], package_dir: Path = PACKAGE_DIR) -> list[str]:
    """The given package modules and every package module they import, transitively; sorted."""
    seen: set[str] = set()
    todo = list(modules)
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        path = package_dir / f"{name}.py"
        if not path.is_file():
            raise ValueError(f"code_digest: no module {PACKAGE}.{name} at {path}; check the module name")
        seen.add(name)
        stat = path.stat()
        todo.extend(_file_imports(str(path), stat.st_mtime_ns, stat.st_size, str(package_dir)) - seen)
    return sorted(seen)


@functools.lru_cache(maxsize=1024)
def _file_imports(path: str, mtime_ns: int, size: int, package_dir: str) -> frozenset[str]:
    """:func:`direct_imports` of one file, parsed once per (path, mtime, size): a DAG build asks for the
    closure of ~40 entry points that share most modules."""
    del mtime_ns, size  # cache key only: an edited file is parsed again
    return frozenset(direct_imports(Path(path).read_text(encoding="utf-8"), Path(package_dir)))


def code_digest(*modules: str, package_dir: Path = PACKAGE_DIR) -> str:
    """sha256 (first 16 hex digits) over the sources of the given ``plmscale`` modules and of every package
    module they import, transitively (see :func:`module_closure`)."""
    digest = hashlib.sha256()
    for name in module_closure(modules, package_dir):
        path = package_dir / f"{name}.py"
        stat = path.stat()
        digest.update(name.encode() + b"\0" + _file_bytes(str(path), stat.st_mtime_ns, stat.st_size) + b"\0")
    return digest.hexdigest()[:16]


@functools.lru_cache(maxsize=1024)
def _file_bytes(path: str, mtime_ns: int, size: int) -> bytes:
    del mtime_ns, size  # cache key only
    return Path(path).read_bytes()


def script_code(script: str, scripts_dir: Path = SCRIPTS_DIR, package_dir: Path = PACKAGE_DIR) -> str:
    """:func:`code_digest` of the package modules that ``scripts/<script>.py`` imports."""
    path = scripts_dir / f"{script}.py"
    if not path.is_file():
        raise ValueError(f"script_code: no entry point {path}; name a file in scripts/ without .py")
    modules = direct_imports(path.read_text(encoding="utf-8"), package_dir)
    if not modules:
        raise ValueError(f"script_code: {path} imports no {PACKAGE} module; make it call a package function")
    return code_digest(*sorted(modules), package_dir=package_dir)
