"""The data pipeline every trainer shares: conversations in, tokenized (prompt, answer) out.

SAPO needs only the real answer (the chosen side of a preference set); DPO and ORPO also
read the rejected side. The chat template is applied ONCE to the whole conversation, and
the prompt is the rendered prefix of it, so the two can never disagree (trl#1930, #2054).
Rendering is to text; tokenizing uses ``add_special_tokens=False`` plus at most one BOS, so
no special token is doubled (trl#4481). Both rules live in ``sapo.chat``, shared with
generation and evaluation.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

from sapo.chat import encode, render_conversation
from sapo.errors import DataError, RecipeError, closest
from sapo.log import get_logger

logger = get_logger(__name__)

ROLES = ("system", "user", "assistant")
_ANSWER_PROBE = "SAPOANSWERPROBE"  # no spaces or newlines: survives templates that trim contents
# Columns tried, in order, when the user names none: Capybara-DPO's `chosen`, plain `messages`,
# the reference code's reformatted `real`.
CONVERSATION_FIELDS = ("chosen", "messages", "real")


@dataclass(frozen=True)
class ChatExample:
    """One tokenized example. ``prompt_ids + answer_ids`` is the whole rendered conversation."""

    prompt_ids: list[int]
    answer_ids: list[int]
    where: str  # "file.jsonl line 12" or "dataset row 12": for error messages and audits
    rejected_ids: list[int] | None = None  # answer tokens of the rejected side (paired data only)


@dataclass
class DataStats:
    """What the pipeline read, fixed and dropped; printed before training starts."""

    rows_read: int = 0
    examples: int = 0
    bad_rows_skipped: int = 0
    prompts_truncated: int = 0
    answers_truncated: int = 0
    dropped_too_long: int = 0
    dropped_long_prompts: int = 0
    tokens_lost: int = 0
    skipped_locations: list[str] = field(default_factory=list)
    dropped_locations: list[str] = field(default_factory=list)  # rows over the length limits, and which limit

    def summary(self) -> str:
        parts = [f"{self.examples} examples from {self.rows_read} rows"]
        for name in ("bad_rows_skipped", "prompts_truncated", "answers_truncated", "dropped_too_long",
                     "dropped_long_prompts", "tokens_lost"):  # fmt: skip
            if getattr(self, name):
                parts.append(f"{name.replace('_', ' ')}: {getattr(self, name)}")
        return "; ".join(parts)

    def to_dict(self) -> dict:
        return asdict(self)


# --------------------------------------------------------------------------- rows -> messages


def read_rows(source: str, split: str = "train") -> Iterator[tuple[str, dict | DataError]]:
    """Yield (location, row) from ``embedded``, a .jsonl/.json/.parquet file, a saved folder or a hub name.

    A JSONL line that is not UTF-8 or not JSON yields a ``DataError`` naming file and line in place of the row,
    so the caller's ``on_bad_row`` decides (``conversation_from_row`` raises it); the lines after it still come.
    """
    if source == "embedded":
        from sapo.train.embedded_data import read_embedded_release

        # The shipped build (train/embedded/<EMBEDDED_DATASET_NAME>.jsonl), not regenerated per read.
        # Rows carry `messages` (the real answer) and `rejected` (for DPO/ORPO; others ignore it).
        for i, row in enumerate(read_embedded_release()):
            yield f"embedded row {i}", row
        return
    path = Path(source)
    if path.suffix == ".jsonl" and path.is_file():
        with path.open("rb") as handle:  # bytes: one line that is not UTF-8 must not end the whole read
            for line_no, line in enumerate(handle, start=1):
                if not line.strip():
                    continue
                yield f"{path} line {line_no}", _parse_line(line, f"{path} line {line_no}")
        return
    if path.suffix == ".json" and path.is_file():
        rows = _parse_line(path.read_bytes(), str(path))  # one document: bad as a whole, never skipped
        if isinstance(rows, DataError):
            raise rows
        if not isinstance(rows, list):
            raise DataError(f"{path}: expected a JSON array of rows, got {type(rows).__name__}")
        for i, row in enumerate(rows):
            yield f"{path} row {i}", row
        return
    import datasets

    if path.suffix == ".parquet" and path.is_file():
        dataset = datasets.load_dataset("parquet", data_files=str(path), split="train")
    elif path.is_dir():
        dataset = datasets.load_from_disk(str(path))
        if isinstance(dataset, datasets.DatasetDict):
            dataset = dataset[split]
    else:
        try:
            dataset = datasets.load_dataset(source, split=split)
        except (ConnectionError, OSError) as err:
            raise DataError(
                f"could not load data set '{source}': not a local file or folder, and the hub is out of reach. "
                "Download it where there is access (datasets.load_dataset(...).save_to_disk(DIR)) and pass DIR, "
                "or use --dataset embedded."
            ) from err
    for i, row in enumerate(dataset):
        yield f"{source} row {i}", row


def _parse_line(line: bytes, where: str) -> dict | DataError:
    try:
        return json.loads(line.decode("utf-8"))
    except UnicodeDecodeError as err:
        return DataError(f"{where}: not UTF-8 text (byte {err.start}: {line[err.start : err.start + 1]!r})")
    except json.JSONDecodeError as err:
        return DataError(f"{where}: not valid JSON ({err.msg}, column {err.colno})")


def _check_messages(messages, where: str, name: str) -> list[dict]:
    if not isinstance(messages, list) or not messages:
        raise DataError(f"{where}: field '{name}': expected a non-empty list of messages, got {messages!r:.80}")
    for j, message in enumerate(messages):
        if not isinstance(message, dict):
            raise DataError(f"{where}: field '{name}[{j}]': expected an object with role and content")
        role, content = message.get("role"), message.get("content")
        if role not in ROLES:
            raise DataError(f"{where}: field '{name}[{j}].role': expected one of {ROLES}, got {role!r}")
        if not isinstance(content, str):
            raise DataError(f"{where}: field '{name}[{j}].content': expected a string, got {type(content).__name__}")
        # An optional system message, then user and assistant turns in turn: templates and the prompt/answer split
        # assume it (several templates raise on anything else, others render it silently wrong).
        first = 1 if messages[0]["role"] == "system" else 0
        expected = "system" if j < first else ("user", "assistant")[(j - first) % 2]
        if role != expected:
            raise DataError(f"{where}: field '{name}[{j}].role': expected {expected!r} here, got {role!r} (a system "
                            "message may come first, then user and assistant turns alternate)")  # fmt: skip
        if role == "assistant" and not content.strip():
            raise DataError(f"{where}: field '{name}[{j}].content': the answer is empty")
    if messages[-1]["role"] != "assistant":
        raise DataError(f"{where}: field '{name}[{len(messages) - 1}].role': the last message must be the assistant's")
    return [{"role": m["role"], "content": m["content"]} for m in messages]


def _did_you_mean(row: dict) -> str:
    """' (did you mean 'messages' for 'mesages'?)' when a key of ``row`` looks like a field the pipeline reads."""
    known = (*CONVERSATION_FIELDS, "prompt", "response", "completion", "rejected")
    for key in row:
        close = closest(str(key), known, cutoff=0.75)
        if close and key not in known:
            return f" (did you mean '{close}' for '{key}'?)"
    return ""


def conversation_from_row(row: dict | DataError, where: str, field_name: str | None = None) -> list[dict]:
    """The conversation in ``row``: a list of messages, or built from ``prompt`` + answer strings."""
    if isinstance(row, DataError):  # a line read_rows could not parse
        raise row
    if not isinstance(row, dict):
        raise DataError(f"{where}: expected an object, got {type(row).__name__}")
    if field_name is None:
        field_name = next((f for f in CONVERSATION_FIELDS if isinstance(row.get(f), list)), None)
    if field_name is None:
        answer_field = next((f for f in ("chosen", "response", "completion") if isinstance(row.get(f), str)), None)
        if answer_field is None or not isinstance(row.get("prompt"), str):
            # A conversation field that is there but is not a list of messages ('chosen' may be an answer string).
            present = next((f for f in CONVERSATION_FIELDS
                            if f in row and not (f == "chosen" and isinstance(row[f], str))), None)  # fmt: skip
            if present is not None:
                _check_messages(row[present], where, present)
            raise DataError(
                f"{where}: no conversation found: expected a list field among {CONVERSATION_FIELDS} "
                f"or string fields 'prompt' and 'chosen'/'response'; row has {sorted(row)}{_did_you_mean(row)}"
            )
        messages = [{"role": "user", "content": row["prompt"]}, {"role": "assistant", "content": row[answer_field]}]
        return _check_messages(messages, where, answer_field)
    if field_name not in row:
        raise DataError(f"{where}: field '{field_name}' is missing; row has {sorted(row)}{_did_you_mean(row)}")
    return _check_messages(row[field_name], where, field_name)


# --------------------------------------------------------------------------- messages -> tokens


@dataclass(frozen=True)
class TokenLayout:
    """How a conversation becomes prompt and answer tokens: the config fields of the same names (their help
    says what each does and where the reference code differs)."""

    multi_turn: str = "last"
    system_prompt: str | None = None
    prompt_split: str = "render_once"
    prompt_bos: bool = True
    answer_eos: bool = False

    @classmethod
    def from_config(cls, config) -> TokenLayout:
        return cls(**{f.name: getattr(config, f.name, f.default) for f in fields(cls)})

    def render(self, messages: list[dict], tokenizer) -> tuple[str, str]:
        return render_conversation(messages, tokenizer, self.multi_turn, self.system_prompt, self.prompt_split)

    def prompt_tokens(self, tokenizer, text: str) -> list[int]:
        return encode(tokenizer, text) if self.prompt_bos else tokenizer(text, add_special_tokens=False).input_ids

    def answer_tokens(self, tokenizer, text: str) -> list[int]:
        ids = tokenizer(text, add_special_tokens=False).input_ids
        return [*ids, tokenizer.eos_token_id] if self.answer_eos else ids

    def prompt_messages(self, messages: list[dict]) -> list[dict]:
        """The messages a benchmark would be asked to answer for this example (the prompt's turns, without the
        system message ``system_prompt`` adds): what the template-parity audit renders the benchmarks' way."""
        if self.multi_turn == "last":
            return messages[:-1]
        return messages[: next(i for i, m in enumerate(messages) if m["role"] == "user") + 1]

    def answer_frame(self, tokenizer) -> tuple[str, str]:
        """(text before, text after) an assistant message's content in this layout's answer text: e.g. ("",
        "<|im_end|>\n") for ChatML rendered once. Found by rendering a probe conversation, so it holds for any
        template that writes the content verbatim (SPIN re-templates its generated answers with it)."""
        probe = [{"role": "user", "content": "Hello"}, {"role": "assistant", "content": _ANSWER_PROBE}]
        answer = self.render(probe, tokenizer)[1]
        if answer.count(_ANSWER_PROBE) != 1:
            raise RecipeError("the chat template does not write an assistant message's content verbatim, so a "
                              "generated answer cannot be re-templated (spin_rejected_format: raw avoids it)")  # fmt: skip
        before, after = answer.split(_ANSWER_PROBE)
        return before, after


