"""The solver group builds a node.SolverConfig: any method node has trains through the config,
with no per-method code in the app (a method registered with node.register_method included), and
node options pass through as ``solver.options.<name>``."""

from __future__ import annotations

import node

FDR = ["debug=fdr", "trainer.detect_anomaly=false"]
RALSTON = "ralston2_app_test"


def _register_ralston() -> None:
    """Ralston's 2nd-order method, registered under a test name (once per process)."""
    if RALSTON not in node.available_methods():
        node.register_method(node.ButcherTableau(
            name=RALSTON, order=2, c=[0.0, 2 / 3], a=[[], [2 / 3]], b=[0.25, 0.75],
            source="Ralston (1962)"))


def test_a_registered_method_trains_through_the_config(tiny_train, tmp_path):
    _register_ralston()
    result = tiny_train([f"solver.method={RALSTON}", "solver.step_size=0.1", *FDR], tmp_path)
    metrics = result["metrics"]
    assert metrics["train_steps"] == 1
    assert metrics["nfe_forward_per_step"] > 0 and metrics["steps_forward_per_step"] > 0
    # two stages per grid step, every evaluation counted from the solutions' statistics
    assert metrics["nfe_forward_per_step"] == 2 * metrics["steps_forward_per_step"]
    assert "test/extrap_rmse" in metrics


def test_node_options_pass_through_the_config(tiny_train, tmp_path):
    # a node option the app has no field for: the step cap makes every solve take more steps
    capped = tiny_train(["+solver.options.max_step=0.01", *FDR], tmp_path / "capped")["metrics"]
    free = tiny_train(FDR, tmp_path / "free")["metrics"]
    assert capped["steps_forward_per_step"] > free["steps_forward_per_step"]
