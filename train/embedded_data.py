"""The embedded instruction set ``sapo-embedded-instructions-v1``: a small chat data set that
ships inside the project so the whole pipeline (SFT, SAPO, evaluation) runs offline on CPU.

What it is: a deterministic generator of a few hundred short instruction-following examples
(arithmetic word problems with worked steps, unit conversions, capitals, chemical elements,
planets, word games, list sorting and statistics, weekday arithmetic, parity and primes,
definitions, antonyms and synonyms, sentence rewriting, practical tips, and prompts carrying
IFEval-style formatting instructions such as "answer in one word" or "use exactly 3 bullet
points"). About a fifth of the examples are multi-turn: a later question follows up on the
earlier answer. Every answer is computed or looked up while the example is built, so it is
correct by construction.

Format: each example is ``{"source": <family>, "messages": [{"role": "user", ...},
{"role": "assistant", ...}, ...]}``, the same ``messages`` layout as the ``chosen`` column of
argilla/distilabel-capybara-dpo-7k-binarized (the paper's training set), always ending with an
assistant turn. Only the first user prompt of each example is unique within one build;
follow-up turns such as "Now double it." naturally repeat.

Licence: the generator and its tables (``sapo.train.embedded_tables``) were written by this
project and ship under the project's own licence; no third-party text is included.

Results on this set are NOT comparable with the paper's numbers: it is tiny, synthetic and
much easier than Capybara. It exists to exercise the pipeline end to end; runs trained on it
are labelled with ``EMBEDDED_DATASET_NAME``.
"""

from __future__ import annotations

import json
import os
import random
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Decimal
from fractions import Fraction
from pathlib import Path

from .embedded_tables import (
    ANTONYMS,
    CAPITALS,
    ELEMENTS,
    GLOSSARY,
    ITEMS,
    NAMES,
    ORDINALS,
    PASSIVE_PAIRS,
    PLANET_FACTS,
    PLANETS,
    PRICED_ITEMS,
    QUESTION_PAIRS,
    SYNONYMS,
    TIPS,
    WEEKDAYS,
    WORDS,
)

EMBEDDED_DATASET_NAME = "sapo-embedded-instructions-v1"
MULTI_TURN_SHARE = 0.2  # share of examples with 2 or 3 user turns
THREE_TURN_SHARE = 0.3  # of the multi-turn examples whose family allows it, the share with 3 user turns
_MAX_ATTEMPTS = 200  # tries for an unseen prompt before a family counts as exhausted

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


def _fact_qa(rng: random.Random) -> tuple[str, str]:
    """A short factual question and a one-sentence answer, for the formatting families."""
    kind = rng.choice(["capital", "element", "planet", "definition"])
    if kind == "capital":
        country, capital = rng.choice(CAPITALS)
        return f"What is the capital of {country}?", f"The capital of {country} is {capital}."
    if kind == "element":
        name, symbol, z = rng.choice(ELEMENTS)
        return f"What is the chemical symbol for {name}?", f"The chemical symbol for {name} is {symbol}."
    if kind == "planet":
        question, _, sentence = rng.choice(PLANET_FACTS)
        return question, sentence
    word = rng.choice(sorted(GLOSSARY))
    pos, definition, _ = GLOSSARY[word]
    return f'What does the word "{word}" mean?', f'"{_cap(word)}" is {pos} meaning {definition}.'


# ----------------------------------------------------------------------------- families
# Each family is ``make(rng, turns) -> messages`` with ``turns`` user turns (1 unless the
# registry entry allows follow-ups).


def _arithmetic_followup(rng: random.Random, r: int, unit: str) -> tuple[str, str, int]:
    kind = rng.choice(["double", "more", "less", "half", "triple"])
    if kind == "half" and r % 2:
        kind = "double"
    if kind == "less" and r < 3:
        kind = "more"
    if kind == "double":
        q = rng.choice(["Now double it.", "What if that amount were doubled?", "And twice that?"])
        return q, f"Doubling {r} {unit}: {r} × 2 = {2 * r}, so {2 * r} {unit}.", 2 * r
    if kind == "triple":
        return "Now triple it.", f"Tripling it: {r} × 3 = {3 * r}, which gives {3 * r} {unit}.", 3 * r
    if kind == "half":
        q = rng.choice(["What is half of that?", "And if you split that in half?"])
        return q, f"Half of {r} is {r} ÷ 2 = {r // 2}, so {r // 2} {unit}.", r // 2
    if kind == "more":
        k = rng.randint(2, 25)
        return (
            f"What if there were {k} more?",
            f"Add {k} to the total: {r} + {k} = {r + k}. That makes {r + k} {unit}.",
            r + k,
        )
    k = rng.randint(1, r - 1)
    return f"And if {k} are taken away?", f"Subtract {k}: {r} - {k} = {r - k}. That leaves {r - k} {unit}.", r - k


