"""Environment variables described once: a table per settings class, one reader, and the tables of the docs.

Each settings class (``Settings``, ``AwsSettings``, ``WebhookSettings``) declares a :class:`Table` of
:class:`Variable` entries. :func:`read` parses an environment with it and collects every problem, so a user fixes a
deployment in one round trip; what a table cannot express (one variable needing another) the class checks itself.
:func:`render` writes a table as the markdown that docs/configuration.md shows between ``<!-- generated: {title} -->``
and ``<!-- end generated -->``; :func:`rewrite` puts the tables into the page (``make docs-config``), and
tests/test_settings_table.py fails when the page and the tables differ.

Standard library only: no AWS, no torch.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from enum import Enum
from pathlib import Path

from diarization.errors import ConfigurationError, DiarizationError

TRUE_WORDS = ("1", "true", "yes", "on")
FALSE_WORDS = ("0", "false", "no", "off")
NUMERIC_BOUNDS = ("minimum", "above", "maximum", "below")


class Kind(Enum):
    """How a variable's text becomes a value. Every kind but PREFIX takes a blank value for unset."""

    TEXT = "text"
    PATH = "path"
    PREFIX = "key prefix"
    """Text where blank is a value: the empty prefix (the whole bucket), not the default."""
    WHOLE = "whole number"
    NUMBER = "number"
    """A finite float: nan and inf are refused."""
    WHOLE_PART = "number, decimals dropped"
    """Read and bounded as a NUMBER, then truncated to an int (``90.5`` -> 90)."""
    FLAG = "true or false"
    """One of TRUE_WORDS or FALSE_WORDS, any case."""
    CHOICE = "choice"
    """One of ``choices``, any case; the value is lower case."""
    LIST = "comma-separated list"
    """A tuple of the comma-separated items, stripped, blanks dropped."""
    PARSED = "parsed"
    """``parse(text)``; a ``DiarizationError`` or ``ValueError`` it raises is the problem."""


NUMERIC = (Kind.WHOLE, Kind.NUMBER, Kind.WHOLE_PART)


@dataclass(frozen=True)
class Variable:
    """One environment variable: what it sets, how it is read, and the line of the docs that describes it."""

    name: str
    field: str
    """The settings dataclass's field it sets; unset (or blank), the field keeps its default."""
    kind: Kind
    default: str
    """As the docs show it (markdown): ``"`auto`"``, ``"—"``, ``"the input's bucket"``."""
    help: str
    """One line of markdown, the docs table's "Meaning" cell."""
    minimum: float | None = None
    above: float | None = None
    """Exclusive minimum."""
    maximum: float | None = None
    below: float | None = None
    """Exclusive maximum."""
    choices: tuple[str, ...] = ()
    example: str | None = None
    """Suggested in the problem when the text is not a number (whole numbers default to their smallest positive)."""
    parse: Callable[[str], object] | None = None

    def __post_init__(self) -> None:
        mistakes = [
            "help must be one line without '|'" if "\n" in self.help or "|" in self.help else "",
            "choices belong to CHOICE only" if bool(self.choices) != (self.kind is Kind.CHOICE) else "",
            "parse belongs to PARSED only" if (self.parse is None) == (self.kind is Kind.PARSED) else "",
            "bounds belong to numbers only"
            if self.kind not in NUMERIC and any(getattr(self, bound) is not None for bound in NUMERIC_BOUNDS)
            else "",
        ]
        if any(mistakes):
            raise ValueError(f"{self.name}: {'; '.join(mistake for mistake in mistakes if mistake)}")


@dataclass(frozen=True)
class Table:
    """The variables one settings dataclass reads."""

    title: str
    """Names the table's generated block in docs/configuration.md."""
    see: str
    """Where users read about these variables; ends every error message."""
    variables: tuple[Variable, ...]
    not_from_environment: frozenset[str] = frozenset()
    """Fields of the dataclass that no variable sets, on purpose (tests check every other field has one)."""

    def error(self, problems: list[str], **details: object) -> ConfigurationError:
        """All problems in one message, and in ``details["problems"]``."""
        return ConfigurationError(
            "Invalid configuration: " + " ".join(problems) + f" See {self.see}.", problems=problems, **details
        )


class InvalidValueError(Exception):
    """What is wrong with one variable's value, as the user reads it."""


def env_text(env: Mapping[str, str], name: str) -> str | None:
    """The variable's text without surrounding blanks; None when unset or blank."""
    return (env.get(name) or "").strip() or None


