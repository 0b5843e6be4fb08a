"""The number families of the embedded instruction set (see ``sapo.train.embedded_data``):
arithmetic word problems, unit conversions, sorting, list statistics, weekday arithmetic, and
parity and primes. Each family is ``make(rng, turns) -> messages`` with ``turns`` user turns
(1 unless its registry entry allows follow-ups); every answer is computed here.

Why one long module: it runs a little over 400 lines because worked answers take room (each arithmetic kind, each
conversion spells out its steps); the six families share helpers, and splitting them further
would only scatter those.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from decimal import Decimal
from fractions import Fraction

from .embedded_common import (
    ITEMS,
    NAMES,
    PRICED_ITEMS,
    WEEKDAYS,
    Messages,
    _cap,
    _chat,
    _join_numbers,
    _plural,
    _round2,
)


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


# Each ``_problem_*`` draws one first question of its kind, with ``(question, answer, result)``;
# the draws are those of the matching branch of the original single function, in the same order.


def _problem_add(rng: random.Random, name: str, item: str) -> tuple[str, str, int]:
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
    return q, a1, r


def _problem_sub(rng: random.Random, name: str, item: str) -> tuple[str, str, int]:
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
    return q, a1, r


def _problem_mul(rng: random.Random, name: str, item: str) -> tuple[str, str, int]:
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
    return q, a1, r


def _problem_div(rng: random.Random, name: str, item: str) -> tuple[str, str, int]:
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
    return q, a1, r


def _problem_two_step(rng: random.Random, name: str, item: str) -> tuple[str, str, int]:
    a, b = rng.randint(2, 9), rng.randint(3, 12)
    p = a * b
    c = rng.randint(1, p - 1)
    r = p - c
    q = f"{name} buys {a} packs of {item} with {b} in each pack and then gives {c} away. How many {item} are left?"
    a1 = (
        f"First find the total: {a} × {b} = {p}.\n"
        f"Then subtract the ones given away: {p} - {c} = {r}.\n\n{name} has {r} {item} left."
    )
    return q, a1, r


def _problem_shopping(rng: random.Random, name: str, item: str) -> tuple[str, str, int]:
    """Prices of two items from ``PRICED_ITEMS``; the result is in dollars (``name`` and ``item`` are unused)."""
    (x, xs, px), (y, ys, py) = rng.sample(PRICED_ITEMS, 2)
    m, k = rng.randint(2, 9), rng.randint(2, 9)
    r = m * px + k * py
    q = f"One {x} costs ${px} and one {y} costs ${py}. How much do {m} {xs} and {k} {ys} cost together?"
    a1 = (
        f"Work out each part, then add:\n\n- {_cap(xs)}: {m} × ${px} = ${m * px}\n"
        f"- {_cap(ys)}: {k} × ${py} = ${k * py}\n"
        f"- Total: ${m * px} + ${k * py} = ${r}\n\nTogether they cost ${r}."
    )
    return q, a1, r


# The kinds in draw order: ``rng.choice`` over this list picks the kind.
_ARITHMETIC_KINDS: dict[str, Callable[[random.Random, str, str], tuple[str, str, int]]] = {
    "add": _problem_add,
    "sub": _problem_sub,
    "mul": _problem_mul,
    "div": _problem_div,
    "two_step": _problem_two_step,
    "shopping": _problem_shopping,
}


def make_arithmetic(rng: random.Random, turns: int) -> Messages:
    name, item = rng.choice(NAMES), rng.choice(ITEMS)
    kind = rng.choice(list(_ARITHMETIC_KINDS))
    q, a1, r = _ARITHMETIC_KINDS[kind](rng, name, item)
    unit = "dollars" if kind == "shopping" else item
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
        a = (
            f"Use C = (F - 32) × 5/9:\n\n({t} - 32) × 5/9 {rel} {out}\n\n"
            f"So {t} °F is {'' if exact else 'about '}{out} °C{note}."
        )
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
        return (
            f"First add them: {added} = {total}.\n"
            f"Then divide by the count, {len(nums)}: {total} ÷ {len(nums)} {rel} {mean}.\n\nThe mean is {mean}{note}."
        )
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
    return (
        f"Yes, {n} is prime. It is not divisible by {listed}, which are all the primes up to √{n}, "
        f"so its only divisors are 1 and {n}."
    )


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
