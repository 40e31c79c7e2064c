#!/usr/bin/env bash
# Temporal under load, per `[temporal] steps` mode (issue 29): checkout
# sagas through TWO worker processes (`sagaflow run`), a standalone payment
# sandbox answering in 150 ms, stock in Redis, orders on the embedded queue;
# the modes alternate in rounds in one session, so drift shows.
#
#   scripts/bench-temporal-load.sh [BINARY=target/release/sagaflow]
#
# Env: N (sagas per run, 1000), IN_FLIGHT (both workers together, 200:
# `run --max-live IN_FLIGHT/2` each), ROUNDS (2), MODES ("checkpointed
# activities local"), LATENCY (150ms), COMMANDS (operator commands timed
# per run, 20). Needs the Temporal dev server (`scripts/services.sh
# temporal`) and Redis (`scripts/services.sh redis`).
#
# Per run it prints: sagas/s (N over the span from the first saga's start
# to the last one's end, as the cluster recorded them), p50/p99 of the
# sagas' durations, history events per completed saga (the cluster's
# HistoryLength), the two workers' CPU per saga (/proc), and the time from
# `sagaflow cancel` / `sagaflow retry` to its answer for sagas running at
# mid-run (a cancel is applied or refused, a retry of a running saga is
# refused by the workflow's validator: both go through a workflow task,
# which is what load delays). Then the same commands on an idle deployment
# in the same session: a few sagas waiting for the payment breaker (the
# provider answers 503 to everything), so nothing else runs.
set -euo pipefail
bin="$(realpath "${1:-target/release/sagaflow}")"
cd "$(dirname "$0")/.."
temporal="$(command -v temporal || echo "$PWD/.tools/temporal/bin/temporal")"
exec python3 - "$bin" "$temporal" <<'PY'
import json, os, re, statistics, subprocess, sys, tempfile, time

BIN, TEMPORAL = sys.argv[1], sys.argv[2]
N = int(os.environ.get("N", "1000"))
IN_FLIGHT = int(os.environ.get("IN_FLIGHT", "200"))
ROUNDS = int(os.environ.get("ROUNDS", "2"))
MODES = os.environ.get("MODES", "checkpointed activities local").split()
LATENCY = os.environ.get("LATENCY", "150ms")
COMMANDS = int(os.environ.get("COMMANDS", "20"))
ENV = dict(os.environ, SAGAFLOW_REDIS_URL=os.environ.get("SAGAFLOW_REDIS_URL", "redis://127.0.0.1:6379"),
           SAGAFLOW_PAYMENT_API_KEY="sk_test_bench_load")
ENV.pop("SAGAFLOW_CONFIG", None)
ENV.pop("SAGAFLOW_DATA", None)
TICK = os.sysconf("SC_CLK_TCK")
work = tempfile.mkdtemp(prefix="sagaflow-bench-load-")

def log(*a):
    print(*a, file=sys.stderr, flush=True)

def sandbox(*knobs):
    d = os.path.join(work, "provider-" + "-".join(knobs))
    p = subprocess.Popen([BIN, "sandbox", "--port", "0", "--json", "--data", d, *knobs],
                         env=ENV, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    return p, json.loads(p.stdout.readline())["base_url"]

class Deployment:
    def __init__(self, name, mode, url):
        self.name = f"{name}-{os.getpid()}-{time.time_ns()}"
        self.data = os.path.join(work, self.name)
        os.makedirs(self.data)
        text = open("sagas.toml").read()
        for a, b in [('engine = "embedded"', 'engine = "temporal"'),
                     ('task_queue = "sagaflow"', f'task_queue = "{self.name}"'),
                     ('steps = "checkpointed"', f'steps = "{mode}"'),
                     ('stock = "embedded"', 'stock = "redis"'),
                     ('key_prefix = "sagaflow:"', f'key_prefix = "{self.name}:"'),
                     ('payment = "sandbox"', 'payment = "http"'),
                     ('base_url = ""', f'base_url = "{url}"')]:
            assert a in text, a
            text = text.replace(a, b, 1)
        self.config = os.path.join(self.data, "sagas.toml")
        open(self.config, "w").write(text)
        self.workers = []

    def run(self, *args, check=True):
        r = subprocess.run([BIN, *args, "--config", self.config, "--data", self.data],
                           env=ENV, capture_output=True, text=True)
        if check and r.returncode != 0:
            raise SystemExit(f"sagaflow {' '.join(args)} failed: {r.stderr}")
        return r

    def submit(self, n, prefix):
        path = os.path.join(self.data, f"{prefix}.jsonl")
        with open(path, "w") as f:
            for i in range(n):
                f.write(json.dumps({"order_id": f"{self.name}-{prefix}{i}", "customer": "c1",
                                    "items": [{"sku": "SKU-1", "qty": 1}], "amount": 1999,
                                    "currency": "usd", "payment_method": "pm_card_visa"}) + "\n")
        self.run("submit", path)

    def start_workers(self, count, max_live):
        for i in range(count):
            out = open(os.path.join(self.data, f"worker-{i}.log"), "w")
            self.workers.append(subprocess.Popen(
                [BIN, "run", "--max-live", str(max_live), "--config", self.config, "--data", self.data],
                env=ENV, stdout=out, stderr=out))

    def cpu_seconds(self):
        total = 0
        for w in self.workers:
            fields = open(f"/proc/{w.pid}/stat").read().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])
        return total / TICK

    def stop(self):
        for w in self.workers:
            w.terminate()
        for w in self.workers:
            w.wait()

    def rows(self, status):
        r = self.run("list", "--status", status, "--limit", str(N + 100), "--json")
        return [json.loads(l) for l in r.stdout.splitlines() if l.strip()]

    def stats(self):
        return json.loads(self.run("stats", "--json").stdout)

    def timed_commands(self, ids):
        times = {"cancel": [], "retry": []}
        for i, saga in enumerate(ids):
            verb = "cancel" if i % 2 == 0 else "retry"
            began = time.monotonic()
            self.run(verb, saga, "--reason", "bench", check=False)
            times[verb].append((time.monotonic() - began) * 1000)
        return times

    def task_timeouts(self, ids):
        """Workflow-task timeouts in the histories of `ids` (a sample)."""
        n = 0
        for saga in ids:
            r = subprocess.run([TEMPORAL, "workflow", "show", "-w", saga, "-o", "json"],
                               capture_output=True, text=True)
            n += r.stdout.count("WorkflowTaskTimedOut") + r.stdout.count("WORKFLOW_TASK_TIMED_OUT")
        return n

    def history_events(self):
        r = subprocess.run([TEMPORAL, "workflow", "list", "--query",
                            f"TaskQueue = '{self.name}' AND SagaStatus = 'completed'",
                            "--limit", str(N + 100), "-o", "json"], capture_output=True, text=True)
        rows = json.loads(r.stdout or "[]")
        lengths = [int(x.get("historyLength", 0)) for x in rows]
        return statistics.mean(lengths) if lengths else float("nan")

