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


class Killed(Exception):
    """Stands for a SIGKILL at a chosen point of a write."""


def kill_at_publish(patch) -> None:
    """Every atomic write dies at its rename (``os.replace``): the file being published never appears."""
    import sapo.files

    def killed_replace(src, dst):
        raise Killed(dst)

    patch.setattr(sapo.files.os, "replace", killed_replace)


def kill_before_meta(patch, module) -> None:
    """``module``'s ``atomic_write_json`` dies on a ``.meta.json``: the outputs are written, their settings not."""
    real_write_json = module.atomic_write_json

    def killed_before_meta(path, body, **kw):
        if str(path).endswith(".meta.json"):
            raise Killed(path)
        return real_write_json(path, body, **kw)

    patch.setattr(module, "atomic_write_json", killed_before_meta)
