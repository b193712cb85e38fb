#!/usr/bin/env bash
# The speed benchmarks at the laptop defaults and at the full preset's sizes, one after another,
# for a GPU or TPU host. Each log goes to OUT_DIR; the figures and each exit status to stdout.
#
#   bash experiments/bench_accelerator.sh [OUT_DIR]
#
# PYTHON: the interpreter (python3); BENCH_TIMEOUT: seconds per benchmark (300);
# SMALL=1: tiny sizes, a dry run on a CPU. Exits non-zero if any benchmark failed.
set -u
out=$(mkdir -p "${1:-bench_out}" && cd "${1:-bench_out}" && pwd) || exit 1
cd "$(dirname "$0")/.." || exit 1  # the repository root, where `python -m experiments.*` works
full_model=(--d_model 512 --num_layers 8 --num_heads 8)
if [[ "${SMALL:-0}" == 1 ]]; then full_model=(--d_model 64 --num_layers 2 --num_heads 2); fi
failed=0

bench() {  # bench NAME MODULE ARGS...: runs one benchmark, keeps its log, prints its figures
  local name=$1 status; shift
  echo "== $name: python -m $*"
  timeout "${BENCH_TIMEOUT:-300}" "${PYTHON:-python3}" -m "$@" >"$out/$name.log" 2>&1
  status=$?
  echo "   exit $status"
  if (( status != 0 )); then failed=1; fi
  grep -E "^(device|batched|sequential|search LM|LM FLOP|train_step|matmul|kv_cache|recompute|flops_ratio|ratio|speedup)" \
    "$out/$name.log" | sed 's/^/   /'
}

if [[ "${SMALL:-0}" == 1 ]]; then
  bench search_default experiments.bench_search --batch 8 --num_simulations 4 --sequential_problems 2
  bench search_full experiments.bench_search --batch 8 --K 8 --num_simulations 4 --max_len 128 \
    "${full_model[@]}" --sequential_problems 2
  bench train experiments.bench_train_step --batch 4 --seq 64 "${full_model[@]}" --matmul 256 \
    --dtypes float32 bfloat16
  bench decode_default experiments.bench_decode --batch 4 --new_tokens 32
  exit "$failed"
fi
# The search benchmark's own setting (64 problems, K 4, 16 simulations, d_model 128), then the
# full preset's sizes (float32, PUCT as in the benchmark).
bench search_default experiments.bench_search
bench search_full experiments.bench_search --batch 100 --K 8 --num_simulations 32 --max_len 512 \
  "${full_model[@]}"
# One micro-batch of the full preset's Meta-CoT SFT (32 x 512), float32 and bfloat16 in one run.
bench train experiments.bench_train_step --batch 32 --seq 512 "${full_model[@]}" --matmul 8192 \
  --dtypes float32 bfloat16
bench decode_default experiments.bench_decode
bench decode_full experiments.bench_decode --batch 256 "${full_model[@]}"
exit "$failed"
