"""Tests for the embedded instruction set (sapo.train.embedded_data).

Correctness checks recompute answers from the prompt text (regexes over the rendered strings),
not from the generator's internals.
"""

from __future__ import annotations

import hashlib
import json
import random
import re
from collections import Counter
from decimal import ROUND_HALF_UP, Decimal
from fractions import Fraction

import pytest

from sapo.train import embedded_data, embedded_numbers
from sapo.train.embedded_common import load_tables
from sapo.train.embedded_data import (
    EMBEDDED_DATASET_NAME,
    EMBEDDED_RELEASE_FILE,
    FAMILY_NAMES,
    build_embedded_examples,
    build_embedded_release,
    embedded_release_bytes,
    embedded_release_path,
    read_embedded_release,
    write_embedded_dataset,
    write_embedded_release,
)

SEEDS = (0, 1, 7)
WEEKDAYS = ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"]
ORDINALS = ["first", "second", "third", "fourth", "fifth", "sixth", "seventh", "eighth"]
PLANETS = ["Mercury", "Venus", "Earth", "Mars", "Jupiter", "Saturn", "Uranus", "Neptune"]


@pytest.fixture(scope="module", params=SEEDS)
def examples(request) -> list[dict]:
    return build_embedded_examples(400, seed=request.param)


def _by_source(examples: list[dict], source: str) -> list[dict]:
    found = [e for e in examples if e["source"] == source]
    assert found, f"no examples of {source}"
    return found


def _first(example: dict) -> tuple[str, str]:
    return example["messages"][0]["content"], example["messages"][1]["content"]


def _ints(text: str) -> list[int]:
    return [int(x) for x in re.findall(r"-?\d+", text)]


def _round2(value: Fraction) -> Decimal:
    return (Decimal(value.numerator) / Decimal(value.denominator)).quantize(Decimal("0.01"), rounding=ROUND_HALF_UP)


# ----------------------------------------------------------------------------- API and shape


def test_name_and_docstring():
    assert EMBEDDED_DATASET_NAME == "sapo-embedded-instructions-v1"
    doc = embedded_data.__doc__
    assert "NOT comparable" in doc and "written by this" in doc


def test_deterministic():
    assert build_embedded_examples(400, seed=3) == build_embedded_examples(400, seed=3)
    assert build_embedded_examples(400, seed=3) != build_embedded_examples(400, seed=4)


def test_does_not_touch_global_random_state():
    random.seed(123)
    expected = random.random()
    random.seed(123)
    build_embedded_examples(100, seed=0)
    assert random.random() == expected


@pytest.mark.parametrize("n", [0, 1, 17, 400])
def test_count(n):
    assert len(build_embedded_examples(n)) == n


def test_default_count():
    assert len(build_embedded_examples()) == 400


def test_negative_n_rejected():
    with pytest.raises(ValueError):
        build_embedded_examples(-1)


