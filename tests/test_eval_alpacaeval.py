"""AlpacaEval through alpaca_eval 0.6.6 with a scripted judge on a real local HTTP server.

The judge reads the prompt alpaca_eval wrote, finds which slot ("m" or "M") holds our model's
output, and gives it a fixed probability per instruction (P_MODEL) in its top-5 logprobs. The
weighted annotator's preference is then exactly that probability, so the win rate is known by
hand: mean(P_MODEL) * 100.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from helpers import Killed, kill_at_publish, kill_before_meta

from sapo.errors import DataError, RecipeError
from sapo.evaluate.alpacaeval import FIXTURES_DIR, HUB_EVAL_SET
from sapo.evaluate.items import read_items
from sapo.evaluate.judge import Judge, JudgeSettings
from sapo.evaluate.judge_server import JudgeServer, ServerError
from sapo.evaluate.uncertainty import Z95, ratio

# The shipped fixture eval set, read as plain JSON rather than through the loader under test.
ALPACA_FIXTURES = json.loads((FIXTURES_DIR / HUB_EVAL_SET).read_text(encoding="utf-8"))
INSTRUCTIONS = [row["instruction"] for row in ALPACA_FIXTURES]
REFERENCES = [row["output"] for row in ALPACA_FIXTURES]
P_MODEL = [0.9, 0.8, 0.7, 0.3, 0.2, 0.6]  # the judge's probability that our model's output is better
WIN_RATE = sum(P_MODEL) / len(P_MODEL) * 100  # 58.33...


def _token(text: str, logprob: float) -> dict:
    return {"token": text, "logprob": logprob, "bytes": list(text.encode())}


def scripted_judge(messages: list[dict], params: dict) -> tuple[str, list]:
    """A weighted_alpaca_eval_gpt4_turbo-style answer: one token, its top logprobs."""
    assert [m["role"] for m in messages] == ["system", "user"]  # alpaca_eval's ChatML prompt, as messages
    assert params["max_tokens"] == 1 and params["logprobs"] and params["top_logprobs"] == 5
    user = messages[1]["content"]
    i = next(k for k, text in enumerate(INSTRUCTIONS) if text in user)
    shown_first = user.split('"model_identifier": "M"')[0]  # alpaca_eval shuffles which output is "m"
    p_m = 1 - P_MODEL[i] if REFERENCES[i] in shown_first else P_MODEL[i]
    top = sorted([_token("m", math.log(p_m)), _token("M", math.log(1 - p_m)), _token("Both", -15.0)],
                 key=lambda t: -t["logprob"])  # fmt: skip
    return top[0]["token"], [{**top[0], "top_logprobs": top}]


class FailingFirst:
    """The scripted judge behind ``failures`` HTTP errors (429s, then 500s)."""

    def __init__(self, failures: int):
        self.failures = failures

    def __call__(self, messages, params):
        if self.failures > 0:
            self.failures -= 1
            raise ServerError(429 if self.failures % 2 else 500, "scripted failure")
        return scripted_judge(messages, params)


@pytest.fixture(scope="module")
def loaded(tiny_model_dir):
    from sapo.evaluate.generation import load_for_eval

    return load_for_eval(str(tiny_model_dir))


def _judge(server: JudgeServer, cache: Path) -> Judge:
    return Judge(JudgeSettings(model="scripted-judge", base_url=server.base_url), cache)


def _run(loaded, judge, out: Path, **kwargs) -> dict:
    from sapo.evaluate.alpacaeval import run_alpacaeval

    return run_alpacaeval(loaded, judge, out, **{"data": "fixtures", "max_new_tokens": 8, "fingerprint": "tiny",
                                                 **kwargs})  # fmt: skip


def test_win_rate_matches_the_judges_rule_and_alpaca_eval_reads_our_files(loaded, tmp_path):
    from alpaca_eval.completion_parsers import logprob_parser
    from alpaca_eval.metrics import get_winrate
    from alpaca_eval.utils import load_or_convert_to_dataframe

    with JudgeServer(scripted_judge, "scripted-judge") as server:
        result = _run(loaded, _judge(server, tmp_path / "judge_cache.jsonl"), tmp_path)
        assert server.requests == len(INSTRUCTIONS)
    metrics = result["metrics"]
    assert metrics["win_rate"] == pytest.approx(WIN_RATE)
    assert metrics["n_total"] == len(INSTRUCTIONS) and metrics["unparsed"] == 0
    assert (result["data"], result["instructions"], result["complete"]) == ("fixtures", 6, False)
    assert result["annotator"] == "weighted_alpaca_eval_gpt4_turbo" and result["judge"]["model"] == "scripted-judge"
    # Offline there is no df_gamed.csv: LC is the minimal GLM, and never under the official name.
    assert metrics["lc_variant"] == "lc_minimal" and "lc_minimal_winrate" in metrics
    assert "length_controlled_winrate" not in metrics and result["lc"]["df_gamed"] is None

    folder = tmp_path / "alpacaeval"
    outputs = load_or_convert_to_dataframe(folder / "model_outputs.json")
    assert list(outputs.columns) == ["instruction", "output", "generator", "dataset"]
    assert list(outputs["instruction"]) == INSTRUCTIONS and set(outputs["generator"]) == {loaded.model_id} == {"tiny"}
    assert metrics["avg_length"] == int(outputs["output"].str.len().mean())  # characters, as alpaca_eval reports
    annotations = pd.read_json(folder / "annotations.json")
    assert get_winrate(annotations)["win_rate"] == pytest.approx(WIN_RATE)
    items = read_items(result["items"], "alpacaeval", tmp_path)["metrics"]
    assert ratio(items["win_rate"]) == pytest.approx(metrics["win_rate"])
    assert int(ratio(items["avg_length"])) == metrics["avg_length"]
    uncertainty = result["uncertainty"]
    assert uncertainty["win_rate"]["stderr"] > 0 and "instructions" in uncertainty["win_rate"]["method"]
    lc = uncertainty["lc_minimal_winrate"]  # alpaca_eval's own standard error, a normal interval
    assert lc["stderr"] == pytest.approx(metrics["lc_minimal_standard_error"])
    assert lc["ci95"][1] - lc["ci95"][0] == pytest.approx(2 * Z95 * lc["stderr"])
    for row in annotations.to_dict("records"):  # the stored raw completions parse back to the preferences
        (p_first,) = logprob_parser(row["preference_raw_completion"], "m", ["m", "M"], is_binarize=False)
        i = INSTRUCTIONS.index(row["instruction"])
        assert row["preference"] == pytest.approx(1 + P_MODEL[i])
        assert p_first == pytest.approx(row["preference"]) or p_first == pytest.approx(3 - row["preference"])
    assert "leaderboard.csv" in {p.name for p in folder.iterdir()}


def test_judge_errors_are_retried_and_the_result_is_complete(loaded, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # a relative output folder, as `sapo reproduce` passes it
    with JudgeServer(FailingFirst(3), "scripted-judge") as server:
        result = _run(loaded, _judge(server, tmp_path / "judge_cache.jsonl"), Path("relative-out"))
        assert server.requests == len(INSTRUCTIONS) + 3  # each failure retried once, nothing else sent
    assert result["metrics"]["win_rate"] == pytest.approx(WIN_RATE)
    assert result["metrics"]["n_total"] == len(INSTRUCTIONS)


def test_rerun_sends_no_request_twice(loaded, tmp_path):
    cache = tmp_path / "judge_cache.jsonl"
    with JudgeServer(scripted_judge, "scripted-judge") as server:
        _run(loaded, _judge(server, cache), tmp_path, limit=3)  # a run cut short after three instructions
        assert server.requests == 3
        answers = json.loads((tmp_path / "alpacaeval" / "model_outputs.json").read_text())
        full = _run(loaded, _judge(server, cache), tmp_path)
        assert server.requests == len(INSTRUCTIONS)  # only the three missing ones were asked
        rows = json.loads((tmp_path / "alpacaeval" / "model_outputs.json").read_text())
        assert rows[:3] == answers  # earlier outputs are kept, not regenerated
        for name in ("annotations.json", "leaderboard.csv"):  # results lost, judge cache kept
            (tmp_path / "alpacaeval" / name).unlink()
        judge = _judge(server, cache)
        again = _run(loaded, judge, tmp_path)
        assert server.requests == len(INSTRUCTIONS) and judge.api_calls == 0
    assert again["metrics"] == full["metrics"]
    assert full["metrics"]["win_rate"] == pytest.approx(WIN_RATE)


def test_outputs_survive_a_kill_a_cut_file_and_a_stale_meta(loaded, tmp_path, monkeypatch):
    """model_outputs.json is replaced whole (a kill mid-write leaves the previous file); a file cut short anyway
    (a copy, a full disk) is answered again instead of crashing the rerun; outputs written just before a kill
    are never reused under the settings of the run before."""
    import sapo.evaluate.alpacaeval as alpacaeval
    import sapo.evaluate.generation as generation

    asked = []
    real_generate = generation.generate_chat
    monkeypatch.setattr(generation, "generate_chat", lambda loaded, convs, **kw: asked.append(len(convs))
                        or real_generate(loaded, convs, **kw))  # fmt: skip
    path = tmp_path / "model_outputs.json"
    made_with = {"max_new_tokens": 8}

    def generate(rows, made_with=made_with):
        return alpacaeval.generate_outputs(loaded, rows, path, made_with, max_new_tokens=made_with["max_new_tokens"],
                                           batch_size=8, seed=0)  # fmt: skip

    generate(ALPACA_FIXTURES[:3])
    first = path.read_bytes()

    with monkeypatch.context() as patch:  # killed while publishing the 6-row file
        kill_at_publish(patch)
        with pytest.raises(Killed):
            generate(ALPACA_FIXTURES)
    assert path.read_bytes() == first and len(json.loads(first)) == 3  # the previous file, whole
    assert [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")] == []

    path.write_bytes(first[: len(first) // 2])  # cut short by something else
    asked.clear()
    assert len(generate(ALPACA_FIXTURES)) == len(INSTRUCTIONS) and sum(asked) == len(INSTRUCTIONS)
    asked.clear()
    assert generate(ALPACA_FIXTURES) and asked == []  # whole and made the same way: reused

    with monkeypatch.context() as patch:  # another budget, killed between its outputs and its meta
        kill_before_meta(patch, alpacaeval)
        with pytest.raises(Killed):
            generate(ALPACA_FIXTURES[:3], {"max_new_tokens": 2})
    asked.clear()
    generate(ALPACA_FIXTURES)  # the first budget again
    assert sum(asked) == len(INSTRUCTIONS)  # the 2-token outputs were not taken for 8-token ones


def test_outputs_made_with_cpu_fast_decoding_are_never_reused_without_it(loaded, tmp_path, monkeypatch):
    import dataclasses

    import sapo.evaluate.generation as generation

    asked = []
    real_generate = generation.generate_chat
    monkeypatch.setattr(generation, "generate_chat", lambda model, convs, **kw: asked.append(model.weight_major)
                        or real_generate(model, convs, **kw))  # fmt: skip
    fast = dataclasses.replace(loaded, weight_major=True)
    with JudgeServer(scripted_judge, "scripted-judge") as server:
        for model, answered in ((loaded, {False}), (fast, {True}), (fast, set()), (loaded, {False})):
            asked.clear()  # default, then --cpu-fast-decoding (not the default's), again (its own), default again
            _run(model, _judge(server, tmp_path / "judge_cache.jsonl"), tmp_path, limit=2)
            assert set(asked) == answered


def test_judge_repeats_give_each_repeats_win_rate_and_their_spread(loaded, tmp_path):
    """A judge that reverses every preference on its second round: win rates p and 100 - p, so by hand the mean
    is 50 and the sample standard deviation |2p - 100| / sqrt(2); each repeat is asked once."""
    calls = {"n": 0}

    def reversing(messages, params):
        calls["n"] += 1
        text, top = scripted_judge(messages, params)
        if calls["n"] <= len(INSTRUCTIONS):
            return text, top
        flip = {"m": "M", "M": "m", "Both": "Both"}
        swapped = [{**t, "token": flip[t["token"]]} for t in top[0]["top_logprobs"]]
        return swapped[0]["token"], [{**swapped[0], "top_logprobs": swapped}]

    cache = tmp_path / "judge_cache.jsonl"
    with JudgeServer(reversing, "scripted-judge") as server:
        result = _run(loaded, _judge(server, cache), tmp_path, judge_repeats=2)
        assert server.requests == 2 * len(INSTRUCTIONS)
    spread = result["judge_repeats"]["metrics"]["win_rate"]
    assert spread["by_repeat"] == pytest.approx([WIN_RATE, 100 - WIN_RATE])
    assert result["metrics"]["win_rate"] == pytest.approx(WIN_RATE)  # repeat 0 is the reported number
    assert spread["mean"] == pytest.approx(50.0) and spread["sd"] == pytest.approx(abs(2 * WIN_RATE - 100) / 2**0.5)
    assert (tmp_path / "alpacaeval/repeat-1/annotations.json").is_file()
    with JudgeServer(reversing, "scripted-judge") as server:
        _run(loaded, _judge(server, cache), tmp_path, judge_repeats=2)
        assert server.requests == 0


def test_official_lc_when_df_gamed_is_beside_the_data(loaded, tmp_path):
    from sapo.evaluate.alpacaeval import run_alpacaeval

    data = tmp_path / "data"
    data.mkdir()
    rows = [{**row, "generator": "gpt4_1106_preview", "dataset": "helpful_base"} for row in ALPACA_FIXTURES]
    (data / "model_outputs.json").write_text(json.dumps(rows))
    _df_gamed(data / "df_gamed.csv", len(rows))
    with JudgeServer(scripted_judge, "scripted-judge") as server:
        result = run_alpacaeval(loaded, _judge(server, tmp_path / "judge_cache.jsonl"), tmp_path, data=str(data),
                                max_new_tokens=8)  # fmt: skip
    assert result["data"] == str(data / "model_outputs.json") and result["complete"] is False
    assert result["metrics"]["win_rate"] == pytest.approx(WIN_RATE)
    metrics = result["metrics"]
    assert metrics["lc_variant"] == "length_controlled_v1" and "length_controlled_winrate" in metrics
    assert result["lc"]["df_gamed"] == str(data / "df_gamed.csv")


def _synthetic_annotations(n: int = 40, seed: int = 0) -> list[dict]:
    """Judgments that favour the longer output, so length control has something to remove."""
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n):
        len_ref, len_model = rng.integers(50, 600, size=2)
        p_model = 1 / (1 + np.exp(-(len_model - len_ref) / 150 + 0.5)) * 0.9 + rng.uniform(0, 0.1)
        rows.append({"instruction": f"q{i}", "output_1": "r" * len_ref, "output_2": "m" * len_model,
                     "generator_1": "reference", "generator_2": "model", "annotator": "scripted",
                     "preference": 1 + float(p_model)})  # fmt: skip
    return rows


def _df_gamed(path: Path, n: int, seed: int = 1) -> Path:
    """A df_gamed.csv with the hub file's columns (two length-gamed baselines per instruction)."""
    rng = np.random.default_rng(seed)
    difficulty = rng.normal(size=n)
    frames = [pd.DataFrame({"model": model, "index": range(n), "preference": rng.uniform(size=n),
                            "std_delta_len": shift + rng.normal(size=n), "instruction_difficulty": difficulty,
                            "not_gamed_baseline": False}) for model, shift in (("verbose", 1.0), ("concise", -1.0))]  # fmt: skip
    pd.concat(frames).to_csv(path, index=False)
    return path


