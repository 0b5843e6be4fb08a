"""`sapo plot`: curves read from trainer_state.json (SPIN's iterations joined), one panel per logged key."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from sapo.cli import main
from sapo.errors import SapoError
from sapo.reproduce.curves import draw_curves, read_curves


def write_state(folder: Path, history: list[dict], global_step: int) -> Path:
    """A trainer_state.json as transformers writes it (only the fields the plot reads, plus a summary entry)."""
    folder.mkdir(parents=True, exist_ok=True)
    summary = {"step": global_step, "train_loss": 0.6, "train_runtime": 9.5}  # no curve key: must be skipped
    (folder / "trainer_state.json").write_text(json.dumps({"global_step": global_step,
                                                           "log_history": [*history, summary]}))  # fmt: skip
    return folder


def sapo_run(tmp_path: Path) -> Path:
    return write_state(tmp_path / "sapo", [
        {"step": 4, "loss": 0.68, "rewards/margins": 0.02, "sapo/buffer_size": 5.0, "sapo/segment_len": 12.0},
        {"step": 8, "loss": 0.65, "rewards/margins": 0.08, "sapo/buffer_size": 13.0, "sapo/segment_len": 10.5},
    ], 8)  # fmt: skip


def test_spin_iterations_join_with_steps_counted_on(tmp_path):
    run = tmp_path / "spin"
    write_state(run / "iteration-0", [{"step": 2, "loss": 0.69}, {"step": 4, "loss": 0.60}], 4)
    write_state(run / "iteration-1", [{"step": 2, "loss": 0.66}], 4)
    write_state(run / "iteration-10", [{"step": 4, "loss": 0.5}], 4)  # numeric order, not text order
    assert read_curves(run) == {"loss": [(2, 0.69), (4, 0.60), (6, 0.66), (12, 0.5)]}


def test_each_logged_key_gets_a_panel_and_each_run_a_line(tmp_path):
    dpo = write_state(tmp_path / "dpo", [{"step": 4, "loss": 0.69, "rewards/margins": 0.01}], 4)
    figure = draw_curves({"sapo": read_curves(sapo_run(tmp_path)), "dpo": read_curves(dpo)})
    shown = [ax for ax in figure.axes if ax.get_visible()]
    titles = [ax.get_title() for ax in shown]
    assert titles == ["training loss", "reward margin (chosen - rejected)", "replay buffer size",
                      "generated segment length (tokens)"]  # fmt: skip
    assert [line.get_label() for line in shown[0].get_lines()] == ["sapo", "dpo"]
    assert [line.get_label() for line in shown[2].get_lines()] == ["sapo"]  # DPO has no buffer
    assert list(shown[1].get_lines()[0].get_ydata()) == [0.02, 0.08]


def test_plot_command_writes_a_png_and_refuses_a_folder_without_a_state(tmp_path, capsys):
    out = tmp_path / "c.png"
    assert main(["plot", str(sapo_run(tmp_path)), "--output", str(out)]) == 0
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    (tmp_path / "empty").mkdir()
    with pytest.raises(SapoError, match="empty: no trainer_state.json"):
        read_curves(tmp_path / "empty")
