#!/usr/bin/env bash
# A/B: the same embedded-engine benchmarks on two sagaflow binaries, runs
# alternating (old, new, old, new, ...) in one session so both see the same
# machine; prints each run as a JSON line, then the median sagas/s of each
# side and the ratio new/old per mode.
#   scripts/bench-ab.sh OLD_BINARY NEW_BINARY [RUNS=3]
# Build the old binary from the previous commit, e.g.:
#   git worktree add /tmp/base HEAD~1 && (cd /tmp/base && cargo build --release --locked -p sagaflow)
set -euo pipefail
old="${1:?usage: scripts/bench-ab.sh OLD_BINARY NEW_BINARY [RUNS]}"
new="${2:?usage: scripts/bench-ab.sh OLD_BINARY NEW_BINARY [RUNS]}"
runs="${3:-3}"
cd "$(dirname "$0")/.."
out=$(mktemp)
trap 'rm -f "$out"' EXIT
for mode in "noop 20000" "checkout 10000"; do
  set -- $mode
  for i in $(seq "$runs"); do
    for side in old new; do
      bin=$old; [ "$side" = new ] && bin=$new
      line=$("$bin" bench --activities "$1" --sagas "$2" --in-flight 200 --json)
      echo "{\"side\":\"$side\",\"run\":$i,\"result\":$line}" | tee -a "$out"
    done
  done
done
python3 - "$out" <<'PY'
import json, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
for mode in ("noop", "checkout"):
    med = {}
    for side in ("old", "new"):
        rates = [r["result"]["sagas_per_sec"] for r in rows
                 if r["side"] == side and r["result"]["activities"] == mode]
        med[side] = statistics.median(rates)
    print(json.dumps({"mode": mode, "runs": len(rates),
                      "old_median_sagas_per_sec": round(med["old"]),
                      "new_median_sagas_per_sec": round(med["new"]),
                      "ratio_new_over_old": round(med["new"] / med["old"], 3)}))
PY
