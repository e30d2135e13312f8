"""Code digests follow the package's imports: an edit reruns exactly the rules whose code imports it."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from plmscale.provenance import code_digest, direct_imports, module_closure, script_code

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def package(tmp_path: Path) -> Path:
    """a -> b -> c (three import spellings); d stands alone; VERSION is a name, not a module."""
    pkg = tmp_path / "plmscale"
    pkg.mkdir()
    (pkg / "a.py").write_text("import json\nfrom plmscale.b import f\n")
    (pkg / "b.py").write_text("from plmscale import c, VERSION\n\ndef f():\n    import plmscale.c as cc\n")
    (pkg / "c.py").write_text("X = 1\n")
    (pkg / "d.py").write_text("import numpy\n")
    return pkg


def test_direct_imports_reads_every_spelling_and_skips_names(package):
    assert direct_imports((package / "a.py").read_text(), package) == {"b"}
    assert direct_imports((package / "b.py").read_text(), package) == {"c"}
    source = "from . import c\nfrom plmscale.c.sub import y\nimport numpy.linalg"
    assert direct_imports(source, package) == {"c"}


def test_closure_is_transitive(package):
    assert module_closure(["a"], package) == ["a", "b", "c"]
    assert module_closure(["d", "c"], package) == ["c", "d"]


def test_digest_changes_with_an_imported_module_only(package):
    before = code_digest("a", package_dir=package)
    (package / "d.py").write_text("import numpy  # edited\n")
    assert code_digest("a", package_dir=package) == before
    (package / "c.py").write_text("X = 2\n")  # two imports away
    assert code_digest("a", package_dir=package) != before


def test_missing_module_names_it(package):
    with pytest.raises(ValueError, match=r"plmscale\.nope"):
        code_digest("nope", package_dir=package)


def test_script_code_follows_the_script_imports(package, tmp_path):
    scripts = tmp_path / "scripts"
    scripts.mkdir()
    (scripts / "step.py").write_text("from plmscale.a import run\n")
    (scripts / "bare.py").write_text("print('no package')\n")
    assert script_code("step", scripts, package) == code_digest("a", package_dir=package)
    with pytest.raises(ValueError, match="imports no plmscale module"):
        script_code("bare", scripts, package)
    with pytest.raises(ValueError, match="no entry point"):
        script_code("absent", scripts, package)


def test_real_closures():
    def closure(script: str) -> list[str]:
        return module_closure(sorted(direct_imports((REPO / "scripts" / f"{script}.py").read_text())))

    assert "powerlaw" in closure("fit") and "extrapolation" in closure("paper_fit")
    assert "paper_plots" in closure("paper_plots")
    assert "train" not in closure("tokenize_source")  # README: editing train.py does not rerun tokenization
    assert "train" in module_closure(["train_cli"]) and "checkpoint" in module_closure(["train_cli"])


def test_every_script_rule_digests_its_own_script():
    """A rule whose code= named another script would miss edits to the code it runs."""
    for smk in (REPO / "rules").glob("*.smk"):
        for block in re.split(r"(?m)^(?=rule )", smk.read_text()):
            script = re.search(r'script:\n\s+"\.\./scripts/(\w+)\.py"', block)
            if script:
                assert f'code=script_code("{script.group(1)}")' in block, (smk.name, block[:60])