def fit_length(
    prompt_ids: list[int],
    answer_ids: list[int],
    max_length: int | None,
    max_prompt_length: int | None,
    truncation: str,
    stats: DataStats,
) -> tuple[list[int], list[int]] | None:
    """Apply the length limits; None means drop the example.

    ``truncation="truncate"`` follows the reference code (TRL 0.7): when the whole is too long,
    keep the END of the prompt up to ``max_prompt_length``, then cut the answer's tail.
    ``truncation="drop"`` drops every example that does not fit. ``"reference"`` truncates like
    ``"truncate"``; its prompt filter runs before (``load_examples``).
    """
    if max_length is None or len(prompt_ids) + len(answer_ids) <= max_length:
        return prompt_ids, answer_ids
    if truncation == "drop":
        stats.dropped_too_long += 1
        return None
    if truncation not in ("truncate", "reference"):
        raise RecipeError(f"truncation: expected 'truncate', 'drop' or 'reference', got {truncation!r}")
    before = len(prompt_ids) + len(answer_ids)
    if max_prompt_length is not None and len(prompt_ids) > max_prompt_length:
        prompt_ids = prompt_ids[-max_prompt_length:]
        stats.prompts_truncated += 1
    room = max_length - len(prompt_ids)
    if room <= 0:
        stats.dropped_too_long += 1
        return None
    if len(answer_ids) > room:
        answer_ids = answer_ids[:room]
        stats.answers_truncated += 1
    stats.tokens_lost += before - len(prompt_ids) - len(answer_ids)
    return prompt_ids, answer_ids


