"""Every variable the process reads is declared once, and the reference page shows the
declarations as they are: generated from them, and checked here to be current."""

from __future__ import annotations

import dataclasses
import re
import types
import typing

import pytest

from receiver import cli
from receiver.config import Limits, ServerSettings, Settings, Slicing
from receiver.envvars import regenerate
from receiver.errors import ConfigError
from receiver.variables import PLATFORM, RECEIVER, REFERENCE, SERVER, every_variable, tables
from tests.helpers import PROJECT_ROOT

# os.environ.get("X"), os.environ["X"], os.getenv("X"), environ.setdefault("X"), "X" in os.environ
_READ_RE = re.compile(
    r"""(?:environ(?:\.get|\.setdefault|\.pop)?\s*[(\[]|getenv\s*\()\s*["']([A-Z][A-Z0-9_]*)["']"""
    r"""|["']([A-Z][A-Z0-9_]*)["']\s+(?:not\s+)?in\s+(?:os\.)?environ"""
)


def direct_reads() -> dict[str, set[str]]:
    """Each variable the process's code reads by a literal name -> the files that do."""
    sources = [
        *sorted((PROJECT_ROOT / "receiver").rglob("*.py")),
        PROJECT_ROOT / "gunicorn.conf.py",
    ]
    reads: dict[str, set[str]] = {}
    for source in sources:
        for match in _READ_RE.finditer(source.read_text()):
            name = match[1] or match[2]
            reads.setdefault(name, set()).add(str(source.relative_to(PROJECT_ROOT)))
    return reads


def test_the_code_reads_no_variable_by_name_but_those_of_libraries_and_the_platform():
    reads = direct_reads()
    # The search finds what it is for: these are read by name today.
    assert {"STORAGE_EMULATOR_HOST", "PROMETHEUS_MULTIPROC_DIR", "GOOGLE_CLOUD_PROJECT"} <= set(
        reads
    )
    platform = {var.name for var in PLATFORM}
    undeclared = {name: files for name, files in reads.items() if name not in platform}
    assert undeclared == {}, "declare these in receiver/variables.py (own ones: read them there)"


def test_every_variable_the_code_docs_and_manifests_name_is_declared():
    """An error message, a comment, a page or a manifest naming a variable names a real one."""
    texts = [*(PROJECT_ROOT / "receiver").rglob("*.py"), PROJECT_ROOT / "gunicorn.conf.py"]
    texts += [PROJECT_ROOT / "README.md", *(PROJECT_ROOT / "docs").glob("*.md")]
    texts += [*(PROJECT_ROOT / "deploy").rglob("*.yaml")]
    declared = {var.name for var in every_variable()}
    named = {
        (name, str(path.relative_to(PROJECT_ROOT)))
        for path in texts
        for name in re.findall(r"\b(?:RECEIVER|GUNICORN)_[A-Z0-9_]+", path.read_text())
    }
    assert len(named) > 100  # the search finds what it is for
    assert sorted((name, path) for name, path in named if name not in declared) == []


def test_names_are_declared_once():
    names = [var.name for var in every_variable()]
    assert sorted(name for name in set(names) if names.count(name) > 1) == []


def test_the_reference_tables_are_current():
    document = REFERENCE.read_text()
    assert regenerate(document, tables()) == document, "run: python -m receiver.variables"


def test_the_reference_lists_every_declared_variable_with_its_default_and_nothing_else():
    rows = re.findall(r"^\| `([A-Z][A-Z0-9_]*)` \| (.*?) \|", REFERENCE.read_text(), re.M)
    assert rows == [(var.name, var.shown_default) for var in every_variable()]
    assert dict(rows)["RECEIVER_KEEP_VERSIONS"] == "`2`"


def test_the_readme_sends_configuration_readers_to_the_reference():
    readme = (PROJECT_ROOT / "README.md").read_text()
    assert "[Configuration](docs/configuration.md)" in readme
    assert not re.search(r"^\| `[A-Z_]+` \|", readme, re.M), "the table lives in docs/ now"


def runtime_types(hint: typing.Any) -> tuple[type, ...]:
    if isinstance(hint, types.UnionType):
        return tuple(t for arg in typing.get_args(hint) for t in runtime_types(arg))
    return (typing.get_origin(hint) or hint,)


# Declared keys that are not one field: `source` fills two, these two are completed
# from other variables by Settings.from_env.
_NOT_ONE_FIELD = {"source", "state_dir", "max_waiting_pushes"}


@pytest.mark.parametrize("key", sorted(set(RECEIVER) - set(_NOT_ONE_FIELD)))
def test_each_declared_setting_fills_a_field_of_its_type(key):
    part, _, field = key.rpartition(".")
    owner = {"": Settings, "limits": Limits, "slicing": Slicing}[part]
    var = RECEIVER[key]
    value = var.parse(var.name, var.default or "")
    assert isinstance(value, runtime_types(typing.get_type_hints(owner)[field])), (key, value)


def test_every_field_of_the_settings_is_declared():
    declared = {key.rpartition(".")[2] for key in RECEIVER} | {"bucket", "prefix"}
    fields = {f.name for cls in (Settings, Limits, Slicing) for f in dataclasses.fields(cls)}
    # limits and slicing hold the parts; unpacked_setting names what set the limit
    assert fields - declared == {"limits", "slicing", "unpacked_setting"}
    server = {f.name for f in dataclasses.fields(ServerSettings)}
    assert server == set(SERVER)


def test_the_port_is_a_port():
    assert ServerSettings.from_env({}).port == 8080
    with pytest.raises(ConfigError, match="^PORT has value 70000: must be at most 65535$"):
        ServerSettings.from_env({"PORT": "70000"})


def test_the_cli_defaults_are_the_declared_ones(monkeypatch):
    for name in ("RECEIVER_SAVED_MODEL_TAGS", "RECEIVER_DONE_MARKER", "PORT"):
        monkeypatch.delenv(name, raising=False)
    publish = ["publish", "export", "gs://bucket/models/m/1"]
    args = cli._parser().parse_args(publish)
    assert (args.tags, args.done_marker) == ("serve", "_SUCCESS")
    assert cli._parser().parse_args(["demo"]).port == 8080
    monkeypatch.setenv("RECEIVER_SAVED_MODEL_TAGS", "serve,gpu")
    monkeypatch.setenv("RECEIVER_DONE_MARKER", "DONE")
    monkeypatch.setenv("PORT", "9090")
    args = cli._parser().parse_args(publish)
    assert (args.tags, args.done_marker) == ("serve,gpu", "DONE")
    assert cli._parser().parse_args(["demo"]).port == 9090
