#!/usr/bin/env bash
# Temporal: history events per saga and sagas/s, steps as local activities
# next to one activity task per step (the plain five-activity workflow), on
# one dev server in one session, in alternating rounds so drift shows.
#   scripts/bench-temporal.sh [BINARY=target/release/sagaflow]
# Env: N (sagas per run, 200), IN_FLIGHT (50), ROUNDS (2),
# ACTIVITIES ("checkout noop"). Needs a Temporal server on [temporal]
# address (`scripts/services.sh temporal` starts the dev server).
set -euo pipefail
bin="$(realpath "${1:-target/release/sagaflow}")"
n="${N:-200}"
in_flight="${IN_FLIGHT:-50}"
rounds="${ROUNDS:-2}"
activities="${ACTIVITIES:-checkout noop}"
cd "$(dirname "$0")/.."
for round in $(seq 1 "$rounds"); do
  for what in $activities; do
    for steps in activities local; do
      line=$("$bin" bench --engine temporal --activities "$what" --temporal-steps "$steps" \
        --sagas "$n" --in-flight "$in_flight" --json)
      echo "{\"round\":$round,\"result\":$line}"
    done
  done
done | python3 -c '
import json, sys
rows = [json.loads(l) for l in sys.stdin]
print("| round | activities | steps | sagas/s | p50 ms | worker CPU ms/saga | history events/saga |")
print("|---:|---|---|---:|---:|---:|---:|")
for r in rows:
    x = r["result"]
    cells = [r["round"], x["activities"], x["temporal_steps"], x["sagas_per_sec"],
             round(x["p50_ms"]), "%.2f" % x["worker_cpu_ms_per_saga"], x["history_events_per_saga"]]
    print("| " + " | ".join(str(c) for c in cells) + " |")
by = {}
for r in rows:
    x = r["result"]
    by.setdefault((x["activities"], x["temporal_steps"]), []).append(x)
for what in sorted({k[0] for k in by}):
    a, l = by.get((what, "activities")), by.get((what, "local"))
    if a and l:
        rate = sum(x["sagas_per_sec"] for x in l) / sum(x["sagas_per_sec"] for x in a)
        ev = sum(x["history_events_per_saga"] for x in l) / sum(x["history_events_per_saga"] for x in a)
        print(f"{what}: local / activity tasks: sagas/s {rate:.2f}x, history events {ev:.2f}x")
'