def make_arithmetic(rng: random.Random, turns: int) -> Messages:
    name, item = rng.choice(NAMES), rng.choice(ITEMS)
    kind = rng.choice(["add", "sub", "mul", "div", "two_step", "shopping"])
    unit = item
    if kind == "add":
        a, b = rng.randint(5, 95), rng.randint(3, 60)
        r = a + b
        q = rng.choice(
            [
                f"{name} has {a} {item} and gets {b} more. How many {item} does {name} have now?",
                f"There are {a} {item} in a jar. {name} adds {b} more. How many {item} are in the jar now?",
                f"{name} collected {a} {item} on Monday and {b} on Tuesday. How many {item} is that in total?",
            ]
        )
        a1 = rng.choice(
            [
                f"Add the two amounts: {a} + {b} = {r}. The answer is {r} {item}.",
                f"{a} + {b} = {r}\n\nSo there are {r} {item}.",
            ]
        )
    elif kind == "sub":
        a = rng.randint(20, 99)
        b = rng.randint(1, a - 1)
        r = a - b
        q = rng.choice(
            [
                f"{name} had {a} {item} and gave {b} to a friend. How many {item} does {name} have left?",
                f"A box held {a} {item}. {name} took out {b}. How many {item} are still in the box?",
                f"{name} had {a} {item} but lost {b} of them. How many {item} remain?",
            ]
        )
        a1 = rng.choice(
            [
                f"Subtract what was removed: {a} - {b} = {r}. There are {r} {item} left.",
                f"{a} - {b} = {r}, so {r} {item} remain.",
            ]
        )
    elif kind == "mul":
        a, b = rng.randint(2, 12), rng.randint(2, 15)
        r = a * b
        q = rng.choice(
            [
                f"Each box holds {b} {item}. How many {item} are in {a} boxes?",
                f"{name} buys {a} packs of {item} with {b} in each pack. How many {item} is that?",
            ]
        )
        a1 = rng.choice(
            [
                f"Multiply the number of groups by the size of each: {a} × {b} = {r}. That is {r} {item}.",
                f"{a} × {b} = {r}, so the answer is {r} {item}.",
            ]
        )
    elif kind == "div":
        b, each = rng.randint(2, 9), rng.randint(2, 12)
        a, r = b * each, each
        q = rng.choice(
            [
                f"{name} shares {a} {item} equally among {b} friends. How many {item} does each friend get?",
                f"{a} {item} are split evenly into {b} bags. How many {item} go in each bag?",
            ]
        )
        a1 = rng.choice(
            [
                f"Divide the total by the number of groups: {a} ÷ {b} = {r}. Each gets {r} {item}.",
                f"{a} ÷ {b} = {r}, so {r} {item} each.",
            ]
        )
    elif kind == "two_step":
        a, b = rng.randint(2, 9), rng.randint(3, 12)
        p = a * b
        c = rng.randint(1, p - 1)
        r = p - c
        q = f"{name} buys {a} packs of {item} with {b} in each pack and then gives {c} away. How many {item} are left?"
        a1 = f"First find the total: {a} × {b} = {p}.\nThen subtract the ones given away: {p} - {c} = {r}.\n\n{name} has {r} {item} left."
    else:
        (x, xs, px), (y, ys, py) = rng.sample(PRICED_ITEMS, 2)
        m, k = rng.randint(2, 9), rng.randint(2, 9)
        r, unit = m * px + k * py, "dollars"
        q = f"One {x} costs ${px} and one {y} costs ${py}. How much do {m} {xs} and {k} {ys} cost together?"
        a1 = (
            f"Work out each part, then add:\n\n- {_cap(xs)}: {m} × ${px} = ${m * px}\n- {_cap(ys)}: {k} × ${py} = ${k * py}\n"
            f"- Total: ${m * px} + ${k * py} = ${r}\n\nTogether they cost ${r}."
        )
    parts = [q, a1]
    for _ in range(turns - 1):
        fq, fa, r = _arithmetic_followup(rng, r, unit)
        parts += [fq, fa]
    return _chat(*parts)


# (prompt unit names, target unit, factor, multiply?) ; value_in_target = value * factor or value / factor
_CONVERSIONS = (
    (
        ("km", "kilometres"),
        "miles",
        Fraction("1.609344"),
        False,
        "One mile is exactly 1.609344 km, so divide by 1.609344",
    ),
    (("miles",), "km", Fraction("1.609344"), True, "One mile is exactly 1.609344 km, so multiply by 1.609344"),
    (
        ("kg", "kilograms"),
        "pounds",
        Fraction("0.45359237"),
        False,
        "One pound is exactly 0.45359237 kg, so divide by 0.45359237",
    ),
    (
        ("pounds", "lb"),
        "kg",
        Fraction("0.45359237"),
        True,
        "One pound is exactly 0.45359237 kg, so multiply by 0.45359237",
    ),
    (("metres",), "feet", Fraction("0.3048"), False, "One foot is exactly 0.3048 m, so divide by 0.3048"),
    (("inches",), "cm", Fraction("2.54"), True, "One inch is exactly 2.54 cm, so multiply by 2.54"),
    (("litres",), "millilitres", Fraction(1000), True, "One litre is 1000 millilitres, so multiply by 1000"),
    (("hours",), "minutes", Fraction(60), True, "One hour is 60 minutes, so multiply by 60"),
)


