#!/usr/bin/env bash
# The checks that need a CUDA GPU (issues 5 and 8), as one script for a GPU machine:
#   bash bench/gpu_checks.sh OUT_DIR
# 1. the Model Factory on the GPU: CPU vs GPU vs GPU again, torchrun with 2 processes (gpu_factory_check.py);
# 2. Factory vs a plain Trainer + peft script, both on the GPU (bench_factory.py --device cuda, LM task;
#    the MiniLM classification task needs the packaged model, which a bare GPU image may not have);
# 3. multi-LoRA serving on the GPU, every arm (bench_serving.py --device cuda).
# It needs python3 with torch (CUDA), transformers, peft and the project's requirements importable.
# Each step has its own time limit so one slow step cannot starve the others; results go to OUT_DIR.
set -uo pipefail
out=${1:-/tmp/provenant-gpu}
mkdir -p "$out"
cd "$(dirname "$0")/.."
export PYTHONPATH=$PWD/backend:$PWD/indexer${PYTHONPATH:+:$PYTHONPATH}
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 PYTHONUNBUFFERED=1
py=${PYTHON:-python3}
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$out/gpu.txt"
$py -c 'import torch, transformers, peft; print("torch", torch.__version__, "transformers", transformers.__version__, "peft", peft.__version__, "cpus", __import__("os").cpu_count())' | tee -a "$out/gpu.txt"
step() {  # step NAME SECONDS COMMAND...
    local name=$1 limit=$2; shift 2
    local started=$SECONDS
    timeout "$limit" "$@" > "$out/$name.log" 2>&1
    echo "$name: rc=$? in $((SECONDS - started)) s"
    tail -n 4 "$out/$name.log"
}
step factory_check 170 $py bench/gpu_factory_check.py --rows 512 --out "$out/factory_check.json"
step bench_factory 130 $py bench/bench_factory.py --device cuda --tasks lm --rows 2048 --batch-size 32 --repeats 2 \
    --threads 8 --out "$out/bench_factory.json"
step bench_serving 170 $py bench/bench_serving.py --device cuda --adapters 8 32 --repeats 2 --out "$out/bench_serving.json"
