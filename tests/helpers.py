"""Helpers the tests import (tests/ is on pytest's pythonpath; the repo root is not)."""

from __future__ import annotations

import copy


def styled_tokenizer(base, style: str):
    """SmolLM2's tokenizer dressed as another model family, with that family's special tokens,
    BOS behaviour and chat template, so template handling is tested without a hub.

    - ``zephyr``: Mistral-style ``<s>``/``</s>``, the tokenizer adds BOS, the template does not.
    - ``llama3``: the tokenizer adds ``<|begin_of_text|>`` AND the template writes it (the
      doubled-BOS trap).
    - ``chatml``: SmolLM2's own tokens, the reference's ChatML template without a system prompt.
    """
    from tokenizers import processors

    from sapo.chat import resolve_chat_template

    tok = copy.deepcopy(base)
    if style == "zephyr":
        tok.add_special_tokens({"bos_token": "<s>", "eos_token": "</s>"})
    elif style == "llama3":
        tok.add_special_tokens(
            {
                "bos_token": "<|begin_of_text|>",
                "eos_token": "<|eot_id|>",
                "additional_special_tokens": ["<|start_header_id|>", "<|end_header_id|>"],
            }
        )
    elif style != "chatml":
        raise ValueError(style)
    if style in ("zephyr", "llama3"):
        bos = (tok.bos_token, tok.bos_token_id)
        tok._tokenizer.post_processor = processors.TemplateProcessing(
            single=f"{bos[0]} $A", pair=f"{bos[0]} $A $B", special_tokens=[bos]
        )
    tok.chat_template = resolve_chat_template(style)
    return tok