def load_examples(
    source: str,
    tokenizer,
    *,
    split: str = "train",
    field_name: str | None = None,
    rejected_field: str | None = None,
    max_length: int | None = 2048,
    max_prompt_length: int | None = 1792,
    truncation: str = "truncate",
    multi_turn: str = "last",
    system_prompt: str | None = None,
    on_bad_row: str = "error",
    limit: int | None = None,
    layout: TokenLayout | None = None,
) -> tuple[list[ChatExample], DataStats]:
    """Read, validate, render and tokenize ``source``. See the module docstring for the rules.

    With ``rejected_field`` (DPO/ORPO), each row's rejected conversation must share the chosen
    one's prompt; the rejected answer is truncated to the same budget as the chosen one.
    ``layout`` (default: from ``multi_turn`` and ``system_prompt``) says how text becomes tokens.
    """
    layout = layout or TokenLayout(multi_turn=multi_turn, system_prompt=system_prompt)
    if on_bad_row not in ("error", "skip"):
        raise RecipeError(f"on_bad_row: expected 'error' or 'skip', got {on_bad_row!r}")
    stats = DataStats()
    examples: list[ChatExample] = []
    for where, row in read_rows(source, split):
        if limit is not None and len(examples) >= limit:
            break
        stats.rows_read += 1
        try:
            messages = conversation_from_row(row, where, field_name)
            prompt_text, answer_text = layout.render(messages, tokenizer)
            rejected_text = None
            if rejected_field is not None:
                rejected = conversation_from_row(row, where, rejected_field)
                rejected_prompt, rejected_text = layout.render(rejected, tokenizer)
                if rejected_prompt != prompt_text:
                    raise DataError(f"{where}: field '{rejected_field}': its prompt differs from the chosen one's")
        except DataError as err:
            if on_bad_row == "error":
                raise
            stats.bad_rows_skipped += 1
            stats.skipped_locations.append(str(err))
            continue
        if truncation == "reference" and max_prompt_length is not None:
            # run_dpo.py's filter: the prompt as the tokenizer counts it by default (special tokens included)
            if (n := len(tokenizer(prompt_text).input_ids)) >= max_prompt_length:
                stats.dropped_long_prompts += 1
                stats.dropped_locations.append(f"{where}: a prompt of {n} tokens, not below max_prompt_length "
                                               f"{max_prompt_length} (truncation: reference)")  # fmt: skip
                continue
        prompt_ids, answer_ids = (
            layout.prompt_tokens(tokenizer, prompt_text),
            layout.answer_tokens(tokenizer, answer_text),
        )
        fitted = fit_length(prompt_ids, answer_ids, max_length, max_prompt_length, truncation, stats)
        if fitted is None:
            stats.dropped_locations.append(f"{where}: {len(prompt_ids)} prompt + {len(answer_ids)} answer tokens, "
                                           f"over max_length {max_length} (truncation: {truncation})")  # fmt: skip
            continue
        rejected_ids = None
        if rejected_text is not None:
            rejected_ids = layout.answer_tokens(tokenizer, rejected_text)
            rejected_ids = rejected_ids[: max_length - len(fitted[0])] if max_length else rejected_ids
        examples.append(ChatExample(fitted[0], fitted[1], where, rejected_ids))
    stats.examples = len(examples)
    if stats.bad_rows_skipped:
        logger.warning(f"{source}: skipped {stats.bad_rows_skipped} bad rows; first: {stats.skipped_locations[0]}")
    if stats.dropped_locations:  # every one is named at debug level; the first always
        logger.warning(f"{source}: dropped {len(stats.dropped_locations)} rows over the length limits; first: "
                       f"{stats.dropped_locations[0]}")  # fmt: skip
        for where in stats.dropped_locations[1:]:
            logger.debug(f"dropped {where}")
    if not examples:
        first = stats.dropped_locations[:1] or stats.skipped_locations[:1]
        raise DataError(
            f"{source}: no usable examples ({stats.summary()})" + (f"; first: {first[0]}" if first else "")
        )
    return examples, stats


def load_examples_from_config(config, tokenizer) -> tuple[list[ChatExample], DataStats]:
    """``load_examples`` driven by an object with the config's data fields (a run config, or the
    ``sapo data audit`` arguments, which use the same names). Paired methods (DPO, ORPO) set
    ``rejected_field``; the others have none and read the real answer only."""
    return load_examples(
        config.dataset_name,
        tokenizer,
        split=config.dataset_split,
        field_name=config.dataset_field,
        rejected_field=getattr(config, "rejected_field", None),
        max_length=config.max_length,
        max_prompt_length=config.max_prompt_length,
        truncation=config.truncation,
        on_bad_row=config.on_bad_row,
        limit=getattr(config, "max_examples", None),
        layout=TokenLayout.from_config(config),
    )


def to_dataset(examples: list[ChatExample]):
    """A ``datasets.Dataset`` with the token columns TRL's preference trainers read."""
    import datasets

    columns = {
        "prompt_ids": [e.prompt_ids for e in examples],
        "chosen_ids": [e.answer_ids for e in examples],
    }
    if all(e.rejected_ids is not None for e in examples):
        columns["rejected_ids"] = [e.rejected_ids for e in examples]
    return datasets.Dataset.from_dict(columns)
