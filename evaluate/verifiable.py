"""``sapo eval --suite verifiable``: held-out items of the embedded families, scored by program.

The items (``fixtures/verifiable/embedded-verifiable-v1.jsonl``, written by
``sapo.train.embedded_verifiable``) are prompts that no training split holds, each with checks
as data: ``{"check": name, ...arguments}``, run by the functions in ``CHECKS``. The model answers
each prompt once, greedily, with its own chat template; an item is right when every check passes.

Metrics (fractions, like lm-eval's): ``accuracy``, the share of items all of whose checks pass
(IFEval's prompt level), and ``checks``, the share of checks passed (its instruction level); both
with a bootstrap over items, and per-item results in ``OUTPUT/verifiable/items.json`` so that
``sapo compare`` pairs two runs item by item. ``answers.jsonl`` beside it keeps every answer with
the checks it passed.
"""

from __future__ import annotations

import inspect
import json
import re
from pathlib import Path

from sapo.errors import DataError
from sapo.evaluate.items import bootstrap_all, short_hash, write_items
from sapo.evaluate.uncertainty import ratio
from sapo.files import file_sha256, write_jsonl

DATA_NAME = "embedded-verifiable-v1"
DEFAULT_MAX_NEW_TOKENS = 192  # the references are at most ~100 tokens
# A minus sign only where a number starts ("10-15" is 10 and 15); thousands grouped as "1,234".
_NUMBER = re.compile(r"(?<![\d.])-?\d+(?:,\d{3})*(?:\.\d+)?")
_WORD = re.compile(r"[^\W_]+")


def _numbers(text: str) -> list[float]:
    return [float(x.replace(",", "")) for x in _NUMBER.findall(text.replace("\u2212", "-"))]


def _words(text: str) -> list[str]:
    return _WORD.findall(text.lower())


# --------------------------------------------------------------------------- the checks


def final_number(reply: str, value: float, tolerance: float = 0.005) -> bool:
    """The reply's last number is ``value`` (answers end with their result)."""
    numbers = _numbers(reply)
    return bool(numbers) and abs(numbers[-1] - value) <= tolerance


def number_sequence(reply: str, values: list[float]) -> bool:
    """``values`` appear in the reply as consecutive numbers, in this order."""
    numbers, n = _numbers(reply), len(values)
    return any(numbers[i : i + n] == values for i in range(len(numbers) - n + 1))


def choice(reply: str, choices: list[str], value: str, pick: str = "first") -> bool:
    """Of the ``choices`` the reply names (whole words, any case), the first (or last) one is ``value``."""
    named = [w for w in _words(reply) if w in {c.lower() for c in choices}]
    return bool(named) and named[0 if pick == "first" else -1] == value.lower()


def contains(reply: str, text: str, case_sensitive: bool = False) -> bool:
    """``text`` appears in the reply, as whole words; punctuation and spacing are not compared."""

    def norm(s: str) -> str:
        return " " + " ".join(_WORD.findall(s if case_sensitive else s.lower())) + " "

    return norm(text) in norm(reply)


def key_words(reply: str, words: list[str], min_share: float = 0.5) -> bool:
    """At least ``min_share`` of ``words`` (and at least one) appear in the reply as whole words."""
    said = set(_words(reply))
    hits = sum(w in said for w in words)
    return hits >= max(1, min_share * len(words))


def word_count(reply: str, n: int) -> bool:
    return len(_words(reply)) == n


def no_lowercase(reply: str) -> bool:
    return any(c.isalpha() for c in reply) and not any(c.islower() for c in reply)


def no_uppercase(reply: str) -> bool:
    return any(c.isalpha() for c in reply) and not any(c.isupper() for c in reply)


def bullet_items(reply: str, n: int) -> bool:
    """Exactly ``n`` lines start with a ``-``, ``*`` or ``•`` bullet."""
    return sum(bool(re.match(r"\s*[-*•]\s+\S", line)) for line in reply.splitlines()) == n


