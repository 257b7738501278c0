#!/usr/bin/env bash
# The GPU checks of one session, in one go: the benchmark on CUDA for the default model and for a
# gpt2-xl-shaped model with random weights, then notebook 01 in the full profile on CUDA.
#   bash benchmarks/gpu_check.sh OUT_DIR      (python3 must see torch with CUDA and this package)
set -euo pipefail
out=${1:?usage: gpu_check.sh OUT_DIR}
mkdir -p "$out"
python3 - <<'PY'
import torch
assert torch.cuda.is_available(), "no CUDA device"
print("device:", torch.cuda.get_device_name(), "torch", torch.__version__)
PY
time python3 benchmarks/bench_engine.py --device cuda --cases 3 --stats-texts 2000 --batch-sizes 1,4,8 \
    --ablation --profile-split --json-out "$out/bench_smollm2_cuda.json"
time python3 benchmarks/bench_engine.py --device cuda --random-gpt2-xl --cases 2 --stats-texts 500 \
    --batch-sizes 1,4,8 --json-out "$out/bench_random_gpt2xl_cuda.json"
time python3 scripts/reproduce.py --model smollm2-135m --profile full --out "$out" notebooks/01_denominators.ipynb
tar czf "$out/figures_cuda.tgz" figures/01_* figures/claims figures/reproduce_timings.csv
