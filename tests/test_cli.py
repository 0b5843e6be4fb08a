"""The `sapo` command on real inputs: errors are messages with exit code 2, not tracebacks."""

from __future__ import annotations

import json
import subprocess

from sapo.cli import main


def test_data_audit_prints_counts_and_tokens(capsys, tiny_model_dir, tmp_path):
    path = tmp_path / "d.jsonl"
    path.write_text(json.dumps({"prompt": "hi", "chosen": "hello there"}) + "\n")
    assert main(["data", "audit", str(path), "--model", str(tiny_model_dir), "--show", "1"]) == 0
    out = capsys.readouterr().out
    assert "1 examples from 1 rows" in out and "<|im_end|>" in out and "special token counts" in out


def test_bad_data_exits_2_with_the_row_named(capsys, tiny_model_dir, tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_text(json.dumps({"messages": [{"role": "user", "content": "q"}]}) + "\n")
    assert main(["data", "audit", str(path), "--model", str(tiny_model_dir)]) == 2
    err = capsys.readouterr().err
    assert f"{path} line 1" in err and "Traceback" not in err


def test_missing_hub_model_exits_2(capsys):
    assert main(["model", "generate", "no-such-org/no-model-xyz", "hi"]) == 2
    assert "out of reach" in capsys.readouterr().err


def test_write_embedded_then_audit(tmp_path, tiny_model_dir):
    out = tmp_path / "embedded.jsonl"
    subprocess.run(["sapo", "data", "write-embedded", str(out), "--n", "50"], check=True, capture_output=True)
    assert len(out.read_text().splitlines()) == 50
    audit = subprocess.run(
        ["sapo", "data", "audit", str(out), "--model", str(tiny_model_dir)], capture_output=True, text=True, check=True
    )
    assert "50 examples from 50 rows" in audit.stdout


def test_model_generate_answers(tiny_model_dir, capsys):
    assert main(["model", "generate", str(tiny_model_dir), "hi", "--max-new-tokens", "3"]) == 0


def test_recipe_with_bad_yaml_exits_2_naming_file_and_line(capsys, tmp_path):
    recipe = tmp_path / "broken.yaml"
    recipe.write_text("method: sapo\nbeta: [0.1\nema_decay: 0.5\n")
    assert main(["train", str(recipe)]) == 2
    err = capsys.readouterr().err
    assert f"{recipe}: not valid YAML" in err and "line" in err and "Traceback" not in err


def test_out_of_range_flags_stop_at_parse_time(capsys):
    for argv in (["eval", "embedded", "--batch-size", "0"], ["eval", "embedded", "--judge-max-retries", "-1"],
                 ["data", "audit", "embedded", "--log-level", "loud"]):  # fmt: skip
        try:
            main(argv)
        except SystemExit as stop:  # argparse: usage, the flag named, exit code 2, before any model is loaded
            assert stop.code == 2
        else:
            raise AssertionError(f"{argv} was accepted")
        err = capsys.readouterr().err
        assert argv[-2] in err and "Traceback" not in err


def test_log_level_after_the_recipe_is_ours_not_a_config_override(capsys, tmp_path):
    recipe = tmp_path / "r.yaml"
    recipe.write_text("method: sapo\nbeta: -1\n")  # rejected by the config, after --log-level was taken out
    assert main(["train", str(recipe), "--log-level", "warning"]) == 2
    assert "beta" in capsys.readouterr().err


def test_audit_json_and_show_prompts_agree_on_a_render_once_layout(capsys, tiny_model_dir, tmp_path):
    """`sapo data audit --json` writes what training tokenized; `sapo eval --show-prompts` what the benchmarks
    feed: on SmolLM2 (render once, no BOS added) the prompts are the same ids, lm-eval's included."""
    data = tmp_path / "d.jsonl"
    data.write_text(json.dumps({"prompt": "Name a color.", "chosen": "Blue."}) + "\n")
    audit = tmp_path / "audit.json"
    assert main(["data", "audit", str(data), "--model", str(tiny_model_dir), "--show", "1", "--json", str(audit)]) == 0
    (row,) = json.loads(audit.read_text())
    assert row["prompt_messages"] == [{"role": "user", "content": "Name a color."}] and row["where"].endswith("line 1")
    conversations = tmp_path / "c.json"
    conversations.write_text(json.dumps([row["prompt_messages"]]))
    capsys.readouterr()
    assert main(["eval", str(tiny_model_dir), "--show-prompts", str(conversations)]) == 0
    (asked,) = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert asked["mtbench"] == asked["lm_eval"] == row["prompt_ids"] and asked["bos_id"] is None
    assert asked["tokens"]["mtbench"][-4:] == ["<|im_start|>", "ass", "istant", "Ċ"]  # the generation prompt


def test_engine_name_says_how_the_run_is_distributed():
    from accelerate import Accelerator

    from sapo.log import engine_name

    assert engine_name(Accelerator(cpu=True)) == "single process on 1 process, cpu"
