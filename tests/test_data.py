"""The shared data pipeline: templates rendered once, no doubled special tokens, exact splits,
counted truncation, and errors that name the file, the row and the field."""

from __future__ import annotations

import json

import pytest
from helpers import styled_tokenizer

from sapo.chat import bos_prefix, render_conversation, resolve_chat_template
from sapo.errors import DataError, RecipeError
from sapo.train.data import DataStats, TokenLayout, conversation_from_row, fit_length, load_examples

TWO_TURNS = [
    {"role": "user", "content": "What is 2 + 3?"},
    {"role": "assistant", "content": "2 + 3 = 5."},
    {"role": "user", "content": "Now double it."},
    {"role": "assistant", "content": "Doubling 5 gives 10."},
]


def _write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


@pytest.mark.parametrize("style", ["smollm2", "chatml", "zephyr", "llama3"])
def test_round_trip_has_one_bos_and_one_end_of_turn_per_message(smol_tokenizer, style):
    tok = smol_tokenizer if style == "smollm2" else styled_tokenizer(smol_tokenizer, style)
    messages = TWO_TURNS[:2]
    prompt_text, answer_text = render_conversation(messages, tok)
    full = tok.apply_chat_template(messages, tokenize=False)
    assert prompt_text + answer_text == full

    layout = TokenLayout()
    prompt_ids, answer_ids = layout.prompt_tokens(tok, prompt_text), layout.answer_tokens(tok, answer_text)
    ids = prompt_ids + answer_ids
    expected_bos = {"smollm2": 0, "chatml": 0, "zephyr": 1, "llama3": 1}[style]
    if expected_bos:
        assert ids[0] == tok.bos_token_id
        assert ids.count(tok.bos_token_id) == 1, "BOS doubled: template and tokenizer both added it"
    # Decoding gives the rendered conversation exactly (plus the one BOS the tokenizer adds for zephyr).
    decoded = tok.decode(ids)
    assert decoded == (tok.bos_token + full if style == "zephyr" else full)
    # Exactly one end-of-turn token per message (SmolLM2 adds its default system message: 3).
    n_messages = 3 if style == "smollm2" else 2
    assert ids.count(tok.eos_token_id) == n_messages
    # The answer ends with the end-of-turn token (the model learns to stop), not a second one.
    answer_tokens = [t for t in answer_ids if t == tok.eos_token_id]
    assert answer_tokens == [tok.eos_token_id]


def test_llama3_trap_is_real_without_our_rule(smol_tokenizer):
    # Tokenizing the rendered text the naive way doubles BOS: the bug our rule avoids.
    tok = styled_tokenizer(smol_tokenizer, "llama3")
    text = tok.apply_chat_template(TWO_TURNS[:2], tokenize=False)
    assert tok(text).input_ids[:2] == [tok.bos_token_id, tok.bos_token_id]
    assert bos_prefix(tok, text) == []


def test_zephyr_prompt_ends_with_assistant_header(smol_tokenizer):
    tok = styled_tokenizer(smol_tokenizer, "zephyr")
    prompt_text, answer_text = render_conversation(TWO_TURNS[:2], tok)
    assert prompt_text == "<|user|>\nWhat is 2 + 3?</s>\n<|assistant|>\n"
    assert answer_text == "2 + 3 = 5.</s>\n"


def test_multi_turn_last_turn_is_the_answer(smol_tokenizer):
    tok = styled_tokenizer(smol_tokenizer, "chatml")
    prompt_text, answer_text = render_conversation(TWO_TURNS, tok)
    assert prompt_text == (
        "<|im_start|>user\nWhat is 2 + 3?<|im_end|>\n<|im_start|>assistant\n2 + 3 = 5.<|im_end|>\n"
        "<|im_start|>user\nNow double it.<|im_end|>\n<|im_start|>assistant\n"
    )
    assert answer_text == "Doubling 5 gives 10.<|im_end|>\n"


def test_multi_turn_first_is_the_reference_split(smol_tokenizer):
    # The reference code's split: prompt = first user turn; answer = the rest, later user turns included.
    tok = styled_tokenizer(smol_tokenizer, "chatml")
    prompt_text, answer_text = render_conversation(TWO_TURNS, tok, multi_turn="first")
    assert prompt_text == "<|im_start|>user\nWhat is 2 + 3?<|im_end|>\n<|im_start|>assistant\n"
    assert answer_text.startswith("2 + 3 = 5.<|im_end|>\n<|im_start|>user\nNow double it.")
    assert answer_text.endswith("Doubling 5 gives 10.<|im_end|>\n")


