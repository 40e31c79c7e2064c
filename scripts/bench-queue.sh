#!/usr/bin/env bash
# The Service Bus trigger's benchmark: messages per second from the queue to
# durably started sagas, next to the broker's own send+receive+accept rate,
# measured in the same run against the same local AMQP 1.0 broker
# (RabbitMQ, started by scripts/services.sh). BENCHMARKS.md records the
# figures.
#
#   scripts/bench-queue.sh [MESSAGES]   # default 20000
set -euo pipefail
cd "$(dirname "$0")/.."
n="${1:-20000}"
scripts/services.sh rabbitmq
scripts/services.sh queue bench-orders
cargo build --release --locked -p sagaflow >&2
export SAGAFLOW_SERVICEBUS_CONNECTION="${SAGAFLOW_SERVICEBUS_CONNECTION:-amqp://guest:guest@127.0.0.1:5672}"
b=target/release/sagaflow
for steps in 1 5; do
  $b bench-queue --queue bench-orders --messages "$n" --steps "$steps"
done
