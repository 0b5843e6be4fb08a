"""Which checkpoint a rerun resumes from: the newest complete one; incomplete ones are deleted; ``auto`` starts
clean where ``true`` stops with a clear error (a run killed inside its first checkpoint write)."""

from __future__ import annotations

import pytest

from sapo.errors import CheckpointError
from sapo.train.checkpoints import AUTO, SAPO_WRITING, resume_point


def lay_out(folder, steps_complete, steps_incomplete, marker="trainer_state.json"):
    for step in steps_complete + steps_incomplete:
        (folder / f"checkpoint-{step}").mkdir(parents=True)
        (folder / f"checkpoint-{step}" / "model.safetensors").write_text("w")
        if step in steps_complete:
            (folder / f"checkpoint-{step}" / marker).write_text("{}")


def test_newest_complete_checkpoint_is_taken_and_incomplete_ones_go(tmp_path):
    lay_out(tmp_path, [2, 10], [11])  # 10 < 11 numerically, though "checkpoint-10" < "checkpoint-2" as text
    assert resume_point(tmp_path, AUTO) == str(tmp_path / "checkpoint-10")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint-10", "checkpoint-2"]


def test_auto_starts_clean_where_true_stops_when_nothing_is_complete(tmp_path):
    lay_out(tmp_path, [], [1], marker="sapo_state.json")
    with pytest.raises(CheckpointError, match="no complete checkpoint"):
        resume_point(tmp_path, True, "sapo_state.json")
    lay_out(tmp_path, [], [1], marker="sapo_state.json")
    assert resume_point(tmp_path, AUTO, "sapo_state.json") is None
    assert not (tmp_path / "checkpoint-1").exists()  # the clean start writes it whole


def test_the_marker_decides_completeness(tmp_path):
    lay_out(tmp_path, [3], [], marker="trainer_state.json")  # HF's part written, SAPO's state not yet
    (tmp_path / "checkpoint-3" / SAPO_WRITING).touch()  # SAPO began this one
    assert resume_point(tmp_path, AUTO, "sapo_state.json") is None
    assert not (tmp_path / "checkpoint-3").exists()


def test_a_marker_cut_mid_write_is_not_complete(tmp_path):
    lay_out(tmp_path, [1, 2], [])
    (tmp_path / "checkpoint-2" / "trainer_state.json").write_text(
        '{"log_history": [{"loss": 0.6'
    )  # HF writes in place
    assert resume_point(tmp_path, AUTO) == str(tmp_path / "checkpoint-1")


def test_another_methods_checkpoints_are_refused_not_deleted(tmp_path):
    """A SAPO run pointed at a folder of DPO checkpoints (complete by HF's rule, no SAPO marks) stops."""
    lay_out(tmp_path, [2], [], marker="trainer_state.json")
    with pytest.raises(CheckpointError, match="another method's complete checkpoint"):
        resume_point(tmp_path, AUTO, "sapo_state.json")
    assert (tmp_path / "checkpoint-2" / "model.safetensors").is_file()


def test_explicit_folders_and_no_resume_pass_through(tmp_path):
    assert resume_point(tmp_path, None) is None and resume_point(tmp_path, False) is None
    assert resume_point(tmp_path, str(tmp_path / "checkpoint-7")) == str(tmp_path / "checkpoint-7")


def test_other_ranks_never_delete(tmp_path):
    lay_out(tmp_path, [1], [2])
    assert resume_point(tmp_path, AUTO, main_process=False) == str(tmp_path / "checkpoint-1")
    assert (tmp_path / "checkpoint-2").exists()
