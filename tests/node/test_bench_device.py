"""bench.run_all's --device: a GPU run of the per-sample suite (issue 17), prepared and checked
here as far as a machine without CUDA allows (no timing assertions)."""

from __future__ import annotations

import pytest
import torch

from bench import run_all
from bench.common import BenchConfig
from bench.timing import synchronized

CUDA = torch.cuda.is_available()


def _error(capsys, *argv: str) -> str:
    with pytest.raises(SystemExit) as exit_info:
        run_all.main(["--no-write", *argv])
    assert exit_info.value.code == 2
    return capsys.readouterr().err


@pytest.mark.skipif(CUDA, reason="checks the error on a machine without CUDA")
def test_a_missing_device_is_named(capsys):
    err = _error(capsys, "--suite", "bench.per_sample", "--device", "cuda")
    assert "--device cuda: no such device here (torch.cuda.is_available() is False)" in err


def test_a_malformed_device_is_named(capsys):
    err = _error(capsys, "--suite", "bench.per_sample", "--device", "gpu0")
    assert "--device must be cpu or a CUDA device such as cuda:0, got 'gpu0'" in err


@pytest.mark.skipif(not CUDA, reason="needs a CUDA device")
def test_cpu_only_suites_and_the_cpu_clock_are_refused_on_cuda(capsys):
    err = _error(capsys, "--suite", "bench.gradients", "--device", "cuda")
    assert "suite(s) bench.gradients run on the CPU only" in err
    err = _error(capsys, "--suite", "bench.per_sample", "--device", "cuda", "--clock", "cpu")
    assert "use the wall clock with --device cuda" in err


def test_synchronized_leaves_cpu_functions_alone():
    def fn():
        return 3

    assert synchronized(fn, "cpu") is fn
    wrapped = synchronized(fn, "cuda")
    assert wrapped is not fn
    if CUDA:
        assert wrapped() == 3


def test_per_sample_problems_live_on_the_configured_device():
    from bench.per_sample import _gradient_problem, _problems

    device = "cuda" if CUDA else "cpu"
    for problem in _problems(4, device):
        assert problem.y0.device.type == problem.t.device.type == device
    func, y0, t = _gradient_problem(4, device)
    assert func.mu.device.type == y0.device.type == t.device.type == device
    assert BenchConfig.make(True, device=device).cuda is CUDA


@pytest.mark.skipif(not CUDA, reason="needs a CUDA device")
def test_per_sample_suite_runs_on_cuda():
    from bench import per_sample

    result = per_sample.run(BenchConfig.make(True, "wall", "cuda"), log=lambda msg: None)
    assert any("on cuda" in line for line in result.setup)
    errors = [r["max_error"] for r in result.records if "max_error" in r]
    assert errors and max(errors) < 0.2  # dopri5 at 1e-5 against dopri8 at 1e-11