def _conversion_qa(rng: random.Random, spec: int | str) -> tuple[str, str, str]:
    """(question, worked answer, short follow-up question asking the same for this value)."""
    if spec in ("C", "F"):
        t = rng.randint(-30, 100) if spec == "C" else rng.randint(-4, 212)
        if spec == "C":
            out, _ = _round2(Fraction(t) * Fraction(9, 5) + 32)
            q = rng.choice([f"Convert {t} °C to Fahrenheit.", f"What is {t} degrees Celsius in Fahrenheit?"])
            return q, f"Use F = C × 9/5 + 32:\n\n{t} × 9/5 + 32 = {out}\n\nSo {t} °C is {out} °F.", f"And {t} °C?"
        out, exact = _round2((Fraction(t) - 32) * Fraction(5, 9))
        q = rng.choice([f"Convert {t} °F to Celsius.", f"What is {t} degrees Fahrenheit in Celsius?"])
        rel, note = ("=", "") if exact else ("≈", " (rounded to two decimal places)")
        a = f"Use C = (F - 32) × 5/9:\n\n({t} - 32) × 5/9 {rel} {out}\n\nSo {t} °F is {'' if exact else 'about '}{out} °C{note}."
        return q, a, f"And {t} °F?"
    names, target, factor, multiply, how = _CONVERSIONS[spec]
    value = Fraction(rng.randint(1, 300)) if rng.random() < 0.7 else Fraction(rng.randint(1, 999), 10)
    v = str(value.numerator) if value.denominator == 1 else f"{float(value):.1f}"
    unit = rng.choice(names)
    out, exact = _round2(value * factor if multiply else value / factor)
    f_text = format(Decimal(factor.numerator) / Decimal(factor.denominator), "f")
    q = rng.choice(
        [f"How many {target} is {v} {unit}?", f"Convert {v} {unit} to {target}.", f"What is {v} {unit} in {target}?"]
    )
    rel, note = ("=", "") if exact else ("≈", " (rounded to two decimal places)")
    op = "×" if multiply else "÷"
    a = f"{how}:\n\n{v} {op} {f_text} {rel} {out}\n\nSo {v} {unit} is {'' if exact else 'about '}{out} {target}{note}."
    return q, a, f"What about {v} {unit}?"


def make_unit_conversion(rng: random.Random, turns: int) -> Messages:
    spec = rng.choice([*range(len(_CONVERSIONS)), "C", "F"])
    q, a, _ = _conversion_qa(rng, spec)
    parts = [q, a]
    for _ in range(turns - 1):
        _, a, short_q = _conversion_qa(rng, spec)
        parts += [short_q, a]
    return _chat(*parts)


def make_capitals(rng: random.Random, turns: int) -> Messages:
    chosen = rng.sample(CAPITALS, turns)
    country, capital = chosen[0]
    q = rng.choice(
        [
            f"What is the capital of {country}?",
            f"What's the capital city of {country}?",
            f"Which city is the capital of {country}?",
            f"Can you tell me the capital of {country}?",
            f"Name the capital of {country}.",
        ]
    )
    a = rng.choice(
        [
            f"The capital of {country} is {capital}.",
            f"{capital} is the capital of {country}.",
            f"{_cap(country)}'s capital is {capital}.",
        ]
    )
    parts = [q, a]
    for country, capital in chosen[1:]:
        parts += [
            rng.choice([f"And what about {country}?", f"What about {country}?"]),
            f"The capital of {country} is {capital}.",
        ]
    return _chat(*parts)


def _element_qa(rng: random.Random, kind: str, element: tuple[str, str, int]) -> tuple[str, str, str]:
    """(question, answer, short follow-up question asking the same about this element)."""
    name, symbol, z = element
    if kind == "symbol":
        q = rng.choice(
            [f"What is the chemical symbol for {name}?", f"What symbol does {name} have on the periodic table?"]
        )
        a = rng.choice(
            [
                f"The chemical symbol for {name} is {symbol}.",
                f"{_cap(name)} is written {symbol} on the periodic table.",
            ]
        )
        return q, a, f"And for {name}?"
    if kind == "name":
        q = rng.choice(
            [f"Which element has the chemical symbol {symbol}?", f"What element does the symbol {symbol} stand for?"]
        )
        return q, f"{symbol} is the symbol for {name}.", f"What about {symbol}?"
    if kind == "number":
        q = rng.choice([f"What is the atomic number of {name}?", f"How many protons does an atom of {name} have?"])
        return (
            q,
            f"{_cap(name)} has atomic number {z}, so each of its atoms has {z} protons.",
            f"And {name}?",
        )
    return (
        f"Which element has atomic number {z}?",
        f"Atomic number {z} is {name}.",
        f"And atomic number {z}?",
    )


