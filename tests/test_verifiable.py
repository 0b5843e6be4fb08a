"""`--suite verifiable`: the held-out set, its checks (closed forms), and a planted effect found on real runs."""

from __future__ import annotations

import json
import shutil

import pytest

from sapo.cli import main
from sapo.errors import DataError
from sapo.evaluate import verifiable as v
from sapo.evaluate.compare import compare_runs
from sapo.evaluate.items import read_items
from sapo.evaluate.uncertainty import ratio
from sapo.train.embedded_data import read_embedded_release
from sapo.train.embedded_preferences import add_rejected_answers
from sapo.train.embedded_verifiable import VERIFIABLE_FILE, build_verifiable_items, write_verifiable_items


def test_shipped_items_are_rebuilt_byte_for_byte(tmp_path):
    path = write_verifiable_items(tmp_path / VERIFIABLE_FILE)
    assert path.read_bytes() == v.items_path().read_bytes()
    assert len(v.load_items()) == len(build_verifiable_items()) >= 250


def test_items_are_held_out_and_every_reference_passes_its_own_checks():
    trained = {row["messages"][0]["content"] for row in read_embedded_release()}
    items = v.load_items()
    assert not trained & {i["prompt"] for i in items}
    assert len({i["id"] for i in items}) == len(items)
    failing = [i["id"] for i in items if not all(v.run_checks(i, i["reference"]))]
    assert failing == []


def test_wrong_answers_of_the_same_family_mostly_fail():
    """A fluent answer to another question of the same family (how the calibration set's `worse` side is made)
    passes an item's checks rarely: measured 19 of 267 (format-only items such as three numbered tips)."""
    items = v.load_items()
    rows = [{"source": i["source"], "messages": [{"role": "user", "content": i["prompt"]},
                                                 {"role": "assistant", "content": i["reference"]}]} for i in items]  # fmt: skip
    wrong = add_rejected_answers(rows, seed=3)
    passed = sum(all(v.run_checks(i, r["rejected"][1]["content"])) for i, r in zip(items, wrong, strict=True))
    assert passed / len(items) < 0.12


@pytest.mark.parametrize(
    ("check", "reply", "args", "expected"),
    [
        ("final_number", "4 x 6 = 24, so 24 left.", {"value": 24.0}, True),
        ("final_number", "24 apples, or 25", {"value": 24.0}, False),
        ("final_number", "about 1,234.57", {"value": 1234.57}, True),
        ("final_number", "no number", {"value": 1.0}, False),
        ("final_number", "between 10-15", {"value": 15.0}, True),  # a hyphen between numbers is no minus sign
        ("final_number", "it is \u221217", {"value": -17.0}, True),  # the Unicode minus sign
        ("number_sequence", "In order: -17, 51, 62.", {"values": [-17.0, 51.0, 62.0]}, True),
        ("number_sequence", "51, -17, 62", {"values": [-17.0, 51.0, 62.0]}, False),
        (
            "choice",
            "Counting from Monday gives Friday.",
            {"choices": ["Monday", "Friday"], "value": "Friday", "pick": "last"},
            True,
        ),  # fmt: skip
        ("choice", "Counting from Monday gives Friday.", {"choices": ["Monday", "Friday"], "value": "Friday"}, False),
        ("choice", "No, it is not prime. Yes.", {"choices": ["yes", "no"], "value": "no"}, True),
        (
            "contains",
            'It is "The essays are graded by the teacher"!',
            {"text": "the essays are graded by the teacher."},
            True,
        ),  # fmt: skip
        ("contains", "VIOLINS", {"text": "VIOLIN", "case_sensitive": True}, False),
        ("contains", "violin", {"text": "VIOLIN", "case_sensitive": True}, False),
        ("key_words", "Hanoi.", {"words": ["hanoi"]}, True),
        ("key_words", "work with others", {"words": ["work", "together", "others", "achieve"]}, True),  # 2 of 4
        ("key_words", "work alone", {"words": ["work", "together", "others", "achieve"]}, False),  # 1 of 4
        ("word_count", "Neptune.", {"n": 1}, True),
        ("word_count", "It is Neptune", {"n": 1}, False),
        ("no_lowercase", "THE CAPITAL IS OSLO.", {}, True),
        ("no_lowercase", "THE CAPITAL IS Oslo.", {}, False),
        ("no_lowercase", "42.", {}, False),  # no letters: no answer in capitals
        ("no_uppercase", "mercury is small.", {}, True),
        ("bullet_items", "- a\n* b\n• c\ntext", {"n": 3}, True),
        ("bullet_items", "- a\n- b", {"n": 3}, False),
        ("numbered_items", "Tips:\n1. a\n2) b\n3. c", {"n": 3}, True),
    ],
)
def test_each_check_by_hand(check, reply, args, expected):
    assert v.CHECKS[check](reply, **args) is expected


