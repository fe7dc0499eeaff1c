#!/usr/bin/env bash
# The main job on shipped data: builds the moeroute CLI and runs it on the files in
# examples/data and tests/data. Outputs go to out/.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
bash scripts/deps.sh
cmake -S . -B build/demo -DCMAKE_BUILD_TYPE=Release -DMOEROUTE_BUILD_TESTS=OFF \
  -DMOEROUTE_BUILD_BENCHMARKS=OFF -DMOEROUTE_BUILD_EXAMPLES=OFF >/dev/null
cmake --build build/demo -j "$(nproc)" >/dev/null
mr=build/demo/tools/moeroute/moeroute
mkdir -p out

echo "== routing: 512 tokens of synthetic router logits (256 experts) =="
logits=examples/data/synthetic_logits_t512_e256.npy
$mr route --logits "$logits" --preset qwen3.6-35b-a3b -o out/route_qwen3.6.json
$mr route --logits "$logits" --preset qwen3.6-35b-a3b-adaptive -o out/route_qwen3.6_adaptive.json
$mr route --logits "$logits" --preset deepseek-v3 -o out/route_deepseek.json
