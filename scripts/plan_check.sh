#!/usr/bin/env bash
# The planner's check on this machine: the prediction of `moeroute plan --hardware this` for the
# strategy `moeroute run --policies lru --miss MISS` executes against run's measured tokens/s, on
# the same trace, shape and budget. MISS=upload (default) compares the row of the offload engine
# with miss mode upload (an LRU global cache, a hit pass, the uploads, an upload pass); MISS=cpu
# compares "all experts on CPU" (in miss mode cpu nothing is uploaded, every expert runs on the
# quantized CPU FFN). Each round measures the machine (plan) and then runs (run) back to back, so
# both see the same load; the script prints every round and the median ratio predicted / measured.
#
#   scripts/plan_check.sh [BUILD_DIR] [ROUNDS]      (default build/dev, 3 rounds)
# Environment: TRACE, SHAPE (E,K,H,F,TYPE), VRAM_MIB, TOKENS, MISS (upload|cpu), CPU_THREADS,
# ROW (the plan row to compare; default from MISS).
set -euo pipefail
BUILD=${1:-build/dev}
ROUNDS=${2:-3}
BIN="$BUILD/tools/moeroute/moeroute"
TRACE=${TRACE:-tests/data/traces/mixtral-8x7b_humaneval_routing.jsonl}
SHAPE=${SHAPE:-8,2,256,512,q8_0}
VRAM_MIB=${VRAM_MIB:-60}
TOKENS=${TOKENS:-40}
MISS=${MISS:-upload}
CPU_THREADS=${CPU_THREADS:-1}
case "$MISS" in
  upload) DEFAULT_ROW="offload engine, LRU global, --miss upload (moeroute run)" ;;
  cpu) DEFAULT_ROW="all experts on CPU (--cpu-moe)" ;;
  *) echo "plan_check.sh: MISS must be upload or cpu" >&2; exit 2 ;;
esac
ROW=${ROW:-$DEFAULT_ROW}
IFS=, read -r E K H F TYPE <<<"$SHAPE"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
for i in $(seq 1 "$ROUNDS"); do
  "$BIN" plan --trace "$TRACE" --shape "$SHAPE" --vram-mib "$VRAM_MIB" --hardware this --max-tokens "$TOKENS" \
    --cpu-threads "$CPU_THREADS" -o "$tmp/plan$i.json" --save-hardware "$tmp/hw$i.json" >/dev/null 2>&1
  "$BIN" run --trace "$TRACE" --experts "$E" --hidden "$H" --ffn "$F" --type "$TYPE" --vram-mib "$VRAM_MIB" \
    --max-tokens "$TOKENS" --policies lru --miss "$MISS" --cpu-threads "$CPU_THREADS" --json "$tmp/run$i.json" >/dev/null 2>&1
done
python3 - "$tmp" "$ROUNDS" "$ROW" <<'PY'
import json, statistics, sys
tmp, rounds, row = sys.argv[1], int(sys.argv[2]), sys.argv[3]
ratios = []
for i in range(1, rounds + 1):
    plan = json.load(open(f"{tmp}/plan{i}.json"))
    run = json.load(open(f"{tmp}/run{i}.json"))
    p = next(r for r in plan["policies"] if r["name"] == row)
    m = run["policies"][0]
    assert p["device_hits"] == m["hits"] and p["accesses"] == m["accesses"], "replays differ"
    ratios.append(p["tokens_per_s"] / m["tokens_per_s"])
    print(f"round {i}: predicted {p['tokens_per_s']:.2f} tok/s, measured {m['tokens_per_s']:.2f} tok/s, "
          f"ratio {ratios[-1]:.3f} (hits {m['hits']}/{m['accesses']} in both)")
med = statistics.median(ratios)
print(f"median ratio predicted/measured: {med:.3f} -> {'within' if abs(med - 1) <= 0.25 else 'OUTSIDE'} 25%")
PY