def test_lc_minimal_offline_equals_alpaca_evals_minimal_and_official_needs_df_gamed(tmp_path):
    from unittest import mock

    from alpaca_eval.metrics import glm_winrate

    from sapo.evaluate.alpacaeval import lc_metric

    annotations = _synthetic_annotations()
    gamed = _df_gamed(tmp_path / "df_gamed.csv", len(annotations))
    minimal = lc_metric(None, official=False)(annotations)
    with mock.patch.object(glm_winrate, "hf_hub_download", lambda **_: str(gamed)):  # as if the hub answered
        upstream = glm_winrate.get_length_controlled_winrate(annotations, glm_name="length_controlled_minimal",
                                                             save_weights_dir=None)  # fmt: skip
    assert minimal["lc_minimal_winrate"] == pytest.approx(upstream["length_controlled_winrate"])
    assert minimal["lc_minimal_winrate"] != pytest.approx(minimal["win_rate"])  # length control did something
    assert "length_controlled_winrate" not in minimal

    official = lc_metric(gamed, official=True)(annotations)
    assert official["lc_variant"] == "length_controlled_v1" and "lc_minimal_winrate" not in official
    assert official["win_rate"] == pytest.approx(minimal["win_rate"])

    unparsed = [{**row, "preference": None} for row in annotations[:4]]  # no "m"/"M" in the judge's top logprobs
    nothing = lc_metric(None, official=False)(unparsed)
    assert nothing["n_total"] == 0 and math.isnan(nothing["win_rate"]) and nothing["lc_variant"] is None


