"""bench/stiff.py's node rows run and its targets read them (no timing assertions)."""

from __future__ import annotations

from bench.stiff import _targets, run_batch, run_node, run_scipy
from bench.stiff_problems import problems


def test_node_rows_and_steps_target():
    p = problems()[0]  # ROBER [0, 1e5]
    records = [run_node(p, "kvaerno5", 1, dict(jacobian="dense")),
               run_node(p, "kvaerno5", 1, dict(jacobian=p.torch_jac)),
               run_scipy(p, "Radau", 1)]
    auto, analytic, radau = records
    assert auto["jac"] == "autograd" and analytic["jac"] == "analytic"
    assert auto["steps"] == analytic["steps"] <= radau["accepted"]
    assert auto["rel_error"] <= 1e-3
    assert analytic["nfe"] < auto["nfe"]  # no evaluation for the Jacobians
    steps_target, batch_target = _targets(records, 0.05, 4)
    assert steps_target.passed is True and batch_target.passed is True


def test_batch_rows():
    records, ratio = run_batch(4, 1, lambda msg: None)
    assert len(records) == 3 and ratio is not None
    for rec in records[1:]:
        assert rec["max_rel_diff_vs_scipy"] < 1e-3
