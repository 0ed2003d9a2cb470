#!/usr/bin/env bash
# Every GPU figure of benchmarks/results/, in parts (each writes its own results, so a failure in
# one leaves the others):
#   bash benchmarks/run_gpu.sh [OUT_DIR] [PARTS]
#   PARTS: any of attention list eager compile (default: all four, about 11 minutes on an
#   H100/H200; a device call of at most 10 minutes takes "attention list eager" and then "compile").
set -u
out=${1:-${OUT:-benchmarks/results}}
parts=${2:-attention list eager compile}
mkdir -p "$out"
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$out/gpu_info.txt"
python -c "import torch, importlib.util as u; print('torch', torch.__version__, 'timm', u.find_spec('timm') is not None, 'transformers', u.find_spec('transformers') is not None)" | tee -a "$out/gpu_info.txt"
for part in $parts; do
  case $part in
    attention)  # SDPA backends at the rows' shapes: what a fast mode can gain in attention (~30 s)
      timeout 120 python benchmarks/attention_backends.py --device cuda --out "$out" 2>&1 | tail -n 20 ;;
    list)  # mixed-size lists: one packed call against a per-image loop (bf16) (~20 s)
      timeout 60 python benchmarks/bench_list.py --device cuda --repeats 20 --out "$out/list_batching_cuda.md" 2>&1 | tail -n 12 ;;
    eager)  # every implementation, bf16, the standard GPU rows and batch-1 latency (~4 min)
      timeout 300 python benchmarks/bench.py --device cuda --no-compile --repeats 8 --warmup 3 \
        --rows vits14:224:512,vitl14:518:32,vitg14:518:16 --latency vits14:224,vitl14:518 --out "$out" --tag cuda_eager \
        2>&1 | tail -n 60 ;;
    compile)  # minidino's fast mode against the compiled peers, ViT-S and ViT-L (~5 min)
      timeout 420 python benchmarks/bench.py --device cuda --compile --repeats 10 \
        --only minidino,minidino-compile,timm-compile,transformers-compile \
        --rows vits14:224:512,vitl14:518:32 --latency vits14:224,vitl14:518 --out "$out" --tag cuda_compile \
        2>&1 | tail -n 60 ;;
    *) echo "unknown part $part (attention list eager compile)" >&2 ;;
  esac
done
