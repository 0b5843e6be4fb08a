"""The installed layout: our folders live under `sapo.*` and never shadow Hugging Face's `evaluate`."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("cwd", ["repo root", "elsewhere"])
def test_import_evaluate_is_hugging_faces(tmp_path, cwd):
    # Run from the repository root too, where a top-level evaluate/ package would win.
    where = REPO if cwd == "repo root" else tmp_path
    code = "import sapo.train, evaluate; print(evaluate.__file__); print(hasattr(evaluate, 'load'))"
    out = subprocess.run([sys.executable, "-c", code], cwd=where, capture_output=True, text=True, check=True)
    path, has_load = out.stdout.split()
    assert "site-packages" in path and str(REPO / "evaluate") not in path
    assert has_load == "True"


def test_card_folders_import_under_the_namespace():
    import sapo.reproduce
    import sapo.train

    assert Path(sapo.train.__file__).parent.name == "train"
    assert Path(sapo.reproduce.__file__).parent.name == "reproduce"


def test_console_script_help_lists_subcommands():
    out = subprocess.run(["sapo", "--help"], capture_output=True, text=True, check=True).stdout
    assert "Self-Augmented Preference Optimization" in out and "Not Soft Adaptive" in out
    for command in ("model", "data"):
        assert command in out
    for sub in (["model", "materialize"], ["data", "audit"], ["data", "write-embedded"]):
        assert subprocess.run(["sapo", *sub, "--help"], capture_output=True, text=True).returncode == 0
