"""The held-out verifiable set ``embedded-verifiable-v1``: embedded-family prompts in no training split,
each with checks a program can score (``sapo eval --suite verifiable``, ``evaluate/verifiable.py``).

The prompts are ``build_heldout_examples()`` (a seed-1 build minus every prompt of the release). The
checks are read off each family's computed answer when the set is built, so the set is data:
``{id, source, prompt, reference, checks: [{"check": name, ...arguments}]}``. What each family is held to:

- numbers (arithmetic, unit conversion, list statistics, letter counts): the answer's last number;
- sorted lists: the sorted numbers, in order; weekdays: the last weekday named;
- yes/no and odd/even questions: the first of the choices the answer names;
- words (capitals, elements, planets, antonyms and synonyms, definitions, rewritten sentences, spelled
  words): the reference's key words that the prompt does not already contain (at least half of them; a
  rewritten or spelled-out text must appear whole);
- first-and-last-letter questions are left out (no check that does not depend on the phrasing);
- format families: the format (one word, all capitals, all lowercase, exactly N bullets, three numbered
  tips) plus, where there is one, the fact.

Scoring is against the computed reference: a right answer phrased with other words (a synonym not in the
tables, say) can fail. The prompt is held out, not every fact (a capital asked here may be asked in other
words in training). ``write_verifiable_items`` rewrites the shipped file byte for byte (a test checks).
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from sapo.files import write_jsonl

from .embedded_common import WEEKDAYS
from .embedded_data import build_heldout_examples

VERIFIABLE_FILE = "embedded-verifiable-v1.jsonl"  # shipped in evaluate/fixtures/verifiable/
_NUMBER = re.compile(r"-?\d+(?:\.\d+)?")
_WORD = re.compile(r"[^\W_]+")  # letters and digits, accented ones too (Bogotá)
_QUOTED = re.compile(r"\"([^\"]+)\"")
# Words that carry no fact: left out of the key words a reply must contain.
_STOPWORDS = frozenset(
    "a an the is are was were be of for to in on and or it its s that this what which who as by with our "
    "from at means meaning word adjective noun verb adverb example called opposite antonym synonym synonyms "
    "common two another there here has so each written chemical periodic table symbol atom atoms".split()
)


def _key_words(reference: str, prompt: str) -> list[str]:
    """Lowercase words of ``reference`` that ``prompt`` does not contain, stop words left out, in order."""
    asked = set(_WORD.findall(prompt.lower()))
    words = [w for w in _WORD.findall(reference.lower()) if w not in asked and w not in _STOPWORDS]
    return list(dict.fromkeys(words))


def _fact(prompt: str, reference: str) -> list[dict]:
    words = _key_words(reference, prompt)
    return [{"check": "key_words", "words": words, "min_share": 0.5}] if words else []


def _checks(source: str, prompt: str, reference: str) -> list[dict]:
    numbers = [float(x) for x in _NUMBER.findall(reference)]
    first = reference.split(maxsplit=1)[0].strip(",.!").lower()
    if source in ("arithmetic_word_problem", "unit_conversion", "list_statistics"):
        return [{"check": "final_number", "value": numbers[-1]}]
    if source == "word_manipulation":
        if numbers:
            return [{"check": "final_number", "value": numbers[-1]}]
        if "first" in prompt and "last" in prompt:
            return []  # "the first and the last letter": no phrasing-free check; left out of the set
        quoted = _QUOTED.findall(reference)
        return [{"check": "contains", "text": quoted[-1] if quoted else reference, "case_sensitive": True}]
    if source == "sort_numbers":
        return [{"check": "number_sequence", "values": numbers}]
    if source == "weekday_arithmetic":
        last = [w for w in re.findall(r"[A-Z][a-z]+", reference) if w in WEEKDAYS][-1]
        return [{"check": "choice", "choices": list(WEEKDAYS), "value": last, "pick": "last"}]
    if first in ("yes", "no"):
        return [{"check": "choice", "choices": ["yes", "no"], "value": first, "pick": "first"}]
    if source == "number_properties":  # "Tell me whether 152 is odd or even."
        value = next(w for w in _WORD.findall(reference.lower()) if w in ("odd", "even"))
        return [{"check": "choice", "choices": ["odd", "even"], "value": value, "pick": "first"}]
    if source == "sentence_rewriting":
        quoted = [q for q in _QUOTED.findall(reference) if q not in prompt]
        return [{"check": "contains", "text": quoted[-1] if quoted else reference, "case_sensitive": False}]
    if source == "practical_tips":
        return [{"check": "numbered_items", "n": 3}]
    if source == "format_bullet_points":
        n = len([line for line in reference.splitlines() if re.match(r"\s*[-*]\s+\S", line)])
        return [{"check": "bullet_items", "n": n}]
    if source == "format_one_word":
        return [{"check": "word_count", "n": 1}, *_fact(prompt, reference)]
    if source == "format_all_caps":
        return [{"check": "no_lowercase"}, *_fact(prompt, reference)]
    if source == "format_lowercase":
        return [{"check": "no_uppercase"}, *_fact(prompt, reference)]
    return _fact(prompt, reference)  # capitals, elements, planets, antonyms and synonyms, definitions


def build_verifiable_items() -> list[dict]:
    """Every held-out example a check can be read off, as a verifiable item; ids ``<family>-<k>``, build order."""
    items = []
    for k, example in enumerate(build_heldout_examples()):
        prompt, reference = example["messages"][0]["content"], example["messages"][1]["content"]
        checks = _checks(example["source"], prompt, reference)
        if not checks:
            continue
        items.append({"id": f"{example['source']}-{k:03d}", "source": example["source"], "prompt": prompt,
                      "reference": reference, "checks": checks})  # fmt: skip
    return items


def write_verifiable_items(path: str | os.PathLike) -> Path:
    """Write the set as JSONL. To regenerate the shipped file, from the repository root:
    ``write_verifiable_items("evaluate/fixtures/verifiable/" + VERIFIABLE_FILE)``."""
    return write_jsonl(path, build_verifiable_items())
