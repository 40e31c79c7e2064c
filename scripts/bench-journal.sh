#!/usr/bin/env bash
# A journal of millions: noop throughput on a journal already holding
# FILL ended sagas next to a fresh journal's, in one session (fresh, big,
# fresh again, so drift shows); the time from opening the big journal to
# its first new saga's end; `list --limit 20` and `stats` on it; then, with
# a short retention, the journal's size over a steady-state run.
#   scripts/bench-journal.sh [BINARY=target/release/sagaflow]
# Env: FILL (default 1000000), N (sagas per measured run, 20000),
# STEADY (sagas of the retention run, 300000), RETENTION ("10s"),
# DIR (scratch, /tmp/sagaflow-bench-journal; about 2 GB at 1M sagas).
set -euo pipefail
bin="$(realpath "${1:-target/release/sagaflow}")"
fill="${FILL:-1000000}"
n="${N:-20000}"
steady="${STEADY:-300000}"
retention="${RETENTION:-10s}"
dir="${DIR:-/tmp/sagaflow-bench-journal}"
cd "$(dirname "$0")/.."
rm -rf "$dir"
mkdir -p "$dir"
out="$dir/results.jsonl"
run() { # label, then bench arguments
  local label=$1
  shift
  local line
  line=$("$bin" bench --sagas "$n" --in-flight 200 --json "$@")
  echo "{\"run\":\"$label\",\"result\":$line}" | tee -a "$out"
}
ms() { # milliseconds a command takes, best of 5 (the CLI starts cold each time)
  local best=999999 t0 t1
  for _ in 1 2 3 4 5; do
    t0=$(date +%s%N)
    "$@" >/dev/null
    t1=$(date +%s%N)
    best=$(( (t1 - t0) / 1000000 < best ? (t1 - t0) / 1000000 : best ))
  done
  echo "$best"
}

run fresh --data "$dir/fresh-1"
echo "bench-journal: filling $dir/big with $fill ended sagas ..." >&2
"$bin" bench --sagas "$fill" --in-flight 200 --json --data "$dir/big" >"$dir/fill.json"
run big --data "$dir/big" --keep-journal
run fresh-again --data "$dir/fresh-2"
list_ms=$(ms "$bin" list --limit 20 --data "$dir/big")
stats_ms=$(ms "$bin" stats --data "$dir/big")
echo "{\"run\":\"queries\",\"list_limit_20_ms\":$list_ms,\"stats_ms\":$stats_ms}" | tee -a "$out"

echo "bench-journal: $steady sagas with retention $retention; the journal's size every 2 s:" >&2
"$bin" bench --sagas "$steady" --in-flight 200 --retention "$retention" --data "$dir/steady" 2>&1 \
  | tee "$dir/steady.log" | grep -E "journal|sagas/s" >&2
python3 - "$out" "$dir/steady.log" <<'PY'
import json, re, sys
rows = {r["run"]: r for r in map(json.loads, open(sys.argv[1]))}
fresh = (rows["fresh"]["result"]["sagas_per_sec"] + rows["fresh-again"]["result"]["sagas_per_sec"]) / 2
big = rows["big"]["result"]
sizes = [float(m) for m in re.findall(r"journal ([0-9.]+) MB", open(sys.argv[2]).read())]
half = len(sizes) // 2
print(json.dumps({
    "journal_sagas": big["journal_sagas_before"],
    "big_sagas_per_sec": big["sagas_per_sec"],
    "fresh_sagas_per_sec_mean": round(fresh),
    "ratio_big_over_fresh": round(big["sagas_per_sec"] / fresh, 3),
    "first_saga_ms_on_big": big["first_saga_ms"],
    "list_limit_20_ms": rows["queries"]["list_limit_20_ms"],
    "stats_ms": rows["queries"]["stats_ms"],
    "steady_journal_mb_every_2s": sizes,
    "steady_second_half_growth_mb": round(sizes[-1] - sizes[half], 1) if sizes else None,
}))
PY