def test_system_prompt_is_explicit(smol_tokenizer):
    prompt_text, _ = render_conversation(TWO_TURNS[:2], smol_tokenizer, system_prompt="Be brief.")
    assert prompt_text.startswith("<|im_start|>system\nBe brief.<|im_end|>\n")
    assert "SmolLM" not in prompt_text  # the template's default system prompt is replaced, not added


def test_template_that_changes_the_prefix_is_refused(smol_tokenizer):
    tok = smol_tokenizer
    # A template that renders the generation prompt differently from the conversation's own header.
    tok.chat_template = (
        "{% for m in messages %}{{ m['role'] + ': ' + m['content'] + '\n' }}{% endfor %}"
        "{% if add_generation_prompt %}{{ 'ASSISTANT:' }}{% endif %}"
    )
    with pytest.raises(DataError, match="cannot be split off"):
        render_conversation(TWO_TURNS[:2], tok)


def test_fit_length_truncates_prompt_end_then_answer_and_counts():
    stats = DataStats()
    prompt, answer = list(range(10)), list(range(100, 108))
    # 10 + 8 = 18 > 12: prompt keeps its last 6 tokens (4..9), answer keeps 12 - 6 = 6 tokens.
    p, a = fit_length(prompt, answer, max_length=12, max_prompt_length=6, truncation="truncate", stats=stats)
    assert p == [4, 5, 6, 7, 8, 9]
    assert a == [100, 101, 102, 103, 104, 105]
    assert (stats.prompts_truncated, stats.answers_truncated, stats.tokens_lost) == (1, 1, 6)
    # Fits: untouched and uncounted.
    assert fit_length(prompt, answer, 18, 6, "truncate", stats) == (prompt, answer)
    assert stats.tokens_lost == 6
    # drop mode.
    assert fit_length(prompt, answer, 12, 6, "drop", stats) is None
    assert stats.dropped_too_long == 1


