"""How an environment variable is declared (`Var`) and how its value is parsed.

A `Var` is everything about one variable: its name, its default as it would be written
in the environment, the parser its value goes through and a one-line meaning.
`receiver.variables` declares every variable the process reads with it; `Settings`
(`receiver.config`) and the tables of docs/configuration.md are derived from those
declarations. A parser gets the variable's name with its value, so that every
`ConfigError` names the variable, in one line.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Generic, TypeVar

from receiver.errors import ConfigError
from receiver.objectref import BUCKET_NAME, bucket_name_problem

T = TypeVar("T")
U = TypeVar("U")
Mode = TypeVar("Mode", bound=enum.StrEnum)
# (variable name, value) -> the value parsed, or a ConfigError naming the variable
Parser = Callable[[str, str], T]

MIB = 1024**2
GIB = 1024**3


@dataclass(frozen=True)
class Var(Generic[T]):
    """One environment variable, declared once."""

    name: str
    default: str | None  # as written in the environment; None: required, "": unset
    parse: Parser[T]
    meaning: str  # one line of Markdown: the reference's, and a missing variable's error
    shown: str = ""  # the default as the reference shows it, when not `default` itself

    def raw(self, environ: Mapping[str, str]) -> str | None:
        """The value as set (surrounding blanks dropped); unset or blank: the default."""
        return environ.get(self.name, "").strip() or self.default

    def read(self, environ: Mapping[str, str]) -> T:
        value = self.raw(environ)
        if value is None:
            raise ConfigError(f"{self.name} is required: {self.meaning.replace('`', '')}")
        return self.parse(self.name, value)

    @property
    def shown_default(self) -> str:
        if self.shown:
            return self.shown
        if self.default is None:
            return "(required)"
        return f"`{self.default}`" if self.default else "(unset)"


def text(name: str, value: str) -> str:
    return value


def whole(minimum: int, maximum: int | None = None) -> Parser[int]:
    def parse(name: str, value: str) -> int:
        try:
            number = int(value)
        except ValueError:
            raise ConfigError(f"{name} has value {value!r}: not a whole number") from None
        if number < minimum:
            raise ConfigError(f"{name} has value {value!r}: must be at least {minimum}")
        if maximum is not None and number > maximum:
            raise ConfigError(f"{name} has value {number}: must be at most {maximum}")
        return number

    return parse


def number(minimum: float) -> Parser[float]:
    """Seconds, days: any number from `minimum` on."""

    def parse(name: str, value: str) -> float:
        try:
            result = float(value)
        except ValueError:
            raise ConfigError(f"{name} has value {value!r}: not a number") from None
        if not result >= minimum:  # also refuses nan
            raise ConfigError(f"{name} has value {value!r}: must be at least {minimum:g}")
        return result

    return parse


_SIZE_RE = re.compile(r"(?P<number>[0-9]+)\s*(?P<unit>|Ki|Mi|Gi|Ti)")
_SIZE_UNITS = {"": 1, "Ki": 1024, "Mi": MIB, "Gi": GIB, "Ti": 1024 * GIB}


def size(minimum: int) -> Parser[int]:
    """Bytes, as a whole number or with a Ki, Mi, Gi or Ti suffix (Kubernetes' units)."""

    def parse(name: str, value: str) -> int:
        match = _SIZE_RE.fullmatch(value)
        if not match:
            raise ConfigError(
                f"{name} has value {value!r}: bytes, as a whole number or with a suffix "
                "Ki, Mi, Gi or Ti (e.g. 4Gi)"
            )
        result = int(match["number"]) * _SIZE_UNITS[match["unit"]]
        if result < minimum:
            raise ConfigError(f"{name} has value {value!r}: must be at least {minimum} bytes")
        return result

    return parse


def optional(parser: Parser[T]) -> Parser[T | None]:
    """None while unset (the declared default is ""), else what `parser` makes of it."""

    def parse(name: str, value: str) -> T | None:
        return parser(name, value) if value else None

    return parse


def then(parser: Parser[T], convert: Callable[[T], U]) -> Parser[U]:
    """`parser`'s result converted into what the setting holds."""

    def parse(name: str, value: str) -> U:
        return convert(parser(name, value))

    return parse


def path(name: str, value: str) -> Path:
    """A path; a relative one is taken from the working directory."""
    result = Path(value)
    return result if result.is_absolute() else Path.cwd() / result


def url(name: str, value: str) -> str:
    """Empty, or an http(s) URL without its trailing slash."""
    value = value.rstrip("/")
    if value and not re.fullmatch(r"https?://[^/\s]+(/\S*)?", value):
        raise ConfigError(
            f"{name} has value {value!r}: an http:// or https:// URL "
            "(TF Serving's REST port, e.g. http://localhost:8501)"
        )
    return value


def comma_set(name: str, value: str) -> frozenset[str]:
    """Comma-separated items (service-account emails, tags), blanks around them dropped."""
    return frozenset(item.strip() for item in value.split(",") if item.strip())


def tag_set(name: str, value: str) -> frozenset[str]:
    tags = comma_set(name, value)
    if not tags:
        raise ConfigError(f"{name} has value {value!r}: name at least one tag")
    return tags


_BOOLEANS = {"true": True, "1": True, "yes": True, "false": False, "0": False, "no": False}


def boolean(name: str, value: str) -> bool:
    value = value.lower()
    if value not in _BOOLEANS:
        raise ConfigError(f"{name} has value {value!r}: must be true or false")
    return _BOOLEANS[value]


def choice(allowed: type[Mode]) -> Parser[Mode]:
    """One member of a StrEnum of receiver.vocabulary, by its value, in any case."""

    def parse(name: str, value: str) -> Mode:
        value = value.lower()
        try:
            return allowed(value)
        except ValueError:
            raise ConfigError(
                f"{name} has value {value!r}: must be one of {', '.join(allowed)}"
            ) from None

    return parse


_SOURCE_RE = re.compile(  # matched whole (fullmatch): `$` accepts a trailing newline
    rf"gs://(?P<bucket>{BUCKET_NAME})(?:/(?P<prefix>.*))?"
)


def gs_source(name: str, value: str) -> tuple[str, str]:
    """gs://BUCKET[/PREFIX] as (bucket, prefix), the prefix "" or ending in "/"."""
    match = _SOURCE_RE.fullmatch(value)
    if not match:
        bucket = value.removeprefix("gs://").partition("/")[0]
        problem = bucket_name_problem(bucket)
        if value.startswith("gs://") and bucket and problem:
            raise ConfigError(f"{name} has value {value!r}: {problem}")
        raise ConfigError(f"{name} has value {value!r}: expected gs://BUCKET or gs://BUCKET/PREFIX")
    prefix = (match["prefix"] or "").strip("/")
    return match["bucket"], f"{prefix}/" if prefix else ""


def markdown_table(variables: Iterable[Var[Any]]) -> str:
    """The reference's table of `variables`, in their declared order."""
    rows = ["| variable | default | meaning |", "|---|---|---|"]
    rows += [f"| `{var.name}` | {var.shown_default} | {var.meaning} |" for var in variables]
    return "\n".join(rows) + "\n"


_GENERATED_RE = re.compile(
    r"(?P<begin><!-- generated: (?P<table>\w+)\b[^>]*-->\n)(?P<body>.*?)"
    r"(?P<end><!-- end of generated (?P=table) -->)",
    re.DOTALL,
)


def regenerate(document: str, tables: Mapping[str, str]) -> str:
    """`document` with each generated block replaced by its table from `tables`.

    A block runs from `<!-- generated: NAME … -->` to `<!-- end of generated NAME -->`;
    a table without its block in the document is a ValueError, so none goes unseen."""
    found = {match["table"] for match in _GENERATED_RE.finditer(document)}
    if missing := sorted(set(tables) - found):
        raise ValueError(f"no generated block for {', '.join(missing)}")
    return _GENERATED_RE.sub(
        lambda match: match["begin"] + tables[match["table"]] + match["end"], document
    )
