#!/usr/bin/env bash
# The speed benchmarks of MISSION.md at the laptop defaults and at the full preset's sizes,
# one after another, for a GPU or TPU host. Each log goes to OUT_DIR; the ratio lines to stdout.
#
#   bash experiments/bench_accelerator.sh [OUT_DIR]      # SMALL=1: tiny sizes, a dry run on a CPU
set -u
out=${1:-bench_out}
mkdir -p "$out"
full_model="--d_model 512 --num_layers 8"
if [[ "${SMALL:-0}" == 1 ]]; then full_model="--d_model 64 --num_layers 2"; fi

bench() {  # bench NAME MODULE ARGS...: runs one benchmark, keeps its log, prints its figures
  local name=$1; shift
  echo "== $name: python -m $*"
  timeout "${BENCH_TIMEOUT:-300}" "${PYTHON:-python3}" -m "$@" >"$out/$name.log" 2>&1
  echo "   exit $?"
  grep -E "^(device|batched|sequential|search LM|LM FLOP|train_step|matmul|kv_cache|recompute|flops_ratio|ratio)" \
    "$out/$name.log" | sed 's/^/   /'
}

if [[ "${SMALL:-0}" == 1 ]]; then
  bench search_default experiments.bench_search --batch 8 --num_simulations 4 --sequential_problems 2
  bench search_full experiments.bench_search --batch 8 --K 8 --num_simulations 4 --max_len 128 \
    $full_model --num_heads 2 --sequential_problems 2
  bench train_f32 experiments.bench_train_step --batch 4 --seq 64 $full_model --matmul 256
  bench train_bf16 experiments.bench_train_step --batch 4 --seq 64 $full_model --matmul 256 \
    --dtype bfloat16
  bench decode_default experiments.bench_decode --batch 4 --new_tokens 32
  exit 0
fi
# Issue 3's setting (64 problems, K 4, 16 simulations, d_model 128), then the full preset's search.
bench search_default experiments.bench_search
bench search_full experiments.bench_search --batch 100 --K 8 --num_simulations 32 --max_len 512 \
  $full_model --num_heads 8
# One micro-batch of the full preset's Meta-CoT SFT (32 x 512), float32 and bfloat16.
bench train_f32 experiments.bench_train_step --batch 32 --seq 512 $full_model --matmul 8192
bench train_bf16 experiments.bench_train_step --batch 32 --seq 512 $full_model --matmul 8192 \
  --dtype bfloat16
bench decode_default experiments.bench_decode
bench decode_full experiments.bench_decode --batch 256 $full_model
