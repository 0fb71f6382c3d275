"""``ckpt_path=auto``: a run resumes from its own output folder's ``checkpoints/last.ckpt`` (what a
cluster job requeued into the same folder needs), and starts from scratch where there is none."""

from __future__ import annotations

import pytest

from framework.resume import resume_checkpoint


def test_auto_picks_the_runs_own_last_checkpoint(tmp_path):
    assert resume_checkpoint("auto", tmp_path) is None  # a fresh run: nothing to resume
    last = tmp_path / "checkpoints" / "last.ckpt"
    last.parent.mkdir()
    (last.parent / "epoch_000.ckpt").write_bytes(b"x")  # not the newest state: ignored
    assert resume_checkpoint("auto", tmp_path) is None
    last.write_bytes(b"x")
    assert resume_checkpoint("auto", tmp_path) == str(last)


def test_explicit_paths_are_checked(tmp_path):
    assert resume_checkpoint(None, tmp_path) is None
    given = tmp_path / "other.ckpt"
    with pytest.raises(FileNotFoundError, match=f"existing checkpoint .* got '{given}'"):
        resume_checkpoint(str(given), tmp_path)
    given.write_bytes(b"x")
    assert resume_checkpoint(str(given), tmp_path / "elsewhere") == str(given)


def test_second_attempt_in_the_same_folder_continues_training(tiny_train, tmp_path):
    """The requeue case without a cluster: a 1-epoch attempt, then the same run (same folder,
    ckpt_path=auto) asked for 2 epochs trains only the second one."""
    first = tiny_train(["ckpt_path=auto"], tmp_path)
    steps = int(first["metrics"]["global_step"])
    assert first["paths"]["resumed_from"] == ""
    assert first["paths"]["last_checkpoint"] == str(tmp_path / "checkpoints" / "last.ckpt")
    second = tiny_train(["ckpt_path=auto", "trainer.max_epochs=2"], tmp_path)
    assert second["paths"]["resumed_from"] == first["paths"]["last_checkpoint"]
    assert second["metrics"]["global_step"] == 2 * steps
    assert second["metrics"]["train_steps"] == steps  # only the second epoch ran here
