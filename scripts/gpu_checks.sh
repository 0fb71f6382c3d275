#!/usr/bin/env bash
# The checks that need a GPU, as one command for the device tool (a task lent a GPU has about 15
# minutes of device time in all: this script stays well inside one 10-minute call):
#   * the CUDA tests (tests/node/test_per_sample_cuda.py, test_bench_device.py, the solver's
#     test_cuda): per-sample results and gradients equal to the CPU's, host synchronisations
#     per loop iteration counted with torch.cuda.set_sync_debug_mode;
#   * issue 17's per-sample benchmark on the GPU, node against torchode and torchdiffeq:
#     bench.run_all --suite bench.per_sample --device cuda.
#
# The GPU image has torch, lightning and torchdiffeq but not torchode; carry its wheels. Once,
# here, in the repository root (pure-Python wheels):
#   echo /.whl/ >> .git/info/exclude
#   .venv/bin/python -m pip download --no-deps --only-binary=:all: --python-version 3.12 \
#       -d .whl torchode==1.0.1 torchtyping==0.1.5 typeguard==2.13.3
# Then call the device tool's run with command="bash scripts/gpu_checks.sh", carry=[".whl"],
# timeout_s=560. What comes back under $OUT: gpu.txt, pytest.log, README.cuda.md (the tables;
# copy it to bench/README.cuda.md) and results.cuda.json.
set -uo pipefail
OUT=${OUT:-/tmp/gpu_checks}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
if ls .whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/site .whl/*.whl && export PYTHONPATH=/tmp/site
fi
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv 2>&1 | tee "$OUT/gpu.txt"
python3 -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda)" \
  | tee -a "$OUT/gpu.txt"
timeout 150 python3 -m pytest -q -p no:cacheprovider tests/node/test_per_sample_cuda.py \
  tests/node/test_bench_device.py "tests/node/test_solver_api.py::test_cuda" \
  "tests/node/test_dense_output.py::test_cuda_dense_output_equals_the_cpu" 2>&1 \
  | tee "$OUT/pytest.log" | tail -15
timeout 360 python3 -m bench.run_all --suite bench.per_sample --device cuda \
  --output "$OUT/README.cuda.md" --json "$OUT/results.cuda.json" 2>&1 | tail -45