def make_elements(rng: random.Random, turns: int) -> Messages:
    kind = rng.choice(["symbol", "name", "number", "by_number"])
    picked = rng.sample(ELEMENTS, turns)
    q, a, _ = _element_qa(rng, kind, picked[0])
    parts = [q, a]
    name, symbol, z = picked[0]
    if turns > 1 and rng.random() < 0.5:
        # one follow-up about the same element, on what the first answer did not say
        if kind in ("symbol", "name"):
            parts += [
                rng.choice(["What is its atomic number?", "And its atomic number?"]),
                f"The atomic number of {name} is {z}.",
            ]
        else:
            parts += [
                rng.choice(["And what is its symbol?", "What's its chemical symbol?"]),
                f"Its symbol is {symbol}.",
            ]
        picked = picked[1:]
    for element in picked[1:]:
        _, a, short_q = _element_qa(rng, kind, element)
        parts += [short_q, a]
    return _chat(*parts)


def _planet_position(rng: random.Random, i: int) -> tuple[str, str]:
    if rng.random() < 0.5:
        q = rng.choice(
            [f"Which planet is {ORDINALS[i]} from the Sun?", f"Name the {ORDINALS[i]} planet from the Sun."]
        )
    else:
        q = rng.choice(
            [f"Where is {PLANETS[i]} in order from the Sun?", f"What number planet from the Sun is {PLANETS[i]}?"]
        )
    return q, f"{PLANETS[i]} is the {ORDINALS[i]} planet from the Sun."


def make_planets(rng: random.Random, turns: int) -> Messages:
    kind = rng.choice(["position", "position", "neighbour", "compare", "fact", "list"]) if turns == 1 else "position"
    i = rng.randrange(len(PLANETS))
    if kind == "position":
        q, a = _planet_position(rng, i)
    elif kind == "neighbour":
        i = rng.randrange(len(PLANETS) - 1)
        if rng.random() < 0.5:
            q = f"Which planet comes right after {PLANETS[i]}, moving away from the Sun?"
            a = f"{PLANETS[i + 1]} comes right after {PLANETS[i]}; it is the {ORDINALS[i + 1]} planet from the Sun."
        else:
            q = f"Which planet comes just before {PLANETS[i + 1]} in order from the Sun?"
            a = f"{PLANETS[i]} comes just before {PLANETS[i + 1]}; it is the {ORDINALS[i]} planet from the Sun."
    elif kind == "compare":
        i, j = rng.sample(range(len(PLANETS)), 2)
        q = f"Is {PLANETS[i]} closer to the Sun than {PLANETS[j]}?"
        verdict = "Yes" if i < j else "No"
        closer = PLANETS[min(i, j)]
        a = f"{verdict}. {PLANETS[i]} is the {ORDINALS[i]} planet from the Sun and {PLANETS[j]} is the {ORDINALS[j]}, so {closer} is closer."
    elif kind == "fact":
        q, _, a = rng.choice(PLANET_FACTS)
    else:
        q = rng.choice(
            ["List the planets in order from the Sun.", "Can you name all eight planets, starting nearest the Sun?"]
        )
        a = "In order from the Sun:\n\n" + "\n".join(f"{k + 1}. {p}" for k, p in enumerate(PLANETS))
    parts = [q, a]
    for _ in range(turns - 1):
        if i < len(PLANETS) - 1 and (i == 0 or rng.random() < 0.7):
            i += 1
            parts += [
                "And which planet comes after it?",
                f"Next is {PLANETS[i]}, the {ORDINALS[i]} planet from the Sun.",
            ]
        else:
            i -= 1
            parts += [
                "Which planet comes just before it?",
                f"Just before it is {PLANETS[i]}, the {ORDINALS[i]} planet from the Sun.",
            ]
    return _chat(*parts)


def _word_op(rng: random.Random, op: str, w: str, letter: str) -> tuple[str, str]:
    if op == "reverse":
        q = rng.choice([f'Reverse the word "{w}".', f'What is "{w}" spelled backwards?', f'Write "{w}" backwards.'])
        return q, rng.choice([f'"{w}" reversed is "{w[::-1]}".', f'Spelled backwards, "{w}" becomes "{w[::-1]}".'])
    if op == "upper":
        q = rng.choice([f'Write "{w}" in uppercase.', f'Convert "{w}" to capital letters.'])
        return q, rng.choice([f'In uppercase, "{w}" is "{w.upper()}".', f"{w.upper()}"])
    if op == "length":
        q = rng.choice([f'How many letters are in the word "{w}"?', f'Count the letters in "{w}".'])
        return q, f'"{w}" has {len(w)} letters: {"-".join(w)}.'
    if op == "count":
        c = letter
        k = w.count(c)
        q = f'How many times does the letter "{c}" appear in "{w}"?'
        if k == 0:
            return q, f'The letter "{c}" does not appear in "{w}" ({"-".join(w)}), so the count is 0.'
        return q, f'Spelling it out: {"-".join(w)}. The letter "{c}" appears {_plural(k, "time")} in "{w}".'
    q = rng.choice(
        [f'What are the first and last letters of "{w}"?', f'Tell me the first and the last letter of the word "{w}".']
    )
    return q, f'The first letter of "{w}" is "{w[0]}" and the last letter is "{w[-1]}".'


