#!/usr/bin/env bash
# The check to run at once on a machine with a CUDA GPU (about 5 minutes): the CUDA tests (maps on the device,
# a batch equals its single calls, the GPU gives the CPU's maps, float16 autocast, torchrun sharing one GPU), then
# the speed benchmark on the GPU, 2D and 3D, ClusCAM against Score-CAM, Grad-CAM and the rest, per-image time and
# peak GPU memory, into benchmarks/results/speed_cuda.{json,md} and speed_cuda_scaling.png.
#
#     bash benchmarks/device_check.sh            # after `make install` (or with PY=<a python with the package>)
#
# Everything it prints, and the tests' log, also goes to $OUT (default benchmarks/results): device_check.log.
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
OUT=${OUT:-benchmarks/results}
mkdir -p "$OUT"
LOG="$OUT/device_check.log"
{
    date -u +"%Y-%m-%d %H:%M UTC"
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv || true
    "$PY" -c "import torch; assert torch.cuda.is_available(), 'no CUDA device: this check needs a GPU'; \
print('torch', torch.__version__, 'CUDA', torch.version.cuda, torch.cuda.get_device_name(0))" || exit 2
    echo "== CUDA tests"
    timeout 150 "$PY" -m pytest -q -rA -s -m cuda tests/test_cuda.py -p no:cacheprovider
    tests=$?
    echo "== speed on the GPU (size sweep, 2D 128-512, 3D 64-160)"
    timeout 240 "$PY" benchmarks/speed.py --device cuda --sweeps size --repeats 5 --max-call-seconds 15 \
        --output "$OUT" --name speed_cuda
    speed=$?
    echo "tests exit $tests, speed exit $speed"
    exit $(( tests != 0 || speed != 0 ))
} 2>&1 | tee "$LOG"
exit "${PIPESTATUS[0]}"
