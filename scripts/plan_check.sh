#!/usr/bin/env bash
# The planner's check on this machine: the prediction of `moeroute plan --hardware this` for the
# strategy `moeroute run --policies lru --miss MISS` executes against run's measured tokens/s, on
# the same trace, shape and budget. MISS=upload (default) compares the row of the offload engine
# with miss mode upload (an LRU global cache, a hit pass, the uploads, an upload pass); MISS=cpu
# compares "all experts on CPU" (in miss mode cpu nothing is uploaded, every expert runs on the
# quantized CPU FFN); MISS=auto compares the engine's row with miss mode auto, and with
# PREFETCH=coactivation the row of the engine with co-activation prefetch as well. Each round
# measures the machine (plan) and then runs (run) back to back, so both see the same load; the
# script prints every round, the median ratio predicted / measured and the spread (min, max).
# The replay's hits must equal run's in modes upload and cpu; in mode auto the engine decides with
# the costs it measures itself, so a difference is printed instead.
#
#   scripts/plan_check.sh [BUILD_DIR] [ROUNDS]      (default build/dev, 3 rounds)
# Environment: TRACE, SHAPE (E,K,H,F,TYPE), VRAM_MIB, TOKENS, MISS (upload|cpu|auto),
# PREFETCH (none|coactivation, with MISS=auto), CPU_THREADS, ROW (the plan row to compare;
# default from MISS and PREFETCH).
set -euo pipefail
BUILD=${1:-build/dev}
ROUNDS=${2:-3}
BIN="$BUILD/tools/moeroute/moeroute"
TRACE=${TRACE:-tests/data/traces/mixtral-8x7b_humaneval_routing.jsonl}
SHAPE=${SHAPE:-8,2,256,512,q8_0}
VRAM_MIB=${VRAM_MIB:-60}
TOKENS=${TOKENS:-40}
MISS=${MISS:-upload}
PREFETCH=${PREFETCH:-none}
CPU_THREADS=${CPU_THREADS:-1}
case "$MISS/$PREFETCH" in
  upload/none) DEFAULT_ROW="offload engine, LRU global, --miss upload (moeroute run)" ;;
  cpu/none) DEFAULT_ROW="all experts on CPU (--cpu-moe)" ;;
  auto/none) DEFAULT_ROW="offload engine, LRU global, --miss auto (moeroute run)" ;;
  auto/coactivation) DEFAULT_ROW="offload engine, LRU global, --miss auto --prefetch coactivation" ;;
  *) echo "plan_check.sh: MISS must be upload, cpu or auto, PREFETCH none (or coactivation with auto)" >&2; exit 2 ;;
esac
ROW=${ROW:-$DEFAULT_ROW}
IFS=, read -r E K H F TYPE <<<"$SHAPE"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
for i in $(seq 1 "$ROUNDS"); do
  "$BIN" plan --trace "$TRACE" --shape "$SHAPE" --vram-mib "$VRAM_MIB" --hardware this --max-tokens "$TOKENS" \
    --cpu-threads "$CPU_THREADS" -o "$tmp/plan$i.json" --save-hardware "$tmp/hw$i.json" >/dev/null 2>&1
  "$BIN" run --trace "$TRACE" --experts "$E" --hidden "$H" --ffn "$F" --type "$TYPE" --vram-mib "$VRAM_MIB" \
    --max-tokens "$TOKENS" --policies lru --miss "$MISS" --prefetch "$PREFETCH" --cpu-threads "$CPU_THREADS" --json "$tmp/run$i.json" >/dev/null 2>&1
done
python3 - "$tmp" "$ROUNDS" "$ROW" "$MISS" <<'PY'
import json, statistics, sys
tmp, rounds, row, miss = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
ratios = []
for i in range(1, rounds + 1):
    plan = json.load(open(f"{tmp}/plan{i}.json"))
    run = json.load(open(f"{tmp}/run{i}.json"))
    p = next(r for r in plan["policies"] if r["name"] == row)
    m = run["policies"][0]
    same = p["device_hits"] == m["hits"] and p["accesses"] == m["accesses"]
    assert same or miss == "auto", "replays differ"
    ratios.append(p["tokens_per_s"] / m["tokens_per_s"])
    hits = (f"hits {m['hits']}/{m['accesses']} in both" if same else
            f"hits: plan {p['device_hits']}/{p['accesses']}, run {m['hits']}/{m['accesses']}")
    print(f"round {i}: predicted {p['tokens_per_s']:.2f} tok/s, measured {m['tokens_per_s']:.2f} tok/s, "
          f"ratio {ratios[-1]:.3f} ({hits}; run: {m['miss_uploads']} uploads, {m['miss_cpu']} on CPU, "
          f"{m['prefetch_loads']} prefetched)")
med = statistics.median(ratios)
print(f"median ratio predicted/measured: {med:.3f} (min {min(ratios):.3f}, max {max(ratios):.3f}) -> "
      f"{'within' if abs(med - 1) <= 0.25 else 'OUTSIDE'} 25%")
PY
