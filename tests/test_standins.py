"""Stand-ins for the paper's hub models and data sets: real tokenizers, real architectures, offline."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from sapo.errors import DataError
from sapo.reproduce import standin_tokenizers, standins

TEXTS = ["Hello world", "  two  spaces\nnew line\n\n", "digits 1234567 and 3.14", "naïve café — 日本語 🤖", "a\tb"]
# Sentencepiece 0.2.3's own ids on tokenizer.model.v1 (no BOS), measured once. Runs of spaces are left
# out: like the hub's tokenizer.json (no pre-tokenizer), ours merges "  " as one piece where sentencepiece
# splits it.
SPM_IDS = {
    "Hello world": [22557, 1526],
    "digits 1234567 and 3.14": [3968, 1046, 28705, 28740, 28750, 28770, 28781, 28782, 28784, 28787, 304, 28705]
    + [28770, 28723, 28740, 28781],
    "naïve café — 日本語 🤖": [1879, 28920, 333, 28345, 1040, 28705, 29142, 29119, 30321, 28705, 243, 162, 167, 153],
    "a\tb": [264, 12, 28726],
    "a\nb": [264, 13, 28726],
}


def _wheels_available() -> bool:
    try:
        standin_tokenizers.wheel_file("llama_models", "llama3/tokenizer.model")
        standin_tokenizers.wheel_file("mistral_common", "data/tokenizer.model.v1")
    except DataError:
        return False
    return True


# nox's tests session downloads the two wheels (requirements/standin-wheels.txt); CI must never skip these.
if not _wheels_available() and os.environ.get("CI"):
    raise RuntimeError("CI: the stand-in tokenizer wheels are missing; run the tests through `nox -s tests`")
pytestmark = pytest.mark.skipif(
    not _wheels_available(),
    reason="needs the llama-models and mistral-common wheels: pip download --no-deps -d $SAPO_STANDIN_WHEELS "
    "-r requirements/standin-wheels.txt",
)


@pytest.fixture(scope="module")
def hub(tmp_path_factory):
    """The stand-in cache, written once. huggingface_hub read HF_HOME at import, so every load
    below passes cache_dir explicitly; the subprocess test checks the plain HF_HOME route."""
    hf_home = tmp_path_factory.mktemp("standin_home")
    snapshots = standins.write_standin_hub(hf_home)
    return hf_home, snapshots


def _tokenizer(hub, name):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(name, cache_dir=hub[0] / "hub")


def test_llama3_token_ids(hub):
    tok = _tokenizer(hub, standins.LLAMA3)
    assert len(tok) == 128256
    assert tok("Hello world", add_special_tokens=False).input_ids == [9906, 1917]
    assert tok("Hello world").input_ids == [128000, 9906, 1917]
    assert (tok.bos_token, tok.bos_token_id) == ("<|begin_of_text|>", 128000)
    assert (tok.eos_token, tok.eos_token_id) == ("<|end_of_text|>", 128001)
    assert tok.convert_ids_to_tokens([128002, 128006, 128007, 128008, 128009, 128010, 128255]) == [
        "<|reserved_special_token_0|>",
        "<|start_header_id|>",
        "<|end_header_id|>",
        "<|reserved_special_token_4|>",
        "<|eot_id|>",
        "<|reserved_special_token_5|>",
        "<|reserved_special_token_250|>",
    ]
    assert tok.chat_template is None  # the base model ships none


def test_llama3_matches_tiktoken_and_round_trips(hub):
    tiktoken = pytest.importorskip("tiktoken")
    from tiktoken.load import load_tiktoken_bpe

    ranks = load_tiktoken_bpe(str(standin_tokenizers.wheel_file("llama_models", "llama3/tokenizer.model")))
    assert len(ranks) == 128000
    specials = {t: 128000 + i for i, t in enumerate(standin_tokenizers.llama3_special_tokens())}
    reference = tiktoken.Encoding(
        "llama3", pat_str=standin_tokenizers._LLAMA3_PATTERN, mergeable_ranks=ranks, special_tokens=specials
    )
    tok = _tokenizer(hub, standins.LLAMA3)
    for text in TEXTS + ["Don't you're", "<|eot_id|> inside"]:
        ids = tok(text, add_special_tokens=False).input_ids
        assert ids == reference.encode(text, allowed_special="all"), text
        assert tok.decode(ids) == text


def test_mistral_token_ids_and_layout(hub):
    tok = _tokenizer(hub, standins.MISTRAL)
    assert len(tok) == 32000
    assert tok("Hello world").input_ids == [1, 22557, 1526]
    assert (tok.bos_token, tok.bos_token_id, tok.eos_token, tok.eos_token_id) == ("<s>", 1, "</s>", 2)
    assert (tok.unk_token, tok.unk_token_id) == ("<unk>", 0)
    assert tok.convert_ids_to_tokens([3, 13, 258]) == ["<0x00>", "<0x0A>", "<0xFF>"]
    for text in TEXTS:
        ids = tok(text).input_ids
        assert ids[0] == 1 and 2 not in ids  # BOS added, EOS not
        assert tok.decode(ids, skip_special_tokens=True) == text, text
    for text, ids in SPM_IDS.items():
        assert tok(text, add_special_tokens=False).input_ids == ids, text


def test_mistral_matches_sentencepiece(hub):
    spm = pytest.importorskip("sentencepiece")
    processor = spm.SentencePieceProcessor(
        model_file=str(standin_tokenizers.wheel_file("mistral_common", "data/tokenizer.model.v1"))
    )
    tok = _tokenizer(hub, standins.MISTRAL)
    for text in SPM_IDS:
        assert tok(text, add_special_tokens=False).input_ids == processor.encode(text), text


def test_zephyr_sft_has_the_zephyr_template(hub):
    from sapo.chat import resolve_chat_template

    tok = _tokenizer(hub, standins.ZEPHYR_SFT)
    assert tok.chat_template == resolve_chat_template("zephyr")
    assert tok("Hello world").input_ids == [1, 22557, 1526]
    text = tok.apply_chat_template([{"role": "user", "content": "Hi"}], tokenize=False, add_generation_prompt=True)
    assert text == "<|user|>\nHi</s>\n<|assistant|>\n"
    assert tok.pad_token_id == 2


@pytest.mark.parametrize(
    ("name", "cls", "vocab"),
    [
        (standins.LLAMA3, "LlamaForCausalLM", 128256),
        (standins.MISTRAL, "MistralForCausalLM", 32000),
        (standins.ZEPHYR_SFT, "MistralForCausalLM", 32000),
    ],
)
def test_models_load_and_run(hub, name, cls, vocab):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(name, cache_dir=hub[0] / "hub", dtype=torch.float32)
    assert type(model).__name__ == cls
    assert model.config.vocab_size == vocab and not model.config.tie_word_embeddings
    assert model.config.sapo_standin == standins.STANDIN_NOTE
    if name == standins.LLAMA3:
        assert model.config.rope_parameters["rope_theta"] == 500000.0
        assert (model.config.bos_token_id, model.config.eos_token_id) == (128000, 128001)
    else:
        assert model.config.sliding_window == 4096
        assert (model.config.bos_token_id, model.config.eos_token_id) == (1, 2)
    ids = _tokenizer(hub, name)("Hello world", return_tensors="pt").input_ids
    with torch.no_grad():
        logits = model(ids).logits
    assert logits.shape == (1, ids.shape[1], vocab) and torch.isfinite(logits).all()


def test_snapshot_layout(hub):
    from huggingface_hub import snapshot_download

    hf_home, snapshots = hub
    for name, snapshot in snapshots.items():
        kind = "model" if name in standins.MODEL_NAMES else "dataset"
        got = snapshot_download(name, repo_type=kind, cache_dir=hf_home / "hub", local_files_only=True)
        assert os.path.samefile(got, snapshot)
        repo = snapshot.parent.parent
        assert (repo / "refs" / "main").read_text() == snapshot.name
        assert "random weights" in (snapshot / "README.md").read_text() or kind == "dataset"
        assert "Stand-in" in (snapshot / "README.md").read_text()
        assert all(p.is_symlink() and p.resolve().parent == repo / "blobs" for p in snapshot.rglob("*") if p.is_file())


def test_datasets_load_by_name(hub):
    import datasets

    cache = str(hub[0] / "datasets")
    capybara = datasets.load_dataset(standins.CAPYBARA, split="train", cache_dir=cache)
    assert {"chosen", "rejected", "prompt", "rating_chosen", "rating_rejected", "source"} <= set(capybara.column_names)
    row = capybara[0]
    assert [m["role"] for m in row["chosen"]] == ["user", "assistant"] and row["chosen"][0] == row["rejected"][0]
    deita = datasets.load_dataset(standins.DEITA, split="train_sft", cache_dir=cache)
    assert set(deita.column_names) == {"prompt", "prompt_id", "messages"}
    assert deita[0]["messages"][-1]["role"] == "assistant"
    assert len(datasets.load_dataset(standins.DEITA, split="test_sft", cache_dir=cache)) > 0


def test_plain_hf_home_route(hub):
    """What a user does: export HF_HOME and HF_HUB_OFFLINE, then load by name with no extra argument."""
    code = (
        "import json, datasets, transformers\n"
        "tok = transformers.AutoTokenizer.from_pretrained('meta-llama/Meta-Llama-3-8B')\n"
        "model = transformers.AutoModelForCausalLM.from_pretrained('mistralai/Mistral-7B-v0.1')\n"
        "rows = datasets.load_dataset('argilla/distilabel-capybara-dpo-7k-binarized', split='train')\n"
        "print(json.dumps([tok('Hello world').input_ids, type(model).__name__, rows.num_rows]))\n"
    )
    env = {**os.environ, "HF_HOME": str(hub[0]), "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert json.loads(done.stdout.strip().splitlines()[-1]) == [[128000, 9906, 1917], "MistralForCausalLM", 400]


def test_eval_of_a_hub_named_base_model_with_a_chat_template(hub, tmp_path, embedded_model_dir):
    """`sapo eval meta-llama/Meta-Llama-3-8B --chat-template chatml` on the stand-in cache: one results.json holds
    IFEval (lm-eval, which gets the template through a tokenizer folder) and MT-Bench, with revision and weights."""
    out = tmp_path / "eval"
    env = {**os.environ, "HF_HOME": str(hub[0]), "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    argv = [sys.executable, "-m", "sapo.cli", "eval", standins.LLAMA3, "--suite", "ifeval,mtbench", "--data",
            "fixtures", "--judge", "local", "--local-judge-model", str(embedded_model_dir), "--chat-template",
            "chatml", "--max-new-tokens", "4", "--local-judge-max-tokens", "4", "--output", str(out)]  # fmt: skip
    done = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    body = json.loads((out / "results.json").read_text())
    assert set(body["benchmarks"]) == {"ifeval", "mtbench"} and "skipped" not in body["benchmarks"]["ifeval"]
    snapshot = hub[1][standins.LLAMA3]
    assert body["model"]["repo_id"] == standins.LLAMA3 and body["model"]["revision"] == Path(snapshot).name
    assert body["model"]["weights_sha256"] is not None
    lm_eval_tokenizer = json.loads((out / "lm_eval_model" / "tokenizer_config.json").read_text())
    template = lm_eval_tokenizer.get("chat_template") or (out / "lm_eval_model" / "chat_template.jinja").read_text()
    assert "<|im_start|>" in template  # IFEval was prompted with ChatML, not a template-less base model


def _recipe(path: str, **overrides):
    from sapo.train.cli import parse_recipe

    return parse_recipe(path, [x for k, v in overrides.items() for x in (f"--{k}", str(v))])[1]


def test_llama3_chatml_turn_tokens_are_special(hub, monkeypatch):
    """chat_format: chatml (the reference's setup_chat_format) on the base LLaMA-3 vocabulary: each <|im_end|> is
    one special token, the EOS; without it the markers are plain text and no answer holds an EOS."""
    from sapo.train.cli import run_tokenizer
    from sapo.train.data import load_examples_from_config

    monkeypatch.setenv("HF_HUB_CACHE", str(hub[0] / "hub"))
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_CACHE", str(hub[0] / "hub"))
    monkeypatch.setattr("datasets.config.HF_DATASETS_CACHE", str(hub[0] / "datasets"))
    config = _recipe("recipes/paper/llama-3-8b/sapo-orpo/config_full.yaml", max_examples=3, output_dir="x")
    tok = run_tokenizer(config)
    assert len(tok) == 128258 and (tok.bos_token_id, tok.eos_token_id, tok.pad_token_id) == (128256, 128257, 128257)
    examples, _ = load_examples_from_config(config, tok)
    for example in examples:
        ids = example.prompt_ids + example.answer_ids
        text = tok.decode(ids)
        turns = text.count("<|im_start|>")
        # one <|im_end|> per turn, each a single token, plus the reference's extra EOS after the answer
        assert ids.count(128257) == turns + 1 == text.count("<|im_end|>")
        assert example.answer_ids[-3:] == [128257, 198, 128257]  # "<|im_end|>", "\n", EOS
        assert 128000 not in ids  # prompt_bos: false
    plain = _recipe("recipes/paper/llama-3-8b/sapo-orpo/config_full.yaml", max_examples=3, output_dir="x")
    plain.chat_format = None
    plain_tok = run_tokenizer(plain)
    plain_ids = load_examples_from_config(plain, plain_tok)[0][0].answer_ids
    assert len(plain_tok) == 128256 and "<|im_end|>" in plain_tok.decode(plain_ids)
    assert plain_ids.count(plain_tok.eos_token_id) == 1  # only the appended one: the turn's end is text


def test_llama3_chatml_model_resized_and_segment_can_end_early(hub):
    """After fit_embeddings the stand-in can emit <|im_end|> (id 128257, beyond the base vocabulary) and a SAPO
    segment stops there; the SFT checkpoint it saves loads with plain from_pretrained and keeps the ids."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from sapo.chat import fit_embeddings, resolve_chat_template, setup_chat_format
    from sapo.generation import sample_continuations, stop_token_ids
    from sapo.train.segment import splice

    tok = _tokenizer(hub, standins.LLAMA3)
    assert setup_chat_format(tok, resolve_chat_template("chatml"))
    assert not setup_chat_format(tok, resolve_chat_template("chatml"))  # a second call adds nothing
    model = AutoModelForCausalLM.from_pretrained(standins.LLAMA3, cache_dir=hub[0] / "hub", dtype=torch.float32)
    old_rows = model.get_input_embeddings().weight.detach().clone()
    fit_embeddings(model, tok)
    rows = model.get_input_embeddings().weight
    assert rows.shape[0] == model.get_output_embeddings().weight.shape[0] == 128258
    assert torch.equal(rows[:128256], old_rows)
    assert model.generation_config.eos_token_id == 128257 and model.config.pad_token_id == 128257
    eos, pad = stop_token_ids(model, tok)
    assert 128257 in eos
    with torch.no_grad():  # make <|im_end|> the likeliest next token everywhere
        model.get_output_embeddings().weight[128257] = 50 * model.model.norm.weight.sign()
    answer = tok("The sky is blue because of Rayleigh scattering.", add_special_tokens=False).input_ids
    prompt = tok("<|im_start|>user\nWhy?<|im_end|>\n", add_special_tokens=False).input_ids
    generated = sample_continuations(
        model,
        [prompt + answer[:2]],
        [5],
        pad_token_id=pad,
        eos_token_id=eos,
        temperature=0.7,
        top_k=50,
        top_p=0.95,
        generator=torch.Generator().manual_seed(0),
    )
    rejected, ended_early, n = splice(answer, 2, 5, generated[0], eos)
    assert ended_early and n < 5 and 128257 in rejected
    folder = hub[0] / "resized"
    model.save_pretrained(folder)
    tok.save_pretrained(folder)
    again = AutoModelForCausalLM.from_pretrained(folder)
    assert again.config.vocab_size == 128258 and again.generation_config.eos_token_id == 128257
    assert AutoTokenizer.from_pretrained(folder)("<|im_end|>", add_special_tokens=False).input_ids == [128257]


@pytest.fixture
def hub_cache(hub, monkeypatch):
    """Route this process's hub and datasets loads to the stand-in cache (both libraries read HF_HOME at import)."""
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_CACHE", str(hub[0] / "hub"))
    monkeypatch.setattr("datasets.config.HF_DATASETS_CACHE", str(hub[0] / "datasets"))
    return hub


def test_sft_rows_start_with_the_bos_llama3_prepends_after_chat_format(hub_cache):
    """prompt_bos: true after chat_format: the tokenizer still prepends <|begin_of_text|> (128000) while its
    bos_token names <|im_start|>; the SFT row starts with both, as the reference's SFTTrainer tokenized it."""
    from sapo.train.cli import run_tokenizer
    from sapo.train.data import load_examples_from_config

    config = _recipe("recipes/paper/llama-3-8b/sft/config_full.yaml", max_examples=2, output_dir="x")
    tok = run_tokenizer(config)
    example = load_examples_from_config(config, tok)[0][0]
    assert example.prompt_ids[:2] == [128000, 128256] and example.prompt_ids.count(128000) == 1


def test_prefetch_finds_every_paper_need_in_a_filled_cache(hub_cache, capsys):
    """Offline, `sapo prefetch` of every paper recipe finds the three models and two data sets in the cache (runs
    that start from another run's folder need nothing); a need the cache lacks is named."""
    from sapo.errors import SapoError
    from sapo.prefetch import Need, fetch_all
    from sapo.train.prefetch import recipe_needs

    recipes = sorted(Path("recipes/paper").glob("*/*/config_full.yaml"))
    needs = [need for recipe in recipes for need in recipe_needs(recipe)]
    rows = fetch_all(needs)
    assert sorted((r["kind"], r["name"]) for r in rows) == sorted(
        [("model", n) for n in standins.MODEL_NAMES]
        + [("dataset", f"{standins.CAPYBARA} [train]"), ("dataset", f"{standins.DEITA} [train_sft]")]
    )
    assert all(r["bytes"] > 0 for r in rows) and "total:" in capsys.readouterr().out
    with pytest.raises(SapoError, match="model nobody/absent"):
        fetch_all(recipe_needs_for("nobody/absent", tmp=Path(hub_cache[0])))
    fetch_all([Need("model", "x", lambda: pytest.fail("fetched"), "why")], dry_run=True)


def recipe_needs_for(model: str, tmp: Path):
    from sapo.train.prefetch import recipe_needs

    recipe = tmp / "absent.yaml"
    recipe.write_text(f"method: sft\nmodel_name_or_path: {model}\ndataset_name: embedded\noutput_dir: x\n")
    return recipe_needs(recipe)


def test_lm_eval_prompt_lacks_the_bos_after_chat_format(hub, tmp_path):
    """What each benchmark feeds a ChatML LLaMA-3 (sapo eval --show-prompts, through lm-eval's own HFLM): MT-Bench
    and AlpacaEval put <|begin_of_text|> first, lm-eval does not (its text starts with the bos_token string)."""
    from transformers import AutoModelForCausalLM

    from sapo.chat import fit_embeddings, resolve_chat_template, setup_chat_format
    from sapo.evaluate.generation import load_for_eval
    from sapo.evaluate.prompt_audit import benchmark_prompts

    tok = _tokenizer(hub, standins.LLAMA3)
    setup_chat_format(tok, resolve_chat_template("chatml"))
    model = AutoModelForCausalLM.from_pretrained(standins.LLAMA3, cache_dir=hub[0] / "hub")
    fit_embeddings(model, tok)
    model.save_pretrained(tmp_path / "m")
    tok.save_pretrained(tmp_path / "m")
    (row,) = benchmark_prompts(load_for_eval(str(tmp_path / "m")), [[{"role": "user", "content": "Hi"}]])
    assert row["mtbench"][:2] == [128000, 128256] and row["bos_id"] == 128000
    assert row["lm_eval"] == row["mtbench"][1:]
    assert row["tokens"]["lm_eval"][-3:] == ["<|im_start|>", "assistant", "Ċ"]