def test_length_filtering_counts_on_a_file(tmp_path, smol_tokenizer):
    tok = styled_tokenizer(smol_tokenizer, "chatml")
    rows = [
        {"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]},
        {"messages": [{"role": "user", "content": "tell me " * 50}, {"role": "assistant", "content": "ok " * 50}]},
    ]
    path = _write_jsonl(tmp_path / "d.jsonl", rows)
    examples, stats = load_examples(str(path), tok, max_length=40, max_prompt_length=20, truncation="drop")
    assert len(examples) == 1 and stats.dropped_too_long == 1 and stats.rows_read == 2
    (dropped,) = stats.dropped_locations  # named, with the limit it broke
    assert dropped.startswith(f"{path} line 2: ") and dropped.endswith("over max_length 40 (truncation: drop)")
    examples, stats = load_examples(str(path), tok, max_length=40, max_prompt_length=20)
    assert len(examples) == 2 and stats.prompts_truncated == 1 and stats.answers_truncated == 1
    assert len(examples[1].prompt_ids) == 20 and len(examples[1].prompt_ids) + len(examples[1].answer_ids) == 40


@pytest.mark.parametrize(
    ("roles", "index"),
    [
        (("assistant", "user", "assistant"), 0),
        (("user", "user", "assistant"), 1),
        (("system", "assistant"), 1),
        (("user", "system", "assistant"), 1),
        (("user", "assistant", "assistant"), 2),
        (("system", "system", "user", "assistant"), 1),
    ],
)
def test_roles_alternate_after_an_optional_system_message(roles, index):
    row = {"messages": [{"role": r, "content": f"turn {i}"} for i, r in enumerate(roles)]}
    with pytest.raises(DataError, match=rf"f line 1: field 'messages\[{index}\]\.role': expected"):
        conversation_from_row(row, "f line 1")


def test_empty_earlier_answer_is_refused_too():
    row = {"messages": [*TWO_TURNS[:1], {"role": "assistant", "content": " "}, *TWO_TURNS[2:]]}
    with pytest.raises(DataError, match=r"messages\[1\]\.content': the answer is empty"):
        conversation_from_row(row, "f line 1")
    assert conversation_from_row({"messages": [{"role": "system", "content": ""}, *TWO_TURNS]}, "f")[1:] == TWO_TURNS


@pytest.mark.parametrize(
    ("row", "match"),
    [
        ({"mesages": TWO_TURNS}, r"row has \['mesages'\] \(did you mean 'messages' for 'mesages'\?\)"),
        ({"messages": "hello"}, r"field 'messages': expected a non-empty list of messages, got 'hello'"),
        ({"real": {"role": "user"}}, r"field 'real': expected a non-empty list"),
        ({"prompt": "q", "respone": "a"}, r"did you mean 'response'"),
    ],
)
def test_a_conversation_that_is_misnamed_or_not_a_list_is_named(row, match):
    with pytest.raises(DataError, match=match):
        conversation_from_row(row, "f line 1")


@pytest.mark.parametrize(
    ("row", "match"),
    [
        ({"messages": [{"role": "user", "content": "q"}, {"role": "bot", "content": "a"}]}, r"messages\[1\]\.role"),
        ({"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": ""}]}, "answer is empty"),
        ({"messages": [{"role": "user", "content": "q"}]}, r"messages\[0\]\.role.*last message"),
        ({"messages": [{"role": "user", "content": 3}, {"role": "assistant", "content": "a"}]}, r"\[0\]\.content"),
        ({"messages": [{"role": "assistant", "content": "a"}]}, r"messages\[0\]\.role.*expected 'user'"),
        ({"text": "x"}, "no conversation found"),
    ],
)
def test_bad_rows_name_file_line_and_field(tmp_path, smol_tokenizer, row, match):
    good = {"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]}
    path = _write_jsonl(tmp_path / "bad.jsonl", [good, good, row])
    with pytest.raises(DataError, match=match) as info:
        load_examples(str(path), smol_tokenizer)
    assert f"{path} line 3" in str(info.value)


def test_bad_rows_can_be_skipped_and_counted(tmp_path, smol_tokenizer, caplog):
    good = {"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]}
    bad = {"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "  "}]}
    path = _write_jsonl(tmp_path / "mixed.jsonl", [good, bad, good])
    with caplog.at_level("WARNING", logger="sapo"):
        examples, stats = load_examples(str(path), smol_tokenizer, on_bad_row="skip")
    assert "skipped 1 bad rows" in caplog.text
    assert len(examples) == 2 and stats.bad_rows_skipped == 1
    assert "line 2" in stats.skipped_locations[0]


def test_invalid_json_line_is_named(tmp_path, smol_tokenizer):
    path = tmp_path / "broken.jsonl"
    path.write_text('{"prompt": "q", "chosen": "a"}\n{not json\n')
    with pytest.raises(DataError, match="broken.jsonl line 2: not valid JSON"):
        load_examples(str(path), smol_tokenizer)


@pytest.mark.parametrize(
    ("line", "match"),
    [(b"{not json", "line 2: not valid JSON"), ('{"prompt": "caf\u00e9"}'.encode("latin-1"), "line 2: not UTF-8")],
)
def test_an_unreadable_line_is_a_bad_row(tmp_path, smol_tokenizer, line, match):
    # Skipped and counted under 'skip' like any bad row, the lines after it still read; a DataError under 'error'.
    good = b'{"prompt": "q", "chosen": "a"}\n'
    path = tmp_path / "broken.jsonl"
    path.write_bytes(good + line + b"\n" + good)
    examples, stats = load_examples(str(path), smol_tokenizer, on_bad_row="skip")
    assert len(examples) == 2 and stats.rows_read == 3 and stats.bad_rows_skipped == 1
    assert stats.skipped_locations[0].startswith(f"{path} line 2: ")
    assert [e.where for e in examples] == [f"{path} line 1", f"{path} line 3"]
    with pytest.raises(DataError, match=f"broken.jsonl {match}"):
        load_examples(str(path), smol_tokenizer)


def test_an_unreadable_json_file_is_a_data_error(tmp_path, smol_tokenizer):
    path = tmp_path / "rows.json"
    path.write_text('[{"prompt": "q", "chosen": "a"},')
    with pytest.raises(DataError, match="rows.json: not valid JSON"):
        load_examples(str(path), smol_tokenizer)


def test_capybara_row_uses_chosen_and_prompt_strings_work(smol_tokenizer):
    capybara = {
        "source": "x",
        "chosen": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "good"}],
        "rejected": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "bad"}],
    }
    assert conversation_from_row(capybara, "r")[-1]["content"] == "good"
    assert conversation_from_row(capybara, "r", "rejected")[-1]["content"] == "bad"
    flat = {"prompt": "q", "response": "a"}
    assert conversation_from_row(flat, "r") == [
        {"role": "user", "content": "q"},
        {"role": "assistant", "content": "a"},
    ]


def test_paired_rows_give_rejected_answer_ids(tmp_path, smol_tokenizer):
    row = {
        "chosen": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "good"}],
        "rejected": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "bad"}],
    }
    path = _write_jsonl(tmp_path / "pairs.jsonl", [row])
    (example,), _ = load_examples(str(path), smol_tokenizer, rejected_field="rejected")
    assert smol_tokenizer.decode(example.rejected_ids) == "bad<|im_end|>\n"
    row["rejected"][0]["content"] = "another question"
    _write_jsonl(path, [row])
    with pytest.raises(DataError, match="prompt differs"):
        load_examples(str(path), smol_tokenizer, rejected_field="rejected")