def pct(values, q):
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))] if values else float("nan")

def load_run(mode, url):
    d = Deployment(f"load-{mode}", mode, url)
    d.run("stock", "set", "SKU-1=100000000")
    d.submit(N, "o")
    d.start_workers(2, IN_FLIGHT // 2)
    began = time.monotonic()
    commanded = None
    while True:
        time.sleep(1)
        st = d.stats()
        ended = st["completed"] + st["compensated"]
        if commanded is None and ended >= N // 3:
            running = [r["id"] for r in d.rows("running")][:COMMANDS]
            commanded = (len(running), d.timed_commands(running))
        if ended >= N:
            break
        if time.monotonic() - began > 1800:
            raise SystemExit(f"{mode}: {ended} of {N} ended after 30 minutes")
    cpu = d.cpu_seconds()
    d.stop()
    rows = d.rows("completed") + d.rows("compensated")
    first = min(r["created_ms"] for r in rows)
    last = max(r["ended_ms"] for r in rows)
    durations = [r["ended_ms"] - r["created_ms"] for r in rows]
    return {"mode": mode, "sagas": len(rows), "sagas_per_sec": round(len(rows) * 1000 / (last - first), 1),
            "p50_ms": pct(durations, 0.5), "p99_ms": pct(durations, 0.99),
            "history_events_per_saga": round(d.history_events(), 1),
            "worker_cpu_ms_per_saga": round(cpu * 1000 / len(rows), 2),
            "task_timeouts_in_50": d.task_timeouts([r["id"] for r in rows[::max(1, len(rows) // 50)]][:50]),
            "commands": commanded}

def idle_run(url):
    # The provider is down: the sagas wait for the breaker, on timers.
    d = Deployment("idle", "checkpointed", url)
    d.run("stock", "set", "SKU-1=1000")
    d.submit(COMMANDS, "i")
    d.start_workers(2, 1000)
    while len(d.rows("running")) < COMMANDS:
        time.sleep(0.2)
    time.sleep(1)
    ids = [r["id"] for r in d.rows("running")]
    times = d.timed_commands(ids)
    d.stop()
    return times

sb, url = sandbox("--latency", LATENCY)
slow, slow_url = sandbox("--outage", "24h")
results = []
try:
    for rnd in range(1, ROUNDS + 1):
        for mode in MODES:
            r = load_run(mode, url)
            r["round"] = rnd
            log(json.dumps(r))
            results.append(r)
        idle = idle_run(slow_url)
        log(json.dumps({"round": rnd, "idle_commands": idle}))
        results.append({"round": rnd, "idle": idle})
finally:
    sb.terminate(); slow.terminate()

print(f"two workers, {IN_FLIGHT} in flight in all, provider latency {LATENCY}, {N} checkout sagas per run")
print("| round | steps | sagas/s | p50 ms | p99 ms | history events/saga | worker CPU ms/saga | task timeouts (50 sagas) | cancel p50/p99 ms | retry p50/p99 ms |")
print("|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|")
for r in results:
    if "mode" in r:
        c = r["commands"][1] if r["commands"] else {"cancel": [], "retry": []}
        print(f"| {r['round']} | {r['mode']} | {r['sagas_per_sec']} | {r['p50_ms']} | {r['p99_ms']} | "
              f"{r['history_events_per_saga']} | {r['worker_cpu_ms_per_saga']} | {r['task_timeouts_in_50']} | "
              f"{pct(c['cancel'], .5):.0f}/{pct(c['cancel'], .99):.0f} | {pct(c['retry'], .5):.0f}/{pct(c['retry'], .99):.0f} |")
    else:
        c = r["idle"]
        print(f"| {r['round']} | idle (commands only) | | | | | | | "
              f"{pct(c['cancel'], .5):.0f}/{pct(c['cancel'], .99):.0f} | {pct(c['retry'], .5):.0f}/{pct(c['retry'], .99):.0f} |")
rate = {m: statistics.mean(r["sagas_per_sec"] for r in results if r.get("mode") == m) for m in MODES}
if "activities" in rate:
    for m in MODES:
        print(f"{m}: {rate[m] / rate['activities']:.2f}x the sagas/s of every step an activity task")
PY
