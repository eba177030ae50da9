"""The package's map (its docstring) names every module, and the seams between the
delivery side and the install side hold: checked on the import statements themselves."""

from __future__ import annotations

import ast
import re

import receiver
import receiver.dev
from tests.helpers import PROJECT_ROOT

PACKAGE = PROJECT_ROOT / "receiver"
DELIVERY = {"web", "auth", "events", "intake"}
INSTALL_ONLY = {"storage", "sliced", "compression", "archive", "zipindex", "unpacker",
                "entrytree", "installer", "servable"}  # fmt: skip
DOWNLOAD_AND_UNPACK = {"storage", "sliced", "compression", "archive", "zipindex", "unpacker",
                       "entrytree"}  # fmt: skip
WEB_SIDE = {"web", "auth", "events", "intake", "journal", "probelane", "runtime"}


def modules() -> list[str]:
    return sorted(p.stem for p in PACKAGE.glob("*.py") if p.stem not in ("__init__", "__main__"))


def imports_of(module: str) -> set[str]:
    """The receiver modules `module` imports directly."""
    tree = ast.parse((PACKAGE / f"{module}.py").read_text())
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("receiver"):
            if node.module == "receiver":
                found |= {alias.name for alias in node.names}
            else:
                found.add(node.module.split(".")[1])
    return found


def test_the_map_names_every_module_once():
    listed = re.findall(r"^    (\w+) {2,}", receiver.__doc__ or "", re.MULTILINE)
    assert sorted(listed) == sorted([*modules(), "dev"])


def test_the_dev_package_names_each_of_its_modules():
    listed = re.findall(r"^`(\w+)`: ", receiver.dev.__doc__ or "", re.MULTILINE)
    assert sorted(listed) == sorted(
        p.stem for p in (PACKAGE / "dev").glob("*.py") if p.stem != "__init__"
    )


def test_the_delivery_side_never_imports_the_install_side():
    crossings = {m: sorted(imports_of(m) & INSTALL_ONLY) for m in DELIVERY}
    assert {m: c for m, c in crossings.items() if c} == {}


def test_download_and_unpack_never_import_the_journal_or_the_web_side():
    crossings = {m: sorted(imports_of(m) & WEB_SIDE) for m in DOWNLOAD_AND_UNPACK}
    assert {m: c for m, c in crossings.items() if c} == {}
