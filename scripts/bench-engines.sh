#!/usr/bin/env bash
# Side by side, in one run: the checkout saga with the same activities
# (embedded stock and orders, payment sandbox over HTTP) on the embedded
# engine and on a local Temporal dev server (SQLite file, as
# `start-dev --db-filename` gives; scripts/services.sh starts it).
# Prints one JSON line per engine, then the ratio.
#   scripts/bench-engines.sh [SAGAS] [IN_FLIGHT]
set -euo pipefail
cd "$(dirname "$0")/.."
sagas="${1:-500}"
in_flight="${2:-50}"
scripts/services.sh temporal
cargo build --release --locked -p sagaflow >&2
b=target/release/sagaflow
embedded=$($b bench --engine embedded --activities checkout --sagas "$sagas" --in-flight "$in_flight" --json)
temporal=$($b bench --engine temporal --activities checkout --sagas "$sagas" --in-flight "$in_flight" --json)
echo "$embedded"
echo "$temporal"
python3 - "$embedded" "$temporal" <<'PY'
import json, sys
e, t = json.loads(sys.argv[1]), json.loads(sys.argv[2])
print(json.dumps({
    "sagas": e["sagas"], "in_flight": e["in_flight"],
    "throughput_ratio_embedded_over_temporal": round(e["sagas_per_sec"] / t["sagas_per_sec"], 1),
    "p50_ratio_temporal_over_embedded": round(t["p50_ms"] / e["p50_ms"], 1),
    "p99_ratio_temporal_over_embedded": round(t["p99_ms"] / e["p99_ms"], 1),
}))
PY