def test_a_bad_items_file_names_its_line_and_field(tmp_path):
    path = tmp_path / "items.jsonl"
    path.write_text(
        '{"id": "a", "prompt": "p", "checks": []}\n{"id": "b", "prompt": "p", "checks": [{"check": "nope"}]}\n'
    )
    with pytest.raises(DataError, match=r"items.jsonl:2: checks: unknown check 'nope'"):
        v.load_items(path)
    path.write_text('{"id": "a", "prompt": "p", "checks": [{"check": "word_count", "m": 1}]}\n')
    with pytest.raises(DataError, match=r"items.jsonl:1: checks: word_count: missing a required argument: 'n'"):
        v.load_items(path)
    path.write_text('{"id": "a", "checks": []}\n')
    with pytest.raises(DataError, match=r"items.jsonl:1: field 'prompt' is missing"):
        v.load_items(path)


def _perturbed_copy(source, target, scale: float):
    """``source`` with Gaussian noise of ``scale`` x each tensor's own spread added to every weight."""
    import torch
    from transformers import AutoModelForCausalLM

    shutil.copytree(source, target)
    model = AutoModelForCausalLM.from_pretrained(source)
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=generator) * p.float().std().nan_to_num(0.0) * scale)
    model.save_pretrained(target, safe_serialization=True)
    return target


def test_a_planted_effect_is_found_and_a_null_is_not(embedded_model_dir, tmp_path, capsys):
    """Real `sapo eval` runs of the embedded model on 48 held-out items: a copy with noisy weights is
    significantly worse (paired permutation test); the same model with another --seed is not different."""

    def evaluate(model, output, *extra):
        argv = ["eval", str(model), "--suite", "verifiable", "--output", str(output), "--limit", "48",
                "--max-new-tokens", "40", "--batch-size", "16", *extra]  # fmt: skip
        assert main(argv) == 0

    evaluate(embedded_model_dir, tmp_path / "a", "--seed", "0")
    evaluate(embedded_model_dir, tmp_path / "a-seed1", "--seed", "1")
    evaluate(_perturbed_copy(embedded_model_dir, tmp_path / "noisy", 0.5), tmp_path / "noisy-run")
    capsys.readouterr()
    body = json.loads((tmp_path / "a" / "results.json").read_text())["benchmarks"]["verifiable"]
    items = read_items(body["items"], "a", tmp_path / "a")
    assert ratio(items["metrics"]["accuracy"]) == pytest.approx(body["metrics"]["accuracy"])
    assert body["metrics"]["accuracy"] >= 0.1  # the embedded model answers some held-out items right

    planted = compare_runs(tmp_path / "a", tmp_path / "noisy-run")["benchmarks"]["verifiable"]["metrics"]["accuracy"]
    assert (
        planted["difference"] > 0 and planted["p_value"] < 0.05 and planted["significant"] and planted["ci95"][0] > 0
    ), planted
    null = compare_runs(tmp_path / "a", tmp_path / "a-seed1")["benchmarks"]["verifiable"]["metrics"]["accuracy"]
    assert null["p_value"] >= 0.05 and not null["significant"] and null["ci95"][0] <= 0 <= null["ci95"][1], null
