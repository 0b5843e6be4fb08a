"""What the embedded instruction set's family modules share: the tables and the chat helpers.

The tables are data, not code: ``embedded/tables.json`` (next to this module; its ``notes``
say what each table holds). JSON has no tuples, so lists are turned back into tuples on
loading: the families unpack rows, and the data set's bytes must not depend on the container
type. The file is read once per process (``load_tables`` is cached) and exposed as the
constants below. Underscored helpers are private to the ``embedded_*`` modules.
"""

from __future__ import annotations

import functools
import json
from decimal import ROUND_HALF_UP, Decimal
from fractions import Fraction
from importlib import resources
from types import MappingProxyType
from typing import Any

TABLE_NAMES = (
    "capitals",
    "elements",
    "planets",
    "planet_facts",
    "ordinals",
    "glossary",
    "antonyms",
    "synonyms",
    "passive_pairs",
    "question_pairs",
    "tips",
    "words",
    "names",
    "items",
    "priced_items",
    "weekdays",
)


def _frozen(value: Any) -> Any:
    """JSON lists back to tuples and objects to read-only mappings (shared: ``load_tables`` is cached)."""
    if isinstance(value, list):
        return tuple(_frozen(v) for v in value)
    if isinstance(value, dict):
        return MappingProxyType({k: _frozen(v) for k, v in value.items()})
    return value


@functools.cache
def load_tables() -> MappingProxyType:
    """The ``tables`` of ``embedded/tables.json``, frozen (see the module docstring)."""
    text = resources.files(__package__).joinpath("embedded", "tables.json").read_text(encoding="utf-8")
    tables = json.loads(text)["tables"]
    if set(tables) != set(TABLE_NAMES):
        raise ValueError(f"embedded/tables.json: expected tables {sorted(TABLE_NAMES)}, found {sorted(tables)}")
    return _frozen(tables)


_TABLES = load_tables()
CAPITALS: tuple[tuple[str, str], ...] = _TABLES["capitals"]
ELEMENTS: tuple[tuple[str, str, int], ...] = _TABLES["elements"]
PLANETS: tuple[str, ...] = _TABLES["planets"]
PLANET_FACTS: tuple[tuple[str, str, str], ...] = _TABLES["planet_facts"]
ORDINALS: tuple[str, ...] = _TABLES["ordinals"]
GLOSSARY: MappingProxyType[str, tuple[str, str, str]] = _TABLES["glossary"]
ANTONYMS: MappingProxyType[str, str] = _TABLES["antonyms"]
SYNONYMS: MappingProxyType[str, tuple[str, str]] = _TABLES["synonyms"]
PASSIVE_PAIRS: tuple[tuple[str, str], ...] = _TABLES["passive_pairs"]
QUESTION_PAIRS: tuple[tuple[str, str], ...] = _TABLES["question_pairs"]
TIPS: MappingProxyType[str, tuple[str, ...]] = _TABLES["tips"]
WORDS: tuple[str, ...] = _TABLES["words"]
NAMES: tuple[str, ...] = _TABLES["names"]
ITEMS: tuple[str, ...] = _TABLES["items"]
PRICED_ITEMS: tuple[tuple[str, str, int], ...] = _TABLES["priced_items"]
WEEKDAYS: tuple[str, ...] = _TABLES["weekdays"]

Messages = list[dict[str, str]]


# ----------------------------------------------------------------------------- helpers


def _user(text: str) -> dict[str, str]:
    return {"role": "user", "content": text}


def _assistant(text: str) -> dict[str, str]:
    return {"role": "assistant", "content": text}


def _chat(*turns: str) -> Messages:
    """Alternate user/assistant messages from ``q1, a1, q2, a2, ...``."""
    return [_user(t) if i % 2 == 0 else _assistant(t) for i, t in enumerate(turns)]


def _cap(text: str) -> str:
    return text[:1].upper() + text[1:]


def _plural(k: int, word: str, plural: str | None = None) -> str:
    return f"{k} {word if k == 1 else (plural or word + 's')}"


def _round2(value: Fraction) -> tuple[str, bool]:
    """``value`` rounded half away from zero to two decimals, trailing zeros dropped; and whether exact."""
    q = (Decimal(value.numerator) / Decimal(value.denominator)).quantize(Decimal("0.01"), rounding=ROUND_HALF_UP)
    text = format(q.normalize(), "f")
    return ("0" if text == "-0" else text), Fraction(q) == value


def _join_numbers(values: list[int]) -> str:
    return ", ".join(str(v) for v in values)