def make_word_manipulation(rng: random.Random, turns: int) -> Messages:
    op = rng.choice(["reverse", "upper", "length", "count", "ends"])
    words = rng.sample(WORDS, turns)
    current = words[0]
    letter = rng.choice(sorted(set(current)) + ["e", "s"])  # for the "count" op, kept in follow-ups
    parts = list(_word_op(rng, op, current, letter))
    for w in words[1:]:
        if op != "length" and rng.random() < 0.5:
            # "it": the word just discussed; reversing or uppercasing keeps the letter count
            parts += ["How many letters does it have?", f'"{current}" has {len(current)} letters.']
            op = "length"
            continue
        current = w
        _, a = _word_op(rng, op, w, letter)
        parts += [f'Now do the same for "{w}".', a]
    return _chat(*parts)


def _random_numbers(rng: random.Random, k: int) -> list[int]:
    low = -20 if rng.random() < 0.2 else 1
    return [rng.randint(low, 120) for _ in range(k)]


def make_sort_numbers(rng: random.Random, turns: int) -> Messages:
    nums = _random_numbers(rng, rng.randint(4, 8))
    descending = rng.random() < 0.35
    text = _join_numbers(nums)
    if descending:
        q = rng.choice(
            [
                f"Sort these numbers from largest to smallest: {text}.",
                f"Arrange these numbers in descending order: {text}.",
            ]
        )
        a = rng.choice(
            [
                f"From largest to smallest: {_join_numbers(sorted(nums, reverse=True))}.",
                f"In descending order:\n\n{_join_numbers(sorted(nums, reverse=True))}",
            ]
        )
    else:
        q = rng.choice(
            [
                f"Sort these numbers from smallest to largest: {text}.",
                f"Put the following numbers in ascending order: {text}.",
                f"Can you order these from lowest to highest? {text}",
            ]
        )
        a = rng.choice(
            [
                f"From smallest to largest: {_join_numbers(sorted(nums))}.",
                f"In ascending order:\n\n{_join_numbers(sorted(nums))}",
            ]
        )
    parts = [q, a]
    followups = [
        (
            "Now sort them the other way round.",
            f"Here they are reversed: {_join_numbers(sorted(nums, reverse=not descending))}.",
        ),
        (
            "What is their sum?",
            f"{' + '.join(str(v) for v in nums)} = {sum(nums)}. The sum is {sum(nums)}.".replace("+ -", "- "),
        ),
        ("How many numbers are in the list?", f"There are {len(nums)} numbers in the list."),
    ]
    for fq, fa in rng.sample(followups, turns - 1):
        parts += [fq, fa]
    return _chat(*parts)


def _stat_answer(op: str, nums: list[int]) -> str:
    total = sum(nums)
    added = " + ".join(str(v) for v in nums).replace("+ -", "- ")
    if op == "sum":
        return f"{added} = {total}\n\nThe sum is {total}."
    if op == "mean":
        mean, exact = _round2(Fraction(total, len(nums)))
        rel = "=" if exact else "≈"
        note = "" if exact else ", rounded to two decimal places"
        return f"First add them: {added} = {total}.\nThen divide by the count, {len(nums)}: {total} ÷ {len(nums)} {rel} {mean}.\n\nThe mean is {mean}{note}."
    if op == "max":
        return f"The largest number is {max(nums)}."
    if op == "min":
        return f"The smallest number is {min(nums)}."
    return (
        f"The range is the largest minus the smallest: {max(nums)} - {min(nums)} = {max(nums) - min(nums)}.".replace(
            "- -", "+ "
        )
    )


_STAT_PROMPTS = {
    "sum": ("What is the sum of {x}?", "Add up these numbers: {x}."),
    "mean": ("What is the mean of these numbers: {x}?", "Find the average of {x}."),
    "max": ("What is the largest number in this list: {x}?", "Which is the biggest of these numbers: {x}?"),
    "min": ("What is the smallest number in this list: {x}?", "Which is the lowest of these numbers: {x}?"),
    "range": ("What is the range of {x}?",),
}
_STAT_FOLLOWUPS = {
    "sum": "And their sum?",
    "mean": "What about the mean?",
    "max": "And the largest?",
    "min": "And the smallest?",
    "range": "What is the range?",
}


def make_list_statistics(rng: random.Random, turns: int) -> Messages:
    nums = _random_numbers(rng, rng.randint(3, 7))
    ops = rng.sample(sorted(_STAT_PROMPTS), turns)
    parts = [rng.choice(_STAT_PROMPTS[ops[0]]).format(x=_join_numbers(nums)), _stat_answer(ops[0], nums)]
    for op in ops[1:]:
        parts += [_STAT_FOLLOWUPS[op], _stat_answer(op, nums)]
    return _chat(*parts)


