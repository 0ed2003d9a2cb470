#!/usr/bin/env bash
# Every GPU figure of benchmarks/results/ in one run (about 10 minutes on an H100/H200):
#   bash benchmarks/run_gpu.sh [OUT_DIR]
# Each part writes its own results, so a failure in one leaves the others.
set -u
out=${1:-${OUT:-benchmarks/results}}
mkdir -p "$out"
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$out/gpu_info.txt"
python -c "import torch, importlib.util as u; print('torch', torch.__version__, 'timm', u.find_spec('timm') is not None, 'transformers', u.find_spec('transformers') is not None)" | tee -a "$out/gpu_info.txt"
# 1. eager: every implementation, bf16, the GPU rows and batch-1 latency
timeout 300 python benchmarks/bench.py --device cuda --no-compile --repeats 8 --warmup 3 \
  --rows vits14:224:512,vitl14:518:32,vitg14:518:16 --latency vits14:224,vitl14:518 --out "$out" --tag cuda_eager \
  2>&1 | tail -n 60
# 2. compiled: minidino's fast mode against the compiled peer (timm), ViT-S and ViT-L
timeout 300 python benchmarks/bench.py --device cuda --compile --repeats 10 --only minidino,minidino-compile,timm-compile \
  --rows vits14:224:512,vitl14:518:32 --latency vits14:224,vitl14:518 --out "$out" --tag cuda_compile \
  2>&1 | tail -n 60
# 3. mixed-size lists: one packed call against a per-image loop (bf16), the claim that packing pays on a GPU
timeout 60 python benchmarks/bench_list.py --device cuda --repeats 20 --out "$out/list_batching_cuda.md" 2>&1 | tail -n 12
