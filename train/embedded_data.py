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

Licence: the generator and its tables (``embedded/tables.json``) were written by this
project and ship under the project's own licence; no third-party text is included.

Layout: this module holds the registry, the build and the release; the families are in
``embedded_numbers`` and ``embedded_words``, the tables and shared helpers in
``embedded_common``. The release is built once and shipped as
``embedded/<EMBEDDED_DATASET_NAME>.jsonl`` (the default build plus the ``rejected`` side of
``embedded_preferences``), which ``read_rows("embedded")`` reads; a test pins its sha256 and
checks that ``write_embedded_release`` reproduces it byte for byte. Any change to the
generator or the tables therefore changes the data set: bump the version in the name.

Results on this set are NOT comparable with the paper's numbers: it is tiny, synthetic and
much easier than Capybara. It exists to exercise the pipeline end to end; runs trained on it
are labelled with ``EMBEDDED_DATASET_NAME``.
"""

from __future__ import annotations

import json
import os
import random
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from importlib import resources
from importlib.resources.abc import Traversable
from pathlib import Path

from sapo.files import atomic_write_text

from .embedded_common import Messages
from .embedded_numbers import (
    make_arithmetic,
    make_list_statistics,
    make_number_properties,
    make_sort_numbers,
    make_unit_conversion,
    make_weekdays,
)
from .embedded_preferences import add_rejected_answers
from .embedded_words import (
    make_antonyms_synonyms,
    make_capitals,
    make_definitions,
    make_elements,
    make_format_all_caps,
    make_format_bullets,
    make_format_lowercase,
    make_format_one_word,
    make_planets,
    make_sentence_rewriting,
    make_tips,
    make_word_manipulation,
)

EMBEDDED_DATASET_NAME = "sapo-embedded-instructions-v1"
EMBEDDED_RELEASE_FILE = f"{EMBEDDED_DATASET_NAME}.jsonl"  # in this package's embedded/ folder
MULTI_TURN_SHARE = 0.2  # share of examples with 2 or 3 user turns
THREE_TURN_SHARE = 0.3  # of the multi-turn examples whose family allows it, the share with 3 user turns
_MAX_ATTEMPTS = 200  # tries for an unseen prompt before a family counts as exhausted
_RELEASE_KEYS = ("source", "messages", "rejected")  # the release's key order, fixed

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


def _jsonl_text(rows: Iterable[dict]) -> str:
    return "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows)


def write_embedded_dataset(path: str | os.PathLike, n: int = 400, seed: int = 0) -> Path:
    """Write ``build_embedded_examples(n, seed)`` as UTF-8 JSONL at ``path``, atomically."""
    return atomic_write_text(path, _jsonl_text(build_embedded_examples(n, seed)))


# ----------------------------------------------------------------------------- the release


def build_embedded_release() -> list[dict]:
    """The rows of the shipped release: the default build with a ``rejected`` side each."""
    return add_rejected_answers(build_embedded_examples())


def _release_row(row: dict) -> dict:
    """``row`` with the keys in release order, messages as ``role`` then ``content``."""
    if set(row) != set(_RELEASE_KEYS):
        raise ValueError(f"a release row has keys {sorted(row)}, expected {list(_RELEASE_KEYS)}")

    def turns(messages: list[dict]) -> list[dict]:
        return [{"role": m["role"], "content": m["content"]} for m in messages]

    return {"source": row["source"], "messages": turns(row["messages"]), "rejected": turns(row["rejected"])}


def embedded_release_bytes(rows: Iterable[dict] | None = None) -> bytes:
    """The release file's exact bytes for ``rows`` (default: ``build_embedded_release()``): one JSON object a
    line, keys in a fixed order, UTF-8 as is (``ensure_ascii=False``), each line ending in a newline."""
    return _jsonl_text(_release_row(row) for row in (build_embedded_release() if rows is None else rows)).encode()


def write_embedded_release(path: str | os.PathLike) -> Path:
    """Build the release and write it at ``path``, atomically. To regenerate the shipped file, from the
    repository root: ``write_embedded_release("train/embedded/" + EMBEDDED_RELEASE_FILE)``."""
    return atomic_write_text(path, embedded_release_bytes().decode())


def embedded_release_path() -> Traversable:
    """The shipped release inside the installed package."""
    return resources.files(__package__).joinpath("embedded", EMBEDDED_RELEASE_FILE)


def read_embedded_release() -> Iterator[dict]:
    """The shipped release's rows, in file order (what ``read_rows("embedded")`` yields)."""
    with embedded_release_path().open(encoding="utf-8") as fh:
        for line in fh:
            yield json.loads(line)


# ----------------------------------------------------------------------------- held out, for evaluation

HELDOUT_SEED = 1  # the release is built with seed 0; a seed-1 build minus the release's prompts is held out
CALIBRATION_FILE = "embedded-pairs-v1.jsonl"  # shipped in evaluate/fixtures/calibration/


def build_heldout_examples() -> list[dict]:
    """Single-turn examples of the embedded families whose prompt is in no training split (the release):
    what judge calibration and held-out scoring read. Deterministic; the prompt is held out, not every fact
    (a capital asked here may be asked in other words in the release)."""
    trained = {row["messages"][0]["content"] for row in read_embedded_release()}
    examples = build_embedded_examples(400, seed=HELDOUT_SEED)
    return [e for e in examples if len(e["messages"]) == 2 and e["messages"][0]["content"] not in trained]


def build_calibration_pairs(n: int = 40) -> list[dict]:
    """``n`` judge-calibration pairs, families taken in turn: a held-out instruction, its correct answer
    (``better``) and a fluent answer of the same family to another question (``worse``, chosen as
    ``add_rejected_answers`` chooses a rejected side). Rows: ``{id, source, instruction, better, worse}``."""
    pairs = add_rejected_answers(build_heldout_examples(), seed=HELDOUT_SEED)
    by_family: dict[str, list[dict]] = {}
    for row in pairs:
        by_family.setdefault(row["source"], []).append(row)
    order = [rows[i] for i in range(max(map(len, by_family.values()))) for rows in by_family.values() if i < len(rows)]
    return [{"id": f"{row['source']}-{k:03d}", "source": row["source"], "instruction": row["messages"][0]["content"],
             "better": row["messages"][1]["content"], "worse": row["rejected"][1]["content"]}
            for k, row in enumerate(order[:n])]  # fmt: skip


def write_calibration_pairs(path: str | os.PathLike, n: int = 40) -> Path:
    """Write ``build_calibration_pairs(n)`` as JSONL. To regenerate the shipped file, from the repository root:
    ``write_calibration_pairs("evaluate/fixtures/calibration/" + CALIBRATION_FILE)``."""
    return atomic_write_text(path, _jsonl_text(build_calibration_pairs(n)))