def _weekday_answer(start: int, k: int, sign: int) -> tuple[str, int]:
    end = (start + sign * k) % 7
    direction = "forward" if sign > 0 else "back"
    d0, d1 = WEEKDAYS[start], WEEKDAYS[end]
    if k < 7:
        steps = ", ".join(WEEKDAYS[(start + sign * s) % 7] for s in range(1, k + 1))
        return f"Counting {_plural(k, 'day')} {direction} from {d0}: {steps}. The answer is {d1}.", end
    w, r = divmod(k, 7)
    if r == 0:
        return f"{k} days is exactly {_plural(w, 'week')} ({w} × 7 = {k}), which lands on the same weekday: {d1}.", end
    head = f"{k} days is {_plural(w, 'week')} and {_plural(r, 'day')} ({w} × 7 + {r} = {k}). "
    tail = f"only the {_plural(r, 'extra day')} {'matters' if r == 1 else 'matter'}"
    return (
        head + f"Whole weeks land on the same weekday, so {tail}: counting {r} {direction} from {d0} gives {d1}.",
        end,
    )


def make_weekdays(rng: random.Random, turns: int) -> Messages:
    start, k = rng.randrange(7), rng.randint(1, 100)
    sign = 1 if rng.random() < 0.7 else -1
    d, days = WEEKDAYS[start], _plural(k, "day")
    if sign > 0:
        q = rng.choice(
            [
                f"What day of the week is {days} after {d}?",
                f"If today is {d}, what day will it be in {days}?",
                f"It's {d}. What day is it {days} from now?",
            ]
        )
    else:
        q = rng.choice(
            [f"What day of the week was it {days} before {d}?", f"If today is {d}, what day was it {days} ago?"]
        )
    a, end = _weekday_answer(start, k, sign)
    parts = [q, a]
    for _ in range(turns - 1):
        k = rng.randint(1, 30)
        a, end = _weekday_answer(end, k, 1)
        parts += [f"And {_plural(k, 'day')} after that?", a]
    return _chat(*parts)


def _is_prime(n: int) -> bool:
    return n >= 2 and all(n % p for p in range(2, int(n**0.5) + 1))


def _prime_answer(n: int) -> str:
    if n < 2:
        return f"No, {n} is not prime: a prime has exactly two divisors, 1 and itself, and {n} does not."
    if not _is_prime(n):
        p = next(p for p in range(2, n) if n % p == 0)
        return f"No, {n} is not prime, because {n} = {p} × {n // p}."
    small = [p for p in range(2, int(n**0.5) + 1) if _is_prime(p)]
    if not small:
        return f"Yes, {n} is prime: its only divisors are 1 and {n}."
    listed = ", ".join(str(p) for p in small[:-1]) + (" or " if len(small) > 1 else "") + str(small[-1])
    return f"Yes, {n} is prime. It is not divisible by {listed}, which are all the primes up to √{n}, so its only divisors are 1 and {n}."


def _parity_answer(n: int, yes_no: str = "") -> str:
    if n % 2 == 0:
        return f"{yes_no}{n} is even, because it divides by 2 exactly ({n} ÷ 2 = {n // 2})."
    return f"{yes_no}{n} is odd: dividing it by 2 leaves a remainder of 1 ({n} = 2 × {n // 2} + 1)."


def make_number_properties(rng: random.Random, turns: int) -> Messages:
    if rng.random() < 0.5:
        n = rng.randint(1, 250)
        q = rng.choice([f"Is {n} a prime number?", f"Is {n} prime?", f"Check whether {n} is prime."])
        parts = [q, _prime_answer(n)]
        for turn in range(turns - 1):
            n = next(m for m in range(n + 1, 2 * n + 3) if _is_prime(m))  # Bertrand: one exists below 2n
            fq = rng.choice(["What is the next prime after it?", "What's the next prime number?"])
            parts += ["And the one after that?" if turn else fq, f"The next prime is {n}."]
        return _chat(*parts)
    n = rng.randint(1, 999)
    if rng.random() < 0.5:
        parts = [f"Is {n} an even number?", _parity_answer(n, "Yes, " if n % 2 == 0 else "No, ")]
    else:
        parts = [rng.choice([f"Is {n} even or odd?", f"Tell me whether {n} is odd or even."]), _parity_answer(n)]
    for _ in range(turns - 1):
        n += rng.randint(1, 9)
        parts += [f"What about {n}?", _parity_answer(n)]
    return _chat(*parts)


def make_definitions(rng: random.Random, turns: int) -> Messages:
    word = rng.choice(sorted(GLOSSARY))
    pos, definition, example = GLOSSARY[word]
    q = rng.choice(
        [
            f'What does "{word}" mean?',
            f'Define the word "{word}".',
            f'What is the meaning of "{word}"?',
            f"Can you explain what {word} means?",
        ]
    )
    a = rng.choice(
        [
            f'"{_cap(word)}" is {pos} meaning {definition}. For example: "{example}"',
            f'The word "{word}" means {definition}.',
            f"{_cap(word)} ({pos.split()[1]}): {definition}.",
        ]
    )
    followups = [
        (rng.choice(["Can you use it in a sentence?", "Give me an example sentence."]), f'Sure: "{example}"'),
        ("What part of speech is it?", f'"{_cap(word)}" is {pos}.'),
    ]
    parts = [q, a]
    for fq, fa in rng.sample(followups, turns - 1):
        parts += [fq, fa]
    return _chat(*parts)