def test_shape_alternation_and_nonempty(examples):
    for ex in examples:
        assert set(ex) == {"source", "messages"}
        assert ex["source"] in FAMILY_NAMES
        msgs = ex["messages"]
        roles = [m["role"] for m in msgs]
        if roles[0] == "system":
            roles = roles[1:]
        assert roles and len(roles) % 2 == 0
        assert roles == ["user", "assistant"] * (len(roles) // 2)
        assert roles[-1] == "assistant"
        for m in msgs:
            assert set(m) == {"role", "content"}
            assert isinstance(m["content"], str) and m["content"].strip(), ex


def test_no_duplicate_prompts(examples):
    prompts = [e["messages"][0]["content"] for e in examples]
    assert len(prompts) == len(set(prompts))


def test_no_duplicate_prompts_large_n():
    prompts = [e["messages"][0]["content"] for e in build_embedded_examples(1000, seed=5)]
    assert len(prompts) == 1000 == len(set(prompts))


def test_families_many_and_balanced(examples):
    counts = Counter(e["source"] for e in examples)
    assert len(counts) >= 12
    assert set(counts) == set(FAMILY_NAMES)
    assert max(counts.values()) - min(counts.values()) <= 1


def test_multi_turn_share(examples):
    user_turns = [sum(m["role"] == "user" for m in e["messages"]) for e in examples]
    share = sum(t > 1 for t in user_turns) / len(examples)
    assert 0.10 <= share <= 0.35
    assert max(user_turns) == 3 and set(user_turns) == {1, 2, 3}


# ----------------------------------------------------------------------------- correctness


_EQUATION = re.compile(r"(?<![\d.])\$?(-?\d+) ([-+×÷]) \$?(\d+) = \$?(-?\d+)(?!\d|\.\d)")
_OPS = {"+": lambda a, b: a + b, "-": lambda a, b: a - b, "×": lambda a, b: a * b, "÷": lambda a, b: a / b}


def test_arithmetic_equations_are_true(examples):
    checked = 0
    for ex in _by_source(examples, "arithmetic_word_problem"):
        for m in ex["messages"]:
            if m["role"] != "assistant":
                continue
            for a, op, b, c in _EQUATION.findall(m["content"]):
                assert _OPS[op](int(a), int(b)) == int(c), m["content"]
                checked += 1
    assert checked >= 20


def test_arithmetic_addition_from_prompt(examples):
    checked = 0
    for ex in _by_source(examples, "arithmetic_word_problem"):
        prompt, answer = _first(ex)
        if re.search(r"gets \d+ more|adds \d+ more|on Monday and", prompt):
            a, b = _ints(prompt)
            assert f"{a} + {b} = {a + b}" in answer
            checked += 1
    assert checked >= 1


def test_sort_numbers(examples):
    for ex in _by_source(examples, "sort_numbers"):
        prompt, answer = _first(ex)
        nums = _ints(prompt)
        descending = "largest to smallest" in prompt or "descending" in prompt
        expected = ", ".join(str(v) for v in sorted(nums, reverse=descending))
        assert expected in answer, (prompt, answer)


def test_list_statistics(examples):
    for ex in _by_source(examples, "list_statistics"):
        prompt, answer = _first(ex)
        nums = _ints(prompt)
        if "sum" in prompt or "Add up" in prompt:
            assert f"The sum is {sum(nums)}." in answer
        elif "mean" in prompt or "average" in prompt:
            mean = format(_round2(Fraction(sum(nums), len(nums))).normalize(), "f")
            assert f"The mean is {mean}" in answer, (prompt, answer)
        elif "largest" in prompt or "biggest" in prompt:
            assert str(max(nums)) in answer
        elif "smallest" in prompt or "lowest" in prompt:
            assert str(min(nums)) in answer
        else:
            assert answer.endswith(f"= {max(nums) - min(nums)}.")


_FACTOR = re.compile(r"^(-?[\d.]+) ([×÷]) ([\d.]+) ([=≈]) (-?[\d.]+)$", re.M)
_C_TO_F = re.compile(r"^(-?\d+) × 9/5 \+ 32 = (-?[\d.]+)$", re.M)
_F_TO_C = re.compile(r"^\((-?\d+) - 32\) × 5/9 ([=≈]) (-?[\d.]+)$", re.M)


def test_unit_conversions(examples):
    for ex in _by_source(examples, "unit_conversion"):
        for q, a in zip(ex["messages"][::2], ex["messages"][1::2], strict=True):
            if m := _FACTOR.search(a["content"]):
                v, op, f, rel, out = m.groups()
                assert f in {"1.609344", "0.45359237", "0.3048", "2.54", "1000", "60"}  # exact definitions
                exact = Fraction(v) * Fraction(f) if op == "×" else Fraction(v) / Fraction(f)
            elif m := _C_TO_F.search(a["content"]):
                v, out = m.groups()
                exact, rel = Fraction(v) * Fraction(9, 5) + 32, "="
            else:
                m = _F_TO_C.search(a["content"])
                assert m, a["content"]
                v, rel, out = m.groups()
                exact = (Fraction(v) - 32) * Fraction(5, 9)
            assert re.search(rf"(?<![\d.]){re.escape(v)}(?![\d.])", q["content"]), (
                q,
                a,
            )  # value comes from the question
            assert _round2(exact) == Decimal(out)
            assert (rel == "=") == (Fraction(Decimal(out)) == exact)
            assert ("rounded" in a["content"]) == (rel == "≈")


def test_weekday_arithmetic(examples):
    for ex in _by_source(examples, "weekday_arithmetic"):
        prompt, answer = _first(ex)
        (k,) = _ints(prompt)
        start = next(i for i, d in enumerate(WEEKDAYS) if d in prompt)
        sign = -1 if ("before" in prompt or "ago" in prompt) else 1
        assert answer.rstrip(".").split()[-1] == WEEKDAYS[(start + sign * k) % 7], (prompt, answer)


def test_weekday_arithmetic_known_value():
    # Tuesday + 10 days = Friday, computed by hand
    ans, end = embedded_numbers._weekday_answer(1, 10, 1)
    assert ans.endswith("Friday.") and WEEKDAYS[end] == "Friday"


def _is_prime(n: int) -> bool:
    return n > 1 and all(n % d for d in range(2, n))


def test_number_properties(examples):
    for ex in _by_source(examples, "number_properties"):
        prompt, answer = _first(ex)
        (n,) = _ints(prompt)
        if "prime" in prompt:
            assert answer.startswith("Yes" if _is_prime(n) else "No"), (prompt, answer)
            if m := re.search(r"= (\d+) × (\d+)", answer):
                assert int(m[1]) * int(m[2]) == n and int(m[1]) > 1
            nexts = [
                int(x) for x in re.findall(r"The next prime is (\d+)", " ".join(m["content"] for m in ex["messages"]))
            ]
            for prev, nxt in zip([n, *nexts], nexts, strict=False):
                assert _is_prime(nxt) and not any(_is_prime(x) for x in range(prev + 1, nxt))
        else:
            assert f"{n} is {'even' if n % 2 == 0 else 'odd'}" in answer


def test_word_manipulation(examples):
    for ex in _by_source(examples, "word_manipulation"):
        prompt, answer = _first(ex)
        (word,) = re.findall(r'"(\w+)"', prompt)[-1:]
        if "backwards" in prompt or "Reverse" in prompt:
            assert f'"{word[::-1]}"' in answer
        elif "uppercase" in prompt or "capital letters" in prompt:
            assert word.upper() in answer
        elif "How many letters" in prompt or "Count the letters" in prompt:
            assert f"has {len(word)} letters" in answer
        elif "first and" in prompt:
            assert f'is "{word[0]}"' in answer and f'last letter is "{word[-1]}"' in answer
        else:
            letter = re.search(r'letter "(\w)"', prompt)[1]
            k = word.count(letter)
            assert (f"appears {k} time" in answer) if k else ("count is 0" in answer)


def test_capitals_and_elements_known_facts():
    examples = build_embedded_examples(1000, seed=2)
    known = {"France": "Paris", "Japan": "Tokyo", "Kenya": "Nairobi", "Canada": "Ottawa", "Australia": "Canberra"}
    for ex in _by_source(examples, "country_capitals"):
        for q, a in zip(ex["messages"][::2], ex["messages"][1::2], strict=True):
            for country, capital in known.items():
                if re.search(rf"\b{country}\b", q["content"]):
                    assert capital in a["content"]
    symbols = {"gold": "Au", "iron": "Fe", "sodium": "Na", "potassium": "K", "silver": "Ag"}
    for ex in _by_source(examples, "chemical_elements"):
        prompt, answer = _first(ex)
        for name, symbol in symbols.items():
            if "symbol for " + name in prompt:
                assert re.search(rf"\b{symbol}\b", answer)


def test_planet_positions(examples):
    for ex in _by_source(examples, "planets"):
        for m in ex["messages"]:
            if m["role"] == "assistant":
                for planet, ordinal in re.findall(r"(\w+),? (?:is )?the (\w+) planet from the Sun", m["content"]):
                    if planet in PLANETS:
                        assert PLANETS.index(planet) == ORDINALS.index(ordinal), m["content"]
        prompt, answer = _first(ex)
        if "largest" in prompt:
            assert "Jupiter" in answer


def test_format_all_caps_and_lowercase(examples):
    for ex in _by_source(examples, "format_all_caps"):
        _, answer = _first(ex)
        assert answer == answer.upper() and any(c.isalpha() for c in answer)
    for ex in _by_source(examples, "format_lowercase"):
        _, answer = _first(ex)
        assert answer == answer.lower() and any(c.isalpha() for c in answer)


def test_format_one_word(examples):
    for ex in _by_source(examples, "format_one_word"):
        prompt, answer = _first(ex)
        assert "one word" in prompt or "single word" in prompt
        assert len(answer.split()) == 1


def test_format_bullet_points(examples):
    for ex in _by_source(examples, "format_bullet_points"):
        prompt, answer = _first(ex)
        k = int(re.search(r"exactly (\d+) bullet points", prompt)[1])
        lines = answer.splitlines()
        assert sum(bool(re.match(r"^[*-] \S", line)) for line in lines) == k == len(lines)


def test_tips_follow_up_adds_new_tips(examples):
    for ex in _by_source(examples, "practical_tips"):
        contents = [m["content"] for m in ex["messages"][1::2]]
        tips = [line for c in contents for line in c.splitlines() if re.match(r"^\d\. ", line)]
        assert len(tips) == 3 * 1 + 2 * (len(contents) - 1)
        assert len({t[3:] for t in tips}) == len(tips)


# ----------------------------------------------------------------------------- JSONL


def test_write_read_round_trip(tmp_path):
    path = tmp_path / "nested" / "dir" / "embedded.jsonl"
    out = write_embedded_dataset(path, n=120, seed=9)
    assert out == path and path.is_file()
    text = path.read_text(encoding="utf-8")
    lines = text.splitlines()
    assert len(lines) == 120 and text.endswith("\n")
    assert [json.loads(line) for line in lines] == build_embedded_examples(120, seed=9)
    assert "×" in text or "°" in text or "á" in text  # ensure_ascii=False
    assert sorted(p.name for p in path.parent.iterdir()) == ["embedded.jsonl"]  # no temp file left


def test_write_replaces_atomically(tmp_path, monkeypatch):
    path = tmp_path / "data.jsonl"
    write_embedded_dataset(path, n=5)
    before = path.read_bytes()

    def boom(*args, **kwargs):
        raise RuntimeError("disk full")

    monkeypatch.setattr(embedded_data.json, "dumps", boom)
    with pytest.raises(RuntimeError):
        write_embedded_dataset(path, n=50)
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["data.jsonl"]


# ----------------------------------------------------------------------------- the shipped release

# sha256 of train/embedded/sapo-embedded-instructions-v1.jsonl. Never edit it alone: see _REGENERATE.
RELEASE_SHA256 = "41b6890f7aeb9d27c5e269779315acdae1042165e6e1365f1aae88d0bff10126"
_REGENERATE = (
    "A released data set never changes under the same name. If the change is on purpose: bump the version in "
    "EMBEDDED_DATASET_NAME (sapo.train.embedded_data; the file name follows it), regenerate from the repository root "
    'with `python -c "from sapo.train.embedded_data import EMBEDDED_RELEASE_FILE, write_embedded_release; '
    "write_embedded_release('train/embedded/' + EMBEDDED_RELEASE_FILE)\"`, delete the old file, reinstall "
    "(pip install --no-deps -e . --config-settings editable_mode=strict) and pin the new sha256 in RELEASE_SHA256. "
    "If not, undo the change to the generator, train/embedded/tables.json or the shipped file."
)


def test_shipped_release_is_pinned():
    shipped = embedded_release_path().read_bytes()
    assert embedded_release_path().name == EMBEDDED_RELEASE_FILE == f"{EMBEDDED_DATASET_NAME}.jsonl"
    assert hashlib.sha256(shipped).hexdigest() == RELEASE_SHA256, "the shipped release file changed. " + _REGENERATE


def test_regenerating_the_release_gives_the_shipped_bytes(tmp_path):
    out = write_embedded_release(tmp_path / EMBEDDED_RELEASE_FILE)
    regenerated = out.read_bytes()
    assert regenerated == embedded_release_bytes(), "write_embedded_release must write embedded_release_bytes()"
    assert regenerated == embedded_release_path().read_bytes(), "the generator's output changed. " + _REGENERATE
    assert sorted(p.name for p in tmp_path.iterdir()) == [EMBEDDED_RELEASE_FILE]  # no temp file left


def test_release_format():
    text = embedded_release_path().read_text(encoding="utf-8")
    lines = text.split("\n")
    assert lines[-1] == "" and all(lines[:-1])  # one object a line, trailing newline, no blank line
    rows = [json.loads(line) for line in lines[:-1]]
    assert rows == build_embedded_release() and len(rows) == 400
    for row in rows:
        assert list(row) == ["source", "messages", "rejected"]
        assert all(list(m) == ["role", "content"] for m in row["messages"] + row["rejected"])
    assert "×" in text and "\\u" not in text  # ensure_ascii=False


def test_read_rows_embedded_reads_the_shipped_release():
    from sapo.train.data import read_rows

    rows = list(read_rows("embedded"))
    assert rows == [(f"embedded row {i}", row) for i, row in enumerate(read_embedded_release())]
    assert [row for _, row in rows] == build_embedded_release()


def test_tables_load_once_as_tuples():
    tables = load_tables()
    assert load_tables() is tables  # cached
    assert isinstance(tables["capitals"], tuple) and all(isinstance(row, tuple) for row in tables["capitals"])
    assert isinstance(tables["tips"]["saving money"], tuple) and isinstance(tables["glossary"]["ancient"], tuple)
    assert tables["elements"][0] == ("hydrogen", "H", 1)
    assert list(tables["weekdays"]) == WEEKDAYS and list(tables["planets"]) == PLANETS
    assert list(tables["ordinals"]) == ORDINALS