def test_json_and_parquet_files_read_alike(tmp_path, smol_tokenizer):
    import pandas as pd

    rows = [{"prompt": f"question {i}", "chosen": f"answer {i}"} for i in range(3)]
    (tmp_path / "d.json").write_text(json.dumps(rows))
    pd.DataFrame(rows).to_parquet(tmp_path / "d.parquet")
    from_json, _ = load_examples(str(tmp_path / "d.json"), smol_tokenizer)
    from_parquet, _ = load_examples(str(tmp_path / "d.parquet"), smol_tokenizer)
    assert [e.answer_ids for e in from_json] == [e.answer_ids for e in from_parquet]


def test_unreachable_hub_dataset_gives_a_clear_message(smol_tokenizer):
    with pytest.raises(DataError, match="hub is out of reach"):
        load_examples("no-such-org/no-such-dataset-xyz", smol_tokenizer)


def test_embedded_dataset_tokenizes_to_the_templated_conversation(smol_tokenizer):
    from sapo.train.embedded_data import build_embedded_examples

    examples, stats = load_examples("embedded", smol_tokenizer)
    rows = build_embedded_examples()
    assert stats.examples == len(rows) == len(examples) and stats.tokens_lost == 0
    for example, row in zip(examples, rows, strict=True):
        text = smol_tokenizer.apply_chat_template(row["messages"], tokenize=False)
        assert smol_tokenizer.decode(example.prompt_ids + example.answer_ids) == text
        assert smol_tokenizer.decode(example.answer_ids).startswith(row["messages"][-1]["content"])


def test_unknown_chat_template_lists_the_shipped_ones():
    with pytest.raises(RecipeError, match=r"chat_template: 'nope'.*chatml"):
        resolve_chat_template("nope")


# ---------------------------------------------------------------- the reference code's token layout


def test_reference_split_renders_prompt_and_answer_apart_with_one_extra_eos(smol_tokenizer):
    """yinyueqin/SAPO run_dpo.py: template(messages[:-1]) and template([last]) apart; utils.py: no BOS, one EOS."""
    tok = styled_tokenizer(smol_tokenizer, "zephyr")  # Mistral-style: the tokenizer adds <s>, the template does not
    messages = [{"role": "user", "content": "What is 2 + 3?"}, {"role": "assistant", "content": "5."}]
    layout = TokenLayout(prompt_split="reference", prompt_bos=False, answer_eos=True)
    prompt_text, answer_text = layout.render(messages, tok)
    assert (prompt_text, answer_text) == ("<|user|>\nWhat is 2 + 3?</s>\n", "<|assistant|>\n5.</s>\n")
    prompt_ids, answer_ids = layout.prompt_tokens(tok, prompt_text), layout.answer_tokens(tok, answer_text)
    assert prompt_ids[0] != tok.bos_token_id and tok.decode(prompt_ids) == prompt_text  # no BOS at all
    assert answer_ids[-1] == answer_ids[-3] == tok.eos_token_id and answer_ids.count(tok.eos_token_id) == 2
    assert tok.decode(answer_ids) == "<|assistant|>\n5.</s>\n</s>"  # the assistant header belongs to the answer
    ours = TokenLayout()  # render once: the header closes the prompt, BOS first, no extra EOS
    prompt_text, answer_text = ours.render(messages, tok)
    assert answer_text == "5.</s>\n" and ours.prompt_tokens(tok, prompt_text)[0] == tok.bos_token_id


def test_reference_truncation_drops_long_prompts_counted_with_special_tokens(tmp_path, smol_tokenizer):
    tok = styled_tokenizer(smol_tokenizer, "zephyr")
    rows = [{"messages": [{"role": "user", "content": q}, {"role": "assistant", "content": "fine"}]}
            for q in ("hi", "word " * 40)]  # fmt: skip
    path = _write_jsonl(tmp_path / "long.jsonl", rows)
    short_prompt = len(tok("<|user|>\nhi</s>\n").input_ids)  # with <s>, as run_dpo.py's filter counts
    examples, stats = load_examples(str(path), tok, max_length=64, max_prompt_length=short_prompt + 1,
                                    truncation="reference", layout=TokenLayout(prompt_split="reference"))  # fmt: skip
    assert len(examples) == 1 and stats.dropped_long_prompts == 1 and examples[0].where.endswith("line 1")
    with pytest.raises(DataError, match="no usable examples"):  # the filter is >=: a prompt of exactly the budget goes
        load_examples(str(path), tok, max_length=64, max_prompt_length=short_prompt, truncation="reference",
                      layout=TokenLayout(prompt_split="reference"))  # fmt: skip


def test_reference_split_needs_the_last_turn_as_answer():
    with pytest.raises(RecipeError, match="multi_turn: last"):
        render_conversation(TWO_TURNS, None, multi_turn="first", split="reference")
