"""framework.two_phase: both phases of the spirals recipe as one command, with the restart of a
stuck phase one."""

from __future__ import annotations

import json
import math

import pytest

from framework import two_phase


@pytest.fixture
def quick(tiny_overrides):
    return [*tiny_overrides, "trainer.max_epochs=2", "trainer.check_val_every_n_epoch=1",
            "model.refine_steps=2"]


def test_a_stuck_phase_one_is_rerun_with_the_next_seed(tmp_path, capsys, quick):
    # every run counts as stuck above -1: phase one runs twice (seeds 3 and 103), no more
    summary = two_phase.main(["--points", "30", "--seed", "3", "--restart-above", "-1",
                              "--restarts", "1", "--out", str(tmp_path), *quick])
    runs = summary["phase_one"]
    assert [r["seed"] for r in runs] == [3, 103] and all(r["stuck"] for r in runs)
    assert all(math.isfinite(r["best val/extrap_rmse"]) for r in runs)
    first = json.loads((tmp_path / "phase1" / "metrics.json").read_text())
    second = json.loads((tmp_path / "phase1_restart1" / "metrics.json").read_text())
    assert "seed=3" in first["overrides"] and "seed=103" in second["overrides"]
    # phase two starts from the restart's weights, with the 30-point encoder phase
    phase_two = json.loads((tmp_path / "phase2" / "metrics.json").read_text())
    assert summary["phase_two"]["init_from"] == second["paths"]["last_checkpoint"]
    assert "experiment=spirals_chen2018_30_encoder" in phase_two["overrides"]
    assert "seed=3" in phase_two["overrides"]
    assert "test/extrap_rmse_encoder" in summary["phase_two"]["test"]
    assert json.loads((tmp_path / "summary.json").read_text()) == summary
    assert "seed 103 (best val/extrap_rmse" in capsys.readouterr().out


def test_a_working_phase_one_is_kept_and_bad_arguments(tmp_path, quick):
    # three epochs, the best of them (by val/extrap_rmse_encoder) saved apart from last.ckpt
    summary = two_phase.two_phase(100, 5, [*quick, "trainer.max_epochs=3"], tmp_path,
                                  restart_above=math.inf, start="best")
    assert [r["seed"] for r in summary["phase_one"]] == [5]
    assert not (tmp_path / "phase1_restart1").exists()
    first = json.loads((tmp_path / "phase1" / "metrics.json").read_text())
    best = first["paths"]["best_checkpoint"]
    assert best and best != first["paths"]["last_checkpoint"]
    assert summary["phase_two"]["start"] == "best"
    assert summary["phase_two"]["init_from"] == best
    phase_two = json.loads((tmp_path / "phase2" / "metrics.json").read_text())
    assert f"init_from={best}" in phase_two["overrides"]
    with pytest.raises(ValueError, match=r"start must be one of \['last', 'best'\], got 'first'"):
        two_phase.two_phase(100, 5, quick, tmp_path, start="first")
    with pytest.raises(ValueError, match=r"points must be one of \[30, 50, 100\], got 40"):
        two_phase.two_phase(40, 1, quick, tmp_path)
    with pytest.raises(SystemExit):
        two_phase.main(["--points", "40", "--seed", "1"])


def test_best_validation_reads_the_csv_log(tmp_path):
    log = tmp_path / "metrics.csv"
    log.write_text("epoch,val/extrap_rmse,train/loss\n0,,1.0\n1,0.5,0.9\n2,0.41,0.8\n3,0.47,\n")
    result = {"paths": {"metrics": [str(log), "somewhere (TensorBoard)"]}}
    assert two_phase.best_validation(result) == 0.41
    assert two_phase.best_validation({"paths": {"metrics": []}}) == math.inf