def test_fixture_file_has_the_eval_set_format():
    """alpaca_eval_gpt4_baseline.json's rows: four strings each, instructions unique (outputs are paired by them)."""
    assert sorted(p.name for p in FIXTURES_DIR.iterdir()) == [HUB_EVAL_SET]
    assert isinstance(ALPACA_FIXTURES, list) and len(ALPACA_FIXTURES) == 6
    for row in ALPACA_FIXTURES:
        assert list(row) == ["instruction", "output", "generator", "dataset"], row
        assert all(isinstance(value, str) and value for value in row.values()), row
        assert (row["generator"], row["dataset"]) == ("fixtures-reference", "fixtures")
    assert len({row["instruction"] for row in ALPACA_FIXTURES}) == len(ALPACA_FIXTURES)


def test_data_sources_and_bad_input_are_named(tmp_path, caplog):
    from sapo.evaluate.alpacaeval import load_alpacaeval_data, write_annotator_config

    with caplog.at_level("WARNING", logger="sapo"):
        auto = load_alpacaeval_data("auto")  # conftest sets HF_HUB_OFFLINE: fixtures, said out loud
    assert auto.source == "fixtures" and len(auto.rows) == len(ALPACA_FIXTURES)
    assert "FIXTURES" in caplog.text
    assert auto.rows == ALPACA_FIXTURES and auto.df_gamed is None  # the file as is, in its order; never official LC

    rows = [{**row, "generator": "gpt4_1106_preview", "dataset": "helpful_base"} for row in ALPACA_FIXTURES]
    (tmp_path / "model_outputs.json").write_text(json.dumps(rows))
    _df_gamed(tmp_path / "df_gamed.csv", len(rows))
    given = load_alpacaeval_data(str(tmp_path))  # a folder: its model_outputs.json, df_gamed.csv beside it
    assert given.rows == rows and given.df_gamed == tmp_path / "df_gamed.csv"

    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps([rows[0], {"instruction": "x"}]))
    with pytest.raises(DataError, match=r"bad\.json: row 1: field 'output'"):
        load_alpacaeval_data(str(bad))
    bad.write_text(json.dumps([rows[0], rows[0]]))
    with pytest.raises(DataError, match=r"row 1: field 'instruction' repeats row 0"):
        load_alpacaeval_data(str(bad))

    judge = Judge(JudgeSettings(model="m"), tmp_path / "cache.jsonl")
    with pytest.raises(RecipeError, match="alpaca_eval_gpt4_turbo_fn.*tool"):  # tools would be dropped silently
        write_annotator_config("alpaca_eval_gpt4_turbo_fn", judge, tmp_path)


def test_generate_chat_refuses_batch_size_0(loaded):
    """The CLI range-checks --batch-size; a library call with 0 used to loop forever."""
    from sapo.evaluate.generation import generate_chat

    with pytest.raises(ValueError, match="batch_size: expected an integer >= 1, got 0"):
        generate_chat(loaded, [[{"role": "user", "content": "hi"}]], batch_size=0)