def _antonym_qa(rng: random.Random, word: str) -> tuple[str, str]:
    q = rng.choice(
        [f'What is the opposite of "{word}"?', f'Give me an antonym for "{word}".', f"What's the antonym of {word}?"]
    )
    return q, rng.choice(
        [f'The opposite of "{word}" is "{ANTONYMS[word]}".', f'An antonym for "{word}" is "{ANTONYMS[word]}".']
    )


def _synonym_qa(rng: random.Random, word: str) -> tuple[str, str]:
    s1, s2 = SYNONYMS[word]
    if rng.random() < 0.3:
        return f'Name two synonyms for "{word}".', f'Two synonyms for "{word}" are "{s1}" and "{s2}".'
    q = rng.choice([f'Give me a synonym for "{word}".', f'What is another word for "{word}"?'])
    return q, f'A common synonym for "{word}" is "{s1}".'


def make_antonyms_synonyms(rng: random.Random, turns: int) -> Messages:
    table, qa = (ANTONYMS, _antonym_qa) if rng.random() < 0.55 else (SYNONYMS, _synonym_qa)
    words = rng.sample(sorted(table), turns)
    parts = list(qa(rng, words[0]))
    for w in words[1:]:
        parts += [f'What about "{w}"?', qa(rng, w)[1]]
    return _chat(*parts)


def make_sentence_rewriting(rng: random.Random, turns: int) -> Messages:
    if rng.random() < 0.5:
        active, passive = rng.choice(PASSIVE_PAIRS)
        q = rng.choice(
            [
                f'Rewrite this sentence in the passive voice: "{active}"',
                f"Change this sentence to the passive voice: {active}",
                f'How would you say "{active}" in the passive voice?',
            ]
        )
        a = rng.choice(
            [
                f'In the passive voice: "{passive}"',
                f'"{passive}" The object of the original sentence becomes the subject.',
                passive,
            ]
        )
    else:
        statement, question = rng.choice(QUESTION_PAIRS)
        q = rng.choice(
            [
                f'Turn this statement into a yes/no question: "{statement}"',
                f"Rewrite this as a question: {statement}",
                f'How do I turn "{statement}" into a question?',
            ]
        )
        a = rng.choice([f'As a question: "{question}"', question])
    return _chat(q, a)


def make_tips(rng: random.Random, turns: int) -> Messages:
    topic = rng.choice(sorted(TIPS))
    tips = rng.sample(TIPS[topic], len(TIPS[topic]))
    q = rng.choice(
        [
            f"Give me three tips for {topic}.",
            f"What are three good tips for {topic}?",
            f"I need some advice on {topic}. Can you give me three tips?",
        ]
    )
    intro = rng.choice([f"Here are three tips for {topic}:", "Sure! Three things that help:", "Three practical tips:"])
    parts = [q, intro + "\n\n" + "\n".join(f"{k + 1}. {t}" for k, t in enumerate(tips[:3]))]
    if turns > 1:
        more = "\n".join(f"{k + 4}. {t}" for k, t in enumerate(tips[3:5]))
        parts += [rng.choice(["Can you give me two more?", "Any other tips?"]), "Here are two more:\n\n" + more]
    return _chat(*parts)


def make_format_one_word(rng: random.Random, turns: int) -> Messages:
    kind = rng.choice(["capital", "element", "planet", "antonym"])
    if kind == "capital":
        country, word = rng.choice([c for c in CAPITALS if " " not in c[1]])
        q = f"What is the capital of {country}?"
    elif kind == "element":
        name, symbol, _ = rng.choice(ELEMENTS)
        q, word = f"Which element has the symbol {symbol}?", _cap(name)
    elif kind == "planet":
        q, word, _ = rng.choice(PLANET_FACTS)
    else:
        key = rng.choice(sorted(ANTONYMS))
        q, word = f'What is the opposite of "{key}"?', _cap(ANTONYMS[key])
    prompt = rng.choice(
        [f"{q} Answer in one word.", f"{q} Reply with just one word.", f"Answer with a single word only. {q}"]
    )
    return _chat(prompt, word)


def make_format_all_caps(rng: random.Random, turns: int) -> Messages:
    q, a = _fact_qa(rng)
    prompt = rng.choice(
        [
            f"{q} Answer in all capital letters.",
            f"{q} Please respond using only uppercase letters.",
            f"Using only capital letters, answer this: {q}",
        ]
    )
    return _chat(prompt, a.upper())


