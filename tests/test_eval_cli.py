"""`sapo eval`'s flags: numbers are range-checked at parse time, and the judge URL's credentials never reach
results.json, whichever way the flag is spelled."""

from __future__ import annotations

import argparse
import json
import sys

import pytest

from sapo import argtypes
from sapo.cli import build_parser, main
from sapo.evaluate.cli import _public_command, _recorded_limit
from sapo.evaluate.judge_server import JudgeServer
from sapo.evaluate.suites import limit_of, parse_limit

BAD_NUMBERS = [
    ("--limit", "0"),
    ("--limit", "verifiable=0"),
    ("--limit", "ifevl=3"),  # not a benchmark
    ("--limit", "ifeval=two"),
    ("--limit", "ifeval=2,ifeval=3"),  # named twice
    ("--batch-size", "0"),
    ("--batch-size", "two"),
    ("--seed", "-1"),
    ("--seed", "1.5"),
    ("--max-new-tokens", "0"),
    ("--judge-max-retries", "-1"),
    ("--judge-backoff", "-1"),  # deprecated, ignored with a warning; still range-checked
    ("--calibration-pairs", "-1"),
    ("--judge-repeats", "0"),
    ("--local-judge-max-tokens", "0"),
]
SECRETS = ("hunter2", "sk-in-query-123")


def _eval_parser() -> argparse.ArgumentParser:
    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    return sub.choices["eval"]


def test_every_numeric_flag_is_range_checked_and_tested():
    """A new numeric flag must use a sapo.argtypes type (a bare int accepts --batch-size 0) and join BAD_NUMBERS."""
    checked = {argtypes.positive_int, argtypes.non_negative_int, argtypes.non_negative_float, parse_limit}
    typed = {a.option_strings[0]: a.type for a in _eval_parser()._actions if a.type is not None}
    assert all(kind in checked for kind in typed.values()), typed
    assert set(typed) == {flag for flag, _ in BAD_NUMBERS}


@pytest.mark.parametrize(("flag", "value"), BAD_NUMBERS, ids=[f"{f}={v}" for f, v in BAD_NUMBERS])
def test_bad_numbers_exit_2_naming_the_flag_before_any_model_loads(flag, value, capsys, monkeypatch):
    import sapo.evaluate.generation
    import sapo.models

    def no_model(*args, **kwargs):
        raise AssertionError("a model was loaded before the flags were checked")

    monkeypatch.setattr(sapo.models, "resolve_model_path", no_model)
    monkeypatch.setattr(sapo.evaluate.generation, "load_for_eval", no_model)
    with pytest.raises(SystemExit) as stop:
        main(["eval", "embedded", flag, value])
    err = capsys.readouterr().err
    assert stop.value.code == 2 and flag in err and repr(value) in err and "Traceback" not in err


def test_limit_applies_to_every_benchmark_or_to_the_named_ones():
    every, some = parse_limit("5"), parse_limit("verifiable=64, ifeval=3")
    assert [limit_of(every, s) for s in ("openllm", "verifiable")] == [5, 5]
    assert [limit_of(some, s) for s in ("verifiable", "ifeval", "mtbench")] == [64, 3, None]
    assert limit_of(None, "ifeval") is None
    # results.json keeps its old shape (N or null) unless the limit names benchmarks
    assert (_recorded_limit(every), _recorded_limit({}), _recorded_limit(some)) == (5, None, some)


def test_a_limit_on_a_benchmark_not_run_is_refused(capsys):
    from sapo.cli import main

    assert main(["eval", "embedded", "--suite", "ifeval", "--limit", "verifiable=5"]) == 2
    assert "--limit names verifiable, which --suite ifeval does not run" in capsys.readouterr().err


URL = "https://user:hunter2@judge.example:8443/v1?api-key=sk-in-query-123"


@pytest.mark.parametrize("spelling", [["--judge-base-url", URL], [f"--judge-base-url={URL}"],
                                      ["--judge-base", URL], [f"--judge-base={URL}"]])  # fmt: skip
def test_recorded_command_drops_the_urls_credentials(spelling):
    """argparse takes all four spellings (abbreviations included): the recorded command hides each."""
    args = _eval_parser().parse_args(["embedded", *spelling])
    assert args.judge_base_url == URL
    command = _public_command(["sapo", "eval", "embedded", *spelling], args.judge_base_url)
    assert "https://judge.example:8443/v1" in command and not any(s in command for s in SECRETS)


@pytest.mark.parametrize("equals", [True, False], ids=["flag=URL", "abbreviated flag URL"])
def test_judge_url_credentials_never_reach_results_or_logs(equals, tiny_model_dir, tmp_path, monkeypatch, capsys,
                                                           caplog):  # fmt: skip
    """A real `sapo eval` against a judge on 127.0.0.1 reached through a URL with user:password@ and ?api-key=:
    the judge is asked (the query goes with each request), and no output file, line of output or log holds
    either secret."""

    def judge(messages, params):
        return "Rating: [[5]]", None

    with JudgeServer(judge, "scripted") as server:
        url = server.base_url.replace("http://", "http://user:hunter2@") + "?api-key=sk-in-query-123"
        spelling = [f"--judge-base-url={url}"] if equals else ["--judge-base", url]
        argv = ["eval", str(tiny_model_dir), "--suite", "mtbench", "--data", "fixtures", "--limit", "1",
                "--output", str(tmp_path / "out"), "--judge-model", "scripted", *spelling, "--max-new-tokens", "4",
                "--calibration-pairs", "0"]  # fmt: skip
        monkeypatch.setattr(sys, "argv", ["sapo", *argv])  # what _public_command records
        with caplog.at_level("DEBUG"):  # every logger, the HTTP client's too (lm-eval sets the root logger to INFO)
            assert main(argv) == 0
        assert server.requests == 2  # one question, two turns: the URL worked
    results = json.loads((tmp_path / "out" / "results.json").read_text())
    assert server.base_url in results["benchmarks"]["mtbench"]["run"]["command"]
    assert results["judge"]["base_url"] == server.base_url
    written = [p.read_text(errors="replace") for p in (tmp_path / "out").rglob("*") if p.is_file()]
    shown = capsys.readouterr()
    for text in [*written, shown.out, shown.err, caplog.text]:
        assert not any(secret in text for secret in SECRETS)


def test_cpu_fast_decoding_reaches_the_decoding_loop_and_is_recorded(tiny_model_dir, tmp_path, monkeypatch):
    """A real `sapo eval --cpu-fast-decoding` on the verifiable set: every answer batch decodes weight-first, and
    results.json says so; without the flag none does."""
    import sapo.evaluate.generation as generation

    seen = []
    real = generation.sample_continuations
    monkeypatch.setattr(generation, "sample_continuations",
                        lambda *a, **kw: seen.append(kw["weight_major"]) or real(*a, **kw))  # fmt: skip
    for flag, out in ((["--cpu-fast-decoding"], "fast"), ([], "standard")):
        seen.clear()
        argv = ["eval", str(tiny_model_dir), "--suite", "verifiable", "--data", "fixtures", "--limit", "2",
                "--max-new-tokens", "4", "--device", "cpu", "--output", str(tmp_path / out), *flag]  # fmt: skip
        assert main(argv) == 0
        results = json.loads((tmp_path / out / "results.json").read_text())
        assert seen and set(seen) == {bool(flag)}
        assert results["benchmarks"]["verifiable"]["run"]["cpu_fast_decoding"] is bool(flag)
