"""The real tokenizers of the paper's models, rebuilt from files that ship in PyPI wheels (for the stand-ins).

- LLaMA-3: the tiktoken BPE ``llama_models/llama3/tokenizer.model`` (llama-models wheel), converted by
  transformers' ``TikTokenConverter``, with Meta-Llama-3-8B's 256 special tokens (3.0's list, not 3.1's).
- Mistral-7B-v0.1: the sentencepiece model ``mistral_common/data/tokenizer.model.v1`` (mistral-common
  wheel), read from its protobuf here and built as a ``tokenizers`` byte-fallback BPE; transformers'
  ``LlamaTokenizer(vocab_file=...)`` silently builds a 3-token tokenizer from the same file.
Both wheels are downloaded, not installed (``requirements/standin-wheels.txt``): mistral-common installed
would route every Mistral tokenizer in transformers through itself and fail on its missing dependencies.
"""

from __future__ import annotations

import importlib.util
import os
import struct
from collections.abc import Iterable
from pathlib import Path

from sapo.errors import DataError

_LLAMA3_PATTERN = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*"
    r"|\s*[\r\n]+|\s+(?!\S)|\s+"
)
# transformers' "practically unlimited", as both hub tokenizer_config.json files store it.
_UNLIMITED = 1000000000000000019884624838656

# --------------------------------------------------------------------------- tokenizer files from wheels


# mistral-common must not be installed in the harness's environment, even with --no-deps:
# transformers then routes every Mistral tokenizer through it, and it fails to import without its
# dependencies (jsonschema, ...). So its wheel is downloaded, not installed, and read as a zip.
WHEELS_ENV = "SAPO_STANDIN_WHEELS"
# The versions are pinned in requirements/standin-wheels.txt (the one place): any downloaded version is read.
DOWNLOAD_HINT = "pip download --no-deps -d {folder} llama-models==0.3.0 mistral-common==1.13.1"


def wheels_dir() -> Path:
    """Where downloaded wheels are looked for: ``$SAPO_STANDIN_WHEELS``, else ``<sapo cache>/wheels``."""
    from sapo.wheels import wheels_dir as shared_wheels_dir

    return shared_wheels_dir(WHEELS_ENV)


def wheel_file(package: str, relative: str) -> Path:
    """A data file of ``package``: from the installed package, else from its wheel in ``wheels_dir()``.

    The package is located without importing it (its dependencies are not installed). From a
    wheel, the file is extracted once next to it.
    """
    from sapo.wheels import find_wheel, read_member

    spec = importlib.util.find_spec(package)
    if spec is not None and spec.submodule_search_locations:
        path = Path(list(spec.submodule_search_locations)[0]) / relative
        if path.is_file():
            return path
    member = f"{package}/{relative}"
    wheel = find_wheel(package.replace("_", "-"), None, wheels_dir())
    if wheel is None:
        raise DataError(f"the stand-in tokenizers need {member} from the {package} wheel, not found in "
                        f"{wheels_dir()}: {DOWNLOAD_HINT.format(folder=wheels_dir())}")  # fmt: skip
    target = wheels_dir() / wheel.stem / member
    if target.is_file():
        return target
    data = read_member(wheel, member)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_suffix(".part")
    tmp.write_bytes(data)
    os.replace(tmp, target)
    return target


def llama3_special_tokens() -> list[str]:
    """Meta-Llama-3-8B's 256 special tokens, ids 128000-128255 in order (3.0's list, not 3.1's)."""
    head = ["<|begin_of_text|>", "<|end_of_text|>"]
    head += [f"<|reserved_special_token_{i}|>" for i in range(4)]
    head += ["<|start_header_id|>", "<|end_header_id|>", "<|reserved_special_token_4|>", "<|eot_id|>"]
    return head + [f"<|reserved_special_token_{i}|>" for i in range(5, 251)]


def build_llama3_tokenizer():
    """LLaMA-3's fast tokenizer from the tiktoken ranks, laid out as Meta-Llama-3-8B's tokenizer.json."""
    from tokenizers import processors
    from transformers import PreTrainedTokenizerFast
    from transformers.convert_slow_tokenizer import TikTokenConverter

    specials = llama3_special_tokens()
    backend = TikTokenConverter(
        vocab_file=str(wheel_file("llama_models", "llama3/tokenizer.model")),
        pattern=_LLAMA3_PATTERN,
        extra_special_tokens=specials,
    ).converted()
    # Meta-Llama-3-8B prepends BOS in its post-processor (the ByteLevel part only fixes offsets).
    backend.post_processor = processors.Sequence(
        [
            processors.ByteLevel(add_prefix_space=True, trim_offsets=False, use_regex=True),
            processors.TemplateProcessing(
                single="<|begin_of_text|> $A",
                pair="<|begin_of_text|> $A <|begin_of_text|> $B:1",
                special_tokens=[("<|begin_of_text|>", 128000)],
            ),
        ]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=backend,
        bos_token="<|begin_of_text|>",
        eos_token="<|end_of_text|>",
        clean_up_tokenization_spaces=True,  # as the hub's tokenizer_config.json (decode joins " ," to ",")
        model_max_length=_UNLIMITED,
        model_input_names=["input_ids", "attention_mask"],
    )


