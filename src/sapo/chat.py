"""Chat templates and the token rules around them, shared by training, generation and evaluation.

The rules (USER-NEEDS: trl#1930, #2054, #4481): a conversation is rendered ONCE to text, and
the prompt is the rendered prefix of it, so prompt and answer can never disagree; text is
tokenized with ``add_special_tokens=False`` plus at most one BOS, so no special token is
doubled. The paper's templates ship as ``chatml``, ``zephyr`` and ``llama3``.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

from sapo.errors import DataError, RecipeError


def shipped_templates() -> list[str]:
    """Names of the chat templates that ship with the harness."""
    folder = resources.files("sapo") / "chat_templates"
    return sorted(p.name.removesuffix(".jinja") for p in folder.iterdir() if p.name.endswith(".jinja"))


def resolve_chat_template(name_or_path: str) -> str:
    """A template shipped with the harness (``chatml``, ``zephyr``, ``llama3``) or a .jinja file."""
    shipped = resources.files("sapo") / "chat_templates" / f"{name_or_path}.jinja"
    if shipped.is_file():
        return shipped.read_text()
    path = Path(name_or_path)
    if path.is_file():
        return path.read_text()
    raise RecipeError(
        f"chat_template: '{name_or_path}' is neither a shipped template {shipped_templates()} nor a file"
    )


def bos_prefix(tokenizer, text: str) -> list[int]:
    """The BOS id to put before ``text``: [] if the tokenizer adds none or the text has it already."""
    with_special = tokenizer("a").input_ids
    without = tokenizer("a", add_special_tokens=False).input_ids
    bos = tokenizer.bos_token_id
    adds_bos = bos is not None and len(with_special) > len(without) and with_special[0] == bos
    if not adds_bos or (tokenizer.bos_token and text.startswith(tokenizer.bos_token)):
        return []
    return [bos]


def encode(tokenizer, text: str) -> list[int]:
    """Token ids of rendered text: at most one BOS, no other special token added."""
    return bos_prefix(tokenizer, text) + tokenizer(text, add_special_tokens=False).input_ids


def generation_prompt_ids(tokenizer, messages: list[dict]) -> list[int]:
    """Token ids that ask the model for the next assistant turn of ``messages``."""
    return encode(tokenizer, tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True))


def render_conversation(
    messages: list[dict],
    tokenizer,
    multi_turn: str = "last",
    system_prompt: str | None = None,
    split: str = "render_once",
) -> tuple[str, str]:
    """Render once and split into (prompt_text, answer_text) with prompt_text + answer_text == full text.

    ``multi_turn="last"``: the last assistant turn is the answer and every earlier turn is prompt.
    ``multi_turn="first"``: the prompt is the first user turn (plus a system message) and the
    answer is everything after it, later user turns included.
    ``split="reference"`` renders the two apart, as the SAPO reference code does (see
    ``render_reference_split``); ``multi_turn`` must then be ``last``.
    """
    if system_prompt is not None and messages[0]["role"] != "system":
        messages = [{"role": "system", "content": system_prompt}, *messages]
    if split == "reference":
        if multi_turn != "last":
            raise RecipeError("prompt_split: 'reference' renders the last message as the answer; set multi_turn: last")
        return render_reference_split(messages, tokenizer)
    if split != "render_once":
        raise RecipeError(f"prompt_split: expected 'render_once' or 'reference', got {split!r}")
    if multi_turn == "last":
        cut = len(messages) - 1
    elif multi_turn == "first":
        cut = next(i for i, m in enumerate(messages) if m["role"] == "user") + 1
    else:
        raise RecipeError(f"multi_turn: expected 'last' or 'first', got {multi_turn!r}")
    full = tokenizer.apply_chat_template(messages, tokenize=False)
    prompt = tokenizer.apply_chat_template(messages[:cut], tokenize=False, add_generation_prompt=True)
    if not full.startswith(prompt):
        raise DataError(
            "the chat template renders the prompt differently from the start of the whole conversation, "
            f"so the prompt cannot be split off.\nprompt: {prompt[-120:]!r}\nfull:   {full[: len(prompt)][-120:]!r}"
        )
    return prompt, full[len(prompt) :]


def render_reference_split(messages: list[dict], tokenizer) -> tuple[str, str]:
    """(prompt_text, answer_text) as yinyueqin/SAPO's run_dpo.py / run_orpo.py make them: the template applied to
    every message but the last (no generation prompt), and apart from it to the last message alone, so the
    assistant header is part of the answer. A template that injects a default system prompt puts it in both."""
    prompt = tokenizer.apply_chat_template(messages[:-1], tokenize=False)
    answer = tokenizer.apply_chat_template(messages[-1:], tokenize=False)
    return prompt, answer
