#!/usr/bin/env bash
# The expert-cache comparison of docs/cache.md in one command: every policy (LRU, FIFO, LFU,
# layer-cycle, LFRU, Least-Stale, recommended, recommended-prefetch, Belady) x the shipped traces x
# both scopes x capacities from 1% to 80% of the cells, with loads, gap closure in loads and in
# stalls, whole trace (first half / second half), and a summary at 10% of the cells.
#
#   bash scripts/cache_table.sh [OUT.md]        (default: print to stdout)
#
# Uses $MOEROUTE when set, else the CLI of build/dev or build/demo, else builds build/demo.
# Takes a few minutes on two cores (every policy is replayed three times per capacity).
set -euo pipefail
cd "$(dirname "$0")/.."
mr=${MOEROUTE:-}
if [ -z "$mr" ]; then
  for b in build/dev build/demo; do
    if [ -x "$b/tools/moeroute/moeroute" ]; then mr=$b/tools/moeroute/moeroute; break; fi
  done
fi
if [ -z "$mr" ]; then
  cmake -S . -B build/demo -DCMAKE_BUILD_TYPE=Release -DMOEROUTE_BUILD_TESTS=OFF \
    -DMOEROUTE_BUILD_BENCHMARKS=OFF -DMOEROUTE_BUILD_EXAMPLES=OFF >/dev/null
  cmake --build build/demo -j "$(nproc)" --target moeroute-cli >/dev/null
  mr=build/demo/tools/moeroute/moeroute
fi
d=tests/data/traces
"$mr" cache-sim --compare \
  --trace "$d/mixtral-8x7b_humaneval_routing.jsonl" \
  --trace "$d/qwen1.5-moe-a2.7b_gsm8k_vllm.jsonl" \
  --trace "$d/flame-moe-290m_pretrain_decode10.jsonl" \
  --percent 1,2,5,10,20,40,60,80 -o "${1:--}"