def _varint(data: bytes, pos: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        byte = data[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        shift += 7
        if byte < 0x80:
            return value, pos


def _proto_fields(data: bytes) -> Iterable[tuple[int, int, object]]:
    """(field, wire type, value) of one protobuf message: the wire format, so no protobuf package is needed."""
    pos = 0
    while pos < len(data):
        key, pos = _varint(data, pos)
        field, wire = key >> 3, key & 7
        if wire == 0:
            value, pos = _varint(data, pos)
        elif wire == 1:
            value, pos = data[pos : pos + 8], pos + 8
        elif wire == 2:
            size, pos = _varint(data, pos)
            value, pos = data[pos : pos + size], pos + size
        elif wire == 5:
            value, pos = data[pos : pos + 4], pos + 4
        else:
            raise DataError(f"sentencepiece model: unsupported protobuf wire type {wire}")
        yield field, wire, value


def read_sentencepiece_model(path: str | Path) -> dict:
    """Pieces, model type and normalizer flags of a sentencepiece ``ModelProto`` file.

    Field numbers from sentencepiece_model.proto: ModelProto.pieces=1, trainer_spec=2,
    normalizer_spec=3; SentencePiece piece=1, score=2, type=3 (1 normal, 2 unknown, 3 control,
    6 byte); TrainerSpec model_type=3 (2 = BPE), byte_fallback=35; NormalizerSpec
    add_dummy_prefix=3, remove_extra_whitespaces=4.
    """
    pieces: list[tuple[str, float, int]] = []
    trainer: dict[int, object] = {}
    normalizer: dict[int, object] = {}
    for field, _, value in _proto_fields(Path(path).read_bytes()):
        if field == 1:
            piece, score, kind = "", 0.0, 1
            for f, _, v in _proto_fields(value):
                if f == 1:
                    piece = v.decode("utf-8")
                elif f == 2:
                    score = struct.unpack("<f", v)[0]
                elif f == 3:
                    kind = v
            pieces.append((piece, score, kind))
        elif field == 2:
            trainer = {f: v for f, _, v in _proto_fields(value)}
        elif field == 3:
            normalizer = {f: v for f, _, v in _proto_fields(value)}
    return {
        "pieces": pieces,
        "bpe": trainer.get(3, 1) == 2,
        "byte_fallback": bool(trainer.get(35, 0)),
        "add_dummy_prefix": bool(normalizer.get(3, 1)),
        "remove_extra_whitespaces": bool(normalizer.get(4, 1)),
    }


def build_mistral_tokenizer(chat_template: str | None = None, pad_token: str | None = None):
    """Mistral-7B-v0.1's fast tokenizer, built from the sentencepiece proto as its hub tokenizer.json is.

    Not via ``LlamaTokenizer(vocab_file=...)``: transformers 5.x builds a 3-token tokenizer from
    this file without complaint.
    """
    from tokenizers import AddedToken, Tokenizer, decoders, models, normalizers, processors
    from transformers import PreTrainedTokenizerFast
    from transformers.tokenization_utils_base import generate_merges

    path = wheel_file("mistral_common", "data/tokenizer.model.v1")
    proto = read_sentencepiece_model(path)
    if not (proto["bpe"] and proto["byte_fallback"] and proto["add_dummy_prefix"]):
        raise DataError(f"{path}: not the byte-fallback BPE sentencepiece model expected")
    pieces = proto["pieces"]
    vocab = {piece: i for i, (piece, _, _) in enumerate(pieces)}
    # Sentencepiece BPE merges by the id (score order) of the merged piece; control and byte
    # pieces are never merge results or parts.
    skip = {piece for piece, _, kind in pieces if kind != 1}
    merges = generate_merges(vocab, skip_tokens=skip)
    backend = Tokenizer(models.BPE(vocab=vocab, merges=merges, unk_token="<unk>", fuse_unk=True, byte_fallback=True))
    backend.normalizer = normalizers.Sequence([normalizers.Prepend("▁"), normalizers.Replace(" ", "▁")])
    backend.decoder = decoders.Sequence(
        [decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse(), decoders.Strip(" ", 1, 0)]
    )
    backend.add_special_tokens([AddedToken(t, normalized=False, special=True) for t in ("<unk>", "<s>", "</s>")])
    backend.post_processor = processors.TemplateProcessing(
        single="<s> $A", pair="<s> $A <s> $B:1", special_tokens=[("<s>", 1)]
    )
    kwargs = {"chat_template": chat_template} if chat_template else {}
    if pad_token:
        kwargs["pad_token"] = pad_token
    return PreTrainedTokenizerFast(
        tokenizer_object=backend,
        bos_token="<s>",
        eos_token="</s>",
        unk_token="<unk>",
        clean_up_tokenization_spaces=False,
        model_max_length=_UNLIMITED,
        model_input_names=["input_ids", "attention_mask"],
        **kwargs,
    )
