#!/usr/bin/env bash
# A/B of the breakers' burst limit on one binary: the checkout benchmark
# with the shipped sagas.toml (burst = 5 for every dependency) against the
# same file with burst = 0 (no limit), runs alternating in one session so
# both see the same machine. Two loads: 200 in flight without latency,
# and 2,000 in flight with 150 ms of provider latency. Prints each run as
# a JSON line, then the median sagas/s per side and the ratio.
#   scripts/bench-burst.sh [BINARY=target/release/sagaflow] [RUNS=3] [SAGAS=30000]
set -euo pipefail
cd "$(dirname "$0")/.."
bin="${1:-target/release/sagaflow}"
runs="${2:-3}"
sagas="${3:-30000}"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cp sagas.toml "$work/burst.toml"
python3 - sagas.toml "$work/noburst.toml" <<'PY'
import re, sys
text = open(sys.argv[1]).read()
text = re.sub(r"(?m)^burst = \d+$", "burst = 0", text)
for dep in ("stock", "orders"):
    text = text.replace(f"[breakers.{dep}]\n", f"[breakers.{dep}]\nburst = 0\n", 1)
assert text.count("burst = 0") == 3, "sagas.toml: expected [breakers.payment] burst, [breakers.stock], [breakers.orders]"
open(sys.argv[2], "w").write(text)
PY
out="$work/runs.jsonl"
loads=("--in-flight 200" "--in-flight 2000 --provider-latency 150ms")
for load in "${loads[@]}"; do
  for i in $(seq "$runs"); do
    for side in burst noburst; do
      # shellcheck disable=SC2086
      line=$("$bin" bench --activities checkout --provider separate --sagas "$sagas" $load \
        --config "$work/$side.toml" --data "$work/data-$side-$i" --json)
      rm -rf "$work/data-$side-$i"
      echo "{\"side\":\"$side\",\"load\":\"$load\",\"run\":$i,\"result\":$line}" | tee -a "$out"
    done
  done
done
python3 - "$out" <<'PY'
import json, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
for load in dict.fromkeys(r["load"] for r in rows):
    med = {side: statistics.median(r["result"]["sagas_per_sec"] for r in rows
                                   if r["side"] == side and r["load"] == load)
           for side in ("burst", "noburst")}
    print(json.dumps({"load": load,
                      "burst_5_median_sagas_per_sec": round(med["burst"]),
                      "burst_0_median_sagas_per_sec": round(med["noburst"]),
                      "ratio": round(med["burst"] / med["noburst"], 3)}))
PY
