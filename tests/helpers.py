"""Helpers the tests import (tests/ is on pytest's pythonpath; the repo root is not)."""

from __future__ import annotations

import copy

# The columns of each hub data set and their types (its `datasets` features, as JSON; [t]: a non-empty list of t),
# as lm-eval's built-in tasks read them.
_MC_TARGETS = {"choices": [str], "labels": [int]}
HUB_TYPES = {
    "arc_challenge": {"id": str, "question": str, "choices": {"text": [str], "label": [str]}, "answerKey": str},
    "hellaswag": {"ind": int, "activity_label": str, "ctx_a": str, "ctx_b": str, "ctx": str, "endings": [str],
                  "source_id": str, "split": str, "split_type": str, "label": str},
    "truthfulqa_mc2": {"question": str, "mc1_targets": _MC_TARGETS, "mc2_targets": _MC_TARGETS},
    "mmlu": {"question": str, "subject": str, "choices": [str], "answer": int},
    "winogrande": {"sentence": str, "option1": str, "option2": str, "answer": str},
    "gsm8k": {"question": str, "answer": str},
    "ifeval": {"key": int, "prompt": str, "instruction_id_list": [str], "kwargs": [dict]},
}  # fmt: skip


def has_hub_types(value, types) -> bool:
    """Whether a JSON row has exactly a hub data set's fields, with its types (``HUB_TYPES``)."""
    if isinstance(types, dict):
        return (
            isinstance(value, dict)
            and set(value) == set(types)
            and all(has_hub_types(value[name], t) for name, t in types.items())
        )
    if isinstance(types, list):
        return isinstance(value, list) and bool(value) and all(has_hub_types(v, types[0]) for v in value)
    return isinstance(value, types) and not isinstance(value, bool)  # JSON true is no int label


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
