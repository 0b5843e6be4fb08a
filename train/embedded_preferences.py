"""Rejected answers for the embedded instruction set, so DPO and ORPO run offline too.

The paper's DPO and ORPO baselines train on the chosen *and* rejected sides of
argilla/distilabel-capybara-dpo-7k-binarized; SAPO and SPIN read the chosen side only. The
embedded set (``embedded_data.py``) has real answers only, so each row here gets a rejected
conversation: the same conversation whose last assistant turn is replaced by the last
assistant turn of another example of the same family, i.e. a fluent, well-formatted answer to
a *different* question ("Paris" for "capital of Peru"). It is wrong for this prompt by
construction, which is what a preference pair needs, and needs no model to make.

Rows keep their ``messages`` (read as the chosen side) and gain ``rejected``; the pipeline
checks that both render to the same prompt.
"""

from __future__ import annotations

import random
from collections import defaultdict


def add_rejected_answers(examples: list[dict], seed: int = 0) -> list[dict]:
    """Copies of ``examples`` with a ``rejected`` conversation each (see the module docstring).

    The donor is drawn from the same ``source`` family, never the row itself, and its answer
    always differs from the row's own; a family with a single distinct answer borrows from the
    whole set instead. Deterministic for a given ``examples`` and ``seed``.
    """
    rng = random.Random(seed)
    by_family: dict[str, list[int]] = defaultdict(list)
    for i, example in enumerate(examples):
        by_family[example["source"]].append(i)
    everyone = list(range(len(examples)))
    rows = []
    for example in examples:
        messages = example["messages"]
        answer = messages[-1]["content"]
        donors = [j for j in by_family[example["source"]] if examples[j]["messages"][-1]["content"] != answer]
        if not donors:
            donors = [j for j in everyone if examples[j]["messages"][-1]["content"] != answer]
        if not donors:
            raise ValueError("add_rejected_answers: every example has the same answer; no rejected side can be made")
        donor = examples[rng.choice(donors)]["messages"][-1]["content"]
        rejected = [dict(m) for m in messages[:-1]] + [{"role": "assistant", "content": donor}]
        rows.append({**example, "rejected": rejected})
    return rows