def numbered_items(reply: str, n: int) -> bool:
    """Exactly ``n`` lines start with ``1.``, ``2)`` and so on."""
    return sum(bool(re.match(r"\s*\d+[.)]\s+\S", line)) for line in reply.splitlines()) == n


CHECKS = {f.__name__: f for f in (final_number, number_sequence, choice, contains, key_words, word_count,
                                   no_lowercase, no_uppercase, bullet_items, numbered_items)}  # fmt: skip


def run_checks(item: dict, reply: str) -> list[bool]:
    """One boolean per check of ``item``."""
    return [CHECKS[c["check"]](reply, **{k: v for k, v in c.items() if k != "check"}) for c in item["checks"]]


# --------------------------------------------------------------------------- the data


def items_path() -> Path:
    return Path(__file__).resolve().parent / "fixtures" / "verifiable" / f"{DATA_NAME}.jsonl"


def load_items(path: Path | None = None) -> list[dict]:
    """The items, each check validated (name and arguments), errors naming file, line and field."""
    path = path or items_path()
    items = []
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            raise DataError(f"{path}:{n}: not JSON ({e.msg})") from None
        for field in ("id", "prompt", "checks"):
            if field not in row:
                raise DataError(f"{path}:{n}: field {field!r} is missing")
        for c in row["checks"]:
            fn = CHECKS.get(c.get("check"))
            if fn is None:
                raise DataError(f"{path}:{n}: checks: unknown check {c.get('check')!r} (known: {', '.join(CHECKS)})")
            try:
                inspect.signature(fn).bind("", **{k: v for k, v in c.items() if k != "check"})
            except TypeError as e:
                raise DataError(f"{path}:{n}: checks: {c['check']}: {e}") from None
        items.append(row)
    return items


def _item_id(item: dict) -> str:
    return f"{item['id']}:{short_hash(item['prompt'])}"


# --------------------------------------------------------------------------- the benchmark


def run_verifiable(loaded, output_dir: Path, *, limit: int | None = None, batch_size: int = 8, seed: int = 0,
                   max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS) -> dict:  # fmt: skip
    """Answer every item, score it; return the ``benchmarks.verifiable`` entry."""
    from sapo.evaluate.generation import generate_chat

    path = items_path()
    items = load_items(path)
    chosen = items[:limit] if limit else items
    replies = generate_chat(loaded, [[{"role": "user", "content": i["prompt"]}] for i in chosen],
                            max_new_tokens=max_new_tokens, batch_size=batch_size, seed=seed,
                            desc="verifiable answers")  # fmt: skip
    folder = Path(output_dir) / "verifiable"
    data_sha256 = file_sha256(path)
    rows, accuracy, checks, by_family = [], {}, {}, {}
    for item, reply in zip(chosen, replies, strict=True):
        passed = run_checks(item, reply)
        key = _item_id(item)
        accuracy[key] = (float(all(passed)), 1.0)
        checks[key] = (float(sum(passed)), float(len(passed)))
        by_family.setdefault(item["source"], []).append(all(passed))
        rows.append({"id": item["id"], "prompt": item["prompt"], "reply": reply, "passed": passed})
    write_jsonl(folder / "answers.jsonl", rows)
    metrics = {"accuracy": accuracy, "checks": checks}
    scores = {name: ratio(m) for name, m in metrics.items()}
    return {
        "data": DATA_NAME,
        "data_sha256": data_sha256,
        "items_scored": len(chosen),
        "complete": len(chosen) == len(items),
        "metrics": scores,
        "by_family": {f: sum(v) / len(v) for f, v in sorted(by_family.items())},
        "uncertainty": bootstrap_all(metrics, unit="items"),
        "items": write_items(folder, "verifiable", metrics),
        # The items file's hash is a setting: compare refuses two runs scored against different checks.
        "settings": {"max_new_tokens": max_new_tokens, "decoding": "greedy", "items_sha256": data_sha256},
        "files": [str(folder / "answers.jsonl")],
    }
