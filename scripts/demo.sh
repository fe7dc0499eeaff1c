#!/usr/bin/env bash
# The main job on shipped data: builds the moeroute CLI and runs the whole pipeline on the files
# in examples/data and tests/data (real routing traces, real ATX policies). Outputs go to out/.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
bash scripts/deps.sh
echo "== building the moeroute CLI (Release) =="
cmake -S . -B build/demo -DCMAKE_BUILD_TYPE=Release -DMOEROUTE_BUILD_TESTS=OFF \
  -DMOEROUTE_BUILD_BENCHMARKS=OFF -DMOEROUTE_BUILD_EXAMPLES=OFF >/dev/null
cmake --build build/demo -j "$(nproc)" >/dev/null
mr=build/demo/tools/moeroute/moeroute
mkdir -p out
trace=tests/data/traces/mixtral-8x7b_humaneval_routing.jsonl
start=$SECONDS

echo
echo "== 1. routing: 512 tokens of synthetic router logits, 256 experts (examples/data) =="
logits=examples/data/synthetic_logits_t512_e256.npy
$mr route --logits "$logits" --preset qwen3.6-35b-a3b -o out/route_qwen3.6.json
$mr route --logits "$logits" --preset qwen3.6-35b-a3b-adaptive -o out/route_qwen3.6_adaptive.json
$mr route --logits "$logits" --preset deepseek-v3 -o out/route_deepseek.json

echo
echo "== 2. is an expert cache worth it? real Mixtral-8x7B routing on a HumanEval prompt =="
set +e
$mr concentration --trace "$trace" --model-name Mixtral-8x7B -o out/concentration_mixtral.json
echo "(exit code $?: 0 = cache not justified, 5 = a cache could help)"
set -e

echo
echo "== 3. residency policies: the real ATX 20% global policy of Qwen3.6-35B-A3B sliced at 5-20% =="
$mr policy pareto tests/data/atx/combined_top_20pct_global_experts.atx.json --percents 5,10,15,20 \
  --layers 40 --cell-mib 1.83202 -o out/pareto_global.json
$mr policy build --trace "$trace" --percent 10 --unit cell --name mixtral_humaneval_top10pct_cells \
  -o out/mixtral_top10pct_cells.atx.json
echo "built out/mixtral_top10pct_cells.atx.json (top 10% of Mixtral's 256 layer-expert cells by routing count)"

echo
echo "== 4. cache simulation on the Mixtral trace at 5/10/20/40% of its 256 cells =="
for p in lru layer-cycle belady; do
  $mr cache-sim --trace "$trace" --policy "$p" --capacity 13,26,51,102 -o "out/cache_sim_$p.json"
done
$mr cache-sim --trace "$trace" --policy lru --capacity 13,26,51,102 --curve --svg out/cache_sim_lru.svg -o out/cache_sim_curve.json

echo
echo "== 5. offloaded MoE stack on Vulkan: the Mixtral trace replayed under a 25% VRAM budget =="
$mr run --trace "$trace" --max-tokens 24 --pin out/mixtral_top10pct_cells.atx.json \
  --policies none,lru,layer-cycle,pinned,belady --json out/run_mixtral.json

echo
echo "== 6. the same stack routed by the router (16 layers x 64 experts, top-8), with and without zero-gating =="
$mr run --router --layers 16 --experts 64 --topk 8 --tokens 12 --cum-prob 0.75 --min-k 2 \
  --policies lru --json out/run_router_zero_gating.json

echo
echo "== 7. one MoE layer of real quantized models (ggml's golden files): Q4_K_M-style and gpt-oss MXFP4 =="
g=tests/data/ggml_golden
$mr ffn --model $g/mixed.gguf --block 1 --x $g/mixed.x.npy --route --ids-out out/ffn_mixed_ids.npy \
  -o out/ffn_mixed_eigen.npy
$mr ffn --model $g/mixed.gguf --block 1 --x $g/mixed.x.npy --route --backend vulkan -o out/ffn_mixed_vulkan.npy
$mr ffn --model $g/gptoss.gguf --block 0 --x $g/gptoss.x.npy --route --backend vulkan -o out/ffn_gptoss_vulkan.npy

echo
echo "== 8. expert placement for 8 GPUs from the first half of the Qwen1.5-MoE trace, judged on the second =="
qtrace=tests/data/traces/qwen1.5-moe-a2.7b_gsm8k_vllm.jsonl
for alg in eplb moeroute; do
  $mr placement --trace "$qtrace" --first-half --gpus 8 --redundant 4 --algorithm $alg --format sglang \
    -o out/placement_qwen_$alg.sglang.json
  $mr placement eval --trace "$qtrace" --second-half --gpus 8 --placement out/placement_qwen_$alg.sglang.json \
    -o out/placement_qwen_$alg.eval.json
  echo "$alg: held-out balancedness $(grep -m1 '"balancedness"' out/placement_qwen_$alg.eval.json | tr -dc '0-9.')"
done

echo
echo "== 9. report =="
$mr report --trace "$trace" --pareto out/pareto_global.json --pareto tests/data/atx/policy_pareto_comparison.json \
  --run out/run_mixtral.json --run out/run_router_zero_gating.json --title "moeroute demo report" -o out/report.html
echo "pipeline ran in $((SECONDS - start)) s; open out/report.html"
