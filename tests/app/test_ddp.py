"""Data-parallel training with ``trainer=ddp_sim`` (2 CPU processes, gloo), run as users run it:
``train.py`` in a subprocess. Each run is tiny (2 training batches per rank and epoch); the
timeouts turn a hang (ranks waiting for each other) into a failure.

The model is tests/app/ddp_models.py's probe: a latent ODE that raises at the end of training if
the ranks' parameters differ, and that can make its solver fail on one rank only.
"""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch.distributed as dist

ROOT = Path(__file__).resolve().parents[2]
TIMEOUT_S = 180  # a normal run takes 5-10 s of CPU; ranks stuck in a collective would wait 30 min
PROBE = "model._target_=tests.app.ddp_models.DDPProbeLatentODE"

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not dist.is_available() or not dist.is_gloo_available(),
                       reason="torch.distributed with gloo is needed"),
]


def train_py(tmp_path: Path, tiny_overrides: list[str], *overrides: str):
    command = [sys.executable, "train.py", "trainer=ddp_sim", PROBE, f"paths.log_dir={tmp_path}",
               "extras.print_config=false", *tiny_overrides, *overrides]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=TIMEOUT_S)


def test_two_ranks_write_one_set_of_outputs(tmp_path, tiny_overrides):
    proc = train_py(tmp_path, tiny_overrides)
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, output[-3000:]
    runs = list((tmp_path / "train" / "runs").iterdir())
    assert len(runs) == 1, runs  # rank 1 ran in rank 0's folder
    run = runs[0]
    result = json.loads((run / "metrics.json").read_text())
    metrics = result["metrics"]
    assert metrics["world_size"] == 2
    # 18 training series, batches of 8, half of them per rank: 2 steps, the same on both ranks
    assert metrics["train_steps"] == metrics["global_step"] == 2
    assert metrics["nfe_forward_per_step"] > 0 and metrics["nfe_total"] > 0
    assert "test/extrap_rmse" in metrics and "best/val/loss" in metrics
    checkpoints = sorted(p.name for p in (run / "checkpoints").iterdir())
    assert checkpoints == ["epoch_000.ckpt", "last.ckpt"]
    assert len(list((run / "plots").iterdir())) == 3
    assert [p.name for p in (run / "csv").iterdir()] == ["version_0"]
    assert output.count("Run finished in") == 1  # one report, by rank zero
    with (run / "csv" / "version_0" / "metrics.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    assert len([r for r in rows if r.get("train/loss")]) == 2  # one row per step, not per rank


@pytest.mark.parametrize(("rank", "phase", "gradient"), [
    (1, "forward", "direct"),
    (0, "backward", "adjoint"),
    (1, "validation", "direct"),
])
def test_solver_failure_on_one_rank_stops_every_rank(rank, phase, gradient, tmp_path,
                                                     tiny_overrides):
    proc = train_py(tmp_path, tiny_overrides, "trainer.max_epochs=2", f"solver.gradient={gradient}",
                    f"+model.fail_rank={rank}", f"+model.fail_in={phase}")
    output = proc.stdout + proc.stderr
    assert proc.returncode == 1, output[-3000:]  # rank zero reported; nothing was killed
    stage = "validation" if phase == "validation" else "training"
    assert f"TrainingSolverFailure: ODE solver failed during {stage}, epoch 1, batch 0" in output
    assert f"rank {rank} of 2: " + ("adjoint (backward) solve failed: " if phase == "backward"
                                    else "") + "max_num_steps=1" in output
    assert "]. Every rank stopped; the last good checkpoint is" in output
    run = next((tmp_path / "train" / "runs").iterdir())
    assert (run / "checkpoints" / "last.ckpt").is_file()  # written after epoch 0, kept
    assert not (run / "metrics.json").exists()


def test_multirun_over_gradient_modes(tmp_path, tiny_overrides):
    """Each job of a Hydra sweep starts its own second rank, in the job's folder. (The default
    gradient mode, direct, is that of the other tests.)"""
    proc = train_py(tmp_path, tiny_overrides, "plots.enabled=false",
                    "solver.gradient=checkpoint,adjoint", "--multirun")
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-3000:]
    assert not (tmp_path / "train" / "runs").exists()  # no rank ran as a single run of its own
    sweep = next((tmp_path / "train" / "multiruns").iterdir())
    with (sweep / "summary.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    assert [r["overrides"] for r in rows] == [
        "solver.gradient=checkpoint", "solver.gradient=adjoint"]
    for job, row in enumerate(rows):
        assert row["status"] == "ok"
        metrics = json.loads((sweep / str(job) / "metrics.json").read_text())["metrics"]
        assert metrics["world_size"] == 2
        assert metrics["nfe_backward_per_step"] > 0  # the recomputation, or the adjoint solve
        assert (metrics["steps_backward_per_step"] > 0) == (job == 1)


def _average_on_rank(rank: int, port: int, out: str) -> None:
    import torch

    from framework.distributed import average_gradients

    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2)
    try:
        params = [torch.nn.Parameter(torch.zeros(3)), torch.nn.Parameter(torch.zeros(2)),
                  torch.nn.Parameter(torch.zeros(1)),
                  torch.nn.Parameter(torch.zeros(2, dtype=torch.float64))]
        params[0].grad = torch.full((3,), rank + 1.0)
        params[1].grad = torch.full((2,), 4.0) if rank == 0 else None  # a part unused on rank 1
        # params[2]: no gradient on any rank
        params[3].grad = torch.full((2,), 2.0 * rank, dtype=torch.float64)
        average_gradients(params, torch.device("cpu"))
        torch.save([p.grad for p in params], Path(out) / f"{rank}.pt")
    finally:
        dist.destroy_process_group()


def test_average_gradients_is_ddps_mean(tmp_path):
    """Two gloo processes: the mean over ranks, a missing gradient counting as zero; one missing
    everywhere stays None; float32 and float64 parameters alike."""
    import socket

    import torch
    import torch.multiprocessing as mp

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    mp.spawn(_average_on_rank, args=(port, str(tmp_path)), nprocs=2, join=True)
    for rank in range(2):
        grads = torch.load(tmp_path / f"{rank}.pt")
        assert torch.equal(grads[0], torch.full((3,), 1.5))
        assert torch.equal(grads[1], torch.full((2,), 2.0))
        assert grads[2] is None
        assert torch.equal(grads[3], torch.ones(2, dtype=torch.float64))