def read(table: Table, env: Mapping[str, str]) -> tuple[dict[str, object], list[str]]:
    """(values of the variables that are set, by field; every problem found). A variable with a problem is left
    out of the values, so its field keeps its default."""
    values: dict[str, object] = {}
    problems: list[str] = []
    for variable in table.variables:
        if variable.kind is Kind.PREFIX:
            given = env.get(variable.name)
            raw = None if given is None else given.strip()
        else:
            raw = env_text(env, variable.name)
        if raw is None:
            continue
        try:
            values[variable.field] = value_of(variable, raw)
        except InvalidValueError as problem:
            problems.append(str(problem))
    return values, problems


def value_of(variable: Variable, raw: str) -> object:
    """The value of a variable's (stripped) text, or the :class:`InvalidValueError` with it."""
    name, kind = variable.name, variable.kind
    if kind in NUMERIC:
        return number(variable, raw)
    if kind is Kind.PATH:
        return Path(raw)
    if kind is Kind.FLAG:
        if raw.lower() in TRUE_WORDS + FALSE_WORDS:
            return raw.lower() in TRUE_WORDS
        raise InvalidValueError(f"{name}={raw!r} is not true or false.")
    if kind is Kind.CHOICE:
        if raw.lower() in variable.choices:
            return raw.lower()
        raise InvalidValueError(f"{name}={raw!r} must be one of {', '.join(variable.choices)}.")
    if kind is Kind.LIST:
        return tuple(item.strip() for item in raw.split(",") if item.strip())
    if kind is Kind.PARSED and variable.parse is not None:
        try:
            return variable.parse(raw)
        except DiarizationError as error:
            raise InvalidValueError(error.message) from error
        except ValueError as error:
            raise InvalidValueError(f"{name}={raw!r}: {error}.") from error
    return raw


def number(variable: Variable, raw: str) -> float:
    """A WHOLE, NUMBER or WHOLE_PART variable's value, within its bounds."""
    name, whole = variable.name, variable.kind is Kind.WHOLE
    example = variable.example or (str(max(int(variable.minimum or 0), 1)) if whole else None)
    suggestion = f"; set e.g. {name}={example}" if example else ""
    try:
        value: float = int(raw) if whole else float(raw)
    except ValueError:
        what = "whole number" if whole else "number"
        raise InvalidValueError(f"{name}={raw!r} is not a {what}{suggestion}.") from None
    if not math.isfinite(value):
        raise InvalidValueError(f"{name}={raw!r} is not a finite number{suggestion}.")
    low, high, top, bottom = variable.minimum, variable.above, variable.maximum, variable.below
    if (
        (low is not None and value < low)
        or (high is not None and value <= high)
        or (top is not None and value > top)
        or (bottom is not None and value >= bottom)
    ):
        raise InvalidValueError(f"{name}={raw} must be {bounds(variable)}.")
    return int(value) if variable.kind is Kind.WHOLE_PART else value


def bounds(variable: Variable) -> str:
    """``at least 1``, ``greater than 0``, ``in [-1, 1)``: the values a numeric variable accepts."""
    low = f"[{variable.minimum}" if variable.minimum is not None else None
    low = f"({variable.above}" if variable.above is not None else low
    high = f"{variable.maximum}]" if variable.maximum is not None else None
    high = f"{variable.below})" if variable.below is not None else high
    if low and high:
        return f"in {low}, {high}"
    if low:
        return f"{'at least' if low[0] == '[' else 'greater than'} {low[1:]}"
    if high:
        return f"{'at most' if high[-1] == ']' else 'less than'} {high[:-1]}"
    return "a number"


def render(table: Table) -> str:
    """The table as docs/configuration.md shows it: variable, default, meaning."""
    rows = ["| Variable | Default | Meaning |", "|---|---|---|"]
    rows += [f"| `{variable.name}` | {variable.default} | {variable.help} |" for variable in table.variables]
    return "\n".join(rows) + "\n"


GENERATED = re.compile(r"(<!-- generated: (?P<title>[^>]*?) -->\n)(?P<body>.*?)(<!-- end generated -->)", re.DOTALL)


def rewrite(page: str, tables: Iterable[Table]) -> str:
    """The page with each ``<!-- generated: {title} -->`` block holding that table, freshly rendered. A block
    without a table, or a table without a block, is a ValueError."""
    by_title = {table.title: table for table in tables}
    placed: list[str] = []

    def fill(block: re.Match[str]) -> str:
        title = block["title"]
        if title not in by_title:
            raise ValueError(f"the page's block {title!r} names no settings table (tables: {', '.join(by_title)})")
        placed.append(title)
        return block[1] + render(by_title[title]) + block[4]

    text = GENERATED.sub(fill, page)
    missing = [title for title in by_title if title not in placed]
    if missing:
        raise ValueError(f"no '<!-- generated: ... -->' block on the page for {', '.join(missing)}")
    return text
