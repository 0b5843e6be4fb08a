"""The token ids each benchmark feeds a model for a conversation, from the code that feeds them.

MT-Bench and AlpacaEval answer through ``generate_chat``, whose prompt is ``sapo.chat.generation_prompt_ids``;
lm-eval (IFEval, and any task with ``--apply_chat_template``) renders with its ``HFLM.apply_chat_template`` and
tokenizes with ``HFLM.tok_batch_encode``, which adds the tokenizer's special tokens unless the text starts with
the string of ``bos_token``. ``sapo eval MODEL --show-prompts FILE`` prints them, so a training layout can be
compared with what every benchmark asks (the rehearsal's template-parity audit does).
"""

from __future__ import annotations

import json
from pathlib import Path

from sapo.chat import bos_prefix, generation_prompt_ids
from sapo.errors import DataError


def read_conversations(path: str | Path) -> list[list[dict]]:
    """A JSON list of conversations, each a list of {role, content} messages ending with a user turn."""
    rows = json.loads(Path(path).read_text())
    if not isinstance(rows, list) or not all(isinstance(r, list) and r for r in rows):
        raise DataError(f"{path}: expected a JSON list of conversations (lists of messages)")
    for i, messages in enumerate(rows):
        if messages[-1].get("role") != "user":
            raise DataError(
                f"{path}: conversation {i}: the last message must be the user's (the benchmark answers it)"
            )
    return rows


def benchmark_prompts(loaded, conversations: list[list[dict]]) -> list[dict]:
    """Per conversation: {"mtbench" (MT-Bench and AlpacaEval: one code path), "lm_eval"} token ids, each also as
    token strings, and "bos_id": the id our rule puts first (None: the tokenizer adds none)."""
    from lm_eval.models.huggingface import HFLM

    tok = loaded.tokenizer
    lm = HFLM(
        pretrained=loaded.model, tokenizer=tok, batch_size=1, device=loaded.device
    )  # as simple_evaluate builds it
    rows = []
    for messages in conversations:
        ours = generation_prompt_ids(tok, messages)  # generate_chat: MT-Bench and AlpacaEval alike
        ids, _ = lm.tok_batch_encode([lm.apply_chat_template(messages)])
        row = {"mtbench": ours, "lm_eval": ids[0].tolist()}
        row["tokens"] = {name: tok.convert_ids_to_tokens(value) for name, value in row.items()}
        row["bos_id"] = (bos_prefix(tok, "") or [None])[0]
        rows.append(row)
    return rows