def make_format_lowercase(rng: random.Random, turns: int) -> Messages:
    q, a = _fact_qa(rng)
    prompt = rng.choice(
        [
            f"{q} Your entire answer must be in lowercase letters.",
            f"{q} Please reply in all lowercase, with no capital letters.",
            f"Answer in lowercase letters only: {q}",
        ]
    )
    return _chat(prompt, a.lower())


def make_format_bullets(rng: random.Random, turns: int) -> Messages:
    k = rng.randint(2, 5)
    kind = rng.choice(["tips", "tips", "planets", "elements", "capitals"])
    if kind == "tips":
        topic = rng.choice(sorted(TIPS))
        task, items = f"Give me tips for {topic}.", rng.sample(TIPS[topic], k)
    elif kind == "planets":
        task, items = "Name some planets of our solar system.", rng.sample(PLANETS, k)
    elif kind == "elements":
        picked = rng.sample(ELEMENTS, k)
        task, items = "List some chemical elements with their symbols.", [f"{_cap(n)} ({s})" for n, s, _ in picked]
    else:
        picked = rng.sample(CAPITALS, k)
        task, items = "Name some countries and their capitals.", [f"{_cap(c)}: {cap}" for c, cap in picked]
    prompt = rng.choice(
        [f"{task} Use exactly {k} bullet points.", f"In exactly {k} bullet points: {task[0].lower()}{task[1:]}"]
    )
    marker = rng.choice(["* ", "- "])
    return _chat(prompt, "\n".join(marker + item for item in items))


# ----------------------------------------------------------------------------- registry


@dataclass(frozen=True)
class Family:
    name: str  # the example's "source"
    make: Callable[[random.Random, int], Messages]
    max_user_turns: int = 1  # >1: the family can write follow-up turns


FAMILIES: tuple[Family, ...] = (
    Family("arithmetic_word_problem", make_arithmetic, 3),
    Family("unit_conversion", make_unit_conversion, 3),
    Family("country_capitals", make_capitals, 3),
    Family("chemical_elements", make_elements, 3),
    Family("planets", make_planets, 3),
    Family("word_manipulation", make_word_manipulation, 3),
    Family("sort_numbers", make_sort_numbers, 3),
    Family("list_statistics", make_list_statistics, 3),
    Family("weekday_arithmetic", make_weekdays, 3),
    Family("number_properties", make_number_properties, 3),
    Family("word_definitions", make_definitions, 3),
    Family("antonyms_synonyms", make_antonyms_synonyms, 3),
    Family("sentence_rewriting", make_sentence_rewriting),
    Family("practical_tips", make_tips, 2),
    Family("format_one_word", make_format_one_word),
    Family("format_all_caps", make_format_all_caps),
    Family("format_lowercase", make_format_lowercase),
    Family("format_bullet_points", make_format_bullets),
)
FAMILY_NAMES: tuple[str, ...] = tuple(f.name for f in FAMILIES)


# ----------------------------------------------------------------------------- public API


def build_embedded_examples(n: int = 400, seed: int = 0) -> list[dict]:
    """``n`` examples, families taken in turn (balanced to within one up to about 650
    examples; past that the smallest families run out of distinct prompts and the others fill
    in), about ``MULTI_TURN_SHARE`` of them multi-turn, shuffled. The same ``n`` and ``seed`` give the
    same list; first user prompts are unique. Raises ``ValueError`` if the families cannot
    supply ``n`` distinct prompts."""
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    rng = random.Random(seed)
    plan = [FAMILIES[i % len(FAMILIES)] for i in range(n)]
    eligible = [i for i, fam in enumerate(plan) if fam.max_user_turns > 1]
    multi = set(rng.sample(eligible, min(len(eligible), round(MULTI_TURN_SHARE * n))))
    seen: set[str] = set()
    exhausted: set[str] = set()
    examples: list[dict] = []
    for i, fam in enumerate(plan):
        turns = 1
        if i in multi:
            turns = 3 if fam.max_user_turns >= 3 and rng.random() < THREE_TURN_SHARE else 2
        start = FAMILIES.index(fam)
        candidates = [FAMILIES[(start + j) % len(FAMILIES)] for j in range(len(FAMILIES))]
        for cand in candidates:
            if cand.name in exhausted:
                continue
            t = min(turns, cand.max_user_turns)
            for _ in range(_MAX_ATTEMPTS):
                messages = cand.make(rng, t)
                if messages[0]["content"] not in seen:
                    break
            else:
                exhausted.add(cand.name)
                continue
            seen.add(messages[0]["content"])
            examples.append({"source": cand.name, "messages": messages})
            break
        else:
            raise ValueError(f"the embedded families ran out of distinct prompts after {len(examples)} examples")
    rng.shuffle(examples)
    return examples


def write_embedded_dataset(path: str | os.PathLike, n: int = 400, seed: int = 0) -> Path:
    """Write ``build_embedded_examples(n, seed)`` as UTF-8 JSONL at ``path``, atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    examples = build_embedded_examples(n, seed)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="\n") as fh:
            for example in examples:
                fh.write(json.dumps(example, ensure_ascii=False) + "\n")
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path
