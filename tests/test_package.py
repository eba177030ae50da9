"""The package's map (its docstring, and each subpackage's) names every module, and the
seams between the delivery side and the install side hold: checked on the import
statements themselves."""

from __future__ import annotations

import ast
import importlib
import re
import subprocess
import sys
from pathlib import Path

import pytest

import receiver
import receiver.dev
from tests.helpers import PROJECT_ROOT

PACKAGE = PROJECT_ROOT / "receiver"
SUBPACKAGES = ("download", "unpack")
DELIVERY = {"web", "auth", "certs", "events", "intake", "relay", "peers"}
INSTALL_ONLY = {"download", "unpack", "fetch", "installer", "servable"}
# The journal and what serves HTTP: download and unpack know of neither.
WEB_SIDE = DELIVERY | {"journal", "schema", "versions", "quarantine", "probelane", "runtime"}


def python_files() -> list[Path]:
    """The project's own Python: the package, its tests and its benchmarks."""
    return sorted(
        f for d in ("receiver", "tests", "benchmarks") for f in (PROJECT_ROOT / d).rglob("*.py")
    )


def modules(package: Path = PACKAGE) -> list[str]:
    """The modules and subpackages directly in `package`."""
    names = [p.stem for p in package.glob("*.py") if p.stem not in ("__init__", "__main__")]
    names += [p.parent.name for p in package.glob("*/__init__.py")]
    return sorted(names)


def imports_of(name: str) -> set[str]:
    """The receiver's top-level modules and subpackages `name` imports (a subpackage: any
    of its modules), itself left out; absolute, relative and plain `import` statements."""
    path = PACKAGE / name
    files = sorted(path.glob("*.py")) if path.is_dir() else [PACKAGE / f"{name}.py"]
    found: set[str] = set()
    for file in files:
        package = ["receiver", *file.relative_to(PACKAGE).parent.parts]
        for node in ast.walk(ast.parse(file.read_text())):
            if isinstance(node, ast.Import):
                found |= {_top(alias.name.split(".")) for alias in node.names}
            elif isinstance(node, ast.ImportFrom):
                base = package[: len(package) - node.level + 1] if node.level else []
                parts = [*base, *(node.module or "").split(".")] if node.module else base
                if parts[1:]:
                    found.add(_top(parts))
                else:  # `from receiver import x` or `from . import x`
                    found |= {_top([*parts, alias.name]) for alias in node.names}
    return found - {name, ""}


def _top(parts: list[str]) -> str:
    """`receiver.download.store` -> `download`; anything outside the package -> ""."""
    return parts[1] if parts[0] == "receiver" and len(parts) > 1 else ""


def listed_in(docstring: str | None) -> list[str]:
    return re.findall(r"^ *(\w+) {2,}\S", docstring or "", re.MULTILINE)


def test_the_map_names_every_module_once():
    assert sorted(listed_in(receiver.__doc__)) == modules()


@pytest.mark.parametrize("subpackage", SUBPACKAGES)
def test_each_subpackage_maps_its_own_modules(subpackage):
    docstring = importlib.import_module(f"receiver.{subpackage}").__doc__
    assert sorted(listed_in(docstring)) == modules(PACKAGE / subpackage)


def test_the_dev_package_names_each_of_its_modules():
    listed = re.findall(r"^`(\w+)`: ", receiver.dev.__doc__ or "", re.MULTILINE)
    assert sorted(listed) == sorted(
        p.stem for p in (PACKAGE / "dev").glob("*.py") if p.stem != "__init__"
    )


def test_the_delivery_side_never_imports_the_install_side():
    crossings = {m: sorted(imports_of(m) & INSTALL_ONLY) for m in DELIVERY}
    assert {m: c for m, c in crossings.items() if c} == {}


def test_download_and_unpack_never_import_the_journal_or_the_web_side():
    crossings = {m: sorted(imports_of(m) & WEB_SIDE) for m in SUBPACKAGES}
    assert {m: c for m, c in crossings.items() if c} == {}


def test_download_never_imports_unpack_nor_unpack_download():
    """The data flows from one to the other through the installer, never directly."""
    assert "unpack" not in imports_of("download"), imports_of("download")
    assert "download" not in imports_of("unpack"), imports_of("unpack")


# What answers pushes and shows state: `web` aside (the app factory wires everything),
# none of these loads the install side, even through another module.
READERS = sorted((DELIVERY - {"web"}) | {"status", "metrics", "readiness", "journal"})


def loaded_by(module: str) -> set[str]:
    """The receiver's top-level modules a fresh interpreter has loaded after importing it."""
    probe = (
        f"import sys, receiver.{module}\n"
        "print(' '.join(n.split('.')[1] for n in sys.modules if n.startswith('receiver.')))"
    )
    loaded = subprocess.run(
        [sys.executable, "-c", probe], cwd=PROJECT_ROOT, capture_output=True, text=True, check=True
    ).stdout.split()
    return set(loaded)


def test_no_reader_loads_the_install_side_even_indirectly():
    crossings = {m: sorted(loaded_by(m) & (INSTALL_ONLY | {"sync", "worker"})) for m in READERS}
    assert {m: c for m, c in crossings.items() if c} == {}


def test_the_vocabulary_is_imported_from_where_it_is_declared():
    """An enum taken from a module that merely imports it ties the two together for no
    reason, and hides where the words are defined."""
    import receiver.vocabulary as vocabulary

    words = {name for name in dir(vocabulary) if not name.startswith("_") and name[0].isupper()}
    borrowed = []
    for file in python_files():
        for node in ast.walk(ast.parse(file.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module not in (
                None,
                "receiver.vocabulary",
            ):
                borrowed += [
                    f"{file.relative_to(PROJECT_ROOT)}: {alias.name} from {node.module}"
                    for alias in node.names
                    if alias.name in words and (node.module or "").startswith("receiver")
                ]
    assert borrowed == []


def test_every_module_stays_under_300_lines():
    """One job a module: past 300 lines a module is doing two (the house rule)."""
    long = {
        str(file.relative_to(PROJECT_ROOT)): lines
        for file in python_files()
        if (lines := len(file.read_text().splitlines())) >= 300
    }
    assert long == {}
