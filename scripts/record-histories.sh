#!/usr/bin/env bash
# Records the Temporal histories the replay test (worker/src/engine/
# temporal/replay_tests.rs) replays, from a real dev server, for the step
# modes of `[temporal] steps` (issue 29). Writes worker/tests/histories/
# NAME.json; existing files are kept unless FORCE=1. Never edit a recorded
# history to make a test pass: record it again.
#
#   scripts/record-histories.sh [BINARY=target/release/sagaflow]
#
# Records: checkpointed-completed, checkpointed-compensated (a declined
# card), checkpointed-retried (a step retried after a provider error),
# checkpointed-takeover and local-takeover (a worker aborted right after the
# capture's answer, its workflow task timed out and re-run by another),
# checkpointed-parked-update (a compensation that parks, then `sagaflow
# retry`, an Update, finishes it), local-completed-v2 (every step local,
# in the input form after step modes: no patch marker).
set -euo pipefail
bin="$(realpath "${1:-target/release/sagaflow}")"
cd "$(dirname "$0")/.."
exec python3 - "$bin" <<'PY'
import json, os, subprocess, sys, tempfile, time

BIN = sys.argv[1]
OUT = "worker/tests/histories"
FORCE = os.environ.get("FORCE") == "1"
work = tempfile.mkdtemp(prefix="sagaflow-histories-")
ENV = dict(os.environ)
ENV.pop("SAGAFLOW_CONFIG", None)
ENV.pop("SAGAFLOW_DATA", None)
ENV.pop("SAGAFLOW_TEST_ABORT_AFTER", None)

def deployment(name, tweaks):
    data = os.path.join(work, name)
    os.makedirs(data)
    text = open("sagas.toml").read()
    for a, b in [('engine = "embedded"', 'engine = "temporal"'),
                 ('task_queue = "sagaflow"', f'task_queue = "histories-{name}-{time.time_ns()}"')] + tweaks:
        assert a in text, a
        text = text.replace(a, b, 1)
    config = os.path.join(data, "sagas.toml")
    open(config, "w").write(text)
    return data, config

def sf(data, config, *args, env=None, check=True):
    r = subprocess.run([BIN, *args, "--config", config, "--data", data],
                       env=env or ENV, capture_output=True, text=True)
    if check and r.returncode != 0:
        raise SystemExit(f"sagaflow {' '.join(args)}: {r.stderr}")
    return r.stdout

def submit(data, config, order_id, pm="pm_card_visa"):
    path = os.path.join(data, order_id + ".json")
    json.dump({"order_id": order_id, "customer": "c1", "items": [{"sku": "SKU-1", "qty": 1}],
               "amount": 1999, "currency": "usd", "payment_method": pm}, open(path, "w"))
    sf(data, config, "submit", path)

def export(data, config, saga, name):
    target = os.path.join(OUT, name + ".json")
    if os.path.exists(target) and not FORCE:
        print(f"kept {target} (FORCE=1 records it again)")
        return
    sf(data, config, "history", saga, "--engine", "temporal", "--export", target)
    print(f"recorded {target}")

def status(data, config, saga):
    return json.loads(sf(data, config, "show", saga, "--json"))["saga"]["status"]

def mode(m):
    return [('steps = "checkpointed"', f'steps = "{m}"')]

# Completed and declined, checkpointed; completed, every step local.
data, config = deployment("plain", [])
sf(data, config, "stock", "set", "SKU-1=5")
submit(data, config, "h-ok")
submit(data, config, "h-declined", "pm_card_chargeDeclined")
sf(data, config, "run", "--until-idle")
export(data, config, "h-ok", "checkpointed-completed")
export(data, config, "h-declined", "checkpointed-compensated")
data, config = deployment("local", mode("local"))
sf(data, config, "stock", "set", "SKU-1=5")
submit(data, config, "h-local")
sf(data, config, "run", "--until-idle")
export(data, config, "h-local", "local-completed-v2")

# A retried step: the provider answers 500 to a third of the calls; the
# first saga whose history holds a retry timer.
data, config = deployment("retried", [('error_rate = 0.0', 'error_rate = 0.3')])
sf(data, config, "stock", "set", "SKU-1=50")
for i in range(12):
    submit(data, config, f"h-retry-{i}")
sf(data, config, "run", "--until-idle")
for i in range(12):
    saga = f"h-retry-{i}"
    path = os.path.join(data, saga + ".history.json")
    sf(data, config, "history", saga, "--engine", "temporal", "--export", path)
    events = json.load(open(path))["events"]
    timers = any("TimerStartedEventAttributes" in (e.get("attributes") or {}) for e in events)
    if timers and status(data, config, saga) == "completed":
        export(data, config, saga, "checkpointed-retried")
        break
else:
    raise SystemExit("no saga was retried: run again")

# A worker aborted right after the capture's answer; another takes over.
for m in ("checkpointed", "local"):
    data, config = deployment(f"takeover-{m}", mode(m))
    sf(data, config, "stock", "set", "SKU-1=5")
    submit(data, config, f"h-takeover-{m}")
    aborting = dict(ENV, SAGAFLOW_TEST_ABORT_AFTER="payment.capture")
    subprocess.run([BIN, "run", "--config", config, "--data", data], env=aborting,
                   capture_output=True)
    sf(data, config, "run", "--until-idle")
    assert status(data, config, f"h-takeover-{m}") == "completed"
    export(data, config, f"h-takeover-{m}", f"{m}-takeover")

# A compensation that parks (a slow provider, a void with two attempts),
# then `sagaflow retry` (an Update) on a worker whose provider is quick.
slow = [('latency = "0ms"', 'latency = "300ms"'),
        ('timeout = "10s"\nretry = { initial_interval = "100ms", backoff_coefficient = 2.0, max_interval = "5s", max_attempts = 5, non_retryable = ["card_declined"] }',
         'timeout = "100ms"\nretry = { initial_interval = "10ms", max_attempts = 2, non_retryable = ["card_declined"] }'),
        ('compensation_retry = { initial_interval = "100ms", backoff_coefficient = 2.0, max_interval = "5s", max_attempts = 10 }',
         'compensation_retry = { initial_interval = "10ms", max_attempts = 2 }'),
        ('[breakers.payment]\nfailures = 5', '[breakers.payment]\nenabled = false\nfailures = 5')]
data, config = deployment("parked", slow)
sf(data, config, "stock", "set", "SKU-1=5")
submit(data, config, "h-parked")
sf(data, config, "run", "--until-idle")
assert status(data, config, "h-parked") == "parked", status(data, config, "h-parked")
quick = open(config).read().replace('latency = "300ms"', 'latency = "0ms"', 1)
open(config, "w").write(quick)
worker = subprocess.Popen([BIN, "run", "--config", config, "--data", data], env=ENV,
                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
try:
    time.sleep(3)
    sf(data, config, "retry", "h-parked", "--reason", "recording a history")
    for _ in range(300):
        if status(data, config, "h-parked") != "parked":
            break
        time.sleep(0.2)
finally:
    worker.terminate()
    worker.wait()
assert status(data, config, "h-parked") in ("compensated", "compensating"), status(data, config, "h-parked")
sf(data, config, "run", "--until-idle")
export(data, config, "h-parked", "checkpointed-parked-update")
PY
