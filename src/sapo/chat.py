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

CHATML_START, CHATML_END = "<|im_start|>", "<|im_end|>"
CHAT_FORMATS = ("chatml",)  # chat_format values (setup_chat_format)
MULTI_TURNS = ("last", "first", "first_turn")  # which turns are the answer (render_conversation)


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
    """The BOS id the tokenizer puts before ``text``: [] if it adds none or the text starts with it already.
    The id is the one the tokenizer actually prepends, which after ``setup_chat_format`` on LLaMA-3 is still
    ``<|begin_of_text|>`` (its post-processor's) while ``bos_token`` names ``<|im_start|>``."""
    with_special = tokenizer("a").input_ids
    without = tokenizer("a", add_special_tokens=False).input_ids
    if len(with_special) <= len(without) or with_special[1 : len(without) + 1] != without:
        return []
    first = with_special[0]
    if text.startswith(tokenizer.convert_ids_to_tokens(first)):
        return []
    return [first]


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
    answer is everything after it, later user turns included. ``"first_turn"``: the same prompt, and
    the first assistant reply after it as the answer, later turns dropped (uclaml/SPIN keeps messages[0:2],
    which is the same on data whose first message is the user's).
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
    elif multi_turn in ("first", "first_turn"):
        cut = next(i for i, m in enumerate(messages) if m["role"] == "user") + 1
        if multi_turn == "first_turn":  # keep the first reply only
            reply = next((i for i in range(cut, len(messages)) if messages[i]["role"] == "assistant"), None)
            if reply is None:
                raise DataError("multi_turn: 'first_turn' needs an assistant reply after the first user message")
            messages = messages[: reply + 1]
    else:
        raise RecipeError(f"multi_turn: expected 'last', 'first' or 'first_turn', got {multi_turn!r}")
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


def setup_chat_format(tokenizer, template: str) -> bool:
    """Make ChatML's markers real tokens, as TRL's ``setup_chat_format`` does and the SAPO reference's own
    copy of it (``alignment/model_utils.py:149-196``, called by ``run_sft.py:150`` and ``run_orpo.py:153``):
    ``<|im_start|>`` and ``<|im_end|>`` become special tokens, BOS = ``<|im_start|>``, EOS = pad =
    ``<|im_end|>``. Without it a base vocabulary (Meta-Llama-3-8B) spells the markers as plain text, so no
    answer ends with an EOS and generation never stops at a turn's end. ``template`` must be a ChatML one.
    Returns whether tokens were added (then the model's embeddings must grow: ``fit_embeddings``)."""
    if CHATML_START not in template or CHATML_END not in template:
        raise RecipeError(f"chat_format: 'chatml' needs a ChatML chat_template (with {CHATML_START} and {CHATML_END})")
    before = len(tokenizer)
    tokenizer.add_special_tokens({"additional_special_tokens": [CHATML_START, CHATML_END]})
    tokenizer.bos_token, tokenizer.eos_token, tokenizer.pad_token = CHATML_START, CHATML_END, CHATML_END
    tokenizer.chat_template = template
    return len(tokenizer) > before


def fit_embeddings(model, tokenizer) -> None:
    """Grow ``model``'s embeddings to the tokenizer's vocabulary when it has more tokens, and give its config and
    generation config the tokenizer's BOS/EOS/pad ids (what ``setup_chat_format`` does to the model). New rows
    start at the mean of the old ones (transformers' ``mean_resizing``; the reference's 4.37 drew them at
    random). Applied to the policy before the EMA and reference copies are made, so all three agree (the
    reference resizes only the EMA model in run_orpo.py:152-153, leaving the policy unable to embed them)."""
    weight = model.get_input_embeddings().weight
    if getattr(weight, "ds_shape", weight.shape)[0] < len(tokenizer):  # ZeRO-3: a shard's shape is (0,)
        model.resize_token_embeddings(len(tokenizer))
    for config in (model.config, getattr(model, "generation_config", None)):
        if config is not None:
            config.bos_token_id = tokenizer.bos_token_id
            config.eos_token_id = tokenizer.eos_token_id
            config.pad_token_id = tokenizer.pad_token_id
