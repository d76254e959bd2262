#!/usr/bin/env bash
# The checks that need a CUDA GPU, in one go (this project's own machines have none):
#   tests/test_cuda.py (skipped without a GPU), the GPU modes of the speed benchmarks
#   (train_throughput, device_decode, ntxent, augment_throughput), then, to see which CPU tests assume
#   a CPU, the data-path, engine and resume tests with the GPU visible (the suite normally hides it,
#   conftest.py; Lightning's accelerator "auto" then picks it; at least 17 failed on 2026-12-04).
# Each step has its own time limit and writes OUT/<step>.txt; a failing step does not stop the next.
#
#   bash benchmarks/gpu_checks.sh OUT          # python3 must hold torch with CUDA and the project's dependencies
#   PYTHON=.venv/bin/python bash benchmarks/gpu_checks.sh gpu-checks
# lightly and kornia (the speed benchmarks' comparisons) are imported when installed, e.g. from wheels:
#   pip install --target /tmp/site lightly==1.6.0 kornia==0.9.0 kornia_rs==0.2.0 && PYTHONPATH=/tmp/site bash ...
set -u
out=${1:?usage: bash benchmarks/gpu_checks.sh OUT_FOLDER}
py=${PYTHON:-python3}
mkdir -p "$out"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1

step() {  # step NAME SECONDS COMMAND...
    local name=$1 limit=$2 start rc
    shift 2
    echo "== $name (limit $limit s): $*"
    start=$(date +%s)
    timeout "$limit" "$@" >"$out/$name.txt" 2>&1
    rc=$?
    echo "   exit $rc after $(($(date +%s) - start)) s"
    tail -n 30 "$out/$name.txt"
}

step env 60 sh -c "nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv; nproc; $py -c '
import torch, torchvision, lightning
print(\"torch\", torch.__version__, \"torchvision\", torchvision.__version__, \"lightning\", lightning.__version__)
print(torch.cuda.get_device_name(), \"bf16:\", torch.cuda.is_bf16_supported())'"
step cuda_tests 150 env SELFSUP_TEST_CUDA=1 "$py" -m pytest -q -p no:cacheprovider -rA tests/test_cuda.py
step train_throughput 150 sh -c "$py benchmarks/speed/train_throughput.py --device cuda --backbone resnet18 --epoch --workers 8 \
    && $py benchmarks/speed/train_throughput.py --device cuda --backbone resnet18 --steps 30 --workers 8"
step device_decode 90 "$py" benchmarks/speed/device_decode.py --device cuda --workers 8 --images 1000
step ntxent 45 "$py" benchmarks/speed/ntxent.py --device cuda --threads 1
step augment_throughput 110 "$py" benchmarks/speed/augment_throughput.py --device cuda --threads 1,8 --repeats 3
step suite_with_gpu 120 env SELFSUP_TEST_CUDA=1 "$py" -m pytest -q -p no:cacheprovider -n 8 tests/test_datapath.py tests/test_engine.py \
    tests/test_engine_methods.py tests/test_resume.py tests/test_memory_format.py tests/test_micro_batches.py
