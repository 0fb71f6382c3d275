"""Per-sample solving on a GPU (issue 17): the same results as on the CPU, and at most one host
synchronisation per loop iteration (``torch.cuda.set_sync_debug_mode`` reports each one).
Skipped without CUDA; ``scripts/gpu_checks.sh`` runs them where a GPU is lent."""

from __future__ import annotations

import warnings

import pytest
import torch

import node

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


def _vdp(mu):
    def f(t, y):
        x, v = y[:, 0], y[:, 1]
        return torch.stack((v, mu * (1.0 - x * x) * v - x), dim=1)

    return f


def _problem(device, batch=32):
    g = torch.Generator().manual_seed(0)
    y0 = torch.rand(batch, 2, generator=g, dtype=torch.float64) * 4.0 - 2.0
    mu = torch.rand(batch, generator=g, dtype=torch.float64) * 10.0
    return _vdp(mu.to(device)), y0.to(device), torch.linspace(0, 10, 11, dtype=torch.float64,
                                                              device=device)


def test_per_sample_on_cuda_matches_the_cpu():
    f_gpu, y0_gpu, t_gpu = _problem("cuda")
    f_cpu, y0, t = _problem("cpu")
    gpu = node.solve(f_gpu, y0_gpu, t_gpu, rtol=1e-6, atol=1e-6, per_sample=True)
    cpu = node.solve(f_cpu, y0, t, rtol=1e-6, atol=1e-6, per_sample=True)
    assert gpu.ys.device.type == "cuda"
    torch.testing.assert_close(gpu.ys.cpu(), cpu.ys, rtol=1e-8, atol=1e-8)
    assert torch.equal(gpu.stats["n_steps"].cpu(), cpu.stats["n_steps"])


def test_per_sample_on_cuda_synchronises_once_per_iteration():
    f, y0, t = _problem("cuda")
    node.solve(f, y0, t, rtol=1e-6, atol=1e-6, per_sample=True)  # warm-up: lazy inits
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("warn")
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            sol = node.solve(f, y0, t, rtol=1e-6, atol=1e-6, per_sample=True)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    syncs = sum("synchroniz" in str(w.message) for w in caught)
    iterations = sol.stats["n_iterations"]
    # one per iteration, plus a few for setup and the end (output window sizes are read with
    # the iteration's own synchronisation)
    assert syncs <= iterations + 10, (syncs, iterations)


def test_per_sample_gradients_on_cuda_match_the_cpu():
    results = []
    for device in ("cuda", "cpu"):
        f, y0, t = _problem(device, batch=8)
        y0 = y0.clone().requires_grad_(True)
        ys = node.solve(f, y0, t, rtol=1e-7, atol=1e-7, per_sample=True,
                        gradient="checkpoint").ys
        (grad,) = torch.autograd.grad(ys.square().sum(), y0)
        results.append(grad.cpu())
    torch.testing.assert_close(results[0], results[1], rtol=1e-6, atol=1e-8)
